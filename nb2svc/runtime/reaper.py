"""Kernels of a process that died without stopping them: recorded by it, killed by the master.

Why: a graceful stop shuts kernels down in the worker's ``worker_exit`` hook, but a
worker that is SIGKILLed (the OOM killer, ``kill -9``, gunicorn's timeout kill, a
segfault) runs no hook. ipykernel notices that its parent is gone and exits; xeus-python
and tslab/jslab kernels, and whatever a cell started in a kernel's process group (even
under an ipykernel that exited), would run forever.

How:

- a process that starts kernels (a worker) owns a private directory inside its
  parent's (its server's, gunicorn's master):
  ``$TMPDIR/nb2svc-<uid>-<host>/<server pid>-<start time>/<pid>-<start time>/`` (mode
  700, :func:`make_owner_dir`; the worker's kernel host keeps it). Each kernel's
  directory in it holds the kernel's connection file and IPC sockets and, once the
  kernel runs, a ``group`` record (:func:`record_group`): the process group it runs in
  on this host and the start time of that group's leader. A clean stop removes the
  kernel's directory; a clean exit kills whatever is still recorded and removes the
  owner's. A kernel template (:mod:`nb2svc.runtime.kernel.forking`) runs in the
  worker's own process group, so its directory records the process alone
  (:func:`record_process`), and only that process is killed.
- gunicorn's master calls :func:`reap` when a worker exits for any reason
  (``child_exit``) and when it exits (``on_exit``): for every owner directory *in its
  own server directory* whose owner is dead, the recorded groups are killed and the
  directory removed (with it the connection files a killed worker leaves behind).
  Servers started by the same user share the base directory; each one reaps only its
  own workers, so one server never kills, nor reports, another's kernels.
- when it starts (``on_starting``) the master calls :func:`sweep`: the server
  directories whose server is dead (a server SIGKILLed whole, master and workers at
  once) have their dead owners reaped the same way, so such kernels are stopped by
  the next ``nb2svc serve`` on this host with the same user and TMPDIR. A live
  server's directory is never touched. A master SIGKILLed alone needs nothing: its
  workers see their parent change and stop gracefully (their directories go with the
  dead server's at the next sweep).

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
#: The record of one process (a kernel template, which shares the worker's group).
PROCESS_FILE = "process"


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


def _name(pid: int) -> str | None:
    """``<pid>-<start time>``: a process's directory name, or None if it is gone."""
    started = _start_time(pid)
    return f"{pid}-{started}" if started is not None else None


def _alive(name: str) -> bool | None:
    """Whether the process named ``<pid>-<start time>`` lives; None if ``name`` is not such a name."""
    pid, _, started = name.partition("-")
    if not (pid.isdigit() and started.isdigit()):
        return None
    process = _process(int(pid))
    return process is not None and process[0] != "Z" and process[1] == int(started)  # a zombie never stops


def make_owner_dir() -> str:
    """This process's private directory for its kernels (connection files, IPC, records),
    inside its server's (its parent's) directory.

    Made once per worker, after fork, by its kernel host
    (:class:`~nb2svc.runtime.kernel.host.KernelHost`), which keeps it. Without /proc or a
    usable base it is a plain private temporary directory, and nothing in it is ever reaped.
    """
    base, me, server = _base(), _name(os.getpid()), _name(os.getppid())
    if base is not None and me is not None and server is not None:
        path = os.path.join(base, server, me)
        os.makedirs(path, mode=0o700, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="nb2svc-")
    atexit.register(_release, path, os.getpid())
    return path


def server_of(owner_dir: str) -> str | None:
    """The server directory that holds ``owner_dir`` (this worker's, from
    :func:`make_owner_dir`), or None when it is a plain temporary directory (no /proc):
    the other owners in it are this server's other workers, named ``<pid>-<start time>``."""
    server = os.path.dirname(owner_dir)
    if _alive(os.path.basename(owner_dir)) is None or _alive(os.path.basename(server)) is None:
        return None
    return server


def owners(server: str) -> list[tuple[int, str, bool]]:
    """``(pid, directory, alive)`` of every owner in the server directory ``server``; alive
    means its pid *and* start time (a reused pid is not the owner), not a zombie."""
    try:
        names = os.listdir(server)
    except OSError:
        return []
    found = []
    for name in names:
        state = _alive(name)
        if state is not None:
            found.append((int(name.partition("-")[0]), os.path.join(server, name), state))
    return found


