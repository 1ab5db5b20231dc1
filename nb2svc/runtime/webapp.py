"""The app skeleton both modes stand on: one place for what every nb2svc server does.

:func:`create_webapp` returns a Flask app that already has, in this order:

0. for a tokenless server on a loopback address, the DNS-rebinding check of the ``Host``
   header (:func:`~nb2svc.runtime.auth.install_host_check`), before anything else,
1. CORS (:func:`~nb2svc.runtime.auth.install_cors`; nothing unless ``--allow-origin``),
2. with ``check_origin`` (kernel mode), Jupyter Server's origin check for websocket
   upgrades and state-changing requests, before auth so a hostile page learns nothing,
3. token auth on every path but the two health checks and what ``public`` admits,
4. JSON errors in the one shape (``{"error", "message", "reason"}``) for every HTTP error
   (a 405 names the allowed methods in ``Allow``) and for anything unexpected (a 500 that
   points at the server log, never a traceback to the client),
5. ``GET /_api/health/live`` (the server answers), ``GET /_api/health/ready`` (200 or 503
   with the mode's own state) and, when the mode gives ``metrics``, ``GET /_api/metrics``
   (Prometheus text, token required: the mode's families and the worker process's own,
   :mod:`nb2svc.runtime.process_metrics`; written by ``metrics_page``, the worker
   runtime's page that adds several workers up: :mod:`nb2svc.runtime.shared_metrics`,
   which is handed the families function, since it renders them under its lock; a 503 if
   that lock stays taken),
6. with ``--metrics-port``, a scrape-only port: a request that arrived on it may only read
   the metrics and the health checks, and needs no token (Prometheus' pod annotations
   carry no credential); everything else there is a 404. gunicorn listens on both ports,
   so the same worker answers either,
7. the conventional names of those three (:data:`ALIASES`: Kubernetes' ``/livez`` and
   ``/readyz``, Prometheus' ``/metrics``), each with its original's token rule, except
   where the mode's own routes claim the path (a notebook's ``GET /metrics`` stays the
   notebook's, and then needs the token like any endpoint),

all under ``--base-url``. A mode adds only its own routes and domain errors: API mode one
blueprint per mounted notebook (:mod:`nb2svc.runtime.http_api`), kernel mode the Jupyter
Server REST API and the channels websocket (:mod:`nb2svc.runtime.kernels_api`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from nb2svc.config import Settings
from nb2svc.runtime.auth import (
    configured_token,
    health_paths,
    install_auth,
    install_cors,
    install_host_check,
    install_origin_check,
    json_error,
)
from nb2svc.runtime.metrics import CONTENT_TYPE, Family, Histogram, exposition
from nb2svc.runtime.process_metrics import process_families
from nb2svc.runtime.retired_metrics import MetricsBusy
from nb2svc.runtime.tracing import Tracing

log = logging.getLogger("nb2svc")

#: ``readiness()`` answers whether the server may take traffic, and the body that says why.
Readiness = Callable[[], tuple[bool, dict[str, Any]]]

AppT = TypeVar("AppT", bound=Flask)


#: Where an app keeps its ``metrics`` families function (``app.extensions``): what the
#: worker publishes for the other workers' scrapes.
METRICS_EXTENSION = "nb2svc.metrics"

#: Conventional paths (under ``--base-url``) and the ``/_api/...`` path each one also answers.
ALIASES = (("/livez", "/_api/health/live"), ("/readyz", "/_api/health/ready"), ("/metrics", "/_api/metrics"))


def base_path(settings: Settings) -> str:
    """``--base-url`` as a route prefix: ``""`` for ``/``, else without the trailing slash."""
    return settings.base_url.rstrip("/")


def create_webapp(
    name: str,
    settings: Settings,
    *,
    readiness: Readiness,
    metrics: Callable[[], Iterable[Family | Histogram]] | None = None,
    metrics_page: Callable[[Callable[[], Iterable[Family | Histogram]]], str] | None = None,
    public: Callable[[str], bool] | None = None,
    claimed: Callable[[str], bool] | None = None,
    check_origin: bool = False,
    app_class: type[AppT] = Flask,  # type: ignore[assignment]
) -> AppT:
    """A Flask app (of ``app_class``) with the skeleton of the module doc installed.

    ``public(path)`` widens the token exemption beyond the two health paths (API mode's
    docs page); ``claimed(path)`` says whether the mode's own routes answer ``path`` (relative
    to ``--base-url``), which keeps :data:`ALIASES` off it; ``app.config["NB2SVC_BASE"]``
    holds the route prefix for the mode's routes.
    """
    # root_path given: Flask would otherwise look ``name`` up as a module, and a folder of that
    # name in the working directory (``nb2svc``, a notebook's stem) would be found instead
    app = app_class(name, root_path=os.path.dirname(os.path.abspath(__file__)))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_size
    base = base_path(settings)
    app.config["NB2SVC_BASE"] = base
    token = configured_token(settings)
    aliases = {
        base + alias: base + original
        for alias, original in ALIASES
        if not (claimed and claimed(alias)) and (metrics is not None or alias != "/metrics")
    }
    install_host_check(app, settings, token)
    scrape_only = _install_scrape_port(app, settings, base, aliases)
    install_cors(app, settings)
    if check_origin:
        install_origin_check(app, settings)
    health = health_paths(base, aliases)
    open_path = (lambda path: health(path) or public(path)) if public else health
    install_auth(app, settings, is_exempt=lambda path: scrape_only() or open_path(path), token=token)
    install_json_errors(app)
    if metrics is not None:
        metrics = _with_process(metrics)
        app.extensions[METRICS_EXTENSION] = metrics
    _install_health(app, base, readiness, metrics, metrics_page, aliases)
    tracing = app.extensions["nb2svc.tracing"] = Tracing(name)  # flushed by the worker's exit hooks
    app.wsgi_app = tracing.wrap(app.wsgi_app)  # type: ignore[method-assign]  # itself when off
    return app


def _with_process(
    metrics: Callable[[], Iterable[Family | Histogram]],
) -> Callable[[], list[Family | Histogram]]:
    """The mode's families, then the worker process's own."""
    return lambda: [*metrics(), *process_families()]


def _install_scrape_port(
    app: Flask, settings: Settings, base: str, aliases: dict[str, str]
) -> Callable[[], bool]:
    """Confine requests on ``--metrics-port`` to the metrics and health paths (and their
    installed ``aliases``); returns the test "did this request arrive on the metrics port"
    (such a request needs no token)."""
    port = str(settings.metrics_port) if settings.metrics_port else None
    allowed = {base + "/_api/metrics", base + "/_api/health/live", base + "/_api/health/ready", *aliases}

    def scrape_only() -> bool:
        return port is not None and request.environ.get("SERVER_PORT") == port

    @app.before_request
    def _confine() -> Response | None:
        if scrape_only() and (request.path not in allowed or request.method not in ("GET", "HEAD")):
            return json_error(404, "NotFound", "the metrics port serves only /_api/metrics and health checks")
        return None

    return scrape_only


def install_json_errors(app: Flask) -> None:
    """Every HTTP error and every unexpected exception as the one JSON error shape."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = json_error(exc.code or 500, exc.name.replace(" ", ""), exc.description or exc.name)
        valid = getattr(exc, "valid_methods", None)
        if exc.code == 405 and valid:
            response.headers["Allow"] = ", ".join(sorted(valid))
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return json_error(500, "InternalServerError", "unexpected server error; see the server log")


