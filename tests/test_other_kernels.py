"""Kernels that are not ipykernel, in both modes: xeus-python (PyPI) and jslab (npm tslab).

Neither speaks IPC with the endpoint names ipykernel accepts, so ``--transport auto``
must pick TCP for them; jslab also sends no ``iopub_welcome`` and takes seconds to
start, which exercises the probe path of the start-up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.kernels_support import KernelClient, kernel_server, start_kernel
from tests.support import REPO, Server

StartServer = Callable[..., Server]
JS_DIR = REPO / "tests" / "js"


def service(path: Path, kernel: str, language: str, cells: list[str]) -> str:
    spec = {"name": kernel, "display_name": kernel, "language": language}
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells], metadata={"kernelspec": spec}), path)
    return str(path)


def jslab_spec(root: Path) -> dict[str, str]:
    """A private ``jslab`` kernel spec (tslab from tests/js, installed on first use)."""
    npm = shutil.which("npm")
    if not (shutil.which("node") and npm):
        pytest.skip("node and npm are needed for the tslab kernel (not found on PATH)")
    if not (JS_DIR / "node_modules" / ".bin" / "tslab").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR, check=True, timeout=600
        )
    spec_dir = root / "share" / "kernels" / "jslab"
    spec_dir.mkdir(parents=True)
    # tslab type-checks against the @types/node next to its working directory.
    launch = f'cd {JS_DIR} && exec node_modules/.bin/tslab kernel --config-path "$0" --js'
    argv = ["sh", "-c", launch, "{connection_file}"]
    (spec_dir / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "jslab", "language": "javascript"})
    )
    return {"JUPYTER_PATH": str(root / "share")}


def test_xeus_python_serves_api_mode(start_server: StartServer, tmp_path: Path) -> None:
    path = service(
        tmp_path / "xeus.ipynb",
        "xpython",
        "python",
        ["import json", "# GET /hello/:name\nprint('hello, ' + json.loads(REQUEST)['path']['name'])"],
    )
    server = start_server(path, "--pool-size", "1")
    assert server.get("/hello/xeus").text == "hello, xeus\n"
    assert server.get("/hello/again").text == "hello, again\n"
    assert "retired" not in server.log()


def test_xeus_python_in_kernel_mode(tmp_path: Path) -> None:
    with kernel_server(tmp_path, "--default-kernel", "xpython") as server:
        kernel_id = start_kernel(server)["id"]
        with KernelClient(server, kernel_id, v1=True) as client:
            assert client.execute("print(6 * 7)").stdout == "42\n"


def test_jslab_serves_api_mode(start_server: StartServer, tmp_path: Path) -> None:
    env = jslab_spec(tmp_path)
    cells = [
        "const greet = (name) => 'hello, ' + name;",
        "// GET /hello/:name\nconsole.log(greet(JSON.parse(REQUEST).path.name));",
    ]
    path = service(tmp_path / "js.ipynb", "jslab", "javascript", cells)
    server = start_server(path, "--pool-size", "1", env=env, timeout=120)
    assert server.get("/hello/node").text == "hello, node\n"


def test_jslab_in_kernel_mode(tmp_path: Path) -> None:
    env = jslab_spec(tmp_path)
    with kernel_server(
        tmp_path, "--default-kernel", "jslab", "--kernel-start-timeout", "90", env=env
    ) as server:
        kernel_id = start_kernel(server)["id"]
        with KernelClient(server, kernel_id) as client:
            assert client.execute("console.log(6 * 7)", timeout=60).stdout == "42\n"
