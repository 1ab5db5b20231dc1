"""Kernel mode's kernel registry: start, list, limit, seed, cull and shut down kernels.

Kernels start through :func:`nb2svc.runtime.kernel.start_kernel` with a
:class:`~nb2svc.runtime.kernel.KernelRecipe`, that is through jupyter_client's
``KernelManager(kernel_name=...)`` and the kernel spec's provisioner, so any
provisioner (including remote ones) works unchanged. A :class:`ManagedKernel` gets the
unseeded recipe for its restarts; the one call back into the registry unlists a kernel
that a client shut down over its websocket (``shutdown_request``).

Rules, as in Kernel Gateway's ``jupyter-websocket`` mode unless noted:

- kernel name: ``--force-kernel`` if set, else the request's, else ``--default-kernel``
  (else the seed notebook's, else jupyter_client's default), decided once in
  :func:`nb2svc.plan.kernel_names`;
- ``--max-kernels``: listed kernels, those starting included; one more is refused;
- environment: the server's whitelisted variables (:func:`kernel_env`), plus those of
  the request's ``env`` that start with ``KERNEL_`` or are in ``--env-allow``;
- ``--seed NOTEBOOK``: its code cells run on every new kernel of its kernel spec
  (prespawned, warm or requested); not on restart. A seed cell that fails fails every
  kernel alike (:class:`SetupFailed`): at start-up (``--prespawn``/``--warm``) the server
  exits with the cell's error; later, readiness turns 503 and says why;
- ``--prespawn N``: N kernels started and seeded at start-up, listed like any other (a
  start batch of the worker's :class:`~nb2svc.runtime.kernel.KernelSupervisor`);
- ``--kernel-start``: a local ipykernel spec's kernels (warm, prespawned, requested,
  restarted) fork from a template of that spec that ran no setup (forking.py); a
  restart forks afresh; the default spec's template is made (or adopted from the master,
  kernel/early.py) at start-up, the others' on first use;
- ``--warm N`` (not in the reference): hidden kernels, started and seeded ahead of need, in
  a pool of the same supervisor as API mode's pools;
- auto-restart of a listed kernel that died: the supervisor's restart policy (quick deaths
  measured against the provisioner's stable start time);
- culling (Jupyter Server's rules): every ``--cull-interval`` seconds, kernels idle for
  ``--cull-idle-timeout`` seconds and not busy, and with no client connected unless
  ``--cull-connected``, are shut down; dead kernels too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import gevent
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from nb2svc.config import Settings
from nb2svc.runtime.kernel import (
    Kernel,
    KernelRecipe,
    KernelStartError,
    KernelSupervisor,
    SetupCell,
    SetupFailed,
    kernel_env,
    start_kernel,
)
from nb2svc.runtime.kernel.early import kernel_spec_label
from nb2svc.runtime.kernel.forking import Forker
from nb2svc.runtime.kernel.memory import summed_pss
from nb2svc.runtime.kernel.supervisor import StartBatch
from nb2svc.runtime.kernels_api.managed import ManagedKernel
from nb2svc.runtime.kernels_api.seed import Seed
from nb2svc.runtime.metrics import KERNEL_START_BUCKETS, Histogram
from nb2svc.runtime.worker_runtime import stop_worker_for_good

if TYPE_CHECKING:
    from nb2svc.plan import KernelNames
    from nb2svc.runtime.kernel.host import KernelHost

log = logging.getLogger("nb2svc")


class KernelNotFound(KeyError):
    """No kernel with that id (404)."""


class UnknownKernelSpec(ValueError):
    """The requested kernel spec is not installed."""


class KernelLimitReached(RuntimeError):
    """``--max-kernels`` kernels are already running (403)."""


class Bookkeeper(Protocol):
    """Where the registry reports its kernels beyond this worker (:mod:`.replicas`: the
    shared store, so every replica lists them and ``--max-kernels`` holds across them)."""

    def reserve(self, kernel_id: str) -> bool:
        """Hold a place for a kernel about to start; ``False`` over ``--max-kernels``."""

    def release(self, kernel_id: str) -> None: ...

    def listed(self, managed: ManagedKernel) -> None: ...

    def unlisted(self, kernel_id: str) -> None: ...

    def hands_over(self, managed: ManagedKernel) -> bool:
        """Whether, as this worker exits, ``managed`` is left running for another replica."""


class KernelRegistry:
    """Every kernel of the (single) kernel-mode worker, by id."""

    def __init__(
        self,
        settings: Settings,
        seed: Seed | None,
        names: KernelNames,
        host: KernelHost,
        supervisor: KernelSupervisor | None = None,
        book: Bookkeeper | None = None,
    ) -> None:
        """``supervisor``: the worker's (its runtime's; a new one by default)."""
        self.settings = settings
        #: Set when kernels are shared with other replicas (``--store``); else all is local.
        self.book = book
        self.seed = seed
        self.supervisor = supervisor or KernelSupervisor()
        self.specs = KernelSpecManager()
        self.kernels: dict[str, ManagedKernel] = {}
        self._starting = 0
        self._prespawn: StartBatch | None = None
        self._culler: gevent.Greenlet | None = None
        self._closed = False
        self.names = names  # decided once, by nb2svc.plan.kernel_names
        self.host = host  # the worker's lifecycle loop, zmq context and records directory
        self.default_name = names.default
        self.warm_name = names.warm
        #: ``--warm N``: hidden kernels, already started and seeded, that ``POST /api/kernels``
        #: hands out at once; not listed, not counted against ``--max-kernels``, never culled.
        self.kernel_starts = Histogram(
            "nb2svc_kernel_start_seconds",
            "Kernel starts: seconds to a started and seeded kernel (seed cells included).",
            KERNEL_START_BUCKETS,
        )
        self.warm = self.supervisor.pool(
            "warm",
            lambda: self._timed_start(self.recipe(self.warm_name)),
            settings.warm,
            on_fatal=self._warm_failed,
        )
        #: Per kernel spec, where its kernels fork from (``--kernel-start``): a template that
        #: ran no setup (seed cells run on each kernel, forked or not), made on first use.
        self._forkers: dict[str, Forker] = {}
        #: Why kernels cannot be made (a failing seed cell, a prespawn that failed); readiness says it.
        self.failure: str | None = None
        self._was_ready = False

    # --- start-up and shutdown -------------------------------------------------------

    def start(self) -> None:
        """Prespawn, fill the warm pool and start the culler, all in the background."""
        self._prespawn = self.supervisor.start_batch(
            self.settings.prespawn, lambda: self.start_kernel(self.warm_name), self._prespawn_failed
        )
        self.warm.start()
        if self.settings.kernel_start != "spawn":
            gevent.spawn(self._template_ahead, self.default_name)
        if self.settings.cull_idle_timeout > 0:
            self._culler = gevent.spawn(self._cull_loop)

    def _template_ahead(self, name: str) -> None:
        """Make (or adopt from the master) kernel spec ``name``'s template now, not on the
        first ``POST /api/kernels``: that start then forks at once (tens of milliseconds,
        not the template's few hundred). Readiness does not wait for it: a start that comes
        first waits for the same template. A spec that cannot fork logs why once, here."""
        try:
            spec = self.specs.get_kernel_spec(name)
            self._forker(name).template(spec)
        except NoSuchKernel:
            return  # the first start reports it
        except Exception as exc:  # noqa: BLE001 - the first start tries again and reports it
            log.info("the template of kernel spec %r could not be made ahead of need: %s", name, exc)

    def _prespawn_failed(self, exc: Exception) -> None:
        log.error("could not prespawn a kernel: %s", exc)
        self.failure = self.failure or f"a prespawned kernel could not start: {exc}"
        self._seed_failed(exc)

    def _timed_start(self, recipe: KernelRecipe) -> Kernel:
        started = time.monotonic()
        kernel = start_kernel(recipe)
        self.kernel_starts.observe(time.monotonic() - started)
        return kernel

    def _warm_failed(self, exc: BaseException) -> None:
        """The warm pool gave up: a seed failure stops the server, anything else is logged."""
        if not isinstance(exc, SetupFailed):
            log.error("could not start a kernel: %s", exc)
        self._seed_failed(exc)

    def _seed_failed(self, exc: BaseException) -> None:
        """A failing seed cell fails every kernel: exit if the server was never ready."""
        if not isinstance(exc, SetupFailed):
            return
        self.failure = f"the seed notebook fails: {exc}"
        if not self._was_ready and not self._closed:
            stop_worker_for_good(f"--seed {exc}", cleanup=self.shutdown_all)

    @property
    def ready(self) -> bool:
        """Prespawned kernels started and the warm pool filled once, and nothing failed."""
        ready = (
            (self._prespawn is None or self._prespawn.pending == 0)
            and self.warm.filled_once
            and self.warm.failure is None
            and self.failure is None
        )
        self._was_ready = self._was_ready or ready
        return ready

    @property
    def not_ready_reason(self) -> str:
        if self.failure is not None:
            return self.failure
        if self.warm.failure is not None:
            return f"warm kernels cannot start: {self.warm.failure}"
        return "" if self.ready else "kernels are starting"

    def shutdown_all(self) -> None:
        """Shut every kernel down in parallel (the worker is exiting)."""
        self._closed = True
        if self._culler is not None:
            self._culler.kill(block=False)
        kernels = list(self.kernels.values())
        self.kernels.clear()
        if self.book is not None:
            kept = [managed for managed in kernels if self.book.hands_over(managed)]
            for managed in kept:
                managed.hand_over()
            kernels = [managed for managed in kernels if managed not in kept]
            for managed in kernels:
                self.book.unlisted(managed.id)
            if kept:
                log.info("left %d kernels running for the other replicas to take over", len(kept))
        warm = self.warm.stats().live
        jobs = [gevent.spawn(k.shutdown) for k in kernels] + [gevent.spawn(self.supervisor.shutdown)]
        gevent.joinall(jobs, timeout=15)
        for kernel in kernels:  # whatever did not stop gracefully in time
            kernel.shutdown(now=True)
        for forker in self._forkers.values():
            forker.close()
        if kernels or warm:
            log.info("shut down %d kernels (%d warm)", len(kernels) + warm, warm)

    def close_connections(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close every websocket (when the worker drains): clients reconnect elsewhere."""
        for managed in list(self.kernels.values()):
            for client in list(managed.clients):
                client.close(code, reason)

    # --- kernels ---------------------------------------------------------------------

    def kernel_name_for(self, requested: str | None) -> str:
        """The kernel spec to start; raises :class:`UnknownKernelSpec`."""
        name = self.names.for_request(requested)
        try:
            self.specs.get_kernel_spec(name)
        except NoSuchKernel:
            available = ", ".join(sorted(self.specs.find_kernel_specs())) or "none"
            raise UnknownKernelSpec(f"no such kernel spec: {name!r} (available: {available})") from None
        return name

    def allowed_env(self, requested: Mapping[str, str] | None) -> dict[str, str]:
        """The part of a request's ``env`` that may reach the kernel."""
        allow = set(self.settings.env_allow)
        return {k: v for k, v in (requested or {}).items() if k.startswith("KERNEL_") or k in allow}

    def start_kernel(self, name: str | None = None, env: Mapping[str, str] | None = None) -> ManagedKernel:
        """Start (or take from the warm pool), register and return a kernel.

        Raises :class:`KernelLimitReached`, :class:`UnknownKernelSpec` or
        :class:`KernelStartError`.
        """
        limit = self.settings.max_kernels
        kernel_id = str(uuid.uuid4())
        if self.book is None and limit and len(self.kernels) + self._starting >= limit:
            raise KernelLimitReached(
                f"this server runs at most {limit} kernels (--max-kernels) and {len(self.kernels)} are "
                "running; shut one down first"
            )
        name = self.kernel_name_for(name)
        if self.book is not None and not self.book.reserve(kernel_id):
            raise KernelLimitReached(
                f"these replicas run at most {limit} kernels together (--max-kernels) and all are "
                "running; shut one down first"
            )
        extra = self.allowed_env(env)
        recipe = self.recipe(name, extra)
        self._starting += 1
        try:
            kernel = self.warm.take() if name == self.warm_name and not extra else None
            if kernel is None:
                kernel = self._timed_start(recipe)
        except BaseException as exc:
            if self.book is not None:
                self.book.release(kernel_id)
            if isinstance(exc, SetupFailed):
                self.failure = f"the seed notebook fails: {exc}"
            raise
        finally:
            self._starting -= 1
        if self._closed:
            kernel.shutdown(now=True)
            if self.book is not None:
                self.book.release(kernel_id)
            raise KernelStartError("the server is shutting down")
        managed = ManagedKernel(kernel_id, kernel, recipe.unseeded(), self.supervisor)
        managed.on_requested_shutdown = self._unlist
        self.kernels[managed.id] = managed
        if self.book is not None:
            self.book.listed(managed)
        log.info("kernel %s started (%s)", managed.id, kernel.label)
        return managed

    def adopt(
        self, kernel_id: str, name: str, connection_info: dict[str, Any], provisioner_info: dict[str, Any]
    ) -> ManagedKernel:
        """List a kernel of a replica that is gone (:mod:`.replicas`), reached again through
        its reloaded provisioner: same id, same state. Raises :class:`KernelStartError`."""
        recipe = self.recipe(name)
        kernel = Kernel(name, recipe.env, self.host, transport=recipe.transport)
        kernel.attach(connection_info, provisioner_info, timeout=self.settings.kernel_start_timeout)
        if self._closed:
            kernel.shutdown(now=True)
            raise KernelStartError("the server is shutting down")
        managed = ManagedKernel(kernel_id, kernel, recipe.unseeded(), self.supervisor)
        managed.on_requested_shutdown = self._unlist
        self.kernels[kernel_id] = managed
        if self.book is not None:
            self.book.listed(managed)
        log.info("kernel %s adopted (%s)", kernel_id, kernel.label)
        return managed

    def recipe(self, name: str, extra: Mapping[str, str] | None = None) -> KernelRecipe:
        """How to make a kernel of spec ``name``: seeded when the seed notebook is for it."""
        seed = self.seed if self.seed is not None and self.seed.kernel_name == name else None
        setup = tuple(SetupCell(f"{seed.source}, cell {n}", code) for n, code in seed.cells) if seed else ()
        return KernelRecipe(
            kernel_name=name,
            env=kernel_env(self.settings.env_allow, extra=extra),
            transport=self.settings.transport,
            start_timeout=self.settings.kernel_start_timeout,
            setup=setup,
            traceback_in_error=False,
            host=self.host,
            forker=self._forker(name),
        )

    def _forker(self, name: str) -> Forker:
        forker = self._forkers.get(name)
        if forker is None:
            forker = Forker(
                self.settings.kernel_start,
                kernel_spec_label(name),
                env=kernel_env(self.settings.env_allow),
                host=self.host,
                timeout=self.settings.kernel_start_timeout,
                with_traceback=False,
            )
            self._forkers[name] = forker
        return forker

    def memory_pss(self) -> int:
        """Summed PSS (bytes) of the listed local kernels and the templates they fork from."""
        pids = [managed.kernel.process.pid for managed in list(self.kernels.values())]
        return summed_pss([*pids, *(forker.template_pid for forker in self._forkers.values())])

    def get(self, kernel_id: str) -> ManagedKernel:
        try:
            return self.kernels[kernel_id]
        except KeyError:
            raise KernelNotFound(kernel_id) from None

    def models(self) -> list[dict[str, Any]]:
        return [k.model() for k in self.kernels.values()]

    def shutdown_kernel(self, kernel_id: str, now: bool = False) -> None:
        managed = self.kernels.pop(kernel_id, None)
        if managed is None:
            raise KernelNotFound(kernel_id)
        if self.book is not None:
            self.book.unlisted(kernel_id)
        managed.shutdown(now=now)
        log.info("kernel %s shut down", kernel_id)

    def _unlist(self, managed: ManagedKernel) -> None:
        """A kernel that a client shut down over its websocket: removed, as Jupyter Server does."""
        if self.kernels.get(managed.id) is managed:
            self.shutdown_kernel(managed.id, now=True)

    # --- culling -----------------------------------------------------------------------

    def _cull_loop(self) -> None:
        interval = max(0.1, self.settings.cull_interval)
        log.info(
            "culling kernels idle for %gs, checked every %gs%s",
            self.settings.cull_idle_timeout,
            interval,
            " (connected ones too)" if self.settings.cull_connected else "",
        )
        while not self._closed:
            gevent.sleep(interval)
            try:
                self.cull_idle()
            except Exception:
                log.exception("culling failed")

    def cull_idle(self) -> None:
        now = time.time()
        for managed in list(self.kernels.values()):
            state = managed.execution_state
            idle = now - managed.last_activity
            if state == "dead":
                why = "dead"
            elif (
                state in ("idle", "starting")
                and idle > self.settings.cull_idle_timeout
                and (self.settings.cull_connected or not managed.clients)
            ):
                why = f"idle for {idle:.0f}s"
            else:
                continue
            log.warning("culling kernel %s (%s, %d connections)", managed.id, why, len(managed.clients))
            try:
                self.shutdown_kernel(managed.id)
            except KernelNotFound:
                pass
