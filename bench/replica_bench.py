"""Kernel mode on two replicas (issue 19): a websocket round trip through a forwarding replica
against the same round trip on the kernel's owner.

Starts a throwaway ``redis-server`` and two ``nb2svc serve --kernels --store redis://…``
replicas on 127.0.0.1, starts one kernel on replica A, and times ``execute_request`` for
``print("hello, world")`` until both the ``execute_reply`` and the iopub ``status: idle``
(bench/ws_bench.py's client), alternately on a websocket to A (direct) and one to B (B relays
every frame to A), in blocks, for both wire formats. Prints p50/p99 per path and the ratio of
medians (goal: forwarded ≤ 1.3× direct).

Then adoption: a third replica C starts a kernel on the detached test provisioner
(``tests/provisioners``: the kernel runs in a session of its own, as a pod would), is killed
with SIGKILL, and the time until the same kernel executes again through replica A (a
websocket retried until it opens and answers) is measured, ``--adoptions`` times (goal:
≤ 5 s with a 2 s ``--replica-lease``).

Run: ``python bench/replica_bench.py`` (about 30 s; ``--help`` for sizes). Needs ``redis-server``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from api_bench import free_port, machine_info
from floor import percentile
from ws_bench import AUTH, CODE, TOKEN, WsClient

REPO = Path(__file__).resolve().parent.parent


def detached_env(root: Path) -> dict[str, str]:
    """This environment plus the detached test provisioner's kernel spec ``detached_python``."""
    sys.path.insert(0, str(REPO))
    from tests.kernels_support import detached_spec

    return {**os.environ, **detached_spec(root)}


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True, env=env
        )


def start_replica(name: str, redis_port: int, lease: str, logs: Path, env: dict[str, str]) -> tuple[Any, str]:
    port = free_port()
    proc = start(
        [sys.executable, "-m", "nb2svc", "serve", "--kernels", "--host", "127.0.0.1", "--port", str(port)]
        + ["--token", TOKEN, "--store", f"redis://127.0.0.1:{redis_port}/0", "--replica-lease", lease],
        logs / f"replica-{name}.log",
        env,
    )
    base = f"http://127.0.0.1:{port}"
    wait(lambda: requests.get(base + "/_api/health/ready", timeout=5).ok, 60, f"replica {name}")
    return proc, base


def adoption_seconds(redis_port: int, lease: str, logs: Path, env: dict[str, str], survivor: str) -> float:
    """SIGKILL a replica that owns a detached kernel; seconds until the kernel executes via ``survivor``."""
    proc, base = start_replica("doomed", redis_port, lease, logs, env)
    kernel_id = ""
    try:
        kernel = requests.post(
            base + "/api/kernels", json={"name": "detached_python"}, headers=AUTH, timeout=60
        )
        kernel_id = kernel.json()["id"]
        client = WsClient(base, kernel_id, False)
        client.execute(CODE)
        client.close()
        killed = time.perf_counter()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        while time.perf_counter() - killed < 60:
            try:
                client = WsClient(survivor, kernel_id, False)
                try:
                    client.execute(CODE)
                    return time.perf_counter() - killed
                finally:
                    client.close()
            except Exception:  # not taken over yet: 404, or relayed to the dead owner and closed
                time.sleep(0.05)
        raise SystemExit("the kernel was not adopted within 60 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if kernel_id:
            requests.delete(f"{survivor}/api/kernels/{kernel_id}", headers=AUTH, timeout=60)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group (kernels shut down with their replica), SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executes", type=int, default=600, help="timed executes per path and protocol")
    parser.add_argument("--block", type=int, default=50, help="executes per block before switching path")
    parser.add_argument("--lease", default="2", help="--replica-lease of every replica, seconds")
    parser.add_argument("--adoptions", type=int, default=3, help="owner kills timed (0: none)")
    options = parser.parse_args()
    redis_binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if redis_binary is None:
        print("redis-server is not installed", file=sys.stderr)
        return 2
    logs = Path(tempfile.mkdtemp(prefix="replica-bench-"))
    redis_port = free_port()
    procs = [
        start(
            [redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(logs)]
            + ["--save", "", "--appendonly", "no"],
            logs / "redis.log",
        )
    ]
    try:
        env = detached_env(logs)
        bases = []
        for name in ("a", "b"):
            proc, base = start_replica(name, redis_port, options.lease, logs, env)
            procs.append(proc)
            bases.append(base)
        direct, forwarding = bases
        kernel = requests.post(direct + "/api/kernels", headers=AUTH, timeout=60).json()["id"]
        info = machine_info()
        print(f"# {info.get('cpus')} CPUs, load {os.getloadavg()[0]:.2f} at start")
        print(f"{'protocol':<8} {'path':<22} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
        for v1 in (False, True):
            clients = {
                "direct (owner)": WsClient(direct, kernel, v1),
                "forwarded (other)": WsClient(forwarding, kernel, v1),
            }
            samples: dict[str, list[float]] = {name: [] for name in clients}
            for client in clients.values():  # warm up both paths
                for _ in range(20):
                    client.execute(CODE)
            while min(len(s) for s in samples.values()) < options.executes:
                for name, client in clients.items():
                    samples[name] += [client.execute(CODE) for _ in range(options.block)]
            for client in clients.values():
                client.close()
            medians = {}
            for name, values in samples.items():
                values.sort()
                medians[name] = percentile(values, 50)
                print(
                    f"{'v1' if v1 else 'legacy':<8} {name:<22} {len(values):>5} "
                    f"{1000 * medians[name]:>8.2f} {1000 * percentile(values, 99):>8.2f}"
                )
            ratio = medians["forwarded (other)"] / medians["direct (owner)"]
            print(f"{'v1' if v1 else 'legacy':<8} {'forwarded / direct':<22} {'':>5} {ratio:>8.2f}x")
        requests.delete(f"{direct}/api/kernels/{kernel}", headers=AUTH, timeout=60)
        times = sorted(
            adoption_seconds(redis_port, options.lease, logs, env, direct) for _ in range(options.adoptions)
        )
        print(
            f"adoption after SIGKILL (--replica-lease {options.lease}): n={len(times)}, "
            f"median {statistics.median(times):.2f} s, max {times[-1]:.2f} s"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
