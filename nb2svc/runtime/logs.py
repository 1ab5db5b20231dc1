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
