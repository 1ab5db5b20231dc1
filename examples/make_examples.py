"""Regenerate the example notebooks (run: python examples/make_examples.py).

The notebooks are committed; this script documents how they were made and keeps them
consistent (nbformat-valid, no outputs, stable cell ids). Every endpoint cell carries
example requests and their expected answers in its metadata (``nb2svc.examples``), which
``nb2svc test`` sends and checks; they run in notebook order on one kernel, so the todo
examples build on each other (create, read, update, delete).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent / "notebooks"


def notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index + 1}"
    return nb


def example(path: str | None = None, name: str = "", **parts: Any) -> dict[str, Any]:
    """One ``nb2svc.examples`` entry: ``request_*`` and ``response_*`` keyword parts."""
    request = {"path": path} if path else {}
    response = {}
    for key, value in parts.items():
        section, _, field = key.partition("_")
        (request if section == "request" else response)[field] = value
    return {"name": name, "request": request, "response": response}


def with_examples(cell: nbformat.NotebookNode, *examples: dict[str, Any]) -> nbformat.NotebookNode:
    cell.metadata["nb2svc"] = {"examples": list(examples)}
    return cell


JSON = "application/json"
SEED_1 = {"id": 1, "title": "write the notebook", "done": False}
SEED_2 = {"id": 2, "title": "serve it with nb2svc", "done": True}
CREATED = {"id": 3, "title": "ship it", "done": False}
NOT_FOUND = {"error": "NotFound", "message": "no todo 99"}


def hello() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell("# Hello service\nThe smallest nb2svc service: one setup cell, two endpoints."),
            new_code_cell("import json\ngreeting = 'hello'"),
            new_markdown_cell("Greet someone by name."),
            with_examples(
                new_code_cell(
                    "# GET /hello/:name\n"
                    "req = json.loads(REQUEST)\n"
                    "print(f\"{greeting}, {req['path']['name']}\")"
                ),
                example(
                    "/hello/world",
                    "greets by name",
                    response_status=200,
                    response_content_type="text/plain",
                    response_body="hello, world\n",
                ),
                example("/hello/J%C3%BCrgen", "decodes the path", response_body="hello, Jürgen\n"),
            ),
            new_markdown_cell("Greet whoever is in the JSON body's `name`."),
            with_examples(
                new_code_cell(
                    "# POST /hello\n"
                    "req = json.loads(REQUEST)\n"
                    "body = req['body'] if isinstance(req['body'], dict) else {}\n"
                    "print(json.dumps({'greeting': f\"{greeting}, {body.get('name', 'world')}\"}))"
                ),
                example(
                    name="greets the body's name",
                    request_json={"name": "bob"},
                    response_status=201,
                    response_content_type=JSON,
                    response_json={"greeting": "hello, bob"},
                ),
                example(
                    name="greets the world by default",
                    request_json={},
                    response_status=201,
                    response_json={"greeting": "hello, world"},
                ),
            ),
            new_code_cell(
                "# ResponseInfo POST /hello\n"
                "print(json.dumps({'status': 201, 'headers': {'Content-Type': 'application/json'}}))"
            ),
        ]
    )


def todo() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# Todo service\nAn in-memory todo list: state lives in the kernel, set up once per kernel."
            ),
            new_code_cell(
                "import json\n"
                "import itertools\n"
                "\n"
                "TODOS = {}\n"
                "NEXT_ID = itertools.count(1)\n"
                "\n"
                "def respond(status, payload=None, headers=None):\n"
                '    """Print the ResponseInfo JSON for the current request."""\n'
                "    print(json.dumps({'status': status, 'headers': {'Content-Type': 'application/json', "
                "**(headers or {})}}))"
            ),
            new_code_cell(
                "def add(title, done=False):\n"
                "    todo = {'id': next(NEXT_ID), 'title': title, 'done': done}\n"
                "    TODOS[todo['id']] = todo\n"
                "    return todo\n"
                "\n"
                "add('write the notebook')\n"
                "add('serve it with nb2svc', done=True)"
            ),
            new_markdown_cell("List todos. `?done=true` or `?done=false` filters."),
            with_examples(
                new_code_cell(
                    "# GET /todos\n"
                    "req = json.loads(REQUEST)\n"
                    "wanted = req['args'].get('done', [None])[0]\n"
                    "items = [t for t in TODOS.values() "
                    "if wanted is None or str(t['done']).lower() == wanted]\n"
                    "print(json.dumps(items))"
                ),
                example(
                    name="lists the todos of the setup cell",
                    response_content_type=JSON,
                    response_json=[SEED_1, SEED_2],
                ),
                example("/todos?done=true", "filters by done", response_json=[SEED_2]),
            ),
            new_code_cell("# ResponseInfo GET /todos\nrespond(200)"),
            new_markdown_cell('Create a todo from a JSON body `{"title": ..., "done": false}`.'),
            with_examples(
                new_code_cell(
                    "# POST /todos\n"
                    "req = json.loads(REQUEST)\n"
                    "body = req['body'] if isinstance(req['body'], dict) else {}\n"
                    "title = str(body.get('title', '')).strip()\n"
                    "if title:\n"
                    "    created = add(title, bool(body.get('done', False)))\n"
                    "    print(json.dumps(created))\n"
                    "else:\n"
                    "    created = None\n"
                    "    print(json.dumps({'error': 'BadRequest', "
                    "'message': 'a non-empty title is required'}))"
                ),
                example(
                    name="creates a todo",
                    request_json={"title": "ship it"},
                    response_status=201,
                    response_content_type=JSON,
                    response_headers={"Location": "/todos/3"},
                    response_json=CREATED,
                ),
                example(
                    name="needs a title",
                    request_json={"title": " "},
                    response_status=400,
                    response_json={"error": "BadRequest", "message": "a non-empty title is required"},
                ),
            ),
            new_code_cell(
                "# ResponseInfo POST /todos\n"
                "if created:\n"
                "    respond(201, headers={'Location': f\"/todos/{created['id']}\"})\n"
                "else:\n"
                "    respond(400)"
            ),
            new_markdown_cell("The current statistics (a literal route: it wins over `/todos/:id`)."),
            with_examples(
                new_code_cell(
                    "# GET /todos/stats\n"
                    "print(json.dumps({'total': len(TODOS), 'done': sum(t['done'] for t in TODOS.values())}))"
                ),
                example(name="counts the todos", response_status=200, response_json={"total": 3, "done": 1}),
            ),
            new_markdown_cell("One todo by id."),
            with_examples(
                new_code_cell(
                    "# GET /todos/:id\n"
                    "req = json.loads(REQUEST)\n"
                    "todo_id = req['path']['id']\n"
                    "found = TODOS.get(int(todo_id)) if todo_id.isdecimal() else None\n"
                    "print(json.dumps(found or {'error': 'NotFound', 'message': f'no todo {todo_id}'}))"
                ),
                example("/todos/3", "reads a todo", response_content_type=JSON, response_json=CREATED),
                example("/todos/99", "404 for an unknown id", response_status=404, response_json=NOT_FOUND),
            ),
            new_code_cell("# ResponseInfo GET /todos/:id\nrespond(200 if found else 404)"),
            new_markdown_cell('Mark a todo done or not: body `{"done": true}`.'),
            with_examples(
                new_code_cell(
                    "# PUT /todos/:id\n"
                    "req = json.loads(REQUEST)\n"
                    "todo_id = req['path']['id']\n"
                    "found = TODOS.get(int(todo_id)) if todo_id.isdecimal() else None\n"
                    "if found:\n"
                    "    body = req['body'] if isinstance(req['body'], dict) else {}\n"
                    "    found['done'] = bool(body.get('done', True))\n"
                    "print(json.dumps(found or {'error': 'NotFound', 'message': f'no todo {todo_id}'}))"
                ),
                example(
                    "/todos/3",
                    "marks a todo done",
                    request_json={"done": True},
                    response_json={**CREATED, "done": True},
                ),
                example(
                    "/todos/99",
                    "404 for an unknown id",
                    request_json={"done": True},
                    response_status=404,
                    response_json=NOT_FOUND,
                ),
            ),
            new_code_cell("# ResponseInfo PUT /todos/:id\nrespond(200 if found else 404)"),
            new_markdown_cell("Delete a todo."),
            with_examples(
                new_code_cell(
                    "# DELETE /todos/:id\n"
                    "req = json.loads(REQUEST)\n"
                    "todo_id = req['path']['id']\n"
                    "found = TODOS.pop(int(todo_id), None) if todo_id.isdecimal() else None"
                ),
                example("/todos/3", "deletes a todo", response_status=204, response_body=""),
                example("/todos/3", "404 once deleted", response_status=404),
            ),
            new_code_cell("# ResponseInfo DELETE /todos/:id\nrespond(204 if found else 404)"),
        ]
    )


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    for name, build in (("hello", hello), ("todo", todo)):
        nb = build()
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(f"wrote {HERE / name}.ipynb")
