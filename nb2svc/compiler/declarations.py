"""Typed contracts declared in the notebook: parameters, headers, the JSON body, the answer.

**The author's form** is a block of comment lines right under the annotation, one per
name, readable in the cell as it runs::

    # POST /orders/:id
    # param id: integer, minimum 1 - the order number
    # param qty: integer, minimum 1, maximum 100, default 1 - how many
    # param color: string, enum red|green|blue
    # header X-Api-Version: string, pattern ^v[0-9]+$
    # body sku: string, required, pattern ^[A-Z]{3}-[0-9]+$ - stock keeping unit
    # body gift: boolean, default false
    # returns total: number, required

    {prefix} KIND NAME: TYPE[, FACET]...[ - description]

    KIND   param (a path parameter of the annotation, else a query argument)
           | header | body (a field of a JSON object body) | returns (a field of the JSON answer)
    TYPE   string | integer | number | boolean | object | array [of TYPE]
           (int, str, float, bool, list are accepted for their JSON Schema names)
    FACET  required | optional | default VALUE | enum A|B|C | pattern REGEX | format NAME
           | minimum N | maximum N | exclusiveMinimum N | exclusiveMaximum N | multipleOf N
           | minLength N | maxLength N | minItems N | maxItems N

A value is read as its type says (``default 1`` of an integer is ``1``); a value that
holds ``,`` or `` - `` is written as a JSON string (``pattern "^a, b$"``). Path
parameters are always required. ``body`` and ``returns`` fields make an object.

**The machine form** is the cell's metadata, beside ``examples``::

    {"nb2svc": {"params": {JSON Schema of an object: path and query names},
                "headers": {JSON Schema of an object: header names},
                "body": {JSON Schema of the JSON body},
                "returns": {JSON Schema of a JSON answer}}}

Both compile to JSON Schema 2020-12, kept per endpoint as ``Endpoint.contract``
(``{"params": ..., "headers": ..., "body": ..., "returns": ...}``, only the declared
ones). Every mistake is a problem naming the cell (and the line, for the author's form).
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from nb2svc.compiler.spec import Endpoint

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KINDS = ("param", "header", "body", "returns")
#: The machine form's keys: ``(metadata key, contract key)``.
METADATA_SECTIONS = ("params", "headers", "body", "returns")
#: PARAMS keys the runtime fills itself; a parameter may not take them.
RESERVED_PARAMS = frozenset({"body"})

TYPES = ("string", "integer", "number", "boolean", "object", "array")
_TYPE_ALIASES = {"int": "integer", "str": "string", "float": "number", "bool": "boolean", "list": "array"}
_NUMBER_FACETS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_COUNT_FACETS = ("minLength", "maxLength", "minItems", "maxItems")
_VALUE_FACETS = ("default", "enum", "pattern", "format") + _NUMBER_FACETS + _COUNT_FACETS
_FLAG_FACETS = ("required", "optional")

_LINE = re.compile(r"(?P<kind>[A-Za-z]+)\s+(?P<name>[^\s:]+)\s*:\s*(?P<rest>.*)\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")

Problem = Callable[..., None]  # problem(cell, message, hint="", line=None)


class DeclarationError(ValueError):
    """One declaration line that cannot be read; the message says what to write."""


def declared_contracts(
    cells: Sequence[Any], endpoints: Sequence[Endpoint], prefix: str, problem: Problem
) -> dict[tuple[str, str], dict[str, Any]]:
    """The contract of each endpoint ``(method, path)`` that declares one; problems reported."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for ep in endpoints:
        builder = _Builder(ep, problem)
        for number in ep.cells:
            source = cells[number - 1].get("source", "")
            builder.read_lines(number, "".join(source) if isinstance(source, list) else source, prefix)
        for number in ep.cells + (ep.response_info.cells if ep.response_info else ()):
            ours = (cells[number - 1].get("metadata") or {}).get("nb2svc")
            if isinstance(ours, dict):
                builder.read_metadata(number, ours)
        contract = builder.contract()
        if contract:
            found[ep.method, ep.path] = contract
    return found


