"""Compile a notebook into a :class:`ServiceSpec`.

Rules (Kernel Gateway's, plus checks it does not make):

- Cell numbers are 1-based positions in ``nb.cells``; markdown and raw cells count.
- A code cell whose first line is an annotation belongs to that endpoint (or to its
  ResponseInfo); every other non-blank code cell is setup code, in notebook order.
- Cells with the same method and path are concatenated in notebook order, joined with
  ``"\\n"``, annotation lines included.
- Errors (all collected, raised as one :class:`CompileError`): a malformed annotation;
  an endpoint path under ``/_api/`` (the server's own paths);
  a ResponseInfo without an endpoint of the same method and path; two paths that differ
  only in parameter names (``/items/:id`` and ``/items/:key``), whatever their methods;
  no endpoints at all (reported only when no annotation was malformed, since fixing
  those is then the fix).
- Near misses (:mod:`nb2svc.compiler.near_miss`) are errors too: an annotation-shaped
  first line that does not parse (``# GET/x``, ``## GET /x``, ``# ResponceInfo GET /ok``,
  another language's comment marker) and an annotation below a cell's first line. A
  Python setup cell that does not parse (:mod:`nb2svc.compiler.syntax`) is an error with
  its line; malformed contract declarations (:mod:`nb2svc.compiler.declarations`) and
  examples that break their endpoint's contract are errors.
- Warnings (in ``spec.warnings``, never fatal): paths that overlap but resolve because
  literal segments win over parameters (``/users/me`` and ``/users/:id``); where Kernel
  Gateway serves the notebook anyway, a syntax error in an endpoint cell and a second
  annotation inside an endpoint cell.
- Endpoint order: by path segments, a literal before a parameter at the first
  differing position (so ``/users/me`` precedes ``/users/:id``), literals
  alphabetically, shorter paths first; then by method in :data:`METHODS` order.
- Examples in endpoint cells' metadata are checked (:mod:`nb2svc.compiler.examples`);
  a malformed one is an error naming the cell.
- ``metadata.nb2svc.response`` of an endpoint's first cell: ``"sync"`` (default),
  ``"stream"`` (output sent as it is produced) or ``"job"`` (202 and a job to poll).
- Docs: the markdown cell immediately before an endpoint's first cell gives its
  ``summary`` (first non-blank line, leading ``#`` stripped) and ``description`` (the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import combinations

from nbformat import NotebookNode

from nb2svc.compiler.annotations import METHODS, Annotation, AnnotationError, parse_annotation, route_pattern
from nb2svc.compiler.declarations import check_examples, declared_contracts
from nb2svc.compiler.errors import CompileError, CompileProblem
from nb2svc.compiler.examples import declared_examples
from nb2svc.compiler.near_miss import first_line_near_miss, later_annotation
from nb2svc.compiler.notebook import LoadedNotebook, NotebookSource, load_notebook
from nb2svc.compiler.spec import RESPONSE_MODES, Endpoint, ResponseInfo, ServiceSpec, SetupCell
from nb2svc.compiler.swagger_parser import (
    SwaggerAnnotations,
    operation_line,
    response_info_line,
    swagger_annotations,
    swagger_contracts,
)
from nb2svc.compiler.syntax import CellSyntax, checks_language

#: ``compile_notebook``'s ``cell_parser`` values (``--cell-parser``).
CELL_PARSERS = ("default", "swagger")

_Report = Callable[..., None]  # problem(cell, message, hint="")

#: The server's own paths live here; an endpoint under it is a compile error (the runtime
#: exempts exactly its health paths from auth, and must never share them with notebook code).
RESERVED = "/_api"


@dataclass
class _Route:
    """Cells sharing one annotation, gathered in notebook order."""

    annotation: Annotation
    cells: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.cells[0]

    @property
    def code(self) -> str:
        return "\n".join(self.parts)


def compile_notebook(
    source: NotebookSource,
    *,
    name: str | None = None,
    comment_prefix: str | None = None,
    cell_parser: str = "default",
) -> ServiceSpec:
    """Compile ``source`` (a path, notebook JSON text, or a notebook object) into a spec.

    ``name`` defaults to the notebook file's stem (``"service"`` in memory);
    ``comment_prefix`` overrides the one derived from the kernel language;
    ``cell_parser`` is ``"default"`` (``# GET /path`` cells) or ``"swagger"`` (Kernel
    Gateway's swagger cell parser, see :mod:`nb2svc.compiler.swagger_parser`). Raises
    :class:`CompileError` carrying every problem found; see the module doc for the rules.
    """
    if cell_parser not in CELL_PARSERS:
        raise ValueError(f"cell_parser must be one of {', '.join(CELL_PARSERS)}, got {cell_parser!r}")
    loaded = load_notebook(source, comment_prefix=comment_prefix)
    nb, prefix = loaded.notebook, loaded.comment_prefix
    problems: list[CompileProblem] = []

    notes: list[CompileProblem] = []

    def problem(cell: int | None, message: str, hint: str = "", line: int | None = None) -> None:
        problems.append(CompileProblem(loaded.source, cell, message, hint, line))

    def warn(cell: int | None, message: str, hint: str = "", line: int | None = None) -> None:
        notes.append(CompileProblem(loaded.source, cell, message, hint, line))

    swagger = swagger_annotations(nb.cells, prefix, problem, _source) if cell_parser == "swagger" else None
    annotate = swagger or _default_annotations(prefix)
    python = checks_language(loaded.kernel.language)
    syntax = CellSyntax() if python else None
    setup: list[SetupCell] = []
    endpoints: dict[tuple[str, str], _Route] = {}
    response_infos: dict[tuple[str, str], _Route] = {}
    malformed = False
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        code = _source(cell)
        if not code.strip():
            continue
        try:
            annotation = annotate(code.splitlines()[0])
        except AnnotationError as exc:
            problem(number, exc.message, exc.hint)
            malformed = True
            continue
        if swagger is None and _near_miss(number, code, annotation, prefix, python, problem, warn):
            malformed = True
            continue
        if syntax is not None:
            _check_syntax(number, code, annotation, syntax, problem, warn)
        if annotation is None:
            setup.append(SetupCell(number, code))
            continue
        if annotation.path == RESERVED or annotation.path.startswith(RESERVED + "/"):
            problem(
                number,
                f"{annotation.method} {annotation.path}: paths under {RESERVED}/ belong to the server "
                "(health, docs, metrics, spec)",
                "give the endpoint another first path segment",
            )
        table = endpoints if annotation.kind == "endpoint" else response_infos
        route = table.setdefault((annotation.method, annotation.path), _Route(annotation))
        route.cells.append(number)
        route.parts.append(code)

    _check_param_names(endpoints, prefix, problem)
    _check_response_infos(endpoints, response_infos, prefix, problem)
    if not endpoints and not malformed and not problems:
        wanted = f"{prefix} operationId: NAME" if swagger else f"{prefix} GET /path"
        problem(None, "no endpoints found", f"annotate a code cell's first line with `{wanted}`")
    _raise_if_any(problems)

    specs = [_endpoint(route, response_infos.get(key), nb) for key, route in endpoints.items()]
    if swagger is not None:
        specs = [_with_operation(ep, swagger) for ep in specs]
    specs.sort(key=lambda ep: (_order_key(ep.path), METHODS.index(ep.method), ep.path))
    examples = declared_examples(nb.cells, specs, problem)
    modes = {(ep.method, ep.path): _response_mode(nb, ep.cells[0], problem) for ep in specs}
    contracts = declared_contracts(nb.cells, specs, prefix, problem)
    if swagger is not None:
        contracts = swagger_contracts(specs, swagger, contracts)
    _raise_if_any(problems)
    specs = [
        replace(
            ep,
            examples=examples.get((ep.method, ep.path), ()),
            response=modes[ep.method, ep.path],
            contract=contracts.get((ep.method, ep.path), {}),
        )
        for ep in specs
    ]
    check_examples(specs, problem)
    _raise_if_any(problems)
    service_name = name or loaded.stem
    return ServiceSpec(
        name=service_name,
        notebook=loaded.filename or f"{service_name}.ipynb",
        kernel=loaded.kernel,
        setup=tuple(setup),
        endpoints=tuple(specs),
        warnings=tuple(_overlap_warnings(endpoints, loaded))
        + _unused_operations(swagger, loaded)
        + tuple(str(note) for note in notes),
        swagger=swagger.found.document if swagger is not None else None,
    )


def _raise_if_any(problems: list[CompileProblem]) -> None:
    """Every problem found so far, in cell order, as one :class:`CompileError`."""
    if problems:
        raise CompileError(sorted(problems, key=lambda p: (p.cell is None, p.cell or 0)))


def _near_miss(
    number: int,
    code: str,
    annotation: Annotation | None,
    prefix: str,
    python: bool,
    problem: _Report,
    warn: _Report,
) -> bool:
    """Report a cell meant as an endpoint that is not one; ``True`` when it is such a cell.

    Kernel Gateway would run it as setup code and serve no endpoint for it, so that is an
    error. An endpoint cell with a second annotation further down is served by Kernel
    Gateway as the first one (the rest is a comment): a warning, and the cell compiles.
    """
    first = code.splitlines()[0]
    if annotation is not None:
        later = later_annotation(code, prefix, python)
        if later is not None:
            warn(
                number,
                f"`{later[1]}` on line {later[0]} is only a comment: this cell answers "
                f"{annotation.method} {annotation.path}, its first line",
                "start a new cell with it to make it an endpoint",
                later[0],
            )
        return False
    miss = first_line_near_miss(first, prefix)
    if miss is not None:
        problem(
            number,
            f"`{miss.line}` looks like an annotation but is not one ({miss.problem}); "
            "as written this cell is setup code that runs at start",
            miss.hint,
        )
        return True
    later = later_annotation(code, prefix, python)
    if later is not None:
        line, text = later
        problem(
            number,
            f"the annotation `{text}` is on line {line}, not on the cell's first line, so this cell "
            "is setup code that runs at start, not an endpoint",
            f"move `{text}` to the top of the cell, above `{first.strip()}`",
            line,
        )
        return True
    return False


def _check_syntax(
    number: int,
    code: str,
    annotation: Annotation | None,
    syntax: CellSyntax,
    problem: _Report,
    warn: _Report,
) -> None:
    """A syntax error in a setup cell stops every kernel from starting: an error. In an
    endpoint cell Kernel Gateway serves the notebook and each request answers 500 with
    the error (its own test notebooks do that on purpose): a warning."""
    found = syntax.problem(code)
    if found is None:
        return
    if annotation is None:
        problem(number, found.message, "fix the cell: it runs on every kernel at start", found.line)
    else:
        warn(
            number,
            f"{found.message}; every request to {annotation.method} {annotation.path} will answer 500",
            line=found.line,
        )


def _default_annotations(prefix: str) -> Callable[[str], Annotation | None]:
    """``# GET /path`` annotations; a swagger parser's ``# operationId:`` line says which parser it needs."""
    operation = operation_line(prefix)

    def annotate(line: str) -> Annotation | None:
        if operation.match(line.strip()) or response_info_line(prefix).match(line.strip()):
            raise AnnotationError(
                f"{line.strip()!r} is an annotation of Kernel Gateway's swagger cell parser",
                "compile with --cell-parser swagger or "
                "KG_CELL_PARSER=kernel_gateway.notebook_http.swagger.parser, or write "
                f"`{prefix} GET /path`",
            )
        return parse_annotation(line, prefix)

    return annotate


def _with_operation(ep: Endpoint, swagger: SwaggerAnnotations) -> Endpoint:
    """The endpoint with its operationId, and the document's summary and description if it has them."""
    op_id = swagger.ids[ep.method, ep.path]
    details = swagger.found.operations[op_id].details
    return replace(
        ep,
        operation_id=op_id,
        summary=str(details.get("summary") or ep.summary),
        description=str(details.get("description") or ep.description),
    )


def _unused_operations(swagger: SwaggerAnnotations | None, loaded: LoadedNotebook) -> tuple[str, ...]:
    if swagger is None:
        return ()
    return tuple(
        str(
            CompileProblem(
                loaded.source,
                op.cell or None,
                f"operation {op.operation_id!r} ({op.method} {op.doc_path!r}) is declared "
                "but no cell implements it "
                f"(annotate one with `{swagger.prefix} operationId: {op.operation_id}`)",
            )
        )
        for op in swagger.unused()
    )


def _source(cell: NotebookNode) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _check_param_names(endpoints: dict[tuple[str, str], _Route], prefix: str, problem: _Report) -> None:
    """One path pattern, one set of parameter names: the first path seen for a pattern owns it."""
    owners: dict[tuple[str, ...], _Route] = {}
    for (method, path), route in endpoints.items():  # insertion order is first-cell order
        owner = owners.setdefault(route_pattern(path), route)
        owner_path = owner.annotation.path
        if owner_path == path:
            continue
        same_method = endpoints.get((method, owner_path))
        if same_method is not None:
            problem(
                route.first,
                f"duplicate route {method} {path} (also cell {same_method.first} as {owner_path})",
                f"parameter names do not make routes different; write `{prefix} {method} {owner_path}`",
            )
        else:
            problem(
                route.first,
                f"{method} {path} names its parameters differently from "
                f"{owner.annotation.method} {owner_path} (cell {owner.first}); "
                "one path pattern must use one set of parameter names",
                f"write `{prefix} {method} {owner_path}`",
            )


def _check_response_infos(
    endpoints: dict[tuple[str, str], _Route],
    response_infos: dict[tuple[str, str], _Route],
    prefix: str,
    problem: _Report,
) -> None:
    for (method, path), route in response_infos.items():
        if (method, path) in endpoints:
            continue
        near = [
            ep.annotation.path
            for (ep_method, ep_path), ep in endpoints.items()
            if ep_method == method and route_pattern(ep_path) == route_pattern(path)
        ]
        hint = (
            f"did you mean `{prefix} ResponseInfo {method} {near[0]}`?"
            if near
            else f"annotate a code cell with `{prefix} {method} {path}`, or fix this cell's method and path"
        )
        problem(route.first, f"ResponseInfo {method} {path} has no matching endpoint", hint)


def _endpoint(route: _Route, response_info: _Route | None, nb: NotebookNode) -> Endpoint:
    ann = route.annotation
    summary, description = _docs(nb, route.first)
    return Endpoint(
        method=ann.method,
        path=ann.path,
        params=ann.params,
        cells=tuple(route.cells),
        code=route.code,
        response_info=ResponseInfo(tuple(response_info.cells), response_info.code) if response_info else None,
        summary=summary,
        description=description,
    )


def _response_mode(nb: NotebookNode, cell: int, problem: _Report) -> str:
    """``metadata.nb2svc.response`` of an endpoint's first cell: how it answers."""
    ours = nb.cells[cell - 1].get("metadata", {}).get("nb2svc")
    mode = ours.get("response", "sync") if isinstance(ours, dict) else "sync"
    if mode not in RESPONSE_MODES:
        problem(
            cell,
            f"nb2svc.response is {mode!r}",
            f"use one of {', '.join(repr(m) for m in RESPONSE_MODES)} (or leave it out)",
        )
        return "sync"
    return mode


def _docs(nb: NotebookNode, first_cell: int) -> tuple[str, str]:
    """Summary and description from the markdown cell right before ``first_cell``."""
    if first_cell < 2:
        return "", ""
    previous = nb.cells[first_cell - 2]
    if previous.cell_type != "markdown":
        return "", ""
    lines = _source(previous).splitlines()
    for index, line in enumerate(lines):
        summary = line.strip().lstrip("#").strip()
        if summary:
            return summary, "\n".join(lines[index + 1 :]).strip()
    return "", ""


def _order_key(path: str) -> tuple[tuple[int, str], ...]:
    """Literal segments sort before parameters at the same position."""
    return tuple((1, "") if seg == ":" else (0, seg) for seg in route_pattern(path))


def _overlap_warnings(endpoints: dict[tuple[str, str], _Route], loaded: LoadedNotebook) -> list[str]:
    """A warning per pair of distinct paths that can match the same request."""
    first_cell: dict[str, int] = {}
    for (_method, path), route in endpoints.items():
        first_cell[path] = min(first_cell.get(path, route.first), route.first)
    paths = sorted(first_cell, key=_order_key)
    warnings = []
    for winner, loser in combinations(paths, 2):
        example = _overlap(winner, loser)
        if example is not None:
            warnings.append(
                str(
                    CompileProblem(
                        loaded.source,
                        first_cell[loser],
                        f"route {loser} overlaps {winner} (cell {first_cell[winner]}): a request for "
                        f"{example} goes to {winner}, because literal segments win over parameters",
                    )
                )
            )
    return warnings


def _overlap(a: str, b: str) -> str | None:
    """A request path both ``a`` and ``b`` match (literals filled in), or ``None``.

    Paths with the same pattern are not reported here: they are one route (an error
    when their names differ).
    """
    sa, sb = route_pattern(a), route_pattern(b)
    if len(sa) != len(sb) or sa == sb:
        return None
    example = []
    names = iter(s for s in a.split("/") if s.startswith(":"))
    for x, y in zip(sa, sb, strict=True):
        if x == ":":
            name = next(names)
            example.append(name if y == ":" else y)
        elif y == ":" or x == y:
            example.append(x)
        else:
            return None
    return "/" + "/".join(example)
