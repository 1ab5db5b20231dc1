"""REQUEST out of band (issue 11): byte for byte what the source literal gave.

Two real servers run the same endpoints: one as shipped (Python kernels bind REQUEST from
the execute request's buffers), one whose setup cell unregisters that hook, so its
kernels fail the start-up probe and get REQUEST as a source literal, as before. The same
request to both must give the same REQUEST string, byte for byte (the ``Host`` header
differs only by port). Out of band, ``REQUEST_BODY`` and ``REQUEST_FILES`` hold the
exact bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from urllib3 import encode_multipart_formdata

from tests.notebooks import notebook
from tests.support import Server

ENDPOINTS = (
    "# POST /request\nprint(REQUEST, end='')",
    "# GET /request/:name\nprint(REQUEST, end='')",
    "# POST /raw\nimport hashlib\n"
    "print(len(REQUEST_BODY), hashlib.sha256(REQUEST_BODY).hexdigest(), type(REQUEST_BODY).__name__)",
    "# POST /files\nimport hashlib, json\n"
    "print(json.dumps({name: [[u['filename'], u['content_type'], hashlib.sha256(u['data']).hexdigest()]"
    " for u in uploads] for name, uploads in REQUEST_FILES.items()}))",
    "# POST /fail\nimport json\nbody = json.loads(REQUEST)['body']\nraise ValueError('bad thing')",
    "# GET /mode\nprint('REQUEST_BODY' in globals())",
    "# GET /reply-sleep\nk = get_ipython().kernel\nprint(k._execute_sleep, k.log.isEnabledFor(10))",
)

LITERAL_SETUP = "get_ipython().events.unregister('pre_run_cell', _nb2svc.bind_request)"


def _multipart(fields: list[tuple[str, object]]) -> dict:
    """A multipart body with a fixed boundary, so both servers see the same headers."""
    body, content_type = encode_multipart_formdata(fields, boundary="nb2svc-test-boundary")
    return {"data": body, "headers": {"Content-Type": content_type}}


TRICKY = "quote \" backslash \\ newline \n tab \t unicode é ☃ 𝄞 nul \x00 dollar $x ${y} `z` '"


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, *setup: str) -> Server:
    path: Path = tmp_path_factory.mktemp(name) / f"{name}.ipynb"
    nbformat.write(notebook(*setup, *ENDPOINTS, kernel="python3", language="python"), path)
    # A setup that reaches into the agent needs it in place first: a spawned kernel runs the
    # agent's bootstrap before setup, a forked one only after the fork (setup ran in the template).
    start = ["--kernel-start", "spawn"] if setup else []
    srv = Server([str(path), "--pool-size", "1", *start], log_dir=path.parent)
    srv.wait_ready()
    return srv


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    oob = _serve(tmp_path_factory, "oob")
    try:
        literal = _serve(tmp_path_factory, "literal", LITERAL_SETUP)
        try:
            yield oob, literal
        finally:
            literal.kill()
    finally:
        oob.kill()


def _same_request(servers: tuple[Server, Server], method: str, path: str, **kwargs: object) -> str:
    oob, literal = servers
    texts = []
    for srv in (oob, literal):
        r = srv.request(method, path, **kwargs)
        assert r.status_code == 200, r.text
        texts.append(r.content.decode("utf-8").replace(f"127.0.0.1:{srv.port}", "HOST"))
    assert texts[0] == texts[1]
    return texts[0]


def test_the_two_servers_bind_request_differently(servers: tuple[Server, Server]) -> None:
    oob, literal = servers
    assert oob.get("/mode").text == "True\n"
    assert literal.get("/mode").text == "False\n"


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        ({"json": {"text": TRICKY, "n": [1, 2.5, None, True], "nested": {"k": {"z": []}}}}, None),
        ({"data": [("a", "1"), ("a", TRICKY), ("é", "x")]}, None),
        (_multipart([("a", TRICKY), ("f", ("f.txt", "file text é".encode(), "text/plain"))]), None),
        (_multipart([("bin", ("b.bin", b"\xff\x00 not utf-8", "application/octet-stream"))]), None),
        ({"data": TRICKY.encode(), "headers": {"Content-Type": "text/plain; charset=utf-8"}}, TRICKY),
        ({"data": "plain", "headers": {"Content-Type": "application/octet-stream"}}, "plain"),
        ({"data": b"", "headers": {"Content-Type": "application/json"}}, ""),
    ],
    ids=["json", "form", "multipart", "multipart-binary-file", "text", "utf8-binary", "empty"],
)
def test_request_is_byte_for_byte_the_literal(
    servers: tuple[Server, Server], kwargs: dict, body: object
) -> None:
    text = _same_request(servers, "POST", "/request?q=1&q=%C3%A9&r=", **kwargs)
    req = json.loads(text)
    assert req["args"] == {"q": ["1", "é"], "r": [""]}
    if body is not None:
        assert req["body"] == body


def test_path_params_and_headers_are_byte_for_byte_the_literal(servers: tuple[Server, Server]) -> None:
    text = _same_request(servers, "GET", "/request/J%C3%BCrgen%20%22x%22", headers={"X-Tricky": 'a"b\\c'})
    req = json.loads(text)
    assert req["path"] == {"name": 'Jürgen "x"'} and req["headers"]["X-Tricky"] == 'a"b\\c'


def test_binary_body_reaches_the_cell_as_bytes(servers: tuple[Server, Server]) -> None:
    oob, literal = servers
    data = bytes(range(256)) * 4096  # 1 MiB, not UTF-8
    r = oob.request("POST", "/raw", data=data, headers={"Content-Type": "application/octet-stream"})
    assert r.text == f"{len(data)} {hashlib.sha256(data).hexdigest()} bytes\n"
    # REQUEST itself says null for a body that is not text
    r = oob.request("POST", "/request", data=data[:300], headers={"Content-Type": "image/png"})
    assert json.loads(r.text)["body"] is None
    # a Python kernel that takes REQUEST as a literal sees the same REQUEST (no REQUEST_BODY)
    r = literal.request("POST", "/request", data=data[:300], headers={"Content-Type": "image/png"})
    assert json.loads(r.text)["body"] is None


def test_invalid_utf8_json_is_still_400(servers: tuple[Server, Server]) -> None:
    oob, _ = servers
    r = oob.request("POST", "/request", data=b"\xff\xfe", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_uploads_reach_the_cell_as_bytes(servers: tuple[Server, Server]) -> None:
    oob, _ = servers
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    files = [("img", ("a.png", png, "image/png")), ("img", ("b.bin", b"\xff" * 10, "application/x-thing"))]
    r = oob.request("POST", "/files", data={"note": "x"}, files=files)
    assert json.loads(r.text) == {
        "img": [
            ["a.png", "image/png", hashlib.sha256(png).hexdigest()],
            ["b.bin", "application/x-thing", hashlib.sha256(b"\xff" * 10).hexdigest()],
        ]
    }


def test_failing_cell_keeps_notebook_line_numbers_and_echoes_nothing(servers: tuple[Server, Server]) -> None:
    for srv in servers:
        r = srv.request(
            "POST", "/fail", json={"password": "never-echoed-secret"}, headers={"Cookie": "c=s3cr3t"}
        )
        assert r.status_code == 500
        assert "never-echoed-secret" not in r.text and "s3cr3t" not in r.text
        trace = "\n".join(r.json()["traceback"])
        assert "----> 4 raise ValueError('bad thing')" in trace
        assert "# POST /fail" in trace and "REQUEST =" not in trace


def test_kernels_do_not_sleep_before_each_reply(servers: tuple[Server, Server]) -> None:
    """ipykernel sleeps 0.5 ms before every execute_reply unless told not to, and makes
    debug records its handler drops; the agent stops both, forked (oob) or spawned
    (literal) kernels alike: nb2svc waits for idle instead."""
    for srv in servers:
        assert srv.get("/reply-sleep").text.strip() == "0.0 False"
