"""Kernels of a process that died without stopping them: recorded by it, killed by the master.

Why: a graceful stop shuts kernels down in the worker's ``worker_exit`` hook, but a
worker that is SIGKILLed (the OOM killer, ``kill -9``, gunicorn's timeout kill, a
segfault) runs no hook. ipykernel notices that its parent is gone and exits; xeus-python
and tslab/jslab kernels, and whatever a cell started in a kernel's process group (even
under an ipykernel that exited), would run forever.

How:

- a process that starts kernels (a worker) owns a private directory,
  ``$TMPDIR/nb2svc-<uid>-<host>/<pid>-<start time>/`` (mode 700, :func:`make_owner_dir`;
  the worker's kernel host keeps it).
  Each kernel's directory in it holds the kernel's connection file and IPC sockets and,
  once the kernel runs, a ``group`` record (:func:`record_group`): the process group it
  runs in on this host and the start time of that group's leader. A clean stop removes
  the kernel's directory; a clean exit kills whatever is still recorded and removes the
  owner's.
- gunicorn's master calls :func:`reap` when a worker exits for any reason
  (``child_exit``), when it starts (``on_starting``) and when it exits (``on_exit``):
  for every owner directory whose owner is dead, the recorded groups are killed and the
  directory removed (with it the connection files a killed worker leaves behind). The
  start covers a server SIGKILLed whole, master and workers at once: its kernels are
  stopped by the next ``nb2svc serve`` on this host with the same user and TMPDIR.
  A master SIGKILLed alone needs nothing: its workers see their parent change and stop
  gracefully.

Never the wrong process. A pid means something only with its start time
(``/proc/<pid>/stat``): an owner is alive while a process with its pid *and* start time
exists, and a recorded group is killed only when its leader is the recorded process or
is gone. A group whose leader is gone (an ipykernel that exited by itself, leaving a
cell's ``sleep`` behind) is still ours: Linux does not hand out a pid while a process
group with that id exists. The directory name carries the boot id and pid namespace, so
a /tmp shared by containers or kept over a reboot never mixes up their pids.

Why not ``PR_SET_PDEATHSIG`` or a subreaper: the death signal is set in the kernel's
own process only (not in what its cells start), fires when the *thread* that forked
the kernel exits rather than the process, and needs a ``preexec_fn`` in a launch that
jupyter_client's provisioners own; a subreaper master adopts every orphan of every
worker and cannot tell whose it was, and neither helps when the master dies too.

Limits: Linux only (it needs /proc; elsewhere nothing is recorded and only graceful
stops stop kernels). Kernels that run elsewhere (pods, containers, other hosts) are
their provisioner's to stop: only a group truthfully on this host is recorded (a
``LocalProvisioner`` kernel, or a launcher gateway_provisioners started here). A
worker killed while a kernel is still starting can leave that one kernel behind.

This module is imported by the master: it must stay free of zmq and jupyter_client
(RUNTIME-NOTES.md, "Modules imported before gevent's monkey-patching").
"""

from __future__ import annotations

import atexit
import glob
import hashlib
import logging
import os
import shutil
import signal
import stat
import tempfile

log = logging.getLogger("nb2svc")

#: The record of a kernel's process group, in the kernel's own directory.
GROUP_FILE = "group"


