"""One mounted notebook's service: its spec, warm kernel pool, counters and jobs.

Every endpoint view ends in :meth:`ApiService.handle`, and a request goes through each
module once:

1. :mod:`.request` builds ``REQUEST`` (a bad body is a 400), and :mod:`.contract` checks
   the endpoint's declared contract (a request that breaks it is a 400 listing every
   violation, and no kernel is leased);
2. the service leases a kernel (FIFO; 503 with ``Retry-After`` when none comes in time);
3. the service's :class:`~nb2svc.runtime.kernel.invoke.Invoker`, picked once for the
   kernel's language, runs the endpoint's code with its request bound and its
   ResponseInfo cell (:mod:`nb2svc.runtime.kernel.invoke`); a timeout is a 504 (the
   kernel is interrupted, or replaced if the interrupt fails), a dead kernel a 502 (it
   is replaced);
4. :mod:`.responses` makes the answer (a cell error is a 500).

Endpoints marked ``"response": "stream"`` answer while the cell runs
(:mod:`nb2svc.runtime.http_api.streaming`); ``"job"`` endpoints and ``Prefer: respond-async``
requests answer 202 and run as jobs (:mod:`nb2svc.runtime.http_api.jobs`).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from flask import Request, Response, current_app, jsonify, request

from nb2svc.compiler.spec import Endpoint, ServiceSpec
from nb2svc.config import Settings
from nb2svc.runtime.auth import configured_token, json_error
from nb2svc.runtime.http_api.contract import Contracts
from nb2svc.runtime.http_api.jobs import JobLimit, JobStore, client_identity, new_job_id
from nb2svc.runtime.http_api.request import BadRequestBody, build_payload
from nb2svc.runtime.http_api.responses import answer, error_payload
from nb2svc.runtime.http_api.streaming import EVENT_STREAM, OutputStream, wants_event_stream
from nb2svc.runtime.kernel import (
    ExecutionTimeout,
    Kernel,
    KernelDied,
    KernelRecipe,
    KernelSupervisor,
    PoolBusy,
    PoolFailed,
    PoolSize,
    RecyclePolicy,
    SetupCell,
    kernel_env,
    start_kernel,
)
from nb2svc.runtime.kernel.early import setup_cells
from nb2svc.runtime.kernel.forking import Forker
from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.invoke import EndpointCode, Invocation, RequestPayload, invoker_for
from nb2svc.runtime.kernel.memory import summed_pss
from nb2svc.runtime.logs import OBSERVER_KEY, REQUEST_ID_KEY, ROUTE_KEY, plain
from nb2svc.runtime.metrics import KERNEL_START_BUCKETS, Histogram
from nb2svc.runtime.store import StoreUnavailable
from nb2svc.runtime.tracing import annotate, carried, record, span
from nb2svc.runtime.webapp import base_path
from nb2svc.runtime.worker_runtime import stop_worker_for_good

log = logging.getLogger("nb2svc")


def _endpoint_code(endpoint: Endpoint) -> EndpointCode:
    info = endpoint.response_info
    return EndpointCode.of(endpoint.code, info.code if info else None, info.cells if info else ())


def _reported_by_reload(exc: BaseException) -> None:
    """A ``--reload`` candidate's pool failed: the reloader logs why, once."""


