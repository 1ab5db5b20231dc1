"""``nb2svc serve NOTEBOOK --reload``: edit a served notebook under load; nothing is dropped.

A client thread keeps sending requests (a bounded number) while the notebook is saved
three times: a good edit (the new answer must appear, every request must be answered
200), a compile error and a failing setup cell (both logged with their cell number,
the previous version keeps serving).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import nbformat
import requests

from tests.notebooks import notebook
from tests.support import Server, wait_for

StartServer = Callable[..., Server]


def save(path: Path, greeting: str, setup: str = "import json") -> None:
    nb = notebook(
        setup,
        f"# GET /hello/:name\nprint('{greeting}, ' + json.loads(REQUEST)['path']['name'])",
        kernel="python3",
        language="python",
    )
    nbformat.write(nb, path)


class Load:
    """A client thread sending GET /hello/x until stopped (at most ``limit`` requests)."""

    def __init__(self, server: Server, limit: int = 3000) -> None:
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, limit), daemon=True)
        self._thread.start()

    def _run(self, server: Server, limit: int) -> None:
        session = requests.Session()
        while not self._stop.is_set() and len(self.answers) < limit:
            response = session.get(server.url("/hello/x"), timeout=30)
            self.answers.append((response.status_code, response.text))

    def stop(self) -> list[tuple[int, str]]:
        self._stop.set()
        self._thread.join(60)
        return self.answers


def test_edit_under_load_swaps_without_dropping_a_request(start_server: StartServer, tmp_path: Path) -> None:
    path = tmp_path / "live.ipynb"
    save(path, "hello")
    server = start_server(str(path), "--pool-size", "1", "--reload")
    assert server.get("/hello/x").text == "hello, x\n"
    load = Load(server)
    try:
        save(path, "howdy")
        wait_for(lambda: server.get("/hello/y").text == "howdy, y\n", 30, "the edited answer")
        wait_for(lambda: len(server.find_kernels()) == 1, 30, "the old version's kernel to stop")

        path.write_text(path.read_text().replace("# GET /hello/:name", "# GIT /hello/:name"))
        wait_for(
            lambda: "cannot be compiled; still serving version 2" in server.log(), 30, "the compile error"
        )
        assert "live.ipynb, cell 2" in server.log()
        assert server.get("/hello/z").text == "howdy, z\n"

        save(path, "hi", setup="import json\nraise RuntimeError('broken setup')")
        wait_for(
            lambda: "the new version cannot start; still serving version 2" in server.log(), 60, "setup error"
        )
        assert "live.ipynb, cell 1" in server.log() and "broken setup" in server.log()
        assert server.get("/hello/w").text == "howdy, w\n"
    finally:
        answers = load.stop()
    assert answers, "the load thread sent nothing"
    assert {status for status, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
    assert {text.split(",")[0] for _, text in answers} == {"hello", "howdy"}  # served across the swap
    assert server.stop() == 0
    assert not server.find_kernels()


def test_reload_refuses_a_bundle(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "b.ipynb"
    save(path, "hello")
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(path), "-o", str(tmp_path / "bundle")]
    )
    assert built.returncode == 0
    served = subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", str(tmp_path / "bundle"), "--reload"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2 and "--reload watches a notebook" in served.stderr
