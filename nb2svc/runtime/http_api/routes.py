"""The routes an API-mode service adds beside its endpoints, and what they may serve openly.

Documentation (:func:`install_docs_routes`), async jobs (:func:`install_job_routes`) and
Kernel Gateway's opt-in extras (:func:`install_kg_extras`); :func:`public_paths` is the
token exemption of API mode beyond the health checks the skeleton already exempts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, redirect, request, send_file, send_from_directory

from nb2svc.compiler.mounts import Mount
from nb2svc.compiler.openapi import mounted_openapi_document, swagger_document, without_security
from nb2svc.compiler.spec import ServiceSpec
from nb2svc.config import Settings
from nb2svc.runtime.auth import json_error
from nb2svc.runtime.http_api.docs_page import STATIC_DIR as DOCS_STATIC_DIR
from nb2svc.runtime.http_api.docs_page import STATIC_FILES as DOCS_STATIC_FILES
from nb2svc.runtime.http_api.docs_page import render_docs_page
from nb2svc.runtime.http_api.jobs import JobStore
from nb2svc.runtime.http_api.service import ApiService
from nb2svc.runtime.static_files import install_static_files, serves_static_file
from nb2svc.runtime.store import StoreUnavailable
from nb2svc.runtime.tracing import annotate


def claims_root(mounts: Sequence[Mount]) -> bool:
    return any(mount.full_path(ep) == "/" for mount in mounts for ep in mount.spec.endpoints)


def claimed_paths(mounts: Sequence[Mount]) -> Callable[[str], bool]:
    """Whether some endpoint of ``mounts`` (any method) answers a path: a ``:param`` segment
    matches any one segment. Keeps the skeleton's conventional aliases (``/metrics``) off a
    notebook's own routes."""
    patterns = [mount.full_path(ep).strip("/").split("/") for mount in mounts for ep in mount.spec.endpoints]

    def claimed(path: str) -> bool:
        parts = path.strip("/").split("/")
        return any(
            len(pattern) == len(parts)
            and all(p == s or (p.startswith(":") and s) for p, s in zip(pattern, parts, strict=True))
            for pattern in patterns
        )

    return claimed


def public_paths(base: str, mounts: Sequence[Mount], static: bool = False) -> Callable[[str], bool]:
    """What API mode serves without a token beyond the two health checks: the docs page, its static
    files (Swagger UI's, nothing of the service's), when no endpoint claims ``/``, the
    redirect from ``/`` to the docs, and with ``static`` the ``--static-path`` files under
    ``/public/`` (Kernel Gateway serves them without a token too: a browser loads a page
    and its assets before its script can send one). The OpenAPI document, ``/_api/source``
    and every endpoint need the token.

    The ``/public/`` exemption is the static route's, not the path prefix's
    (:func:`~nb2svc.runtime.static_files.serves_static_file`), so whatever else a path under
    ``/public`` could reach (a notebook endpoint or mount that slipped past
    :func:`~nb2svc.compiler.mounts.check_public_paths`) still needs the token."""
    exact = {base + "/_api/docs"} | (set() if claims_root(mounts) else {base + "/", base or "/"})
    docs = base + "/_api/docs/static/"

    def public(path: str) -> bool:
        return path in exact or path.startswith(docs) or (static and serves_static_file())

    return public


def notebook_file(spec: ServiceSpec, cwd: str | Path | None) -> Path | None:
    """The notebook file behind a service: ``spec.notebook`` in its working directory, or a
    bundle's ``notebook.ipynb`` (the source, verbatim); ``None`` when there is none."""
    if cwd is None:
        return None
    for candidate in (Path(cwd) / spec.notebook, Path(cwd) / "notebook.ipynb"):
        if candidate.is_file():
            return candidate
    return None


