"""Golden files: every template nb2svc renders into a bundle, compared byte for byte.

Three bundles cover every branch of the templates: ``hello`` with the default options
(no Kubernetes), ``todo-k8s`` with ``k8s=True``, non-default sizes and base image and a
Redis store (wired from a Secret: its password is never written), and
``mounted-k8s``: two notebooks in one bundle (hello.ipynb at /hello with an elastic pool,
whose MAX sizes the pod, a bash notebook at
/shell, whose kernel the image lacks), with ``k8s=True`` and ``keda=True`` (a KEDA
ScaledObject in place of the HPA); and ``kernels-k8s``, a kernel gateway's bundle
(``nb2svc build --kernels``: three replicas on a Redis store, two kernel images, its own
namespace).
The runtime (dependency pins, wheel) is fixed here, so the files do not change when
the installed packages do.

After an intended template change, regenerate and review the diff:

    NB2SVC_UPDATE_GOLDEN=1 python -m pytest tests/test_bundle_golden.py
    git diff tests/golden/
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from nb2svc.compiler import compile_notebook
from nb2svc.compiler.bundle import BundleOptions, render_bundle, render_mounted_bundle
from nb2svc.compiler.kernels_bundle import KernelBundleOptions, render_kernels_bundle
from nb2svc.compiler.mounts import Mount
from nb2svc.distribution import Runtime, wheel_filename
from tests.notebooks import shell_notebook
from tests.support import EXAMPLES

GOLDEN = Path(__file__).parent / "golden"
#: Bundle files that are not rendered from a template (each has tests of its own).
NOT_TEMPLATED = ("service.json", "openapi.json", "notebook.ipynb", "notebooks/", "wheels/", "kernels.json")

#: The case of a kernel gateway's bundle (``nb2svc build --kernels``), not of a notebook.
KERNELS = "--kernels"

FIXED_RUNTIME = Runtime(
    requirements=("flask==3.1.3", "gunicorn==27.0.1", 'pexpect==4.8.0 ; sys_platform != "win32"'),
    wheel_name=wheel_filename(),
    wheel=b"a wheel",
    python="3.11",
)

CASES = {
    "hello": ("hello.ipynb", BundleOptions(image="registry.example.com/team/hello:1.0.0")),
    "todo-k8s": (
        "todo.ipynb",
        BundleOptions(
            image="registry.example.com:5000/team/todo:2.1.0",
            k8s=True,
            base_image="python:3.12-slim",
            workers=2,
            pool_size=3,
            request_timeout=20,
            replicas=3,
            requirements=("numpy==2.1.3", "pandas>=2.2,<3"),
            store="redis://:never-written@redis.example:6379/0",
        ),
    ),
    "kernels-k8s": (
        KERNELS,
        KernelBundleOptions(
            name="lab-kernels",
            image="registry.example.com/team/lab-kernels:1.0.0",
            replicas=3,
            namespace="jupyter",
            store="redis://:never-written@redis.example:6379/1",
            kernel_images=(("python_k8s", "elyra/kernel-py:3.2.3"), ("r_k8s", "elyra/kernel-r:3.2.3")),
        ),
    ),
    "mounted-k8s": (
        "",
        BundleOptions(
            image="registry.example.com/team/greeters:1.0.0",
            k8s=True,
            keda=True,
            prometheus_url="http://prometheus.monitoring:9090",
            mounts={"/hello": {"pool_size": "1..3", "queue_timeout": 5.0}},
        ),
    ),
}


def mounted_bundle(options: BundleOptions, runtime: Runtime = FIXED_RUNTIME) -> dict[str, bytes]:
    """hello.ipynb at /hello and the bash notebook of tests/notebooks.py at /shell."""
    hello = EXAMPLES / "hello.ipynb"
    shell = nbformat.writes(shell_notebook())
    mounts = [
        Mount("/hello", compile_notebook(hello)),
        Mount("/shell", compile_notebook(shell, name="shell")),
    ]
    return render_mounted_bundle(mounts, [hello.read_bytes(), shell.encode()], "greeters", options, runtime)


def rendered_templates(case: str) -> dict[str, bytes]:
    notebook, options = CASES[case]
    if notebook == KERNELS:
        files = render_kernels_bundle(options, FIXED_RUNTIME)
    elif notebook:
        path = EXAMPLES / notebook
        files = render_bundle(compile_notebook(path), path.read_bytes(), options, FIXED_RUNTIME)
    else:
        files = mounted_bundle(options)
    return {name: data for name, data in files.items() if not name.startswith(NOT_TEMPLATED)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_templates_match_golden_files(case: str) -> None:
    files = rendered_templates(case)
    directory = GOLDEN / case
    if os.environ.get("NB2SVC_UPDATE_GOLDEN"):
        shutil.rmtree(directory, ignore_errors=True)
        for name, data in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_bytes(data)
    golden = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert golden == set(files), "golden files out of date: NB2SVC_UPDATE_GOLDEN=1 (see the module doc)"
    for name, data in sorted(files.items()):
        expected = (directory / name).read_text()
        assert data.decode() == expected, f"{case}/{name} differs from tests/golden (see the module doc)"


def test_golden_cases_cover_every_template() -> None:
    """Each template file is rendered by at least one case (k8s/labels.j2 and image.j2 are
    only imported)."""
    from nb2svc.distribution import templates_dir

    templates = {
        p.relative_to(templates_dir()).as_posix()
        for p in templates_dir().rglob("*.j2")
        if p.name not in ("labels.j2", "image.j2")
    }
    rendered = {name for case in CASES for name in rendered_templates(case)}
    # app.py.j2 → app.py, ci/Makefile.j2 → Makefile, dockerignore.j2 → .dockerignore, ...
    stems = {Path(t).name.removesuffix(".j2") for t in templates}
    assert stems <= {Path(name).name.lstrip(".") for name in rendered}


@pytest.mark.parametrize("case", ["todo-k8s", "kernels-k8s"])
def test_a_store_url_is_wired_from_a_secret_and_never_written(case: str) -> None:
    """The store's URL may hold a password: the Deployment reads it from a Secret, and no
    file of the bundle (image, manifests, README) holds it (issue 18)."""
    files = rendered_templates(case)
    assert not [name for name, data in files.items() if b"never-written" in data]
    assert b"NB2SVC_STORE" not in files["Dockerfile"]
    assert (
        b"name: NB2SVC_STORE\n              valueFrom:\n                secretKeyRef:"
        in files["k8s/deployment.yaml"]
    )
