"""What a request-duration histogram costs: nb2svc's writer against prometheus-client.

Three ways to keep the histogram nb2svc's ``/_api/metrics`` shows (method, route, status;
14 buckets), each timed in a fresh process:

- ``nb2svc``: :class:`nb2svc.runtime.metrics.Histogram` (per worker, in memory);
- ``prom``: prometheus-client's ``Histogram`` in its default single-process mode;
- ``prom-mp``: prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), the
  one that adds up several gunicorn workers: values live in mmapped files.

For each: the CPU time of one ``observe`` (the per-request cost), and of rendering the
page with 20 label sets (the per-scrape cost); for ``prom-mp`` also with the files that
``--workers`` processes (and their restarts) leave.

Then what adding workers up costs (:mod:`nb2svc.runtime.shared_metrics`), on an API-mode
page of the same size (requests and durations by 20 routes and statuses, kernel starts,
the pool's gauges, counters and queue wait, the process figures): a scrape with 1 worker (no sharing: the
page as it always was), and with 2, 4 and 8 (its own page plus the other live workers'
snapshots, read, parsed and summed, its own page written as its snapshot, all under the
server's metrics lock), the same with the counts of gone workers (``retired.prom``) to add
too, one worker's publish (render and write its snapshot, once per second), and the fold
of a worker's final page into the retired counts (once per worker exit). The other
workers are real live processes, so the liveness check (``/proc/<pid>/stat``) is part of
the time. Wall time per call.

Run: ``python bench/metrics_cost.py`` (``--merge-only`` for the second table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROUTES = [f"/orders/r{i}" for i in range(10)]
STATUSES = ("200", "500")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def _per_call(fn: object, n: int) -> float:
    started = time.process_time()
    fn(n)  # type: ignore[operator]
    return (time.process_time() - started) / n * 1e6


def run_variant(variant: str, n: int, files: int) -> dict[str, float]:
    values = [((i * 7919) % 1000) / 1000 for i in range(n)]
    if variant == "nb2svc":
        from nb2svc.runtime.metrics import Histogram, exposition

        hist = Histogram("nb2svc_request_duration_seconds", "Request duration.", BUCKETS)

        def observe(count: int) -> None:
            for i in range(count):
                hist.observe(values[i], method="GET", route=ROUTES[i % 10], status=STATUSES[i & 1])

        def render(count: int) -> None:
            for _ in range(count):
                exposition([hist])
    else:
        from prometheus_client import CollectorRegistry, Histogram, generate_latest

        registry = CollectorRegistry() if variant == "prom" else None
        hist = Histogram(
            "nb2svc_request_duration_seconds",
            "Request duration.",
            ["method", "route", "status"],
            buckets=BUCKETS,
            registry=registry or CollectorRegistry(),
        )
        if variant == "prom-mp":
            from prometheus_client import multiprocess

            scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(scrape)
        else:
            scrape = registry

        def observe(count: int) -> None:
            for i in range(count):
                hist.labels("GET", ROUTES[i % 10], STATUSES[i & 1]).observe(values[i])

        def render(count: int) -> None:
            for _ in range(count):
                generate_latest(scrape)

    result = {"observe_us": _per_call(observe, n)}
    result["scrape_us"] = _per_call(render, 200)
    return result


def api_page() -> list:
    """An API-mode page's families, as :func:`nb2svc.runtime.http_api.health.api_metrics` makes them."""
    from nb2svc.runtime.http_api.health import POOL_COUNTERS, POOL_GAUGES, saturation
    from nb2svc.runtime.metrics import KERNEL_START_BUCKETS, Family, Histogram
    from nb2svc.runtime.process_metrics import process_families

    requests = Family("nb2svc_requests_total", "counter", "Endpoint requests answered, by route and status.")
    durations = Histogram("nb2svc_request_duration_seconds", "Request duration.", BUCKETS)
    for i in range(20):
        route, status = ROUTES[i % 10], STATUSES[i // 10]
        requests.add(1000 + i, route=f"GET {route}", status=status)
        for value in (0.003, 0.02, 0.4):
            durations.observe(value, method="GET", route=route, status=status)
    starts = Histogram("nb2svc_kernel_start_seconds", "Kernel starts.", KERNEL_START_BUCKETS)
    starts.observe(0.4)
    waits = Histogram("nb2svc_pool_queue_wait_seconds", "Queue waits.", BUCKETS)
    waits.observe(0.001)
    gauges = [
        Family(name, "gauge", text, merge=saturation() if name == "nb2svc_pool_saturation" else "sum").add(2)
        for name, text, _ in POOL_GAUGES
    ]
    counters = [Family(name, "counter", text).add(3) for name, text, _ in POOL_COUNTERS]
    memory = Family("nb2svc_kernel_memory_pss_bytes", "gauge", "PSS.").add(123456789)
    return [requests, durations, starts, *gauges, *counters, waits, memory, *process_families()]


def merge_rows(repeat: int = 300) -> list[tuple[int, float, float, float, float, int]]:
    """(workers, scrape µs, scrape µs with retired counts, publish µs, fold µs, page bytes)
    with 1, 2, 4 and 8 workers."""
    from nb2svc.runtime import reaper, retired_metrics
    from nb2svc.runtime.metrics import exposition
    from nb2svc.runtime.shared_metrics import SNAPSHOT, SharedMetrics

    families = api_page()
    rows = []
    for workers in (1, 2, 4, 8):
        others = [
            subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
            for _ in range(workers - 1)
        ]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                server = os.path.join(tmp, reaper._name(os.getppid()) or "x")
                for pid in [os.getpid()] + [p.pid for p in others]:
                    os.makedirs(os.path.join(server, reaper._name(pid) or "x"))
                for p in others:
                    with open(os.path.join(server, reaper._name(p.pid) or "x", SNAPSHOT), "w") as f:
                        f.write(exposition(families))
                shared = SharedMetrics()
                shared.source = lambda: families
                mine = os.path.join(server, reaper._name(os.getpid()) or "x")
                shared.start(workers, lambda mine=mine: mine, 3600)

                def scrape_us(shared: SharedMetrics = shared) -> float:
                    started = time.perf_counter()
                    for _ in range(repeat):
                        shared.page(lambda: families)
                    return (time.perf_counter() - started) / repeat * 1e6

                scrape = scrape_us()
                started = time.perf_counter()
                for _ in range(repeat):
                    shared.publish()
                publish = (time.perf_counter() - started) / repeat * 1e6 if shared.sharing else 0.0
                page = shared.page(lambda: families)
                fold = retired = 0.0
                if shared.sharing:
                    # a graceful exit's fold (its directory already gone: the file keeps its size)
                    gone, text = os.path.join(server, "1-1"), exposition(families)
                    started = time.perf_counter()
                    for _ in range(repeat):
                        retired_metrics.retire(gone, text)
                    fold = (time.perf_counter() - started) / repeat * 1e6
                    retired = scrape_us()  # every scrape adds the gone workers' counts up too
                shared.stop()
        finally:
            for p in others:
                p.kill()
                p.wait()
        rows.append((workers, scrape, retired, publish, fold, len(page)))
    return rows


def child_files(directory: str, count: int) -> None:
    """``count`` other worker processes' histogram files in ``directory`` (prom-mp)."""
    code = (
        "import sys; sys.argv=['x','--variant','prom-mp','--n','2000','--files','0','--child']; "
        f"exec(open({__file__!r}).read())"
    )
    for _ in range(count):
        subprocess.run([sys.executable, "-c", code], env=os.environ, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("nb2svc", "prom", "prom-mp"))
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=0)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--merge-only", action="store_true", help="only the several-workers table")
    args = parser.parse_args()
    if args.variant:
        if args.files:
            child_files(os.environ["PROMETHEUS_MULTIPROC_DIR"], args.files)
        result = run_variant(args.variant, args.n, args.files)
        if not args.child:
            print(json.dumps(result))
        return
    if not args.merge_only:
        histogram_table(args.n)
    print()
    head = ("workers", "scrape µs", "+retired µs", "publish µs", "fold µs", "page bytes")
    print(f"{head[0]:>7} {head[1]:>10} {head[2]:>12} {head[3]:>11} {head[4]:>8} {head[5]:>11}")
    for workers, scrape, retired, publish, fold, size in merge_rows():
        print(f"{workers:>7} {scrape:>10.0f} {retired:>12.0f} {publish:>11.0f} {fold:>8.0f} {size:>11}")


def histogram_table(n: int) -> None:
    rows = []
    for variant, files in (("nb2svc", 0), ("prom", 0), ("prom-mp", 0), ("prom-mp", 4), ("prom-mp", 32)):
        with tempfile.TemporaryDirectory() as directory:
            env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory} if variant == "prom-mp" else None
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--n", str(n), "--files", str(files)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        result = json.loads(out)
        rows.append((variant, files, result["observe_us"], result["scrape_us"]))
    print(f"{'variant':<10} {'other files':>11} {'observe µs':>11} {'scrape µs':>10}")
    for variant, files, observe, scrape in rows:
        print(f"{variant:<10} {files:>11} {observe:>11.2f} {scrape:>10.0f}")


if __name__ == "__main__":
    main()
