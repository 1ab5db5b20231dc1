"""Kernel Gateway's swagger cell parser: endpoints declared by a Swagger/OpenAPI document.

``--cell-parser swagger`` (``KG_CELL_PARSER=kernel_gateway.notebook_http.swagger.parser``)
reads a notebook written for Kernel Gateway's ``notebook_http.swagger.parser``:

- A markdown cell holds the document as JSON: the first fenced block (```` ```json ````
  ... ```` ``` ````) of the cell, or the whole cell when it has none. A document is a JSON
  object with a ``swagger`` key (Kernel Gateway's test) or an ``openapi`` key (accepted
  here too). Several such cells are merged key by key, later ones winning, as Kernel
  Gateway does.
- A code cell whose first line is ``# operationId: NAME`` (``#`` being the language's
  comment prefix; spaces optional) is the endpoint of the operation with that
  ``operationId``; ``# ResponseInfo operationId: NAME`` is its ResponseInfo cell. Cells
  naming one operation are concatenated, as with ``# GET /path`` cells. Every other
  code cell is setup code.
- An operation's route is Kernel Gateway's: the document's path (``""`` is ``/``), then
  ``/:name`` for every parameter of the operation that has a ``name``, in order, whatever
  its ``in`` says (``/greet`` with parameter ``name`` is ``GET /greet/:name``). A path
  template segment (``/items/{id}``) is the parameter ``:id`` in place (Kernel Gateway
  keeps ``{id}`` literally, a route no client can call), and a parameter already used by
  the template is not appended again.

Deliberately different from Kernel Gateway, which logs a warning and serves on: an
operationId no document declares, a document in a markdown cell that is not JSON, an
operation whose method or path nb2svc cannot route, a notebook with no document, or a
``# GET /path`` cell in a swagger notebook, are compile errors naming the cell. Methods
are matched in upper case (Kernel Gateway 3 compares the document's ``get`` with the
request's ``GET`` and answers 405). A declared operation no cell implements is a warning.

The document itself travels in the :class:`~nb2svc.compiler.spec.ServiceSpec`
(``swagger``): ``/_api/spec/swagger.json`` answers it as Kernel Gateway does, and the
OpenAPI document takes its titles, summaries, descriptions and tags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from nb2svc.compiler.annotations import METHODS, Annotation, AnnotationError, parse_annotation

_Report = Callable[..., None]  # problem(cell, message, hint="")

#: Operation keys of a path item (anything else, such as ``parameters``, is not a method).
_OPERATION_KEYS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_TEMPLATE = re.compile(r"^\{([^{}]+)\}$")
KG_MODULE = "kernel_gateway.notebook_http.swagger.parser"


def operation_line(prefix: str) -> re.Pattern[str]:
    """``# operationId: NAME`` at the start of a line (Kernel Gateway's pattern)."""
    return re.compile(re.escape(prefix) + r"\s*operationId:\s*(.*)")


def response_info_line(prefix: str) -> re.Pattern[str]:
    """``# ResponseInfo operationId: NAME`` at the start of a line."""
    return re.compile(re.escape(prefix) + r"\s*ResponseInfo\s+operationId:\s*(.*)")


@dataclass(frozen=True)
class Operation:
    """One declared operation: where the document says it is and what nb2svc routes."""

    operation_id: str
    method: str
    doc_path: str
    route: str
    details: dict[str, Any]
    cell: int  # the markdown cell that declared it


@dataclass
class SwaggerNotebook:
    """The document(s) of a notebook and the operations they declare."""

    document: dict[str, Any] = field(default_factory=dict)
    cells: list[int] = field(default_factory=list)
    operations: dict[str, Operation] = field(default_factory=dict)


def _fenced(source: str) -> str:
    """The first fenced block of a markdown cell, or the whole cell (Kernel Gateway's rule)."""
    lines = source.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("```")]
    if len(lines) > 2 and starts:
        body = lines[starts[0] + 1 :]
        ends = [i for i, line in enumerate(body) if line.startswith("```")]
        lines = body[: ends[0]] if ends else body
    return "\n".join(lines)


