"""Regenerate the example notebooks (run: python examples/make_examples.py).

The notebooks are committed; this script documents how they were made and keeps them
consistent (nbformat-valid, no outputs, stable cell ids). Every endpoint cell carries
example requests and their expected answers in its metadata (``nb2svc.examples``), which
``nb2svc test`` sends and checks; they run in notebook order, so the todo examples build
on each other (create, read, update, delete) in the todo list's SQLite file.

``notebooks/`` holds one service per notebook; ``several/`` holds two notebooks that are
served together as one service (``nb2svc serve examples/several``), each under its own
prefix. Their examples name paths as the notebook writes them (``/items``), and ``nb2svc
test examples/several`` sends them at the mounted paths (``/inventory/items``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent / "notebooks"
SEVERAL = Path(__file__).parent / "several"


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


def with_examples(
    cell: nbformat.NotebookNode, *examples: dict[str, Any], response: str | None = None
) -> nbformat.NotebookNode:
    """``cell`` with its ``nb2svc.examples`` (and ``nb2svc.response`` when given)."""
    cell.metadata["nb2svc"] = {"examples": list(examples)} | ({"response": response} if response else {})
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


TODO_INTRO = """# Todo service
A todo list kept in SQLite, in the file `todo.sqlite3` in the service's working directory
(the notebook's folder; in a bundle's image, where that is read-only, the home directory),
or wherever the variable `KERNEL_TODO_DB` says (`KERNEL_*` variables reach the kernels).

**Why a file, not a dict in the kernel.** nb2svc answers requests from a pool of warm
kernels (`--pool-size`, 2 by default, in each worker), and each request runs on whichever
kernel is free. A variable that one request sets lives in that kernel alone: todos kept in
a dict would be found by some later requests and not by others (POST a todo, then GET it:
404, 200, 404, ...). Every kernel opens this one file, so every request sees every todo.

Each use opens its own connection and closes it (none is kept in a global): that is safe
between kernels, and across the fork of kernels started from a template
(`--kernel-start fork`). A file serves one machine; replicas on several machines need a
database they all reach.

