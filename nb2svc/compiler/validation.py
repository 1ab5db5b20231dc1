"""Check one request (or one answer) against an endpoint's declared contract.

Pure data in, data out, so the same rules serve the worker (before a kernel is leased),
the compiler (every example is checked against its own endpoint's contract) and
``nb2svc test`` (answers against a declared ``returns`` schema).

What a request is checked as:

- ``params``: one object of the path parameters and the query arguments the schema
  names. Path and query values arrive as text and are read as the declared type first
  (``"2"`` of an ``integer`` is ``2``, ``"true"`` of a ``boolean`` is ``True``; text that
  is not such a value stays text and the type check reports it). A query argument
  given several times is an array when the schema says ``array``, else an error.
  Declared defaults fill absent names.
- ``headers``: the same, header names matched without regard to case.
- ``body``: the parsed JSON body, defaults filled in at every declared object level. A
  request without a body is checked as ``{}`` when ``{}`` satisfies the schema,
  otherwise it lacks its required body. A body that is not JSON is refused.

Every violation is reported, each as ``{"pointer", "expected", "got", "message"}``:
``pointer`` is a JSON pointer into what the cell receives as ``PARAMS`` (``/qty``,
``/body/items/0/sku``; headers under ``/headers/...``).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


@dataclass
class Checked:
    """What a check found: the typed values (``PARAMS``) and every violation."""

    params: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


class Contract:
    """The compiled validators of one endpoint's contract (built once, used per request)."""

    def __init__(self, contract: Mapping[str, Any], path_params: tuple[str, ...] = ()) -> None:
        self.path_params = path_params
        self.schemas = dict(contract)
        self._validators = {key: _validator(schema) for key, schema in contract.items()}

    @property
    def checks_request(self) -> bool:
        return any(key in self._validators for key in ("params", "headers", "body"))

    def check_request(
        self,
        path: Mapping[str, str],
        args: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: Any = None,
        *,
        has_body: bool = False,
        json_body: bool = True,
    ) -> Checked:
        """Check one request; ``headers`` is looked up by lower-case name."""
        checked = Checked(params=dict(path))
        schema = self.schemas.get("params")
        if schema is not None:
            values = dict(path)
            for name, prop in (schema.get("properties") or {}).items():
                if name in path:
                    values[name] = coerce(path[name], prop)
                elif name in args:
                    found = args[name]
                    kinds = _types(prop)
                    if "array" in kinds and (len(found) != 1 or kinds == ["array"]):
                        values[name] = [coerce(v, prop.get("items") or {}) for v in found]
                    elif len(found) == 1:
                        values[name] = coerce(found[0], prop)
                    else:
                        checked.errors.append(
                            _entry(
                                f"/{_escape(name)}",
                                "one value",
                                found,
                                f"{name} was given {len(found)} times",
                            )
                        )
                        continue
            _fill_defaults(values, schema)
            checked.errors += self._errors("params", values, "")
            checked.params = values
        schema = self.schemas.get("headers")
        if schema is not None:
            lowered = {k.lower(): v for k, v in headers.items()}
            values = {}
            for name, prop in (schema.get("properties") or {}).items():
                if name.lower() in lowered:
                    values[name] = coerce(lowered[name.lower()], prop)
            _fill_defaults(values, schema)
            checked.errors += self._errors("headers", values, "/headers")
        schema = self.schemas.get("body")
        if schema is not None:
            if not has_body:
                if self._validators["body"].is_valid({}):
                    body = {}
                else:
                    checked.errors.append(_entry("/body", "a JSON body", None, "the request has no body"))
                    return checked
            elif not json_body:
                checked.errors.append(
                    _entry(
                        "/body", "a JSON body (Content-Type: application/json)", None, "the body is not JSON"
                    )
                )
                return checked
            body = copy.deepcopy(body)
            _fill_defaults(body, schema)
            checked.errors += self._errors("body", body, "/body")
            checked.params["body"] = body
        return checked

    def check_answer(self, value: Any) -> list[dict[str, Any]]:
        """Violations of the declared ``returns`` schema by a JSON answer."""
        return self._errors("returns", value, "") if "returns" in self._validators else []

    def _errors(self, key: str, instance: Any, base: str) -> list[dict[str, Any]]:
        validator = self._validators[key]
        if validator.is_valid(instance):
            return []
        return describe_errors(validator.iter_errors(instance), base)


