"""Example requests declared in endpoint cells' metadata: parsed and checked at compile time.

An endpoint cell (the annotated cell or one of its ResponseInfo cells) may declare
``{"nb2svc": {"examples": [...]}}`` in its metadata; the README shows the format. The
compiler checks every declaration (a bad one is a :class:`CompileProblem` naming the
cell, so ``build`` and ``serve`` reject it too, not only ``nb2svc test``) and keeps
them in the :class:`ServiceSpec` as plain JSON data, normalised to::

    {"cell": 4, "name": "greets by name",
     "request": {"path": "/hello/world", "headers": {...}, ["body": text | "json": value]},
     "response": {"status": 200, "headers": {...},
                  ["content_type": "text/plain"], ["body": text | "json": value]}}

so that the OpenAPI document can show them and ``nb2svc test`` can send them, from a
notebook or from a bundle's ``service.json`` alike.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from nb2svc.compiler.spec import Endpoint

METADATA_KEY = "nb2svc"
_REQUEST_KEYS = frozenset({"path", "headers", "body", "json"})
_RESPONSE_KEYS = frozenset({"status", "content_type", "headers", "body", "json"})

Problem = Callable[..., None]  # problem(cell, message, hint="")


def declared_examples(
    cells: Sequence[Any], endpoints: Sequence[Endpoint], problem: Problem
) -> dict[tuple[str, str], tuple[dict[str, Any], ...]]:
    """The examples of each endpoint ``(method, path)``, in notebook order; problems reported."""
    by_cell = {
        cell: ep
        for ep in endpoints
        for cell in ep.cells + (ep.response_info.cells if ep.response_info else ())
    }
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for number, cell in enumerate(cells, start=1):
        ours = (cell.get("metadata") or {}).get(METADATA_KEY)
        declared = ours.get("examples") if isinstance(ours, dict) else None
        if declared is None:
            continue
        endpoint = by_cell.get(number)
        if endpoint is None:
            problem(
                number,
                "examples on a cell that is not an endpoint",
                "move them to the endpoint's annotated cell",
            )
            continue
        if not isinstance(declared, list):
            problem(number, "nb2svc.examples must be a list of objects")
            continue
        for index, raw in enumerate(declared):
            try:
                example = normalise(raw, endpoint, endpoints, number, index)
            except ValueError as exc:
                problem(number, f"nb2svc.examples[{index}]: {exc}")
                continue
            found.setdefault((endpoint.method, endpoint.path), []).append(example)
    return {key: tuple(examples) for key, examples in found.items()}


def normalise(
    raw: Any, endpoint: Endpoint, endpoints: Sequence[Endpoint], cell: int, index: int
) -> dict[str, Any]:
    """One declaration in the normalised shape (module docstring); ``ValueError`` says what is wrong."""
    if not isinstance(raw, dict) or not set(raw) <= {"name", "request", "response"}:
        raise ValueError("an example is an object with 'request', 'response' and an optional 'name'")
    request = _section(raw, "request", _REQUEST_KEYS)
    response = _section(raw, "response", _RESPONSE_KEYS)
    path = request.get("path", endpoint.path if not endpoint.params else None)
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"request.path must be a path like {endpoint.path!r} with its parameters filled in")
    routed = route(endpoints, endpoint.method, path)
    if routed is not endpoint:
        where = f"{routed.method} {routed.path}" if routed else "no endpoint"
        raise ValueError(
            f"{endpoint.method} {path} goes to {where}, not to {endpoint.method} {endpoint.path}"
        )
    out_request: dict[str, Any] = {
        "path": path,
        "headers": _strings(request.get("headers", {}), "request.headers"),
    }
    out_request.update(_body(request, "request", "use 'json' for a JSON value"))
    status = response.get("status", 200)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ValueError("response.status must be an HTTP status code")
    out_response: dict[str, Any] = {
        "status": status,
        "headers": _strings(response.get("headers", {}), "response.headers"),
    }
    content_type = response.get("content_type")
    if content_type is not None:
        if not isinstance(content_type, str):
            raise ValueError("response.content_type must be text")
        out_response["content_type"] = content_type
    out_response.update(_body(response, "response", "use 'json' to compare JSON"))
    name = str(raw.get("name", f"example {index + 1}"))
    return {"cell": cell, "name": name, "request": out_request, "response": out_response}


def route(endpoints: Sequence[Endpoint], method: str, path: str) -> Endpoint | None:
    """The endpoint a request reaches: the first match in spec order (literals win)."""
    segments = [urllib.parse.unquote(s) for s in urllib.parse.urlsplit(path).path.split("/") if s]
    for ep in endpoints:
        if ep.method == method and len(ep.segments) == len(segments):
            if all(p.startswith(":") or p == s for p, s in zip(ep.segments, segments, strict=True)):
                return ep
    return None


def _body(section: dict[str, Any], what: str, json_hint: str) -> dict[str, Any]:
    """The ``body`` (text) or ``json`` (any value) of a request or response, at most one."""
    if "body" in section and "json" in section:
        raise ValueError(f"{what} has both 'body' and 'json'; give one")
    if "body" in section:
        if not isinstance(section["body"], str):
            raise ValueError(f"{what}.body must be text ({json_hint})")
        return {"body": section["body"]}
    return {"json": section["json"]} if "json" in section else {}


def _section(raw: dict[str, Any], key: str, allowed: frozenset[str]) -> dict[str, Any]:
    section = raw.get(key, {})
    if not isinstance(section, dict):
        raise ValueError(f"{key} must be an object")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"unknown {key} field {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    return section


def _strings(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{what} must be an object of text values")
    return dict(value)
