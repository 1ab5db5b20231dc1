"""``nb2svc build``'s edge with the disk: read the notebooks, write the bundle directory.

The compiler renders a bundle as ``{relative path: bytes}`` without touching a file
(:mod:`nb2svc.compiler.bundle`); this module is where the notebook files are read and
the result is written, under one rule: an existing directory is replaced only if it is
empty, an earlier bundle (it has ``service.json``) of which this build writes every file
again, or ``force`` says so, so nothing of the user's is lost.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from nb2svc.compiler.bundle import BundleError, BundleOptions, render_bundle, render_mounted_bundle
from nb2svc.compiler.mounts import Mount
from nb2svc.compiler.spec import ServiceSpec
from nb2svc.distribution import Runtime


def write_bundle(
    spec: ServiceSpec,
    notebook: Path,
    output: Path,
    *,
    force: bool = False,
    options: BundleOptions | None = None,
    runtime: Runtime | None = None,
) -> list[Path]:
    """Write the bundle for ``spec`` into ``output``; returns the written paths.

    An existing directory is replaced only if it is empty, is an earlier bundle
    (has ``service.json``), or ``force`` is set: nothing else of the user's is lost.
    """
    files = render_bundle(spec, Path(notebook).read_bytes(), options, runtime)
    return write_files(files, output, force=force)


def write_mounted_bundle(
    mounts: Sequence[tuple[Mount, Path]],
    name: str,
    output: Path,
    *,
    force: bool = False,
    options: BundleOptions | None = None,
    runtime: Runtime | None = None,
) -> list[Path]:
    """Write the bundle of several notebooks (``(mount, notebook file)`` each) into
    ``output``, replacing it under the same rule as :func:`write_bundle`."""
    sources = [Path(notebook).read_bytes() for _, notebook in mounts]
    files = render_mounted_bundle([m for m, _ in mounts], sources, name, options, runtime)
    return write_files(files, output, force=force)


def write_files(files: dict[str, bytes], output: Path, *, force: bool = False) -> list[Path]:
    """Write rendered bundle ``files`` into ``output`` (see :func:`write_bundle` for when an
    existing directory may be replaced); returns the written paths.

    An earlier bundle is replaced only if every file in it is one this build writes again
    (Python's ``__pycache__`` aside): a file the user added, or ``k8s/`` of a build with
    ``--k8s`` rebuilt without it, makes a one-line refusal unless ``force``.
    """
    if output.exists():
        if not output.is_dir():
            raise BundleError(f"{output} exists and is not a directory")
        is_bundle = (output / "service.json").exists() or (output / "kernels.json").exists()
        if any(output.iterdir()) and not (is_bundle or force):
            raise BundleError(
                f"{output} is not empty and is not an nb2svc bundle; pass --force to replace it"
            )
        lost = [] if force else _not_rewritten(output, files)
        if lost:
            more = f" and {len(lost) - 3} more" if len(lost) > 3 else ""
            raise BundleError(
                f"{output} holds files this build would delete ({', '.join(lost[:3])}{more}); "
                "pass --force to replace them, or build into another directory"
            )
        shutil.rmtree(output)
    written = []
    for relative, content in sorted(files.items()):
        path = output / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def _not_rewritten(output: Path, files: dict[str, bytes]) -> list[str]:
    """Files under ``output`` that ``files`` does not write again (sorted, relative)."""
    lost = []
    for path in output.rglob("*"):
        relative = path.relative_to(output)
        if "__pycache__" in relative.parts or path.is_dir():
            continue
        if relative.as_posix() not in files:
            lost.append(relative.as_posix())
    return sorted(lost)


__all__ = ["write_bundle", "write_files", "write_mounted_bundle"]
