"""API mode: a Flask app whose routes run notebook cells on a warm kernel pool.

:func:`create_app` builds the app for a :class:`ServiceSpec`: auth and CORS, JSON
errors, the spec and docs endpoints, health and metrics, and (unless a generated
``app.py`` declares them itself) one route per endpoint. Every endpoint view ends in
:meth:`ApiService.handle`, which:

1. builds ``REQUEST`` (see :mod:`nb2svc.runtime.request`; a bad body is a 400),
2. leases a kernel (FIFO; 503 with ``Retry-After`` when none comes in time),
3. runs the endpoint's code with ``REQUEST`` bound in the same execute (out of band
   on Python kernels, a literal on the annotation line elsewhere),
4. runs the ResponseInfo code, if any, and applies its status and headers,
5. answers per :mod:`nb2svc.runtime.responses`; a cell error is a 500, a timeout a
   504 (the kernel is interrupted, or replaced if the interrupt fails), a dead
   kernel a 502 (it is replaced).

Routes the service adds: ``/_api/spec/swagger.json`` (Kernel Gateway compatible),
``/openapi.json``, ``/_api/docs``, ``/_api/health/live``, ``/_api/health/ready``
(503 until the pool is warm) and ``/_api/metrics`` (Prometheus text, per worker).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    redirect,
    request,
    send_file,
    send_from_directory,
)
from werkzeug.exceptions import HTTPException

from nb2svc.compiler.mounts import Mount
from nb2svc.compiler.openapi import mounted_openapi_document, swagger_document
from nb2svc.compiler.spec import Endpoint, ServiceSpec
from nb2svc.config import Settings
from nb2svc.runtime.auth import configured_token, health_paths, install_auth, install_cors, json_error
from nb2svc.runtime.docs_page import STATIC_DIR as DOCS_STATIC_DIR
from nb2svc.runtime.docs_page import STATIC_FILES as DOCS_STATIC_FILES
from nb2svc.runtime.docs_page import render_docs_page
from nb2svc.runtime.jobs import JobLimit, JobStore
from nb2svc.runtime.kernel import (
    ExecutionResult,
    ExecutionTimeout,
    Kernel,
    KernelDied,
    KernelPool,
    KernelRecipe,
    PoolBusy,
    PoolFailed,
    SetupCell,
    execute,
    kernel_env,
    start_kernel,
)
from nb2svc.runtime.kernel.executor import expression_result
from nb2svc.runtime.kg_compat import conditional, keep_encoded_slashes
from nb2svc.runtime.kg_compat import path_params as kg_path_params
from nb2svc.runtime.request import (
    PROBE_BUFFERS,
    PROBE_EXPRESSION,
    PROBE_KEY,
    PROBE_METADATA,
    PYTHON_BOOTSTRAP,
    RESPONSE_INFO_KEY,
    BadRequestBody,
    build_payload,
    code_with_request,
    out_of_band,
    response_info_expressions,
    supports_language,
)
from nb2svc.runtime.responses import (
    ResponseInfoError,
    error_payload,
    make_response,
    parse_response_info,
)
from nb2svc.runtime.server import on_worker_exit
from nb2svc.runtime.streaming import EVENT_STREAM, OutputStream, wants_event_stream

log = logging.getLogger("nb2svc")

#: ``Kernel.traits`` key: the kernel binds REQUEST from the execute request's buffers.
OUT_OF_BAND = "request_out_of_band"


class ApiService:
    """The per-worker state of one service: its spec, settings, kernel pool and counters."""

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        cwd: str | None = None,
        exit_on_failure: bool = True,
        prefix: str = "",
    ) -> None:
        if not supports_language(spec.kernel.language):
            raise ValueError(f"API mode does not know how to set REQUEST in {spec.kernel.language!r} kernels")
        self.spec = spec
        self.settings = settings
        self.prefix = prefix  # where the notebook is mounted ("" for the root)
        self.kernel_name = settings.kernel_name or spec.kernel.name
        self._python = spec.kernel.language.lower() == "python"
        self.recipe = KernelRecipe(
            kernel_name=self.kernel_name,
            env=kernel_env(settings.env_allow),
            cwd=cwd,
            transport=settings.transport,
            start_timeout=settings.kernel_start_timeout,
            bootstrap=PYTHON_BOOTSTRAP if self._python else "",
            setup=tuple(SetupCell(f"{spec.notebook}, cell {cell.cell}", cell.code) for cell in spec.setup),
        )
        self.pool = KernelPool(
            settings.pool_size,
            self._start_kernel,
            max_waiting=settings.max_queue,
            on_fatal=self._fatal if exit_on_failure else None,  # --reload keeps the old version
            on_ready=self._ready,
        )
        self.requests: Counter[tuple[str, int]] = Counter()
        self.duration_sum: Counter[str] = Counter()
        self.started_at = time.monotonic()
        self._hidden_query = ("token",) if configured_token(settings) else ()
        self.base = settings.base_url.rstrip("/")
        self.jobs = JobStore()

    def _start_kernel(self) -> Kernel:
        """A seeded kernel; a Python one is asked once whether it binds REQUEST out of band."""
        kernel = start_kernel(self.recipe)
        if self._python:
            try:
                probe = execute(
                    kernel,
                    "pass",
                    timeout=self.recipe.start_timeout,
                    user_expressions={PROBE_KEY: PROBE_EXPRESSION},
                    metadata=PROBE_METADATA,
                    buffers=PROBE_BUFFERS,
                )
            except BaseException:
                kernel.shutdown(now=True)
                raise
            answer = (probe.user_expressions.get(PROBE_KEY) or {}).get("data", {}).get("text/plain")
            kernel.traits[OUT_OF_BAND] = answer == "True"
        return kernel

    def _fatal(self, exc: BaseException) -> None:
        """Nothing can work (bad setup cell, unknown kernel): stop this worker for good.

        Exit code 3 is gunicorn's "worker failed to boot", which halts the master
        instead of restarting the worker forever.
        """
        log.critical("the service cannot start: %s", exc)
        self.pool.shutdown()
        logging.shutdown()
        os._exit(3)

    def _ready(self) -> None:
        log.info(
            "ready: %d %s kernels warm in %.2fs (worker %d), serving %s (Ctrl-C to quit)",
            self.pool.size,
            self.kernel_name,
            time.monotonic() - self.started_at,
            os.getpid(),
            self.settings.url,
        )

    def start(self) -> None:
        self.pool.start()

    def shutdown(self) -> None:
        stats = self.pool.stats()
        self.pool.shutdown()
        log.info("shut down %d kernels", stats.live)

    # --- requests ------------------------------------------------------------------

    def handle(self, index: int, path_params: dict[str, str]) -> Response:
        endpoint = self.spec.endpoints[index]
        started = time.perf_counter()
        response = conditional(request, self._answer(endpoint, kg_path_params(request.environ, path_params)))
        key = f"{endpoint.method} {endpoint.path}"
        self.requests[(key, response.status_code)] += 1
        self.duration_sum[key] += time.perf_counter() - started
        return response

    def _answer(self, endpoint: Endpoint, path_params: dict[str, str]) -> Response:
        try:
            payload = build_payload(request, path_params, self._hidden_query, binary_ok=self._python)
        except BadRequestBody as exc:
            return json_error(400, "BadRequest", str(exc))
        if endpoint.response == "job" or "respond-async" in request.headers.get("Prefer", ""):
            return self._submit_job(endpoint, payload)
        if endpoint.response == "stream":
            return self._stream(endpoint, payload)
        return self._run(endpoint, payload)

    def _run(
        self,
        endpoint: Endpoint,
        payload: Any,
        on_output: Callable[[str, dict[str, Any]], None] | None = None,
        on_kernel: Callable[[Kernel], None] | None = None,
    ) -> Response:
        """Lease a kernel, run the endpoint with ``payload`` and make its response.

        ``on_output`` sees output as it is produced (streaming); ``on_kernel`` is told the
        leased kernel (so that a job or stream can be cancelled by interrupting it).
        """
        language = self.spec.kernel.language
        info_cell = endpoint.response_info
        expressions = (
            response_info_expressions(language, info_cell.code, info_cell.cells) if info_cell else None
        )
        timeout = self.settings.request_timeout
        try:
            with self.pool.lease(timeout=self.settings.queue_timeout) as kernel:
                if on_kernel is not None:
                    on_kernel(kernel)
                deadline = time.monotonic() + timeout
                if kernel.traits.get(OUT_OF_BAND):
                    code, injected = endpoint.code, ""
                    metadata, buffers = out_of_band(payload)
                else:
                    code = code_with_request(language, endpoint.code, payload.json)
                    injected, metadata, buffers = code[: len(code) - len(endpoint.code)], None, None
                result = execute(
                    kernel,
                    code,
                    timeout=timeout,
                    user_expressions=expressions,
                    metadata=metadata,
                    buffers=buffers,
                    on_output=on_output,
                )
                info_result = None
                if result.error is None and info_cell is not None:
                    if self._python:
                        info_result = expression_result(result.user_expressions.get(RESPONSE_INFO_KEY))
                    else:
                        remaining = max(0.1, deadline - time.monotonic())
                        info_result = execute(kernel, info_cell.code, timeout=remaining)
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
        if result.error is not None:
            return self._cell_error(result, injected)
        if info_result is not None and info_result.error is not None:
            return self._cell_error(info_result, injected)
        try:
            info = parse_response_info(info_result.stdout if info_result else "")
        except ResponseInfoError as exc:
            return json_error(500, "ResponseInfoError", str(exc))
        return make_response(result, info)

    # --- async jobs and streams ------------------------------------------------------

    def _submit_job(self, endpoint: Endpoint, payload: Any) -> Response:
        app = current_app._get_current_object()  # type: ignore[attr-defined]

        def run(on_kernel: Callable[[Kernel], None]) -> Response:
            with app.app_context():
                return self._run(endpoint, payload, on_kernel=on_kernel)

        try:
            job = self.jobs.submit(f"{endpoint.method} {endpoint.path}", run)
        except JobLimit as exc:
            response = json_error(503, "ServiceUnavailable", str(exc))
            response.headers["Retry-After"] = "1"
            return response
        location = f"{self.base}/_api/jobs/{job.id}"
        response = jsonify(
            {"id": job.id, "status": job.status, "endpoint": job.endpoint, "location": location}
        )
        response.status_code = 202
        response.headers["Location"] = location
        return response

    def _stream(self, endpoint: Endpoint, payload: Any) -> Response:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        sse = wants_event_stream(request.headers.get("Accept", ""))

        def run(on_output: Any, on_kernel: Any) -> dict[str, Any] | None:
            with app.app_context():
                response = self._run(endpoint, payload, on_output=on_output, on_kernel=on_kernel)
            return response.get_json(silent=True) if response.status_code >= 400 else None

        stream = OutputStream(run, sse=sse)
        mimetype = EVENT_STREAM if sse else "text/plain"
        response = Response(iter(stream), mimetype=mimetype)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
        return response

    def _cell_error(self, result: ExecutionResult, injected: str) -> Response:
        """500 for a failed cell; ``injected`` (a REQUEST literal's assignment) never goes back.

        Out of band there is nothing to hide: the kernel only ever saw the notebook's code.
        """
        payload = error_payload(result, hide=injected, detail=self.settings.error_detail)
        return json_error(500, payload.pop("error"), payload.pop("message"), **payload)


def create_app(
    spec: ServiceSpec,
    settings: Settings,
    *,
    register_routes: bool = True,
    cwd: str | Path | None = None,
    exit_on_failure: bool = True,
) -> Flask:
    """The API-mode Flask app of one notebook at the root. A generated ``app.py`` passes
    ``register_routes=False`` and declares each endpoint itself with :meth:`ApiService.handle`.
    With ``exit_on_failure=False`` (a ``--reload`` candidate) a pool that cannot start only
    sets ``pool.failure`` instead of stopping the worker.
    """
    return create_mounted_app(
        [(Mount("", spec), cwd)], settings, register_routes=register_routes, exit_on_failure=exit_on_failure
    )


def create_mounted_app(
    mounts: Sequence[tuple[Mount, str | Path | None]],
    settings: Settings,
    *,
    register_routes: bool = True,
    exit_on_failure: bool = True,
) -> Flask:
    """One app for one or several notebooks (``(mount, working directory)`` each).

    The skeleton (auth, CORS, JSON errors, docs, OpenAPI, health, metrics, jobs) is
    shared; each notebook is a Flask blueprint at its prefix with its own
    :class:`ApiService` and warm pool, so adding a mount touches nothing else.
    """
    first = mounts[0][0]
    app = Flask(first.name if len(mounts) == 1 else "nb2svc")
    app.wsgi_app = keep_encoded_slashes(app.wsgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_size
    app.json.sort_keys = False  # type: ignore[attr-defined]
    base = settings.base_url.rstrip("/")
    app.config["NB2SVC_BASE"] = base
    services = [
        ApiService(
            mount.spec,
            settings,
            cwd=str(cwd) if cwd else None,
            exit_on_failure=exit_on_failure,
            prefix=mount.prefix,
        )
        for mount, cwd in mounts
    ]
    app.extensions["nb2svc"] = services[0]
    app.extensions["nb2svc.services"] = services
    install_cors(app, settings)
    install_auth(
        app, settings, is_exempt=public_paths(base, [m for m, _ in mounts], static=bool(settings.static_path))
    )
    _install_error_handlers(app)
    _install_service_routes(app, services, [m for m, _ in mounts], base)
    _install_kg_extras(app, settings, services[0], base)
    if register_routes:
        for service in services:
            blueprint = Blueprint(
                f"notebook_{len(app.blueprints)}", __name__, url_prefix=base + service.prefix or None
            )
            for index in range(len(service.spec.endpoints)):
                _add_route(blueprint, service, index)
            app.register_blueprint(blueprint)
    for service in services:
        on_worker_exit(service.shutdown)
        service.start()
    return app


def claims_root(mounts: Sequence[Mount]) -> bool:
    return any(mount.full_path(ep) == "/" for mount in mounts for ep in mount.spec.endpoints)


def public_paths(base: str, mounts: Sequence[Mount], static: bool = False) -> Callable[[str], bool]:
    """What API mode serves without a token: the health checks, the docs page, its static
    files (Swagger UI's, nothing of the service's), when no endpoint claims ``/``, the
    redirect from ``/`` to the docs, and with ``static`` the ``--static-path`` files under
    ``/public/`` (Kernel Gateway serves them without a token too: a browser loads a page
    and its assets before its script can send one). The OpenAPI document, ``/_api/source``
    and every endpoint need the token."""
    health = health_paths(base)
    exact = {base + "/_api/docs"} | (set() if claims_root(mounts) else {base + "/", base or "/"})
    prefixes = (base + "/_api/docs/static/",) + ((base + "/public/",) if static else ())
    return lambda path: health(path) or path in exact or path.startswith(prefixes)


def notebook_file(spec: ServiceSpec, cwd: str | Path | None) -> Path | None:
    """The notebook file behind a service: ``spec.notebook`` in its working directory, or a
    bundle's ``notebook.ipynb`` (the source, verbatim); ``None`` when there is none."""
    if cwd is None:
        return None
    for candidate in (Path(cwd) / spec.notebook, Path(cwd) / "notebook.ipynb"):
        if candidate.is_file():
            return candidate
    return None


def _install_kg_extras(app: Flask, settings: Settings, service: ApiService, base: str) -> None:
    """Kernel Gateway's opt-in routes: ``/_api/source`` and ``/public/...``.

    ``GET /_api/source`` (``--allow-notebook-download``) answers the notebook file's bytes
    as Kernel Gateway's static file handler does: ``application/octet-stream`` (Python's
    ``mimetypes`` knows no ``.ipynb``), with ``ETag`` and ``Last-Modified``; off, it is a 404.
    It describes the first notebook, as ``/_api/spec/swagger.json`` does.
    ``GET /public/<path>`` (``--static-path DIR``) serves files below DIR; a path that
    leaves DIR (``..``, absolute, encoded) or names no file is a 404.
    """
    if settings.allow_notebook_download:

        @app.get(base + "/_api/source")
        def _source() -> Response:
            path = notebook_file(service.spec, service.recipe.cwd)
            if path is None:
                return json_error(404, "NotFound", f"{service.spec.notebook} is not on this server's disk")
            return send_file(path, mimetype="application/octet-stream", max_age=0)

    if settings.static_path:
        folder = settings.static_path

        @app.get(base + "/public/<path:name>")
        def _public(name: str) -> Response:
            return send_from_directory(folder, name, max_age=0)


def add_endpoint(app: Flask, index: int) -> None:
    """Register endpoint ``index`` of the app's (single) service as a Flask route (generated
    ``app.py`` files declare their routes this way)."""
    service: ApiService = app.extensions["nb2svc"]
    _add_route(app, service, index, prefix=app.config["NB2SVC_BASE"])


def _add_route(target: Flask | Blueprint, service: ApiService, index: int, prefix: str = "") -> None:
    endpoint = service.spec.endpoints[index]

    def view(**path_params: str) -> Response:
        return service.handle(index, path_params)

    target.add_url_rule(
        prefix + endpoint.flask_rule,
        endpoint=f"endpoint_{index}",
        view_func=view,
        methods=[endpoint.method],
    )


def _install_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = json_error(exc.code or 500, exc.name.replace(" ", ""), exc.description or exc.name)
        if exc.code == 405:
            valid = getattr(exc, "valid_methods", None)
            if valid:
                response.headers["Allow"] = ", ".join(sorted(valid))
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return json_error(500, "InternalServerError", "unexpected server error; see the server log")


def _install_service_routes(app: Flask, services: list[ApiService], mounts: list[Mount], base: str) -> None:
    first = mounts[0].spec

    @app.get(base + "/_api/spec/swagger.json")
    def _swagger() -> Any:
        return swagger_document(first)  # Kernel Gateway's document describes one notebook

    @app.get(base + "/openapi.json")
    def _openapi() -> Any:
        return mounted_openapi_document(mounts, server_url=base or None)

    @app.get(base + "/_api/docs")
    def _docs() -> Response:
        title = ", ".join(m.name for m in mounts)
        return Response(render_docs_page(title, base), content_type="text/html; charset=utf-8")

    @app.get(base + "/_api/docs/static/<name>")
    def _docs_static(name: str) -> Response:
        if name not in DOCS_STATIC_FILES:
            return json_error(404, "NotFound", "no such file")
        return send_from_directory(DOCS_STATIC_DIR, name, max_age=3600)

    if not claims_root(mounts):

        def _home() -> Response:  # the first URL the banner prints: send people to the docs
            query = request.query_string.decode("latin-1")
            return redirect(base + "/_api/docs" + (f"?{query}" if query else ""), code=302)

        for rule in {base + "/", base or "/"}:
            app.add_url_rule(rule, endpoint=f"home{len(rule)}", view_func=_home, methods=["GET"])

    def find_job(job_id: str) -> tuple[ApiService, Any] | None:
        for service in services:
            job = service.jobs.get(job_id)
            if job is not None:
                return service, job
        return None

    @app.get(base + "/_api/jobs/<job_id>")
    def _job(job_id: str) -> Response:
        found = find_job(job_id)
        if found is None:
            return json_error(
                404, "NotFound", f"no job {job_id} here (finished jobs expire; jobs live in one worker)"
            )
        job = found[1]
        if job.response is None:
            response = jsonify({"id": job.id, "status": job.status, "endpoint": job.endpoint})
            response.headers["Retry-After"] = "1"
            return response
        done = job.response
        answer = Response(done.get_data(), status=done.status_code, headers=list(done.headers.items()))
        answer.headers["Nb2svc-Job"] = "done"
        return answer

    @app.delete(base + "/_api/jobs/<job_id>")
    def _cancel_job(job_id: str) -> Response:
        found = find_job(job_id)
        if found is None or not found[0].jobs.cancel(job_id):
            return json_error(404, "NotFound", f"no job {job_id} here")
        return Response(status=204)

    @app.get(base + "/_api/health/live")
    def _live() -> Any:
        return {"status": "ok"}

    @app.get(base + "/_api/health/ready")
    def _ready() -> Any:
        """Ready when every notebook's pool is warm (one notebook: its pool's numbers at the top)."""
        states = {}
        for service in services:
            stats = service.pool.stats()
            state: dict[str, Any] = {
                "ready": service.pool.ready,
                "kernels": stats.live,
                "idle": stats.idle,
                "size": stats.size,
            }
            if service.pool.failure is not None:
                state["error"] = str(service.pool.failure)
            states[service.spec.name] = state
        ready = all(service.pool.ready for service in services)
        if len(services) == 1:
            return next(iter(states.values())), (200 if ready else 503)
        return {"ready": ready, "notebooks": states}, (200 if ready else 503)

    @app.get(base + "/_api/metrics")
    def _metrics() -> Response:
        return Response(_prometheus_text(services), content_type="text/plain; version=0.0.4")


def _prometheus_text(services: list[ApiService]) -> str:
    """Prometheus text for every notebook; with several, each series carries ``notebook``."""
    several = len(services) > 1

    def labels(service: ApiService, **more: str) -> str:
        pairs = ({"notebook": service.spec.name} if several else {}) | more
        return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}" if pairs else ""

    lines = [
        "# HELP nb2svc_requests_total Endpoint requests answered by this worker, by status.",
        "# TYPE nb2svc_requests_total counter",
    ]
    for service in services:
        for (route, status), count in sorted(service.requests.items()):
            lines.append(f"nb2svc_requests_total{labels(service, route=route, status=str(status))} {count}")
    lines += [
        "# HELP nb2svc_request_seconds_sum Total seconds spent answering endpoint requests.",
        "# TYPE nb2svc_request_seconds_sum counter",
    ]
    for service in services:
        for route, total in sorted(service.duration_sum.items()):
            lines.append(f"nb2svc_request_seconds_sum{labels(service, route=route)} {total:.6f}")
    gauges = {
        "nb2svc_pool_size": ("Configured kernels per worker.", lambda s: s.size),
        "nb2svc_pool_kernels_live": ("Kernels alive in the pool.", lambda s: s.live),
        "nb2svc_pool_kernels_idle": ("Kernels free to take a request.", lambda s: s.idle),
        "nb2svc_pool_kernels_busy": ("Kernels running a request.", lambda s: s.busy),
        "nb2svc_pool_kernels_starting": ("Kernels being started or seeded.", lambda s: s.starting),
        "nb2svc_pool_waiting_requests": ("Requests waiting for a free kernel.", lambda s: s.waiting),
        "nb2svc_pool_saturation": (
            "Busy kernels plus waiting requests, over pool size (scale out above 1).",
            lambda s: (s.busy + s.waiting) / s.size,
        ),
    }
    stats = [(service, service.pool.stats()) for service in services]
    for name, (help_text, value) in gauges.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{labels(service)} {value(stat):g}" for service, stat in stats]
    lines += [
        "# HELP nb2svc_kernel_replacements_total Kernels replaced after dying or wedging.",
        "# TYPE nb2svc_kernel_replacements_total counter",
    ]
    lines += [f"nb2svc_kernel_replacements_total{labels(service)} {stat.replaced}" for service, stat in stats]
    return "\n".join(lines) + "\n"


__all__ = ["ApiService", "add_endpoint", "create_app", "create_mounted_app"]
