"""``--static-path DIR``: DIR's files at ``GET /public/<path>`` without a token, in both modes.

Kernel Gateway serves them so (a browser loads a page and its scripts before those scripts
can send a token); in kernel mode that is how a web page and the kernels it starts share
one origin, so the page needs neither CORS nor ``--allow-origin``
(``examples/kernel-page/``).

Two rules keep the exemption narrow:

- it is the static route's, not the path prefix's (:func:`serves_static_file` asks Flask
  which endpoint the request routed to), so anything else that could answer under
  ``/public`` still needs the token;
- a path that leaves DIR (``..``, absolute, encoded, or a symlink pointing out of DIR) or
  names no file is a 404 (:func:`static_file`).
"""

from __future__ import annotations

import os

from flask import Flask, Response, request, send_file
from werkzeug.security import safe_join

from nb2svc.compiler.mounts import PUBLIC_PREFIX
from nb2svc.config import Settings
from nb2svc.runtime.auth import json_error

#: The Flask endpoint name of the ``--static-path`` route: the only thing under
#: ``/public/`` that skips the token.
PUBLIC_FILES = "nb2svc_public_files"


def install_static_files(app: Flask, settings: Settings, base: str) -> None:
    """``GET {base}/public/<path>``: the files below ``--static-path``; nothing when it is unset."""
    if not settings.static_path:
        return
    folder = os.path.realpath(settings.static_path)

    @app.get(base + PUBLIC_PREFIX + "/<path:name>", endpoint=PUBLIC_FILES)
    def _public(name: str) -> Response:
        path = static_file(folder, name)
        if path is None:
            return json_error(404, "NotFound", "no such file")
        return send_file(path, max_age=0)


def serves_static_file() -> bool:
    """Whether the current request routed to the ``--static-path`` route (then it needs no token)."""
    return request.endpoint == PUBLIC_FILES


def static_file(folder: str, name: str) -> str | None:
    """The file ``name`` names below ``folder`` (a real path), or ``None``: a path that leaves
    it (``..``, absolute) or a symlink that points out of it is not there, nor is a directory.
    The check is on the resolved path, so a link inside DIR to ``/etc`` serves nothing."""
    joined = safe_join(folder, name)
    if joined is None:
        return None
    real = os.path.realpath(joined)
    if not real.startswith(folder + os.sep) or not os.path.isfile(real):
        return None
    return real


__all__ = ["PUBLIC_FILES", "install_static_files", "serves_static_file", "static_file"]
