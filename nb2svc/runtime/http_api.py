"""API mode: a Flask app whose routes run notebook cells on a warm kernel pool.

:func:`create_app` builds the app for a :class:`ServiceSpec`: auth and CORS, JSON
errors, the spec and docs endpoints, health and metrics, and (unless a generated
``app.py`` declares them itself) one route per endpoint. Every endpoint view ends in
:meth:`ApiService.handle`, which:

1. builds ``REQUEST`` (see :mod:`nb2svc.runtime.request`; a bad body is a 400),
2. leases a kernel (FIFO; 503 with ``Retry-After`` when none comes in time),
3. runs the endpoint's code with ``REQUEST`` assigned in the same execute,
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, redirect, request, send_from_directory
from werkzeug.exceptions import HTTPException

from nb2svc.compiler.openapi import openapi_document, swagger_document
from nb2svc.compiler.spec import Endpoint, ServiceSpec
from nb2svc.config import Settings
from nb2svc.runtime.auth import configured_token, health_paths, install_auth, install_cors, json_error
from nb2svc.runtime.docs_page import STATIC_DIR as DOCS_STATIC_DIR
from nb2svc.runtime.docs_page import STATIC_FILES as DOCS_STATIC_FILES
from nb2svc.runtime.docs_page import render_docs_page
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
    HEALTH_EXPRESSION,
    HEALTH_KEY,
    PYTHON_BOOTSTRAP,
    RESPONSE_INFO_KEY,
    BadRequestBody,
    build_request,
    code_with_request,
    response_info_expressions,
    supports_language,
)
from nb2svc.runtime.responses import (
    ResponseInfoError,
    error_payload,
    parse_response_info,
    response_body,
)
from nb2svc.runtime.server import on_worker_exit

log = logging.getLogger("nb2svc")


class ApiService:
    """The per-worker state of one service: its spec, settings, kernel pool and counters."""

    def __init__(
        self, spec: ServiceSpec, settings: Settings, cwd: str | None = None, exit_on_failure: bool = True
    ) -> None:
        if not supports_language(spec.kernel.language):
            raise ValueError(f"API mode does not know how to set REQUEST in {spec.kernel.language!r} kernels")
        self.spec = spec
        self.settings = settings
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
            lambda: start_kernel(self.recipe),
            max_waiting=settings.max_queue,
            on_fatal=self._fatal if exit_on_failure else None,  # --reload keeps the old version
            on_ready=self._ready,
        )
        self.requests: Counter[tuple[str, int]] = Counter()
        self.duration_sum: Counter[str] = Counter()
        self.started_at = time.monotonic()
        self._hidden_query = ("token",) if configured_token(settings) else ()

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
            "ready: %d %s kernels warm in %.2fs (worker %d)",
            self.pool.size,
            self.kernel_name,
            time.monotonic() - self.started_at,
            os.getpid(),
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
            request_json = build_request(request, path_params, self._hidden_query)
        except BadRequestBody as exc:
            return json_error(400, "BadRequest", str(exc))
        language = self.spec.kernel.language
        code = code_with_request(language, endpoint.code, request_json)
        info_cell = endpoint.response_info
        expressions = (
            response_info_expressions(language, info_cell.code, info_cell.cells) if info_cell else None
        )
        if self._python:
            expressions = {**(expressions or {}), HEALTH_KEY: HEALTH_EXPRESSION}
        timeout = self.settings.request_timeout
        try:
            with self.pool.lease(timeout=self.settings.queue_timeout) as kernel:
                deadline = time.monotonic() + timeout
                result = execute(kernel, code, timeout=timeout, user_expressions=expressions)
                self._check_health(kernel, result, deadline)
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
            return self._cell_error(result, code[: len(code) - len(endpoint.code)])
        if info_result is not None and info_result.error is not None:
            return self._cell_error(info_result, code[: len(code) - len(endpoint.code)])
        try:
            info = parse_response_info(info_result.stdout if info_result else "")
        except ResponseInfoError as exc:
            return json_error(500, "ResponseInfoError", str(exc))
        body, content_type = response_body(result, info)
        response = Response(body, status=info.status)
        for name, value in info.headers.items():
            response.headers[name] = value
        response.headers["Content-Type"] = content_type
        return response

    def _check_health(self, kernel: Kernel, result: ExecutionResult, deadline: float) -> None:
        """Retire a Python kernel whose code closed its stdout or stderr (every later answer
        would fail). The check rides on the request's own execute; after an error (when
        ipykernel evaluates no expressions) it costs one more, small one.
        """
        if not self._python:
            return
        health = result.user_expressions.get(HEALTH_KEY)
        if health is None:
            remaining = max(0.1, deadline - time.monotonic())
            health = execute(kernel, "", timeout=remaining, user_expressions={HEALTH_KEY: HEALTH_EXPRESSION})
            health = health.user_expressions.get(HEALTH_KEY)
        # Only a definite False retires: kernels that do not evaluate expressions (or
        # that answer them in another shape, like xeus-python) are taken as healthy.
        text = (health or {}).get("data", {}).get("text/plain", "")
        if text == "False":
            kernel.retire("its code closed sys.stdout or sys.stderr")

    def _cell_error(self, result: ExecutionResult, injected: str) -> Response:
        """500 for a failed cell; ``injected`` (the REQUEST assignment) never goes back."""
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
    """The API-mode Flask app. A generated ``app.py`` passes ``register_routes=False``
    and declares each endpoint itself with :meth:`ApiService.handle`. With
    ``exit_on_failure=False`` (a ``--reload`` candidate) a pool that cannot start only
    sets ``pool.failure`` instead of stopping the worker.
    """
    app = Flask(spec.name)
    app.wsgi_app = keep_encoded_slashes(app.wsgi_app)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_size
    app.json.sort_keys = False  # type: ignore[attr-defined]
    service = ApiService(spec, settings, cwd=str(cwd) if cwd else None, exit_on_failure=exit_on_failure)
    app.extensions["nb2svc"] = service
    base = settings.base_url.rstrip("/")
    app.config["NB2SVC_BASE"] = base
    install_cors(app, settings)
    install_auth(app, settings, is_exempt=public_paths(base, spec))
    _install_error_handlers(app)
    _install_service_routes(app, service, base)
    if register_routes:
        for index in range(len(spec.endpoints)):
            add_endpoint(app, index)
    on_worker_exit(service.shutdown)
    service.start()
    return app


def claims_root(spec: ServiceSpec) -> bool:
    return any(ep.path == "/" for ep in spec.endpoints)


def public_paths(base: str, spec: ServiceSpec) -> Callable[[str], bool]:
    """What API mode serves without a token: the health checks, the docs page, its static
    files (Swagger UI's, nothing of the service's) and, when no endpoint claims ``/``, the
    redirect from ``/`` to the docs. The OpenAPI document and every endpoint need the token."""
    health = health_paths(base)
    exact = {base + "/_api/docs"} | (set() if claims_root(spec) else {base + "/", base or "/"})
    static = base + "/_api/docs/static/"
    return lambda path: health(path) or path in exact or path.startswith(static)


def add_endpoint(app: Flask, index: int) -> None:
    """Register endpoint ``index`` of the app's service as a Flask route."""
    service: ApiService = app.extensions["nb2svc"]
    endpoint = service.spec.endpoints[index]

    def view(**path_params: str) -> Response:
        return service.handle(index, path_params)

    app.add_url_rule(
        app.config["NB2SVC_BASE"] + endpoint.flask_rule,
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


def _install_service_routes(app: Flask, service: ApiService, base: str) -> None:
    spec = service.spec

    @app.get(base + "/_api/spec/swagger.json")
    def _swagger() -> Any:
        return swagger_document(spec)

    @app.get(base + "/openapi.json")
    def _openapi() -> Any:
        return openapi_document(spec, server_url=base or None)

    @app.get(base + "/_api/docs")
    def _docs() -> Response:
        return Response(render_docs_page(spec.name, base), content_type="text/html; charset=utf-8")

    @app.get(base + "/_api/docs/static/<name>")
    def _docs_static(name: str) -> Response:
        if name not in DOCS_STATIC_FILES:
            return json_error(404, "NotFound", "no such file")
        return send_from_directory(DOCS_STATIC_DIR, name, max_age=3600)

    if not claims_root(spec):

        def _home() -> Response:  # the first URL the banner prints: send people to the docs
            query = request.query_string.decode("latin-1")
            return redirect(base + "/_api/docs" + (f"?{query}" if query else ""), code=302)

        for rule in {base + "/", base or "/"}:
            app.add_url_rule(rule, endpoint=f"home{len(rule)}", view_func=_home, methods=["GET"])

    @app.get(base + "/_api/health/live")
    def _live() -> Any:
        return {"status": "ok"}

    @app.get(base + "/_api/health/ready")
    def _ready() -> Any:
        stats = service.pool.stats()
        body = {"ready": service.pool.ready, "kernels": stats.live, "idle": stats.idle, "size": stats.size}
        if service.pool.failure is not None:
            body["error"] = str(service.pool.failure)
        return body, (200 if service.pool.ready else 503)

    @app.get(base + "/_api/metrics")
    def _metrics() -> Response:
        return Response(_prometheus_text(service), content_type="text/plain; version=0.0.4")


def _prometheus_text(service: ApiService) -> str:
    stats = service.pool.stats()
    lines = [
        "# HELP nb2svc_requests_total Endpoint requests answered by this worker, by status.",
        "# TYPE nb2svc_requests_total counter",
    ]
    for (route, status), count in sorted(service.requests.items()):
        lines.append(f'nb2svc_requests_total{{route="{route}",status="{status}"}} {count}')
    lines += [
        "# HELP nb2svc_request_seconds_sum Total seconds spent answering endpoint requests.",
        "# TYPE nb2svc_request_seconds_sum counter",
    ]
    for route, total in sorted(service.duration_sum.items()):
        lines.append(f'nb2svc_request_seconds_sum{{route="{route}"}} {total:.6f}')
    gauges = {
        "nb2svc_pool_size": ("Configured kernels per worker.", stats.size),
        "nb2svc_pool_kernels_live": ("Kernels alive in the pool.", stats.live),
        "nb2svc_pool_kernels_idle": ("Kernels free to take a request.", stats.idle),
        "nb2svc_pool_kernels_busy": ("Kernels running a request.", stats.busy),
        "nb2svc_pool_kernels_starting": ("Kernels being started or seeded.", stats.starting),
        "nb2svc_pool_waiting_requests": ("Requests waiting for a free kernel.", stats.waiting),
        "nb2svc_pool_saturation": (
            "Busy kernels plus waiting requests, over pool size (scale out above 1).",
            (stats.busy + stats.waiting) / stats.size,
        ),
    }
    for name, (help_text, value) in gauges.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
    lines += [
        "# HELP nb2svc_kernel_replacements_total Kernels replaced after dying or wedging.",
        "# TYPE nb2svc_kernel_replacements_total counter",
        f"nb2svc_kernel_replacements_total {stats.replaced}",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["ApiService", "add_endpoint", "create_app"]
