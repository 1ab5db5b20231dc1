"""``GET /api/status`` and ``GET /api/me``, answered as Jupyter Server answers them.

Browser clients probe these before anything else: thebe-core reports "Server not
reachable" when ``/api/status`` is missing, and JupyterLab's ``UserManager`` reads
``/api/me``. Both need the token, like every other route of kernel mode.

- ``/api/status``: ``{"connections", "kernels", "last_activity", "started"}`` (sorted keys,
  ISO 8601 UTC times; ``last_activity`` is the latest of the server start and every
  kernel's activity).
- ``/api/me``: ``{"identity": {...}, "permissions": {...}}``. There is one shared token and
  no user accounts, so the identity is Kernel Gateway's anonymous user; the token grants
  everything, so each requested permission (``?permissions={"resource": ["action"]}``) is
  granted in full, plus ``updatable_fields: []``. A malformed ``permissions`` is a 400.
"""

from __future__ import annotations

import json
import time
from types import MappingProxyType
from typing import Any

from flask import Flask, Response, request

from nb2svc.runtime.auth import json_error
from nb2svc.runtime.kernels_api.managed import isoformat
from nb2svc.runtime.kernels_api.manager import KernelRegistry

#: Kernel Gateway's anonymous user (one shared token identifies no one).
IDENTITY = MappingProxyType(
    {
        "username": "anonymous",
        "name": "Anonymous",
        "display_name": "Anonymous",
        "initials": "An",
        "avatar_url": None,
        "color": None,
    }
)


def _permissions(raw: str) -> dict[str, list[str]] | None:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for resource, actions in value.items():
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            return None
        value[resource] = list(actions)
    return value


def install_server_info(app: Flask, registry: KernelRegistry, base: str) -> None:
    started = time.time()

    @app.get(base + "/api/status")
    def api_status() -> Response:
        kernels = list(registry.kernels.values())
        last = max([started, *(k.last_activity for k in kernels)])
        model = {
            "connections": sum(len(k.clients) for k in kernels),
            "kernels": len(kernels),
            "last_activity": isoformat(last),
            "started": isoformat(started),
        }
        return Response(json.dumps(model, sort_keys=True), content_type="application/json")

    @app.get(base + "/api/me")
    def api_me() -> Any:
        raw = request.args.get("permissions", "")
        permissions = _permissions(raw)
        if permissions is None:
            return json_error(
                400,
                "BadRequest",
                f'permissions should be a JSON dict of {{"resource": ["action",]}}, got {raw!r}',
            )
        return {"identity": dict(IDENTITY), "permissions": {**permissions, "updatable_fields": []}}
