"""Python syntax checked at compile time, the way IPython will read the cell.

A cell goes through IPython's own input transformation first
(``IPython.core.inputtransformer2.TransformerManager``, the code ipykernel runs before
compiling), so ``%magics``, ``%%cell magics`` and ``!shell`` lines pass exactly when a
kernel would accept them; the result is then compiled (not run) with top-level
``await`` allowed, as IPython's autoawait does.

Only Python kernels are checked: other languages have no parser here, and a check that
guesses would reject valid cells. A cell that already compiles as plain Python is
accepted without IPython (its transformations only rewrite what Python cannot parse:
magics, shell escapes, help, prompts, indented cells); IPython is imported only for a
cell that needs it, which keeps it (about 40 ms) off ``nb2svc serve``'s start for plain
notebooks.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

#: Kernel languages whose cells are checked.
CHECKED_LANGUAGES = frozenset({"python", "ipython"})


@dataclass(frozen=True)
class SyntaxProblem:
    """Where a cell stops parsing (1-based line in the cell) and Python's own message."""

    line: int | None
    message: str


class CellSyntax:
    """Checks cells of one notebook; holds IPython's transformer so it is built once."""

    def __init__(self) -> None:
        self._transformer: Any = None

    def problem(self, code: str) -> SyntaxProblem | None:
        """``None`` when IPython would compile ``code``, else the first syntax error."""
        try:
            _compile(code)
            return None  # plain Python: IPython leaves it as it is
        except (SyntaxError, ValueError):
            pass
        if self._transformer is None:
            from IPython.core.inputtransformer2 import TransformerManager

            self._transformer = TransformerManager()
        try:
            transformed = self._transformer.transform_cell(code)
        except SyntaxError as exc:  # a transformer can refuse input itself
            return SyntaxProblem(exc.lineno, exc.msg)
        try:
            _compile(transformed)
        except SyntaxError as exc:
            line = exc.lineno + _leading_blank_lines(code) if exc.lineno else None
            return SyntaxProblem(line, _describe(exc))
        except ValueError as exc:  # e.g. a NUL character in the source
            return SyntaxProblem(None, str(exc))
        return None


def _compile(code: str) -> None:
    """Parse ``code`` as a cell (top-level ``await`` allowed, as IPython's autoawait does)."""
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    compile(code, "<cell>", "exec", flags=flags, dont_inherit=True)


def _leading_blank_lines(code: str) -> int:
    """Blank lines IPython drops from the top of a cell before compiling it."""
    count = 0
    for line in code.splitlines():
        if line.strip():
            break
        count += 1
    return count


def _describe(exc: SyntaxError) -> str:
    """``invalid syntax: x = = 1`` — Python's message and the offending line's text."""
    text = (exc.text or "").strip()
    return f"{type(exc).__name__}: {exc.msg}" + (f": {text}" if text else "")


def checks_language(language: str) -> bool:
    """Whether cells of a kernel in ``language`` are syntax-checked."""
    return language.strip().lower() in CHECKED_LANGUAGES


__all__ = ["CHECKED_LANGUAGES", "CellSyntax", "SyntaxProblem", "checks_language"]
