"""One runtime object per worker: the state a worker holds, in one place instead of globals.

A worker builds its app from a :class:`~nb2svc.plan.ServePlan`
(:func:`nb2svc.runtime.entry.build_app`), which makes one :class:`WorkerRuntime` and
registers it once on the app. It holds:

- the token and the edge limits of the plan (the HTTP handler reads them from here);
- the exit hooks (run once by gunicorn's ``worker_exit``: the kernel pools and registries
  stop there) and the drain hooks (run when the worker starts draining);
- the connection state the draining handler shares (draining, idle keep-alive
  connections, requests in flight);
- the supervisors of its kernels (API mode's services, kernel mode's registry), so a
  pluggable supervisor has one place to be reached;
- the job store (made once by a factory slot, shared by the worker's notebooks and
  ``--reload`` versions): the built-in one keeps jobs in the ``--store`` that every worker
  and replica shares; another can be plugged in here without touching the services;
- the kernel host (:class:`~nb2svc.runtime.kernel.host.KernelHost`): the lifecycle loop,
  the green zmq context and the directory of kernel records every kernel of the worker
  uses;
- the worker's side of the server-wide metrics page
  (:class:`~nb2svc.runtime.shared_metrics.SharedMetrics`): what its page shows, and with
  several workers the snapshot it publishes for the others' scrapes.

Why an object: module globals survive ``--reload`` versions and tests, and each version
used to register its exit hook again; here a version registers nothing, and whatever
outlives it is the runtime's, once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from nb2svc.plan import EdgeLimits
from nb2svc.runtime.logs import Redactor, use_redactor
from nb2svc.runtime.shared_metrics import SharedMetrics

if TYPE_CHECKING:  # the plan is built above the runtime; the runtime only reads it
    from nb2svc.config import Settings
    from nb2svc.plan import ServePlan

log = logging.getLogger("nb2svc")

#: Where a runtime is registered on a Flask app (``app.extensions``) or any WSGI object.
EXTENSION = "nb2svc.runtime"


#: gunicorn's exit code for "worker failed to boot" (``Arbiter.WORKER_BOOT_ERROR``): the
#: master halts instead of restarting the worker forever (``nb2svc serve`` then exits 1).
WORKER_BOOT_ERROR = 3


def stop_worker_for_good(
    message: str, cleanup: Callable[[], None] | None = None, subject: str = "server"
) -> None:
    """Nothing this worker could do would work (a failing setup or seed cell): stop it.

    Logs ``the <subject> cannot start: <message>`` once, runs ``cleanup`` (stop the
    kernels), and exits with :data:`WORKER_BOOT_ERROR`. Both modes stop this one way.
    """
    log.critical("the %s cannot start: %s", subject, message)
    if cleanup is not None:
        try:
            cleanup()
        except Exception:
            log.exception("error while shutting down")
    logging.shutdown()
    os._exit(WORKER_BOOT_ERROR)


class JobStoreLike(Protocol):
    """What API mode needs of a job store (:class:`~nb2svc.runtime.http_api.jobs.JobStore`,
    on the embedded or the Redis store, is the built-in one)."""

    def submit(self, endpoint: str, client: str, run: Callable[[Callable[[Any], None]], Any]) -> Any: ...

    def get(self, job_id: str) -> Any: ...

    def cancel(self, job_id: str) -> bool: ...

    def shutdown(self) -> None: ...


#: Makes the worker's job store from the plan's settings (``--store`` and the job limits).
JobStoreFactory = Callable[["Settings"], JobStoreLike]


class Hooks:
    """Callbacks run once, in the reverse order of registration (exit) or in order (drain)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._callbacks: list[Callable[[], None]] = []

    def add(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def __len__(self) -> int:
        return len(self._callbacks)

    def run(self, *, reverse: bool = False) -> None:
        """Run every callback once; one that raises is logged and the others still run."""
        callbacks, self._callbacks = self._callbacks, []
        for callback in reversed(callbacks) if reverse else callbacks:
            try:
                callback()
            except Exception:
                log.exception("error while %s", self._what)


class Connections:
    """What the worker's HTTP handlers share: draining, idle connections, requests in flight."""

    def __init__(self) -> None:
        self.draining = False
        #: Greenlets of connections idle between requests (killed when draining starts).
        self.idle: set[Any] = set()
        #: Greenlets of new connections waiting for their first request: a client that just
        #: connected has sent (or is sending) a request it will not retry, so draining gives
        #: them FIRST_REQUEST_GRACE seconds to arrive and answers them (then closes).
        self.fresh: set[Any] = set()
        self.in_flight = 0
        #: Connections open, of ``capacity`` slots (gunicorn's ``worker_connections``).
        self.open = 0
        self.capacity = 1000


class WorkerRuntime:
    """The state of one worker (see the module docstring)."""

    def __init__(
        self,
        plan: ServePlan | None = None,
        *,
        edge: EdgeLimits | None = None,
        early_templates: Mapping[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        #: Kernel templates the master started for this worker (see kernel/early.py), by notebook.
        self._early_templates = dict(early_templates or {})
        self.token = plan.token if plan is not None else ""
        self.edge = edge or (plan.edge if plan is not None else EdgeLimits())
        self.exit_hooks = Hooks("shutting down")
        self.drain_hooks = Hooks("draining")
        self.connections = Connections()
        self.supervisors: list[Any] = []
        self._jobs: JobStoreLike | None = None
        self._kernel_host: Any = None
        self._kernel_supervisor: Any = None
        #: This worker's metrics page, added up with the other workers' (several workers).
        self.metrics = SharedMetrics()
        #: Redacts the token from every log line of this worker (see :mod:`.logs`).
        self.redactor = Redactor()
        self.redactor.add(self.token)

    def jobs(self, settings: Settings, make: JobStoreFactory) -> JobStoreLike:
        """The worker's job store, made once from ``settings`` (the first app's) by ``make``
        (API mode's :func:`~nb2svc.runtime.http_api.app.job_store`: the runtime never imports
        a mode) and shared by every notebook and ``--reload`` version; it stops, and its
        store closes, after the services on exit."""
        if self._jobs is None:
            jobs = self._jobs = make(settings)
            store = getattr(jobs, "store", None)
            if store is not None:
                self.on_exit(store.close)  # hooks run newest first: this one last
            self.on_exit(jobs.shutdown)
        return self._jobs

    @property
    def kernel_host(self) -> Any:
        """The worker's :class:`~nb2svc.runtime.kernel.host.KernelHost`, made on first use
        (after fork: it starts a greenlet and a zmq context)."""
        if self._kernel_host is None:
            from nb2svc.runtime.kernel.host import KernelHost

            self._kernel_host = KernelHost(self._early_templates)
        return self._kernel_host

    @property
    def kernel_supervisor(self) -> Any:
        """The worker's :class:`~nb2svc.runtime.kernel.supervisor.KernelSupervisor` (every
        notebook's pool, kernel mode's warm pool, prespawn and restarts), made on first use."""
        if self._kernel_supervisor is None:
            from nb2svc.runtime.kernel.supervisor import KernelSupervisor

            self._kernel_supervisor = KernelSupervisor()
        return self._kernel_supervisor

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when this worker exits (after in-flight requests finished)."""
        self.exit_hooks.add(callback)

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when this worker starts draining."""
        self.drain_hooks.add(callback)

    def share_metrics(self, workers: int) -> None:
        """Called by the gunicorn worker once the app is loaded: with ``workers`` above 1,
        publish this worker's metrics for the others' scrapes until it exits (one worker:
        nothing at all). See :mod:`nb2svc.runtime.shared_metrics`."""
        if self.metrics.start(workers, lambda: self.kernel_host.owner_dir):
            self.on_exit(self.metrics.stop)  # hooks run newest first: publishing stops first

    def supervise(self, supervisor: Any, stop: Callable[[], None]) -> None:
        """Keep ``supervisor`` (a notebook's service and pool, a kernel registry, the
        ``--reload`` versions) and run ``stop`` when the worker exits."""
        self.supervisors.append(supervisor)
        self.on_exit(stop)

    def exit(self) -> None:
        """gunicorn's ``worker_exit``: the exit hooks, newest first, each once."""
        self.exit_hooks.run(reverse=True)

    def drain(self) -> None:
        self.drain_hooks.run()

    def register(self, app: Any) -> Any:
        """Register this runtime on ``app`` (once) and return the app; the server's log
        formatters redact this runtime's secrets from then on."""
        use_redactor(self.redactor)
        extensions = getattr(app, "extensions", None)
        if isinstance(extensions, dict):
            if EXTENSION in extensions:
                raise RuntimeError("a runtime is registered on this app already")
            extensions[EXTENSION] = self
        else:
            if getattr(app, "nb2svc_runtime", None) is not None:
                raise RuntimeError("a runtime is registered on this app already")
            app.nb2svc_runtime = self
        return app


def runtime_of(app: Any) -> WorkerRuntime | None:
    """The runtime registered on a WSGI app by :meth:`WorkerRuntime.register`, if any."""
    extensions = getattr(app, "extensions", None)
    if isinstance(extensions, dict) and EXTENSION in extensions:
        return extensions[EXTENSION]
    return getattr(app, "nb2svc_runtime", None)


__all__ = [
    "WORKER_BOOT_ERROR",
    "stop_worker_for_good",
    "EXTENSION",
    "Connections",
    "EdgeLimits",
    "Hooks",
    "JobStoreFactory",
    "JobStoreLike",
    "WorkerRuntime",
    "runtime_of",
]
