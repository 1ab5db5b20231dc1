"""compile_notebook: notebooks in, ServiceSpec or one CompileError with every problem out."""

from __future__ import annotations

import copy
import json
import random

import nbformat
import pytest

from nb2svc.compiler import CompileError, KernelInfo, ResponseInfo, ServiceSpec, SetupCell, compile_notebook
from nb2svc.compiler.notebook import comment_prefix_for
from tests.notebooks import md, notebook


def compile_error(nb, **kwargs) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_notebook(nb, **kwargs)
    assert "Traceback" not in str(info.value)
    return info.value


def paths(spec: ServiceSpec) -> list[str]:
    return [f"{ep.method} {ep.path}" for ep in spec.endpoints]


# --- cells: setup, endpoints, concatenation --------------------------------------------


def test_setup_and_endpoint_cells_with_1_based_numbers_counting_markdown() -> None:
    nb = notebook(
        md("# Hello service"),
        "import json\nGREETING = 'hi'",
        "",
        "   \n",
        "# GET /hello/:name\nprint(GREETING)",
        md("notes"),
        "x = 1",
    )
    spec = compile_notebook(nb)
    assert spec.setup == (SetupCell(2, "import json\nGREETING = 'hi'"), SetupCell(7, "x = 1"))
    assert spec.setup_code == "import json\nGREETING = 'hi'\n\nx = 1"
    (ep,) = spec.endpoints
    assert (ep.method, ep.path, ep.params, ep.cells) == ("GET", "/hello/:name", ("name",), (5,))
    assert ep.code == "# GET /hello/:name\nprint(GREETING)"
    assert ep.response_info is None
    assert spec.kernel == KernelInfo("python3", "python")
    assert spec.name == "service"
    assert spec.notebook == "service.ipynb"
    assert spec.warnings == ()


def test_same_annotation_concatenates_in_notebook_order() -> None:
    nb = notebook("# POST /items\na = 1", "setup = True", "# GET /items\nprint(2)", "# POST /items\nprint(a)")
    spec = compile_notebook(nb)
    post = next(ep for ep in spec.endpoints if ep.method == "POST")
    assert post.cells == (1, 4)
    assert post.code == "# POST /items\na = 1\n# POST /items\nprint(a)"
    assert spec.setup == (SetupCell(2, "setup = True"),)


def test_response_info_attaches_to_same_method_and_path_and_concatenates() -> None:
    nb = notebook(
        "# ResponseInfo GET /items/:id\nprint('{\"status\": 201}')",
        "# GET /items/:id\nprint(1)",
        "# PUT /items/:id\nprint(2)",
        "# ResponseInfo GET /items/:id\nprint('x')",
    )
    spec = compile_notebook(nb)
    get, put = spec.endpoints
    assert get.method == "GET"
    assert get.response_info == ResponseInfo(
        (1, 4),
        "# ResponseInfo GET /items/:id\nprint('{\"status\": 201}')\n"
        "# ResponseInfo GET /items/:id\nprint('x')",
    )
    assert put.response_info is None
    assert spec.setup == ()


def test_cell_source_as_list_of_lines_and_crlf() -> None:
    nb = nbformat.from_dict(
        {
            "nbformat": 4,
            "nbformat_minor": 4,
            "metadata": {},
            "cells": [
                {
                    "cell_type": "code",
                    "metadata": {},
                    "outputs": [],
                    "execution_count": None,
                    "source": ["# GET /x\r\n", "print(1)"],
                }
            ],
        }
    )
    (ep,) = compile_notebook(nb).endpoints
    assert ep.path == "/x"
    assert ep.code == "# GET /x\r\nprint(1)"


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "# GET hello",
        "# GET /a//b",
        "# GET /a/:",
        "# GET /a/:1x",
        "# FETCH /x",
        "# ResponseInfo /x",
        "# get /x",
        "# GET /a/",
        "# GET /a/:x/:x",
    ],
)
def test_malformed_annotation_names_its_cell(line: str) -> None:
    err = compile_error(notebook(md("doc"), "setup = 1", f"{line}\nprint(1)", "# GET /ok"))
    (problem,) = err.problems
    assert problem.cell == 3
    assert problem.source == "<notebook>"
    assert str(problem).startswith(f"<notebook>, cell 3: malformed annotation `{line}`")
    assert problem.hint


def test_orphan_response_info_is_an_error_with_hint() -> None:
    err = compile_error(notebook("# GET /a", md("x"), "# ResponseInfo POST /a\nprint('{}')"))
    (problem,) = err.problems
    assert problem.cell == 3
    assert problem.message == "ResponseInfo POST /a has no matching endpoint"
    assert problem.hint == "annotate a code cell with `# POST /a`, or fix this cell's method and path"


