"""The annotation grammar: what is an annotation, what is a comment, what is an error."""

from __future__ import annotations

import dataclasses

import pytest

from nb2svc.compiler.annotations import (
    Annotation,
    AnnotationError,
    parse_annotation,
    parse_path,
    route_pattern,
)


@pytest.mark.parametrize(
    ("line", "prefix", "expected"),
    [
        ("# GET /hello", "#", Annotation("endpoint", "GET", "/hello", ())),
        ("  #   POST   /items/:id  ", "#", Annotation("endpoint", "POST", "/items/:id", ("id",))),
        ("#\tPUT\t/a", "#", Annotation("endpoint", "PUT", "/a", ())),
        ("# DELETE /", "#", Annotation("endpoint", "DELETE", "/", ())),
        ("# PATCH /a-b.c~d/%20e/x@y", "#", Annotation("endpoint", "PATCH", "/a-b.c~d/%20e/x@y", ())),
        (
            "# GET /:_private1/:Name2",
            "#",
            Annotation("endpoint", "GET", "/:_private1/:Name2", ("_private1", "Name2")),
        ),
        (
            "# ResponseInfo PUT /a/:x/b/:y",
            "#",
            Annotation("response_info", "PUT", "/a/:x/b/:y", ("x", "y")),
        ),
        ("#  ResponseInfo   GET   /r", "#", Annotation("response_info", "GET", "/r", ())),
        ("// GET /js/:id", "//", Annotation("endpoint", "GET", "/js/:id", ("id",))),
        ("// ResponseInfo POST /js", "//", Annotation("response_info", "POST", "/js", ())),
        ("-- GET /sql", "--", Annotation("endpoint", "GET", "/sql", ())),
    ],
)
def test_valid_annotations(line: str, prefix: str, expected: Annotation) -> None:
    assert parse_annotation(line, prefix) == expected


@pytest.mark.parametrize(
    ("line", "prefix"),
    [
        ("# this is setup", "#"),
        ("#!shebang", "#"),
        ("#!/usr/bin/env python", "#"),
        ("# TODO: GET something", "#"),
        ("# Load the data", "#"),
        ("# GET the rows we need", "#"),
        ("# DELETE old rows before inserting", "#"),
        ("# NOTE /tmp is wiped at start", "#"),
        ("# See /docs for details", "#"),
        ("## GET /x", "#"),
        ("#", "#"),
        ("", "#"),
        ("x = 1  # GET /x", "#"),
        ("print('# GET /x')", "#"),
        ("# GET /x", "//"),
        ("/// GET /x", "//"),
        ("// GET /x", "#"),
    ],
)
def test_ordinary_lines_are_not_annotations(line: str, prefix: str) -> None:
    assert parse_annotation(line, prefix) is None


@pytest.mark.parametrize(
    ("line", "message", "hint"),
    [
        ("# GET hello", "the path must start with /", "write `# GET /hello`"),
        ("# ResponseInfo GET hello", "the path must start with /", "write `# ResponseInfo GET /hello`"),
        ("# GET /a//b", "empty segment in /a//b", "write `# GET /a/b`"),
        ("# GET /a/:", "empty parameter name in /a/:", "as in /items/:id"),
        ("# GET /a/:1x", "bad parameter name :1x in /a/:1x", "starts with a letter or _"),
        ("# GET /a/:x-y", "bad parameter name :x-y", "starts with a letter or _"),
        (
            "# FETCH /x",
            "unknown method 'FETCH' (use one of GET, POST, PUT, DELETE, PATCH)",
            "write `# GET /x`",
        ),
        ("# ResponseInfo FETCH /x", "unknown method 'FETCH'", "write `# ResponseInfo GET /x`"),
        ("# ResponseInfo /x", "missing method before the path", "write `# ResponseInfo GET /x`"),
        ("# ResponseInfo", "missing method and path", "write `# ResponseInfo GET /path`"),
        ("# responseinfo GET /x", "write ResponseInfo with this exact case", "write `# ResponseInfo GET /x`"),
        ("# get /x", "methods are upper case: GET", "write `# GET /x`"),
        ("# Post /x/:id", "methods are upper case: POST", "write `# POST /x/:id`"),
        ("# ResponseInfo delete /x", "methods are upper case: DELETE", "write `# ResponseInfo DELETE /x`"),
        ("# GET", "missing path after the method", "write `# GET /path`"),
        ("# GET /a/", "trailing slash in /a/", "write `# GET /a`"),
        ("# GET /a/:id/b/:id", "parameter :id appears twice in /a/:id/b/:id", "its own name"),
        ("# GET /a?x=1", "invalid character '?' in /a?x=1", "REQUEST['args']"),
        ("# GET /items/{id}", "invalid character '{'", "write parameters as :name"),
        ("# GET /a/b:c", "invalid character ':'", "letters, digits"),
        ("# GET /a/./b", "dot segment '.'", "remove it"),
        ("# GET /a extra words", "unexpected text after the path: 'extra words'", "on the next line"),
        ("#GET /x", "put a space after '#'", "write `# GET /x`"),
        ("//GET /x", "put a space after '//'", "write `// GET /x`"),
    ],
)
def test_malformed_annotations_are_errors(line: str, message: str, hint: str) -> None:
    prefix = "//" if line.startswith("//") else "#"
    with pytest.raises(AnnotationError) as info:
        parse_annotation(line, prefix)
    assert info.value.message.startswith(f"malformed annotation `{line.strip()}`: ")
    assert message in info.value.message
    assert hint in info.value.hint


def test_javascript_prefix_errors_suggest_javascript_syntax() -> None:
    with pytest.raises(AnnotationError) as info:
        parse_annotation("// get /x", "//")
    assert info.value.hint == "write `// GET /x`"


def test_parse_path_returns_params_in_order() -> None:
    assert parse_path("/a/:b/c/:d") == ("b", "d")
    assert parse_path("/") == ()
    assert parse_path("/plain") == ()


def test_parse_path_error_hints_stand_alone() -> None:
    with pytest.raises(AnnotationError) as info:
        parse_path("/a/")
    assert info.value.hint == "write /a"
    assert info.value.fixed_path == "/a"


def test_route_pattern_ignores_parameter_names() -> None:
    assert route_pattern("/items/:id") == route_pattern("/items/:key") == ("items", ":")
    assert route_pattern("/") == ()
    assert route_pattern("/items/id") != route_pattern("/items/:id")


def test_annotation_is_frozen() -> None:
    ann = parse_annotation("# GET /x", "#")
    assert ann is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ann.path = "/y"  # type: ignore[misc]
