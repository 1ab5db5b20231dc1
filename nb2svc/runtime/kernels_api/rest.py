"""Kernel mode's Flask app: the Jupyter Server kernels REST API and the channels websocket.

Paths, shapes and status codes follow Jupyter Server 2 / Kernel Gateway 3
(``jupyter-websocket`` mode), under ``--base-url``:

======================================  ===============================================
``GET /api``                            ``{"version": ...}``
``GET /api/status``, ``/api/me``        as Jupyter Server (:mod:`.server_info`)
``GET /api/kernelspecs``                ``{"default": name, "kernelspecs": {name: {name, spec, resources}}}``
``GET /api/kernelspecs/{name}``         one spec; 404 if unknown
``GET /kernelspecs/{name}/{file}``      a spec's resource (logos); 404 outside its directory
``GET /api/kernels``                    kernel models; 403 with ``--no-list-kernels``
``POST /api/kernels``                   body ``{"name", "env"}`` (both optional): 201 + model;
                                        400 bad body or unknown spec, 403 over ``--max-kernels``
``GET|DELETE /api/kernels/{id}``        model / 204; 404 if unknown
``POST /api/kernels/{id}/interrupt``    204
``POST /api/kernels/{id}/restart``      200 + model (state is lost)
``GET /api/kernels/{id}/channels``      the websocket (:mod:`.channels`)
``GET|POST /api/sessions``              list (403 with ``--no-list-kernels``) / create: 201
``GET|PATCH|DELETE /api/sessions/{id}`` model / update / 204 (shuts its kernel down)
``GET /_api/health/live|ready``         no auth; ready once prespawned and warm kernels are up
``GET /_api/metrics``                   Prometheus text (:mod:`.health`), token required
``GET /public/{path}``                  with ``--static-path``, its files, no token
                                        (:mod:`nb2svc.runtime.static_files`): a web page
                                        served with the kernels it starts
======================================  ===============================================

Errors are JSON ``{"error", "message", "reason"}`` (``reason`` as Kernel Gateway names it).
A kernel model is ``{id, name, last_activity, execution_state, connections}``.
"""

from __future__ import annotations

import json
import logging
import socket
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask, Response, request, send_from_directory

from nb2svc._version import __version__
from nb2svc.config import Settings
from nb2svc.runtime.auth import configured_token, json_error
from nb2svc.runtime.kernel import KernelDied, KernelStartError
from nb2svc.runtime.kernels_api import kernelspecs
from nb2svc.runtime.kernels_api.channels import ChannelsConnection
from nb2svc.runtime.kernels_api.cluster import Cluster
from nb2svc.runtime.kernels_api.forward import forward_http, forward_request, forward_websocket, was_forwarded
from nb2svc.runtime.kernels_api.health import kernel_metrics, readiness
from nb2svc.runtime.kernels_api.manager import (
    KernelLimitReached,
    KernelNotFound,
    KernelRegistry,
    UnknownKernelSpec,
)
from nb2svc.runtime.kernels_api.replicas import ReplicaBook
from nb2svc.runtime.kernels_api.server_info import install_server_info
from nb2svc.runtime.kernels_api.sessions import SessionNotFound, SessionRegistry
from nb2svc.runtime.kernels_api.wire import V1_PROTOCOL
from nb2svc.runtime.static_files import install_static_files, serves_static_file
from nb2svc.runtime.store import StoreUnavailable, open_store
from nb2svc.runtime.webapp import base_path, create_webapp
from nb2svc.runtime.worker_runtime import WorkerRuntime

if TYPE_CHECKING:
    from nb2svc.plan import ServePlan

log = logging.getLogger("nb2svc")

#: The Jupyter Server REST API generation whose paths and shapes this app implements.
API_VERSION = "2.0.0"
EXTENSION = "nb2svc.kernels"


def error(status: int, message: str) -> Response:
    """A JSON error in the shared shape, plus Kernel Gateway's ``reason``."""
    phrase = HTTPStatus(status).phrase
    return json_error(status, phrase.replace(" ", ""), message, reason=phrase)


