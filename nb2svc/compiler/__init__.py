"""The I/O-free compiler: a notebook in, a :class:`ServiceSpec` out.

It never starts a kernel, opens a socket or reads the environment.
"""

from __future__ import annotations

from nb2svc.compiler.compile import compile_notebook
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
