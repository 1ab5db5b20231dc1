"""The worker process's own figures on the metrics page: CPU, memory, descriptors, start time.

Prometheus' conventional ``process_*`` families (the names prometheus-client's process
collector writes), read when the page is asked for: ``os.times()`` for CPU, and on Linux
``/proc/self`` for resident memory, open descriptors (a leak of them is how a worker
fails, see RUNTIME-NOTES' ``run_sync``) and the start time. Without /proc only the CPU
seconds are written.

They describe one process, so with several workers they are never summed: each is
merged as ``"worker"`` (:mod:`nb2svc.runtime.metrics`), one series per worker labelled
``worker="<pid>"`` (a sum of start times means nothing, and a worker's own memory is what
one watches per process). The kernels' memory is ``nb2svc_kernel_memory_pss_bytes``.
"""

from __future__ import annotations

import os

from nb2svc.runtime.metrics import Family

PER_WORKER = " (with several workers, one series per worker: label worker)."


def process_families() -> list[Family]:
    """This process's ``process_*`` families, each merged per worker."""
    times = os.times()
    families = [
        Family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time of this worker process, in seconds" + PER_WORKER,
            merge="worker",
        ).add(times.user + times.system)
    ]
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        descriptors = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError, StopIteration):
        return families  # no /proc: the CPU time alone
    started = boot + started_ticks / os.sysconf("SC_CLK_TCK")
    return families + [
        Family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of this worker process" + PER_WORKER,
            merge="worker",
        ).add(resident),
        Family(
            "process_open_fds",
            "gauge",
            "Open file descriptors of this worker process" + PER_WORKER,
            merge="worker",
        ).add(descriptors),
        Family(
            "process_start_time_seconds",
            "gauge",
            "Start time of this worker process since the Unix epoch, in seconds" + PER_WORKER,
            merge="worker",
        ).add(started),
    ]


__all__ = ["process_families"]
