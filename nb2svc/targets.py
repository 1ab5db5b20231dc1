"""What the commands work on: a notebook, a bundle, several notebooks (or a folder of
them, or ``--mount PREFIX=NOTEBOOK``), compiled and checked as ``nb2svc serve`` mounts
them. Shared by ``build``, ``routes``, ``test`` and ``serve``.

Errors are click errors (one line, exit 2 for usage and compile errors, 1 for a bundle
that cannot be read): these are the CLI's steps, kept out of ``cli.py`` so that it only
parses and prints. Imports nothing of the runtime's heavy parts (gunicorn's master reads
this module).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from nb2svc.config import OPTIONS_BY_NAME, parse_value

BUNDLE_MARKER = "service.json"


class CompileFailed(click.ClickException):
    """A compile error, printed as the compiler's problem lines, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


class Target(click.Path):
    """A TARGET argument: an existing path, or a notebook named by a ``file://`` URI or an
    ``http(s)://`` URL (fetched once, as ``KG_SEED_URI`` is: see :mod:`nb2svc.seed_uri`).
    A missing file is a usage error (exit 2); a URL that cannot be fetched exits 1."""

    def __init__(self) -> None:
        super().__init__(exists=True, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        if "://" not in text:
            return super().convert(value, param, ctx)
        from nb2svc.seed_uri import SeedError, SeedMissing, resolve

        try:
            return resolve(text)
        except SeedMissing as exc:
            self.fail(str(exc), param, ctx)
        except SeedError as exc:
            raise click.ClickException(f"cannot load the notebook: {exc}") from None


def skip_slow_format_checkers() -> None:
    """Keep jsonschema from compiling an IRI grammar we never use (about 0.7 s per start).

    nbformat imports jsonschema, whose format checkers import ``rfc3987_syntax`` when
    it is installed (Jupyter Server pulls it in); that import builds a lark grammar.
    The notebook schema uses no IRI formats, so this process does without it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def compile_target(notebook: Path, comment_prefix: str | None, cell_parser: str = "default"):
    skip_slow_format_checkers()
    from nb2svc.compiler import CompileError, compile_notebook

    try:
        spec = compile_notebook(notebook, comment_prefix=comment_prefix, cell_parser=cell_parser)
    except CompileError as exc:
        raise CompileFailed(f"error: {notebook} cannot be compiled:\n" + str(exc)) from None
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    return spec


def os_reason(exc: OSError) -> str:
    """``[Errno 2] No such file or directory: '/proc/x'`` as ``No such file or directory ('/proc/x')``."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def load_mounts(
    target: Path, comment_prefix: str | None, cell_parser: str = "default"
) -> list[tuple[Any, Path]]:
    """``(Mount, source)`` of a notebook at the root, or of a bundle's mounts: its one
    notebook at the root, or the several notebooks of a bundle built from several
    (``service.json`` format 2, sources relative to the bundle)."""
    from nb2svc.compiler.mounts import Mount, mounts_from_json

    if not target.is_dir():
        return [(Mount("", compile_target(target, comment_prefix, cell_parser)), target)]
    marker = target / BUNDLE_MARKER
    if not marker.exists():
        raise click.UsageError(
            f"{target} is a directory but not a bundle (no {BUNDLE_MARKER}); "
            "pass a notebook or the output of 'nb2svc build'"
        )
    try:
        return [
            (mount, Path(source)) for mount, source in mounts_from_json(marker.read_text(encoding="utf-8"))
        ]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, (KeyError, TypeError)) else str(exc)
        raise click.ClickException(
            f"{marker} is not a valid bundle spec ({detail}); rebuild the bundle with 'nb2svc build'"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"{marker}: {os_reason(exc)}") from None


def is_notebook_folder(path: Path) -> bool:
    return path.is_dir() and not (path / BUNDLE_MARKER).exists()


def several(targets: tuple[Path, ...], mount_specs: tuple[str, ...]) -> bool:
    """Several notebooks (or a folder of them, or --mount) make one mounted service."""
    return len(targets) > 1 or bool(mount_specs) or (len(targets) == 1 and is_notebook_folder(targets[0]))


def target_mounts(
    targets: tuple[Path, ...], mount_specs: tuple[str, ...], comment_prefix: str | None, cell_parser: str
) -> tuple[list[Any], bool]:
    """The mounts ``routes`` and ``test`` work on, and whether they are several (mounted):
    one notebook or bundle at the root, a bundle of several, or the checked mounts of
    several notebooks, as ``serve`` would serve them."""
    if several(targets, mount_specs):
        return [m for m, _ in notebook_mounts(targets, mount_specs, comment_prefix, cell_parser)], True
    mounts = [m for m, _ in load_mounts(targets[0], comment_prefix, cell_parser)]
    return mounts, len(mounts) > 1 or bool(mounts[0].prefix)


