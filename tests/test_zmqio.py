"""The cheap ZeroMQ paths under gevent: messages arrive whole, waiting readers wake up,
and both the C-level path and the plain green fallback behave the same."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
import zmq.green as zmq
from jupyter_client.session import Session

from nb2svc.runtime import zmqio
from nb2svc.runtime.kernel.host import KernelHost


@pytest.fixture(params=[True, False], ids=["c-level", "green-fallback"])
def pair(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    monkeypatch.setattr(zmqio, "_RAW_IO", request.param)
    ctx = KernelHost().zmq_context  # a worker's context, as its kernels' sockets use
    router = ctx.socket(zmq.ROUTER)
    dealer = ctx.socket(zmq.DEALER)
    url = f"ipc://{tmp_path}/sock"
    router.bind(url)
    dealer.connect(url)
    yield dealer, router
    dealer.close(linger=0)
    router.close(linger=0)
    ctx.term()


def receive(sock: object, count: int, timeout: float = 5.0) -> list[list[bytes]]:
    def collect() -> list[list[bytes]]:
        got: list[list[bytes]] = []
        while len(got) < count:
            got.extend(zmqio.recv_batch(sock))
        return got

    return gevent.spawn(collect).get(timeout=timeout)


def test_messages_arrive_whole_and_in_order(pair: tuple) -> None:
    dealer, router = pair
    for i in range(50):
        zmqio.send_frames(dealer, [zmqio.DELIMITER, b"sig", str(i).encode(), b"x" * i])
    got = receive(router, 50)
    assert [parts[1:] for parts in got] == [
        [zmqio.DELIMITER, b"sig", str(i).encode(), b"x" * i] for i in range(50)
    ]


def test_a_waiting_reader_wakes_for_a_reply(pair: tuple) -> None:
    dealer, router = pair
    reader = gevent.spawn(receive, dealer, 1)
    gevent.sleep(0.05)  # let the reader block first: the case a missed wake-up would hang
    zmqio.send_frames(dealer, [b"ping"])
    (identity, ping), *_ = receive(router, 1)
    assert ping == b"ping"
    zmqio.send_frames(router, [identity, b"pong"])
    assert reader.get(timeout=5) == [[b"pong"]]


def test_decoder_checks_the_signature() -> None:
    session = Session(key=b"secret")
    frames = session.serialize(session.msg("status", {"execution_state": "idle"}))
    decoder = zmqio.MessageDecoder(session)
    msg = decoder.parse(frames[1:])
    assert msg["msg_type"] == "status"
    assert msg["content"] == {"execution_state": "idle"}
    tampered = [frames[1], frames[2], frames[3], frames[4], b'{"execution_state": "busy"}']
    with pytest.raises(ValueError, match="signature"):
        decoder.parse(tampered)
