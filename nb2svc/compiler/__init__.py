"""The I/O-free compiler: a notebook in, a :class:`ServiceSpec` out.

It never starts a kernel, opens a socket or reads the environment.

``compile_notebook`` is imported lazily: it needs nbformat (and so jsonschema), which
the runtime, importing only ``spec`` and ``openapi`` from here, must not pay for at
every worker start.
"""

from __future__ import annotations

from typing import Any

from nb2svc.compiler.errors import CompileError, CompileProblem
from nb2svc.compiler.spec import Endpoint, KernelInfo, ResponseInfo, ServiceSpec, SetupCell

__all__ = [
    "CompileError",
    "CompileProblem",
    "Endpoint",
    "KernelInfo",
    "ResponseInfo",
    "ServiceSpec",
    "SetupCell",
    "compile_notebook",
]


def __getattr__(name: str) -> Any:
    if name == "compile_notebook":
        from nb2svc.compiler.compile import compile_notebook

        return compile_notebook
    raise AttributeError(f"module 'nb2svc.compiler' has no attribute {name!r}")
