"""Keep the token out of what other code on the machine can read about the server process.

Notebook code runs in kernels, children of the server's worker, as the same user: it can
read ``/proc/<ppid>/cmdline`` and ``/proc/<ppid>/environ``. Those files show the memory
the process was started with (argv and the initial environment), not ``os.environ``, so
deleting a variable is not enough. :func:`hide` therefore:

- removes ``NB2SVC_TOKEN`` and ``KG_AUTH_TOKEN`` from ``os.environ`` (nothing started
  later inherits them), and
- overwrites every copy of the token in this process's original argv and environment
  with ``*`` through ``/proc/self/mem``, before gunicorn forks the workers, so the master
  and every worker show ``--token ******``.

The token itself crosses the fork inside the serve plan (:mod:`nb2svc.plan`), which the
workers build their apps from. What stays visible to
code running as the same user: the token file, if one is used (give it mode 600 and run
kernels as another user, or in containers, for real isolation); the server's memory
through ``/proc/<pid>/mem`` or a debugger where ptrace is allowed; the token in requests
of clients on the same machine.
"""

from __future__ import annotations

import os
from pathlib import Path

TOKEN_VARIABLES = ("NB2SVC_TOKEN", "KG_AUTH_TOKEN")


def read_secret_file(path: str | os.PathLike[str], flag: str = "--token-file") -> str:
    """The secret in ``path`` (named by ``flag`` in errors): its first line, stripped; an
    empty one is an error."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror or exc}") from None
    secret = (text.splitlines() or [""])[0].strip()
    if not secret:
        raise ValueError(f"{flag} {path}: the file is empty")
    return secret


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path``: its first line, stripped; an empty one is an error."""
    return read_secret_file(path, "--token-file")


def loose_permissions(path: str | os.PathLike[str]) -> str | None:
    """A warning when others than the owner may read (or write) the token file, as ssh
    complains about a private key; ``None`` when it is private or cannot be read.

    A warning, not a refusal: a Kubernetes Secret volume is mode 0644 unless its
    ``defaultMode`` says otherwise, and a container's only user is the server's anyway.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # read_token_file reports it
    if not mode & 0o077:
        return None
    who = "everyone" if mode & 0o007 else "its group"
    return (
        f"--token-file {path} is accessible to {who} (mode {mode & 0o777:03o}): other users of this "
        f"machine may read the token; chmod 600 {path}"
    )


def hide(token: str) -> bool:
    """Erase ``token`` from the environment and the process's argv/environ memory;
    ``False`` if ``/proc/self/mem`` could not be written (then it stays visible)."""
    for name in TOKEN_VARIABLES:
        os.environ.pop(name, None)
    return erase(token)


def erase(secret_text: str) -> bool:
    """Overwrite every copy of ``secret_text`` in this process's original argv and environment
    with ``*`` (what ``/proc/<pid>/cmdline`` and ``environ`` show); ``False`` if impossible."""
    if not secret_text:
        return True
    token = secret_text
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # proc(5): arg_start, arg_end, env_start, env_end are fields 48-51 (1-based)
        arg_start, arg_end, env_start, env_end = (int(fields[n - 3]) for n in (48, 49, 50, 51))
        secret = token.encode()
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for start, end in ((arg_start, arg_end), (env_start, env_end)):
                mem.seek(start)
                data = mem.read(end - start)
                at = data.find(secret)
                while at != -1:
                    mem.seek(start + at)
                    mem.write(b"*" * len(secret))
                    at = data.find(secret, at + len(secret))
    except (OSError, ValueError, IndexError):
        return False
    return True