The endpoint examples (`nb2svc test`) expect the two todos of the setup: they create todo
3, change it and delete it, which leaves the file as they found it. Delete `todo.sqlite3`
to start over."""


def todo() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(TODO_INTRO),
            new_code_cell(
                "import json\n"
                "import os\n"
                "import sqlite3\n"
                "from contextlib import closing\n"
                "\n"
                "# The working directory; the home directory where that is read-only (a bundle's image)\n"
                "HERE = '.' if os.access('.', os.W_OK) else os.path.expanduser('~')\n"
                "DB_PATH = os.environ.get('KERNEL_TODO_DB') or os.path.join(HERE, 'todo.sqlite3')\n"
                "DB_PATH = os.path.abspath(DB_PATH)\n"
                "\n"
                "def db():\n"
                '    """A new connection to the one file every kernel'
                ' shares (autocommit; closed after use)."""\n'
                "    return closing(sqlite3.connect(DB_PATH, timeout=30, isolation_level=None))\n"
                "\n"
                "def respond(status, payload=None, headers=None):\n"
                '    """Print the ResponseInfo JSON for the current request."""\n'
                "    print(json.dumps({'status': status, 'headers': {'Content-Type': 'application/json', "
                "**(headers or {})}}))"
            ),
            new_code_cell(
                "def as_todo(row):\n"
                "    return {'id': row[0], 'title': row[1], 'done': bool(row[2])}\n"
                "\n"
                "def todo_key(todo_id):\n"
                '    """The row id a path segment names, or None (SQLite ids are 64-bit)."""\n'
                "    return int(todo_id) if todo_id.isdecimal() and len(todo_id) < 19 else None\n"
                "\n"
                "def find(todo_id):\n"
                "    key = todo_key(todo_id)\n"
                "    with db() as conn:\n"
                "        row = conn.execute('SELECT id, title, done FROM"
                " todos WHERE id = ?', (key,)).fetchone()\n"
                "    return as_todo(row) if row else None\n"
                "\n"
                "def add(title, done=False):\n"
                "    with db() as conn:\n"
                "        cursor = conn.execute('INSERT INTO todos (title,"
                " done) VALUES (?, ?)', (title, int(done)))\n"
                "    return {'id': cursor.lastrowid, 'title': title, 'done': done}\n"
                "\n"
                "def storable(title):\n"
                '    """Non-empty text SQLite can store (a lone'
                ' surrogate, sent as a JSON escape, cannot)."""\n'
                "    try:\n"
                "        title.encode('utf-8')\n"
                "    except UnicodeEncodeError:\n"
                "        return False\n"
                "    return bool(title)\n"
                "\n"
                "def not_found(todo_id):\n"
                "    return {'error': 'NotFound', 'message': f'no todo {todo_id}'}\n"
                "\n"
                "# Every kernel runs this at start: the first creates and seeds the table, the others\n"
                "# wait for its transaction (BEGIN IMMEDIATE) and find it there.\n"
                "with db() as conn:\n"
                "    conn.execute('BEGIN IMMEDIATE')\n"
                '    new = conn.execute("SELECT 1 FROM sqlite_master'
                " WHERE name = 'todos'\").fetchone() is None\n"
                "    if new:\n"
                "        conn.execute('CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT NOT NULL, "
                "done INTEGER NOT NULL)')\n"
                "        conn.executemany('INSERT INTO todos (title, done) VALUES (?, ?)', "
                "[('write the notebook', 0), ('serve it with nb2svc', 1)])\n"
                "    conn.execute('COMMIT')"
            ),
            new_markdown_cell("List todos. `?done=true` or `?done=false` filters."),
            with_examples(
                new_code_cell(
                    "# GET /todos\n"
                    "req = json.loads(REQUEST)\n"
                    "wanted = req['args'].get('done', [None])[0]\n"
                    "with db() as conn:\n"
                    "    items = [as_todo(row) for row in conn.execute('SELECT"
                    " id, title, done FROM todos ORDER BY id')]\n"
                    "print(json.dumps([t for t in items if wanted is None"
                    " or str(t['done']).lower() == wanted]))"
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
                    "created = add(title, bool(body.get('done', False))) if storable(title) else None\n"
                    "print(json.dumps(created or {'error': 'BadRequest', "
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
            new_markdown_cell("The current statistics."),
            with_examples(
                new_code_cell(
                    "# GET /stats\n"
                    "with db() as conn:\n"
                    "    total, done = conn.execute('SELECT COUNT(*),"
                    " COALESCE(SUM(done), 0) FROM todos').fetchone()\n"
                    "print(json.dumps({'total': total, 'done': done}))"
                ),
                example(name="counts the todos", response_status=200, response_json={"total": 3, "done": 1}),
            ),
            new_markdown_cell("One todo by id."),
            with_examples(
                new_code_cell(
                    "# GET /todos/:id\n"
                    "todo_id = json.loads(REQUEST)['path']['id']\n"
                    "found = find(todo_id)\n"
                    "print(json.dumps(found or not_found(todo_id)))"
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
                    "body = req['body'] if isinstance(req['body'], dict) else {}\n"
                    "with db() as conn:\n"
                    "    changed = conn.execute('UPDATE todos SET done = ? WHERE id = ?', "
                    "(int(bool(body.get('done', True))), todo_key(todo_id))).rowcount\n"
                    "found = find(todo_id) if changed else None\n"
                    "print(json.dumps(found or not_found(todo_id)))"
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
                    "todo_id = json.loads(REQUEST)['path']['id']\n"
                    "with db() as conn:\n"
                    "    found = conn.execute('DELETE FROM todos WHERE id"
                    " = ?', (todo_key(todo_id),)).rowcount"
                ),
                example("/todos/3", "deletes a todo", response_status=204, response_body=""),
                example("/todos/3", "404 once deleted", response_status=404),
            ),
            new_code_cell("# ResponseInfo DELETE /todos/:id\nrespond(204 if found else 404)"),
        ]
    )


