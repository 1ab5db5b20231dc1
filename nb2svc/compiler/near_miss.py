"""Near misses: lines that were meant as annotations but are not, found before they bite.

Kernel Gateway reads a cell as an endpoint only when its very first characters are
``# METHOD /path``; anything else is setup code that runs once on every kernel at start.
So a typo does not fail: the endpoint silently disappears. These shapes are reported
with the annotation the author meant (``did you mean "# GET /x"?``):

- an annotation-shaped first line that does not parse: ``# GET/x`` (no space before the
  path), ``## GET /x`` (a doubled comment marker), ``# ResponceInfo GET /ok`` (a
  misspelled ``ResponseInfo``), ``// GET /x`` in a Python notebook (another language's
  comment marker);
- an annotation that is not on the cell's first line (``import json`` above it).

:func:`first_line_near_miss` and :func:`later_annotation` only find them; the compiler
decides what is an error and what, because Kernel Gateway serves it, is a warning.
"""

from __future__ import annotations

import difflib
import io
import re
import tokenize
from dataclasses import dataclass

from nb2svc.compiler.annotations import METHODS, RESPONSE_INFO, AnnotationError, parse_annotation

#: Comment markers of the languages nb2svc knows, possibly repeated (``##``, ``///``).
_SHAPE = re.compile(
    r"(?P<marks>#+|/{2,}|-{2,}|%+|;+)\s*"
    r"(?:(?P<info>[A-Za-z]+)\s+)?"
    r"(?P<method>[A-Za-z]+)\s*(?P<path>/\S*)\Z"
)
#: How close a word must be to ``ResponseInfo`` to be taken for a misspelling of it.
_SIMILAR = 0.75


@dataclass(frozen=True)
class NearMiss:
    """A line meant as an annotation: ``suggestion`` is what to write, ``problem`` why
    the line as written is not one."""

    line: str
    suggestion: str
    problem: str

    @property
    def hint(self) -> str:
        return f'did you mean "{self.suggestion}"?'


def first_line_near_miss(line: str, prefix: str) -> NearMiss | None:
    """The near miss on a cell's first ``line`` (already known not to be an annotation)."""
    stripped = line.strip()
    match = _SHAPE.match(stripped)
    if match is None or match["method"].upper() not in METHODS:
        return None
    marks, info = match["marks"], match["info"]
    if info is not None and not _is_response_info(info):
        return None  # `# then GET /x` is prose
    lead = f"{RESPONSE_INFO} " if info else ""
    suggestion = f"{prefix} {lead}{match['method'].upper()} {match['path']}"
    try:
        if parse_annotation(suggestion, prefix) is None:
            return None
    except AnnotationError:
        return None  # the path itself is wrong: parse_annotation's own error says how
    if marks != prefix:
        if marks[0] == prefix[0] and len(marks) > len(prefix):
            why = f"the comment marker is repeated ({marks!r})"
        else:
            why = f"{marks!r} is not this kernel's comment marker: annotations start with {prefix!r}"
    elif info is not None and info != RESPONSE_INFO:
        why = f"{info!r} is not {RESPONSE_INFO!r}"
    elif match["method"] in METHODS:
        why = "the method and the path must be separated by a space"
    else:
        return None  # `# put/get` is prose; `# get /x` is parse_annotation's to report
    return NearMiss(stripped, suggestion, why)


def _is_response_info(word: str) -> bool:
    return difflib.SequenceMatcher(None, word.lower(), RESPONSE_INFO.lower()).ratio() >= _SIMILAR


def later_annotation(code: str, prefix: str, python: bool) -> tuple[int, str] | None:
    """The first annotation below a cell's first line: ``(1-based line, text)``, or ``None``.

    Only comments alone on their line at its very start count (an indented one belongs to
    the code around it); in Python cells only real comments (a docstring that quotes
    ``# GET /x`` does not), unless Python's tokenizer cannot read the cell (magics, a
    syntax error): it is then read line by line.
    """
    for number, text in _comment_lines(code, python):
        if number == 1 or text[:1].isspace():
            continue
        try:
            if parse_annotation(text, prefix) is not None:
                return number, text.strip()
        except AnnotationError:
            continue
    return None


def _comment_lines(code: str, python: bool) -> list[tuple[int, str]]:
    """``(line, text)`` of every comment alone on its line, with its indentation."""
    lines = code.splitlines()
    if python:
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
        except (tokenize.TokenError, SyntaxError, IndentationError):
            pass
        else:
            return [
                (tok.start[0], lines[tok.start[0] - 1])
                for tok in tokens
                if tok.type == tokenize.COMMENT and not lines[tok.start[0] - 1][: tok.start[1]].strip()
            ]
    return list(enumerate(lines, start=1))


__all__ = ["NearMiss", "first_line_near_miss", "later_annotation"]