class KernelModeApp(Flask):
    """Flask plus the two hooks our websocket handler asks the WSGI app for."""

    def app_protocol(self, path: str) -> str | None:
        """gevent-websocket echoes this subprotocol when the client offered it."""
        return V1_PROTOCOL if path.endswith("/channels") else None

    def refuse_websocket(self, environ: dict[str, Any]) -> Response | None:
        """The HTTP answer to a websocket upgrade that must not happen (401, 404), if any.

        Called by :class:`~.worker.KernelModeHandler` *before* the handshake, so a client
        with a bad token or an unknown kernel gets a real HTTP status, as from Jupyter Server.
        """
        with self.request_context(environ):
            rv: Any = self.preprocess_request()  # the token check of install_auth
            if rv is None and request.routing_exception is not None:
                rv = self.handle_user_exception(request.routing_exception)
            if rv is None:
                registry: KernelRegistry = self.extensions[EXTENSION]
                kernel_id = (request.view_args or {}).get("kernel_id")
                try:
                    if (
                        kernel_id not in registry.kernels
                        and _owner_elsewhere(registry.book, kernel_id) is None
                    ):
                        rv = error(404, f"Kernel does not exist: {kernel_id}")
                except StoreUnavailable as exc:
                    log.warning("the kernel registry's store did not answer: %s", exc)
                    rv = error(503, "the kernel registry's store is unavailable; retry shortly")
            if rv is None:
                return None
            return self.process_response(self.make_response(rv))


def create_app(plan: ServePlan, runtime: WorkerRuntime) -> KernelModeApp:
    """The kernel-mode app of ``plan`` on the shared skeleton (:mod:`nb2svc.runtime.webapp`:
    CORS, origin check, token, JSON errors, health, metrics); starts prespawned and warm
    kernels in the background. The registry is the runtime's supervisor: it stops on the
    worker's exit and closes its websockets when the worker drains."""
    settings = plan.settings
    book = _replica_book(settings, runtime)
    registry = KernelRegistry(
        settings, plan.seed, plan.kernels, runtime.kernel_host, runtime.kernel_supervisor, book=book
    )
    sessions = SessionRegistry(
        registry, book, shutdown_kernel=lambda kernel_id: _shutdown_anywhere(registry, kernel_id)
    )
    app = create_webapp(
        "nb2svc.kernels",
        settings,
        readiness=lambda: readiness(registry),
        metrics=lambda: kernel_metrics(registry),
        metrics_page=runtime.metrics.page,
        public=(lambda _path: serves_static_file()) if settings.static_path else None,
        check_origin=True,
        app_class=KernelModeApp,
    )
    app.extensions[EXTENSION] = registry
    base = app.config["NB2SVC_BASE"]
    _install_errors(app)
    _install_kernel_routes(app, registry, settings, base)
    _install_session_routes(app, sessions, settings, base)
    _install_misc_routes(app, registry, base)
    install_server_info(app, registry, base)
    install_static_files(app, settings, base)
    if book is not None:
        book.start(registry)
        runtime.on_exit(book.stop)  # exit hooks run newest first: after the kernels are withdrawn
    runtime.supervise(registry, registry.shutdown_all)
    runtime.on_drain(registry.close_connections)
    registry.start()
    gevent.spawn(_announce_ready, registry, settings)
    return app


def _replica_book(settings: Settings, runtime: WorkerRuntime) -> ReplicaBook | None:
    """With a shared ``--store``: this replica's place in the kernel registry every replica
    shares (:mod:`.replicas`); without one, ``None`` (every kernel lives in this worker)."""
    if not settings.store:
        return None
    store = open_store(settings.store, settings.store_password_file)
    runtime.on_exit(store.close)  # the last exit hook to run
    cluster = Cluster(store, advertised_url(settings), settings.replica_lease, settings.max_kernels)
    return ReplicaBook(cluster)


def advertised_url(settings: Settings) -> str:
    """Where other replicas reach this one: ``--advertise-url``, else the bound address
    (this host's address when bound to every interface). Scheme, host and port only."""
    if settings.advertise_url:
        return settings.advertise_url  # already scheme://host[:port] (config.normalize_advertise_url)
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostbyname(socket.gethostname())
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}"


def _owner_elsewhere(book: ReplicaBook | None, kernel_id: str | None) -> str | None:
    """The URL of the live replica that owns ``kernel_id``, when it is not this one and the
    request did not come from another replica already."""
    if book is None or kernel_id is None or was_forwarded():
        return None
    return book.owner_url(kernel_id)


def _shutdown_anywhere(registry: KernelRegistry, kernel_id: str) -> None:
    """Shut a kernel down here, or ask its owner to; :class:`KernelNotFound` if none has it."""
    if kernel_id in registry.kernels or registry.book is None:
        registry.shutdown_kernel(kernel_id)
        return
    owner = _owner_elsewhere(registry.book, kernel_id)
    if owner is None:
        raise KernelNotFound(kernel_id)
    path = f"{base_path(registry.settings)}/api/kernels/{kernel_id}"
    answer = forward_http(owner, configured_token(registry.settings), "DELETE", path)
    if answer.status_code == 404:
        raise KernelNotFound(kernel_id)


def _announce_ready(registry: KernelRegistry, settings: Settings) -> None:
    while not registry.ready:
        gevent.sleep(0.05)
    log.info(
        "ready: %d kernels running, %d warm, default kernel spec %s, serving %sapi/kernels (Ctrl-C to quit)",
        len(registry.kernels),
        registry.warm.stats().idle,
        registry.default_name,
        settings.url,
    )