def stream() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# Streaming answers\n"
                'With `"response": "stream"` in an endpoint cell\'s `nb2svc` metadata, what the cell '
                "prints reaches the client while the cell runs (chunked `text/plain`; server-sent events "
                "for `Accept: text/event-stream`). Try `curl -N localhost:8888/stream/count/5` and watch "
                "the lines arrive, or add `-H 'Accept: text/event-stream'`. `flush=True` sends a line at "
                "once instead of when the output buffer fills. A client that leaves interrupts the cell."
            ),
            new_code_cell("import json\nimport time"),
            with_examples(
                new_code_cell(
                    "# GET /stream/count/:n\n"
                    "n = json.loads(REQUEST)['path']['n']\n"
                    "n = min(int(n), 20) if n.isdecimal() else 3\n"
                    "for i in range(1, n + 1):\n"
                    "    print(i, flush=True)\n"
                    "    time.sleep(0.05)  # some work between lines\n"
                    "print('done')"
                ),
                example(
                    "/stream/count/3",
                    "counts to three, a line at a time",
                    response_status=200,
                    response_content_type="text/plain",
                    response_body="1\n2\n3\ndone\n",
                ),
                response="stream",
            ),
        ]
    )


def jobs() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# Long tasks as jobs\n"
                'An endpoint with `"response": "job"` in its `nb2svc` metadata answers `202 Accepted` '
                "at once, with `Location: /_api/jobs/{id}`; the cell runs on a kernel meanwhile. Poll that "
                'location: `{"status": "running"}` until the job is done, then the very answer the '
                "cell gave. Any endpoint runs as a job when the request says `Prefer: respond-async`:\n\n"
                "```\ncurl -i -X POST localhost:8888/jobs/report -d '{\"rows\": 3}' "
                "-H 'Content-Type: application/json'\n"
                "curl -i localhost:8888/_api/jobs/ID\n"
                "curl -i localhost:8888/jobs/square/7 -H 'Prefer: respond-async'\n```"
            ),
            new_code_cell("import json\nimport time"),
            new_markdown_cell("Always a job: a report that takes a while."),
            with_examples(
                new_code_cell(
                    "# POST /jobs/report\n"
                    "body = json.loads(REQUEST)['body']\n"
                    "rows = body.get('rows', 3) if isinstance(body, dict) else 3\n"
                    "time.sleep(0.2)  # the slow part\n"
                    "print(json.dumps({'rows': rows, 'total': sum(range(int(rows)))}))"
                ),
                example(
                    name="is accepted as a job",
                    request_json={"rows": 3},
                    response_status=202,
                    response_content_type=JSON,
                ),
                response="job",
            ),
            new_markdown_cell("Quick, so synchronous, unless the client prefers it async."),
            with_examples(
                new_code_cell(
                    "# GET /jobs/square/:x\n"
                    "x = json.loads(REQUEST)['path']['x']\n"
                    "print(json.dumps({'square': int(x) ** 2 if x.isdecimal() else None}))"
                ),
                example(
                    "/jobs/square/7", "answers at once", response_status=200, response_json={"square": 49}
                ),
                example(
                    "/jobs/square/7",
                    "runs as a job on request",
                    request_headers={"Prefer": "respond-async"},
                    response_status=202,
                    response_headers={"Preference-Applied": "respond-async"},
                ),
            ),
        ]
    )


#: A pure-Python PNG writer (no imaging library in the kernel): rows of RGB pixels.
PNG_SETUP = """import json
import struct
import zlib

from IPython.display import Image, display

def png(width, height, pixel):
    \"\"\"PNG bytes of a width x height RGB image; pixel(x, y) gives (r, g, b).\"\"\"
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    rows = b''.join(
        b'\\x00' + bytes(channel for x in range(width) for channel in pixel(x, y)) for y in range(height)
    )
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    body = chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')
    return b'\\x89PNG\\r\\n\\x1a\\n' + body"""