def _install_health(
    app: Flask,
    base: str,
    readiness: Readiness,
    metrics: Callable[[], Iterable[Family | Histogram]] | None,
    metrics_page: Callable[[Callable[[], Iterable[Family | Histogram]]], str] | None,
    aliases: dict[str, str],
) -> None:
    def live() -> Any:
        return {"status": "ok"}

    def ready() -> Any:
        is_ready, body = readiness()
        return body, (200 if is_ready else 503)

    views: dict[str, Callable[[], Any]] = {
        base + "/_api/health/live": live,
        base + "/_api/health/ready": ready,
    }
    if metrics is not None:

        def scrape() -> Any:
            try:
                text = metrics_page(metrics) if metrics_page else exposition(metrics())
                return Response(text, content_type=CONTENT_TYPE)
            except MetricsBusy as exc:  # better a failed scrape than a sum missing workers
                return json_error(503, "ServiceUnavailable", str(exc))

        views[base + "/_api/metrics"] = scrape
    for path, view in views.items():
        app.add_url_rule(path, "nb2svc" + path.replace("/", "_"), view, methods=["GET"])
    for alias, original in aliases.items():
        app.add_url_rule(alias, "nb2svc" + alias.replace("/", "_"), views[original], methods=["GET"])


__all__ = ["ALIASES", "METRICS_EXTENSION", "Readiness", "base_path", "create_webapp", "install_json_errors"]
