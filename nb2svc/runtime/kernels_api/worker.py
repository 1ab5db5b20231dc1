"""Kernel mode's gunicorn worker: refuses bad websocket upgrades with a real HTTP status.

Why: gevent-websocket's handler completes the handshake (``101``) *before* it calls
the app, so the app can only close a websocket it did not want, and a client with a
bad token or an unknown kernel id sees a socket that opens and closes. Jupyter Server
answers those upgrades with 401/403/404; clients (``jupyter server --gateway-url``,
JupyterLab) report that status. This handler asks the app first
(:meth:`~.rest.KernelModeApp.refuse_websocket`) and sends its answer instead of
upgrading.

It also installs :mod:`.fastws` (C-speed unmasking of client frames). Everything else,
including draining on shutdown, is the shared worker's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nb2svc.runtime.kernels_api import fastws
from nb2svc.runtime.server import Server
from nb2svc.runtime.worker import DrainingHandler, Nb2svcWorker

if TYPE_CHECKING:
    from nb2svc.plan import ServePlan
    from nb2svc.runtime.kernel.early import EarlyTemplate


class KernelModeHandler(DrainingHandler):
    def upgrade_websocket(self) -> Any:
        refuse = getattr(self.application, "refuse_websocket", None)
        if refuse is not None and self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            response = refuse(self.environ)
            if response is not None:
                return response(self.environ, self.start_response)
        return super().upgrade_websocket()


class KernelModeWorker(Nb2svcWorker):
    wsgi_handler = KernelModeHandler

    def init_process(self) -> None:
        fastws.install()  # the message limit is the runtime's (the handler's ``runtime.edge``)
        super().init_process()


class KernelServer(Server):
    """One worker (kernel ids must resolve in one process) with :class:`KernelModeWorker`."""

    def __init__(self, plan: ServePlan, early_templates: dict[str, EarlyTemplate] | None = None) -> None:
        super().__init__(plan, workers=1, early_templates=early_templates)

    def load_config(self) -> None:
        super().load_config()
        self.cfg.set("worker_class", f"{__name__}.KernelModeWorker")
