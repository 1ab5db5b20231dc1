"""API mode: notebook endpoints on warm kernel pools, on the shared app skeleton.

- :mod:`.app`: :func:`create_app` (one notebook) and :func:`create_mounted_app` (one or
  several, each a blueprint at its prefix), on :mod:`nb2svc.runtime.webapp`;
  :func:`add_endpoint` for generated ``app.py`` files that declare their routes.
- :mod:`.service`: :class:`ApiService`, one notebook's pool and the request path
  (REQUEST, lease, execute, ResponseInfo, response; streams and jobs).
- :mod:`.routes`: ``/_api/spec/swagger.json`` (Kernel Gateway compatible),
  ``/openapi.json``, ``/_api/docs``, ``/_api/jobs/{id}``, ``/_api/source``, ``/public/``.
- :mod:`.health`: ``/_api/health/ready`` (503 until every pool is warm) and
  ``/_api/metrics`` (Prometheus text, per worker).
"""

from __future__ import annotations

from nb2svc.runtime.http_api.app import add_endpoint, create_app, create_mounted_app
from nb2svc.runtime.http_api.service import ApiService

__all__ = ["ApiService", "add_endpoint", "create_app", "create_mounted_app"]