def find_documents(cells: Iterable[tuple[int, str]], problem: _Report) -> SwaggerNotebook:
    """Merge the documents of the markdown cells ``(number, source)``; a cell whose block
    mentions ``"swagger"``/``"openapi"`` but is not a JSON object is a problem."""
    found = SwaggerNotebook()
    for number, source in cells:
        text = _fenced(source).strip()
        if not text.startswith("{"):
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            if '"swagger"' in text or '"openapi"' in text:
                problem(number, f"the Swagger/OpenAPI document is not valid JSON: {exc}", "fix the JSON")
            continue
        if isinstance(value, dict) and ("swagger" in value or "openapi" in value):
            found.document.update(value)
            found.cells.append(number)
    return found


def declare_operations(found: SwaggerNotebook, prefix: str, problem: _Report) -> None:
    """Fill ``found.operations`` from the merged document's ``paths``."""
    paths = found.document.get("paths")
    where = found.cells[-1] if found.cells else None
    if not isinstance(paths, dict):
        problem(where, 'the Swagger/OpenAPI document has no "paths" object', 'add "paths": {...}')
        return
    for doc_path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for key, details in item.items():  # a method key in any case ("GET"), as Kernel Gateway
            if str(key).lower() not in _OPERATION_KEYS:
                continue
            if not isinstance(details, dict) or "operationId" not in details:
                continue
            op_id = str(details["operationId"]).strip()
            if op_id in found.operations:
                other = found.operations[op_id]
                problem(
                    where,
                    f"operationId {op_id!r} is declared twice ({other.method} {other.doc_path!r} "
                    f"and {str(key).upper()} {doc_path!r})",
                    "give each operation its own operationId",
                )
                continue
            route = _route(str(doc_path), details.get("parameters"))
            method = str(key).upper()
            found.operations[op_id] = Operation(op_id, method, str(doc_path), route, details, where or 0)


def _route(doc_path: str, parameters: Any) -> str:
    """Kernel Gateway's route: templated segments become ``:name``, other named parameters
    are appended as ``/:name`` in order."""
    segments = []
    used: set[str] = set()
    for segment in doc_path.split("/"):
        match = _TEMPLATE.match(segment)
        if match:
            used.add(match.group(1))
            segments.append(":" + match.group(1))
        else:
            segments.append(segment)
    route = "/".join(segments)
    for parameter in parameters if isinstance(parameters, list) else ():
        if isinstance(parameter, dict) and "name" in parameter and str(parameter["name"]) not in used:
            route += "/:" + str(parameter["name"])
    return route if route.startswith("/") else "/" + route


class SwaggerAnnotations:
    """Reads the first line of a code cell the way the swagger cell parser does."""

    def __init__(self, found: SwaggerNotebook, prefix: str) -> None:
        self.found = found
        self.prefix = prefix
        self._operation = operation_line(prefix)
        self._response_info = response_info_line(prefix)
        self.used: set[str] = set()
        #: ``(method, route)`` → operationId, for the spec's endpoints.
        self.ids: dict[tuple[str, str], str] = {}

    def __call__(self, first_line: str) -> Annotation | None:
        """An :class:`Annotation` for an operation cell, ``None`` for setup code; raises
        :class:`AnnotationError` for an undeclared or unroutable operation."""
        line = first_line.strip()
        info = self._response_info.match(line)
        match = info or self._operation.match(line)
        if match is None:
            try:
                plain = parse_annotation(line, self.prefix)
            except AnnotationError:
                plain = None
            if plain is not None:
                raise AnnotationError(
                    f"{line!r} is a default-parser annotation, but this notebook uses the "
                    "swagger cell parser",
                    f"declare the operation in the document and write `{self.prefix} operationId: NAME`, "
                    "or compile with --cell-parser default",
                )
            return None
        op_id = match.group(1).strip()
        operation = self.found.operations.get(op_id)
        if operation is None:
            known = ", ".join(sorted(self.found.operations)) or "none"
            raise AnnotationError(
                f"operationId {op_id!r} is not declared in the Swagger/OpenAPI document",
                f"declared: {known}",
            )
        if operation.method not in METHODS:
            raise AnnotationError(
                f"operation {op_id!r} is {operation.method} {operation.doc_path!r}; "
                f"nb2svc serves {', '.join(METHODS)}",
                "declare it under another method",
            )
        kind = "ResponseInfo " if info else ""
        try:
            annotation = parse_annotation(
                f"{self.prefix} {kind}{operation.method} {operation.route}", self.prefix
            )
        except AnnotationError as exc:
            raise AnnotationError(
                f"operation {op_id!r} ({operation.method} {operation.doc_path!r}, route {operation.route}): "
                f"{exc.message}",
                exc.hint,
            ) from None
        assert annotation is not None
        if not info:
            self.used.add(op_id)
        self.ids[(annotation.method, annotation.path)] = op_id
        return annotation

    def unused(self) -> list[Operation]:
        """Declared operations no cell implements (Kernel Gateway warns about them too)."""
        return [op for op_id, op in self.found.operations.items() if op_id not in self.used]