def image() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# An image answer\n"
                "A cell that displays rich output (`display(Image(...))`, a matplotlib figure) answers with "
                "it when its ResponseInfo cell sets that output's `Content-Type`: here `image/png`, sent as "
                "bytes (no base64). Open `localhost:8888/image/gradient/64` in a browser."
            ),
            new_code_cell(PNG_SETUP),
            with_examples(
                new_code_cell(
                    "# GET /image/gradient/:size\n"
                    "size = json.loads(REQUEST)['path']['size']\n"
                    "size = min(int(size), 512) if size.isdecimal() and int(size) > 0 else 64\n"
                    "shade = lambda x, y: (255 * x // size, 255 * y // size, 128)\n"
                    "display(Image(data=png(size, size, shade)))"
                ),
                example(
                    "/image/gradient/16",
                    "answers a PNG",
                    response_status=200,
                    response_content_type="image/png",
                ),
            ),
            new_code_cell(
                "# ResponseInfo GET /image/gradient/:size\n"
                "print(json.dumps({'status': 200, 'headers': {'Content-Type': 'image/png'}}))"
            ),
        ]
    )


BOUNDARY = "nb2svc-example"
UPLOAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="notes.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
    "first line\nsecond line\n\r\n"
    f"--{BOUNDARY}--\r\n"
)


def upload() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# File uploads\n"
                "Python cells get the request's bytes as they came: `REQUEST_FILES` holds multipart "
                'uploads as `{field: [{"filename", "content_type", "data": bytes}]}` and '
                "`REQUEST_BODY` any body as `bytes` (an image, `application/octet-stream`).\n\n"
                "```\ncurl -F file=@notes.txt localhost:8888/upload/files\n"
                "curl --data-binary @photo.jpg -H 'Content-Type: application/octet-stream' "
                "localhost:8888/upload/raw\n```"
            ),
            new_code_cell("import hashlib\nimport json"),
            with_examples(
                new_code_cell(
                    "# POST /upload/files\n"
                    "print(json.dumps([\n"
                    "    {'filename': f['filename'], 'content_type': f['content_type'], "
                    "'bytes': len(f['data']), 'lines': f['data'].count(b'\\n')}\n"
                    "    for f in REQUEST_FILES.get('file', [])\n"
                    "]))"
                ),
                example(
                    name="describes an uploaded file",
                    request_headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
                    request_body=UPLOAD,
                    response_status=200,
                    response_content_type=JSON,
                    response_json=[
                        {"filename": "notes.txt", "content_type": "text/plain", "bytes": 23, "lines": 2}
                    ],
                ),
            ),
            new_code_cell(
                "# ResponseInfo POST /upload/files\n"
                "print(json.dumps({'status': 200, 'headers': {'Content-Type': 'application/json'}}))"
            ),
            with_examples(
                new_code_cell(
                    "# POST /upload/raw\n"
                    "digest = hashlib.sha256(REQUEST_BODY).hexdigest()\n"
                    "print(json.dumps({'bytes': len(REQUEST_BODY), 'sha256': digest}))"
                ),
                example(
                    name="hashes the raw body",
                    request_headers={"Content-Type": "application/octet-stream"},
                    request_body="hello",
                    response_status=200,
                    response_json={
                        "bytes": 5,
                        "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                    },
                ),
            ),
        ]
    )


SEVERAL_INTRO = """

**Several notebooks, one service.** This notebook is one of two in `examples/several/`,
served together:

```
nb2svc serve examples/several              # /inventory/... and /orders/...
nb2svc test examples/several               # both notebooks' examples, at their mounted paths
nb2svc build examples/several -o dist      # one bundle (one image, one app) of both
```

Each notebook is mounted at `/<its file stem>` (`--mount PREFIX=NOTEBOOK` picks another
prefix): its routes are written without the prefix, as `{route}`, and answered under it,
at `{mounted}`. Each notebook has its own kernels, pool (sized on its own with
`NB2SVC_POOL_SIZE__{mount}=4` or a `[mounts.{stem}]` config table) and setup cell: a
variable of one notebook is not seen by the other, so what both need is data each keeps
(here, the SKUs) or a database both reach. One docs page and one OpenAPI document
(`/_api/docs`, `/openapi.json`) list both notebooks' endpoints; `/_api/health/ready`
answers 200 once every notebook's kernels are warm."""

