"""What a kernel spec says, read without jupyter_client.

Its provisioner, whether it runs ipykernel, its interpreter and why its kernels cannot be
forked: facts the worker asks of a ``KernelSpec`` and ``nb2svc serve`` (gunicorn's master,
which must not import jupyter_client: RUNTIME-NOTES) asks of a ``kernel.json`` it read
itself (:mod:`.early`). One place for each, so the two never disagree.

Standard library only.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any

LOCAL_PROVISIONER = "local-provisioner"
IPYKERNEL_MODULES = ("ipykernel_launcher", "ipykernel")


def provisioner_of(metadata: Mapping[str, Any] | None) -> str:
    """The provisioner a kernel spec's ``metadata`` names (jupyter_client's default: the local one)."""
    return ((metadata or {}).get("kernel_provisioner") or {}).get("provisioner_name", LOCAL_PROVISIONER)


def ipykernel_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``-m ipykernel_launcher`` in a kernel command, or None if it runs no ipykernel."""
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] in IPYKERNEL_MODULES:
            return list(argv[i + 2 :])
    return None


def resolve_python(command: str) -> str:
    """The interpreter a kernel command's first word names, as jupyter_client resolves it
    (``python``, ``python3`` and ``python3.X`` of this Python are this interpreter)."""
    if command in ("python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])):
        return sys.executable
    return shutil.which(command) or command


def fork_refusal_of(provisioner: str, language: str | None, argv: Sequence[str]) -> str | None:
    """Why kernels of a spec with this provisioner, language and command cannot be forked, or None."""
    if provisioner != LOCAL_PROVISIONER:
        return f"its kernel spec uses the provisioner {provisioner!r}, not the local one"
    if (language or "").lower() != "python" or ipykernel_args(argv) is None:
        return f"its kernel spec is not a local ipykernel ({language or 'unknown language'})"
    return None


__all__ = [
    "IPYKERNEL_MODULES",
    "LOCAL_PROVISIONER",
    "fork_refusal_of",
    "ipykernel_args",
    "provisioner_of",
    "resolve_python",
]
