"""A stricter compiler: near-miss annotations and Python syntax errors are found at build
time, naming the cell and the fix, while notebooks shaped like Kernel Gateway's own test
and example notebooks still compile (issue 21, items 1 and 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nb2svc.compiler import CompileError, compile_notebook
from tests.notebooks import md, notebook


def problems(nb) -> list[str]:
    with pytest.raises(CompileError) as info:
        compile_notebook(nb)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# GET/x", 'did you mean "# GET /x"?'),
        ("## GET /x", 'did you mean "# GET /x"?'),
        ("### ResponseInfo GET /ok", 'did you mean "# ResponseInfo GET /ok"?'),
        ("# ResponceInfo GET /ok", 'did you mean "# ResponseInfo GET /ok"?'),
        ("# ResponsInfo GET/ok", 'did you mean "# ResponseInfo GET /ok"?'),
        ("// GET /x", 'did you mean "# GET /x"?'),
        ("-- POST /items/:id", 'did you mean "# POST /items/:id"?'),
    ],
)
def test_first_line_near_misses_are_errors_with_the_fix(line: str, expected: str) -> None:
    (found,) = problems(notebook("import json", "# GET /ok\nprint(1)", f"{line}\nprint(2)"))
    assert found.startswith(f"<notebook>, cell 3: `{line}` looks like an annotation but is not one")
    assert "setup code" in found and found.endswith(f"({expected})")


def test_annotation_below_the_first_line_is_an_error_naming_its_line() -> None:
    (found,) = problems(notebook("# GET /ok", "import json\n# POST /orders\nprint(json.dumps({}))"))
    assert found.startswith("<notebook>, cell 2, line 2: the annotation `# POST /orders` is on line 2")
    assert "move `# POST /orders` to the top of the cell, above `import json`" in found


def test_prose_and_quoted_annotations_are_not_near_misses() -> None:
    spec = compile_notebook(
        notebook(
            "# GET the rows we need\nrows = []",
            "# Use GET/items to list\nx = 1",
            "# put/get helpers\ny = 2",
            'DOC = """\n# GET /quoted\n"""',
            "#!/usr/bin/env python\nz = 3",
            "# GET /ok\nprint(rows)",
        )
    )
    assert [ep.path for ep in spec.endpoints] == ["/ok"]
    assert len(spec.setup) == 5 and spec.warnings == ()


def test_a_second_annotation_inside_an_endpoint_cell_is_a_warning() -> None:
    spec = compile_notebook(notebook("# GET /a\nprint(1)\n# GET /b\nprint(2)"))
    assert [ep.path for ep in spec.endpoints] == ["/a"]
    (warning,) = spec.warnings
    assert warning.startswith("<notebook>, cell 1, line 3: `# GET /b` on line 3 is only a comment")


# --- syntax ----------------------------------------------------------------------------


def test_setup_cell_syntax_error_is_an_error_with_cell_and_line() -> None:
    (found,) = problems(notebook(md("# doc"), "import json\nx = = 1", "# GET /ok\nprint(1)"))
    assert found.startswith("<notebook>, cell 2, line 2: SyntaxError: invalid syntax: x = = 1")


def test_magics_shell_lines_and_top_level_await_pass() -> None:
    spec = compile_notebook(
        notebook(
            "!pip --version\n%time x = 1\nfiles = !ls",
            "%%bash\necho this is not python",
            "import asyncio\nawait asyncio.sleep(0)",
            "# GET /ok\n%time y = 2\nprint(x, y)",
        )
    )
    assert spec.warnings == ()


def test_endpoint_syntax_error_is_a_warning_as_kernel_gateway_serves_it() -> None:
    spec = compile_notebook(notebook("# GET /error\nthis cell should print an error in the response"))
    (warning,) = spec.warnings
    assert warning.startswith("<notebook>, cell 1, line 2: SyntaxError")
    assert "every request to GET /error will answer 500" in warning


def test_other_languages_are_not_syntax_checked() -> None:
    nb = notebook("x = = 1", "# GET /ok\necho hi", kernel="bash", language="bash")
    assert compile_notebook(nb).warnings == ()


# --- Kernel Gateway's own notebooks, by shape ---------------------------------------------
# Equivalents written here of kernel_gateway's etc/api_examples/*.ipynb and
# tests/resources/*.ipynb (3.0.1): each shape those notebooks use, which Kernel Gateway
# serves, must still compile.


