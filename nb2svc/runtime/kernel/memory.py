"""Kernel memory: what a kernel holds (for ``--kernel-max-memory``) and what a pool costs (metrics).

- :func:`resident_bytes`: a kernel's resident memory, wherever it runs, for recycling.
  Provisioner-neutral first: API mode's Python agent (:mod:`.agent`) adds its resident set
  size (``/proc/self/statm``, else the peak from ``getrusage``) to every execute reply as a
  :data:`~.agent.MEMORY` payload, and the executor keeps the last value on the kernel
  (:attr:`Kernel.reported_memory <nb2svc.runtime.kernel.channels.Kernel.reported_memory>`),
  which works for a kernel in a pod or on another host; for a ``LocalProvisioner`` kernel
  its process's ``/proc/<pid>/statm`` is read when asked (a syscall; exact after the
  answer even for non-Python kernels). ``None`` when neither is known (a remote kernel
  without the agent): recycling by memory then does nothing for that kernel, and the pool
  says so once in its log. RSS counts pages a forked kernel shares with its template, so
  a limit for forked kernels must leave room for the template.
- :func:`pss_bytes`, :func:`summed_pss`: memory as the machine pays for it, proportional
  set size (PSS), not RSS. Forked kernels share their template's pages copy-on-write: RSS
  counts each shared page once per kernel (a pool of four holding a 400 MB model reads as
  1.6 GB), PSS divides it among the processes sharing it, so the sum over a pool and its
  template is what the pool costs. Read from ``/proc/PID/smaps_rollup`` (Linux 4.14+): for
  local kernels only, since a remote kernel's pid means nothing here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nb2svc.runtime.kernel.channels import Kernel

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def pss_bytes(pid: int) -> int | None:
    """The proportional set size of process ``pid`` in bytes, or None (gone, or no smaps_rollup)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def summed_pss(pids: Iterable[int | None]) -> int:
    """The summed PSS of the processes that exist among ``pids`` (None entries skipped)."""
    return sum(pss or 0 for pss in (pss_bytes(pid) for pid in set(pids) if pid is not None))


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
