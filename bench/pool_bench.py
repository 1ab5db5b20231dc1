"""Elastic pools and kernel recycling, measured on a real server (issue 18).

    python bench/pool_bench.py growth                 # step load on 1..4 vs a fixed 4 (~1 min)
    python bench/pool_bench.py growth --max 6 --clients 24 --work-ms 100 --duration 15
    python bench/pool_bench.py recycle                # RSS of a leaky notebook, limit off and on (~1 min)
    python bench/pool_bench.py recycle --requests 300 --leak-mib 4 --limit-mib 200

``growth``: ``nb2svc serve bench/notebooks/pools.ipynb`` with ``--pool-size 1..MAX``, then a
step from 0 to ``--clients`` clients that each call ``GET /work/MS`` (the cell holds its
kernel for MS ms) in a loop for ``--duration`` seconds. A poller reads ``/_api/metrics``
every 50 ms: the table gives when the 2nd, 3rd, ... kernel went live after the step, the
answers per second in the first 2 s and the last 2 s, latency percentiles, and how long
the pool took to shrink back to MIN once the load stopped (``--idle`` seconds idle). The
same load on a fixed pool of MAX warm kernels is the ceiling.

``recycle``: the same notebook's ``GET /leak/MIB`` keeps MIB more in a global on every call.
``--requests`` calls from 2 clients, without a memory limit and with
``--kernel-max-memory LIMIT``; every ``--every`` requests the summed RSS of the worker's
kernels is read from /proc. The table is RSS over requests for both, then the recycled
count and latency percentiles (a recycled kernel's replacement start is in the tail).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "bench" / "notebooks" / "pools.ipynb"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(*args: str) -> Iterator[tuple[str, int]]:
    """An nb2svc server of the pools notebook (this tree's code), ready, and its pid; stopped after."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nb2svc", "serve", str(NOTEBOOK), "--port", str(port), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(base + "/_api/health/ready", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"server did not become ready: {' '.join(args)}")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def metrics(base: str) -> dict[str, float]:
    values = {}
    for line in requests.get(base + "/_api/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- growth ---------------------------------------------------------------------------------


def step_load(base: str, args: argparse.Namespace, minimum: int) -> dict[str, object]:
    stop = threading.Event()
    live_at: dict[int, float] = {}
    done: list[tuple[float, float]] = []  # (finished after the step, latency)
    shrunk_after = float("nan")
    start = time.monotonic()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            answer = session.get(f"{base}/work/{args.work_ms}", timeout=120)
            assert answer.status_code == 200, answer.text
            done.append((time.monotonic() - start, time.monotonic() - sent))

    def poll() -> None:
        while not stop.is_set():
            live = int(metrics(base)["nb2svc_pool_kernels_live"])
            live_at.setdefault(live, time.monotonic() - start)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    with ThreadPoolExecutor(args.clients) as pool:
        for _ in range(args.clients):
            pool.submit(client)
        time.sleep(args.duration)
        stop.set()
    poller.join()
    ended = time.monotonic()
    while time.monotonic() - ended < args.idle * 4 + 30:
        if metrics(base)["nb2svc_pool_kernels_live"] <= minimum:
            shrunk_after = time.monotonic() - ended
            break
        time.sleep(0.05)
    latencies = [latency for _, latency in done]
    first = sum(1 for at, _ in done if at <= 2.0) / 2.0
    last = sum(1 for at, _ in done if at > args.duration - 2.0) / 2.0
    return {
        "live_at": live_at,
        "first_rps": first,
        "last_rps": last,
        "p50": statistics.median(latencies) * 1000,
        "p99": percentile(latencies, 0.99) * 1000,
        "shrunk_after": shrunk_after,
        "answers": len(done),
    }


def growth(args: argparse.Namespace) -> None:
    common = ["--queue-timeout", "120", "--max-queue", "10000", "--pool-idle-timeout", str(args.idle)]
    rows = []
    for label, size, minimum in (
        (f"1..{args.max}", f"1..{args.max}", 1),
        (f"{args.max} fixed", str(args.max), 0),
    ):
        with server("--pool-size", size, *common) as (base, _):
            rows.append((label, step_load(base, args, minimum)))
    kernels = range(2, args.max + 1)
    print(
        f"\nstep 0 -> {args.clients} clients, GET /work/{args.work_ms} (ms), {args.duration:g} s, "
        f"idle timeout {args.idle:g} s"
    )
    header = ["pool", *(f"{k} live (s)" for k in kernels), "rps 0-2 s", "rps last 2 s", "p50 ms", "p99 ms"]
    header.append("back to MIN (s)")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for label, row in rows:
        live_at = row["live_at"]
        cells = [label, *(f"{live_at[k]:.2f}" if k in live_at else "-" for k in kernels)]  # type: ignore[operator]
        cells += [
            f"{row['first_rps']:.0f}",
            f"{row['last_rps']:.0f}",
            f"{row['p50']:.0f}",
            f"{row['p99']:.0f}",
        ]
        shrunk = row["shrunk_after"]
        cells.append(f"{shrunk:.1f}" if label.startswith("1..") else "-")  # type: ignore[str-format]
        print("| " + " | ".join(cells) + " |")


# --- recycling --------------------------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid``, from the kernel's ``/proc/PID/task/TID/children``."""
    found: set[int] = set()
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = {int(child) for child in f.read().split()}
            except (OSError, ValueError):
                continue
            stack += children - found
            found |= children
    return found


def kernels_rss_mib(server_pid: int) -> float:
    """Summed RSS of the server's kernels (spawned or forked, with a fork template if any):
    every descendant of the server that is not one of its gunicorn processes."""
    total = 0
    for pid in descendants(server_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"nb2svc\0serve" in f.read():
                    continue  # the master's workers
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total / (1 << 20)


def leak(base: str, pid: int, args: argparse.Namespace) -> tuple[list[tuple[int, float]], list[float], float]:
    samples = [(0, kernels_rss_mib(pid))]
    latencies: list[float] = []
    session = requests.Session()
    lock = threading.Lock()
    sent = 0

    def one(_: int) -> None:
        began = time.monotonic()
        answer = session.get(f"{base}/leak/{args.leak_mib}", timeout=120)
        assert answer.status_code == 200, answer.text
        with lock:
            latencies.append(time.monotonic() - began)

    with ThreadPoolExecutor(2) as clients:
        while sent < args.requests:
            batch = min(args.every, args.requests - sent)
            list(clients.map(one, range(batch)))
            sent += batch
            samples.append((sent, kernels_rss_mib(pid)))
    return samples, latencies, metrics(base).get("nb2svc_kernel_recycled_total", 0.0)


def recycle(args: argparse.Namespace) -> None:
    results = []
    for label, extra in (
        ("no limit", []),
        (f"--kernel-max-memory {args.limit_mib}", ["--kernel-max-memory", str(args.limit_mib)]),
    ):
        with server("--pool-size", "1", "--max-queue", "100", *extra) as (base, pid):
            results.append((label, *leak(base, pid, args)))
    print(f"\n{args.requests} x GET /leak/{args.leak_mib} (MiB kept per call), pool 1, 2 clients")
    print("| requests | " + " | ".join(f"kernel RSS MiB, {label}" for label, *_ in results) + " |")
    print("| --- |" + " --- |" * len(results))
    for index, (count, _) in enumerate(results[0][1]):
        print(f"| {count} | " + " | ".join(f"{r[1][index][1]:.0f}" for r in results) + " |")
    print("\n| run | peak RSS MiB | recycled | p50 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, samples, latencies, recycled in results:
        peak = max(rss for _, rss in samples)
        print(
            f"| {label} | {peak:.0f} | {recycled:.0f} | {statistics.median(latencies) * 1000:.0f} | "
            f"{percentile(latencies, 0.99) * 1000:.0f} | {max(latencies) * 1000:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    grow = sub.add_parser("growth", help="pool growth under a step load")
    grow.add_argument("--max", type=int, default=4, help="the elastic pool's MAX (default 4)")
    grow.add_argument("--clients", type=int, default=16)
    grow.add_argument("--work-ms", type=int, default=100, help="how long each request holds a kernel")
    grow.add_argument("--duration", type=float, default=10.0)
    grow.add_argument("--idle", type=float, default=2.0, help="--pool-idle-timeout")
    rec = sub.add_parser("recycle", help="RSS of a leaky notebook with and without --kernel-max-memory")
    rec.add_argument("--requests", type=int, default=200)
    rec.add_argument("--leak-mib", type=int, default=4)
    rec.add_argument("--limit-mib", type=int, default=200)
    rec.add_argument("--every", type=int, default=20, help="requests between RSS samples")
    args = parser.parse_args()
    growth(args) if args.what == "growth" else recycle(args)


if __name__ == "__main__":
    main()
