"""The compiled service: the only contract between the compiler and the runtime.

A :class:`ServiceSpec` is what ``nb2svc build`` writes to ``service.json`` and what
``nb2svc serve`` loads. It is plain data (no kernels, no sockets) so that a bundle
built on one machine serves on another, and so that the runtime never has to parse
annotations.

``service.json`` layout (``format`` 1)::

    {
      "format": 1,
      "name": "hello",                      # service name, from the notebook file name
      "notebook": "hello.ipynb",
      "kernel": {"name": "python3", "language": "python"},
      "setup": [{"cell": 1, "code": "..."}],          # non-annotated code cells, in order
      "endpoints": [                                  # ordered: literal segments win
        {"method": "GET", "path": "/hello/:name", "params": ["name"],
         "cells": [2], "code": "...",
         "response_info": {"cells": [3], "code": "..."} | null,
         "summary": "...", "description": "...",
         "examples": [...],                           # see nb2svc.compiler.examples
         "response": "sync" | "stream" | "job",
         "operation_id": "...",                       # only with the swagger cell parser
         "contract": {"params": {...}, "headers": {...},   # only when declared: JSON Schema
                      "body": {...}, "returns": {...}}}    # 2020-12, see compiler.declarations
      ],
      "swagger": {...}                                # only with the swagger cell parser:
    }                                                 # the notebook's own document

Cell numbers are 1-based positions in the notebook's ``cells`` list (markdown cells
count), matching what a user sees when counting cells in Jupyter.

``contract`` is optional and read with a default, so a ``service.json`` written before
contracts existed still serves (its endpoints accept any request, as they did).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SPEC_FORMAT = 1
#: How an endpoint answers: at once, as a stream of its output, or as an async job.
RESPONSE_MODES = ("sync", "stream", "job")


@dataclass(frozen=True)
class SetupCell:
    """A code cell without an annotation: run once on every kernel at start."""

    cell: int
    code: str


@dataclass(frozen=True)
class ResponseInfo:
    """The concatenated ``ResponseInfo`` cells of one endpoint.

    The code prints ``{"status": int, "headers": {name: value}}`` as JSON; the runtime
    applies it to the HTTP response.
    """

    cells: tuple[int, ...]
    code: str


@dataclass(frozen=True)
class Endpoint:
    """One HTTP route: a method, a path pattern and the code that answers it.

    ``path`` uses Kernel Gateway syntax (``/items/:id``); ``params`` lists the
    parameter names in path order. ``code`` is the concatenation (joined with a
    newline) of every cell carrying this annotation, annotation lines included, so
    that traceback line numbers match the notebook.
    """

    method: str
    path: str
    params: tuple[str, ...]
    cells: tuple[int, ...]
    code: str
    response_info: ResponseInfo | None = None
    summary: str = ""
    description: str = ""
    #: Declared example requests and answers (see :mod:`nb2svc.compiler.examples`).
    examples: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    #: One of :data:`RESPONSE_MODES`.
    response: str = "sync"
    #: The document's ``operationId`` (swagger cell parser; empty otherwise).
    operation_id: str = ""
    #: Declared JSON Schemas: ``params``, ``headers``, ``body``, ``returns`` (see
    #: :mod:`nb2svc.compiler.declarations`); empty when nothing is declared.
    contract: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def flask_rule(self) -> str:
        """``/items/:id`` → ``/items/<id>``: the Werkzeug rule used by the runtime and by
        generated ``app.py`` files (a segment never matches a ``/``, as in the reference)."""
        return "/".join(f"<{s[1:]}>" if s.startswith(":") else s for s in self.path.split("/"))

    @property
    def segments(self) -> tuple[str, ...]:
        """Path segments, without the leading empty one (``/a/:b`` → ``("a", ":b")``)."""
        return tuple(s for s in self.path.split("/") if s)


@dataclass(frozen=True)
class KernelInfo:
    name: str
    language: str


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    notebook: str
    kernel: KernelInfo
    setup: tuple[SetupCell, ...]
    endpoints: tuple[Endpoint, ...]
    warnings: tuple[str, ...] = field(default=(), compare=False)
    #: The notebook's own Swagger/OpenAPI document (swagger cell parser; ``None`` otherwise).
    swagger: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def setup_code(self) -> str:
        """All setup cells joined in notebook order, as one execute."""
        return "\n\n".join(c.code for c in self.setup)

    def paths(self) -> dict[str, list[Endpoint]]:
        """Endpoints grouped by path pattern, keeping the endpoint order."""
        grouped: dict[str, list[Endpoint]] = {}
        for ep in self.endpoints:
            grouped.setdefault(ep.path, []).append(ep)
        return grouped

    # --- serialisation -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "name": self.name,
            "notebook": self.notebook,
            "kernel": {"name": self.kernel.name, "language": self.kernel.language},
            "setup": [{"cell": c.cell, "code": c.code} for c in self.setup],
            "endpoints": [
                {
                    "method": ep.method,
                    "path": ep.path,
                    "params": list(ep.params),
                    "cells": list(ep.cells),
                    "code": ep.code,
                    "response_info": (
                        {"cells": list(ep.response_info.cells), "code": ep.response_info.code}
                        if ep.response_info
                        else None
                    ),
                    "summary": ep.summary,
                    "description": ep.description,
                    "examples": list(ep.examples),
                    "response": ep.response,
                }
                | ({"operation_id": ep.operation_id} if ep.operation_id else {})
                | ({"contract": ep.contract} if ep.contract else {})
                for ep in self.endpoints
            ],
        } | ({"swagger": self.swagger} if self.swagger is not None else {})

    def to_json(self) -> str:
        """Deterministic JSON (sorted keys, fixed indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceSpec:
        if data.get("format") != SPEC_FORMAT:
            raise ValueError(
                f"unsupported service.json format {data.get('format')!r} (this nb2svc reads {SPEC_FORMAT}); "
                "rebuild the bundle with this version of nb2svc"
            )
        endpoints = []
        for ep in data["endpoints"]:
            ri = ep.get("response_info")
            endpoints.append(
                Endpoint(
                    method=ep["method"],
                    path=ep["path"],
                    params=tuple(ep["params"]),
                    cells=tuple(ep["cells"]),
                    code=ep["code"],
                    response_info=ResponseInfo(tuple(ri["cells"]), ri["code"]) if ri else None,
                    summary=ep.get("summary", ""),
                    description=ep.get("description", ""),
                    examples=tuple(ep.get("examples", ())),
                    response=ep.get("response", "sync"),
                    operation_id=ep.get("operation_id", ""),
                    contract=dict(ep.get("contract") or {}),
                )
            )
        return cls(
            name=data["name"],
            notebook=data["notebook"],
            kernel=KernelInfo(**data["kernel"]),
            setup=tuple(SetupCell(c["cell"], c["code"]) for c in data["setup"]),
            endpoints=tuple(endpoints),
            swagger=data.get("swagger"),
        )

    @classmethod
    def from_json(cls, text: str) -> ServiceSpec:
        return cls.from_dict(json.loads(text))
