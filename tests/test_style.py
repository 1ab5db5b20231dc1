"""House style is checked like behaviour: ruff lint and format over the whole repository, and
no code kept in long strings under nb2svc/runtime."""

from __future__ import annotations

import ast
import shutil
import subprocess

import pytest

from tests.support import REPO


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(command: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the [test] extras)")
    result = subprocess.run([ruff, *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


#: Longest string literal (in lines) allowed under nb2svc/runtime outside docstrings: code
#: kept in a string cannot be linted, formatted or tested on its own (issue 17). Code sent to
#: a kernel lives in a module of its own (nb2svc/runtime/kernel/agent.py) and is read from it.
MAX_STRING_LINES = 40


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant | ast.JoinedStr):
                found.add(id(first.value))
    return found


def long_strings(source: str, limit: int = MAX_STRING_LINES) -> list[tuple[int, int]]:
    """(line, lines) of each string literal longer than ``limit`` lines that is not a
    docstring; an f-string counts whole, implicitly joined literals count as one."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in docstrings or not isinstance(node, ast.Constant | ast.JoinedStr):
            continue
        if isinstance(node, ast.Constant) and not isinstance(node.value, str | bytes):
            continue
        lines = ast.get_source_segment(source, node) or ""
        value = node.value if isinstance(node, ast.Constant) else lines
        count = max(lines.count("\n"), value.count("\n" if isinstance(value, str) else b"\n")) + 1
        if count > limit:
            found.append((node.lineno, count))
    return found


def test_no_code_is_kept_in_long_strings_under_runtime() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{line}: a string of {count} lines"
        for path in sorted((REPO / "nb2svc" / "runtime").rglob("*.py"))
        for line, count in long_strings(path.read_text())
    ]
    assert not offenders, "code kept in strings (move it into a module):\n" + "\n".join(offenders)


def test_the_long_string_check_finds_them() -> None:
    joined = "x = (\n" + "".join(f'    "line {n}\\n"\n' for n in range(41)) + ")\n"
    escaped = "x = " + repr("\n".join(map(str, range(41)))) + "\n"
    fstring = 'y = 1\nx = f"""\n' + "{y}\n" * 41 + '"""\n'
    docstring = '"""' + "doc\n" * 50 + '"""\n'
    assert [count for _, count in long_strings(joined)] == [42]
    assert [count for _, count in long_strings(escaped)] == [41]
    assert long_strings(fstring) and not long_strings(docstring)
    assert not long_strings("x = '''\n" + "short\n" * 38 + "'''\n")  # 40 lines
