"""How long a job's cancel takes to free its kernel, per store and path (issues 17, 18).

A job runs ``time.sleep(60)`` on a pool of one kernel; once its cell has started (it
touches a marker file first), ``DELETE /_api/jobs/{id}`` is sent, then a synchronous
``GET /hello/x``, which waits in the queue until the kernel is free. The time from the
``DELETE`` to that answer is what a cancel costs:

* ``same server``: the ``DELETE`` reaches the worker running the job, which interrupts
  the kernel at once;
* ``other replica`` (Redis only): the ``DELETE`` reaches another replica on the same
  Redis; the running replica learns of it from its watch of the job's record (every
  0.2 s) and interrupts.

Run: ``python bench/cancel_bench.py`` (about 30 s); ``--rounds 10``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import requests
from jobs_bench import Nb2svc, Redis, wait
from nbformat.v4 import new_code_cell, new_notebook

CELLS = (
    "import json, pathlib, time",
    "# GET /hello/:name\nprint('hello, ' + json.loads(REQUEST)['path']['name'])",
    "# GET /slow\npathlib.Path(json.loads(REQUEST)['args']['marker'][0]).touch()\ntime.sleep(60)",
)


def notebook(directory: str) -> Path:
    path = Path(directory) / "cancel.ipynb"
    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def cancel_once(runner: str, canceller: str, directory: str, round_: int) -> float:
    """Seconds from the DELETE to the next synchronous answer of the runner."""
    marker = Path(directory) / f"started-{round_}-{time.monotonic_ns()}"
    r = requests.get(f"{runner}/slow", params={"marker": str(marker)}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    wait(marker.exists, 30, "the job's cell to start")
    started = time.perf_counter()
    assert requests.delete(canceller + r.headers["Location"], timeout=30).status_code == 204
    answer = requests.get(f"{runner}/hello/x", timeout=60)
    elapsed = time.perf_counter() - started
    assert answer.text == "hello, x\n", answer.text
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="cancels per row (default 10)")
    args = parser.parse_args()
    rows: list[tuple[str, str, list[float]]] = []
    with tempfile.TemporaryDirectory() as directory:
        path = notebook(directory)
        server = Nb2svc("", path, pool=1)
        try:
            times = [cancel_once(server.base, server.base, directory, i) for i in range(args.rounds)]
            rows.append(("embedded", "same server", times))
        finally:
            server.stop()
        redis = Redis(directory)
        url = f"redis://127.0.0.1:{redis.port}/0"
        first, second = Nb2svc(url, path, pool=1), Nb2svc(url, path, pool=1)
        try:
            times = [cancel_once(first.base, first.base, directory, i) for i in range(args.rounds)]
            rows.append(("redis", "same replica", times))
            times = [cancel_once(first.base, second.base, directory, i) for i in range(args.rounds)]
            rows.append(("redis", "other replica", times))
        finally:
            first.stop()
            second.stop()
            redis.stop()
    print(f"# DELETE of a running job -> its kernel answers the next request; {args.rounds} rounds, pool 1")
    print(f"# {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| store | DELETE sent to | median ms | max ms |")
    print("| --- | --- | --- | --- |")
    for store, path_, times in rows:
        print(f"| {store} | {path_} | {1000 * statistics.median(times):.0f} | {1000 * max(times):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
