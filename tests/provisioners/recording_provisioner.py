"""A kernel provisioner that is not the local one: it records every lifecycle call.

Registered by entry point (``jupyter_client.kernel_provisioners``) through the bare
``nb2svc_test_provisioners-0.0.0.dist-info`` beside this module: putting this directory
on ``PYTHONPATH`` is all a test needs, nothing is installed.

It runs the kernel through an inner ``LocalProvisioner`` but, like every remote
provisioner, has no ``process`` attribute: a server that reaches for
``provisioner.process`` instead of the provisioner API treats its kernels as dead.
Each call appends ``<kernel_id> <hook> [detail]`` to ``record_path`` (set from the
kernel spec's ``metadata.kernel_provisioner.config``).
"""

from __future__ import annotations

from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase, LocalProvisioner
from traitlets import Unicode


class RecordingProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """Delegates to a LocalProvisioner and records each hook the manager calls."""

    record_path = Unicode("", config=True, help="File that gets one line per lifecycle call.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inner = LocalProvisioner(
            kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self.parent
        )

    def _record(self, hook: str, detail: str = "") -> None:
        if self.record_path:
            with open(self.record_path, "a", encoding="utf-8") as record:
                record.write(f"{self.kernel_id} {hook} {detail}".rstrip() + "\n")

    # The base class keeps connection_info as a shared class attribute; the inner
    # provisioner's is the real one.
    @property
    def connection_info(self) -> KernelConnectionInfo:  # type: ignore[override]
        return self._inner.connection_info

    @connection_info.setter
    def connection_info(self, value: KernelConnectionInfo) -> None:
        if hasattr(self, "_inner"):
            self._inner.connection_info = value

    @property
    def has_process(self) -> bool:
        return self._inner.has_process

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._record("pre_launch")
        return await self._inner.pre_launch(**kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        info = await self._inner.launch_kernel(cmd, **kwargs)
        self._record("launch_kernel", str(self._inner.pid))
        return info

    async def post_launch(self, **kwargs: Any) -> None:
        self._record("post_launch")
        await self._inner.post_launch(**kwargs)

    async def poll(self) -> int | None:
        result = await self._inner.poll()
        self._record("poll", repr(result))
        return result

    async def wait(self) -> int | None:
        self._record("wait")
        return await self._inner.wait()

    async def send_signal(self, signum: int) -> None:
        self._record("send_signal", str(int(signum)))
        await self._inner.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        self._record("kill")
        await self._inner.kill(restart=restart)

    async def terminate(self, restart: bool = False) -> None:
        self._record("terminate")
        await self._inner.terminate(restart=restart)

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._record("shutdown_requested")
        await self._inner.shutdown_requested(restart=restart)

    async def cleanup(self, restart: bool = False) -> None:
        self._record("cleanup")
        await self._inner.cleanup(restart=restart)

    async def get_provisioner_info(self) -> dict[str, Any]:
        return await self._inner.get_provisioner_info()

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await self._inner.load_provisioner_info(provisioner_info)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return self._inner.get_shutdown_wait_time(recommended)
