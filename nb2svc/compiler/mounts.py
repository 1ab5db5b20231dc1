"""Several notebooks in one service: each mounted under a URL prefix, checked together.

``nb2svc serve a.ipynb b.ipynb`` (or a folder of notebooks) mounts each notebook under
``/<its file stem>`` unless ``--mount PREFIX=NOTEBOOK`` says otherwise; each keeps its
own kernel spec, setup cells and warm pool. A notebook whose every route already starts
with ``/<its file stem>`` (``orders.ipynb`` answering ``/orders`` and ``/orders/:id``)
is served at those paths as written, not at ``/orders/orders/:id``
(:func:`default_mount`): it is still the mount ``/orders`` (its variables, config
table, metrics), and its routes are kept relative to it. ``build`` and ``serve`` both
mount through :func:`default_mount`, and a bundle stores the result, so they agree.

The compiler checks what no single notebook can: prefixes must be plain paths (no
``:params``, no ``.`` or ``..`` segments, nothing under
``/_api``), distinct, and no two endpoints of different mounts
may answer the same request (``/a`` + ``/b/c`` and ``/a/b`` + ``/c`` both make
``GET /a/b/c``).

A bundle of several notebooks (``nb2svc build a.ipynb b.ipynb``) keeps them in one
``service.json`` of ``format`` 2 (:func:`mounts_to_json`); a one-notebook bundle keeps
the plain :class:`ServiceSpec` of ``format`` 1, unchanged::

    {
      "format": 2,
      "mounts": [                              # in serving order, checked together
        {"prefix": "/orders",                  # "" for the root
         "source": "notebooks/orders.ipynb",   # the notebook, verbatim, relative to the bundle
         "service": {"format": 1, ...}},       # its ServiceSpec, as a one-notebook bundle has it
        ...
      ]
    }
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from nb2svc.compiler.annotations import route_pattern
from nb2svc.compiler.errors import CompileError, CompileProblem
from nb2svc.compiler.spec import SPEC_FORMAT, Endpoint, ServiceSpec

#: ``service.json``'s ``format`` for several mounted notebooks (one notebook: ``SPEC_FORMAT``, 1).
MOUNTS_FORMAT = 2

_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")

#: Where ``--static-path`` serves its files, without a token (Kernel Gateway's path).
PUBLIC_PREFIX = "/public"


@dataclass(frozen=True)
class Mount:
    """One notebook's service and the URL prefix it answers under (``""``: the root)."""

    prefix: str
    spec: ServiceSpec

    @property
    def name(self) -> str:
        return self.spec.name

    def full_path(self, endpoint: Endpoint) -> str:
        return (self.prefix + endpoint.path).rstrip("/") or "/"


def default_prefix(stem: str) -> str:
    """``/<stem>``, with characters a URL path would need escaped replaced by ``-``."""
    return "/" + (re.sub(r"[^A-Za-z0-9._~-]+", "-", stem).strip("-") or "notebook")


def default_mount(stem: str, spec: ServiceSpec) -> Mount:
    """The notebook ``stem`` mounted where no ``--mount`` says: at ``/<stem>``.

    If every route of ``spec`` already starts with ``/<stem>`` (the notebook was written
    with its full paths), the prefix is taken off its routes (and its examples' paths),
    so it answers at the paths it declares rather than with the prefix doubled.
    """
    prefix = default_prefix(stem)
    endpoints = spec.endpoints
    if not endpoints or not all(_under(ep.path, prefix) for ep in endpoints):
        return Mount(prefix, spec)
    return Mount(prefix, replace(spec, endpoints=tuple(_relative(ep, prefix) for ep in endpoints)))


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _relative(endpoint: Endpoint, prefix: str) -> Endpoint:
    """``endpoint`` with ``prefix`` taken off its path and its examples' request paths."""

    def strip(path: str) -> str:
        return path[len(prefix) :] or "/" if _under(path.split("?", 1)[0], prefix) else path

    examples = tuple(
        {**example, "request": {**example["request"], "path": strip(example["request"]["path"])}}
        for example in endpoint.examples
    )
    return replace(endpoint, path=strip(endpoint.path), examples=examples)


def normalise_prefix(prefix: str) -> str:
    """``api/v1/`` → ``/api/v1``; ``/`` → ``""``."""
    prefix = prefix.strip()
    return ("/" + prefix.strip("/")) if prefix.strip("/") else ""


