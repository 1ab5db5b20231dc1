"""A WSGI answer that tells its caller when the server is done with it.

PEP 3333: the server calls the body's ``close()`` after the last byte is sent, or when
the client left. Wrapping a body in :class:`ClosingBody` runs a callback exactly then,
once: ``--reload`` counts a request as in flight until that moment, and tracing ends a
request's span at its last byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator


class ClosingBody:
    """``body``, whose ``close()`` (if any) runs first, then ``finished``, once."""

    def __init__(self, body: Iterable[bytes], finished: Callable[[], None]) -> None:
        self._body = body
        self._finished: Callable[[], None] | None = finished

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            finished, self._finished = self._finished, None
            if finished is not None:
                finished()


__all__ = ["ClosingBody"]