def _json_body() -> dict[str, Any] | None:
    """The request's JSON object, ``None`` when there is no body; 400 for anything else."""
    data = request.get_data(cache=True)
    if not data.strip():
        return None
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise _Abort(error(400, f"the request body is not valid JSON: {exc}")) from None
    except RecursionError:
        raise _Abort(error(400, "the request body is JSON nested too deeply")) from None
    if not isinstance(body, dict):
        raise _Abort(error(400, "the request body must be a JSON object"))
    return body


def _string_field(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise _Abort(error(400, f"{key!r} must be a string"))
    return value


def _env_field(body: dict[str, Any]) -> dict[str, str]:
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise _Abort(error(400, "'env' must be an object of string values"))
    return env


class _Abort(Exception):
    """Answer with ``response`` now (a bad request body)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def _install_errors(app: Flask) -> None:
    @app.errorhandler(_Abort)
    def _abort(exc: _Abort) -> Response:
        return exc.response

    @app.errorhandler(KernelNotFound)
    def _no_kernel(exc: KernelNotFound) -> Response:
        return error(404, f"Kernel does not exist: {exc.args[0]}")

    @app.errorhandler(SessionNotFound)
    def _no_session(exc: SessionNotFound) -> Response:
        return error(404, f"Session not found: {exc.args[0]}")

    @app.errorhandler(KernelLimitReached)
    def _limit(exc: KernelLimitReached) -> Response:
        return error(403, str(exc))

    @app.errorhandler(UnknownKernelSpec)
    def _unknown_spec(exc: UnknownKernelSpec) -> Response:
        return error(400, str(exc))

    @app.errorhandler(KernelStartError)
    def _start_failed(exc: KernelStartError) -> Response:
        return error(500, str(exc))

    @app.errorhandler(KernelDied)
    def _dead(exc: KernelDied) -> Response:
        return error(409, str(exc))

    @app.errorhandler(StoreUnavailable)
    def _no_store(exc: StoreUnavailable) -> Response:
        log.warning("the kernel registry's store did not answer: %s", exc)
        return error(503, "the kernel registry's store is unavailable; retry shortly")


def _forbidden_listing() -> Response:
    return error(403, "listing kernels and sessions is disabled on this server (--no-list-kernels)")


def _install_kernel_routes(app: Flask, registry: KernelRegistry, settings: Settings, base: str) -> None:
    book = registry.book
    token = configured_token(settings)

    def elsewhere(kernel_id: str) -> Response | None:
        """The owner's answer for a kernel another replica owns; ``None`` for one of ours."""
        if kernel_id in registry.kernels:
            return None
        owner = _owner_elsewhere(book, kernel_id)
        if owner is None:
            raise KernelNotFound(kernel_id)
        return forward_request(owner, token)

    @app.get(base + "/api/kernels")
    def list_kernels() -> Any:
        if not settings.list_kernels:
            return _forbidden_listing()
        return book.models() if book is not None else registry.models()

    @app.post(base + "/api/kernels")
    def start_kernel() -> Any:
        body = _json_body() or {}
        managed = registry.start_kernel(_string_field(body, "name"), _env_field(body))
        return managed.model(), 201, {"Location": f"{base}/api/kernels/{managed.id}"}

    @app.get(base + "/api/kernels/<kernel_id>")
    def get_kernel(kernel_id: str) -> Any:
        return elsewhere(kernel_id) or registry.get(kernel_id).model()

    @app.delete(base + "/api/kernels/<kernel_id>")
    def delete_kernel(kernel_id: str) -> Any:
        forwarded = elsewhere(kernel_id)
        if forwarded is not None:
            return forwarded
        registry.shutdown_kernel(kernel_id)
        return Response(status=204)

    @app.post(base + "/api/kernels/<kernel_id>/interrupt")
    def interrupt_kernel(kernel_id: str) -> Any:
        forwarded = elsewhere(kernel_id)
        if forwarded is not None:
            return forwarded
        registry.get(kernel_id).interrupt()
        return Response(status=204)

    @app.post(base + "/api/kernels/<kernel_id>/restart")
    def restart_kernel(kernel_id: str) -> Any:
        forwarded = elsewhere(kernel_id)
        if forwarded is not None:
            return forwarded
        managed = registry.get(kernel_id)
        try:
            managed.restart()
        except Exception as exc:
            log.error("restarting kernel %s failed: %s", kernel_id, exc)
            return error(500, f"Exception restarting kernel: {exc}")
        return managed.model()

    @app.route(base + "/api/kernels/<kernel_id>/channels", websocket=True)
    def channels(kernel_id: str) -> Any:
        ws = request.environ.get("wsgi.websocket")
        if ws is None:
            return error(400, "this endpoint is a websocket")
        offered = {p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")}
        if kernel_id not in registry.kernels:
            owner = _owner_elsewhere(book, kernel_id)
            if owner is None:
                raise KernelNotFound(kernel_id)
            log.info("relaying kernel %s's websocket to its owner %s", kernel_id, owner)
            forward_websocket(ws, owner, token, V1_PROTOCOL if V1_PROTOCOL in offered else None)
            return Response(status=204)  # never sent, as below
        managed = registry.get(kernel_id)
        ChannelsConnection(ws, managed, request.args.get("session_id"), V1_PROTOCOL in offered).serve()
        return Response(status=204)  # never sent: the connection was a websocket


def _install_session_routes(app: Flask, sessions: SessionRegistry, settings: Settings, base: str) -> None:
    registry = sessions.kernels

    @app.get(base + "/api/sessions")
    def list_sessions() -> Any:
        if not settings.list_kernels:
            return _forbidden_listing()
        return sessions.models()

    @app.post(base + "/api/sessions")
    def create_session() -> Any:
        body = _json_body()
        if body is None:
            return error(400, "No JSON data provided")
        notebook = body.get("notebook")
        if isinstance(notebook, dict) and "path" in notebook:  # the deprecated shape
            body = {**body, "path": notebook["path"], "type": body.get("type", "notebook")}
        path, kind = _string_field(body, "path"), _string_field(body, "type")
        if path is None:
            return error(400, "Missing field in JSON data: path")
        if kind is None:
            return error(400, "Missing field in JSON data: type")
        kernel = body.get("kernel") or {}
        if not isinstance(kernel, dict):
            return error(400, "'kernel' must be an object")
        record = sessions.find(path)
        if record is None:
            try:
                record = sessions.create(
                    path,
                    kind,
                    name=_string_field(body, "name"),
                    kernel_name=_string_field(kernel, "name"),
                    kernel_id=_string_field(kernel, "id"),
                )
            except UnknownKernelSpec as exc:  # Jupyter Server answers 501 here
                return json_error(501, "NotImplemented", str(exc), short_message="kernel spec not found")
            except KernelNotFound as exc:
                return error(400, f"No such kernel: {exc.args[0]}")
        location = f"{base}/api/sessions/{record.id}"
        return sessions.model(record), 201, {"Location": location}

    @app.get(base + "/api/sessions/<session_id>")
    def get_session(session_id: str) -> Any:
        return sessions.model(sessions.get(session_id))

    @app.patch(base + "/api/sessions/<session_id>")
    def update_session(session_id: str) -> Any:
        body = _json_body()
        if body is None:
            return error(400, "No JSON data provided")
        before = sessions.get(session_id)
        changes: dict[str, Any] = {k: _string_field(body, k) for k in ("path", "name", "type") if k in body}
        kernel = body.get("kernel")
        if isinstance(kernel, dict):
            if kernel.get("id") is not None:
                if not sessions.kernel_exists(kernel["id"]):
                    return error(400, f"No such kernel: {kernel['id']}")
                changes["kernel_id"] = kernel["id"]
            elif kernel.get("name") is not None:
                try:
                    changes["kernel_id"] = registry.start_kernel(_string_field(kernel, "name")).id
                except (UnknownKernelSpec, KernelStartError) as exc:
                    return json_error(501, "NotImplemented", str(exc), short_message="error starting kernel")
        return sessions.model(sessions.update(before.id, changes))

    @app.delete(base + "/api/sessions/<session_id>")
    def delete_session(session_id: str) -> Any:
        sessions.delete(session_id)
        return Response(status=204)


def _install_misc_routes(app: Flask, registry: KernelRegistry, base: str) -> None:
    @app.get(base + "/api")
    def api_version() -> Any:
        return {"version": API_VERSION, "nb2svc": __version__}

    @app.get(base + "/api/kernelspecs")
    def list_kernelspecs() -> Any:
        return kernelspecs.all_models(registry.specs, registry.default_name, base)

    @app.get(base + "/api/kernelspecs/<name>")
    def get_kernelspec(name: str) -> Any:
        model = kernelspecs.one_model(registry.specs, name, base)
        if model is None:
            return error(404, f"Kernel spec {name} not found")
        return model

    @app.get(base + "/kernelspecs/<name>/<path:resource>")
    def kernelspec_resource(name: str, resource: str) -> Any:
        directory = kernelspecs.resource_dir(registry.specs, name)
        if directory is None:
            return error(404, f"Kernel spec {name} not found")
        return send_from_directory(directory, resource)  # werkzeug's safe_join: no traversal
