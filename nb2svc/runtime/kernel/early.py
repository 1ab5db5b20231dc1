"""Kernel templates that ``nb2svc serve`` starts itself, before gunicorn forks the worker.

Why: launch to first answer is a chain: compile the notebook, fork the worker, import
the worker's modules and build its app, then start the kernel template (a Python
process: ipykernel's imports, then the setup cells), then fork the first kernel. The
template's link (0.2 s for hello on a quiet machine, the whole setup for a real
notebook) needs nothing of the worker, so the master starts it as soon as the serve
plan exists, and it runs on another core while the worker boots. The worker adopts it
(:meth:`nb2svc.runtime.kernel.forking.Template.adopt`) instead of starting its own.

Only where it is simple and safe: one worker, no ``--reload``, not a bundle; in API mode
each mount whose ``--kernel-start`` is not ``spawn`` and whose kernel spec looks like a
local ipykernel, in kernel mode the default kernel spec on the same terms. The master
decides without jupyter_client (importing it, hence zmq, before gevent's patching
breaks the worker: RUNTIME-NOTES), from the kernel spec files as
jupyter_client finds them; the worker then adopts a template only if its
:class:`TemplateRecipe` (interpreter, setup cells, environment, directory) is exactly
the one it would have started itself, and otherwise closes it. Either way nothing is
lost: a closed or unadopted template exits when its control socket closes (the master
closes its copy once the worker is forked; the process exits with the master too).

Imported by the master: the standard library, jupyter_core and :mod:`.spec_facts` only.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2svc.runtime.kernel.spec_facts import fork_refusal_of, provisioner_of, resolve_python

if TYPE_CHECKING:
    from nb2svc.compiler.spec import ServiceSpec
    from nb2svc.config import Settings
    from nb2svc.plan import ServePlan

#: The child side, run as a script by the kernel spec's Python (which need not have nb2svc).
TEMPLATE_SCRIPT = str(Path(__file__).with_name("template.py"))
#: What ipykernel's own kernel spec is called when none is installed (jupyter_client's native kernel).
NATIVE_KERNEL_NAME = "python3"


@dataclass(frozen=True)
class TemplateRecipe:
    """Everything a template's state depends on: the worker adopts only an exact match."""

    python: str
    setup: tuple[tuple[str, str], ...]  # (where, code) of each setup cell
    env: tuple[tuple[str, str], ...]  # sorted
    cwd: str | None

    @classmethod
    def of(
        cls, python: str, setup: Sequence[tuple[str, str]], env: Mapping[str, str], cwd: str | None
    ) -> TemplateRecipe:
        return cls(python, tuple((w, c) for w, c in setup), tuple(sorted(env.items())), cwd)

    def config_line(self) -> bytes:
        """The first line the template reads: its setup cells."""
        cells = [{"where": where, "code": code} for where, code in self.setup]
        return json.dumps({"setup": cells}).encode() + b"\n"


@dataclass
class EarlyTemplate:
    """A template the master started: its pid, recipe and the master's end of its socket."""

    label: str
    recipe: TemplateRecipe
    proc: subprocess.Popen[bytes]
    sock: socket.socket | None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def take_socket(self) -> socket.socket:
        """The control socket, handed over once (to the worker's :class:`Template`)."""
        sock, self.sock = self.sock, None
        if sock is None:
            raise RuntimeError(f"the early template of {self.label} was already taken or closed")
        return sock

    def close(self) -> None:
        """Let go of it: without a socket, the template exits (in the master, the worker keeps its copy)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def launch(recipe: TemplateRecipe, fd: int, popen: Callable[..., Any] = subprocess.Popen) -> Any:
    """The template process for ``recipe``, its control socket's other end ``fd`` passed on
    (``popen``: gevent's in a worker, so waiting on it never blocks the hub). Run as
    ipykernel's own kernel spec runs Python, without frozen modules (debugpy, which
    ipykernel imports, would warn about them on every start)."""
    return popen(
        [recipe.python, "-Xfrozen_modules=off", TEMPLATE_SCRIPT, str(fd)],
        pass_fds=[fd],
        env=dict(recipe.env),
        cwd=recipe.cwd or None,
        stdin=subprocess.DEVNULL,
    )


def start(label: str, recipe: TemplateRecipe) -> EarlyTemplate | None:
    """Start a template for ``recipe`` now and send it its setup; None if it cannot start
    (the worker then starts its own, and reports what goes wrong)."""
    ours, theirs = socket.socketpair()
    try:
        proc = launch(recipe, theirs.fileno())
    except OSError:
        ours.close()
        return None
    finally:
        theirs.close()
    try:
        ours.sendall(recipe.config_line())
    except OSError:
        ours.close()
        return None
    return EarlyTemplate(label, recipe, proc, ours)


def setup_cells(spec: ServiceSpec) -> tuple[tuple[str, str], ...]:
    """``(where, code)`` of a notebook's setup cells, as its kernels and templates run them."""
    return tuple((f"{spec.notebook}, cell {cell.cell}", cell.code) for cell in spec.setup)