def test_orphan_response_info_with_other_param_names_suggests_the_endpoint_path() -> None:
    err = compile_error(notebook("# GET /items/:id", "# ResponseInfo GET /items/:key"))
    (problem,) = err.problems
    assert problem.cell == 2
    assert problem.hint == "did you mean `# ResponseInfo GET /items/:id`?"


def test_no_endpoints_is_an_error() -> None:
    err = compile_error(notebook(md("# Title"), "x = 1", "# just a comment"))
    (problem,) = err.problems
    assert problem.cell is None
    assert problem.message == "no endpoints found"
    assert problem.hint == "annotate a code cell's first line with `# GET /path`"
    assert str(err) == "<notebook>: no endpoints found (annotate a code cell's first line with `# GET /path`)"


def test_empty_notebook_has_no_endpoints() -> None:
    assert compile_error(notebook()).problems[0].message == "no endpoints found"


def test_no_endpoints_is_not_reported_on_top_of_malformed_annotations() -> None:
    err = compile_error(notebook("# GET hello"))
    assert [p.cell for p in err.problems] == [1]


def test_duplicate_route_differing_only_in_param_names() -> None:
    nb = notebook("x = 1", md("m"), "# GET /items/:id", "y", "z", "w", "# GET /items/:key")
    err = compile_error(nb)
    (problem,) = err.problems
    assert problem.cell == 7
    assert problem.message == "duplicate route GET /items/:key (also cell 3 as /items/:id)"
    assert str(problem).startswith(
        "<notebook>, cell 7: duplicate route GET /items/:key (also cell 3 as /items/:id)"
    )
    assert "`# GET /items/:id`" in problem.hint


def test_same_pattern_with_other_param_names_across_methods_is_an_error() -> None:
    err = compile_error(notebook("# GET /items/:id", "# PUT /items/:key"))
    (problem,) = err.problems
    assert problem.cell == 2
    assert problem.message == (
        "PUT /items/:key names its parameters differently from GET /items/:id (cell 1); "
        "one path pattern must use one set of parameter names"
    )
    assert problem.hint == "write `# PUT /items/:id`"


def test_same_names_across_methods_is_one_path() -> None:
    spec = compile_notebook(notebook("# PUT /items/:id", "# GET /items/:id"))
    assert list(spec.paths()) == ["/items/:id"]
    assert paths(spec) == ["GET /items/:id", "PUT /items/:id"]


def test_all_problems_are_collected_in_cell_order() -> None:
    nb = notebook("# GET /a/:x", "# ResponseInfo GET /nope", "# get /b", "# GET /a/:y", "# GET /c/")
    err = compile_error(nb)
    assert [p.cell for p in err.problems] == [2, 3, 4, 5]
    assert len(str(err).splitlines()) == 4


# --- ordering and warnings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "cells", [["# GET /users/:id", "# GET /users/me"], ["# GET /users/me", "# GET /users/:id"]]
)
def test_literal_segment_wins_whatever_the_cell_order(cells: list[str]) -> None:
    spec = compile_notebook(notebook(*cells))
    assert paths(spec) == ["GET /users/me", "GET /users/:id"]


def test_deeper_ordering_is_independent_of_cell_order() -> None:
    expected = [
        "GET /",
        "GET /a",
        "GET /a/b",
        "GET /a/b/c",
        "POST /a/b/c",
        "DELETE /a/b/c",
        "GET /a/b/:y",
        "GET /a/:x/c",
        "GET /b/:x",
        "GET /:z/b/c",
        "PUT /:z/b/c",
    ]
    rng = random.Random(7)
    for _ in range(5):
        lines = [f"# {route}" for route in expected]
        rng.shuffle(lines)
        assert paths(compile_notebook(notebook(*lines))) == expected


def test_methods_order_within_a_path() -> None:
    nb = notebook("# PATCH /x", "# DELETE /x", "# PUT /x", "# POST /x", "# GET /x")
    assert [ep.method for ep in compile_notebook(nb).endpoints] == ["GET", "POST", "PUT", "DELETE", "PATCH"]


def test_overlapping_routes_warn_but_compile() -> None:
    spec = compile_notebook(notebook("# GET /users/:id", "x = 1", "# DELETE /users/me"))
    assert spec.warnings == (
        "<notebook>, cell 1: route /users/:id overlaps /users/me (cell 3): a request for /users/me "
        "goes to /users/me, because literal segments win over parameters",
    )
    assert len(spec.endpoints) == 2


