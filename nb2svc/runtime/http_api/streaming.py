"""Streaming answers: an endpoint's output sent while its cell runs.

An endpoint whose cell metadata says ``"nb2svc": {"response": "stream"}`` answers with
``text/event-stream`` when the client accepts it, else with chunked ``text/plain``:

- each stdout write is sent as it is produced (an event ``data:`` per line of it in an
  event stream; the text itself in plain mode); ``display_data`` and ``execute_result``
  as an event ``display`` with their mime bundle as JSON (plain mode: their
  ``text/plain``); stderr is not sent (it is logged, as for other endpoints);
- the end is an event ``done``; an error in the cell, a timeout or a dead kernel after
  the first byte ends the stream with an event ``error`` carrying the JSON error body
  (plain mode: a last line ``error: …``), since the status line was already sent;
- a client that disconnects interrupts the cell.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.queue import Queue

EVENT_STREAM = "text/event-stream"
_END = object()


def wants_event_stream(accept: str) -> bool:
    return EVENT_STREAM in (accept or "")


def event(name: str, data: str) -> bytes:
    """One server-sent event; multi-line data becomes several ``data:`` lines."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (f"event: {name}\n" if name != "message" else "").encode() + lines.encode() + b"\n"


class OutputStream:
    """Feeds a response body from output messages; ``run`` executes the cell in a greenlet.

    ``run(on_output, on_kernel)`` leases a kernel, executes with ``on_output`` and returns
    ``None`` on success or a JSON-able error body; ``interrupt(kernel)`` is called when
    the client goes away while the cell runs.
    """

    def __init__(
        self,
        run: Callable[[Callable[[str, dict[str, Any]], None], Callable[[Any], None]], dict[str, Any] | None],
        *,
        sse: bool,
    ) -> None:
        self._queue: Queue = Queue()
        self._sse = sse
        self._kernel: Any = None
        self._done = False
        self._greenlet = gevent.spawn(self._execute, run)

    def _execute(self, run: Callable[..., dict[str, Any] | None]) -> None:
        def on_kernel(kernel: Any) -> None:
            self._kernel = kernel

        try:
            error = run(self._on_output, on_kernel)
        except Exception as exc:  # never leave the client waiting
            error = {"error": type(exc).__name__, "message": str(exc)}
        self._kernel = None
        self._done = True
        if error is not None:
            self._queue.put(self._error(error))
        elif self._sse:
            self._queue.put(event("done", ""))
        self._queue.put(_END)

    def _on_output(self, msg_type: str, content: dict[str, Any]) -> None:
        if msg_type == "stream":
            if content.get("name") != "stdout":
                return
            text = content.get("text", "")
            self._queue.put(event("message", text.rstrip("\n")) if self._sse else text.encode())
        elif msg_type in ("display_data", "execute_result"):
            data = content.get("data", {})
            if self._sse:
                self._queue.put(event("display", json.dumps(data)))
            elif "text/plain" in data:
                self._queue.put((data["text/plain"] + "\n").encode())

    def _error(self, body: dict[str, Any]) -> bytes:
        if self._sse:
            return event("error", json.dumps(body))
        return f"error: {body.get('error', 'Error')}: {body.get('message', '')}\n".encode()

    def __iter__(self) -> Iterator[bytes]:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                yield item
        finally:
            if not self._done:  # the client went away while the cell runs
                kernel = self._kernel
                if kernel is not None:
                    try:
                        kernel.interrupt()
                    except Exception:
                        pass