def _process(pid: int) -> tuple[str, int] | None:
    """``pid``'s state and start time (clock ticks after boot), or None if no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])  # fields 3 and 22, counted from the state
    except (OSError, IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    process = _process(pid)
    return process[1] if process is not None else None


def _host() -> str | None:
    """The boot and pid namespace a pid belongs to (8 hex digits), or None without /proc."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            key = f.read().strip()
    except OSError:
        return None
    try:
        key += os.readlink("/proc/self/ns/pid")
    except OSError:
        pass  # a sandbox that hides namespaces: the boot id alone
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _base() -> str | None:
    """This user's directory of owners on this host, created mode 700; None if unusable.

    Refused (None, with a warning) when it is not a real directory of ours that only we
    can read: in a shared /tmp another user could have made it first.
    """
    host = _host()
    if host is None:
        return None
    path = os.path.join(tempfile.gettempdir(), f"nb2svc-{os.getuid()}-{host}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        log.warning("kernels will not be reaped after a crash: cannot create %s: %s", path, exc)
        return None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        log.warning("kernels will not be reaped after a crash: %s is not a private directory of ours", path)
        return None
    return path


def make_owner_dir() -> str:
    """This process's private directory for its kernels (connection files, IPC, records).

    Made once per worker, after fork, by its kernel host
    (:class:`~nb2svc.runtime.kernel.host.KernelHost`), which keeps it. Without /proc or a
    usable base it is a plain private temporary directory, and nothing in it is ever reaped.
    """
    base, started = _base(), _start_time(os.getpid())
    if base is not None and started is not None:
        path = os.path.join(base, f"{os.getpid()}-{started}")
        os.makedirs(path, mode=0o700, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="nb2svc-")
    atexit.register(_release, path, os.getpid())
    return path


def record_group(kernel_dir: str, pgid: int) -> None:
    """Record that the kernel whose directory is ``kernel_dir`` runs in process group ``pgid`` here.

    Written whole or not at all (a rename), so a reaper never reads half a record.
    Nothing is recorded if the leader is already gone: its stop reaps it. A record that
    cannot be written (a full disk) is a warning, not a failed kernel start.
    """
    started = _start_time(pgid)
    if started is None:
        return
    temporary = os.path.join(kernel_dir, GROUP_FILE + ".new")
    try:
        with open(temporary, "w") as f:
            f.write(f"{pgid} {started}\n")
        os.replace(temporary, os.path.join(kernel_dir, GROUP_FILE))
    except OSError as exc:
        log.warning("kernel process group %d will not be reaped after a crash: %s", pgid, exc)


def _kill_recorded(record: str) -> int | None:
    """Kill the group of one record if it is still the one recorded; its pgid if it was killed."""
    try:
        with open(record) as f:
            pgid, started = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return None
    if pgid <= 1 or pgid == os.getpgid(0):
        return None
    leader = _start_time(pgid)
    if leader is not None and leader != started:
        return None  # the pid is another process's now: the group we started is gone
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    except OSError as exc:
        log.warning("could not kill kernel process group %d: %s", pgid, exc)
        return None
    return pgid


def _reap_dir(path: str) -> list[int]:
    """Kill every group recorded under the owner directory ``path``, then remove it."""
    killed = []
    for record in sorted(glob.glob(os.path.join(glob.escape(path), "*", GROUP_FILE))):
        pgid = _kill_recorded(record)
        if pgid is not None:
            killed.append(pgid)
    shutil.rmtree(path, ignore_errors=True)
    return killed


def _release(path: str, pid: int) -> None:
    """At a clean exit: a kernel whose stop failed dies now, and the directory goes."""
    if os.getpid() == pid:  # not in a forked child that inherited the handler
        _reap_dir(path)


def reap() -> list[int]:
    """Kill the recorded kernel groups of every dead owner and remove its directory.

    Returns the process groups killed (each logged with its owner's pid). Cheap when
    nothing died: one directory listing and a read of ``/proc/<pid>/stat`` per owner.
    """
    base = _base()
    if base is None:
        return []
    killed: list[int] = []
    for name in os.listdir(base):
        pid, _, started = name.partition("-")
        if not (pid.isdigit() and started.isdigit()):
            continue
        owner = _process(int(pid))
        if owner is not None and owner[0] != "Z" and owner[1] == int(started):
            continue  # alive: it stops its own kernels (a zombie never will)
        groups = _reap_dir(os.path.join(base, name))
        if groups:
            log.warning(
                "process %s died without stopping its kernels: killed kernel process group(s) %s",
                pid,
                ", ".join(map(str, groups)),
            )
        killed += groups
    return killed