def kg_shaped_notebooks() -> dict[str, nbformat.NotebookNode]:
    request_literal = 'REQUEST = json.dumps({\n    "path": {"id": "1"},\n    "args": {"person": ["x"]}\n})'
    return {
        "api_intro": notebook(
            md("# Contacts API"),
            "import json\nimport os\nimport uuid",
            "contacts = {}",
            request_literal,
            "# POST /contacts\n# decode the request\nreq = json.loads(REQUEST)\ncontacts['a'] = req['body']",
            "contacts",
            "# PUT /contacts/:contact_id\nreq = json.loads(REQUEST)\nstatus = 200",
            "# ResponseInfo PUT /contacts/:contact_id\n"
            'print(json.dumps({"status": status, "headers": {"Content-Type": "application/json"}}))',
            "# DELETE /contacts/:contact_id\nreq = json.loads(REQUEST)",
            "# ResponseInfo DELETE /contacts/:contact_id\n"
            "print(\n    json.dumps(\n        {'status': 204}\n    )\n)",
            "import re",
            'def filter_by_name(name_regex, contacts):\n    """Get contacts with names matching."""\n'
            "    return contacts",
            "# GET /contacts\nreq = json.loads(REQUEST)\n# query args appear as a list since they can be "
            "repeated in the URL\nprint(json.dumps(contacts))",
            "# ResponseInfo GET /contacts\n"
            'print(json.dumps({"headers": {"Content-Type": "application/json"}}))',
            'URL = "http://127.0.0.1:8889"',
            'if "KERNEL_GATEWAY" not in os.environ:\n    import requests\n\n    # POST /contacts\n'
            "    requests.post(URL + '/contacts', json={})",
            "",
        ),
        "endpoint_ordering": notebook(
            "# GET /test/test/test/test\nprint('1')",
            "# GET /test/test/test/:id\nprint('2')",
            "# GET /test/test/:id\nprint('3')",
            "# GET /t/t/:id\nprint('3')",
            "# GET /test/:id\nprint('4')",
            "# GET /t/:id\nprint('4')",
            "# GET /:id\nprint('5')",
        ),
        "setting_response_metadata": notebook(
            "!pip --version",
            "import hashlib\nimport json",
            "PERSON_INDEX = {1: {'id': 1, 'name': 'Corey'}}",
            "def get_person(person_id):\n    return PERSON_INDEX[int(person_id)]",
            request_literal,
            "# GET /person/:id\nrequest = json.loads(REQUEST)\netag = 'x'",
            "# ResponseInfo GET /person/:id\n"
            "print(\n    json.dumps(\n        {'headers': {'ETag': etag}}\n    )\n)",
            "",
        ),
        "kernel_api": notebook(
            "import os, json",
            "hello_message = 'hello {}'\npeople = ['Corey', 'Nitin', 'Pete']",
            "# GET /hello\nprint(hello_message.format('world'))",
            "# GET /hello/:person\nreq = json.loads(REQUEST)\n"
            "print(hello_message.format(req['path']['person']))",
            "# PUT /message\nreq = json.loads(REQUEST)\nhello_message = req['body']",
            "# POST /people\nreq = json.loads(REQUEST)\npeople = req['body']",
            "# DELETE /people/:index\nreq = json.loads(REQUEST)\n"
            "people.remove(people[int(req['path']['index'])])",
            "# GET /error\nthis cell should print an error in the response",
            "import sys",
            "# GET /stderr\nprint('I am text on stdout')\nprint('I am text on stderr', file=sys.stderr)",
            "# GET /execute_result\n1+1",
            "# GET /multi\nx = 1",
            "# GET /multi\nprint('x is {}'.format(x))",
        ),
        "responses": notebook(
            "import json",
            '# GET /json\nprint("""{ "hello" : "world"}""")',
            '# ResponseInfo GET /json\nprint(json.dumps({"headers": {"Content-Type": "application/json"}}))',
            "# GET /nocontent",
            '# ResponseInfo GET /nocontent\nprint(json.dumps({"status": 204}))',
        ),
        "simple_api": notebook(
            "import json",
            'name = "Test Name"',
            "# GET /name\nprint(name)",
            '# POST /name\nreq = json.loads(REQUEST)\nname = req["body"]',
        ),
    }


@pytest.mark.parametrize("name", sorted(kg_shaped_notebooks()))
def test_kernel_gateway_shaped_notebooks_compile(name: str) -> None:
    spec = compile_notebook(kg_shaped_notebooks()[name])
    assert spec.endpoints
    if name == "kernel_api":  # its deliberately failing endpoint is the only warning
        (warning,) = spec.warnings
        assert "GET /error will answer 500" in warning
    elif name != "endpoint_ordering":  # overlapping literal/parameter paths warn there
        assert spec.warnings == ()


def test_kernel_gateway_failing_seed_notebook_is_refused() -> None:
    """Kernel Gateway's failing_code.ipynb (`import not-a-real-module`) stops its start."""
    (found,) = problems(notebook("import not-a-real-module", "# GET /x\nprint(1)"))
    assert found.startswith("<notebook>, cell 1, line 1: SyntaxError")


# --- the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "wanted"),
    [
        ("# GET/x\nprint(1)", 'did you mean "# GET /x"?'),
        ("## GET /x\nprint(1)", 'did you mean "# GET /x"?'),
        ("# ResponceInfo GET /ok\nprint('{}')", 'did you mean "# ResponseInfo GET /ok"?'),
        ("import json\n# GET /x\nprint(1)", "move `# GET /x` to the top of the cell"),
        ("// GET /x\nprint(1)", 'did you mean "# GET /x"?'),
        ("x = = 1", "SyntaxError: invalid syntax: x = = 1"),
    ],
)
def test_build_exits_2_naming_the_cell(tmp_path: Path, cell: str, wanted: str) -> None:
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook("import json", "# GET /ok\nprint(1)", cell), path)
    result = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(path), "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}, cell 3" in result.stderr and wanted in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "service.json").exists()
