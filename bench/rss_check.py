"""Memory after many large requests: worker and kernel RSS before and after N 1 MiB echoes.

    python bench/rss_check.py                 # 2,000 requests of 1 MiB, pool 1, 4 clients
    python bench/rss_check.py --n 500 --size 262144

Starts ``nb2svc serve bench/notebooks/hello.ipynb`` on a free loopback port, warms up, reads
the RSS of the gunicorn worker and of the kernel from /proc, sends the requests (a padded
JSON body to ``POST /echo``, checked to come back whole), reads RSS again and prints a
table. Issue 11's target: no more than 50 MB growth for either process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "bench" / "notebooks" / "hello.ipynb"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="requests (default 2000)")
    ap.add_argument("--size", type=int, default=1 << 20, help="body bytes (default 1 MiB)")
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "nb2svc", "serve", str(NOTEBOOK), "--port", str(port), "--pool-size", "1",
         "--max-body-size", str(4 * args.size + 4096)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/_api/health/ready", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        (worker,) = children(server.pid)
        (kernel,) = children(worker)
        body = json.dumps({"pad": "x" * (args.size - 12)})
        session = requests.Session()

        def one(_: int) -> None:
            r = session.post(
                base + "/echo", data=body, headers={"Content-Type": "application/json"}, timeout=120
            )
            assert r.status_code == 200 and len(r.content) >= args.size - 16, r.status_code

        for i in range(20):  # warm-up: caches, allocator arenas
            one(i)
        before = rss_mb(worker), rss_mb(kernel)
        started = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, range(args.n)))
        seconds = time.monotonic() - started
        after = rss_mb(worker), rss_mb(kernel)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    print(f"# {args.n} requests of {args.size} bytes, {args.clients} clients, {seconds:.1f} s")
    print(f"{'process':8} {'RSS before MB':>14} {'RSS after MB':>13} {'growth MB':>10}")
    for name, b, a in (("worker", before[0], after[0]), ("kernel", before[1], after[1])):
        print(f"{name:8} {b:14.1f} {a:13.1f} {a - b:10.1f}")


if __name__ == "__main__":
    main()
