"""Logging in Jupyter's format (``[I 2026-11-25 06:00:00.000 nb2svc] ...``) or JSON lines.

A JSON line carries, beside ``time``, ``level``, ``logger`` and ``message``, the record's
structured fields (:data:`FIELDS`) as keys of their own: the request log gives
``method``, ``path``, ``route``, ``status``, ``duration_ms``, ``bytes`` (sent, headers
included, as nginx's ``$bytes_sent``) and ``request_id``; a failed cell adds ``notebook``
and ``cells``. A log collector then filters on them without parsing the message.
Loggers pass them as ``extra``.

Tokens are redacted from every line, whichever logger wrote it (gunicorn's, gevent's
malformed-request lines, exception tracebacks): a query parameter whose name, once
percent-decoded and in any case, is ``token`` (``?token=``, ``?%74oken=``, ``?TOKEN=``),
and the server's own token wherever it appears. The token is known to the worker's
runtime, which hands its :class:`Redactor` to the formatters of the server's loggers
(:func:`use_redactor`) and to gevent's error stream: nothing here is module state.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from nb2svc.config import Settings

#: Structured fields a record may carry (``log.info(..., extra={...})``), written as JSON keys.
FIELDS = (
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "bytes",
    "request_id",
    "trace_id",
    "notebook",
    "cells",
)

#: Environ keys set per request: its id (by the worker's handler), the route the app
#: matched with its mount (``/orders/:id``), and a callable the handler gives the status
#: and the seconds to the answer's last byte (the app's metrics).
REQUEST_ID_KEY = "nb2svc.request_id"
ROUTE_KEY = "nb2svc.route"
OBSERVER_KEY = "nb2svc.observe"
#: The request's trace id, when tracing is on (:mod:`nb2svc.runtime.tracing`).
TRACE_ID_KEY = "nb2svc.trace_id"

QUERY_PARAMETER = re.compile(r"([?&;])([^=&;\s\"'?]+)=([^&;\s\"']*)")
#: Secrets shorter than this are not searched for in free text (they would mangle it).
MIN_SECRET = 6
#: The loggers whose formatters redact the worker's secrets (see :func:`gunicorn_logconfig`).
REDACTING_LOGGERS = ("nb2svc", "gunicorn.error", "gunicorn.access", "")


def _parameter(match: re.Match[str]) -> str:
    if unquote_plus(match.group(2)).strip().lower() != "token":
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}=[secret]"


#: Terminal colour codes (IPython colours its tracebacks): a log file wants plain text.
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return ANSI.sub("", text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without ``?token=`` values and without any of ``secrets``."""
    text = QUERY_PARAMETER.sub(_parameter, text)
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return text


class Redactor:
    """Redacts ``?token=`` values and the secrets it was given (the server's token)."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, value: str) -> None:
        """Redact ``value`` wherever it appears (unless it is too short to search for)."""
        if len(value) >= MIN_SECRET:
            self.secrets.add(value)

    def __call__(self, text: str) -> str:
        return redact(text, self.secrets)


class _RedactingFormatter(logging.Formatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redactor = Redactor()


def use_redactor(redactor: Redactor) -> None:
    """Make the formatters of the server's loggers redact with ``redactor`` (the worker's)."""
    for name in REDACTING_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler.formatter, _RedactingFormatter):
                handler.formatter.redactor = redactor


class JupyterFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        head = f"[{record.levelname[:1]} {stamp}.{int(record.msecs):03d} nb2svc]"
        text = f"{head} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.redactor(text)


class JsonFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redactor(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                payload[name] = self.redactor(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["exception"] = self.redactor(self.formatException(record.exc_info))
        return json.dumps(payload)


class BootNoiseFilter(logging.Filter):
    """Drops gunicorn's own lines about a worker that could not boot.

    Such a worker already logged why (one line, "the service cannot start: ..."); the
    master's "Worker (pid:N) exited with code 3", "Shutting down: Master" and "Reason:
    Worker failed to boot." would only repeat that something failed, and the CLI closes
    with one line of its own.
    """

    BOOT_CODES = (3, 4)  # gunicorn's WORKER_BOOT_ERROR and APP_LOAD_ERROR

    def filter(self, record: logging.LogRecord) -> bool:
        message, args = record.msg, record.args
        if message == "Worker (pid:%s) exited with code %s." and isinstance(args, tuple):
            return args[-1] not in self.BOOT_CODES
        if message == "Reason: %s" and isinstance(args, tuple):
            return args[-1] not in ("Worker failed to boot.", "App failed to load.")
        return not (message == "Shutting down: %s" and record.levelno >= logging.ERROR)


def _formatter_path(settings: Settings) -> str:
    return "nb2svc.runtime.logs." + ("JsonFormatter" if settings.log_format == "json" else "JupyterFormatter")


def gunicorn_logconfig(settings: Settings) -> dict[str, Any]:
    """A dictConfig for gunicorn and nb2svc loggers, to stderr."""
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"nb2svc": {"()": _formatter_path(settings)}},
        "filters": {"boot": {"()": "nb2svc.runtime.logs.BootNoiseFilter"}},
        "root": {"level": "WARNING", "handlers": ["console"]},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "nb2svc", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "nb2svc": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.error": {
                "level": level,
                "handlers": ["console"],
                "propagate": False,
                "filters": ["boot"],
            },
            "gunicorn.access": {"level": level, "handlers": ["console"], "propagate": False},
        },
    }


class RedactingStream:
    """A text stream that redacts what it writes (gevent's hub prints errors to stderr)."""

    def __init__(self, stream: Any, redactor: Redactor) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        return self._stream.write(self._redactor(text))

    def flush(self) -> None:
        self._stream.flush()
