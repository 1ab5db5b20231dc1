"""Issue 23, low: a ResponseInfo header value with CR/LF is a clear JSON 500, not a traceback.

The attack: a notebook puts request data into a response header, and the request carries
a line break to inject a header of its own. No header was ever injected (werkzeug refuses
the value), but the answer was a generic 500 and the log got a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nb2svc.runtime.http_api.responses import ResponseInfoError, parse_response_info
from tests.notebooks import notebook
from tests.support import Server, notebook_server

SERVICE = notebook(
    "import json",
    "# GET /echo\nprint('body')",
    "# ResponseInfo GET /echo\n"
    "value = json.loads(REQUEST)['args'].get('v', ['plain'])[0]\n"
    "print(json.dumps({'headers': {'X-Echo': value}}))",
    kernel="python3",
    language="python",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with notebook_server(
        SERVICE, tmp_path_factory.mktemp("headers") / "svc.ipynb", "--pool-size", "1"
    ) as srv:
        yield srv


def test_a_header_injection_through_response_info_is_a_clear_500(server: Server) -> None:
    assert server.get("/echo", params={"v": "fine"}).headers["X-Echo"] == "fine"
    for value in ("a\r\nSet-Cookie: evil=1", "a\nX-Other: 1", "a\rb", "nul\x00"):
        r = server.get("/echo", params={"v": value})
        assert r.status_code == 500
        assert r.json()["error"] == "ResponseInfoError"
        assert "'X-Echo'" in r.json()["message"] and "line break" in r.json()["message"]
        assert "evil" not in r.headers.get("Set-Cookie", "") and "X-Other" not in r.headers
    assert "Traceback" not in server.log()


def test_response_info_header_names_must_be_tokens() -> None:
    with pytest.raises(ResponseInfoError, match="header name 'X Bad'"):
        parse_response_info('{"headers": {"X Bad": "v"}}')
    with pytest.raises(ResponseInfoError, match="header name 'X:\\\\r\\\\nY'"):
        parse_response_info('{"headers": {"X:\\r\\nY": "v"}}')
    assert parse_response_info('{"headers": {"X-Tab": "a\\tb"}}').headers == {"X-Tab": "a\tb"}
