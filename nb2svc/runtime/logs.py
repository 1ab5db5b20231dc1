"""Logging in Jupyter's format (``[I 2026-11-25 06:00:00.000 nb2svc] ...``) or JSON lines.

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

QUERY_PARAMETER = re.compile(r"([?&;])([^=&;\s\"'?]+)=([^&;\s\"']*)")
#: Secrets shorter than this are not searched for in free text (they would mangle it).
MIN_SECRET = 6
#: The loggers whose formatters redact the worker's secrets (see :func:`gunicorn_logconfig`).
REDACTING_LOGGERS = ("nb2svc", "gunicorn.error", "gunicorn.access", "")


def _parameter(match: re.Match[str]) -> str:
    if unquote_plus(match.group(2)).strip().lower() != "token":
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}=[secret]"


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
        if record.exc_info:
            payload["exception"] = self.redactor(self.formatException(record.exc_info))
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

    def __init__(self, stream: Any, redactor: Redactor) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        return self._stream.write(self._redactor(text))

    def flush(self) -> None:
        self._stream.flush()