def test_overlap_example_path_mixes_literals() -> None:
    spec = compile_notebook(notebook("# GET /:y/b/c", "# GET /a/:x/c"))
    (warning,) = spec.warnings
    assert "route /:y/b/c overlaps /a/:x/c (cell 2): a request for /a/b/c goes to /a/:x/c" in warning


@pytest.mark.parametrize(
    "cells",
    [
        ["# GET /users/:id", "# GET /users/:id/posts"],
        ["# GET /a/b", "# GET /c/:x"],
        ["# GET /items/:id", "# PUT /items/:id"],
        ["# GET /a", "# GET /:x/y"],
    ],
)
def test_no_warning_when_routes_cannot_overlap(cells: list[str]) -> None:
    assert compile_notebook(notebook(*cells)).warnings == ()


# --- docs from markdown -----------------------------------------------------------------------


def test_markdown_right_before_first_cell_documents_the_endpoint() -> None:
    nb = notebook(
        md("## Get a user\n\nReturns the user\nas JSON."),
        "# GET /users/:id\nprint(1)",
        md("### Not used: not before the first cell"),
        "# GET /users/:id\nprint(2)",
        md("#\n\n  Plain summary line  \n"),
        "# POST /users",
        md("Separated"),
        "x = 1",
        "# DELETE /users/:id",
    )
    spec = compile_notebook(nb)
    docs = {(ep.method, ep.path): (ep.summary, ep.description) for ep in spec.endpoints}
    assert docs == {
        ("GET", "/users/:id"): ("Get a user", "Returns the user\nas JSON."),
        ("POST", "/users"): ("Plain summary line", ""),
        ("DELETE", "/users/:id"): ("", ""),
    }


# --- kernels and comment prefixes ----------------------------------------------------------


def test_javascript_kernel_uses_double_slash() -> None:
    nb = notebook("// GET /js/:id\nconsole.log(1)", "var x = 1", kernel="javascript", language="javascript")
    spec = compile_notebook(nb)
    assert paths(spec) == ["GET /js/:id"]
    assert spec.setup == (SetupCell(2, "var x = 1"),)
    assert spec.kernel == KernelInfo("javascript", "javascript")
    # a Python-style annotation in a JavaScript notebook is a near miss, not setup code
    err = compile_error(notebook("// GET /js", "# GET /py", kernel="javascript", language="javascript"))
    assert [(p.cell, p.hint) for p in err.problems] == [(2, 'did you mean "// GET /py"?')]


def test_language_falls_back_to_language_info() -> None:
    nb = notebook("// GET /s", kernel="spylon", language_info="Scala")
    spec = compile_notebook(nb)
    assert spec.kernel == KernelInfo("spylon", "scala")
    assert paths(spec) == ["GET /s"]


def test_explicit_prefix_overrides_the_language() -> None:
    spec = compile_notebook(notebook("// GET /x", "// GET /y"), comment_prefix="//")
    assert paths(spec) == ["GET /x", "GET /y"]


def test_unknown_language_asks_for_comment_prefix() -> None:
    nb = notebook("; GET /x", kernel="mykernel", language="brainfunk")
    err = compile_error(nb)
    (problem,) = err.problems
    assert problem.cell is None
    assert "unknown kernel language 'brainfunk'" in problem.message
    assert "--comment-prefix" in problem.hint
    spec = compile_notebook(nb, comment_prefix=";")
    assert paths(spec) == ["GET /x"]
    assert spec.kernel == KernelInfo("mykernel", "brainfunk")


@pytest.mark.parametrize("prefix", ["", " #", "# #"])
def test_invalid_explicit_prefix(prefix: str) -> None:
    assert (
        "invalid comment prefix"
        in compile_error(notebook("# GET /x"), comment_prefix=prefix).problems[0].message
    )


@pytest.mark.parametrize(
    ("language", "prefix"),
    [
        ("python", "#"),
        ("python3", "#"),
        ("R", "#"),
        ("julia", "#"),
        ("bash", "#"),
        ("C++17", "//"),
        ("scala", "//"),
        ("go", "//"),
        ("SQL", "--"),
        ("haskell", "--"),
        ("cobol", None),
    ],
)
def test_comment_prefix_for(language: str, prefix: str | None) -> None:
    assert comment_prefix_for(language) == prefix


# --- reading notebooks ----------------------------------------------------------------------------


