"""``nb2svc test``: send the example requests a notebook declares and check the answers.

Examples live in the metadata of an endpoint's code cell (the annotated cell, or one of
its ResponseInfo cells), under ``nb2svc.examples``, so they stay next to the code they
exercise and change neither the cell numbers nor the code::

    {"nb2svc": {"examples": [
      {"name": "greets by name",
       "request": {"path": "/hello/world"},
       "response": {"status": 200, "content_type": "text/plain", "body": "hello, world\\n"}},
      {"request": {"json": {"name": "bob"}},
       "response": {"status": 201, "json": {"greeting": "hello, bob"}}}
    ]}}

``request``: ``path`` (with a query string if wanted; optional when the endpoint's path
has no parameters; it must route to this endpoint), ``headers``, and a body as either
``body`` (text, sent as is) or ``json`` (any JSON value, sent as application/json). The
method is the endpoint's.

A 200 answer of an endpoint that declares what it returns (``# returns NAME: TYPE``
lines or ``nb2svc.returns``, see :mod:`nb2svc.compiler.declarations`) must also be JSON
that keeps that schema; each violation is reported with its JSON pointer.

``response``: ``status`` (default 200), ``content_type`` (compared as a media type,
``text/plain`` matches ``text/plain; charset=utf-8``, unless it has parameters
itself), ``headers`` (each named header must have this value), and ``body`` (the body
must be exactly this text) or ``json`` (the body must be JSON equal to this value).

Examples run one at a time in notebook order against one warm kernel (``--pool-size
1`` by default), so a later example may rely on an earlier one's effect (create, then
read). The compiler checks the declarations (:mod:`nb2svc.compiler.examples`): a
malformed one is a compile error naming the cell.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nb2svc.compiler.spec import Endpoint, ServiceSpec

METADATA_KEY = "nb2svc"
_MISSING: Any = object()


@dataclass(frozen=True)
class Example:
    """One declared request and the answer expected to it."""

    cell: int
    name: str
    endpoint: str
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes | None
    status: int
    content_type: str | None = None
    expect_headers: Mapping[str, str] = field(default_factory=dict)
    expect_body: str | None = None
    expect_json: Any = _MISSING
    #: The endpoint's declared ``returns`` JSON Schema: a 200 answer must be JSON keeping it.
    returns: Mapping[str, Any] | None = field(default=None, compare=False)
    #: The notebook declaring it (its file name): cell numbers are per notebook.
    notebook: str = ""

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Outcome:
    """What happened to one example: the status received and every mismatch."""

    example: Example
    status: int | None
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.example.notebook,
            "cell": self.example.cell,
            "name": self.example.name,
            "request": self.example.request_line,
            "status": self.status,
            "passed": self.passed,
            "problems": self.problems,
        }


# --- declarations ---------------------------------------------------------------------


def examples_from_spec(spec: ServiceSpec) -> list[Example]:
    """Every example the compiled service declares, in notebook order (cell, then position).

    The compiler has already checked them (:mod:`nb2svc.compiler.examples`), so this
    works the same for a notebook and for a bundle's ``service.json``.
    """
    found: list[tuple[int, int, Example]] = []
    for ep in spec.endpoints:
        for position, declared in enumerate(ep.examples):
            found.append((declared["cell"], position, _example(declared, ep, spec.notebook)))
    return [example for _, _, example in sorted(found, key=lambda item: item[:2])]


def endpoints_without_examples(
    spec: ServiceSpec, examples: list[Example], prefix: str = ""
) -> list[Endpoint]:
    tested = {example.endpoint for example in examples}
    return [ep for ep in spec.endpoints if f"{ep.method} {_under(prefix, ep.path)}" not in tested]


def mounted(examples: list[Example], prefix: str) -> list[Example]:
    """The examples of a notebook mounted at ``prefix`` (paths and labels prefixed)."""
    if not prefix:
        return examples
    return [
        replace(e, path=_under(prefix, e.path), endpoint=" ".join(_mounted_label(e.endpoint, prefix)))
        for e in examples
    ]


def _under(prefix: str, path: str) -> str:
    """``path`` of a notebook mounted at ``prefix``: its ``/`` is the prefix itself."""
    return prefix + path[1:] if path == "/" or path.startswith("/?") else prefix + path


def _mounted_label(label: str, prefix: str) -> tuple[str, str]:
    method, _, path = label.partition(" ")
    return method, _under(prefix, path)


def _example(declared: Mapping[str, Any], endpoint: Endpoint, notebook: str) -> Example:
    request, response = declared["request"], declared["response"]
    headers = dict(request.get("headers", {}))
    body: bytes | None = None
    if "json" in request:
        body = json.dumps(request["json"]).encode()
        headers = {"Content-Type": "application/json", **headers}
    elif "body" in request:
        body = request["body"].encode()
        headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
    return Example(
        cell=declared["cell"],
        name=declared["name"],
        endpoint=f"{endpoint.method} {endpoint.path}",
        method=endpoint.method,
        path=request["path"],
        headers=headers,
        body=body,
        status=response["status"],
        content_type=response.get("content_type"),
        expect_headers=dict(response.get("headers", {})),
        expect_body=response.get("body"),
        expect_json=response.get("json", _MISSING),
        returns=endpoint.contract.get("returns"),
        notebook=notebook,
    )


# --- running --------------------------------------------------------------------------


def run_examples(
    base_url: str, examples: list[Example], *, token: str = "", timeout: float = 60
) -> list[Outcome]:
    """Send each example in order to the service at ``base_url`` and check its answer.

    Raises :class:`ServiceFailed` (one line) when the service cannot be connected to at all:
    the first refused or unresolvable connection ends the run instead of a failure per example."""
    base = urllib.parse.urlsplit(base_url)
    connection_class = http.client.HTTPSConnection if base.scheme == "https" else http.client.HTTPConnection
    outcomes = []
    for example in examples:
        headers = dict(example.headers)
        if token and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = f"token {token}"
        connection = connection_class(base.netloc, timeout=timeout)
        try:
            connection.connect()
        except OSError as exc:  # nothing listens there: every later example would fail the same way
            connection.close()
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ServiceFailed(f"cannot reach {base_url}: {reason}") from None
        try:
            connection.request(example.method, base.path.rstrip("/") + example.path, example.body, headers)
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            outcomes.append(Outcome(example, None, [f"no answer: {exc}"]))
            continue
        finally:
            connection.close()
        outcomes.append(
            Outcome(
                example, response.status, check_response(example, response.status, response.headers, body)
            )
        )
    return outcomes


def check_response(example: Example, status: int, headers: Mapping[str, str], body: bytes) -> list[str]:
    """Every way the answer differs from the example's expectations (empty: it passed)."""
    problems = []
    if status != example.status:
        problems.append(f"status {status}, expected {example.status}")
    lowered = {k.lower(): v for k, v in headers.items()}
    if example.content_type is not None:
        got = lowered.get("content-type", "")
        if _media_type(got, example.content_type) != _media_type(example.content_type, example.content_type):
            problems.append(f"content type {got!r}, expected {example.content_type!r}")
    for name, value in example.expect_headers.items():
        if lowered.get(name.lower()) != value:
            problems.append(f"header {name}: {lowered.get(name.lower())!r}, expected {value!r}")
    text = body.decode("utf-8", errors="replace")
    if example.expect_body is not None and text != example.expect_body:
        problems.append(f"body {_short(text)}, expected {_short(example.expect_body)}")
    if example.expect_json is not _MISSING:
        try:
            value = json.loads(text)
        except ValueError:
            problems.append(f"body is not JSON: {_short(text)}")
        else:
            if not json_equal(value, example.expect_json):
                expected = json.dumps(example.expect_json)
                problems.append(f"JSON body {_short(json.dumps(value))}, expected {_short(expected)}")
    if example.returns is not None and status == 200:
        problems += _contract_problems(example.returns, text)
    return problems


