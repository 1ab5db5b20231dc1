"""Issue 8, the strict HTTP edge, attacked over raw sockets against a real API-mode server.

Request smuggling needs a proxy and a server that disagree on where a request ends; each
ambiguous framing here must be a 400. Bodies over the limit are a 413 however they are
framed, hostile bodies a JSON 400, and slow or idle connections give their slot back.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import requests

from tests.notebooks import notebook
from tests.support import Server, serve_ready, wait_for

LIMIT = 300_000

SERVICE = notebook(
    "import json",
    "# POST /size\nprint(len(json.loads(REQUEST)['body']))",
    "# GET /hello\nprint('hello')",
    kernel="python3",
    language="python",
)


def serve(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Server:
    return serve_ready(SERVICE, tmp_path_factory.mktemp("nb") / "edge.ipynb", "--pool-size", "1", *args)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = serve(tmp_path_factory, "--max-body-size", str(LIMIT))
    yield srv
    srv.kill()


def exchange(server: Server, raw: bytes) -> bytes:
    """Send ``raw`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def chunked(body: bytes, size: int = 65536) -> bytes:
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def post_size(headers: bytes, body: bytes) -> bytes:
    return (
        b"POST /size HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        + headers
        + b"\r\n"
        + body
    )


def test_well_formed_raw_requests_are_answered(server: Server) -> None:
    assert status(exchange(server, post_size(b"Content-Length: 5\r\n", b"abcde"))) == 200
    answer = exchange(server, post_size(b"Transfer-Encoding: chunked\r\n", chunked(b"x" * 1000)))
    assert status(answer) == 200 and answer.endswith(b"1000\n")


def test_chunked_body_over_the_limit_is_413_not_truncated(server: Server) -> None:
    answer = exchange(server, post_size(b"Transfer-Encoding: chunked\r\n", chunked(b"x" * (LIMIT + 1))))
    assert status(answer) == 413
    assert b"max-body-size" in answer
    exact = exchange(server, post_size(b"Transfer-Encoding: chunked\r\n", chunked(b"x" * LIMIT)))
    assert status(exact) == 200 and exact.endswith(f"{LIMIT}\n".encode())


def test_content_length_over_the_limit_is_413_without_reading_the_body(server: Server) -> None:
    answer = exchange(server, post_size(b"Content-Length: 999999999\r\n", b"x" * 10))
    assert status(answer) == 413


SMUGGLING = {
    "two_different_content_lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n",
    "content_length_list_of_two_values": b"Content-Length: 5, 6\r\n",
    "content_length_with_transfer_encoding_chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "transfer_encoding_gzip_chunked": b"Transfer-Encoding: gzip, chunked\r\n",
    "transfer_encoding_twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "transfer_encoding_not_chunked": b"Transfer-Encoding: xchunked\r\n",
    "space_before_colon": b"Content-Length : 5\r\n",
    "obs_fold": b"X-Folded: a\r\n b\r\nContent-Length: 5\r\n",
    "header_line_without_colon": b"Garbage\r\nContent-Length: 5\r\n",
    "non_numeric_content_length": b"Content-Length: +5\r\n",
}


@pytest.mark.parametrize("attack", sorted(SMUGGLING))
def test_request_smuggling_framing_is_400(server: Server, attack: str) -> None:
    answer = exchange(server, post_size(SMUGGLING[attack], b"abcde" + b"0\r\n\r\n"))
    assert status(answer) == 400, answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1  # nothing after it was taken for a second request


def test_deeply_nested_json_body_is_a_json_400(server: Server) -> None:
    depth = 100_000
    r = server.request(
        "POST", "/size", data="[" * depth + "]" * depth, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"] == "BadRequest" and "deep" in r.json()["message"]
    assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("multipart/form-data; boundary=xyz", b"this is not a multipart body"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\nunterminated',
        ),
        ("multipart/form-data", b"--xyz\r\n\r\n"),
    ],
    ids=["no_parts", "unterminated_part", "no_boundary"],
)
def test_malformed_multipart_is_a_json_400(server: Server, content_type: str, body: bytes) -> None:
    r = server.request("POST", "/size", data=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert "multipart" in r.json()["message"]


def test_eleven_hundred_slow_connections_do_not_stop_the_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """More slowloris connections than the worker has slots (1,000): headers that never end."""
    srv = serve(tmp_path_factory, "--header-timeout", "2", "--keepalive-timeout", "2")
    slow: list[socket.socket] = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)

        def answered() -> bool:
            try:
                return requests.get(srv.url("/hello"), timeout=5).text == "hello\n"
            except requests.RequestException:
                return False

        wait_for(answered, 120, "the worker to answer while 1,100 slow connections are open")
        # the slow ones were closed by the server (400 or EOF), not left holding their slot
        first = slow[0]
        first.settimeout(60)
        assert first.recv(65536)[:12] in (b"", b"HTTP/1.1 400")
    finally:
        for sock in slow:
            sock.close()
        srv.kill()


def test_idle_keepalive_connection_is_closed(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while not answer.endswith(b"hello\n"):
            answer += sock.recv(65536)
        rest = b""
        while chunk := sock.recv(65536):  # the server closes the idle connection: EOF
            rest += chunk
        assert rest == b""