class _Validator:
    """One schema's validators: fastjsonschema's compiled function answers "valid?" for the
    common case, jsonschema (the reference implementation of 2020-12) lists the errors.

    Measured on a small request (bench/contract_bench.py): jsonschema's ``is_valid`` about
    28 us, fastjsonschema's compiled check about 2 us. fastjsonschema implements draft-07,
    so it is used only for schemas whose every keyword means the same in both drafts
    (:func:`draft7_compatible`); and when it says "invalid", jsonschema decides and
    explains, so the two can never disagree in what a client is told.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        self.full = Draft202012Validator(schema)
        self.fast: Any = None
        if draft7_compatible(schema):
            import fastjsonschema

            draft7 = {k: v for k, v in schema.items() if k != "$schema"}
            draft7["$schema"] = "http://json-schema.org/draft-07/schema#"
            self._fast_error = fastjsonschema.JsonSchemaException
            try:
                self.fast = fastjsonschema.compile(draft7, use_default=False)
            except (fastjsonschema.JsonSchemaDefinitionException, re.error, ValueError):
                self.fast = None  # jsonschema alone, then

    def is_valid(self, instance: Any) -> bool:
        if self.fast is not None:
            try:
                self.fast(instance)
            except self._fast_error:
                pass
            else:
                return True
        return bool(self.full.is_valid(instance))

    def iter_errors(self, instance: Any) -> Any:
        return self.full.iter_errors(instance)


def _validator(schema: Mapping[str, Any]) -> _Validator:
    return _Validator(schema)


#: Keywords that mean the same in draft-07 and 2020-12 (``format`` is left out: jsonschema
#: treats it as an annotation, fastjsonschema asserts it; ``$ref`` and ``items`` as a list
#: changed meaning).
_SHARED_KEYWORDS = frozenset(
    {
        "$schema", "$comment", "type", "enum", "const", "multipleOf", "maximum", "minimum",
        "exclusiveMaximum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
        "minItems", "uniqueItems", "maxProperties", "minProperties", "required", "properties",
        "patternProperties", "additionalProperties", "propertyNames", "items", "contains",
        "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "default", "title",
        "description", "examples", "readOnly", "writeOnly", "deprecated",
    }
)  # fmt: skip
_SUBSCHEMA = ("additionalProperties", "propertyNames", "items", "contains", "not", "if", "then", "else")
_SUBSCHEMA_MAPS = ("properties", "patternProperties")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def draft7_compatible(schema: Any) -> bool:
    """Whether ``schema`` validates exactly alike under draft-07 and 2020-12."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, Mapping) or not set(schema) <= _SHARED_KEYWORDS:
        return False
    if isinstance(schema.get("items"), list):
        return False
    return (
        all(draft7_compatible(schema[k]) for k in _SUBSCHEMA if k in schema)
        and all(draft7_compatible(v) for k in _SUBSCHEMA_MAPS for v in (schema.get(k) or {}).values())
        and all(draft7_compatible(v) for k in _SUBSCHEMA_LISTS for v in (schema.get(k) or []))
    )


def describe_errors(errors: Any, base: str = "") -> list[dict[str, Any]]:
    """jsonschema's errors as ``{"pointer", "expected", "got", "message"}``, in document order;
    a missing required name is reported at its own pointer."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        where = base + "".join(f"/{_escape(str(p))}" for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                pointer = f"{where}/{_escape(name)}"
                if name not in error.instance and pointer not in seen:
                    seen.add(pointer)
                    found.append(_entry(pointer, "a value (required)", None, f"{name!r} is required"))
            continue
        found.append(_entry(where or "/", _expected(error), _got(error.instance), error.message))
    return found


def _entry(pointer: str, expected: str, got: Any, message: str) -> dict[str, Any]:
    return {"pointer": pointer, "expected": expected, "got": got, "message": message}


def _expected(error: Any) -> str:
    keyword, value = error.validator, error.validator_value
    if keyword == "type":
        return " or ".join(value) if isinstance(value, list) else str(value)
    if keyword == "enum":
        return "one of " + ", ".join(json.dumps(v) for v in value)
    if keyword == "const":
        return json.dumps(value)
    if isinstance(value, (dict, list)):
        return f"{keyword} (see the schema)"
    return f"{keyword} {value if isinstance(value, str) else json.dumps(value)}"


def _got(instance: Any) -> Any:
    """The offending value, or only its kind for an object or array (which may be large)."""
    if isinstance(instance, dict):
        return "an object"
    if isinstance(instance, list):
        return "an array"
    return instance


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    return [kind] if isinstance(kind, str) else list(kind or [])


def coerce(text: str, schema: Mapping[str, Any]) -> Any:
    """``text`` (a path, query or header value) read as the schema's type, else unchanged."""
    for kind in _types(schema):
        if kind == "string":
            return text
        if kind == "integer" and _INTEGER.match(text):
            return int(text)
        if kind == "number":
            if _INTEGER.match(text):
                return int(text)
            try:
                value = float(text)
            except ValueError:
                continue
            if value == value and value not in (float("inf"), float("-inf")):
                return value
        if kind == "boolean" and text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        if kind == "null" and text in ("", "null"):
            return None
        if kind in ("object", "array"):
            try:
                return json.loads(text)
            except ValueError:
                continue
    return text


def _fill_defaults(instance: Any, schema: Mapping[str, Any]) -> None:
    """Declared defaults for absent properties, at every object level of ``instance``."""
    if not isinstance(instance, dict) or not isinstance(schema, Mapping):
        return
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, Mapping):
            continue
        if name not in instance and "default" in prop:
            instance[name] = copy.deepcopy(prop["default"])
        elif name in instance:
            _fill_defaults(instance[name], prop)


__all__ = ["Checked", "Contract", "coerce", "describe_errors"]
