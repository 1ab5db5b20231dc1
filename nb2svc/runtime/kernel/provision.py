"""Start and seed: the one way both modes get a ready kernel.

A :class:`KernelRecipe` says which kernel spec to start, with what environment,
working directory and transport, and which code to run on it before anyone uses it:
a bootstrap (API mode's Python agent) and the setup cells (API mode's non-annotated
cells, kernel mode's ``--seed`` notebook). A setup cell that raises or runs past the
start timeout fails the start with :class:`SetupFailed`, naming the notebook and cell;
it is permanent (pools stop retrying), since every kernel would fail the same way.

Forked kernels (:mod:`.forking`): when the recipe's forker has a template, the kernel
is forked from it. API mode's template ran the setup cells already, so a forked kernel
gets only the bootstrap (nb2svc's kernel-side agent); kernel mode's templates run no
setup, so its seed cells run on each forked kernel as on a spawned one. A kernel that
had to be spawned after all (a fork that failed) is seeded in full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from nb2svc.runtime.kernel.channels import Kernel
from nb2svc.runtime.kernel.executor import ExecutionTimeout, execute
from nb2svc.runtime.kernel.forking import Forker, setup_failed, setup_timed_out
from nb2svc.runtime.kernel.host import KernelHost
from nb2svc.runtime.kernel.process import SetupFailed

__all__ = ["KernelRecipe", "SetupCell", "SetupFailed", "start_kernel"]

log = logging.getLogger("nb2svc")


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
    #: Where kernels fork from (``--kernel-start``); None: every kernel is spawned.
    forker: Forker | None = field(default=None, compare=False)

    def unseeded(self) -> KernelRecipe:
        """The same kernel without the bootstrap and setup cells (a restart loses state).

        The forker stays: a restarted kernel forks again, with the state of just after setup.
        """
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
    kernel = Kernel(
        recipe.kernel_name,
        recipe.env,
        recipe.host,
        cwd=recipe.cwd,
        transport=recipe.transport,
        forker=recipe.forker,
    )
    kernel.start(timeout=timeout)
    try:
        how = "forked" if kernel.process.forked else "started"
        log.debug("kernel %s %s in %.3fs", kernel.label, how, time.monotonic() - kernel.started_at)
        if recipe.bootstrap:
            _run_setup(kernel, SetupCell("nb2svc's bootstrap", recipe.bootstrap), deadline, recipe)
        setup_done = kernel.process.forked and recipe.forker is not None and recipe.forker.runs_setup
        for number, cell in enumerate(() if setup_done else recipe.setup, start=1):
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
        raise setup_timed_out(cell.where, recipe.start_timeout) from None
    if result.error is not None:
        error = result.error
        raise setup_failed(cell.where, error.ename, error.evalue, error.traceback, recipe.traceback_in_error)
