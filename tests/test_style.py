"""House style is checked like behaviour: ruff lint and format over the whole repository,
no code kept in long strings under nb2svc/runtime, and no module-level state there."""

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


# --- no module-level mutable state under nb2svc/runtime ---------------------------------------

RUNTIME = REPO / "nb2svc" / "runtime"
#: Calls whose result is immutable (or is a logger/pattern/template: process
#: infrastructure that holds no worker state). Anything else at module level, or a
#: container literal, is state that every worker, --reload version and test shares.
IMMUTABLE_CALLS = frozenset(
    {
        "frozenset",
        "tuple",
        "str",
        "object",
        "hasattr",
        "MappingProxyType",
        "TypeVar",
        "Path",
        "logging.getLogger",
        "re.compile",
        "Environment",
    }
)
#: Methods of immutable values (strings, compiled templates) that return another one.
IMMUTABLE_METHODS = frozenset({"replace", "format", "join", "strip", "from_string"})
MUTABLE_LITERALS = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
#: In a class body, calls are descriptors (``field(...)``, traitlets) unless they make a container.
CONTAINER_CALLS = frozenset({"list", "dict", "set", "defaultdict", "Counter", "deque", "OrderedDict"})


def _mutable(value: ast.expr, *, in_class: bool = False) -> bool:
    if isinstance(value, MUTABLE_LITERALS):
        return True
    if isinstance(value, ast.Call):
        name = ast.unparse(value.func)
        if in_class:
            return name.rsplit(".", 1)[-1] in CONTAINER_CALLS
        method = value.func.attr if isinstance(value.func, ast.Attribute) else ""
        return name not in IMMUTABLE_CALLS and method not in IMMUTABLE_METHODS
    return False


def _state_problems(tree: ast.Module) -> list[tuple[int, str]]:
    """``global`` statements anywhere; mutable values bound at module level or as class
    attributes (``__all__`` aside, a list by convention)."""
    problems = [(n.lineno, "a global statement") for n in ast.walk(tree) if isinstance(n, ast.Global)]
    bodies = [(tree.body, False)] + [(n.body, True) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for body, in_class in bodies:
        for node in body:
            if isinstance(node, ast.Assign):
                targets, value = [ast.unparse(t) for t in node.targets], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [ast.unparse(node.target)], node.value
            else:
                continue
            if targets != ["__all__"] and _mutable(value, in_class=in_class):
                problems.append((node.lineno, f"{', '.join(targets)} = {ast.unparse(value)[:60]}"))
    return problems


def test_the_runtime_holds_no_module_level_state() -> None:
    """Worker state lives in the worker's runtime object (nb2svc/runtime/worker_runtime.py)."""
    found = [
        f"{path.relative_to(REPO)}:{line}: {what}"
        for path in sorted(RUNTIME.rglob("*.py"))
        for line, what in _state_problems(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, "module-level or class-level state under nb2svc/runtime:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    global x\n",
        "_hooks: list = []\n",
        "_seen = set()\n",
        "_by_id = {k: v for k, v in ()}\n",
        "_context = Context()\n",
        "class Handler:\n    idle = set()\n",
        "class Edge:\n    limits = {'a': 1}\n",
    ],
)
def test_the_state_check_catches_each_kind(source: str) -> None:
    assert _state_problems(ast.parse(source))


def test_the_state_check_lets_constants_through() -> None:
    source = (
        "log = logging.getLogger('nb2svc')\nNAMES = frozenset({'a'})\nPAIRS = (1, 2)\n"
        "TABLE = MappingProxyType({'a': 1})\n__all__ = ['x']\nclass A:\n    limit = 3\n"
    )
    assert _state_problems(ast.parse(source)) == []


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
