"""The one kernel layer of both modes (see DESIGN.md, "runtime/kernel").

- :mod:`.process` — a kernel's process behind its provisioner: start, alive, interrupt, stop;
- :mod:`.lifecycle` — the asyncio loop where jupyter_client's coroutines run;
- :mod:`.channels` — green sockets and message dispatch (:class:`Kernel`);
- :mod:`.executor` — run code, collect its output, time out with an interrupt;
- :mod:`.provision` — start and seed (:class:`KernelRecipe`, :func:`start_kernel`);
- :mod:`.forking` — kernels forked from a template that ran setup once (``--kernel-start``),
  with :mod:`.template`, the template's own side, run by the kernel spec's Python;
- :mod:`.memory` — kernel memory as PSS;
- :mod:`.pool` — the warm supply: leases for API mode, hand-over for kernel mode;
- :mod:`.environment` — the environment whitelist.
"""

from __future__ import annotations

from nb2svc.runtime.kernel.channels import Kernel, KernelDied
from nb2svc.runtime.kernel.environment import kernel_env
from nb2svc.runtime.kernel.executor import ExecutionResult, ExecutionTimeout, execute
from nb2svc.runtime.kernel.pool import KernelPool, PoolBusy, PoolFailed, RetryPolicy
from nb2svc.runtime.kernel.process import TRANSPORTS, KernelProcess, KernelStartError
from nb2svc.runtime.kernel.provision import KernelRecipe, SetupCell, SetupFailed, start_kernel

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
    "PoolBusy",
    "PoolFailed",
    "RetryPolicy",
    "SetupCell",
    "SetupFailed",
    "execute",
    "kernel_env",
    "start_kernel",
]
