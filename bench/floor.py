"""The raw jupyter_client floor: what one execute round trip to an ipykernel costs with no HTTP at all.

Why this exists: every notebook-http request is at least one ``execute_request`` to a kernel, so no
server built on ipykernel can beat these numbers. Comparing a server's p50 at concurrency 1 with the
floor p50 says how many round trips (and how much HTTP overhead) it adds; comparing its best req/s
with the two-kernel executes/s says how close it gets to the CPU ceiling of this machine.

A round trip is: send ``execute_request`` on shell, then wait for BOTH the ``execute_reply`` on shell
AND the ``status: idle`` on iopub whose parent is that request (a server can only answer once the
output is complete, and idle is the kernel's "all output sent" marker). The sockets are read through
the blocking client's channel objects directly (``shell_channel.get_msg``), not ``get_shell_msg``,
whose ``run_sync`` wrapper adds an event loop hop that a server would not pay.

Run: ``python bench/floor.py [--n 2000] [--warmup 200] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

CODE = 'print("hello, world")'
EXPECTED_STDOUT = "hello, world\n"
MSG_TIMEOUT = 10.0


@dataclass
class FloorResult:
    """Latency distribution and throughput of one floor variant."""

    variant: str
    kernels: int
    store_history: bool
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    executes_per_s: float
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an already sorted list.

    Hand-rolled so floor and load-generator numbers use one definition (wrk uses its own HDR
    histogram, which agrees to within its bucket resolution).
    """
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class FloorKernel:
    """One ipykernel plus a blocking client, started and torn down explicitly.

    Heartbeat and stdin channels are off: the heartbeat thread only adds noise, and nothing here
    reads input.
    """

    def __init__(self) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.kc: BlockingKernelClient | None = None

    def start(self) -> None:
        """Start the kernel and make sure iopub is subscribed before anything is timed.

        ``wait_for_ready`` proves shell works; a probe execute proves the SUB socket has joined
        (messages published before that are lost, so a first timed execute could hang).
        """
        self.km.start_kernel()
        kc = self.km.client()
        kc.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        kc.wait_for_ready(timeout=60)
        self.kc = kc
        for _attempt in range(20):
            try:
                self.round_trip(store_history=False, timeout=1.0)
                return
            except TimeoutError:
                continue
        raise RuntimeError("kernel never published iopub idle for a probe execute")

    def round_trip(self, store_history: bool, timeout: float = MSG_TIMEOUT) -> float:
        """One timed execute; returns seconds. Raises if the output or status is wrong.

        Checking the output on every call is cheap and guarantees we time real work.
        """
        kc = self.kc
        assert kc is not None
        t0 = time.perf_counter()
        msg_id = kc.execute(CODE, store_history=store_history)
        got_reply = got_idle = False
        stdout = ""
        status = None
        while not (got_reply and got_idle):
            if not got_reply:
                reply = self._get(kc.shell_channel, timeout)
                if reply["parent_header"].get("msg_id") == msg_id:
                    got_reply = True
                    status = reply["content"].get("status")
                continue
            msg = self._get(kc.iopub_channel, timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            mtype = msg["msg_type"]
            if mtype == "stream":
                stdout += msg["content"].get("text", "")
            elif mtype == "status" and msg["content"].get("execution_state") == "idle":
                got_idle = True
        elapsed = time.perf_counter() - t0
        if status != "ok" or stdout != EXPECTED_STDOUT:
            raise RuntimeError(f"unexpected execute result: status={status!r} stdout={stdout!r}")
        return elapsed

    @staticmethod
    def _get(channel: Any, timeout: float) -> dict[str, Any]:
        """Blocking read of one message; ``queue.Empty`` becomes TimeoutError for the caller."""
        try:
            return channel.get_msg(timeout=timeout)
        except queue.Empty as exc:
            raise TimeoutError from exc

    def stop(self) -> None:
        """Shut the kernel down and wait for the process: a floor run must not leave kernels behind."""
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=False)