class _Builder:
    """Gathers one endpoint's declarations from its cells' lines and metadata."""

    def __init__(self, endpoint: Endpoint, problem: Problem) -> None:
        self.endpoint = endpoint
        self.problem = problem
        self.fields: dict[str, dict[str, tuple[str, dict[str, Any], bool]]] = {k: {} for k in KINDS}
        self.machine: dict[str, tuple[dict[str, Any], int]] = {}

    def read_lines(self, cell: int, code: str, prefix: str) -> None:
        """The declaration block under the annotation; a declaration further down is a problem
        (it would silently not apply)."""
        in_block = True  # the comment lines (blank lines allowed) before the first code line
        for number, line in enumerate(code.splitlines()[1:], start=2):
            text = line.strip()
            if not text.startswith(prefix):
                in_block = in_block and not text
                continue
            body = text[len(prefix) :].strip()
            match = _LINE.match(body)
            if match is None or match["kind"] not in KINDS:
                continue
            if not in_block:
                self.problem(
                    cell,
                    f"`{text}` is below the code: declarations go in the comment block right "
                    "under the annotation",
                    "move it up, under the annotation line",
                    number,
                )
                continue
            try:
                self._add_line(match)
            except DeclarationError as exc:
                self.problem(cell, f"`{text}`: {exc}", _GRAMMAR_HINT, number)

    def _add_line(self, match: re.Match[str]) -> None:
        kind, name, rest = match["kind"], match["name"], match["rest"]
        if kind == "header":
            if not _HEADER_NAME.match(name):
                raise DeclarationError(f"{name!r} is not a header name")
        elif kind == "param" and not _NAME.match(name):
            raise DeclarationError(f"{name!r} is not a parameter name (letters, digits and _)")
        if kind == "param" and name in RESERVED_PARAMS:
            raise DeclarationError(f"a parameter cannot be called {name!r}: PARAMS[{name!r}] holds the body")
        schema, required = parse_declaration(rest)
        table = self.fields[kind]
        key = name.lower() if kind == "header" else name
        if key in table:
            raise DeclarationError(f"{kind} {name} is declared twice")
        if kind == "param" and name in self.endpoint.params:
            if "default" in schema:
                raise DeclarationError(f"the path parameter :{name} always has a value; it takes no default")
            required = True
        table[key] = (name, schema, required)

    def read_metadata(self, cell: int, ours: dict[str, Any]) -> None:
        for key in METADATA_SECTIONS:
            if key not in ours:
                continue
            schema = ours[key]
            problem = _schema_problem(schema, object_of_names=key in ("params", "headers"))
            if problem:
                self.problem(cell, f"nb2svc.{key}: {problem}", "give a JSON Schema (2020-12)")
                continue
            if key in self.machine:
                self.problem(cell, f"nb2svc.{key} is declared twice (also cell {self.machine[key][1]})")
                continue
            self.machine[key] = (schema, cell)

    def contract(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, kind in zip(METADATA_SECTIONS, KINDS, strict=True):
            declared = self.fields[kind]
            machine = self.machine.get(key)
            if not declared and machine is None:
                continue
            if machine is None:
                schema: dict[str, Any] = {"type": "object", "properties": {}}
            else:
                schema = json.loads(json.dumps(machine[0]))  # a copy the spec owns
                if declared and schema.get("type") not in (None, "object"):
                    self.problem(
                        machine[1],
                        f"nb2svc.{key} is not an object schema, but `{kind}` lines declare fields of it",
                        "declare it in one place",
                    )
                    continue
                schema.setdefault("properties", {})
            for label, field_schema, required in declared.values():
                if label in schema["properties"]:
                    self.problem(
                        machine[1] if machine else self.endpoint.cells[0],
                        f"{kind} {label} is declared both in a comment line and in nb2svc.{key}",
                        "declare it in one place",
                    )
                    continue
                schema["properties"][label] = field_schema
                if required and label not in schema.get("required", []):
                    schema.setdefault("required", []).append(label)
            if key == "params":
                for name in self.endpoint.params:
                    if name in schema["properties"] and name not in schema.get("required", []):
                        schema.setdefault("required", []).append(name)
                reserved = RESERVED_PARAMS & set(schema["properties"])
                if reserved:
                    self.problem(
                        machine[1] if machine else self.endpoint.cells[0],
                        f"a parameter cannot be called {sorted(reserved)[0]!r}: "
                        "PARAMS['body'] holds the body",
                    )
            if not schema["properties"] and machine is not None and "properties" not in machine[0]:
                del schema["properties"]
            out[key] = {"$schema": SCHEMA_DIALECT, **schema}
        return out


_GRAMMAR_HINT = (
    "write `KIND NAME: TYPE[, FACET]...[ - description]`, e.g. `param qty: integer, minimum 1 - how many`"
)


def parse_declaration(text: str) -> tuple[dict[str, Any], bool]:
    """``integer, minimum 1 - how many`` → ``({"type": "integer", "minimum": 1,
    "description": "how many"}, required)``; :class:`DeclarationError` says what is wrong."""
    facets_text, description = _split_description(text)
    parts = _split_top(facets_text, ",")
    if not parts or not parts[0]:
        raise DeclarationError("missing type after ':'")
    schema = _type_schema(parts[0])
    required = False
    for part in parts[1:]:
        if not part:
            raise DeclarationError("empty facet between commas")
        word, _, value = part.partition(" ")
        value = value.strip()
        facet = _facet_name(word)
        if facet in _FLAG_FACETS:
            if value:
                raise DeclarationError(f"{facet} takes no value")
            required = facet == "required"
            continue
        if not value:
            raise DeclarationError(f"{facet} needs a value")
        if facet in schema:
            raise DeclarationError(f"{facet} is given twice")
        schema[facet] = _facet_value(facet, value, schema)
    if description:
        schema["description"] = description
    _check_schema_sane(schema)
    return schema, required


def _split_description(text: str) -> tuple[str, str]:
    parts = _split_top(text, " - ", strip=False)
    if len(parts) == 1:
        return text.strip(), ""
    return parts[0].strip(), " - ".join(parts[1:]).strip()


def _split_top(text: str, separator: str, strip: bool = True) -> list[str]:
    """Split at ``separator`` outside JSON strings."""
    parts, current, quoted, index = [], [], False, 0
    while index < len(text):
        char = text[index]
        if quoted and char == "\\":
            current.append(text[index : index + 2])
            index += 2
            continue
        if char == '"':
            quoted = not quoted
        if not quoted and text.startswith(separator, index):
            parts.append("".join(current))
            current = []
            index += len(separator)
            continue
        current.append(char)
        index += 1
    if quoted:
        raise DeclarationError("a quoted value is not closed")
    parts.append("".join(current))
    return [p.strip() for p in parts] if strip else parts


def _type_schema(text: str) -> dict[str, Any]:
    words = text.split()
    name = _type_name(words[0])
    if len(words) == 1:
        return {"type": name}
    if name == "array" and len(words) == 3 and words[1] == "of":
        return {"type": "array", "items": {"type": _type_name(words[2])}}
    raise DeclarationError(f"unknown type {text!r}: write one of {', '.join(TYPES)}, or `array of TYPE`")


def _type_name(word: str) -> str:
    name = _TYPE_ALIASES.get(word, word)
    if name in TYPES:
        return name
    close = difflib.get_close_matches(word, TYPES, n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    raise DeclarationError(f"unknown type {word!r}{guess}: use one of {', '.join(TYPES)}")


def _facet_name(word: str) -> str:
    known = _VALUE_FACETS + _FLAG_FACETS
    if word in known:
        return word
    by_lower = {k.lower(): k for k in known}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    close = difflib.get_close_matches(word, known, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise DeclarationError(f"unknown facet {word!r} ({guess}known: {', '.join(known)})")


def _facet_value(facet: str, text: str, schema: dict[str, Any]) -> Any:
    if facet == "enum":
        return [_typed_value(v.strip(), schema) for v in text.split("|")]
    if facet == "default":
        return _typed_value(text, schema)
    if facet in ("pattern", "format"):
        value = _json_string(text) if text.startswith('"') else text
        if facet == "pattern":
            try:
                re.compile(value)
            except re.error as exc:
                raise DeclarationError(f"pattern {value!r} is not a regular expression: {exc}") from None
        return value
    number = _number(text)
    if facet in _COUNT_FACETS and (not isinstance(number, int) or number < 0):
        raise DeclarationError(f"{facet} is a count: a whole number 0 or more, not {text!r}")
    return number


def _typed_value(text: str, schema: dict[str, Any]) -> Any:
    """A default or enum value, read as the property's type says."""
    kind = schema["type"]
    if kind == "string":
        return _json_string(text) if text.startswith('"') else text
    if kind in ("integer", "number"):
        value = _number(text)
        if kind == "integer" and not isinstance(value, int):
            raise DeclarationError(f"{text!r} is not an integer")
        return value
    if kind == "boolean":
        if text not in ("true", "false"):
            raise DeclarationError(f"{text!r} is not a boolean: write true or false")
        return text == "true"
    try:
        return json.loads(text)
    except ValueError:
        raise DeclarationError(f"{text!r} is not a JSON {kind}") from None


def _json_string(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        raise DeclarationError(f"{text} is not a JSON string") from None
    if not isinstance(value, str):
        raise DeclarationError(f"{text} is not a JSON string")
    return value


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise DeclarationError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise DeclarationError(f"{text!r} is not a finite number")
    return value


def _check_schema_sane(schema: dict[str, Any]) -> None:
    """Facets that do not fit the type, and a default that breaks its own schema."""
    kind = schema["type"]
    for facet in _NUMBER_FACETS:
        if facet in schema and kind not in ("integer", "number"):
            raise DeclarationError(f"{facet} applies to numbers, not to {kind}")
    for facet in ("minLength", "maxLength", "pattern", "format"):
        if facet in schema and kind != "string":
            raise DeclarationError(f"{facet} applies to strings, not to {kind}")
    for facet in ("minItems", "maxItems"):
        if facet in schema and kind != "array":
            raise DeclarationError(f"{facet} applies to arrays, not to {kind}")
    if "default" in schema:
        from jsonschema import Draft202012Validator

        probe = {k: v for k, v in schema.items() if k not in ("default", "description")}
        error = next(iter(Draft202012Validator(probe).iter_errors(schema["default"])), None)
        if error is not None:
            raise DeclarationError(
                f"the default {schema['default']!r} breaks its own schema: {error.message}"
            )


def _schema_problem(schema: Any, object_of_names: bool) -> str:
    """Why ``schema`` is not a usable JSON Schema here ('' when it is)."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
    if object_of_names and schema.get("type", "object") != "object":
        return 'must describe an object ("type": "object") whose properties are the names'
    if object_of_names and not isinstance(schema.get("properties", {}), dict):
        return "properties must be an object"
    return ""


__all__ = [
    "KINDS",
    "SCHEMA_DIALECT",
    "DeclarationError",
    "check_examples",
    "declared_contracts",
    "parse_declaration",
]


def check_examples(endpoints: Sequence[Endpoint], problem: Problem) -> None:
    """Every example against its endpoint's contract: a request that breaks it (unless the
    example expects a 4xx answer, as an example of a refusal does) and a 200 JSON answer
    that breaks the declared ``returns`` schema are problems naming the example's cell."""
    from nb2svc.compiler.validation import Contract

    for ep in endpoints:
        if not ep.contract or not ep.examples:
            continue
        contract = Contract(ep.contract, ep.params)
        for index, example in enumerate(ep.examples):
            request, response = example["request"], example["response"]
            label = f"nb2svc.examples[{index}] ({example['name']})"
            if contract.checks_request and not 400 <= response["status"] < 500:
                split = urllib.parse.urlsplit(request["path"])
                segments = [urllib.parse.unquote(s) for s in split.path.split("/") if s]
                path = {p[1:]: s for p, s in zip(ep.segments, segments, strict=False) if p.startswith(":")}
                args: dict[str, list[str]] = {}
                for name, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
                    args.setdefault(name, []).append(value)
                checked = contract.check_request(
                    path,
                    args,
                    request.get("headers", {}),
                    request.get("json"),
                    has_body="json" in request or bool(request.get("body")),
                    json_body="json" in request,
                )
                for error in checked.errors:
                    problem(
                        example["cell"],
                        f"{label} breaks the endpoint's contract at {error['pointer']}: {error['message']}",
                        "fix the example, or expect a 400 answer if it shows a refused request",
                    )
            if response["status"] == 200 and "json" in response:
                for error in contract.check_answer(response["json"]):
                    problem(
                        example["cell"],
                        f"{label}: its answer breaks the declared returns schema at "
                        f"{error['pointer']}: {error['message']}",
                    )
