"""A kernel's resident memory, for ``--kernel-max-memory``, wherever the kernel runs.

Two sources, provisioner-neutral first:

- what the kernel itself reported: API mode's Python agent (:mod:`.agent`) adds its
  resident set size (``/proc/self/statm``, else the peak from ``getrusage``) to every
  execute reply as a :data:`~.agent.MEMORY` payload, and the executor keeps the last value on the kernel
  (:attr:`Kernel.reported_memory <nb2svc.runtime.kernel.channels.Kernel.reported_memory>`);
  this works for a kernel in a pod or on another host;
- the fast path, for a ``LocalProvisioner`` kernel: its process's ``/proc/<pid>/statm``,
  read when asked (a syscall; exact after the answer even for non-Python kernels).

``None`` when neither is known (a remote kernel without the agent): recycling by memory
then does nothing for that kernel, and the pool says so once in its log.
"""

from __future__ import annotations

import os

from nb2svc.runtime.kernel.channels import Kernel

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_resident_bytes(pid: int) -> int | None:
    """Resident bytes of local process ``pid`` (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def resident_bytes(kernel: Kernel) -> int | None:
    """The kernel's resident memory now (local fast path) or as it last reported it."""
    pid = kernel.process.local_pid
    if pid is not None:
        measured = process_resident_bytes(pid)
        if measured is not None:
            return measured
    return kernel.reported_memory
