"""What a bundle needs to install this nb2svc somewhere else: pinned dependencies and a wheel.

nb2svc is not on PyPI, so ``nb2svc==X`` in a bundle's ``requirements.txt`` could never
resolve in an image build. Instead a bundle carries:

- ``requirements.txt``: every runtime dependency of nb2svc, transitively, pinned to
  the version installed here (:func:`pinned_requirements`), so the image runs exactly
  what ``nb2svc serve`` ran on the build machine. Environment markers are kept (a
  ``sys_platform == "darwin"`` dependency of a Mac build is skipped in a Linux image).
- ``wheels/nb2svc-<version>-py3-none-any.whl``: a wheel of the nb2svc that built the
  bundle (:func:`self_wheel`), made from its installed files, so it works the same for
  an editable checkout and a regular install and needs no build backend or network.

Both are deterministic: the same installation gives byte-identical output (sorted
entries, fixed zip timestamps and permissions), so building a bundle twice changes
nothing and the image layers stay cached.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement

from nb2svc._version import __version__

DIST_NAME = "nb2svc"
#: The earliest date a zip entry can carry; every entry gets it, so the wheel's bytes
#: depend only on the files' contents.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIP_PARTS = frozenset({"__pycache__", ".ipynb_checkpoints"})


class DistributionError(Exception):
    """The installed nb2svc is incomplete (a dependency or the templates are missing)."""


@dataclass(frozen=True)
class Runtime:
    """Everything a bundle installs: pinned requirement lines and the nb2svc wheel.

    ``python`` is the ``major.minor`` the pins were resolved on; the image and the CI
    pipeline use the same (a pin may need it: many releases require a recent Python).
    """

    requirements: tuple[str, ...]
    wheel_name: str
    wheel: bytes
    python: str


def current_runtime() -> Runtime:
    """The runtime of this installation: its dependency pins and a wheel of nb2svc."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Runtime(pinned_requirements(), wheel_filename(), self_wheel(), python)


def canonical_name(name: str) -> str:
    """PEP 503 normalised name (``Jinja2`` → ``jinja2``, ``zope.event`` → ``zope-event``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(root: str = DIST_NAME) -> tuple[str, ...]:
    """``name==version[ ; marker]`` for every installed runtime dependency of ``root``.

    Walks ``Requires-Dist`` transitively (extras a parent asks for included, nb2svc's
    own extras such as ``test`` not). A requirement whose marker is false here is not
    followed. Markers that only select extras are dropped (they were true to get here);
    others are kept so pip re-checks them in the image. A dependency reached through
    several edges keeps a marker only if every edge has one.

    Raises :class:`DistributionError` if a needed dependency is not installed.
    """
    markers: dict[str, set[str | None]] = {}
    versions: dict[str, str] = {}
    pending: list[tuple[str, frozenset[str]]] = [(root, frozenset())]
    expanded: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in expanded:
            continue
        expanded.add((name, extras))
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if not _wanted(req.marker, extras):
                continue
            key = canonical_name(req.name)
            try:
                versions[key] = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                raise DistributionError(
                    f"{req.name} (required by {name}) is not installed; reinstall nb2svc"
                ) from None
            markers.setdefault(key, set()).add(_kept_marker(req.marker))
            pending.append((req.name, frozenset(req.extras)))
    return tuple(_pin(key, versions[key], markers[key]) for key in sorted(versions))


def _wanted(marker: Marker | None, extras: frozenset[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({"extra": extra}) for extra in (extras or {""}))


def _kept_marker(marker: Marker | None) -> str | None:
    if marker is None or "extra" in str(marker):
        return None
    return str(marker)


def _pin(name: str, version: str, markers: set[str | None]) -> str:
    if None in markers:
        return f"{name}=={version}"
    conditions = sorted(m for m in markers if m)
    marker = conditions[0] if len(conditions) == 1 else " or ".join(f"({m})" for m in conditions)
    return f"{name}=={version} ; {marker}"


def wheel_filename() -> str:
    return f"{DIST_NAME}-{__version__}-py3-none-any.whl"


def templates_dir() -> Path:
    """The templates shipped with nb2svc: package data ``nb2svc.templates`` once installed,
    ``templates/`` at the top of a source tree (the owner's layout)."""
    try:
        path = Path(str(resources.files("nb2svc.templates")))
        if (path / "app.py.j2").exists():
            return path
    except ModuleNotFoundError:
        pass
    source_tree = Path(__file__).resolve().parents[1] / "templates"
    if (source_tree / "app.py.j2").exists():
        return source_tree
    raise RuntimeError("nb2svc's templates are missing from this installation; reinstall nb2svc")


def package_files() -> dict[str, bytes]:
    """The files of nb2svc as they sit in a wheel (``nb2svc/...``), read from this installation.

    The templates live at the top level of the source tree but inside the package
    (``nb2svc/templates``) once installed; both layouts give the same wheel paths.
    """
    import nb2svc

    package = Path(nb2svc.__file__).resolve().parent
    templates = templates_dir().resolve()
    files = _tree(package, "nb2svc", skip=templates if templates.is_relative_to(package) else None)
    files.update(_tree(templates, "nb2svc/templates"))
    return files


def _tree(root: Path, prefix: str, skip: Path | None = None) -> dict[str, bytes]:
    files = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if (
            not path.is_file()
            or path.suffix in (".pyc", ".pyo")
            or any(part in _SKIP_PARTS or part.startswith(".") for part in relative.parts)
            or (skip is not None and path.is_relative_to(skip))
        ):
            continue
        files[f"{prefix}/{relative.as_posix()}"] = path.read_bytes()
    return files


def self_wheel() -> bytes:
    """A PEP 427 wheel of this nb2svc: its package files plus dist-info, deterministic bytes."""
    dist = metadata.distribution(DIST_NAME)
    info = f"{DIST_NAME}-{__version__}.dist-info"
    files = package_files()
    files[f"{info}/METADATA"] = _metadata_text(dist).encode()
    files[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: nb2svc {__version__}\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ).encode()
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files[f"{info}/entry_points.txt"] = entry_points.encode()
    files[f"{info}/top_level.txt"] = f"{DIST_NAME}\n".encode()
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in sorted(files.items())]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        # dist-info last, RECORD at the very end, as wheel installers expect
        for name in sorted(files, key=lambda n: (n.startswith(info), n.endswith("/RECORD"), n)):
            entry = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            wheel.writestr(entry, files[name])
    return buffer.getvalue()


def _metadata_text(dist: metadata.Distribution) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {DIST_NAME}",
        f"Version: {__version__}",
        f"Summary: {dist.metadata.get('Summary') or 'nb2svc'}",
    ]
    if dist.metadata.get("Requires-Python"):
        lines.append(f"Requires-Python: {dist.metadata['Requires-Python']}")
    lines += [f"Provides-Extra: {extra}" for extra in dist.metadata.get_all("Provides-Extra") or []]
    lines += [f"Requires-Dist: {req}" for req in dist.requires or []]
    return "\n".join(lines) + "\n"


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
