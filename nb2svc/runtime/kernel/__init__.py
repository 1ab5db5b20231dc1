"""The one kernel layer of both modes (see DESIGN.md, "runtime/kernel").

- :mod:`.process` — a kernel's process behind its provisioner: start, alive, interrupt, stop;
- :mod:`.lifecycle` — the asyncio loop where jupyter_client's coroutines run;
- :mod:`.channels` — green sockets and message dispatch (:class:`Kernel`);
- :mod:`.executor` — run code, collect its output, time out with an interrupt;
- :mod:`.provision` — start and seed (:class:`KernelRecipe`, :func:`start_kernel`);
- :mod:`.supervisor` — one per worker: its pools, start batches and restart decisions;
- :mod:`.pool` — a warm pool: leases for API mode, hand-over for kernel mode;
- :mod:`.policies` — pool size, recycling, restart and retry rules;
- :mod:`.memory` — a kernel's resident memory, wherever it runs;
- :mod:`.environment` — the environment whitelist.
"""

from __future__ import annotations

from nb2svc.runtime.kernel.channels import Kernel, KernelDied
from nb2svc.runtime.kernel.environment import kernel_env
from nb2svc.runtime.kernel.executor import ExecutionResult, ExecutionTimeout, execute
from nb2svc.runtime.kernel.policies import PoolSize, RecyclePolicy, RestartPolicy, RetryPolicy
from nb2svc.runtime.kernel.pool import KernelPool, PoolBusy, PoolFailed
from nb2svc.runtime.kernel.process import TRANSPORTS, KernelProcess, KernelStartError
from nb2svc.runtime.kernel.provision import KernelRecipe, SetupCell, SetupFailed, start_kernel
from nb2svc.runtime.kernel.supervisor import KernelSupervisor

__all__ = [
    "TRANSPORTS",
    "ExecutionResult",
    "ExecutionTimeout",
    "Kernel",
    "KernelDied",
    "KernelPool",
    "KernelProcess",
    "KernelRecipe",
    "KernelStartError",
    "KernelSupervisor",
    "PoolBusy",
    "PoolFailed",
    "PoolSize",
    "RecyclePolicy",
    "RestartPolicy",
    "RetryPolicy",
    "SetupCell",
    "SetupFailed",
    "execute",
    "kernel_env",
    "start_kernel",
]
