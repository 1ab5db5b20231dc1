"""An ended stream interrupts its cell until it stops, and never once the lease is over.

A mechanism test of :class:`OutputStream` in this process (gevent greenlets, no server):
the "kernel" is a stand-in that counts interrupts, and the cell is a greenlet that prints
past the buffer limit, then runs on until the interrupt it is told to lose has passed, as
a SIGINT landing between ipykernel's code and the cell's is lost.
"""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from nb2svc.runtime.http_api import streaming
from nb2svc.runtime.http_api.streaming import BUFFER_LIMIT, OutputStream


class CountingKernel:
    """Counts interrupts; the cell stops only at the ``stops_at``-th (the ones before are lost)."""

    def __init__(self, stops_at: int) -> None:
        self.interrupts = 0
        self.stops_at = stops_at
        self.stopped = gevent.event.Event()

    def interrupt(self) -> None:
        self.interrupts += 1
        if self.interrupts >= self.stops_at:
            self.stopped.set()


def flood(kernel: CountingKernel) -> Any:
    def run(on_output: Any, on_kernel: Any) -> dict[str, Any] | None:
        on_kernel(kernel)
        chunk = "x" * (1 << 20)
        for _ in range(BUFFER_LIMIT // len(chunk) + 2):  # past the limit: the stream ends
            on_output("stream", {"name": "stdout", "text": chunk})
        kernel.stopped.wait(30)  # the cell runs on until an interrupt reaches it
        return {"error": "KeyboardInterrupt", "message": ""}

    return run


@pytest.mark.parametrize("stops_at", [1, 2, 3])
def test_an_overflowed_stream_interrupts_its_cell_until_it_stops(
    monkeypatch: pytest.MonkeyPatch, stops_at: int
) -> None:
    monkeypatch.setattr(streaming, "INTERRUPT_AGAIN", 0.05)
    kernel = CountingKernel(stops_at)
    stream = OutputStream(flood(kernel), sse=False)
    body = b"".join(stream)  # the server's side: reads until the stream ends
    assert b"error: ClientTooSlow" in body
    assert kernel.stopped.wait(10)
    gevent.sleep(0.2)  # several INTERRUPT_AGAIN periods: no interrupt after the cell stopped
    assert kernel.interrupts == stops_at


def test_interrupts_stop_at_the_bound_when_the_cell_never_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "INTERRUPT_AGAIN", 0.02)
    kernel = CountingKernel(stops_at=10**6)
    stream = OutputStream(flood(kernel), sse=False)
    assert b"error: ClientTooSlow" in b"".join(stream)
    gevent.sleep(0.5)
    assert kernel.interrupts == streaming.INTERRUPTS  # then --request-timeout is what ends it
    kernel.stopped.set()
