"""The one kernel layer of both modes (see docs/architecture.md).

- :mod:`.process` — a kernel's process behind its provisioner: start, alive, interrupt, stop;
- :mod:`.lifecycle` — the asyncio loop where jupyter_client's coroutines run;
- :mod:`.channels` — green sockets and message dispatch (:class:`Kernel`);
- :mod:`.executor` — run code, collect its output, time out with an interrupt;
- :mod:`.provision` — start and seed (:class:`KernelRecipe`, :func:`start_kernel`);
- :mod:`.forking` — kernels forked from a template that ran setup once (``--kernel-start``),
  with :mod:`.template`, the template's own side, run by the kernel spec's Python;
- :mod:`.early` — templates ``nb2svc serve`` starts before the worker exists, adopted by it;
- :mod:`.spec_facts` — what a kernel spec says, read without jupyter_client;
- :mod:`.supervisor` — one per worker: its pools, start batches and restart decisions;
- :mod:`.pool` — a warm pool: leases for API mode, hand-over for kernel mode;
- :mod:`.policies` — pool size, recycling, restart and retry rules;
- :mod:`.memory` — a kernel's resident memory (recycling) and PSS (metrics);
- :mod:`.environment` — the environment whitelist;
- :mod:`.invoke` — API mode's invocation protocol (how an endpoint runs with its request);
- :mod:`.agent` — its kernel side in Python kernels (sent as source, no nb2svc needed there).
"""

from __future__ import annotations

from importlib import import_module
from types import MappingProxyType
from typing import Any

# Resolved on first use, not at import: the CLI reads the light modules of this package
# (``invoke.supports_language``) in gunicorn's master, which must not import zmq, gevent or
# jupyter_client before the workers fork (RUNTIME-NOTES: Popen breaks in the worker).
_HOMES = MappingProxyType(
    {
        "TRANSPORTS": "nb2svc.runtime.kernel.process",
        "ExecutionResult": "nb2svc.runtime.kernel.executor",
        "ExecutionTimeout": "nb2svc.runtime.kernel.executor",
        "Kernel": "nb2svc.runtime.kernel.channels",
        "KernelDied": "nb2svc.runtime.kernel.channels",
        "KernelPool": "nb2svc.runtime.kernel.pool",
        "KernelProcess": "nb2svc.runtime.kernel.process",
        "KernelRecipe": "nb2svc.runtime.kernel.provision",
        "KernelStartError": "nb2svc.runtime.kernel.process",
        "KernelSupervisor": "nb2svc.runtime.kernel.supervisor",
        "PoolBusy": "nb2svc.runtime.kernel.pool",
        "PoolFailed": "nb2svc.runtime.kernel.pool",
        "PoolSize": "nb2svc.runtime.kernel.policies",
        "RecyclePolicy": "nb2svc.runtime.kernel.policies",
        "RestartPolicy": "nb2svc.runtime.kernel.policies",
        "RetryPolicy": "nb2svc.runtime.kernel.policies",
        "SetupCell": "nb2svc.runtime.kernel.provision",
        "SetupFailed": "nb2svc.runtime.kernel.provision",
        "execute": "nb2svc.runtime.kernel.executor",
        "kernel_env": "nb2svc.runtime.kernel.environment",
        "start_kernel": "nb2svc.runtime.kernel.provision",
    }
)

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