NOT_STOCKED = {"error": "NotFound", "message": "no item Z-999"}


def inventory() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# Inventory\nWhat the warehouse holds, by SKU."
                + SEVERAL_INTRO.format(
                    route="/items/:sku", mounted="/inventory/items/:sku", mount="INVENTORY", stem="inventory"
                )
            ),
            new_code_cell(
                "import json\n"
                "\n"
                "# The warehouse's stock, by SKU (a real service would read it from its database)\n"
                "ITEMS = {\n"
                "    'A-100': {'sku': 'A-100', 'name': 'kettle', 'stock': 12},\n"
                "    'B-200': {'sku': 'B-200', 'name': 'mug', 'stock': 0},\n"
                "    'C-300': {'sku': 'C-300', 'name': 'espresso machine', 'stock': 3},\n"
                "}\n"
                "\n"
                "def respond(status):\n"
                '    """Print the ResponseInfo JSON for the current request."""\n'
                "    print(json.dumps({'status': status, 'headers': {'Content-Type': 'application/json'}}))"
            ),
            new_markdown_cell("Every item; `?in_stock=true` leaves out those with none left."),
            with_examples(
                new_code_cell(
                    "# GET /items\n"
                    "args = json.loads(REQUEST)['args']\n"
                    "in_stock = args.get('in_stock', ['false'])[0] == 'true'\n"
                    "listed = [item for item in ITEMS.values() if item['stock'] > 0 or not in_stock]\n"
                    "print(json.dumps(listed))"
                ),
                example(
                    "/items?in_stock=true",
                    "lists the items in stock",
                    response_status=200,
                    response_json=[
                        {"sku": "A-100", "name": "kettle", "stock": 12},
                        {"sku": "C-300", "name": "espresso machine", "stock": 3},
                    ],
                ),
            ),
            new_code_cell("# ResponseInfo GET /items\nrespond(200)"),
            new_markdown_cell("One item by SKU."),
            with_examples(
                new_code_cell(
                    "# GET /items/:sku\n"
                    "sku = json.loads(REQUEST)['path']['sku']\n"
                    "item = ITEMS.get(sku)\n"
                    "print(json.dumps(item or {'error': 'NotFound', 'message': f'no item {sku}'}))"
                ),
                example(
                    "/items/B-200",
                    "reads an item",
                    response_content_type=JSON,
                    response_json={"sku": "B-200", "name": "mug", "stock": 0},
                ),
                example(
                    "/items/Z-999", "404 for an unknown SKU", response_status=404, response_json=NOT_STOCKED
                ),
            ),
            new_code_cell("# ResponseInfo GET /items/:sku\nrespond(200 if item else 404)"),
        ]
    )


