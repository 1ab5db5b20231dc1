"""What every kernel of one worker shares: the lifecycle loop, the green zmq context, the
directory of kernel records, a keyless session for status messages.

Each is made on first use, after the fork (a loop greenlet, a zmq context and a
directory owned by this pid cannot be inherited), and held by the worker's runtime
(:class:`~nb2svc.runtime.worker_runtime.WorkerRuntime.kernel_host`) instead of module
globals. A :class:`~nb2svc.runtime.kernel.provision.KernelRecipe` carries the host to
every kernel it starts, restarts included.

It also holds the kernel templates ``nb2svc serve`` started before forking this worker
(:mod:`.early`), until each notebook's :class:`~.forking.Forker` claims its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nb2svc.runtime import reaper
from nb2svc.runtime.kernel.lifecycle import Lifecycle

if TYPE_CHECKING:
    from nb2svc.runtime.kernel.early import EarlyTemplate


class KernelHost:
    """One worker's shared kernel machinery (see the module docstring)."""

    def __init__(self, early_templates: Mapping[str, EarlyTemplate] | None = None) -> None:
        self._early = dict(early_templates or {})
        self._lifecycle: Lifecycle | None = None
        self._context: Any = None
        self._owner_dir: str | None = None
        self._session: Any = None

    @property
    def lifecycle(self) -> Lifecycle:
        """The asyncio loop jupyter_client's lifecycle coroutines run on (RUNTIME-NOTES 3, 4)."""
        if self._lifecycle is None:
            self._lifecycle = Lifecycle()
        return self._lifecycle

    @property
    def zmq_context(self) -> Any:
        """One green zmq context for every kernel's sockets (RUNTIME-NOTES 2)."""
        if self._context is None:
            import zmq.green

            self._context = zmq.green.Context()
        return self._context

    @property
    def owner_dir(self) -> str:
        """This process's private directory for its kernels (see :func:`reaper.make_owner_dir`)."""
        if self._owner_dir is None:
            self._owner_dir = reaper.make_owner_dir()
        return self._owner_dir

    def claim_early_template(self, label: str) -> EarlyTemplate | None:
        """The template the master started for notebook ``label``, once (None: start one)."""
        return self._early.pop(label, None)

    @property
    def fallback_session(self) -> Any:
        """A keyless session for status messages of a kernel that has none (it never started)."""
        if self._session is None:
            from jupyter_client.session import Session

            self._session = Session()
        return self._session


__all__ = ["KernelHost"]
