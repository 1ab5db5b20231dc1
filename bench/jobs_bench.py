"""Async job overhead: submit + poll against the synchronous call, per store (issue 18).

Why it is built this way:

* One nb2svc server at a time on 127.0.0.1, serving bench/notebooks/hello.ipynb (``GET
  /hello/:name``, a print) with a pool of 2 kernels, first on the embedded store (SQLite),
  then on a throwaway ``redis-server`` (no persistence) started here on a free port.
* c=1 rows time one client doing N calls back to back on one keep-alive session:
  ``sync`` is ``GET /hello/x``; ``job`` is ``GET /hello/x`` with ``Prefer: respond-async``
  (the 202), then ``GET /_api/jobs/{id}`` polled with no pause until it is done, then
  ``DELETE`` (collect). Its latency is submit to answer in hand: what a job costs beyond
  the call itself is the difference. Real clients wait ``Retry-After: 1`` between polls;
  the tight loop here shows the store's cost, not that second.
* ``submit`` and ``poll`` columns are the median latencies of the 202 and of one poll.
* c=8 rows run 8 such clients at once: jobs/s against req/s shows the throughput cost.
* Every answer is checked (status and body); a wrong one counts as an error, never as speed.

Run: ``python bench/jobs_bench.py`` (about a minute); ``--n 300 --concurrency 8``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOTEBOOK = HERE / "notebooks" / "hello.ipynb"
EXPECTED = "hello, x\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Redis:
    def __init__(self, directory: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait(pong, 20, "redis-server")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Nb2svc:
    def __init__(self, store: str, notebook: Path = NOTEBOOK, pool: int = 2) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "nb2svc", "serve", str(notebook), "--port", str(self.port)]
        args += ["--pool-size", str(pool), "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(REPO), "NB2SVC_STORE": store}
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        wait(lambda: answers(self.base + "/_api/health/ready"), 60, "nb2svc to be ready")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def sync_call(session: requests.Session, base: str, timings: dict[str, list[float]]) -> bool:
    started = time.perf_counter()
    r = session.get(base + "/hello/x", timeout=30)
    timings["total"].append(time.perf_counter() - started)
    return r.status_code == 200 and r.text == EXPECTED


def job_call(session: requests.Session, base: str, timings: dict[str, list[float]]) -> bool:
    started = time.perf_counter()
    r = session.get(base + "/hello/x", headers={"Prefer": "respond-async"}, timeout=30)
    timings["submit"].append(time.perf_counter() - started)
    if r.status_code != 202:
        return False
    location = base + r.headers["Location"]
    while True:
        polled = time.perf_counter()
        answer = session.get(location, timeout=30)
        timings["poll"].append(time.perf_counter() - polled)
        if answer.headers.get("Nb2svc-Job") or answer.status_code != 200:
            break
    timings["total"].append(time.perf_counter() - started)
    ok = answer.status_code == 200 and answer.text == EXPECTED and answer.headers.get("Nb2svc-Job") == "done"
    return ok and session.delete(location, timeout=30).status_code == 204


def run(call: Callable[..., bool], base: str, n: int, clients: int) -> dict[str, float]:
    timings: dict[str, list[float]] = {"submit": [], "poll": [], "total": []}
    errors = 0

    def client(count: int) -> int:
        with requests.Session() as session:
            return sum(not call(session, base, timings) for _ in range(count))

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        errors = sum(pool.map(client, [n // clients] * clients))
    elapsed = time.perf_counter() - started
    total = sorted(timings["total"])
    done = len(total)

    def ms(values: list[float], q: float = 0.5) -> float:
        return 1000 * (sorted(values)[int(q * (len(values) - 1))] if values else float("nan"))

    return {
        "per_s": done / elapsed,
        "p50": ms(total),
        "p99": ms(total, 0.99),
        "submit": ms(timings["submit"]),
        "poll": ms(timings["poll"]),
        "polls": len(timings["poll"]) / done if timings["poll"] else 0.0,
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=400, help="calls per row (default 400)")
    parser.add_argument("--concurrency", default="1,8", help="client counts (default 1,8)")
    parser.add_argument("--stores", default="embedded,redis", help="which stores (default embedded,redis)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for store in args.stores.split(","):
            redis = Redis(directory) if store == "redis" else None
            url = f"redis://127.0.0.1:{redis.port}/0" if redis else ""
            server = Nb2svc(url)
            try:
                run(sync_call, server.base, 40, 1)  # warm up both paths
                run(job_call, server.base, 40, 1)
                for clients in levels:
                    for kind, call in (("sync", sync_call), ("job", job_call)):
                        rows.append((store, kind, clients, run(call, server.base, args.n, clients)))
            finally:
                server.stop()
                if redis is not None:
                    redis.stop()
    print(f"# nb2svc jobs vs sync, hello.ipynb, pool 2, 1 worker, n={args.n} per row, {os.cpu_count()} cores")
    header = (
        "| store | call | c | calls/s | p50 ms | p99 ms | submit p50 ms | poll p50 ms | polls/job | errors |"
    )
    print(header)
    print("|" + " --- |" * 10)
    for store, kind, clients, r in rows:
        job = kind == "job"
        print(
            f"| {store} | {kind} | {clients} | {r['per_s']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{r['submit']:.2f} | {r['poll']:.2f} | {r['polls']:.1f} | {r['errors']} |"
            if job
            else f"| {store} | {kind} | {clients} | {r['per_s']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| - | - | - | {r['errors']} |"
        )
    for store in args.stores.split(","):
        for clients in levels:
            sync = next(r for s, k, c, r in rows if (s, k, c) == (store, "sync", clients))
            job = next(r for s, k, c, r in rows if (s, k, c) == (store, "job", clients))
            print(
                f"# {store}, c={clients}: a job costs {job['p50'] - sync['p50']:+.2f} ms at p50 "
                f"({job['p50'] / sync['p50']:.1f}x the call), "
                f"throughput {job['per_s'] / sync['per_s']:.0%} of sync"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
