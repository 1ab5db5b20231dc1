"""A stand-in for the channel layer (:class:`nb2svc.runtime.kernel.channels.Kernel`) in fast
unit tests of what runs on top of it: the executor and the invocation protocol.

It keeps the contract the reader greenlet keeps: ``send`` registers the handler before
anything can arrive and returns a msg_id; the scripted messages are then dispatched to
the handler from another greenlet, one per hub turn, as replies arrive later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent

#: (channel, message) as the reader greenlet hands it to a handler.
Message = tuple[str, dict[str, Any]]


def iopub(msg_type: str, **content: Any) -> Message:
    return "iopub", {"header": {"msg_type": msg_type}, "metadata": {}, "content": content}


def reply(status: str = "ok", **content: Any) -> Message:
    return "shell", {"header": {"msg_type": "execute_reply"}, "content": {"status": status, **content}}


IDLE = iopub("status", execution_state="idle")
BUSY = iopub("status", execution_state="busy")


class ScriptedKernel:
    """Answers each execute_request with ``script(content)``: the messages to dispatch;
    an interrupt dispatches ``on_interrupt`` to the last request's handler."""

    kernel_name = "scripted"

    def __init__(self, script: Callable[[dict[str, Any]], list[Message]]) -> None:
        self.script = script
        self.traits: dict[str, Any] = {}
        self.handlers: dict[str, Any] = {}
        self.sent: list[dict[str, Any]] = []
        self.retired: str | None = None
        self.interrupts = 0
        self.on_interrupt: list[Message] = []
        self._last: Any = None

    def send(self, channel: str, msg_type: str, content: dict[str, Any], handler: Any, **extra: Any) -> str:
        msg_id = f"m{len(self.sent)}"
        self.handlers[msg_id] = self._last = handler
        self.sent.append({"channel": channel, "type": msg_type, "content": content, **extra})
        gevent.spawn(self._deliver, handler, self.script(content))
        return msg_id

    def _deliver(self, handler: Any, messages: list[Message]) -> None:
        for channel, msg in messages:
            gevent.sleep(0)  # one message per hub turn: the caller is waiting by then
            handler(channel, msg)

    def forget(self, msg_id: str) -> None:
        self.handlers.pop(msg_id, None)

    def interrupt(self) -> None:
        self.interrupts += 1
        gevent.spawn(self._deliver, self._last, self.on_interrupt)

    def retire(self, reason: str) -> None:
        self.retired = self.retired or reason