def install_kg_extras(app: Flask, settings: Settings, service: ApiService, base: str) -> None:
    """Kernel Gateway's opt-in routes: ``/_api/source`` and ``/public/...``.

    ``GET /_api/source`` (``--allow-notebook-download``) answers the notebook file's bytes
    as Kernel Gateway's static file handler does: ``application/octet-stream`` (Python's
    ``mimetypes`` knows no ``.ipynb``), with ``ETag`` and ``Last-Modified``; off, it is a 404.
    It describes the first notebook, as ``/_api/spec/swagger.json`` does.
    ``GET /public/<path>`` (``--static-path DIR``) serves files below DIR, as in kernel mode
    (:mod:`nb2svc.runtime.static_files`).
    """
    if settings.allow_notebook_download:

        @app.get(base + "/_api/source")
        def _source() -> Response:
            path = notebook_file(service.spec, service.recipe.cwd)
            if path is None:
                return json_error(404, "NotFound", f"{service.spec.notebook} is not on this server's disk")
            return send_file(path, mimetype="application/octet-stream", max_age=0)

    install_static_files(app, settings, base)


def install_docs_routes(app: Flask, mounts: Sequence[Mount], base: str, token: bool = True) -> None:
    """``/_api/spec/swagger.json`` (Kernel Gateway's document, of the first notebook),
    ``/openapi.json`` (every mount; without its token scheme when the server has no
    ``token``), the docs page and its static files, and unless an endpoint claims it,
    ``/`` redirecting to the docs (the first URL the banner prints)."""
    first = mounts[0].spec

    @app.get(base + "/_api/spec/swagger.json")
    def _swagger() -> Any:
        return swagger_document(first)  # Kernel Gateway's document describes one notebook

    @app.get(base + "/openapi.json")
    def _openapi() -> Any:
        doc = mounted_openapi_document(mounts, server_url=base or None)
        return doc if token else without_security(doc)

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


def install_job_routes(app: Flask, jobs: JobStore, base: str) -> None:
    """``GET`` and ``DELETE /_api/jobs/{id}`` for jobs of every mounted notebook; jobs live in
    the shared store, so any worker or replica answers. A store that does not answer is a
    503 here, while the synchronous endpoints keep serving. Their spans carry the job's id."""
    tracer = app.extensions["nb2svc.tracing"].tracer

    def unavailable(exc: StoreUnavailable) -> Response:
        response = json_error(503, "ServiceUnavailable", f"the job store is unavailable: {exc}")
        response.headers["Retry-After"] = "1"
        return response

    @app.get(base + "/_api/jobs/<job_id>")
    def _job(job_id: str) -> Response:
        annotate(tracer, "nb2svc.job.id", job_id)
        try:
            job = jobs.get(job_id)
        except StoreUnavailable as exc:
            return unavailable(exc)
        if job is None:
            kept = f"finished jobs are kept {jobs.limits.ttl:g}s"
            return json_error(404, "NotFound", f"no job {job_id} ({kept})")
        record = job.record
        if job.status == "running":
            response = jsonify({"id": job_id, "status": job.status, "endpoint": record["endpoint"]})
            response.headers["Retry-After"] = "1"
            return response
        if job.status == "cancelled":
            return json_error(410, "Gone", f"job {job_id} was cancelled")
        if job.result is None:  # failed: the reason in a JSON error
            response = json_error(
                int(record["code"]), record["error"], record["message"], reason=record["reason"], id=job_id
            )
            response.headers["Nb2svc-Job"] = "failed"
            return response
        status, headers, body = job.result
        answer = Response(body, status=status, headers=headers)
        answer.headers["Nb2svc-Job"] = "done"
        return answer

    @app.delete(base + "/_api/jobs/<job_id>")
    def _cancel_job(job_id: str) -> Response:
        annotate(tracer, "nb2svc.job.id", job_id)
        try:
            known = jobs.cancel(job_id)
        except StoreUnavailable as exc:
            return unavailable(exc)
        if not known:
            return json_error(404, "NotFound", f"no job {job_id}")
        return Response(status=204)


__all__ = [
    "claims_root",
    "install_docs_routes",
    "install_job_routes",
    "install_kg_extras",
    "notebook_file",
    "public_paths",
]
