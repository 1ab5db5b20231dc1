"""Compile errors: what is wrong, in which cell, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompileProblem:
    """One problem found in a notebook.

    ``cell`` is the 1-based cell number (``None`` when the problem concerns the whole
    notebook); ``hint`` says what to change; ``line`` is the 1-based line in the cell
    when one line is at fault.
    """

    source: str
    cell: int | None
    message: str
    hint: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}, cell {self.cell}" if self.cell is not None else self.source
        if self.cell is not None and self.line is not None:
            where += f", line {self.line}"
        text = f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class CompileError(Exception):
    """The notebook cannot be compiled into a service.

    Carries every problem found (the compiler does not stop at the first), so a user
    fixes them all in one pass. The CLI prints ``str(error)`` and exits with code 2.
    """

    def __init__(self, problems: list[CompileProblem]) -> None:
        if not problems:
            raise ValueError("CompileError needs at least one problem")
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