def _contract_problems(returns: Mapping[str, Any], text: str) -> list[str]:
    """How a 200 answer breaks the endpoint's declared ``returns`` schema."""
    from nb2svc.compiler.validation import Contract

    try:
        value = json.loads(text)
    except ValueError:
        return [f"the answer is not JSON, but the endpoint declares what it returns: {_short(text)}"]
    return [
        f"the answer breaks the declared returns schema at {error['pointer']}: {error['message']}"
        for error in Contract({"returns": returns}).check_answer(value)
    ]


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: as Python's ``==`` on parsed JSON, except that ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _media_type(value: str, expected: str) -> str:
    """Normalised content type; parameters kept only when the expectation has some."""
    parts = [p.strip().lower() for p in value.split(";")]
    return ";".join(parts if ";" in expected else parts[:1])


def _short(text: str, limit: int = 160) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def format_table(outcomes: list[Outcome]) -> str:
    """A pass/fail table, then the mismatches of each failed example. Examples of several
    notebooks (mounted together) add a NOTEBOOK column, since cell numbers are per notebook."""
    several = len({o.example.notebook for o in outcomes}) > 1
    rows = [("RESULT", *(("NOTEBOOK",) if several else ()), "CELL", "REQUEST", "STATUS", "EXAMPLE")]
    for o in outcomes:
        rows.append(
            (
                "pass" if o.passed else "FAIL",
                *((o.example.notebook,) if several else ()),
                str(o.example.cell),
                o.example.request_line,
                "-" if o.status is None else str(o.status),
                o.example.name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for o in outcomes:
        if not o.passed:
            where = f"{o.example.notebook}, cell" if several else "cell"
            lines.append(f"\nFAIL {where} {o.example.cell}, {o.example.request_line} ({o.example.name}):")
            lines += [f"  {problem}" for problem in o.problems]
    return "\n".join(lines)


# --- a local service ------------------------------------------------------------------


class ServiceFailed(RuntimeError):
    """The service under test did not become ready; the message carries its log's tail."""


@contextmanager
def local_service(
    target: Path | Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> Iterator[str]:
    """``nb2svc serve TARGET`` (or ``serve`` with these arguments) on a free loopback port
    until ready; yields its base URL.

    ``env`` holds ``NB2SVC_*`` settings for the service (``nb2svc test``'s serve options);
    it runs one worker with a pool of one kernel unless they say otherwise.

    The server runs in its own session with its log in a temporary file; on exit it
    gets SIGTERM (it drains and stops its kernels), then SIGKILL for the whole group
    if it has not stopped within its graceful timeout.
    """
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-P",  # no working directory on sys.path: a folder named nb2svc there is not us
                "-m",
                "nb2svc",
                "serve",
                *([str(target)] if isinstance(target, Path) else target),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env={**os.environ, "NB2SVC_POOL_SIZE": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(process, f"127.0.0.1:{port}", timeout, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(process: subprocess.Popen[bytes], netloc: str, timeout: float, log: Any) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise ServiceFailed(f"the service exited with code {process.returncode}:\n{_tail(log)}")
        if _status(netloc, "/_api/health/ready") == 200:
            return
        if time.monotonic() > deadline:
            raise ServiceFailed(f"the service was not ready within {timeout:g}s:\n{_tail(log)}")
        time.sleep(0.1)


def _status(netloc: str, path: str) -> int | None:
    connection = http.client.HTTPConnection(netloc, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _tail(log: Any, lines: int = 30) -> str:
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes], grace: float = 45) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
