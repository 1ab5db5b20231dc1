"""The generated Dockerfile, built unmodified into an image that serves the notebook.

No Docker engine or registry here: podman (rootful, runc) builds it against a local
stand-in for the ``python:X.Y-slim`` base, made once by ``.ci/container-tools.sh base``
(Debian bookworm from debootstrap, plus the CPython running these tests copied to
/usr/local with pip, as the official image has it) and cached in a private store
(/tmp/nb2svc-ctr; ~50 s the first time). The header of .ci/container-tools.sh says why each
setting. The container runs published on 127.0.0.1 only, read-only like the
Kubernetes manifests make it; the test then runs the notebook's examples against it
with ``nb2svc test --url``, checks the health check, and stops it with SIGTERM, which
must reach gunicorn (exit code 0 after the kernels stop). A second image holds two
notebooks (``build a b --config``): both served, each with its baked pool, which a
container variable (``NB2SVC_POOL_SIZE__HELLO``) overrides. The images, the containers
and podman's network leftovers are removed at the end; the base image is kept.

Skipped, with the reason, on a machine without podman, runc and debootstrap (.ci/run
installs them) or without root.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import EXAMPLES, REPO, free_port, wait_for

TOOLS = REPO / ".ci" / "container-tools.sh"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@functools.cache
def podman_env() -> dict[str, str]:
    exports = subprocess.run(["bash", str(TOOLS), "env"], capture_output=True, text=True, check=True).stdout
    values = dict(re.findall(r"(\w+)=(\S+)", exports))
    return {**os.environ, **values}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


def python_prefix() -> str:
    """The CPython to copy into the stand-in base: one built from source (not Debian's /usr)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.base_prefix)
    return str(prefix) if prefix != Path("/usr") and (prefix / "bin" / f"python{version}").exists() else ""


def require_container_tools() -> None:
    """Skip, saying why, where podman cannot build and run images here."""
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (`bash .ci/container-tools.sh install` as root)")
    if os.geteuid() != 0:
        pytest.skip("building images here needs rootful podman (see .ci/container-tools.sh)")


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    require_container_tools()
    yield
    subprocess.run(["bash", str(TOOLS), "netclean"], timeout=120, check=False)


def build_image(bundle: Path, image: str) -> None:
    """The bundle's printed build command, as podman spells it: --pull=never (the base is
    local, made here once), host network for pip, docker format (OCI drops HEALTHCHECK),
    no intermediate images."""
    base = re.search(r"^FROM (\S+)$", (bundle / "Dockerfile").read_text(), re.M).group(1)  # type: ignore[union-attr]
    prepared = subprocess.run(
        ["bash", str(TOOLS), "base", base, python_prefix()], capture_output=True, text=True, timeout=1200
    )
    assert prepared.returncode == 0, prepared.stderr
    podman(
        "build", "--pull=never", "--network", "host", "--format", "docker", "--layers=false",
        "--tag", image, str(bundle), timeout=900,
    )  # fmt: skip


def run_container(name: str, image: str, *env: str) -> str:
    """Run ``image`` read-only as the manifests do, published on loopback; its URL once ready."""
    port = free_port()
    podman(
        "run", "--detach", "--name", name, "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/home/nb2svc:rw,U",
        *(arg for variable in env for arg in ("--env", variable)),
        "--publish", f"127.0.0.1:{port}:8888", image,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(url + "/_api/health/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready, 120, f"{url}/_api/health/ready from the container")
    except AssertionError:
        raise AssertionError(podman("logs", name, check=False).stderr[-3000:]) from None
    return url


def run_examples(bundle: Path, url: str) -> str:
    """``nb2svc test BUNDLE --url`` against the container; every example must pass. Its report."""
    examples = subprocess.run(
        [sys.executable, "-m", "nb2svc", "test", str(bundle), "--url", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert examples.returncode == 0, examples.stdout + examples.stderr
    return examples.stdout


@pytest.mark.usefixtures("engine")
def test_image_builds_runs_the_examples_and_stops_gracefully(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    image = f"localhost/nb2svc-test-todo:{suffix}"
    name = f"nb2svc-test-{suffix}"
    bundle = tmp_path / "todo"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "nb2svc",
            "build",
            str(EXAMPLES / "todo.ipynb"),
            "-o",
            str(bundle),
            "--k8s",
            "--docker-tag",
            image,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.splitlines()[-1] == f"docker build --tag {image} {bundle}"
    try:
        build_image(bundle, image)
        inspected = json.loads(podman("image", "inspect", image).stdout)[0]
        config = inspected["Config"]
        assert config["User"] == "10001:10001"
        assert "8888/tcp" in config["ExposedPorts"]
        assert config["Entrypoint"] == ["dumb-init", "--single-child", "--"]
        assert config["Cmd"] == ["gunicorn", "--config", "gunicorn.conf.py", "app:app"]
        assert "/_api/health/live" in " ".join(inspected["Healthcheck"]["Test"])  # kept: docker format

        url = run_container(name, image, "NB2SVC_POOL_SIZE=1")
        assert requests.get(url + "/todos", timeout=10).json()[0]["title"] == "write the notebook"
        assert run_examples(bundle, url).splitlines()[-1] == "11 passed, 0 failed"
        assert podman("healthcheck", "run", name, check=False).returncode == 0

        podman("stop", "--time", "40", name, timeout=90)
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name).stdout + podman("logs", name).stderr
        assert state["ExitCode"] == 0, logs[-3000:]  # SIGTERM reached gunicorn: drained, not killed
        assert "shut down" in logs  # the kernels, after the drain
        assert "not a writable location" not in logs  # HOME works on a read-only root
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
        podman("rmi", "--force", image, check=False)


@pytest.mark.usefixtures("engine")
def test_an_image_of_several_notebooks_serves_each_with_its_own_pool(tmp_path: Path) -> None:
    """One image for two notebooks: both sources copied, per-notebook pools baked and overridable."""
    suffix = uuid.uuid4().hex[:8]
    image, name = f"localhost/nb2svc-test-both:{suffix}", f"nb2svc-test-both-{suffix}"
    config = tmp_path / "service.toml"
    config.write_text("pool_size = 2\n[mounts.todo]\npool_size = 1\n")  # todo's examples keep state
    bundle = tmp_path / "both"
    hello, todo = str(EXAMPLES / "hello.ipynb"), str(EXAMPLES / "todo.ipynb")
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", hello, todo, "--config", str(config), "-o", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    try:
        build_image(bundle, image)
        url = run_container(name, image)
        notebooks = requests.get(url + "/_api/health/ready", timeout=10).json()["notebooks"]
        assert {n: state["size"] for n, state in notebooks.items()} == {"hello": 2, "todo": 1}
        assert requests.get(url + "/hello/pod", timeout=10).text == "hello, pod\n"
        run_examples(bundle, url)
        podman("rm", "--force", "--time", "5", name)
        url = run_container(name, image, "NB2SVC_POOL_SIZE__HELLO=1")  # a deployment's override
        notebooks = requests.get(url + "/_api/health/ready", timeout=10).json()["notebooks"]
        assert {n: state["size"] for n, state in notebooks.items()} == {"hello": 1, "todo": 1}
    finally:
        podman("rm", "--force", "--time", "5", name, check=False)
        podman("rmi", "--force", image, check=False)
