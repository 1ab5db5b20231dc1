"""The compiler is I/O-free: it imports and compiles without the runtime's dependencies.

``sys.modules[name] = None`` makes ``import name`` raise ImportError, so any import of
gevent, zmq, jupyter_client or flask (directly, or through nb2svc.runtime) fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("gevent", "zmq", "jupyter_client", "flask")

SCRIPT = textwrap.dedent(
    """
    import json, sys
    for name in {blocked!r}:
        sys.modules[name] = None
    try:
        import flask  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("blocking did not work")

    import nbformat.v4 as v4
    import nb2svc.compiler
    from nb2svc.compiler import compile_notebook
    from nb2svc.compiler.openapi import openapi_document, swagger_document

    nb = v4.new_notebook(cells=[v4.new_code_cell("x = 1"), v4.new_code_cell("# GET /hello/:name\\nprint(x)")])
    spec = compile_notebook(nb, name="boundary")
    openapi_document(spec)
    swagger_document(spec)
    document = json.dumps({{"swagger": "2.0", "paths": {{"/s": {{"get": {{"operationId": "s"}}}}}}}})
    cells = [v4.new_markdown_cell(document), v4.new_code_cell("# operationId: s\\nprint(1)")]
    swagger = compile_notebook(v4.new_notebook(cells=cells), cell_parser="swagger")
    openapi_document(swagger)
    swagger_document(swagger)
    loaded = sorted(
        m for m in sys.modules if m.split(".")[0] in {blocked!r} or m.startswith("nb2svc.runtime")
    )
    paths = [ep.path for ep in spec.endpoints + swagger.endpoints]
    print(json.dumps({{"endpoints": paths, "loaded": loaded}}))
    """
).format(blocked=BLOCKED)


def test_compiler_imports_and_compiles_without_runtime_dependencies() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["endpoints"] == ["/hello/:name", "/s"]  # the default and the swagger cell parser
    # Only the None placeholders we planted; no real module and nothing from the runtime.
    assert out["loaded"] == sorted(BLOCKED)
