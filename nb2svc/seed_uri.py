"""A notebook-less start, the Kernel Gateway way: mode and notebook from the environment.

A container configured for Kernel Gateway runs ``nb2svc serve`` with no arguments:

- the mode: ``NB2SVC_MODE`` (``api`` or ``kernels``), else ``KG_API``
  (``kernel_gateway.notebook_http`` → API mode, ``kernel_gateway.jupyter_websocket`` →
  kernel mode, the personalities' short names too); a ``--kernels`` flag wins;
- the notebook of API mode: ``NB2SVC_NOTEBOOK``, else ``KG_SEED_URI`` (a ``TARGET``
  argument wins); in kernel mode ``KG_SEED_URI`` stays the seed notebook (``--seed``);
- either may be a path, a ``file://`` URI or an ``http(s)://`` URL. A URL is fetched once
  at start, at most ``NB2SVC_SEED_MAX_BYTES`` bytes (default 16 MiB) within
  ``NB2SVC_SEED_TIMEOUT`` seconds (default 30) for the whole fetch, however slowly the
  server trickles its headers or body, into a private temporary directory; a
  failure is one clear line and exit status 1 (2 for a local file that is not there).
"""

from __future__ import annotations

import http.client
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

KG_APIS = {
    "kernel_gateway.notebook_http": "api",
    "notebook_http": "api",
    "notebook-http": "api",
    "kernel_gateway.jupyter_websocket": "kernels",
    "jupyter_websocket": "kernels",
    "jupyter-websocket": "kernels",
}
MAX_BYTES = 16 * 1024 * 1024
TIMEOUT = 30.0


class SeedError(Exception):
    """The notebook named by a URI cannot be had (operational failure: exit 1)."""


class SeedMissing(SeedError):
    """A local path or ``file://`` URI that names no file (a usage error: exit 2)."""


def mode_from_env(environ: Mapping[str, str]) -> str | None:
    """``api``, ``kernels`` or ``None`` (not set); ``ValueError`` for an unknown value."""
    mode = environ.get("NB2SVC_MODE", "").strip().lower()
    if mode:
        if mode not in ("api", "kernels"):
            raise ValueError(f"NB2SVC_MODE: {mode!r} is not one of api, kernels")
        return mode
    api = environ.get("KG_API", "").strip()
    if not api:
        return None
    if api not in KG_APIS:
        raise ValueError(
            f"KG_API: {api!r} is not kernel_gateway.notebook_http or kernel_gateway.jupyter_websocket"
        )
    return KG_APIS[api]


def notebook_uri_from_env(environ: Mapping[str, str]) -> str | None:
    """API mode's notebook when no TARGET is given."""
    return environ.get("NB2SVC_NOTEBOOK") or environ.get("KG_SEED_URI") or None


def _limits(environ: Mapping[str, str]) -> tuple[int, float]:
    try:
        max_bytes = int(environ.get("NB2SVC_SEED_MAX_BYTES", MAX_BYTES))
        timeout = float(environ.get("NB2SVC_SEED_TIMEOUT", TIMEOUT))
    except ValueError as exc:
        raise SeedError(f"NB2SVC_SEED_MAX_BYTES / NB2SVC_SEED_TIMEOUT: {exc}") from None
    return max_bytes, timeout


def _download(url: str, environ: Mapping[str, str]) -> Path:
    """Fetch ``url`` within ``NB2SVC_SEED_TIMEOUT`` seconds for the whole fetch.

    A socket timeout bounds each read only, so a server that trickles its headers or body
    a byte at a time (or a name that resolves slowly) would never hit it: the fetch runs in
    a daemon thread and the caller waits at most the timeout for it, then gives up (the
    thread is left to its socket timeout; the CLI exits with the error anyway).
    """
    max_bytes, timeout = _limits(environ)
    name = Path(unquote(urlsplit(url).path)).name or "notebook.ipynb"
    outcome: dict[str, Any] = {}
    fetcher = threading.Thread(
        target=_fetch, args=(url, max_bytes, timeout, outcome), name="nb2svc-seed-fetch", daemon=True
    )
    fetcher.start()
    fetcher.join(timeout)
    if fetcher.is_alive():  # left behind: closing its response would wait for its read
        raise SeedError(_too_slow(url, timeout))
    if "error" in outcome:
        raise outcome["error"]
    directory = Path(tempfile.mkdtemp(prefix="nb2svc-seed-"))
    path = directory / (name if name.endswith(".ipynb") else name + ".ipynb")
    path.write_bytes(outcome["data"])
    return path


def _too_slow(url: str, timeout: float) -> str:
    return f"{url}: no complete answer within {timeout:g}s (NB2SVC_SEED_TIMEOUT)"


def _fetch(url: str, max_bytes: int, timeout: float, outcome: dict[str, Any]) -> None:
    """The fetch itself (in :func:`_download`'s thread): ``outcome["data"]`` or ``["error"]``."""
    request = urllib.request.Request(url, headers={"User-Agent": "nb2svc", "Accept": "application/json, */*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
            chunks, size = [], 0
            while chunk := response.read(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise SeedError(
                        f"{url}: larger than {max_bytes} bytes (NB2SVC_SEED_MAX_BYTES); refusing to read on"
                    )
                chunks.append(chunk)
        outcome["data"] = b"".join(chunks)
    except SeedError as exc:
        outcome["error"] = exc
    except urllib.error.HTTPError as exc:
        outcome["error"] = SeedError(f"{url}: the server answered {exc.code} {exc.reason}")
    except (TimeoutError, OSError, ValueError, http.client.HTTPException) as exc:
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            outcome["error"] = SeedError(_too_slow(url, timeout))
        else:
            outcome["error"] = SeedError(f"{url}: cannot fetch it: {getattr(exc, 'reason', exc)}")


def resolve(uri: str, environ: Mapping[str, str] | None = None) -> Path:
    """A local path for ``uri`` (a path, ``file://`` or ``http(s)://``), fetching a URL."""
    environ = os.environ if environ is None else environ
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        return _download(uri, environ)
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise SeedError(f"{uri}: a file:// URI must name a local file (no host)")
        path = Path(unquote(parts.path))
    elif scheme and len(scheme) > 1:
        raise SeedError(f"{uri}: unsupported scheme {scheme!r} (use a path, file:// or http(s)://)")
    else:
        path = Path(uri)
    if not path.is_file():
        raise SeedMissing(f"{uri}: no such file")
    return path
