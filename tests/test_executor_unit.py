"""The executor's mechanisms without a kernel process: when an execution is complete, what
it collected, and what ``execute`` does on timeouts, errors and retire reports.

An execution is complete only when both the shell ``execute_reply`` and the iopub
``status: idle`` have arrived, in either order (the two channels are separate sockets):
output published before idle belongs to the request even when the reply came first.
``execute`` runs here against :class:`tests.scripted.ScriptedKernel`, which plays the
channel layer's part; the wire itself is tested end to end.
"""

from __future__ import annotations

from typing import Any

import pytest

from nb2svc.runtime.kernel.agent import UNHEALTHY
from nb2svc.runtime.kernel.channels import KernelDied
from nb2svc.runtime.kernel.executor import ExecutionTimeout, _Collector, execute
from tests.scripted import BUSY, IDLE, ScriptedKernel, iopub, reply


def feed(collector: _Collector, *messages: tuple[str, dict[str, Any]]) -> None:
    for channel, msg in messages:
        collector(channel, msg)


def test_reply_then_idle_completes_with_the_output_in_between() -> None:
    collector = _Collector()
    feed(collector, BUSY, iopub("stream", name="stdout", text="a"), reply())
    assert not collector.done.is_set()  # the reply alone: output may still be on its way
    feed(collector, iopub("stream", name="stdout", text="b"), IDLE)
    assert collector.done.is_set() and collector.result.stdout == "ab"


def test_idle_then_reply_completes_with_the_replys_fields() -> None:
    collector = _Collector()
    feed(collector, BUSY, iopub("execute_result", data={"text/plain": "2"}), IDLE)
    assert not collector.done.is_set()  # idle alone: the reply carries status and expressions
    feed(collector, reply(user_expressions={"k": {"status": "ok"}}))
    assert collector.done.is_set()
    assert collector.result.result == {"text/plain": "2"}
    assert collector.result.user_expressions == {"k": {"status": "ok"}}


def test_busy_and_other_states_do_not_complete() -> None:
    collector = _Collector()
    feed(collector, reply(), BUSY, iopub("status", execution_state="starting"))
    assert not collector.done.is_set()


def test_death_completes_at_once() -> None:
    collector = _Collector()
    feed(collector, BUSY)
    collector("dead", {})
    assert collector.done.is_set() and collector.died


def test_streams_displays_and_errors_are_kept_apart() -> None:
    seen: list[str] = []
    collector = _Collector(lambda kind, content: seen.append(kind))
    feed(
        collector,
        iopub("stream", name="stderr", text="warn"),
        iopub("display_data", data={"text/html": "<b>"}),
        iopub("error", ename="E", evalue="v", traceback=["\x1b[31mline\x1b[0m"]),
        reply("error"),
        IDLE,
    )
    result = collector.result
    assert result.stderr == "warn" and result.stdout == "" and result.displays == [{"text/html": "<b>"}]
    assert result.status == "error" and result.error is not None and result.error.traceback == ["line"]
    assert seen == ["stream", "display_data", "error"]  # status messages are not output


def test_retire_reasons_come_from_the_replys_payloads() -> None:
    collector = _Collector()
    feed(collector, reply(payload=[{"source": UNHEALTHY, "reason": "closed stdout"}]), IDLE)
    assert collector.result.retire_reason == "closed stdout"
    collector = _Collector()
    feed(collector, reply(payload=[{"source": "ask_exit", "keepkernel": True}]), IDLE)
    assert collector.result.retire_reason is None
    collector = _Collector()
    feed(collector, reply(payload=[{"source": "ask_exit", "keepkernel": False}]), IDLE)
    assert collector.result.retire_reason == "the code asked the kernel to exit"


# --- execute() against the channel layer's contract -----------------------------------


def test_execute_sends_the_request_and_forgets_its_handler() -> None:
    kernel = ScriptedKernel(
        lambda content: [iopub("stream", name="stdout", text=content["code"]), reply(), IDLE]
    )
    result = execute(kernel, "print(1)", metadata={"k": 1}, buffers=[b"b"], user_expressions={"e": "1"})
    assert result.stdout == "print(1)" and kernel.handlers == {}
    sent = kernel.sent[0]
    assert sent["content"]["store_history"] is False and sent["content"]["user_expressions"] == {"e": "1"}
    assert sent["metadata"] == {"k": 1} and sent["buffers"] == [b"b"]


def test_an_error_status_without_details_is_still_an_error() -> None:
    result = execute(ScriptedKernel(lambda _: [reply("error"), IDLE]), "x")
    assert result.error is not None and "without details" in result.error.evalue


def test_an_unhealthy_report_retires_the_kernel_but_keeps_the_answer() -> None:
    payload = [{"source": UNHEALTHY, "reason": "its code closed sys.stdout or sys.stderr"}]
    kernel = ScriptedKernel(
        lambda _: [iopub("stream", name="stdout", text="ok"), reply(payload=payload), IDLE]
    )
    assert execute(kernel, "x").stdout == "ok"
    assert kernel.retired == "its code closed sys.stdout or sys.stderr"


def test_a_death_mid_request_is_kernel_died() -> None:
    with pytest.raises(KernelDied):
        execute(ScriptedKernel(lambda _: [BUSY, ("dead", {})]), "x")


def test_a_timeout_interrupts_and_a_kernel_that_recovers_stays() -> None:
    kernel = ScriptedKernel(lambda _: [BUSY])  # never finishes by itself
    kernel.on_interrupt = [
        iopub("error", ename="KeyboardInterrupt", evalue="", traceback=[]),
        reply("error"),
        IDLE,
    ]
    with pytest.raises(ExecutionTimeout) as info:
        execute(kernel, "while True: pass", timeout=0.01, interrupt_grace=30)
    assert info.value.recovered and kernel.interrupts == 1 and kernel.retired is None
    assert kernel.handlers == {}


def test_a_timeout_that_an_interrupt_cannot_stop_retires_the_kernel() -> None:
    kernel = ScriptedKernel(lambda _: [BUSY])
    with pytest.raises(ExecutionTimeout) as info:
        execute(kernel, "while True: pass", timeout=0.01, interrupt_grace=0.01)
    assert not info.value.recovered and kernel.interrupts == 1
    assert kernel.retired is not None and "interrupt did not stop" in kernel.retired