def start_for_plan(plan: ServePlan) -> dict[str, EarlyTemplate]:
    """In the master: a template for each notebook of ``plan`` that will fork its kernels
    (kernel mode: for the default kernel spec), where this is safe (see the module
    docstring), by the label its worker's forker claims it under."""
    if plan.reload is not None or plan.bundle is not None:
        return {}
    if plan.mode == "kernels":  # always one worker; no setup (seed cells run on each kernel)
        label = kernel_spec_label(plan.kernels.default)
        early = _start_if_forking(label, plan.kernels.default, plan.settings, (), None)
        return {label: early} if early is not None else {}
    if plan.settings.workers != 1:
        return {}
    started: dict[str, EarlyTemplate] = {}
    for mounted in plan.mounts:
        spec = mounted.mount.spec
        if spec.notebook in started:
            continue
        setup, cwd = setup_cells(spec), str(mounted.cwd) if mounted.cwd else None
        early = _start_if_forking(spec.notebook, mounted.kernel_name, mounted.settings, setup, cwd)
        if early is not None:
            started[spec.notebook] = early
    return started


def _start_if_forking(
    label: str, kernel_name: str, settings: Settings, setup: Sequence[tuple[str, str]], cwd: str | None
) -> EarlyTemplate | None:
    """The template a worker with ``settings`` would start for ``kernel_name``'s kernels,
    started now; None where they would not fork (or it could not start)."""
    from nb2svc.runtime.kernel.environment import kernel_env

    python = guess_python(kernel_name) if settings.kernel_start != "spawn" else None
    if python is None:
        return None
    return start(label, TemplateRecipe.of(python, setup, kernel_env(settings.env_allow), cwd))


def kernel_spec_label(name: str) -> str:
    """Kernel mode's name for the template of kernel spec ``name`` (its log lines; the key of
    its early template)."""
    return f"kernel spec {name!r}"


def spec_files(kernel_name: str, search: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The kernel spec ``kernel_name`` as jupyter_client would find it (its ``kernel.json``
    in the first directory of the Jupyter data path that has it), or None."""
    if search is None:
        from jupyter_core.paths import jupyter_path

        search = jupyter_path("kernels")
    for directory in search:
        path = Path(directory) / kernel_name / "kernel.json"
        if path.is_file():
            try:
                spec = json.loads(path.read_text())
            except (OSError, ValueError):
                return None
            return spec if isinstance(spec, dict) else None
    return None


def guess_python(kernel_name: str, search: Sequence[str] | None = None) -> str | None:
    """The interpreter of ``kernel_name``'s kernels if they are local ipykernels, else None.

    A guess made without jupyter_client: the worker checks it against the spec jupyter_client
    resolves and discards the template on any difference.
    """
    spec = spec_files(kernel_name, search)
    if spec is None:
        if kernel_name != NATIVE_KERNEL_NAME:
            return None
        return sys.executable  # ipykernel's own spec: this interpreter
    argv = [str(word) for word in spec.get("argv") or []]
    if fork_refusal_of(provisioner_of(spec.get("metadata")), spec.get("language"), argv) is not None:
        return None
    return resolve_python(argv[0])


__all__ = [
    "TEMPLATE_SCRIPT",
    "EarlyTemplate",
    "TemplateRecipe",
    "guess_python",
    "kernel_spec_label",
    "launch",
    "setup_cells",
    "spec_files",
    "start",
    "start_for_plan",
]
