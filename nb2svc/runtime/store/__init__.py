"""Shared state that outlives a worker: one small interface, two backends.

- :class:`~nb2svc.runtime.store.base.Store` is the contract (keys with expiry, atomic
  create/compare, expiring indexes, leases; see :mod:`.base`).
- The embedded default (``--store`` empty) is SQLite in the server's private runtime
  directory (:mod:`.sqlite`): shared by every worker of one server, nothing to run.
- ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS) is a Redis or Valkey server
  for several replicas (:mod:`.redis`); the password comes from the URL or from
  ``--store-password-file``.

:func:`redact` (from :mod:`nb2svc.store_url`) is the only way a store URL is ever
printed: the password becomes ``***``. This module is imported by the CLI in gunicorn's
master: it imports neither gevent nor redis at the top (the backends are imported when
opened).
"""

from __future__ import annotations

import os

from nb2svc.runtime.secret import read_secret_file
from nb2svc.runtime.store.base import Store, StoreUnavailable
from nb2svc.store_url import normalize_store_url, redact

#: The embedded store's file in the server's runtime directory.
EMBEDDED_FILE = "store.sqlite"


def read_password_file(path: str) -> str:
    """The store password in ``path``: its first line, stripped."""
    return read_secret_file(path, "--store-password-file")


def server_directory() -> str:
    """The private runtime directory of the server this worker belongs to.

    It sits beside the workers' own kernel directories (:mod:`nb2svc.runtime.reaper`),
    named after gunicorn's master (this worker's parent) like an owner directory: the
    master removes it when it exits (:func:`remove_server_directory`), and the reaper once
    that server has died without doing so; without /proc, a private directory per parent
    process under the temporary directory.
    """
    path = server_directory_path(os.getppid())
    if path is None:
        import tempfile

        path = os.path.join(tempfile.gettempdir(), f"nb2svc-store-{os.getuid()}-{os.getppid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def server_directory_path(server_pid: int) -> str | None:
    """Where the runtime directory of the server whose master is ``server_pid`` is (or would be)."""
    from nb2svc.runtime import reaper

    base, started = reaper._base(), reaper._start_time(server_pid)
    if base is None or started is None:
        return None
    return os.path.join(base, f"{server_pid}-{started}", "store")


def remove_server_directory() -> None:
    """In gunicorn's master at exit (every worker is gone): remove this server's embedded store."""
    import shutil

    path = server_directory_path(os.getpid())
    if path is not None:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def open_store(url: str, password_file: str = "") -> Store:
    """The store ``url`` names (empty: the embedded one); :class:`StoreUnavailable` if it
    cannot be opened. Nothing is sent yet: call :meth:`Store.ping` to check it answers."""
    if not url:
        from nb2svc.runtime.store.sqlite import SqliteStore

        try:
            directory = server_directory()
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the embedded store's directory: {exc}") from None
        return SqliteStore(os.path.join(directory, EMBEDDED_FILE))
    from nb2svc.runtime.store.redis import RedisStore

    password = None
    if password_file:
        try:
            password = read_password_file(password_file)
        except ValueError as exc:
            raise StoreUnavailable(str(exc)) from None
    return RedisStore(url, f"Redis at {redact(url)}", password=password)


__all__ = [
    "Store",
    "StoreUnavailable",
    "normalize_store_url",
    "open_store",
    "read_password_file",
    "redact",
]
