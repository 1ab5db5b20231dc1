"""Logging in Jupyter's format (``[I 2026-11-25 06:00:00.000 nb2svc] ...``) or JSON lines.

Query-string tokens are redacted from every message, whichever logger wrote it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from nb2svc.config import Settings

TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"']+")


def redact(text: str) -> str:
    return TOKEN_IN_QUERY.sub(r"\1[secret]", text)


class JupyterFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        head = f"[{record.levelname[:1]} {stamp}.{int(record.msecs):03d} nb2svc]"
        text = f"{head} {redact(record.getMessage())}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def _formatter_path(settings: Settings) -> str:
    return "nb2svc.runtime.logs." + ("JsonFormatter" if settings.log_format == "json" else "JupyterFormatter")


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """A dictConfig for gunicorn and nb2svc loggers, to stderr."""
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"nb2svc": {"()": _formatter_path(settings)}},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "nb2svc", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "nb2svc": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": level, "handlers": ["console"], "propagate": False},
        },
    }


def install_access_log(app: Any) -> None:
    """One INFO line per request (``GET /hello/x 200 3.1ms``), tokens redacted.

    Written here rather than by gunicorn, whose gevent-websocket handler logs nothing.
    """
    from flask import g, request

    access = logging.getLogger("nb2svc")

    @app.before_request
    def _start_timer() -> None:
        g.nb2svc_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Any) -> Any:
        if access.isEnabledFor(logging.INFO):
            started = g.get("nb2svc_started")
            took = f" {(time.perf_counter() - started) * 1000:.1f}ms" if started else ""
            path = request.full_path if request.query_string else request.path
            access.info("%s %s %s%s", request.method, path, response.status_code, took)
        return response