class ApiService:
    """The per-worker state of one service: its spec, settings, kernel pool and counters."""

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        cwd: str | None = None,
        exit_on_failure: bool = True,
        prefix: str = "",
        on_ready: Callable[[], None] | None = None,
        jobs: JobStore | None = None,
        supervisor: KernelSupervisor | None = None,
        host: KernelHost | None = None,
    ) -> None:
        """``on_ready`` (several notebooks) is told when this pool is warm, after its own
        "warm" line; alone, the service says "ready" itself. ``jobs`` is the app's job
        store (shared by its notebooks); without one, requests for jobs are a 503.
        ``host``: the worker's kernel host (its runtime's), which every kernel of the pool uses.
        ``supervisor`` is the worker's (its pool is one of the supervisor's); without one
        the service has its own."""
        self.invoker = invoker_for(spec.kernel.language)  # ValueError for a language it cannot serve
        self.spec = spec
        self.settings = settings
        self.prefix = prefix  # where the notebook is mounted ("" for the root)
        self._on_ready = on_ready
        self.kernel_name = settings.kernel_name or spec.kernel.name
        cells = setup_cells(spec)
        setup = tuple(SetupCell(where, code) for where, code in cells)
        env = kernel_env(settings.env_allow)
        #: Where this notebook's kernels fork from (``--kernel-start``), after its setup ran once.
        self.forker = Forker(
            settings.kernel_start,
            spec.notebook,
            cells,
            env=env,
            host=host,
            cwd=cwd,
            timeout=settings.kernel_start_timeout,
        )
        self.recipe = KernelRecipe(
            kernel_name=self.kernel_name,
            env=env,
            cwd=cwd,
            transport=settings.transport,
            start_timeout=settings.kernel_start_timeout,
            bootstrap=self.invoker.bootstrap,
            setup=setup,
            host=host,
            forker=self.forker,
        )
        supervisor = supervisor or KernelSupervisor()
        self.pool = supervisor.pool(
            prefix or "/",
            self._start_kernel,
            PoolSize.parse(settings.pool_size, idle_timeout=settings.pool_idle_timeout),
            recycle=RecyclePolicy.from_settings(settings.kernel_max_requests, settings.kernel_max_memory),
            max_waiting=settings.max_queue,
            # --reload keeps the old version and logs why the new one failed
            on_fatal=self._fatal if exit_on_failure else _reported_by_reload,
            on_ready=self._ready,
        )
        self.requests: Counter[tuple[str, int]] = Counter()
        #: To each answer's last byte (a stream's too), as the worker's handler measures it.
        self.durations = Histogram(
            "nb2svc_request_duration_seconds",
            "Endpoint requests: seconds from the request to the answer's last byte, by method, "
            "route (with its mount) and status.",
        )
        self.kernel_starts = Histogram(
            "nb2svc_kernel_start_seconds",
            "Kernel starts: seconds to a started and seeded kernel (setup cells included).",
            KERNEL_START_BUCKETS,
        )
        self.started_at = time.monotonic()
        self._hidden_query = ("token",) if configured_token(settings) else ()
        self.base = base_path(settings)
        self.jobs = jobs
        self.contracts = Contracts(spec)
        #: Every kernel this service started that still exists (for memory metrics).
        self._kernels: weakref.WeakSet[Kernel] = weakref.WeakSet()
        #: The worker's OpenTelemetry tracer (None: tracing is off; see :mod:`..tracing`).
        self.tracer: Any = None

    def memory_pss(self) -> int:
        """Summed PSS (bytes) of this service's live local kernels and their template."""
        pids = [k.process.pid for k in list(self._kernels) if k.is_alive()]
        return summed_pss([*pids, self.forker.template_pid])

    def _start_kernel(self) -> Kernel:
        """A seeded kernel, prepared for the invocation protocol (none is left on failure)."""
        started = time.monotonic()
        kernel = start_kernel(self.recipe)
        self._kernels.add(kernel)
        self.kernel_starts.observe(time.monotonic() - started)
        try:
            self.invoker.prepare(kernel, self.recipe.start_timeout)
        except BaseException:
            kernel.shutdown(now=True)
            raise
        return kernel

    def _fatal(self, exc: BaseException) -> None:
        """Nothing can work (bad setup cell, unknown kernel): stop this worker for good."""

        def cleanup() -> None:
            self.pool.shutdown()
            self.forker.close()

        stop_worker_for_good(str(exc), cleanup, subject="service")

    def _ready(self) -> None:
        warm = f"{self.pool.policy.minimum} {self.kernel_name} kernels warm"
        if self.pool.policy.elastic:
            warm += f" (up to {self.pool.policy.maximum})"
        warm += f" in {time.monotonic() - self.started_at:.2f}s"
        if self._on_ready is None:
            log.info(
                "ready: %s (worker %d), serving %s (Ctrl-C to quit)", warm, os.getpid(), self.settings.url
            )
            return
        log.info("%s at %s: %s", self.spec.notebook, self.prefix or "/", warm)
        self._on_ready()

    def start(self) -> None:
        self.pool.start()

    def shutdown(self) -> None:
        stats = self.pool.stats()
        self.pool.shutdown()
        self.forker.close()
        log.info("shut down %d kernels", stats.live)

    # --- requests ------------------------------------------------------------------

    def route(self, endpoint: Endpoint) -> str:
        """The endpoint's path with its mount (``/orders/:id``): how logs and metrics name it."""
        return self.prefix + endpoint.path

    def handle(self, index: int, path_params: dict[str, str]) -> Response:
        endpoint = self.spec.endpoints[index]
        route = request.environ[ROUTE_KEY] = self.route(endpoint)

        def observe(status: int, seconds: float) -> None:  # called once the last byte is sent
            self.durations.observe(seconds, method=endpoint.method, route=route, status=str(status))

        request.environ[OBSERVER_KEY] = observe
        response = self._answer(endpoint, path_params)
        self.requests[(f"{endpoint.method} {endpoint.path}", response.status_code)] += 1
        return response

    def _answer(self, endpoint: Endpoint, path_params: dict[str, str]) -> Response:
        try:
            payload = build_payload(request, path_params, self._hidden_query, self.invoker.binary_body)
        except BadRequestBody as exc:
            return json_error(400, "BadRequest", str(exc))
        payload = self.contracts.apply(endpoint, request, path_params, payload)
        if isinstance(payload, Response):  # it breaks the endpoint's contract: no kernel is leased
            return payload
        request_id = request.environ.get(REQUEST_ID_KEY, "-")
        if endpoint.response == "job" or "respond-async" in request.headers.get("Prefer", ""):
            return self._submit_job(endpoint, payload, request_id)
        if endpoint.response == "stream":
            return self._stream(endpoint, payload, request_id)
        return self._run(endpoint, payload, answering=request, request_id=request_id)

    def _run(
        self,
        endpoint: Endpoint,
        payload: RequestPayload,
        on_output: Callable[[str, dict[str, Any]], None] | None = None,
        on_kernel: Callable[[Kernel], None] | None = None,
        answering: Request | None = None,
        request_id: str = "-",
        job_id: str | None = None,
    ) -> Response:
        """Lease a kernel, run the endpoint with ``payload`` and make its response.

        ``on_output`` sees output as it is produced (streaming); ``on_kernel`` is told the
        leased kernel (so that a job or stream can be cancelled by interrupting it);
        ``answering`` is the HTTP request when it is answered now (ETag and 304);
        ``request_id`` names the request in the log line of a failed cell; ``job_id``
        names the job this runs for in its spans.
        """
        code, timeout = _endpoint_code(endpoint), self.settings.request_timeout
        waited_from = time.time_ns() if self.tracer is not None else 0
        try:
            with self.pool.lease(timeout=self.settings.queue_timeout) as kernel:
                if self.tracer is not None:
                    waited = {"nb2svc.notebook": self.spec.notebook, **_job_attribute(job_id)}
                    record(self.tracer, "nb2svc.pool.wait", waited_from, waited)
                if on_kernel is not None:
                    on_kernel(kernel)
                attributes = self._execute_attributes(kernel, endpoint, job_id)
                with span(self.tracer, "nb2svc.kernel.execute", attributes):
                    done = self.invoker.invoke(kernel, code, payload, timeout=timeout, on_output=on_output)
        except PoolBusy as exc:
            response = json_error(503, "ServiceUnavailable", f"all kernels are busy: {exc}")
            response.headers["Retry-After"] = "1"
            return response
        except PoolFailed as exc:
            return json_error(503, "ServiceUnavailable", f"the kernel pool failed to start: {exc}")
        except ExecutionTimeout as exc:
            return json_error(
                504,
                "GatewayTimeout",
                f"{endpoint.method} {endpoint.path} ran longer than the request timeout of {exc.seconds:g}s "
                "and was interrupted",
            )
        except KernelDied as exc:
            return json_error(502, "KernelDied", f"{exc}; a replacement kernel is starting")
        self._log_cell_error(endpoint, done, request_id)
        return answer(done, self.settings.error_detail, answering)

    def _execute_attributes(self, kernel: Kernel, endpoint: Endpoint, job_id: str | None) -> dict[str, Any]:
        if self.tracer is None:
            return {}
        return {
            "nb2svc.kernel.label": kernel.label,
            "nb2svc.kernel.name": kernel.kernel_name,
            "nb2svc.notebook": self.spec.notebook,
            "nb2svc.cells": list(endpoint.cells),
            **_job_attribute(job_id),
        }

    def _log_cell_error(self, endpoint: Endpoint, done: Invocation, request_id: str) -> None:
        """The operator's side of a 500: the exception and its traceback at ERROR, whatever
        ``--error-detail`` lets the client see, without the injected request."""
        info_cells = endpoint.response_info.cells if endpoint.response_info else ()
        for failed, cells in ((done.result, endpoint.cells), (done.response_info, info_cells)):
            if failed is None or failed.error is None:
                continue
            payload = error_payload(failed, hide=done.hide, detail="full")
            route = self.route(endpoint)
            log.error(
                "%s %s (%s, cell %s, request %s) raised %s: %s\n%s",
                endpoint.method,
                route,
                self.spec.notebook,
                ", ".join(map(str, cells)),
                request_id,
                payload["error"],
                payload["message"],
                plain("\n".join(payload["traceback"])),
                extra={
                    "method": endpoint.method,
                    "route": route,
                    "notebook": self.spec.notebook,
                    "cells": list(cells),
                    "request_id": request_id,
                },
            )
            return

    # --- async jobs and streams ------------------------------------------------------

    def _submit_job(self, endpoint: Endpoint, payload: RequestPayload, request_id: str) -> Response:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        job_id = new_job_id()

        def run(on_kernel: Callable[[Kernel], None]) -> Response:
            with app.app_context():
                return self._run(endpoint, payload, on_kernel=on_kernel, request_id=request_id, job_id=job_id)

        if self.jobs is None:
            return json_error(503, "ServiceUnavailable", "async jobs are not available in this app")
        name = f"{endpoint.method} {endpoint.path}"
        client = client_identity(request, bool(self._hidden_query))
        try:
            # the job's greenlet runs in this request's trace (nothing is carried when tracing is off)
            job = self.jobs.submit(name, client, carried(self.tracer, run), job_id=job_id)
        except JobLimit as exc:
            response = json_error(429, "TooManyJobs", str(exc))
            response.headers["Retry-After"] = "1"
            return response
        except StoreUnavailable as exc:
            response = json_error(503, "ServiceUnavailable", f"the job store is unavailable: {exc}")
            response.headers["Retry-After"] = "1"
            return response
        annotate(self.tracer, "nb2svc.job.id", job_id)
        location = f"{self.base}/_api/jobs/{job['id']}"
        response = jsonify({"id": job["id"], "status": job["status"], "endpoint": name, "location": location})
        response.status_code = 202
        response.headers["Location"] = location
        if "respond-async" in request.headers.get("Prefer", ""):
            response.headers["Preference-Applied"] = "respond-async"  # RFC 7240: the client asked
        return response

    def _stream(self, endpoint: Endpoint, payload: RequestPayload, request_id: str) -> Response:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        sse = wants_event_stream(request.headers.get("Accept", ""))

        def run(on_output: Any, on_kernel: Any) -> dict[str, Any] | None:
            with app.app_context():
                response = self._run(
                    endpoint, payload, on_output=on_output, on_kernel=on_kernel, request_id=request_id
                )
            return response.get_json(silent=True) if response.status_code >= 400 else None

        client = request.environ.get("nb2svc.socket")  # watched for the client leaving
        # the stream's greenlet runs in this request's trace (nothing is carried when tracing is off)
        label = f"{request.method} {request.path}"
        stream = OutputStream(carried(self.tracer, run), sse=sse, client=client, label=label)
        mimetype = EVENT_STREAM if sse else "text/plain"
        response = Response(iter(stream), mimetype=mimetype)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
        return response


def _job_attribute(job_id: str | None) -> dict[str, str]:
    return {"nb2svc.job.id": job_id} if job_id is not None else {}


__all__ = ["ApiService"]
