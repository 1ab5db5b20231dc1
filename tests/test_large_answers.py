"""Large answers (issue 11, item 3): byte-exact, sent in slices, through both message forms.

Two real servers run the same endpoints: one as shipped (its Python kernels send large
stdout and binary rich output as raw message buffers), one whose setup cell unregisters
the out-of-band hook, so its kernels get REQUEST as a literal and answer in standard
JSON messages (what other kernels do). Both must give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import requests
from nbformat.v4 import new_code_cell
from werkzeug.http import generate_etag

from nb2svc.runtime.http_api.responses import (
    ETAG_LIMIT,
    SLICE,
    STREAM_ABOVE,
    ResponseInfo,
    SlicedResponse,
    make_response,
)
from nb2svc.runtime.kernel.executor import RAW_BUFFERS, ExecutionResult, _Collector
from tests.notebooks import notebook
from tests.support import Server

#: Text with non-ASCII, CRLF, a NUL, quotes and backslashes, so nothing is normalised on the way.
PIECE = 'line é ☃ 𝄞 "quoted" \\ back\r\nnul \x00 tab\t end\n'
PNG_HEAD = b"\x89PNG\r\n\x1a\n"


def text_body(n: int) -> bytes:
    return (PIECE * (n // len(PIECE) + 1))[:n].encode()


def image_body(n: int) -> bytes:
    return (PNG_HEAD + bytes(range(256)) * (n // 256 + 1))[:n]


def _stream(source: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["nb2svc"] = {"response": "stream"}
    return cell


ENDPOINTS = (
    "import json, sys\nfrom IPython.display import Image, display\n"
    f"PIECE = {PIECE!r}\nPNG_HEAD = {PNG_HEAD!r}\n"
    "def size():\n    return int(json.loads(REQUEST)['path']['n'])\n"
    "def text(n):\n    return (PIECE * (n // len(PIECE) + 1))[:n]\n"
    "def png(n):\n    return Image(data=(PNG_HEAD + bytes(range(256)) * (n // 256 + 1))[:n], format='png')",
    "# GET /text/:n\nprint(text(size()), end='')",
    # many writes, flushed apart: several stream messages, small and large
    "# GET /pieces/:n\nfor i in range(4):\n"
    "    sys.stdout.write(text(size()))\n    sys.stdout.flush()\n    print(i)",
    "# GET /image/:n\ndisplay(png(size()))",
    "# ResponseInfo GET /image/:n\n"
    "print(json.dumps({'status': 203, 'headers': {'Content-Type': 'image/png'}}))",
    "# GET /raw\nprint(_nb2svc.raw_parent is not None)",
    # with display metadata, as a subclass with its own bundle, and as a JPEG
    "# GET /sized/:n\nimg = png(size())\nimg.width = 10\ndisplay(img)",
    "# ResponseInfo GET /sized/:n\nprint(json.dumps({'headers': {'Content-Type': 'image/png'}}))",
    "# GET /subclass/:n\nclass Framed(Image):\n"
    "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
    "        bundle, md = super()._repr_mimebundle_(include, exclude)\n"
    "        return {**bundle, 'text/plain': 'framed'}, md\n"
    "display(Framed(data=png(size()).data, format='png'))",
    "# ResponseInfo GET /subclass/:n\nprint(json.dumps({'headers': {'Content-Type': 'image/png'}}))",
    "# GET /jpeg/:n\ndisplay(Image(data=png(size()).data, format='jpeg'))",
    "# ResponseInfo GET /jpeg/:n\nprint(json.dumps({'headers': {'Content-Type': 'image/jpeg'}}))",
    "# GET /fail/:n\nprint('x' * size())\nraise ValueError('after a large print')",
    _stream("# GET /live/:n\nprint('before')\ndisplay(png(size()))"),
)

LITERAL_SETUP = "get_ipython().events.unregister('pre_run_cell', _nb2svc.bind_request)"


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, *setup: str) -> Server:
    path: Path = tmp_path_factory.mktemp(name) / f"{name}.ipynb"
    nbformat.write(notebook(*setup, *ENDPOINTS, kernel="python3", language="python"), path)
    # A setup that reaches into the agent needs it in place first: a spawned kernel runs the
    # agent's bootstrap before setup, a forked one only after the fork (setup ran in the template).
    start = ["--kernel-start", "spawn"] if setup else []
    srv = Server([str(path), "--pool-size", "1", "--request-timeout", "120", *start], log_dir=path.parent)
    srv.wait_ready()
    return srv


@pytest.fixture(scope="module", params=["raw buffers", "json messages"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    setup = () if request.param == "raw buffers" else (LITERAL_SETUP,)
    srv = _serve(tmp_path_factory, request.param.replace(" ", "-"), *setup)
    try:
        # each server must take the path it is named for (the bootstrap's own flag)
        assert srv.get("/raw").text.strip() == str(request.param == "raw buffers")
        yield srv
    finally:
        srv.kill()


SIZES = [1000, STREAM_ABOVE + 12345, 3 * STREAM_ABOVE + 7]


@pytest.mark.parametrize("n", SIZES)
def test_large_text_is_byte_exact(server: Server, n: int) -> None:
    r = server.get(f"/text/{n}", timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert r.content == text_body(n)
    assert r.headers["Content-Type"] == "text/plain"


def test_many_stream_messages_keep_their_order(server: Server) -> None:
    n = STREAM_ABOVE // 2 + 3
    r = server.get(f"/pieces/{n}", timeout=120)
    assert r.status_code == 200
    assert r.content == b"".join(text_body(n) + f"{i}\n".encode() for i in range(4))


@pytest.mark.parametrize("n", SIZES)
def test_large_image_is_byte_exact_with_response_info_applied(server: Server, n: int) -> None:
    r = server.get(f"/image/{n}", timeout=120)
    assert r.status_code == 203
    assert r.headers["Content-Type"] == "image/png"
    assert int(r.headers["Content-Length"]) == n
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(image_body(n)).hexdigest()


def test_a_sliced_answer_keeps_its_etag_and_answers_304(server: Server) -> None:
    n = 2 * STREAM_ABOVE
    first = server.get(f"/text/{n}", timeout=120)
    expected = hashlib.sha1(text_body(n)).hexdigest()  # Werkzeug's tag for the same body
    assert first.headers["ETag"] == f'"{expected}"'
    again = server.get(f"/text/{n}", headers={"If-None-Match": first.headers["ETag"]}, timeout=120)
    assert again.status_code == 304 and again.content == b""


def test_no_etag_above_the_limit(server: Server) -> None:
    n = ETAG_LIMIT + 1
    r = server.get(f"/image/{n}", timeout=120)
    assert r.status_code == 203 and len(r.content) == n
    assert "ETag" not in r.headers


def test_head_of_a_large_answer_has_its_length_and_no_body(server: Server) -> None:
    n = 2 * STREAM_ABOVE
    r = server.request("HEAD", f"/image/{n}", timeout=120)
    assert r.status_code == 203 and r.content == b""
    assert int(r.headers["Content-Length"]) == n


def test_an_error_after_a_large_print_is_still_a_json_500(server: Server) -> None:
    r = server.get(f"/fail/{2 * STREAM_ABOVE}", timeout=120)
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "ValueError" and body["message"] == "after a large print"


def test_a_streamed_endpoint_still_sends_standard_display_events(server: Server) -> None:
    n = STREAM_ABOVE + 5
    r = requests.get(server.url(f"/live/{n}"), headers={"Accept": "text/event-stream"}, timeout=120)
    assert r.status_code == 200
    events = [block for block in r.text.split("\n\n") if block.startswith("event: display")]
    assert len(events) == 1
    bundle = json.loads(events[0].split("data: ", 1)[1])
    assert base64.b64decode(bundle["image/png"]) == image_body(n)


# --- without a server: the collector and the response builder ------------------------


def _message(msg_type: str, content: dict, buffers: list[bytes], names: list[str]) -> dict:
    return {
        "header": {"msg_type": msg_type},
        "parent_header": {"msg_id": "m"},
        "metadata": {RAW_BUFFERS: names},
        "content": content,
        "buffers": buffers,
    }


def test_the_collector_keeps_raw_buffers_and_handlers_see_standard_messages() -> None:
    seen: list[tuple[str, dict]] = []
    collector = _Collector(lambda kind, content: seen.append((kind, content)))
    text = PIECE.encode() * 3
    collector("iopub", _message("stream", {"name": "stdout", "text": ""}, [text], ["text"]))
    collector("iopub", {**_message("stream", {"name": "stdout", "text": "tail"}, [], []), "metadata": {}})
    png = image_body(1000)
    data = {"image/png": "", "text/plain": "<Image>"}
    collector("iopub", _message("display_data", {"data": data, "metadata": {}}, [png], ["image/png"]))
    result = collector.result
    assert result.stdout_parts == [text, "tail"] and result.stdout == PIECE * 3 + "tail"
    assert result.displays == [{"image/png": png, "text/plain": "<Image>"}]
    assert seen[0] == ("stream", {"name": "stdout", "text": PIECE * 3})
    assert base64.b64decode(seen[2][1]["data"]["image/png"]) == png


def test_a_large_answer_is_sliced_with_its_length_and_etag() -> None:
    png = image_body(3 * STREAM_ABOVE + 1)
    result = ExecutionResult(displays=[{"image/png": png}])
    response = make_response(result, ResponseInfo(201, {"Content-Type": "image/png", "X-A": "b"}))
    assert isinstance(response, SlicedResponse) and response.status_code == 201
    assert response.headers["Content-Length"] == str(len(png)) and response.headers["X-A"] == "b"
    pieces = list(response.response)
    assert len(pieces) == 4 and all(len(p) <= SLICE for p in pieces)
    assert b"".join(pieces) == png == response.get_data()
    response.add_etag()
    assert response.headers["ETag"] == f'"{generate_etag(png)}"'


def test_non_ascii_text_parts_are_measured_in_utf8() -> None:
    text = PIECE * (STREAM_ABOVE // len(PIECE) + 1)
    result = ExecutionResult(stdout_parts=[text, "ascii tail"])
    response = make_response(result, ResponseInfo())
    assert isinstance(response, SlicedResponse)
    assert int(response.headers["Content-Length"]) == len(text.encode()) + len("ascii tail")
    assert response.get_data() == text.encode() + b"ascii tail"


def test_small_answers_are_plain_responses() -> None:
    response = make_response(ExecutionResult(stdout_parts=["hello, ", b"world"]), ResponseInfo())
    assert not isinstance(response, SlicedResponse) and response.get_data() == b"hello, world"


@pytest.mark.parametrize("path", ["sized", "subclass", "jpeg"])
def test_other_image_displays_are_byte_exact(server: Server, path: str) -> None:
    n = STREAM_ABOVE + 99
    r = server.get(f"/{path}/{n}", timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert r.content == image_body(n)
