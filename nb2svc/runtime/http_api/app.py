"""API mode's app: the shared skeleton plus one Flask blueprint per mounted notebook.

:func:`create_api_app` stands on :func:`nb2svc.runtime.webapp.create_webapp` (CORS,
token, JSON errors, health, metrics), adds the service routes of
:mod:`nb2svc.runtime.http_api.routes` (OpenAPI, docs page, jobs, Kernel Gateway's extras)
and mounts each notebook as a blueprint at its prefix with its own
:class:`~nb2svc.runtime.http_api.service.ApiService` and warm pool, so adding a mount
touches nothing else. A generated bundle ``app.py`` declares the endpoint routes itself
(``register_routes=False``) to show them.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response

from nb2svc.compiler.mounts import check_public_paths
from nb2svc.config import Settings
from nb2svc.runtime.auth import configured_token
from nb2svc.runtime.http_api.health import api_metrics, readiness
from nb2svc.runtime.http_api.jobs import JobLimits, JobStore
from nb2svc.runtime.http_api.kg_compat import keep_encoded_slashes
from nb2svc.runtime.http_api.routes import (
    claimed_paths,
    install_docs_routes,
    install_job_routes,
    install_kg_extras,
    public_paths,
)
from nb2svc.runtime.http_api.service import ApiService
from nb2svc.runtime.store import open_store
from nb2svc.runtime.webapp import base_path, create_webapp
from nb2svc.runtime.worker_runtime import WorkerRuntime

if TYPE_CHECKING:
    from nb2svc.plan import ServePlan

log = logging.getLogger("nb2svc")


def create_api_app(
    plan: ServePlan,
    runtime: WorkerRuntime,
    *,
    register_routes: bool = True,
    exit_on_failure: bool = True,
) -> Flask:
    """The API-mode app of ``plan``'s notebooks, each with its own settings, all with the
    worker's one job store (``runtime.jobs``). Called by :func:`nb2svc.runtime.entry.build_app`, which
    registers the services' shutdown once; with ``exit_on_failure=False`` (a ``--reload``
    candidate) a pool that cannot start only sets ``pool.failure`` instead of stopping the
    worker. With ``--static-path``, a mount or endpoint under ``/public`` raises
    :class:`~nb2svc.compiler.CompileError` before any kernel starts.
    """
    settings = plan.settings
    if settings.static_path:
        check_public_paths([mounted.mount for mounted in plan.mounts])  # nothing has started
    services: list[ApiService] = []
    supervisor = runtime.kernel_supervisor  # the worker's: every notebook's pool is one of its pools
    jobs = runtime.jobs(settings, job_store)

    def all_ready() -> None:  # one "ready" line once every notebook's pool is warm
        if all(service.pool.ready for service in services):
            log.info(
                "ready: %d notebooks, %d kernels warm (worker %d), serving %s (Ctrl-C to quit)",
                len(services),
                sum(service.pool.policy.minimum for service in services),
                os.getpid(),
                settings.url,
            )

    services += [
        ApiService(
            mounted.mount.spec,
            mounted.settings,
            cwd=str(mounted.cwd) if mounted.cwd else None,
            exit_on_failure=exit_on_failure,
            prefix=mounted.mount.prefix,
            on_ready=all_ready if plan.several else None,
            supervisor=supervisor,
            jobs=jobs,
            host=runtime.kernel_host,
        )
        for mounted in plan.mounts
    ]
    specs = [mounted.mount for mounted in plan.mounts]
    base = base_path(settings)
    app = create_webapp(
        specs[0].name if len(specs) == 1 else "nb2svc",
        settings,
        readiness=lambda: readiness(services),
        metrics=lambda: api_metrics(services),
        metrics_page=runtime.metrics.page,
        public=public_paths(base, specs, static=bool(settings.static_path)),
        claimed=claimed_paths(specs),
    )
    app.wsgi_app = keep_encoded_slashes(app.wsgi_app)  # type: ignore[method-assign]
    app.extensions["nb2svc"] = services[0]
    app.extensions["nb2svc.services"] = services
    install_docs_routes(app, specs, base, token=bool(configured_token(settings)))
    install_job_routes(app, jobs, base)
    install_kg_extras(app, settings, services[0], base)
    if register_routes:
        for service in services:
            blueprint = Blueprint(
                f"notebook_{len(app.blueprints)}", __name__, url_prefix=base + service.prefix or None
            )
            for index in range(len(service.spec.endpoints)):
                _add_route(blueprint, service, index)
            app.register_blueprint(blueprint)
    for service in services:
        service.tracer = app.extensions["nb2svc.tracing"].tracer
        service.start()
    return app


def job_store(settings: Settings) -> JobStore:
    """The app's jobs in the store ``--store`` names (opened, not yet contacted: a Redis that
    is down makes job routes 503, never the worker fail)."""
    store = open_store(settings.store, settings.store_password_file)
    limits = JobLimits(
        per_client=settings.max_jobs_per_client,
        ttl=settings.job_ttl,
        result_max_bytes=settings.job_result_max_bytes,
        lease=settings.job_lease,
        max_run=settings.queue_timeout + settings.request_timeout + settings.job_lease,
    )
    return JobStore(store, limits)


def add_endpoint(app: Flask, index: int) -> None:
    """Register endpoint ``index`` of the app's (single) service as a Flask route (generated
    ``app.py`` files declare their routes this way)."""
    service: ApiService = app.extensions["nb2svc"]
    _add_route(app, service, index, prefix=app.config["NB2SVC_BASE"])


def _add_route(target: Flask | Blueprint, service: ApiService, index: int, prefix: str = "") -> None:
    endpoint = service.spec.endpoints[index]

    def view(**path_params: str) -> Response:
        return service.handle(index, path_params)

    rule = prefix + endpoint.flask_rule
    if rule == "/" and isinstance(target, Blueprint) and target.url_prefix:
        rule = ""  # the mount's own path (/orders), as its OpenAPI says, not /orders/
    target.add_url_rule(
        rule,
        endpoint=f"endpoint_{index}",
        view_func=view,
        methods=[endpoint.method],
    )


__all__ = ["add_endpoint", "create_api_app", "job_store"]