def record_group(kernel_dir: str, pgid: int) -> None:
    """Record that the kernel whose directory is ``kernel_dir`` runs in process group ``pgid`` here.

    Written whole or not at all (a rename), so a reaper never reads half a record.
    Nothing is recorded if the leader is already gone: its stop reaps it. A record that
    cannot be written (a full disk) is a warning, not a failed kernel start.
    """
    _record(kernel_dir, GROUP_FILE, pgid, "kernel process group")


def record_process(process_dir: str, pid: int) -> None:
    """Record process ``pid`` (a kernel template) under ``process_dir``: the reaper kills it alone."""
    _record(process_dir, PROCESS_FILE, pid, "kernel template")


def _record(directory: str, name: str, pid: int, what: str) -> None:
    started = _start_time(pid)
    if started is None:
        return
    temporary = os.path.join(directory, name + ".new")
    try:
        with open(temporary, "w") as f:
            f.write(f"{pid} {started}\n")
        os.replace(temporary, os.path.join(directory, name))
    except OSError as exc:
        log.warning("%s %d will not be reaped after a crash: %s", what, pid, exc)


def _kill_recorded(record: str) -> int | None:
    """Kill what one record names if it is still the one recorded; its pid or pgid if it was killed.

    A group record kills the whole group; a process record (a template) that one process.
    """
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
        if os.path.basename(record) == PROCESS_FILE:
            os.kill(pgid, signal.SIGKILL)
        else:
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
    records = [os.path.join(glob.escape(path), "*", name) for name in (GROUP_FILE, PROCESS_FILE)]
    for record in sorted(r for pattern in records for r in glob.glob(pattern)):
        pgid = _kill_recorded(record)
        if pgid is not None:
            killed.append(pgid)
    shutil.rmtree(path, ignore_errors=True)
    return killed


def _release(path: str, pid: int) -> None:
    """At a clean exit: a kernel whose stop failed dies now, and the directory goes."""
    if os.getpid() == pid:  # not in a forked child that inherited the handler
        _reap_dir(path)


def _reap_server(server: str) -> tuple[list[int], bool]:
    """Reap the dead owners in the server directory ``server``: the groups killed, and
    whether any owner in it still lives."""
    killed: list[int] = []
    live = False
    for _, directory, alive in owners(server):
        if alive:
            live = True  # it stops its own kernels
            continue
        killed += _reap_owner(server, os.path.basename(directory))
    return killed, live


def _reap_owner(parent: str, name: str) -> list[int]:
    """Reap the dead owner ``name`` (``<pid>-<start time>``) under ``parent`` and say what was killed."""
    groups = _reap_dir(os.path.join(parent, name))
    if groups:
        log.warning(
            "process %s died without stopping its kernels: killed kernel process group(s) %s",
            name.partition("-")[0],
            ", ".join(map(str, groups)),
        )
    return groups


def reap(final: bool = False) -> list[int]:
    """Kill the recorded kernel groups of this server's dead workers and remove their directories.

    Only this process's own server directory is read: another server's workers, dead or
    alive, are that server's business. Returns the process groups killed (each logged
    with its owner's pid). Cheap when nothing died: one directory listing and a read of
    ``/proc/<pid>/stat`` per worker. ``final`` (the server exits) also removes the
    server directory once it is empty.
    """
    server = own_server_dir()
    if server is None:
        return []
    killed = _reap_server(server)[0]
    if final:
        try:
            os.rmdir(server)
        except OSError:
            pass  # never created (no kernels), or a live worker's directory is still in it
    return killed


def own_server_dir() -> str | None:
    """In gunicorn's master: its server directory (its workers' owner directories are in
    it), or None without /proc or a usable base. Not created here."""
    base, me = _base(), _name(os.getpid())
    return os.path.join(base, me) if base is not None and me is not None else None


def sweep() -> list[int]:
    """Reap what dead servers left: for every server directory whose server is gone, its
    dead owners' groups are killed; the directory goes once no owner in it lives.

    A server directory of the old flat layout (an owner's own, kernel directories in
    it) is reaped whole the same way.
    """
    base = _base()
    if base is None:
        return []
    killed: list[int] = []
    for name in os.listdir(base):
        if _alive(name) is not False:
            continue  # a live server (or not ours to read)
        groups, live = _reap_server(os.path.join(base, name))
        killed += groups
        if not live:  # then the directory goes, with any kernels of an old-layout owner
            killed += _reap_owner(base, name)
    return killed