def swagger_annotations(
    cells: list[NotebookNode], prefix: str, problem: _Report, source: Callable[[NotebookNode], str]
) -> SwaggerAnnotations:
    """The annotation reader for ``cells``; problems with the document are reported."""
    markdown = [(n, source(c)) for n, c in enumerate(cells, start=1) if c.cell_type == "markdown"]
    found = find_documents(markdown, problem)
    if not found.cells:
        problem(
            None,
            "no Swagger/OpenAPI document found (the swagger cell parser needs one)",
            'put a JSON object with a "swagger" or "openapi" key and "paths" in a markdown cell, '
            "inside a ``` fenced block",
        )
    else:
        declare_operations(found, prefix, problem)
    return SwaggerAnnotations(found, prefix)


#: Swagger 2.0 keeps a parameter's schema keywords on the parameter itself.
_SWAGGER2_SCHEMA_KEYS = (
    "type", "format", "items", "default", "enum", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
    "multipleOf", "description",
)  # fmt: skip


def swagger_contracts(
    endpoints: Iterable[Any], swagger: SwaggerAnnotations, declared: dict[tuple[str, str], dict[str, Any]]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Contracts from the document's parameter and request body schemas, for the endpoints
    whose cells declare none of their own (a notebook's own declaration wins). Every named
    parameter is a path parameter of the route (Kernel Gateway's rule), so each is required.
    A schema that refers elsewhere (``$ref``) is left out: the parameter stays text."""
    from nb2svc.compiler.declarations import SCHEMA_DIALECT

    found = dict(declared)
    for ep in endpoints:
        key = (ep.method, ep.path)
        op_id = swagger.ids.get(key)
        if op_id is None or op_id not in swagger.found.operations:
            continue
        details = swagger.found.operations[op_id].details
        contract = dict(found.get(key, {}))
        properties: dict[str, Any] = {}
        for parameter in details.get("parameters") or ():
            if not isinstance(parameter, dict) or "name" not in parameter:
                continue
            if parameter.get("in") == "body":
                schema = parameter.get("schema")
                if isinstance(schema, dict) and "$ref" not in json.dumps(schema) and "body" not in contract:
                    contract["body"] = {"$schema": SCHEMA_DIALECT, **schema}
                continue
            schema = parameter.get("schema")
            if not isinstance(schema, dict):
                schema = {k: parameter[k] for k in _SWAGGER2_SCHEMA_KEYS if k in parameter}
            if schema and "$ref" not in json.dumps(schema):
                properties[str(parameter["name"])] = schema
        if properties and "params" not in contract:
            required = [name for name in properties if name in ep.params]
            contract["params"] = {"$schema": SCHEMA_DIALECT, "type": "object", "properties": properties}
            if required:
                contract["params"]["required"] = required
        media = ((details.get("requestBody") or {}).get("content") or {}).get("application/json") or {}
        schema = media.get("schema") if isinstance(media, dict) else None
        if isinstance(schema, dict) and "$ref" not in json.dumps(schema) and "body" not in contract:
            contract["body"] = {"$schema": SCHEMA_DIALECT, **schema}
        contract = {k: v for k, v in contract.items() if k in found.get(key, {}) or _usable(v)}
        if contract:
            found[key] = contract
    return found


def _usable(schema: dict[str, Any]) -> bool:
    """Whether a schema from the document is valid JSON Schema 2020-12 (Swagger 2.0's
    boolean ``exclusiveMinimum``, for one, is not): an unusable one is left out."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        return False
    return True


__all__ = ["KG_MODULE", "SwaggerAnnotations", "find_documents", "swagger_annotations", "swagger_contracts"]
