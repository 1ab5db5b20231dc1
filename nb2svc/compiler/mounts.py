"""Several notebooks in one service: each mounted under a URL prefix, checked together.

``nb2svc serve a.ipynb b.ipynb`` (or a folder of notebooks) mounts each notebook under
``/<its file stem>`` unless ``--mount PREFIX=NOTEBOOK`` says otherwise; each keeps its
own kernel spec, setup cells and warm pool. The compiler checks what no single notebook
can: prefixes must be plain paths (no ``:params``, nothing under ``/_api``), distinct,
and no two endpoints of different mounts may answer the same request (``/a`` + ``/b/c``
and ``/a/b`` + ``/c`` both make ``GET /a/b/c``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from nb2svc.compiler.annotations import route_pattern
from nb2svc.compiler.errors import CompileError, CompileProblem
from nb2svc.compiler.spec import Endpoint, ServiceSpec

_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)*$")


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
