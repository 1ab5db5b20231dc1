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
- backpressure: at most :data:`BUFFER_LIMIT` bytes wait for a client that reads slower
  than the cell prints (the rest of the output is not kept anywhere else either). Past
  that the cell is interrupted, what waits is dropped and the stream ends with an error
  (pausing the kernel's output instead would make zmq drop messages, the end of the
  execution among them);
- a client that disconnects interrupts the cell, noticed at once even while the cell
  prints nothing: a watcher greenlet waits for the connection to become readable, and a
  read of 0 bytes (peeked, so nothing is consumed) means the client closed it. A stream
  still queued for a kernel when its client leaves does not run: once it gets its kernel
  it gives it straight back (killing the waiting greenlet instead could lose a kernel
  handed to it at that moment).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
from gevent.queue import Queue
from gevent.socket import wait_read

log = logging.getLogger("nb2svc")

EVENT_STREAM = "text/event-stream"
_END = object()
#: Bytes of output that may wait for a slow client before the stream is ended.
BUFFER_LIMIT = 16 * 1024 * 1024


class ClientGone(Exception):
    """The client left before its stream got a kernel: the cell must not run."""


def client_closed(fd: int) -> bool | None:
    """After ``fd`` became readable: ``True`` if the peer closed the connection (or reset
    it), ``False`` if it sent bytes (a pipelined request: undecided), ``None`` if nothing
    is there after all."""
    probe = socket.socket(fileno=os.dup(fd))
    try:
        return probe.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return None
    except OSError:
        return True
    finally:
        probe.close()


def wants_event_stream(accept: str) -> bool:
    return EVENT_STREAM in (accept or "")


def event(name: str, data: str) -> bytes:
    """One server-sent event; multi-line data becomes several ``data:`` lines."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (f"event: {name}\n" if name != "message" else "").encode() + lines.encode() + b"\n"


#: An ended stream's cell is interrupted again every INTERRUPT_AGAIN seconds while it still
#: runs, up to INTERRUPTS times: a SIGINT that lands while ipykernel is between the cell's
#: statements and its own code can be lost (seen under load), and a kernel left running a
#: 64 MiB print holds its pool slot until --request-timeout.
INTERRUPT_AGAIN = 2.0
INTERRUPTS = 3


class OutputStream:
    """Feeds a response body from output messages; ``run`` executes the cell in a greenlet.

    ``run(on_output, on_kernel)`` leases a kernel, executes with ``on_output`` and returns
    ``None`` on success or a JSON-able error body; the kernel is interrupted when the
    client goes away while the cell runs. ``client`` (the connection's socket, if known)
    is watched for that; ``label`` names the request in the log.
    """

    def __init__(
        self,
        run: Callable[[Callable[[str, dict[str, Any]], None], Callable[[Any], None]], dict[str, Any] | None],
        *,
        sse: bool,
        client: socket.socket | None = None,
        label: str = "stream",
    ) -> None:
        self._queue: Queue = Queue()
        self._sse = sse
        self._kernel: Any = None
        self._done = False
        self._gone = False
        self._label = label
        self._buffered = 0  # bytes queued and not yet taken by the server
        self._overflowed = False
        self._finished = gevent.event.Event()  # the cell's run returned (its lease is over)
        self._stopper: Any = None
        self._greenlet = gevent.spawn(self._execute, run)
        self._watcher = gevent.spawn(self._watch, client.fileno()) if client is not None else None

    def _watch(self, fd: int) -> None:
        """Notice the client closing the connection while nothing is written to it."""
        closed: bool | None = None
        while closed is None and not self._done:
            wait_read(fd)
            closed = client_closed(fd)
        if closed and not self._done:
            self._client_gone()

    def _client_gone(self) -> None:
        self._gone = True
        kernel = self._kernel
        doing = "interrupting the cell" if kernel is not None else "not running it"
        log.info("%s: the client left; %s", self._label, doing)
        if kernel is not None:
            self._stop(kernel)
        self._queue.put(_END)  # nobody reads the rest: let the server finish this request now

    def _execute(self, run: Callable[..., dict[str, Any] | None]) -> None:
        def on_kernel(kernel: Any) -> None:
            if self._gone:  # left while queued: give the kernel back without running the cell
                raise ClientGone(self._label)
            self._kernel = kernel

        try:
            error = run(self._on_output, on_kernel)
        except ClientGone:
            error = None
        except Exception as exc:  # never leave the client waiting
            error = {"error": type(exc).__name__, "message": str(exc)}
        self._kernel = None
        self._done = True
        self._finished.set()
        if self._overflowed:
            return  # the error and the end are queued already
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
            self._send(event("message", text.rstrip("\n")) if self._sse else text.encode())
        elif msg_type in ("display_data", "execute_result"):
            data = content.get("data", {})
            if self._sse:
                self._send(event("display", json.dumps(data)))
            elif "text/plain" in data:
                self._send((data["text/plain"] + "\n").encode())

    def _send(self, chunk: bytes) -> None:
        """Queue ``chunk`` for the client, or end the stream if too much already waits."""
        if self._overflowed or self._gone:
            return
        if self._buffered + len(chunk) > BUFFER_LIMIT and self._buffered:
            self._overflow()
            return
        self._buffered += len(chunk)
        self._queue.put(chunk)

    def _overflow(self) -> None:
        self._overflowed = True
        log.warning(
            "%s: the client reads too slowly (over %d bytes of output waiting); ending the stream",
            self._label,
            BUFFER_LIMIT,
        )
        while not self._queue.empty():  # dropped: the client gets the error next
            self._queue.get_nowait()
        self._buffered = 0
        self._queue.put(
            self._error(
                {
                    "error": "ClientTooSlow",
                    "message": f"the client read too slowly: over {BUFFER_LIMIT} bytes of output waited "
                    "for it, so the cell was interrupted and the stream ended",
                }
            )
        )
        self._queue.put(_END)
        kernel = self._kernel
        if kernel is not None:
            self._stop(kernel)

    def _stop(self, kernel: Any) -> None:
        """Stop the cell, once however the stream ended (an overflow is followed by the
        server closing the body, which looks like the client leaving); from a greenlet of
        its own, never the kernel's reader's."""
        if self._stopper is None:
            self._stopper = gevent.spawn(self._stop_cell, kernel)

    def _stop_cell(self, kernel: Any) -> None:
        """Interrupt this stream's cell, and again while it still runs on ``kernel`` (see
        :data:`INTERRUPTS`); never once the lease is over (the kernel may serve another)."""
        for _ in range(INTERRUPTS):
            if self._finished.is_set() or self._kernel is not kernel:
                return
            try:
                kernel.interrupt()
            except Exception:
                log.debug("interrupting %s failed", self._label, exc_info=True)
                return
            if self._finished.wait(INTERRUPT_AGAIN):
                return

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
                self._buffered = max(0, self._buffered - len(item))
                yield item
        finally:
            if self._watcher is not None:  # before the server closes (or reuses) the socket
                self._watcher.kill()
            if not self._done and not self._gone:  # a write failed: the client went away
                self._client_gone()
