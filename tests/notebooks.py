"""Build small notebooks in memory for compiler tests.

A ``str`` is a code cell; use :func:`md` for a markdown cell. Cell numbers in the
compiled spec are 1-based positions in the argument list.
"""

from __future__ import annotations

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook


def md(text: str) -> NotebookNode:
    return new_markdown_cell(text)


def notebook(
    *cells: str | NotebookNode,
    kernel: str | None = None,
    language: str | None = None,
    language_info: str | None = None,
) -> NotebookNode:
    """A valid nbformat-4 notebook; kernelspec/language_info only when given."""
    metadata: dict = {}
    if kernel or language:
        metadata["kernelspec"] = {"name": kernel or "k", "display_name": kernel or "k"}
        if language:
            metadata["kernelspec"]["language"] = language
    if language_info:
        metadata["language_info"] = {"name": language_info}
    return new_notebook(
        cells=[new_code_cell(c) if isinstance(c, str) else c for c in cells],
        metadata=metadata,
    )


def shell_notebook() -> NotebookNode:
    """A bash kernel notebook with one endpoint and its example, stable byte for byte (fixed
    cell ids): the non-Python half of the bundles of several notebooks in the tests."""
    endpoint = new_code_cell(
        "# GET /greet/:name\n"
        """name=$(printf %s "$REQUEST" | sed -E 's/.*"path": ?\\{"name": ?"([^"]*)".*/\\1/')\n"""
        'echo "$GREETING, $name"'
    )
    endpoint.metadata["nb2svc"] = {
        "examples": [
            {
                "name": "greets in bash",
                "request": {"path": "/greet/bob"},
                "response": {"status": 200, "body": "hi from bash, bob\n"},
            }
        ]
    }
    nb = notebook(md("A bash service."), "GREETING='hi from bash'", endpoint, kernel="bash", language="bash")
    for number, cell in enumerate(nb.cells, start=1):
        cell["id"] = f"cell-{number}"
    return nb