def orders() -> nbformat.NotebookNode:
    return notebook(
        [
            new_markdown_cell(
                "# Orders\nPrice quotes for orders and shipping rates."
                + SEVERAL_INTRO.format(route="/quote", mounted="/orders/quote", mount="ORDERS", stem="orders")
            ),
            new_code_cell(
                "import json\n"
                "\n"
                "PRICES = {'A-100': 2500, 'B-200': 800, 'C-300': 18900}  # cents, by SKU\n"
                "SHIPPING = {'DE': 490, 'FR': 690, 'US': 1990}  # cents, by country\n"
                "VAT = 0.2\n"
                "\n"
                "def quote(lines):\n"
                '    """(quote, None) for a list of {"sku", "qty"} lines, or (None, what is wrong)."""\n'
                "    if not isinstance(lines, list) or not lines:\n"
                "        return None, 'a non-empty list of lines is required'\n"
                "    priced = []\n"
                "    for line in lines:\n"
                "        if not isinstance(line, dict):\n"
                "            return None, 'each line is an object with a sku and a qty'\n"
                "        sku, qty = line.get('sku'), line.get('qty', 1)\n"
                "        if sku not in PRICES:\n"
                "            return None, f'unknown SKU {sku}'\n"
                "        if not isinstance(qty, int) or qty < 1:\n"
                "            return None, f'{sku}: the quantity must be a positive whole number'\n"
                "        priced.append({'sku': sku, 'qty': qty, 'cents': PRICES[sku] * qty})\n"
                "    net = sum(line['cents'] for line in priced)\n"
                "    return {'lines': priced, 'net': net, 'vat': round(net * VAT), "
                "'total': net + round(net * VAT)}, None\n"
                "\n"
                "def respond(status):\n"
                '    """Print the ResponseInfo JSON for the current request."""\n'
                "    print(json.dumps({'status': status, 'headers': {'Content-Type': 'application/json'}}))"
            ),
            new_markdown_cell(
                'Price an order: a JSON body `{"lines": [{"sku": "A-100", "qty": 2}, ...]}`; the answer '
                "has each line's price, the net sum, the VAT and the total, in cents."
            ),
            with_examples(
                new_code_cell(
                    "# POST /quote\n"
                    "body = json.loads(REQUEST)['body']\n"
                    "quoted, problem = quote(body.get('lines') if isinstance(body, dict) else None)\n"
                    "print(json.dumps(quoted or {'error': 'BadRequest', 'message': problem}))"
                ),
                example(
                    name="prices an order",
                    request_json={"lines": [{"sku": "A-100", "qty": 2}, {"sku": "B-200"}]},
                    response_status=200,
                    response_content_type=JSON,
                    response_json={
                        "lines": [
                            {"sku": "A-100", "qty": 2, "cents": 5000},
                            {"sku": "B-200", "qty": 1, "cents": 800},
                        ],
                        "net": 5800,
                        "vat": 1160,
                        "total": 6960,
                    },
                ),
                example(
                    name="400 for an unknown SKU",
                    request_json={"lines": [{"sku": "Z-999", "qty": 1}]},
                    response_status=400,
                    response_json={"error": "BadRequest", "message": "unknown SKU Z-999"},
                ),
            ),
            new_code_cell("# ResponseInfo POST /quote\nrespond(200 if quoted else 400)"),
            new_markdown_cell("The shipping rate to a country (ISO code), in cents."),
            with_examples(
                new_code_cell(
                    "# GET /shipping/:country\n"
                    "country = json.loads(REQUEST)['path']['country'].upper()\n"
                    "rate = SHIPPING.get(country)\n"
                    "found = {'country': country, 'cents': rate}\n"
                    "missing = {'error': 'NotFound', 'message': f'no shipping to {country}'}\n"
                    "print(json.dumps(found if rate is not None else missing))"
                ),
                example("/shipping/fr", "a country's rate", response_json={"country": "FR", "cents": 690}),
                example(
                    "/shipping/aq",
                    "404 where nothing ships",
                    response_status=404,
                    response_json={"error": "NotFound", "message": "no shipping to AQ"},
                ),
            ),
            new_code_cell("# ResponseInfo GET /shipping/:country\nrespond(200 if rate is not None else 404)"),
        ]
    )


#: Every example notebook, by file stem.
EXAMPLES = {"hello": hello, "todo": todo, "stream": stream, "jobs": jobs, "image": image, "upload": upload}
#: The notebooks served together as one service (``examples/several``), by file stem.
SEVERAL_EXAMPLES = {"inventory": inventory, "orders": orders}


if __name__ == "__main__":
    for folder, notebooks in ((HERE, EXAMPLES), (SEVERAL, SEVERAL_EXAMPLES)):
        folder.mkdir(parents=True, exist_ok=True)
        for name, build in notebooks.items():
            nb = build()
            nbformat.validate(nb)
            nbformat.write(nb, folder / f"{name}.ipynb")
            print(f"wrote {folder / name}.ipynb")
