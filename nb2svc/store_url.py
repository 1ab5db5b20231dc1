"""The rules of a ``--store`` URL, shared by the CLI, the runtime and the bundle compiler.

A store URL may carry a password (``redis://:PASSWORD@host:6379/0``), so it is printed
only through :func:`redact`. Kept apart from :mod:`nb2svc.runtime.store` so that the
compiler (which writes the Kubernetes hint for the store's Secret) and the settings
table can use it without importing the runtime.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("redis", "rediss")


def redact(url: str) -> str:
    """``url`` with any password (and user name) replaced by ``***``; safe to print."""
    if not url:
        return "embedded"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an unreadable store URL)"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = "***@" + host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def normalize_store_url(value: str) -> str:
    """Check a ``--store`` value's form (``ValueError`` with a redacted reason)."""
    text = value.strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"not a store URL: {redact(text)}") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError(
            f"must be redis://host:port/db or rediss://host:port/db (empty: embedded), got {redact(text)}"
        )
    return text


__all__ = ["SCHEMES", "normalize_store_url", "redact"]
