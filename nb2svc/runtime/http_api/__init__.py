"""API mode: notebook endpoints on warm kernel pools, on the shared app skeleton.

- :mod:`.app`: :func:`create_api_app` (one notebook or several, each a blueprint at its
  prefix, from a serve plan), on :mod:`nb2svc.runtime.webapp`; :func:`add_endpoint` for
  generated ``app.py`` files that declare their routes.
- :mod:`.service`: :class:`ApiService`, one notebook's pool and the request path
  (REQUEST, lease, execute, ResponseInfo, response; streams and jobs).
- :mod:`.routes`: ``/_api/spec/swagger.json`` (Kernel Gateway compatible),
  ``/openapi.json``, ``/_api/docs``, ``/_api/jobs/{id}``, ``/_api/source``, ``/public/``.
- :mod:`.request`, :mod:`.responses`, :mod:`.kg_compat`: HTTP to ``REQUEST`` and results
  to HTTP answers; :mod:`.streaming`, :mod:`.jobs`: the two other response kinds;
  :mod:`.docs_page`: the docs page; :mod:`.reload`: ``--reload``'s version swap.
- :mod:`.health`: ``/_api/health/ready`` (503 until every pool is warm) and
  ``/_api/metrics`` (Prometheus text, per worker).
"""

from __future__ import annotations

from importlib import import_module
from types import MappingProxyType
from typing import Any

__all__ = ["ApiService", "add_endpoint", "create_api_app"]

# Resolved on first use, not at import: importing a light module of this package must not
# import jupyter_client, zmq or gevent, which gunicorn's master must not do before the
# workers fork (RUNTIME-NOTES: Popen breaks in the worker).
_HOMES = MappingProxyType(
    {
        "ApiService": "nb2svc.runtime.http_api.service",
        "add_endpoint": "nb2svc.runtime.http_api.app",
        "create_api_app": "nb2svc.runtime.http_api.app",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
