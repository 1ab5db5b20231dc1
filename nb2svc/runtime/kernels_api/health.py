"""Kernel mode's readiness and metrics, as the shared skeleton (:mod:`nb2svc.runtime.webapp`) asks.

Ready means: every ``--prespawn`` kernel started, the ``--warm`` pool filled once, and no
seed or prespawn failure (the body then says why). The metrics page describes this
worker's kernels as an operator watches them: how many of each spec and state, how many
websocket clients they have, how full the warm pool is and how often a kernel was
replaced, and how long kernels take to start (``nb2svc_kernel_start_seconds``). Kernel
mode runs one worker, so the page covers every kernel of the replica; each family would
sum over workers all the same (they count kernels, clients and starts).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from nb2svc.runtime.kernels_api.manager import KernelRegistry
from nb2svc.runtime.metrics import Family, Histogram


def readiness(registry: KernelRegistry) -> tuple[bool, dict[str, Any]]:
    """``(ready, body)`` for ``/_api/health/ready``."""
    ready = registry.ready
    body: dict[str, Any] = {
        "ready": ready,
        "kernels": len(registry.kernels),
        "warm": registry.warm.stats().idle,
    }
    if not ready:
        body["reason"] = registry.not_ready_reason
    return ready, body


def kernel_metrics(registry: KernelRegistry) -> list[Family | Histogram]:
    """The kernel-mode ``/_api/metrics`` families."""
    kernels = list(registry.kernels.values())
    by_state = Counter((kernel.name, kernel.execution_state) for kernel in kernels)
    running = Family("nb2svc_kernels", "gauge", "Kernels listed by this server, by kernel spec and state.")
    for (name, state), count in sorted(by_state.items()):
        running.add(count, kernel_name=name, execution_state=state)
    warm = registry.warm.stats()
    return [
        running,
        Family("nb2svc_kernel_connections", "gauge", "Websocket clients attached to kernels.").add(
            sum(len(kernel.clients) for kernel in kernels)
        ),
        Family("nb2svc_kernels_max", "gauge", "--max-kernels (0: no limit).").add(
            registry.settings.max_kernels
        ),
        Family("nb2svc_warm_kernels_size", "gauge", "Configured --warm kernels.").add(warm.size),
        Family("nb2svc_warm_kernels_idle", "gauge", "Warm kernels ready to hand out.").add(warm.idle),
        Family("nb2svc_warm_kernels_starting", "gauge", "Warm kernels being started or seeded.").add(
            warm.starting
        ),
        Family(
            "nb2svc_kernel_replacements_total", "counter", "Warm kernels replaced after dying or wedging."
        ).add(warm.replaced),
        Family(
            "nb2svc_kernel_memory_pss_bytes",
            "gauge",
            "Proportional set size of the listed local kernels and their templates "
            "(shared pages counted once).",
        ).add(registry.memory_pss()),
        registry.kernel_starts,
    ]


__all__ = ["kernel_metrics", "readiness"]
