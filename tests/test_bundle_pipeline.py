"""The bundle's CI pipeline: a GitHub Actions workflow that runs the Makefile's targets.

The workflow is checked against SchemaStore's github-workflow schema as vendored in
check-jsonschema (no network), all YAML of the bundle with yamllint (strict), and the
Makefile with ``make -n`` for every target the workflow runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import EXAMPLES

#: yamllint's default rules, with lines up to 120 characters, no `---` needed, and GitHub's
#: `on:` key not taken for a truthy value.
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable, "
    "truthy: {check-keys: false}}}"
)
IMAGE = "registry.example.com/team/todo:1.0.0"


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "k8s"])
def bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "todo"
    flags = ["--k8s"] if request.param else []
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(EXAMPLES / "todo.ipynb"), "-o", str(out), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return out


def workflow(bundle: Path) -> dict:
    return yaml.safe_load((bundle / ".github/workflows/deploy.yml").read_text())


def test_workflow_matches_the_github_workflow_schema(bundle: Path) -> None:
    pytest.importorskip("check_jsonschema")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(bundle / ".github/workflows/deploy.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bundle_yaml_passes_yamllint(bundle: Path) -> None:
    pytest.importorskip("yamllint")
    files = sorted(str(p) for p in bundle.rglob("*.y*ml"))
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-d", YAMLLINT_CONFIG, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_jobs_install_test_build_push_and_deploy(bundle: Path) -> None:
    jobs = workflow(bundle)["jobs"]
    k8s = (bundle / "k8s").exists()
    assert list(jobs) == (["test", "image", "deploy"] if k8s else ["test", "image"])
    runs = {name: [step["run"] for step in job["steps"] if "run" in step] for name, job in jobs.items()}
    assert runs["test"] == ["make install", "make test"]
    assert runs["image"][-1] == 'make push IMAGE="$IMAGE"'
    assert jobs["image"]["needs"] == "test"
    if k8s:
        assert jobs["deploy"]["needs"] == "image"
        assert runs["deploy"][-1].startswith('make deploy IMAGE="$IMAGE"')
    text = (bundle / ".github/workflows/deploy.yml").read_text()
    secrets = set(re.findall(r"\$\{\{ (?:secrets|vars)\.(\w+)", text))
    assert secrets == (
        {"REGISTRY", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"}
        | ({"KUBE_CONFIG", "KUBE_NAMESPACE"} if k8s else set())
    )
    assert workflow(bundle)["permissions"] == {"contents": "read"}


def test_makefile_has_every_step_of_the_workflow(bundle: Path) -> None:
    make = shutil.which("make") or pytest.skip("make is not installed")
    targets = {
        m.group(1)
        for m in re.finditer(r"\bmake (\w+)", (bundle / ".github/workflows/deploy.yml").read_text())
    }
    assert targets >= {"install", "test", "push"}
    for target in sorted(targets):
        result = subprocess.run(
            [make, "-n", target, f"IMAGE={IMAGE}", "NAMESPACE=prod"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=bundle,
        )
        assert result.returncode == 0, result.stderr
    dry = subprocess.run(
        [make, "-n", "install", "test", "push", f"IMAGE={IMAGE}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=bundle,
    ).stdout.splitlines()
    assert dry == [
        "python3 -m pip install -r requirements.txt wheels/" + next((bundle / "wheels").iterdir()).name,
        "python3 -m nb2svc test .",
        f"docker build --tag {IMAGE} .",
        f"docker push {IMAGE}",
    ]
