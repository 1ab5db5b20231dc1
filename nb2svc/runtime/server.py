"""gunicorn with the gevent-websocket worker, configured from a serve plan's :class:`Settings`.

:func:`gunicorn_settings` is the single mapping from nb2svc settings to gunicorn
settings; both ``nb2svc serve`` (through :class:`Server`) and a bundle's
``gunicorn.conf.py`` use it, so a container behaves like a local ``serve``.

Shutdown contract: SIGTERM *and* Ctrl-C stop gracefully: workers stop accepting,
in-flight requests finish (up to the drain of :func:`nb2svc.config.shutdown_timing`,
which covers ``--request-timeout`` unless ``--graceful-timeout`` says otherwise), then
the ``worker_exit`` hook runs the exit hooks of the worker's runtime
(:mod:`nb2svc.runtime.worker_runtime`), which shut every kernel of the worker down. No
kernel outlives the server.

A worker that dies without its hook (SIGKILL, the OOM killer, gunicorn's timeout kill,
a segfault) leaves records of its local kernels' process groups; the master kills them
when it reaps the worker (``child_exit``) and when it exits, and sweeps what dead servers
left when it starts (see :mod:`nb2svc.runtime.reaper`). With several workers, the master
first folds the dead worker's last metrics snapshot into the server's retired counts
(:mod:`nb2svc.runtime.retired_metrics`), so its counters stay in the scraped sum.

A worker that cannot boot (building its app from the plan raises) stops the whole server: the error
becomes gunicorn's ``AppImportError``, whose worker prints one line and exits with
"app failed to load", which halts the master instead of respawning the worker.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import AppImportError

from nb2svc.config import Settings, shutdown_timing
from nb2svc.runtime import reaper, retired_metrics
from nb2svc.runtime.logs import gunicorn_logconfig
from nb2svc.runtime.worker_runtime import runtime_of

if TYPE_CHECKING:
    from nb2svc.plan import ServePlan
    from nb2svc.runtime.kernel.early import EarlyTemplate

log = logging.getLogger("nb2svc")

WORKER_CLASS = "nb2svc.runtime.worker.Nb2svcWorker"


def _post_worker_init(worker: Any) -> None:
    # gunicorn makes SIGINT a *quick* exit for workers; Ctrl-C should drain like SIGTERM.
    signal.signal(signal.SIGINT, worker.handle_exit)


def _worker_exit(server: Any, worker: Any) -> None:
    """Stop what the worker's runtime holds (its kernels), once; nothing if the app never loaded."""
    runtime = runtime_of(getattr(worker, "wsgi", None))
    if runtime is not None:
        runtime.exit()


def _reap_orphans(arbiter: Any) -> None:
    """In the master (``child_exit``): kill the kernels of this server's dead workers.

    Never raises: a failure to reap must not stop the master from respawning workers.
    """
    try:
        reaper.reap()
    except Exception:
        log.exception("error while stopping the kernels of a dead worker")


def _on_exit(arbiter: Any) -> None:
    """In the master, last: kill what dead workers left, remove the server's directory, then
    this server's embedded job store (no worker is left)."""
    try:
        reaper.reap(final=True)
    except Exception:
        log.exception("error while stopping the kernels of a dead worker")
    try:
        from nb2svc.runtime.store import remove_server_directory

        remove_server_directory()
    except Exception:
        log.exception("error while removing the embedded job store")


def _sweep_dead_servers(arbiter: Any) -> None:
    """In the master (``on_starting``): kill the kernels of servers that died whole."""
    try:
        reaper.sweep()
    except Exception:
        log.exception("error while stopping the kernels of a dead server")


def _retire_metrics(arbiter: Any) -> None:
    """In the master (``child_exit``), before the reaper removes a dead worker's directory:
    keep the counters and histograms of its last metrics snapshot in the server's page
    (:mod:`nb2svc.runtime.retired_metrics`). Never raises."""
    try:
        retired_metrics.retire_dead_workers()
    except Exception as exc:
        log.warning("a dead worker's counts leave the server's metrics: %s", exc)


def _child_exit(arbiter: Any, worker: Any) -> None:
    """In the master, for a worker that exited for any reason: keep its counts, then kill
    what it left running and remove its directory."""
    _retire_metrics(arbiter)
    _reap_orphans(arbiter)


def gunicorn_settings(settings: Settings, *, workers: int | None = None) -> dict[str, Any]:
    """gunicorn settings for ``settings`` (``workers`` overrides, e.g. 1 in kernel mode)."""
    return {
        "bind": [f"{settings.host}:{settings.port}"]
        + ([f"{settings.host}:{settings.metrics_port}"] if settings.metrics_port else []),
        "workers": workers if workers is not None else settings.workers,
        "worker_class": WORKER_CLASS,
        "worker_connections": 1000,
        "graceful_timeout": shutdown_timing(settings.request_timeout, settings.graceful_timeout).graceful,
        "timeout": max(60, int(settings.request_timeout) + 30),
        "keepalive": 5,
        "control_socket_disable": True,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logconfig_dict": gunicorn_logconfig(settings),
        "preload_app": False,  # zmq contexts and kernels must be created after fork
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "on_starting": _sweep_dead_servers,
        "child_exit": _child_exit,
        "on_exit": _on_exit,
        "proc_name": "nb2svc",
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, (ValueError, OSError, RuntimeError)) else f"{type(exc).__name__}: {text}"


class _GracefulArbiter(Arbiter):
    """Ctrl-C (SIGINT) drains in-flight requests, like SIGTERM, instead of quitting at once.

    Once the first worker is forked, the master lets go of the kernel templates it started
    for it (kernel/early.py): the worker holds their sockets now, so a template exits with
    the worker that adopted it, and a worker that replaces it starts its own.
    """

    def handle_int(self) -> None:
        self.handle_term()

    def spawn_worker(self) -> int:
        pid: int = super().spawn_worker()  # the worker never returns from it
        self.app.release_early_templates()
        return pid


class Server(BaseApplication):
    """Serve a :class:`~nb2svc.plan.ServePlan` under gunicorn: each worker builds its app
    from the plan (:func:`nb2svc.runtime.entry.load_app`, imported there, after fork)."""

    def __init__(
        self,
        plan: ServePlan,
        *,
        workers: int | None = None,
        early_templates: dict[str, EarlyTemplate] | None = None,
    ) -> None:
        self._plan = plan
        self._workers = workers
        self._early_templates = early_templates or {}
        super().__init__()

    def release_early_templates(self) -> None:
        """In the master, after the first fork: the worker has the templates' sockets."""
        for early in self._early_templates.values():
            early.close()

    def load_config(self) -> None:
        for key, value in gunicorn_settings(self._plan.settings, workers=self._workers).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        try:
            from nb2svc.runtime.entry import load_app

            return load_app(self._plan, self._early_templates)
        except Exception as exc:
            log.debug("the app could not be created", exc_info=True)
            raise AppImportError(f"error: the server cannot start: {_one_line(exc)}") from exc

    def run(self) -> None:
        _GracefulArbiter(self).run()
