"""``nb2svc serve TARGET --get PATH``: one GET against the service, its body on stdout, then exit.

A smoke test for CI and for trying a notebook, as ``datasette --get``: exit 0 when the
answer is 2xx, 1 otherwise (its status line goes to stderr), 2 for a usage or compile error.

Not in-process, unlike datasette's. The API-mode app only works inside a gunicorn worker
of this design: its kernel pool needs gevent's monkey-patching applied before
``threading``, ``subprocess``, zmq and jupyter_client are first imported (RUNTIME-NOTES: a
late patch hangs or breaks ``Popen``), and this CLI process has imported ``threading`` and
more by the time an option is parsed; the worker's lifecycle (one greenlet for kernel
starts and stops, the ``worker_exit`` shutdown, the reaper's records) is wired to
gunicorn's hooks. So the service runs as ``nb2svc serve`` on a free loopback port for the
one request (:func:`~nb2svc.endpoint_tests.local_service`, as ``nb2svc test`` does) and
is drained and stopped after it: real kernels, the same code path as production, no
orphaned process.
"""

from __future__ import annotations

import http.client
import sys
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from urllib.parse import urlsplit

import click

#: Seconds the service may take to be ready (its kernels started and their setup run).
START_TIMEOUT = 120.0


def check_get_path(path: str) -> str:
    """A request target for ``--get``: an absolute path, optionally with a query string."""
    if not path.startswith("/") or path.startswith("//") or any(c.isspace() for c in path):
        raise click.UsageError(f"--get takes a path such as /hello/world, got {path!r}")
    return path


def get_once(serve_args: Sequence[str], env: Mapping[str, str], path: str, token: str) -> int:
    """Serve with ``serve_args`` and ``env``, send ``GET path`` (with ``token``), write the
    body to stdout; returns the exit code (0 for 2xx, else 1)."""
    from nb2svc.endpoint_tests import ServiceFailed, local_service

    try:
        with local_service(list(serve_args), env=env, timeout=START_TIMEOUT) as base:
            status, reason, body = _get(base, path, token)
    except ServiceFailed as exc:
        raise click.ClickException(str(exc)) from None
    sys.stdout.buffer.write(body)
    sys.stdout.flush()
    if 200 <= status < 300:
        return 0
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else reason
    click.echo(f"GET {path}: {status} {phrase}", err=True)
    return 1


def _get(base: str, path: str, token: str) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=None)
    try:
        connection.request("GET", path, headers={"Authorization": f"token {token}"} if token else {})
        response = connection.getresponse()
        return response.status, response.reason, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise click.ClickException(f"GET {path}: {exc}") from None
    finally:
        connection.close()


__all__ = ["START_TIMEOUT", "check_get_path", "get_once"]