def notebook_mounts(
    targets: tuple[Path, ...],
    mount_specs: tuple[str, ...],
    comment_prefix: str | None,
    cell_parser: str = "default",
) -> list[tuple[Any, Path]]:
    """``(Mount, notebook)`` for every notebook named, found in a folder, or given by --mount,
    checked together (prefixes, routes that clash across notebooks: exit 2)."""
    from nb2svc.compiler import CompileError
    from nb2svc.compiler.mounts import Mount, check_mounts, default_mount, normalise_prefix

    chosen: list[tuple[str | None, Path]] = []
    for target in targets:
        if target.is_dir():
            if (target / BUNDLE_MARKER).exists():
                raise click.UsageError(
                    f"{target} is a bundle (the output of 'nb2svc build'), not a notebook: several "
                    "notebooks are mounted from notebooks or folders of them"
                )
            found = sorted(target.glob("*.ipynb"))
            if not found:
                raise click.UsageError(
                    f"{target} is not a bundle (no {BUNDLE_MARKER}) and holds no .ipynb notebooks; "
                    "pass a notebook, a folder of notebooks or the output of 'nb2svc build'"
                )
            chosen += [(None, nb) for nb in found]
        else:
            chosen.append((None, target))
    # a notebook named twice (alone and in its folder) is mounted once, as --mount replaces it below
    files: dict[Path, tuple[str | None, Path]] = {}
    for prefix, notebook in chosen:
        files.setdefault(notebook.resolve(), (prefix, notebook))
    chosen = list(files.values())
    for item in mount_specs:
        prefix, sep, notebook = item.partition("=")
        if not sep or not notebook:
            raise click.UsageError(f"--mount {item!r}: write PREFIX=NOTEBOOK, e.g. /api/v1=service.ipynb")
        path = Path(notebook)
        if path.is_dir():
            raise click.UsageError(f"--mount {item!r}: {notebook} is a folder; --mount takes one notebook")
        if not path.is_file():
            raise click.UsageError(f"--mount {item!r}: no such notebook {notebook}")
        if any(segment in (".", "..") for segment in prefix.strip().split("/")):
            raise CompileFailed(f"error: --mount {item!r}: a prefix with '.' or '..' segments is refused")
        chosen = [(p, nb) for p, nb in chosen if nb.resolve() != path.resolve()]
        chosen.append((normalise_prefix(prefix), path))
    mounts = []
    for prefix, notebook in chosen:
        spec = compile_target(notebook, comment_prefix, cell_parser)
        mount = Mount(prefix, spec) if prefix is not None else default_mount(notebook.stem, spec)
        mounts.append((mount, notebook))
    try:
        check_mounts([m for m, _ in mounts])
    except CompileError as exc:
        raise CompileFailed(f"error: the notebooks cannot be mounted together:\n{exc}") from None
    return mounts


def check_languages(mounts: list[Any]) -> None:
    """Refuse (exit 2) a notebook whose language API mode cannot bind REQUEST in."""
    from nb2svc.runtime.kernel.invoke import supports_language

    for mount in mounts:
        if not supports_language(mount.spec.kernel.language):
            where = f"{mount.spec.notebook}: " if len(mounts) > 1 or mount.prefix else ""
            raise click.UsageError(f"{where}API mode cannot serve {mount.spec.kernel.language!r} kernels yet")


def cell_parser_setting(flag: str | None) -> str:
    """``--cell-parser`` of ``build`` and ``routes``: the flag, else ``NB2SVC_CELL_PARSER``,
    else Kernel Gateway's ``KG_CELL_PARSER`` (how the notebook is read, not a deploy setting)."""
    option = OPTIONS_BY_NAME["cell_parser"]
    raw = flag if flag is not None else os.environ.get(option.env, os.environ.get(option.kg_alias or ""))
    try:
        return parse_value(option, raw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def public_path_problems(mounts: list[Any]) -> list[str]:
    """Each endpoint or mount under ``/public``, where ``--static-path`` serves files without
    a token (a compile problem line naming the cell; empty when there is none)."""
    from nb2svc.compiler import CompileError
    from nb2svc.compiler.mounts import check_public_paths

    try:
        check_public_paths(mounts)
    except CompileError as exc:
        return [str(problem) for problem in exc.problems]
    return []
