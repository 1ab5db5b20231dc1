"""A kernel provisioner whose kernels run detached from the gateway, like a pod or a remote host.

Registered by entry point (``jupyter_client.kernel_provisioners``, see
``nb2svc_test_provisioners-0.0.0.dist-info``) as ``detached-provisioner``. It launches the
kernel through a short-lived launcher process, so the kernel is not the gateway's child,
runs in a session of its own and has no ``JPY_PARENT_PID`` (ipykernel does not exit when the
gateway does): a gateway killed with SIGKILL leaves it running. ``get_provisioner_info()``
holds its pid; ``load_provisioner_info()`` in another gateway takes the kernel over, as
``KubernetesProvisioner`` does with a pod's name. Liveness is ``kill(pid, 0)`` (a zombie
counts as dead); signals go to the kernel's process group.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning import KernelProvisionerBase, LocalProvisioner

LAUNCHER = (
    "import json, subprocess, sys\n"
    "p = subprocess.Popen(json.loads(sys.argv[1]), start_new_session=True, stdin=subprocess.DEVNULL,"
    " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(p.pid)\n"
)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class DetachedProvisioner(KernelProvisionerBase):  # type: ignore[misc]
    """Kernels in their own session, not children of the gateway (see the module docstring)."""

    pid: int | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # the local provisioner's pre_launch: ports, connection file and the formatted command
        self._inner = LocalProvisioner(
            kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self.parent
        )

    @property
    def has_process(self) -> bool:
        return self.pid is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        return await self._inner.pre_launch(**kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env = {k: v for k, v in (kwargs.get("env") or os.environ).items() if k != "JPY_PARENT_PID"}
        launched = subprocess.run(
            [sys.executable, "-c", LAUNCHER, json.dumps(cmd)],
            env=env,
            cwd=kwargs.get("cwd"),
            capture_output=True,
            check=True,
        )
        self.pid = int(launched.stdout.strip())
        self.connection_info = self.parent.get_connection_info()
        return self.connection_info

    async def poll(self) -> int | None:
        if self.pid is None or not _running(self.pid):
            return 1
        return None

    async def send_signal(self, signum: int) -> None:
        if self.pid is not None:
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def wait(self) -> int | None:
        while await self.poll() is None:
            await asyncio.sleep(0.05)
        return 0

    async def cleanup(self, restart: bool = False) -> None:
        self.pid = None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info["pid"] = self.pid
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.pid = provisioner_info["pid"]
