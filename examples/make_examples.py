"""Regenerate the example notebooks (run: python examples/make_examples.py).

The notebooks are committed; this script documents how they were made and keeps them
consistent (nbformat-valid, no outputs, stable cell ids).
"""

from __future__ import annotations

from pathlib import Path

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


def hello() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell("# Hello service\nThe smallest nb2svc service: one setup cell, two endpoints."),
            new_code_cell("import json\ngreeting = 'hello'"),
            new_markdown_cell("Greet someone by name."),
            new_code_cell(
                "# GET /hello/:name\n"
                "req = json.loads(REQUEST)\n"
                "print(f\"{greeting}, {req['path']['name']}\")"
            ),
            new_markdown_cell("Greet whoever is in the JSON body's `name`."),
            new_code_cell(
                "# POST /hello\n"
                "req = json.loads(REQUEST)\n"
                "print(json.dumps({'greeting': f\"{greeting}, {req['body'].get('name', 'world')}\"}))"
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
                "    \"\"\"Print the ResponseInfo JSON for the current request.\"\"\"\n"
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
            new_code_cell(
                "# GET /todos\n"
                "req = json.loads(REQUEST)\n"
                "wanted = req['args'].get('done', [None])[0]\n"
                "items = [t for t in TODOS.values() if wanted is None or str(t['done']).lower() == wanted]\n"
                "print(json.dumps(items))"
            ),
            new_code_cell("# ResponseInfo GET /todos\nrespond(200)"),
            new_markdown_cell("Create a todo from a JSON body `{\"title\": ..., \"done\": false}`."),
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
                "    print(json.dumps({'error': 'BadRequest', 'message': 'a non-empty title is required'}))"
            ),
            new_code_cell(
                "# ResponseInfo POST /todos\n"
                "if created:\n"
                "    respond(201, headers={'Location': f\"/todos/{created['id']}\"})\n"
                "else:\n"
                "    respond(400)"
            ),
            new_markdown_cell("The current statistics (a literal route: it wins over `/todos/:id`)."),
            new_code_cell(
                "# GET /todos/stats\n"
                "print(json.dumps({'total': len(TODOS), 'done': sum(t['done'] for t in TODOS.values())}))"
            ),
            new_markdown_cell("One todo by id."),
            new_code_cell(
                "# GET /todos/:id\n"
                "req = json.loads(REQUEST)\n"
                "todo_id = req['path']['id']\n"
                "found = TODOS.get(int(todo_id)) if todo_id.isdigit() else None\n"
                "print(json.dumps(found or {'error': 'NotFound', 'message': f'no todo {todo_id}'}))"
            ),
            new_code_cell("# ResponseInfo GET /todos/:id\nrespond(200 if found else 404)"),
            new_markdown_cell("Mark a todo done or not: body `{\"done\": true}`."),
            new_code_cell(
                "# PUT /todos/:id\n"
                "req = json.loads(REQUEST)\n"
                "todo_id = req['path']['id']\n"
                "found = TODOS.get(int(todo_id)) if todo_id.isdigit() else None\n"
                "if found:\n"
                "    found['done'] = bool(req['body'].get('done', True))\n"
                "print(json.dumps(found or {'error': 'NotFound', 'message': f'no todo {todo_id}'}))"
            ),
            new_code_cell("# ResponseInfo PUT /todos/:id\nrespond(200 if found else 404)"),
            new_markdown_cell("Delete a todo."),
            new_code_cell(
                "# DELETE /todos/:id\n"
                "req = json.loads(REQUEST)\n"
                "todo_id = req['path']['id']\n"
                "found = TODOS.pop(int(todo_id), None) if todo_id.isdigit() else None"
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
