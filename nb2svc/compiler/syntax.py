"""Python syntax checked at compile time, the way IPython will read the cell.

A cell goes through IPython's own input transformation first
(``IPython.core.inputtransformer2.TransformerManager``, the code ipykernel runs before
compiling), so ``%magics``, ``%%cell magics`` and ``!shell`` lines pass exactly when a
kernel would accept them; the result is then compiled (not run) with top-level
``await`` allowed, as IPython's autoawait does.

Only Python kernels are checked: other languages have no parser here, and a check that
guesses would reject valid cells. IPython is imported on first use, so the compiler
stays importable (and fast) where nothing is checked.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

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
        from IPython.core.inputtransformer2 import TransformerManager

        self._transformer = TransformerManager()

    def problem(self, code: str) -> SyntaxProblem | None:
        """``None`` when IPython would compile ``code``, else the first syntax error."""
        try:
            transformed = self._transformer.transform_cell(code)
        except SyntaxError as exc:  # a transformer can refuse input itself
            return SyntaxProblem(exc.lineno, exc.msg)
        try:
            compile(
                transformed,
                "<cell>",
                "exec",
                flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
        except SyntaxError as exc:
            line = exc.lineno + _leading_blank_lines(code) if exc.lineno else None
            return SyntaxProblem(line, _describe(exc))
        except ValueError as exc:  # e.g. a NUL character in the source
            return SyntaxProblem(None, str(exc))
        return None


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
