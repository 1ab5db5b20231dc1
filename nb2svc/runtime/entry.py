"""The one worker entry: a WSGI app from a :class:`~nb2svc.plan.ServePlan`.

Every way nb2svc serves goes through :func:`build_app`: one notebook, several, a
bundle (its generated ``app.py`` calls it), ``--reload`` and kernel mode. It makes the
worker's :class:`~nb2svc.runtime.worker_runtime.WorkerRuntime`, builds the mode's app on
it and registers the runtime on the app once. :func:`load_app` is what
:class:`~nb2svc.runtime.server.Server` calls in each worker: a bundle's ``app.py`` is
run with the plan ``nb2svc serve`` resolved (as ``PLAN``); anything else is built here.

Imported in the worker only (it imports the modes, hence zmq and gevent).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nb2svc.compiler.mounts import Mount
from nb2svc.runtime.webapp import METRICS_EXTENSION
from nb2svc.runtime.worker_runtime import WorkerRuntime

if TYPE_CHECKING:
    from nb2svc.compiler.spec import ServiceSpec
    from nb2svc.plan import ServePlan

#: The name a bundle's ``app.py`` is imported under, and the global that hands it the plan.
BUNDLE_MODULE = "nb2svc_bundle_app"
PLAN_GLOBAL = "PLAN"


def load_app(plan: ServePlan, early_templates: Mapping[str, Any] | None = None) -> Any:
    """The app of ``plan`` in this worker: its bundle's ``app.py``, or :func:`build_app`
    (with the kernel templates ``nb2svc serve`` started for it: see kernel/early.py)."""
    if plan.bundle is None:
        return build_app(plan, early_templates=early_templates)
    spec = importlib.util.spec_from_file_location(BUNDLE_MODULE, plan.bundle / "app.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{plan.bundle}/app.py cannot be imported")
    module = importlib.util.module_from_spec(spec)
    setattr(module, PLAN_GLOBAL, plan)
    spec.loader.exec_module(module)
    return module.app


def build_app(
    plan: ServePlan, *, register_routes: bool = True, early_templates: Mapping[str, Any] | None = None
) -> Any:
    """The WSGI app of ``plan``, with its worker runtime registered on it.

    A generated ``app.py`` passes ``register_routes=False`` and declares each endpoint
    itself with :meth:`~nb2svc.runtime.http_api.service.ApiService.handle`.
    """
    runtime = WorkerRuntime(plan, early_templates=early_templates)
    if plan.mode == "kernels":
        from nb2svc.runtime.kernels_api.rest import create_app

        app = create_app(plan, runtime)
    elif plan.reload is not None:
        app = _reloading_app(plan, runtime)
    else:
        from nb2svc.runtime.http_api.app import create_api_app

        app = create_api_app(plan, runtime, register_routes=register_routes)
        for service in app.extensions["nb2svc.services"]:
            runtime.supervise(service, service.shutdown)
    if runtime.metrics.source is None:  # a --reload app set its own
        runtime.metrics.source = getattr(app, "extensions", {}).get(METRICS_EXTENSION)
    tracing = getattr(app, "extensions", {}).get("nb2svc.tracing")
    if tracing is not None and tracing.tracer is not None:
        runtime.exit_hooks.add(tracing.shutdown)  # export the spans still buffered
    return runtime.register(app)


def _reloading_app(plan: ServePlan, runtime: WorkerRuntime) -> Any:
    """``--reload``: each version is an API app of the plan's one notebook; the versions
    register no hook of their own: the reloading app stops every live one, once."""
    from nb2svc.runtime.http_api.app import create_api_app
    from nb2svc.runtime.http_api.reload import ReloadingApp

    assert plan.reload is not None
    (mounted,) = plan.mounts
    settings = plan.settings

    def version(spec: ServiceSpec, first: bool) -> Any:
        planned = dataclasses.replace(mounted, mount=Mount(mounted.mount.prefix, spec))
        return create_api_app(dataclasses.replace(plan, mounts=(planned,)), runtime, exit_on_failure=first)

    app = ReloadingApp(
        plan.reload.notebook,
        version,
        extra=plan.reload.extra,
        comment_prefix=plan.reload.comment_prefix,
        cell_parser=settings.cell_parser,
        ready_timeout=settings.kernel_start_timeout + 10,
        drain_timeout=settings.request_timeout + settings.queue_timeout,
        first=mounted.mount.spec,
    )
    runtime.supervise(app, app.shutdown)
    # the worker's shared metrics are the *current* version's: a version warming up or
    # draining beside it is never counted as well
    runtime.metrics.source = lambda: app.current.extensions[METRICS_EXTENSION]()
    return app


__all__ = ["BUNDLE_MODULE", "PLAN_GLOBAL", "build_app", "load_app"]
