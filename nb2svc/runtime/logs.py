"""Logging in Jupyter's format (``[I 2026-11-25 06:00:00.000 nb2svc] ...``) or JSON lines.

Tokens are redacted from every line, whichever logger wrote it (gunicorn's, gevent's
malformed-request lines, exception tracebacks): a query parameter whose name, once
percent-decoded and in any case, is ``token`` (``?token=``, ``?%74oken=``, ``?TOKEN=``),
and the server's own token wherever it appears (:func:`add_secret`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import unquote_plus

from nb2svc.config import Settings

QUERY_PARAMETER = re.compile(r"([?&;])([^=&;\s\"'?]+)=([^&;\s\"']*)")
#: Secrets shorter than this are not searched for in free text (they would mangle it).
MIN_SECRET = 6
_secrets: set[str] = set()


def add_secret(value: str) -> None:
    """Redact ``value`` (the server's token) wherever it appears in a log line."""
    if len(value) >= MIN_SECRET:
        _secrets.add(value)


def _parameter(match: re.Match[str]) -> str:
    if unquote_plus(match.group(2)).strip().lower() != "token":
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}=[secret]"


def redact(text: str) -> str:
    text = QUERY_PARAMETER.sub(_parameter, text)
    for secret in _secrets:
        text = text.replace(secret, "[secret]")
    return text


class JupyterFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        head = f"[{record.levelname[:1]} {stamp}.{int(record.msecs):03d} nb2svc]"
        text = f"{head} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


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
            payload["exception"] = redact(self.formatException(record.exc_info))
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


class RedactingStream:
    """A text stream that redacts what it writes (gevent's hub prints errors to stderr)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def flush(self) -> None:
        self._stream.flush()
