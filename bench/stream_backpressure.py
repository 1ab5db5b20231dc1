"""Worker memory when a streaming client does not read: peak RSS with a slow reader.

    python bench/stream_backpressure.py                    # 300 lines of 1 MiB
    python bench/stream_backpressure.py --lines 100 --repo /work/main   # another checkout

Serves a notebook whose stream endpoint prints ``--lines`` lines of 1 MiB, opens the
stream with a 4 KiB receive buffer and reads nothing until the kernel is free again (the
cell finished, or was interrupted because the client fell behind), then reads the worker's
peak RSS (``VmHWM``) and prints it beside its RSS before the request, and how many bytes
the client finally received. ``--repo`` runs another checkout's nb2svc (its directory on
``sys.path`` first) with the same script, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(field)


def worker_of(master: int) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == master:
                        with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                            if b"ipykernel" not in cmd.read():
                                return int(entry)
            except (OSError, ValueError, IndexError):
                pass
    raise RuntimeError("no worker found")


def notebook(lines: int) -> dict:
    def cell(source: str, meta: dict | None = None) -> dict:
        return {
            "cell_type": "code",
            "metadata": meta or {},
            "source": source,
            "outputs": [],
            "execution_count": None,
        }

    flood = f"# GET /flood\nfor i in range({lines}):\n    print(str(i % 10) * (1 << 20), flush=True)"
    return {
        "cells": [cell("x = 1"), cell(flood, {"nb2svc": {"response": "stream"}})],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def busy(base: str) -> float:
    for line in requests.get(base + "/_api/metrics", timeout=10).text.splitlines():
        if line.startswith("nb2svc_pool_kernels_busy"):
            return float(line.rsplit(" ", 1)[1])
    raise ValueError("no busy gauge")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=300, help="1 MiB lines the cell prints (default 300)")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose nb2svc runs (default: this one)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="nb2svc-bench-"))
    (folder / "flood.ipynb").write_text(json.dumps(notebook(args.lines)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "nb2svc", "serve", str(folder / "flood.ipynb"), "--port", str(port)]
    command += ["--pool-size", "1", "--request-timeout", "600"]
    server = subprocess.Popen(
        command,
        cwd=args.repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(args.repo)},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(base + "/_api/health/ready", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready")
            time.sleep(0.2)
        worker = worker_of(server.pid)
        before = status_kb(worker, "VmRSS")
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        started = time.monotonic()
        while busy(base) == 0 and time.monotonic() - started < 10:  # the request takes the kernel
            time.sleep(0.05)
        while busy(base) > 0:  # the cell runs (or waits to be interrupted)
            time.sleep(0.1)
        peak = status_kb(worker, "VmHWM")
        received = 0
        while chunk := client.recv(1 << 20):
            received += len(chunk)
        client.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    print("| checkout | lines x 1 MiB | worker RSS before | worker peak RSS | client received |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.repo} | {args.lines} | {before / 1024:.0f} MiB | {peak / 1024:.0f} MiB "
        f"| {received / (1 << 20):.1f} MiB |"
    )


if __name__ == "__main__":
    main()