def check_mounts(mounts: Sequence[Mount]) -> None:
    """Raise :class:`CompileError` for bad or clashing prefixes and routes across mounts."""
    problems: list[CompileProblem] = []
    owners: dict[str, Mount] = {}
    for mount in mounts:
        source = mount.spec.notebook
        if not _PREFIX.match(mount.prefix):
            problems.append(
                CompileProblem(
                    source, None, f"mount prefix {mount.prefix!r} is not a plain URL path", "e.g. /api/v1"
                )
            )
        elif any(segment in (".", "..") for segment in mount.prefix.split("/")):
            problems.append(
                CompileProblem(
                    source,
                    None,
                    f"mount prefix {mount.prefix!r} has a '.' or '..' segment, which clients resolve away",
                    "write the path it means, e.g. /b for /a/../b",
                )
            )
        elif mount.prefix == "/_api" or mount.prefix.startswith("/_api/"):
            problems.append(CompileProblem(source, None, f"mount prefix {mount.prefix} is the server's own"))
        other = owners.setdefault(mount.prefix, mount)
        if other is not mount:
            problems.append(
                CompileProblem(
                    source,
                    None,
                    f"mounted at {mount.prefix or '/'} like {other.spec.notebook}",
                    "give one of them another prefix with --mount PREFIX=NOTEBOOK",
                )
            )
    seen: dict[tuple[str, tuple[str, ...]], tuple[Mount, Endpoint]] = {}
    for mount in mounts:
        for ep in mount.spec.endpoints:
            key = (ep.method, route_pattern(mount.full_path(ep)))
            first = seen.setdefault(key, (mount, ep))
            if first[0] is not mount:
                other_mount, other_ep = first
                problems.append(
                    CompileProblem(
                        mount.spec.notebook,
                        ep.cells[0],
                        f"{ep.method} {mount.full_path(ep)} is also {other_ep.method} "
                        f"{other_mount.full_path(other_ep)} of {other_mount.spec.notebook} "
                        f"(cell {other_ep.cells[0]})",
                        "change a mount prefix (--mount PREFIX=NOTEBOOK) or one of the paths",
                    )
                )
    if problems:
        raise CompileError(problems)


def _under_public(path: str) -> bool:
    return path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/")


def check_public_paths(mounts: Sequence[Mount]) -> None:
    """Raise :class:`CompileError` for a mount or endpoint under ``/public``, where
    ``--static-path`` serves files without a token: a notebook there would either hide the
    files or be taken for one of them (for a caller that serves static files)."""
    problems: list[CompileProblem] = []
    hint = "move it elsewhere, or serve without --static-path"
    for mount in mounts:
        if _under_public(mount.prefix):
            message = f"mount prefix {mount.prefix} is where --static-path serves its files"
            problems.append(CompileProblem(mount.spec.notebook, None, message, hint))
            continue
        for ep in mount.spec.endpoints:
            if _under_public(mount.full_path(ep)):
                message = f"{ep.method} {mount.full_path(ep)} is where --static-path serves its files"
                problems.append(CompileProblem(mount.spec.notebook, ep.cells[0], message, hint))
    if problems:
        raise CompileError(problems)


def mounts_to_json(mounts: Sequence[tuple[Mount, str]]) -> str:
    """``service.json`` of a bundle of several notebooks: ``(mount, source path)`` each.

    Deterministic like :meth:`ServiceSpec.to_json`. A format of its own (2), so that an
    nb2svc that only reads one notebook's spec refuses the bundle with a clear message
    instead of serving half of it.
    """
    data = {
        "format": MOUNTS_FORMAT,
        "mounts": [
            {"prefix": mount.prefix, "source": source, "service": mount.spec.to_dict()}
            for mount, source in mounts
        ],
    }
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def is_mounted_service(data: dict[str, Any]) -> bool:
    """Whether parsed ``service.json`` data holds several mounts (format 2), not one spec."""
    return data.get("format") == MOUNTS_FORMAT


def mounts_from_json(text: str) -> list[tuple[Mount, str]]:
    """The ``(mount, source path)`` list of a format-2 ``service.json`` (see the module doc).

    A format-1 document (one notebook) is read as that notebook mounted at the root, its
    source ``notebook.ipynb``, so a caller can load any bundle through this one function.
    Raises ``ValueError`` (or ``KeyError``/``TypeError`` for a malformed document).
    """
    data = json.loads(text)
    if data.get("format") not in (SPEC_FORMAT, MOUNTS_FORMAT):
        raise ValueError(
            f"unsupported service.json format {data.get('format')!r} (this nb2svc reads {SPEC_FORMAT} "
            f"and {MOUNTS_FORMAT}); rebuild the bundle with this version of nb2svc"
        )
    if not is_mounted_service(data):
        return [(Mount("", ServiceSpec.from_dict(data)), "notebook.ipynb")]
    mounts = [(Mount(m["prefix"], ServiceSpec.from_dict(m["service"])), m["source"]) for m in data["mounts"]]
    if not mounts:
        raise ValueError("service.json lists no mounts")
    return mounts
