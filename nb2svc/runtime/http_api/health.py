"""API mode's readiness and metrics, as the shared skeleton (:mod:`nb2svc.runtime.webapp`) asks.

Ready means every mounted notebook's pool is warm. With one notebook the body is that
pool's numbers (``ready``, ``kernels``, ``idle``, ``size``, and ``error`` when it cannot
start); with several, ``{"ready", "notebooks": {name: those numbers}}``. Metrics count
requests per route and status, time them to their last byte
(``nb2svc_request_duration_seconds``, a histogram by method, route with its mount and
status), time kernel starts (``nb2svc_kernel_start_seconds``) and describe each pool;
with several notebooks every series carries a ``notebook`` label. An elastic pool
(``--pool-size MIN..MAX``) adds its ``min`` and ``max`` to the body. Pool metrics: size
(aimed at, MIN, MAX), live, idle, busy, starting kernels, waiting requests, the queue wait
(``nb2svc_pool_queue_wait_seconds``, a histogram), and counters of replacements,
recycled kernels and idle stops.

With several workers the page is the server's (:mod:`nb2svc.runtime.shared_metrics`):
every family is summed over the live workers (the pool's sizes and kernels too: the
server's kernels are every worker's), the counters and histograms also over the workers
that are gone (:mod:`nb2svc.runtime.retired_metrics`), except the saturation, recomputed
from those sums (:class:`~nb2svc.runtime.metrics.Ratio`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nb2svc.runtime.http_api.service import ApiService
from nb2svc.runtime.kernel.pool import PoolStats
from nb2svc.runtime.metrics import Family, Histogram, Ratio


def readiness(services: Sequence[ApiService]) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)`` for ``/_api/health/ready``."""
    states = {}
    for service in services:
        stats = service.pool.stats()
        state: dict[str, Any] = {
            "ready": service.pool.ready,
            "kernels": stats.live,
            "idle": stats.idle,
            "size": stats.size,
        }
        if stats.maximum > stats.minimum:  # an elastic pool: ready once MIN are warm
            state |= {"min": stats.minimum, "max": stats.maximum}
        if service.pool.failure is not None:
            state["error"] = str(service.pool.failure)
        states[service.spec.name] = state
    ready = all(service.pool.ready for service in services)
    if len(services) == 1:
        return ready, next(iter(states.values()))
    return ready, {"ready": ready, "notebooks": states}


def saturation() -> Ratio:
    """How ``nb2svc_pool_saturation`` adds up over workers: the server's busy kernels and
    waiting requests over the server's pool size, not a sum (nor a mean) of ratios."""
    return Ratio(("nb2svc_pool_kernels_busy", "nb2svc_pool_waiting_requests"), "nb2svc_pool_size")


#: Pool gauges: name, help, the value read from a pool's :class:`PoolStats`.
POOL_GAUGES: tuple[tuple[str, str, Callable[[PoolStats], float]], ...] = (
    ("nb2svc_pool_size", "Kernels the pool aims at now (its MIN, more while it grows).", lambda s: s.size),
    ("nb2svc_pool_size_min", "Kernels the pool always keeps (--pool-size MIN).", lambda s: s.minimum),
    ("nb2svc_pool_size_max", "Kernels the pool may grow to (--pool-size MAX).", lambda s: s.maximum),
    ("nb2svc_pool_kernels_live", "Kernels alive in the pool.", lambda s: s.live),
    ("nb2svc_pool_kernels_idle", "Kernels free to take a request.", lambda s: s.idle),
    ("nb2svc_pool_kernels_busy", "Kernels running a request.", lambda s: s.busy),
    ("nb2svc_pool_kernels_starting", "Kernels being started or seeded.", lambda s: s.starting),
    ("nb2svc_pool_waiting_requests", "Requests waiting for a free kernel.", lambda s: s.waiting),
    (
        "nb2svc_pool_saturation",
        "Busy kernels plus waiting requests, over pool size (scale out above 1; with several "
        "workers, the server's sums).",
        lambda s: (s.busy + s.waiting) / max(1, s.size),
    ),
)

#: Pool counters: name, help, the value read from a pool's :class:`PoolStats`.
POOL_COUNTERS: tuple[tuple[str, str, Callable[[PoolStats], float]], ...] = (
    ("nb2svc_kernel_replacements_total", "Kernels replaced after dying or wedging.", lambda s: s.replaced),
    (
        "nb2svc_kernel_recycled_total",
        "Kernels retired after answering, over --kernel-max-requests or --kernel-max-memory.",
        lambda s: s.recycled,
    ),
    (
        "nb2svc_pool_idle_stops_total",
        "Kernels above the pool's MIN stopped after --pool-idle-timeout idle.",
        lambda s: s.stopped_idle,
    ),
)


def api_metrics(services: Sequence[ApiService]) -> list[Family | Histogram]:
    """The API-mode ``/_api/metrics`` families."""
    several = len(services) > 1

    def labels(service: ApiService, **more: str) -> dict[str, str]:
        return ({"notebook": service.spec.name} if several else {}) | more

    requests = Family("nb2svc_requests_total", "counter", "Endpoint requests answered, by route and status.")
    for service in services:
        for (route, status), count in sorted(service.requests.items()):
            requests.add(count, **labels(service, route=route, status=str(status)))
    stats = [(service, service.pool.stats()) for service in services]
    gauges = [
        Family(
            name,
            "gauge",
            help_text,
            [(labels(service), value(stat)) for service, stat in stats],
            merge=saturation() if name == "nb2svc_pool_saturation" else "sum",
        )
        for name, help_text, value in POOL_GAUGES
    ]
    counters = [
        Family(name, "counter", help_text, [(labels(service), value(stat)) for service, stat in stats])
        for name, help_text, value in POOL_COUNTERS
    ]
    memory = Family(
        "nb2svc_kernel_memory_pss_bytes",
        "gauge",
        "Proportional set size of the pool's local kernels and their template (shared pages counted once).",
        [(labels(service), service.memory_pss()) for service in services],
    )
    return [
        requests,
        Histogram.combined([(service.durations, labels(service)) for service in services]),
        Histogram.combined([(service.kernel_starts, labels(service)) for service in services]),
        *gauges,
        *counters,
        Histogram.combined([(stat.queue_wait, labels(service)) for service, stat in stats]),
        memory,
    ]


__all__ = ["api_metrics", "readiness"]
