"""API descriptions of a compiled service: OpenAPI 3.1 and Kernel Gateway's swagger.json.

Both are pure functions of the :class:`ServiceSpec` (no clock, no host names unless
given), so the same spec always gives the same dict and ``json.dumps(...,
sort_keys=True)`` is byte-identical between builds.
"""

from __future__ import annotations

import copy
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

from nb2svc.compiler.mounts import Mount
from nb2svc.compiler.spec import Endpoint, ServiceSpec

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
#: The version Kernel Gateway puts in ``info`` of its notebook-http swagger.json.
KG_SWAGGER_VERSION = "0.0.0"

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


#: Inline code in a summary: OpenAPI summaries are plain text (Swagger UI shows backticks).
_INLINE_CODE = re.compile(r"`+([^`]+?)`+")


def plain_summary(text: str) -> str:
    """A summary as plain text: Markdown's inline code marks dropped (``run `x` `` → ``run x``)."""
    return _INLINE_CODE.sub(r"\1", text)


def without_security(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` as a server without a token serves it: no security scheme, so the docs page
    shows no "Authorize" button and no padlocks for a token that does not exist."""
    doc = {**doc, "components": {**doc.get("components", {})}}
    doc["components"].pop("securitySchemes", None)
    doc.pop("security", None)
    return doc


def openapi_document(spec: ServiceSpec, *, server_url: str | None = None) -> dict[str, Any]:
    """An OpenAPI 3.1.0 document for ``spec``.

    Paths use OpenAPI syntax (``/items/:id`` → ``/items/{id}``) with every path
    parameter required, a string unless the endpoint's contract types it. A declared
    contract (:mod:`nb2svc.compiler.declarations`) adds its query and header parameters
    and its JSON body schema, its ``returns`` schema as the 200 JSON answer, and a 400
    listing every violation. Each operation answers 200 with the cell's output
    (``text/plain``; any type and status when a ResponseInfo cell sets them) and 500 with
    the JSON error body ``{"error", "message", "traceback"}``. POST, PUT and PATCH
    accept an optional JSON, form or text body (the cell sees it as ``REQUEST["body"]``).
    ``operationId`` is the document's (swagger cell parser), else ``<method>_<segments>``
    (``get_items_id``), suffixed ``_2``, ``_3`` … in endpoint order if two endpoints would share one.
    """
    operation_ids = _operation_ids(spec.endpoints)
    paths: dict[str, Any] = {}
    for path, endpoints in spec.paths().items():
        item: dict[str, Any] = {}
        if endpoints[0].params:
            values = _path_examples(endpoints)
            item["parameters"] = [
                {"name": name, "in": "path", "required": True}
                | _declared_parameter(endpoints, name)
                | ({"example": values[name]} if name in values else {})
                for name in endpoints[0].params
            ]
        for ep in endpoints:
            item[ep.method.lower()] = _operation(ep, operation_ids[ep.method, ep.path])
        paths[openapi_path(path)] = item
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": spec.name,
            "version": API_VERSION,
            "description": f"HTTP API compiled by nb2svc from the notebook {spec.notebook}.",
        },
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "description": "The body of a 500 response: the error the cell raised.",
                    "properties": {
                        "error": {"type": "string", "description": "Exception class name"},
                        "message": {"type": "string", "description": "Exception message"},
                        "traceback": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["error", "message"],
                }
            },
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <TOKEN>' or 'Bearer <TOKEN>', when the server runs with a token.",
                }
            },
        },
        # A token is required only when the server was started with one.
        "security": [{}, {"token": []}],
    }
    if any(_checks_request(ep) for ep in spec.endpoints):
        doc["components"]["schemas"]["ContractError"] = _CONTRACT_ERROR
    if spec.swagger is not None:
        _merge_notebook_document(doc, spec)
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


#: What an operation of the notebook's own document (swagger cell parser) adds to ours.
#: Swagger 2.0 responses and parameters have another shape, so only OpenAPI 3 documents
#: contribute those.
_DOC_KEYS = ("summary", "description", "tags", "externalDocs", "deprecated")
_OPENAPI3_KEYS = ("responses", "requestBody")


def _merge_notebook_document(doc: dict[str, Any], spec: ServiceSpec) -> None:
    """Merge the notebook's Swagger/OpenAPI document into ours: its ``info`` title,
    description and version, its top-level ``tags``, and per operation its documentation
    (and, from an OpenAPI 3 document, its responses and request body over ours)."""
    own = spec.swagger or {}
    openapi3 = str(own.get("openapi", "")).startswith("3")
    info = own.get("info") if isinstance(own.get("info"), dict) else {}
    for key in ("title", "description", "version"):
        if info.get(key):
            doc["info"][key] = str(info[key])
    if isinstance(own.get("tags"), list):
        doc["tags"] = own["tags"]
    declared = {
        str(op.get("operationId")): op
        for item in (own.get("paths") or {}).values()
        if isinstance(item, dict)
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    for item in doc["paths"].values():
        for method, op in item.items():
            if method == "parameters" or op.get("operationId") not in declared:
                continue
            theirs = declared[op["operationId"]]
            for key in _DOC_KEYS + (_OPENAPI3_KEYS if openapi3 else ()):
                if key == "responses" and isinstance(theirs.get(key), dict):
                    op["responses"] = {**op["responses"], **{str(k): v for k, v in theirs[key].items()}}
                elif key in theirs:
                    op[key] = theirs[key]


def swagger_document(spec: ServiceSpec) -> dict[str, Any]:
    """The Swagger 2.0 document Kernel Gateway 3 serves at ``/_api/spec/swagger.json``.

    Kernel Gateway's notebook-http mode (with its default cell parser) emits exactly
    this shape: paths keep the annotation syntax (``/hello/:name``, not ``{name}``),
    declare no parameters, and every operation reads ``{"responses": {"200":
    {"description": "Success"}}}``; paths and methods appear in notebook order, and
    ResponseInfo cells are not listed. It is reproduced as-is so that clients reading
    Kernel Gateway's document keep working; :func:`openapi_document` is the full
    description.
    """
    if spec.swagger is not None:  # the swagger cell parser: the notebook's own document
        own = copy.deepcopy(spec.swagger)
        if isinstance(own.get("info"), dict) and "title" not in own["info"]:
            own["info"]["title"] = spec.name
        return own
    paths: dict[str, dict[str, Any]] = {}
    for ep in sorted(spec.endpoints, key=lambda ep: ep.cells[0]):
        paths.setdefault(ep.path, {})[ep.method.lower()] = {"responses": {"200": {"description": "Success"}}}
    return {"swagger": "2.0", "info": {"title": spec.name, "version": KG_SWAGGER_VERSION}, "paths": paths}


def openapi_path(path: str) -> str:
    """``/items/:id`` → ``/items/{id}``."""
    return "/" + "/".join(f"{{{s[1:]}}}" if s.startswith(":") else s for s in path.split("/") if s)


def _operation(ep: Endpoint, operation_id: str) -> dict[str, Any]:
    output = "The cell's output: its stdout, or else its execute_result."
    if ep.response_info:
        ok = {
            "description": output + " The ResponseInfo cell sets the status and headers, "
            "so the status and content type may differ.",
            "content": {"*/*": {"schema": {}}},
        }
    else:
        ok = {"description": output, "content": {"text/plain": {"schema": {"type": "string"}}}}
    op: dict[str, Any] = {"operationId": operation_id}
    if ep.summary:
        op["summary"] = plain_summary(ep.summary)
    if ep.description:
        op["description"] = ep.description
    parameters = _contract_parameters(ep)
    if parameters:
        op["parameters"] = parameters
    body_schema = _schema(ep.contract.get("body"))
    if body_schema is not None:
        op["requestBody"] = {
            "required": not _accepts_no_body(ep.contract["body"]),
            "description": "A JSON body, checked against this schema before the cell runs; "
            "the cell sees it as PARAMS['body'] (defaults filled in) and REQUEST['body'].",
            "content": {"application/json": {"schema": body_schema}},
        }
    elif ep.method in _BODY_METHODS:
        op["requestBody"] = {
            "required": False,
            "description": "Passed to the cell as REQUEST['body']: JSON parsed, forms as {name: [values]}.",
            "content": {
                "application/json": {"schema": {}},
                "application/x-www-form-urlencoded": {"schema": _form_schema()},
                "multipart/form-data": {"schema": _form_schema()},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    if ep.response == "stream":
        ok["description"] += (
            " Streamed while the cell runs: server-sent events (each stdout line a `data:`, then"
            " `event: done`, or `event: error` with the JSON error) when the client accepts"
            " text/event-stream, else chunked text."
        )
        ok["content"] = {**ok["content"], "text/event-stream": {"schema": {"type": "string"}}}
    returns = _schema(ep.contract.get("returns"))
    if returns is not None:
        ok["content"] = {"application/json": {"schema": returns}, **ok["content"]}
    responses: dict[str, Any] = {"200": ok}
    responses["202"] = {
        "description": (
            "Accepted as an async job"
            + (
                " (this endpoint always answers so)"
                if ep.response == "job"
                else " (request sent with `Prefer: respond-async`)"
            )
            + ": poll the Location, GET /_api/jobs/{id}, for the answer; DELETE it to cancel."
        ),
        "headers": {"Location": {"schema": {"type": "string"}, "description": "The job's URL."}},
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    if _checks_request(ep):
        responses["400"] = _error(
            "The request breaks the endpoint's contract (its declared parameters, headers or body); "
            "`errors` lists every violation. No kernel ran."
            + (" Or the body does not match its Content-Type." if ep.method in _BODY_METHODS else ""),
            "ContractError",
        )
    elif ep.method in _BODY_METHODS:
        responses["400"] = _error("The body does not match its Content-Type (e.g. invalid JSON).")
        responses["413"] = _error("The body is larger than the server's limit.")
    responses["500"] = _error("The cell raised an error; the body carries its traceback.")
    responses["502"] = _error("The kernel died while running the request; it is being replaced.")
    responses["503"] = _error(
        "Every kernel is busy and the wait queue is full or timed out (see Retry-After)."
    )
    responses["504"] = _error("The cell ran longer than the request timeout and was interrupted.")
    _document_examples(ep, op, responses)
    op["responses"] = responses
    return op


#: A ResponseInfo cell's literal status (``"status": 201`` or ``status=404``): documented,
#: since the runtime may answer it. Computed statuses cannot be seen before they run.
_STATUS_LITERAL = re.compile(r"""["']?status["']?\s*[:=]\s*([1-5][0-9]{2})\b""")


def declared_statuses(ep: Endpoint) -> list[int]:
    """Statuses the endpoint declares it may answer besides 200: its examples' and the
    literal ones of its ResponseInfo cells, in first-seen order."""
    statuses: list[int] = [example["response"]["status"] for example in ep.examples]
    if ep.response_info:
        statuses += [int(found) for found in _STATUS_LITERAL.findall(ep.response_info.code)]
    return list(dict.fromkeys(s for s in statuses if s != 200))


def _document_examples(ep: Endpoint, op: dict[str, Any], responses: dict[str, Any]) -> None:
    """Examples as OpenAPI request/response examples, and every declared status as a response."""
    for status in declared_statuses(ep):
        responses.setdefault(
            str(status),
            {
                "description": "Declared by the endpoint's examples or its ResponseInfo cell.",
                "content": {"*/*": {"schema": {}}},
            },
        )
    for index, example in enumerate(ep.examples):
        key = _example_key(example, index)
        request, response = example["request"], example["response"]
        if "requestBody" in op and ("json" in request or "body" in request):
            media = "application/json" if "json" in request else "text/plain"
            value = request.get("json", request.get("body"))
            op["requestBody"]["content"][media].setdefault("examples", {})[key] = {
                "summary": example["name"],
                "value": value,
            }
        if "json" in response or "body" in response:
            media = response.get("content_type") or (
                "application/json" if "json" in response else "text/plain"
            )
            entry = responses[str(response["status"])]
            content = entry.setdefault("content", {})
            target = content.setdefault(media.split(";")[0].strip(), {"schema": {}})
            target.setdefault("examples", {})[key] = {
                "summary": example["name"],
                "value": response.get("json", response.get("body")),
            }


def _path_examples(endpoints: list[Endpoint]) -> dict[str, str]:
    """Path parameter values taken from the first example that fills them (for "try it")."""
    for ep in endpoints:
        for example in ep.examples:
            path = urllib.parse.urlsplit(example["request"]["path"]).path
            segments = [urllib.parse.unquote(s) for s in path.split("/") if s]
            if len(segments) == len(ep.segments):
                return {p[1:]: s for p, s in zip(ep.segments, segments, strict=True) if p.startswith(":")}
    return {}


def _example_key(example: dict[str, Any], index: int) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", example["name"]).strip("_").lower()
    return f"{index + 1}_{words}" if words else str(index + 1)


def _schema(declared: dict[str, Any] | None) -> dict[str, Any] | None:
    """A declared JSON Schema as an OpenAPI 3.1 schema object (its dialect is the document's)."""
    if declared is None:
        return None
    return copy.deepcopy({k: v for k, v in declared.items() if k != "$schema"})


def _checks_request(ep: Endpoint) -> bool:
    return any(key in ep.contract for key in ("params", "headers", "body"))


def _accepts_no_body(schema: dict[str, Any]) -> bool:
    """Whether a request without a body passes (it is then checked as ``{}``)."""
    return (
        schema.get("type") in (None, "object")
        and not schema.get("required")
        and "minProperties" not in schema
    )


def _declared_parameter(endpoints: list[Endpoint], name: str) -> dict[str, Any]:
    """A path parameter's schema and description from the first endpoint that declares it."""
    for ep in endpoints:
        declared = ((ep.contract.get("params") or {}).get("properties") or {}).get(name)
        if isinstance(declared, dict):
            schema = copy.deepcopy(declared)
            description = schema.pop("description", None)
            return {"schema": schema} | ({"description": description} if description else {})
    return {"schema": {"type": "string"}}


def _contract_parameters(ep: Endpoint) -> list[dict[str, Any]]:
    """The declared query arguments and headers of an operation as OpenAPI parameters."""
    out = []
    for key, where in (("params", "query"), ("headers", "header")):
        schema = ep.contract.get(key) or {}
        required = set(schema.get("required") or ())
        for name, declared in (schema.get("properties") or {}).items():
            if where == "query" and name in ep.params:
                continue  # a path parameter, declared on the path item
            prop = copy.deepcopy(declared) if isinstance(declared, dict) else {}
            description = prop.pop("description", None)
            parameter: dict[str, Any] = {"name": name, "in": where, "required": name in required}
            if description:
                parameter["description"] = description
            parameter["schema"] = prop
            out.append(parameter)
    return out


def _error(description: str, schema: str = "Error") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


#: The body of a 400 for a request that breaks its endpoint's contract.
_CONTRACT_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "A request that breaks its endpoint's declared contract: every violation.",
    "properties": {
        "error": {"type": "string", "const": "BadRequest"},
        "message": {"type": "string", "description": "The first violation, and how many more"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "pointer": {
                        "type": "string",
                        "description": "JSON pointer into PARAMS (headers: /headers/…)",
                    },
                    "expected": {"type": "string"},
                    "got": {"description": "The offending value (an object or array only by its kind)"},
                    "message": {"type": "string"},
                },
                "required": ["pointer", "expected", "message"],
            },
        },
    },
    "required": ["error", "message"],
}


def _operation_ids(endpoints: tuple[Endpoint, ...]) -> dict[tuple[str, str], str]:
    ids = {(ep.method, ep.path): ep.operation_id for ep in endpoints if ep.operation_id}
    taken: set[str] = set(ids.values())
    for ep in endpoints:
        if ep.operation_id:
            continue
        words = [w for s in ep.segments if (w := re.sub(r"[^A-Za-z0-9]+", "_", s.lstrip(":")).strip("_"))]
        base = "_".join([ep.method.lower(), *(words or ["root"])])
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        ids[ep.method, ep.path] = candidate
    return ids


def _form_schema() -> dict[str, Any]:
    """A form body as the cell sees it: ``{name: [values]}`` (a fresh dict: callers may edit the document)."""
    return {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}


def mounted_openapi_document(mounts: Sequence[Mount], *, server_url: str | None = None) -> dict[str, Any]:
    """One OpenAPI document for several mounted notebooks.

    Each notebook's paths get its prefix, its operations its name as a tag (the docs page
    groups by it) and, when there are several, its name in front of their
    ``operationId`` (unique across the service). A single mount at the root is exactly
    :func:`openapi_document`.
    """
    if len(mounts) == 1 and not mounts[0].prefix:
        return openapi_document(mounts[0].spec, server_url=server_url)
    merged: dict[str, Any] | None = None
    for mount in mounts:
        doc = openapi_document(mount.spec, server_url=server_url)
        paths: dict[str, Any] = {}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if method == "parameters":
                    continue
                op["tags"] = [mount.name]
                op["operationId"] = f"{re.sub(r'[^A-Za-z0-9]+', '_', mount.name)}__{op['operationId']}"
            paths[(mount.prefix + path).rstrip("/") or "/"] = item
        if merged is None:
            merged = doc
            merged["paths"] = {}
            merged["tags"] = []
        merged["paths"].update(paths)
        merged["tags"].append({"name": mount.name, "description": doc["info"]["description"]})
    assert merged is not None
    names = ", ".join(m.name for m in mounts)
    merged["info"] = {
        "title": names,
        "version": API_VERSION,
        "description": "HTTP API compiled by nb2svc from the notebooks "
        + ", ".join(f"{m.spec.notebook} (at {m.prefix or '/'})" for m in mounts)
        + ".",
    }
    return merged
