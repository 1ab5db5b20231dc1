"""Kernel memory as the machine pays for it: proportional set size (PSS), not RSS.

Forked kernels share their template's pages copy-on-write: RSS counts each shared page
once per kernel (a pool of four holding a 400 MB model reads as 1.6 GB), PSS divides
it among the processes sharing it, so the sum over a pool and its template is what
the pool costs. Read from ``/proc/PID/smaps_rollup`` (Linux 4.14+): for local kernels
only, since a remote kernel's pid means nothing here.
"""

from __future__ import annotations

from collections.abc import Iterable


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
