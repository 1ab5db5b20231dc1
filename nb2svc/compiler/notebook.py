"""Read a notebook, validate it, and find its kernel and comment prefix.

Everything that can go wrong before annotations are parsed ends here as a
:class:`CompileError` with one clear line (a missing file, text that is not JSON, JSON
that is not a notebook, a notebook that fails nbformat's schema, a kernel language
whose comment syntax is unknown), so the CLI never shows a traceback for a bad input.

Reading a file is the compiler's only I/O, and it happens once, here.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import nbformat
from nbformat import NotebookNode, ValidationError
from nbformat.warnings import DuplicateCellId, MissingIDFieldWarning

from nb2svc.compiler.errors import CompileError, CompileProblem
from nb2svc.compiler.spec import KernelInfo

#: What :func:`load_notebook` accepts: a path, notebook JSON text (``str`` starting
#: with ``{`` or ``[``, or ``bytes``), or an already parsed notebook (``NotebookNode``
#: or plain ``dict``).
NotebookSource = Union[str, "os.PathLike[str]", bytes, Mapping[str, Any]]

#: How errors name a notebook that did not come from a file.
IN_MEMORY = "<notebook>"

DEFAULT_KERNEL = "python3"
DEFAULT_LANGUAGE = "python"

# Language (as kernels report it, lower case) → single-line comment prefix.
_PREFIXES: dict[str, tuple[str, ...]] = {
    "#": (
        "python", "ipython", "r", "julia", "bash", "sh", "zsh", "shell", "ruby", "perl",
        "raku", "powershell", "tcl", "nim", "elixir", "crystal", "coffeescript", "nix",
    ),
    "//": (
        "javascript", "typescript", "node", "scala", "java", "c", "c++", "cpp", "c#",
        "csharp", "f#", "fsharp", "go", "rust", "kotlin", "swift", "dart", "groovy",
        "php", "zig",
    ),
    "--": ("sql", "haskell", "lua", "ada", "elm", "purescript"),
    "%": ("matlab", "octave", "erlang", "prolog"),
}  # fmt: skip
COMMENT_PREFIXES: dict[str, str] = {lang: prefix for prefix, langs in _PREFIXES.items() for lang in langs}


@dataclass(frozen=True)
class LoadedNotebook:
    """A validated nbformat-4 notebook and what the compiler needs to know about it.

    ``source`` names the notebook in error messages (the path as given, or
    ``<notebook>``); ``filename`` is the file's base name (``None`` in memory) and
    ``stem`` the default service name (``"service"`` in memory).
    """

    notebook: NotebookNode
    source: str
    filename: str | None
    stem: str
    kernel: KernelInfo
    comment_prefix: str


def load_notebook(source: NotebookSource, *, comment_prefix: str | None = None) -> LoadedNotebook:
    """Read and validate ``source``; raise :class:`CompileError` if it is not a usable notebook.

    A ``str`` is notebook JSON if it starts with ``{`` or ``[`` (after whitespace),
    otherwise a path. Older nbformat versions are converted to 4. A notebook object
    passed in is copied, never modified. ``comment_prefix`` overrides the prefix derived
    from the kernel language.
    """
    if isinstance(source, Mapping):
        label, filename, stem = IN_MEMORY, None, "service"
        data: Any = copy.deepcopy(dict(source))
    elif isinstance(source, bytes) or (isinstance(source, str) and source.lstrip()[:1] in ("{", "[")):
        label, filename, stem = IN_MEMORY, None, "service"
        data = _parse_json(source, label)
    else:
        path = Path(source)
        label, filename, stem = str(source), path.name, path.stem
        data = _parse_json(_read_text(path, label), label)
    nb = _to_valid_v4(data, label)
    kernel = kernel_info(nb)
    prefix = comment_prefix if comment_prefix is not None else comment_prefix_for(kernel.language)
    if prefix is None:
        raise _error(
            label,
            f"unknown kernel language {kernel.language!r}: nb2svc does not know its comment syntax",
            "pass --comment-prefix with the language's line-comment marker, e.g. --comment-prefix '#'",
        )
    if not prefix or prefix != prefix.strip() or any(ch.isspace() for ch in prefix):
        raise _error(label, f"invalid comment prefix {prefix!r}", "use a non-empty marker without spaces")
    return LoadedNotebook(nb, label, filename, stem, kernel, prefix)


def kernel_info(nb: NotebookNode) -> KernelInfo:
    """Kernel name (``metadata.kernelspec.name``, default ``python3``) and language.

    The language is ``kernelspec.language``, else ``language_info.name``, else
    ``python``; lower-cased because it is an identifier, not a display name.
    """
    meta = nb.get("metadata") or {}
    kernelspec = meta.get("kernelspec") or {}
    language_info = meta.get("language_info") or {}
    name = kernelspec.get("name") or DEFAULT_KERNEL
    language = kernelspec.get("language") or language_info.get("name") or DEFAULT_LANGUAGE
    return KernelInfo(name=str(name), language=str(language).strip().lower())


def comment_prefix_for(language: str) -> str | None:
    """The line-comment prefix of ``language``, or ``None`` if unknown.

    Version suffixes are ignored (``python3`` → ``python``, ``C++17`` → ``c++``), as
    kernels such as xeus-cling report them.
    """
    lang = language.strip().lower()
    return COMMENT_PREFIXES.get(lang) or COMMENT_PREFIXES.get(lang.rstrip("0123456789.").rstrip("-_ "))


def _error(source: str, message: str, hint: str = "") -> CompileError:
    return CompileError([CompileProblem(source, None, message, hint)])


def _read_text(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(label, "notebook not found", "check the path") from None
    except IsADirectoryError:
        raise _error(label, "is a directory, not a notebook file") from None
    except UnicodeDecodeError:
        raise _error(label, "not a notebook: the file is not UTF-8 text") from None
    except OSError as exc:
        raise _error(label, f"cannot read the notebook: {exc.strerror or exc}") from None


def _parse_json(text: str | bytes, label: str) -> Any:
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise _error(label, "not a notebook: the text is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise _error(
            label, f"not a notebook: invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"
        ) from None


def _to_valid_v4(data: Any, label: str) -> NotebookNode:
    """Convert parsed JSON to a validated nbformat-4 notebook.

    nbformat's own errors for non-notebook JSON are AttributeErrors and KeyErrors, so
    the shape is checked here first. Cell ids are irrelevant to a service, so nbformat's
    missing/duplicate id warnings are silenced (validate repairs them on our copy).
    """
    major = data.get("nbformat") if isinstance(data, dict) else None
    if not isinstance(major, int) or isinstance(major, bool):
        raise _error(label, "not a notebook: the JSON has no integer 'nbformat' version")
    if major not in nbformat.versions:
        raise _error(label, f"unsupported notebook format version {major}", "save it with Jupyter 4 or later")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        warnings.simplefilter("ignore", DuplicateCellId)
        nb = nbformat.from_dict(data)
        if major != 4:
            try:
                nb = nbformat.convert(nb, 4)
            except (ValidationError, KeyError, TypeError, AttributeError, ValueError) as exc:
                raise _error(label, f"invalid nbformat {major} notebook, cannot convert it: {exc}") from None
        shape_problem = _shape_problem(nb)
        if shape_problem:
            raise _error(label, f"invalid notebook: {shape_problem}")
        try:
            nbformat.validate(nb)
        except (KeyError, TypeError, AttributeError) as exc:  # shapes nbformat's normaliser trips on
            raise _error(label, f"invalid notebook: unexpected structure ({exc!r})") from None
        except ValidationError as exc:
            raise _error(
                label, f"invalid notebook: {_describe(exc)}", "open and re-save it in Jupyter"
            ) from None
    return nb


def _shape_problem(nb: NotebookNode) -> str | None:
    """What nbformat.validate would crash on (KeyError, TypeError) instead of reporting."""
    for key in ("cells", "metadata", "nbformat_minor"):
        if key not in nb:
            return f"{key!r} is a required property (at top level)"
    cells = nb["cells"]
    if not isinstance(cells, list) or not all(isinstance(cell, dict) for cell in cells):
        return "'cells' must be a list of cell objects"
    return None


def _describe(exc: ValidationError) -> str:
    """One line for a schema error: the message and where (``cell 3`` for cell errors)."""
    where = list(exc.absolute_path)
    if len(where) >= 2 and where[0] == "cells" and isinstance(where[1], int):
        rest = "/".join(str(p) for p in where[2:])
        place = f"cell {where[1] + 1}" + (f", {rest}" if rest else "")
    else:
        place = "/".join(str(p) for p in where) or "top level"
    return f"{exc.message} (at {place})"
