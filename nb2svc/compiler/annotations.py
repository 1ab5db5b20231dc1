"""Parse the annotation on the first line of a code cell.

Grammar (Kernel Gateway compatible; ``#`` stands for the language's comment prefix)::

    # METHOD /path                 an endpoint cell
    # ResponseInfo METHOD /path    the cell that prints {"status": ..., "headers": ...}

    METHOD   GET | POST | PUT | DELETE | PATCH   (upper case, as Kernel Gateway requires)
    /path    "/" or "/" segment ("/" segment)*
    segment  literal: letters, digits, - . _ ~ ! $ & ' ( ) * + , ; = @ and %XX escapes
             or :name, a parameter, name = [A-Za-z_][A-Za-z0-9_]*

Whitespace around the tokens is free, but at least one space must follow the prefix.

Kernel Gateway silently treats a malformed annotation as setup code, so a typo turns an
endpoint into code that runs once at start-up. Here a line that is clearly an attempt at
an annotation but is malformed raises :class:`AnnotationError` with a hint. A line is an
attempt when, after the prefix, it is:

- ``ResponseInfo`` (any case) followed by anything;
- an upper-case method alone, followed by one word (``# GET hello``), or followed by
  a ``/path`` and anything;
- exactly two words, a method-like word and a ``/path`` (``# get /x``, ``# FETCH /x``).

Everything else is an ordinary comment: ``# Load the data``, ``#!/usr/bin/env``,
``# GET the rows we need``, ``# NOTE /tmp is wiped at start``.

Decisions that differ from Kernel Gateway, which takes the rest of the line literally:
a trailing slash (``/a/``) is an error rather than a route nobody can guess, and so is
text after the path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

METHODS: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "PATCH")
RESPONSE_INFO = "ResponseInfo"

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LITERAL_CHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=@]|%[0-9A-Fa-f]{2}")
_LITERAL_CHARS_HINT = "use letters, digits, -._~!$&'()*+,;=@ or %XX escapes"


@dataclass(frozen=True)
class Annotation:
    """A parsed annotation: ``kind`` is ``"endpoint"`` or ``"response_info"``; ``params``
    lists the ``:name`` parameters in path order."""

    kind: Literal["endpoint", "response_info"]
    method: str
    path: str
    params: tuple[str, ...]


class AnnotationError(ValueError):
    """A first line that tries to be an annotation but is malformed; ``hint`` says what to write.

    ``fixed_path`` is the corrected path when one can be guessed, so that callers can
    phrase the hint as a whole annotation.
    """

    def __init__(self, message: str, hint: str = "", fixed_path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = f"write {fixed_path}" if fixed_path and not hint else hint
        self.fixed_path = fixed_path


def parse_annotation(line: str, prefix: str) -> Annotation | None:
    """Parse one line: an :class:`Annotation`, ``None`` for anything that is not one.

    Raises :class:`AnnotationError` for a malformed annotation (see the module doc).
    """
    stripped = line.strip()
    if not stripped.startswith(prefix):
        return None
    rest = stripped[len(prefix) :]
    words = rest.split()
    if not words:
        return None

    def fail(problem: str, suggestion: str = "") -> AnnotationError:
        hint = f"write `{prefix} {suggestion}`" if suggestion else ""
        return AnnotationError(f"malformed annotation `{stripped}`: {problem}", hint)

    if words[0].lower() == RESPONSE_INFO.lower():
        kind: Literal["endpoint", "response_info"] = "response_info"
        if words[0] != RESPONSE_INFO:
            raise fail(
                f"write {RESPONSE_INFO} with this exact case",
                f"{RESPONSE_INFO} {' '.join(words[1:]) or 'GET /path'}",
            )
        method_and_path = words[1:]
        lead = f"{RESPONSE_INFO} "
    elif _is_endpoint_attempt(words):
        kind, method_and_path, lead = "endpoint", words, ""
    else:
        return None

    if not method_and_path:
        raise fail("missing method and path", f"{lead}GET /path")
    method, *path_words = method_and_path
    if method.startswith("/"):
        raise fail("missing method before the path", f"{lead}GET {method}")
    if method not in METHODS:
        if method.upper() in METHODS:
            raise fail(
                f"methods are upper case: {method.upper()}",
                f"{lead}{method.upper()} {' '.join(path_words) or '/path'}",
            )
        raise fail(
            f"unknown method {method!r} (use one of {', '.join(METHODS)})",
            f"{lead}GET {' '.join(path_words) or '/path'}",
        )
    if not path_words:
        raise fail("missing path after the method", f"{lead}{method} /path")
    path, *extra = path_words
    if not path.startswith("/"):
        raise fail("the path must start with /", f"{lead}{method} /{path}")
    if extra:
        raise AnnotationError(
            f"malformed annotation `{stripped}`: unexpected text after the path: {' '.join(extra)!r}",
            "the annotation line holds only the method and the path; put comments on the next line",
        )
    if not rest[:1].isspace():
        raise fail(f"put a space after {prefix!r}", f"{lead}{method} {path}")
    try:
        params = parse_path(path)
    except AnnotationError as exc:
        if exc.fixed_path:
            raise fail(exc.message, f"{lead}{method} {exc.fixed_path}") from None
        raise AnnotationError(f"malformed annotation `{stripped}`: {exc.message}", exc.hint) from None
    return Annotation(kind, method, path, params)


def _is_endpoint_attempt(words: list[str]) -> bool:
    """Whether ``words`` (after the prefix) look like a try at ``METHOD /path``."""
    first = words[0]
    followed_by_path = len(words) > 1 and words[1].startswith("/")
    if first in METHODS:
        return len(words) <= 2 or followed_by_path
    # `# NOTE /tmp is wiped` is prose; `# FETCH /x` and `# get /x` are typos.
    method_like = first.upper() in METHODS or (first.isalpha() and first.isupper())
    return method_like and followed_by_path and len(words) == 2


def parse_path(path: str) -> tuple[str, ...]:
    """Validate a route path and return its parameter names in order.

    Raises :class:`AnnotationError` for an empty segment, a trailing slash, a bad or
    repeated parameter name, or a character that is not URL-safe.
    """
    if path == "/":
        return ()
    if not path.startswith("/"):
        raise AnnotationError("the path must start with /", fixed_path=f"/{path}")
    if "//" in path:
        raise AnnotationError(
            f"empty segment in {path}", fixed_path=re.sub("/+", "/", path).rstrip("/") or "/"
        )
    if path.endswith("/"):
        raise AnnotationError(f"trailing slash in {path}", fixed_path=path.rstrip("/"))
    params: list[str] = []
    for segment in path[1:].split("/"):
        if segment.startswith(":"):
            params.append(_check_param(segment[1:], path, params))
        else:
            _check_literal(segment, path)
    return tuple(params)


def _check_param(name: str, path: str, seen: list[str]) -> str:
    if not name:
        raise AnnotationError(f"empty parameter name in {path}", "name it, as in /items/:id")
    if not _PARAM_NAME.match(name):
        raise AnnotationError(
            f"bad parameter name :{name} in {path}",
            "a name starts with a letter or _ and has only letters, digits and _, as in :item_id",
        )
    if name in seen:
        raise AnnotationError(
            f"parameter :{name} appears twice in {path}", "give each parameter its own name"
        )
    return name


def _check_literal(segment: str, path: str) -> None:
    if segment in (".", ".."):
        raise AnnotationError(f"dot segment {segment!r} in {path}", "clients normalise it away; remove it")
    pos = 0
    while pos < len(segment):
        match = _LITERAL_CHAR.match(segment, pos)
        if match is None:
            char = segment[pos]
            if char == "?":
                hint = "the query string is not part of the route; read it from REQUEST['args']"
            elif char in "{}<>":
                hint = "write parameters as :name, as in /items/:id"
            else:
                hint = _LITERAL_CHARS_HINT
            raise AnnotationError(f"invalid character {char!r} in {path}", hint)
        pos = match.end()


def route_pattern(path: str) -> tuple[str, ...]:
    """The path's segments with every parameter reduced to ``:``.

    Two paths with the same pattern match the same requests, whatever their parameter
    names (``/items/:id`` and ``/items/:key`` are one route).
    """
    return tuple(":" if s.startswith(":") else s for s in path.split("/") if s)