def _summarise(variant: str, kernels: int, store_history: bool, lat: list[float], wall: float) -> FloorResult:
    lat_ms = sorted(x * 1000.0 for x in lat)
    return FloorResult(
        variant=variant,
        kernels=kernels,
        store_history=store_history,
        n=len(lat_ms),
        p50_ms=percentile(lat_ms, 50),
        p99_ms=percentile(lat_ms, 99),
        mean_ms=statistics.fmean(lat_ms),
        executes_per_s=len(lat_ms) / wall if wall > 0 else float("nan"),
        wall_s=wall,
    )


def run_single(kernel: FloorKernel, n: int, warmup: int, store_history: bool) -> FloorResult:
    """Sequential round trips on one kernel: the latency floor for a server at concurrency 1."""
    for _ in range(warmup):
        kernel.round_trip(store_history)
    lat: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        lat.append(kernel.round_trip(store_history))
    wall = time.perf_counter() - t0
    name = f"1 kernel, store_history={store_history}"
    return _summarise(name, 1, store_history, lat, wall)


def run_concurrent(kernels: list[FloorKernel], n: int, warmup: int, store_history: bool) -> FloorResult:
    """One thread per kernel, all driven at once: the executes/s ceiling of this machine.

    Threads are fine here despite the GIL: the client side is a few tens of microseconds per
    execute; the kernels are separate processes and are what saturates the cores. Each thread
    does ``n // len(kernels)`` executes so the total is ``n``.
    """
    per = max(1, n // len(kernels))
    lats: list[list[float]] = [[] for _ in kernels]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(kernels) + 1)

    def worker(i: int) -> None:
        try:
            for _ in range(warmup // len(kernels)):
                kernels[i].round_trip(store_history)
            barrier.wait()
            for _ in range(per):
                lats[i].append(kernels[i].round_trip(store_history))
        except BaseException as exc:  # noqa: B036 - reported to the main thread below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(kernels))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"concurrent floor worker failed: {errors[0]!r}")
    all_lat = [x for per_kernel in lats for x in per_kernel]
    name = f"{len(kernels)} kernels x {len(kernels)} threads, store_history={store_history}"
    return _summarise(name, len(kernels), store_history, all_lat, wall)


def run_floor(
    n: int = 2000, warmup: int = 200, concurrent_kernels: int = 2, log: Any = None
) -> list[FloorResult]:
    """Run every floor variant and always shut the kernels down, even on error or Ctrl-C."""
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    kernels: list[FloorKernel] = []
    results: list[FloorResult] = []
    try:
        for _ in range(max(1, concurrent_kernels)):
            k = FloorKernel()
            kernels.append(k)
            k.start()
        for sh in (True, False):
            say(f"floor: 1 kernel, store_history={sh}, n={n}")
            results.append(run_single(kernels[0], n, warmup, sh))
        if concurrent_kernels > 1:
            for sh in (True, False):
                say(f"floor: {concurrent_kernels} kernels concurrently, store_history={sh}, n={n}")
                results.append(run_concurrent(kernels, n, warmup, sh))
    finally:
        for k in kernels:
            try:
                k.stop()
            except Exception as exc:  # noqa: BLE001 - best effort, keep stopping the rest
                say(f"floor: kernel shutdown failed: {exc!r}")
    return results


def format_table(results: list[FloorResult]) -> str:
    """Fixed-width table so the output pastes cleanly into the README."""
    head = f"{'floor variant':<42} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'exec/s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.variant:<42} {r.n:>6} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.mean_ms:>8.2f} {r.executes_per_s:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: run the floor and print the table (optionally save JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="timed executes per variant (default 2000)")
    ap.add_argument("--warmup", type=int, default=200, help="untimed executes first (default 200)")
    ap.add_argument("--kernels", type=int, default=2, help="kernels for the concurrent variant (default 2)")
    ap.add_argument("--json", metavar="PATH", help="also write results as JSON")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    results = run_floor(args.n, args.warmup, args.kernels)
    print(f"# jupyter_client floor: cpus={os.cpu_count()} loadavg(start)={load_before:.2f} code={CODE!r}")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in results], fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