def test_file_source_names_the_service_and_errors(tmp_path) -> None:
    path = tmp_path / "hello.ipynb"
    nbformat.write(notebook("# GET /hello\nprint('hi')"), path)
    spec = compile_notebook(path)
    assert (spec.name, spec.notebook) == ("hello", "hello.ipynb")
    assert compile_notebook(str(path), name="greeter").name == "greeter"

    bad = tmp_path / "bad.ipynb"
    nbformat.write(notebook("# GET hello"), bad)
    assert str(compile_error(bad)).startswith(f"{bad}, cell 1: malformed annotation")


def test_json_text_and_bytes_sources() -> None:
    text = nbformat.writes(notebook("# GET /t"))
    assert paths(compile_notebook(text)) == ["GET /t"]
    assert paths(compile_notebook(text.encode())) == ["GET /t"]
    assert compile_notebook(text, name="svc").notebook == "svc.ipynb"


def test_plain_dict_source() -> None:
    data = json.loads(nbformat.writes(notebook("# GET /d")))
    assert paths(compile_notebook(data)) == ["GET /d"]


def test_missing_file(tmp_path) -> None:
    err = compile_error(tmp_path / "nope.ipynb")
    assert str(err) == f"{tmp_path / 'nope.ipynb'}: notebook not found (check the path)"


def test_directory(tmp_path) -> None:
    assert "is a directory" in str(compile_error(tmp_path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("this is not json", "not a notebook: invalid JSON at line 1, column 1"),
        ('{"cells": [', "not a notebook: invalid JSON"),
        ("[1, 2]", "not a notebook: the JSON has no integer 'nbformat' version"),
        ('{"hello": "world"}', "not a notebook: the JSON has no integer 'nbformat' version"),
        ('{"nbformat": "4"}', "no integer 'nbformat' version"),
        ('{"nbformat": 9, "nbformat_minor": 0}', "unsupported notebook format version 9"),
        (
            '{"nbformat": 4, "nbformat_minor": 5}',
            "invalid notebook: 'cells' is a required property (at top level)",
        ),
        (
            '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": ["x"]}',
            "invalid notebook: 'cells' must be a list of cell objects",
        ),
        (
            '{"nbformat": 4, "nbformat_minor": 5, "metadata": [], "cells": []}',
            "invalid notebook: [] is not of type 'object' (at metadata)",
        ),
    ],
)
def test_corrupt_or_non_notebook_files(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text(content)
    err = compile_error(path)
    (problem,) = err.problems
    assert problem.cell is None
    assert message in problem.message
    assert str(err).startswith(f"{path}: ")


def test_not_utf8(tmp_path) -> None:
    path = tmp_path / "latin.ipynb"
    path.write_bytes(b'{"x": "\xe9"}')
    assert "not UTF-8" in str(compile_error(path))


def test_schema_error_names_the_cell(tmp_path) -> None:
    data = json.loads(nbformat.writes(notebook("x = 1", "# GET /x")))
    del data["cells"][1]["outputs"]
    path = tmp_path / "invalid.ipynb"
    path.write_text(json.dumps(data))
    (problem,) = compile_error(path).problems
    assert problem.message == "invalid notebook: 'outputs' is a required property (at cell 2)"


def test_v3_notebook_is_converted() -> None:
    v3 = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {"name": ""},
        "worksheets": [
            {
                "metadata": {},
                "cells": [
                    {"cell_type": "code", "input": "# GET /old\nprint(1)", "language": "python",
                     "outputs": [], "metadata": {}},
                ],
            }
        ],
    }  # fmt: skip
    assert paths(compile_notebook(json.dumps(v3))) == ["GET /old"]


def test_input_notebook_is_not_modified() -> None:
    data = json.loads(nbformat.writes(notebook("# GET /x")))
    data["nbformat_minor"] = 5
    del data["cells"][0]["id"]  # validation would add an id to our copy only
    node = nbformat.from_dict(data)
    before = copy.deepcopy(node)
    compile_notebook(node)
    assert node == before


# --- the spec ------------------------------------------------------------------------------------


def test_spec_json_round_trip_and_determinism() -> None:
    nb = notebook(
        md("# Items\nAll of them."),
        "# GET /items/:id\nprint(1)",
        "# ResponseInfo GET /items/:id\nprint('{}')",
        "import os",
        "# POST /items",
        "# GET /items/new",
    )
    spec = compile_notebook(nb, name="items")
    again = ServiceSpec.from_json(spec.to_json())
    assert again == spec
    assert again.to_json() == spec.to_json() == compile_notebook(nb, name="items").to_json()
    assert spec.warnings  # /items/new and /items/:id overlap
