"""Start and seed: the one way both modes get a ready kernel.

A :class:`KernelRecipe` says which kernel spec to start, with what environment,
working directory and transport, and which code to run on it before anyone uses it:
a bootstrap (API mode's Python agent) and the setup cells (API mode's non-annotated
cells, kernel mode's ``--seed`` notebook). A setup cell that raises or runs past the
start timeout fails the start with :class:`SetupFailed`, naming the notebook and cell;
it is permanent (pools stop retrying), since every kernel would fail the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from nb2svc.runtime.kernel.channels import Kernel
from nb2svc.runtime.kernel.executor import ExecutionTimeout, execute
from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.process import KernelStartError

log = logging.getLogger("nb2svc")


class SetupFailed(KernelStartError):
    """A setup (seed) cell raised or did not finish in time: every kernel would fail alike."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class SetupCell:
    """Code to run on every new kernel, and where it came from (for error messages)."""

    where: str  # "hello.ipynb, cell 3"
    code: str


@dataclass(frozen=True)
class KernelRecipe:
    """Everything needed to make a ready kernel; :meth:`unseeded` for restarts."""

    kernel_name: str
    env: Mapping[str, str]
    cwd: str | None = None
    transport: str = "auto"
    start_timeout: float = 60.0
    bootstrap: str = ""
    setup: tuple[SetupCell, ...] = field(default_factory=tuple)
    #: Include the traceback of a failing setup cell in the error (API mode shows it
    #: once at start-up; kernel mode returns the error to a client and keeps it short).
    traceback_in_error: bool = True
    #: The worker's :class:`~nb2svc.runtime.kernel.host.KernelHost` (lifecycle loop, zmq
    #: context, records directory) every kernel of this recipe uses.
    host: KernelHost | None = None

    def unseeded(self) -> KernelRecipe:
        """The same kernel without the bootstrap and setup cells (a restart loses state)."""
        return replace(self, bootstrap="", setup=())


def start_kernel(recipe: KernelRecipe) -> Kernel:
    """A started kernel on which the recipe's bootstrap and setup cells have run.

    Raises :class:`KernelStartError` (or :class:`SetupFailed`); no process is left
    behind on failure.
    """
    timeout = recipe.start_timeout
    deadline = time.monotonic() + timeout
    if recipe.host is None:
        raise ValueError("a KernelRecipe needs the worker's kernel host to start a kernel")
    kernel = Kernel(recipe.kernel_name, recipe.env, recipe.host, cwd=recipe.cwd, transport=recipe.transport)
    kernel.start(timeout=timeout)
    try:
        log.debug("kernel %s started in %.3fs", kernel.label, time.monotonic() - kernel.started_at)
        if recipe.bootstrap:
            _run_setup(kernel, SetupCell("nb2svc's bootstrap", recipe.bootstrap), deadline, recipe)
        for number, cell in enumerate(recipe.setup, start=1):
            log.info("kernel %s: setup %d/%d, %s", kernel.label, number, len(recipe.setup), cell.where)
            _run_setup(kernel, cell, deadline, recipe)
    except BaseException:
        kernel.shutdown(now=True)
        raise
    log.debug("kernel %s ready in %.3fs", kernel.label, time.monotonic() - kernel.started_at)
    return kernel


def _run_setup(kernel: Kernel, cell: SetupCell, deadline: float, recipe: KernelRecipe) -> None:
    try:
        result = execute(kernel, cell.code, timeout=max(0.1, deadline - time.monotonic()), store_history=True)
    except ExecutionTimeout:
        raise SetupFailed(
            f"{cell.where}: setup did not finish within {recipe.start_timeout:g}s "
            "(raise --kernel-start-timeout or make the cell faster)"
        ) from None
    if result.error is not None:
        message = f"{cell.where}: setup cell raised {result.error.ename}: {result.error.evalue}"
        if recipe.traceback_in_error and result.error.traceback:
            message += "\n" + "\n".join(result.error.traceback)
        raise SetupFailed(message)
