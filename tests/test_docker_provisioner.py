"""gateway_provisioners' ``DockerProvisioner`` through podman's Docker-compatible API, kernel mode.

OPT-IN: runs only with ``NB2SVC_TEST_PODMAN=1`` (as root, with podman, runc and
debootstrap: ``bash .ci/container-tools.sh install``) and the ``docker`` SDK
(``pip install 'gateway_provisioners[docker]'``).

No Docker engine here: ``podman system service`` serves the Docker API on a private
unix socket (``DOCKER_HOST``), over the private store of ``.ci/container-tools.sh``
(runc, capped ulimits; its header says why). The kernel image is built like
GP's own kernel images (elyra/kernel-py): the stand-in ``python:X.Y-slim`` base, then
``pip install ipykernel gateway_provisioners`` and ``jupyter image-bootstrap install``,
whose ``bootstrap-kernel.sh`` is the image's CMD. It is tagged by a hash of its
Dockerfile and kept, so reruns skip the build (~35-45 s; the base takes ~60 s once);
``bash .ci/container-tools.sh purge`` removes it.

Loopback only: the kernel container runs on the host network (``DOCKER_NETWORK=host``
for GP's launcher), its launcher scripts are patched in the image from ``0.0.0.0`` to
``127.0.0.1``, and the response listener is pinned with ``GP_RESPONSE_IP``. nb2svc passes
a kernel only whitelisted variables, so ``--env-allow DOCKER_HOST,DOCKER_NETWORK``.

One gap in GP 0.5.0 needs a shim: ``DockerProvisioner`` takes the kernel's address from
the container's network settings, which are empty on the host network, so it connects
to ``''`` ("Docker network 'host' could not be located in container attributes - using
assigned_ip ''") and the kernel never becomes ready. The shim below (a five-line
subclass, registered by entry point from a temporary directory on PYTHONPATH) uses
127.0.0.1 then; everything else is GP's: launch, response protocol, interrupt over the
launcher's socket, and removal of the container on shutdown. (GP's launcher copies the
kernel's whole environment into the container: nb2svc's whitelist is what limits it.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

if os.environ.get("NB2SVC_TEST_PODMAN") != "1":
    pytest.skip(
        "opt-in: set NB2SVC_TEST_PODMAN=1 to run GP's DockerProvisioner against podman (root; ~20 s, "
        "~2 min the first time)",
        allow_module_level=True,
    )
pytest.importorskip("gateway_provisioners")
pytest.importorskip("docker", reason="the docker SDK is missing: pip install 'gateway_provisioners[docker]'")

from tests.kernels_support import AUTH, KernelClient, kernel_server, start_kernel  # noqa: E402
from tests.support import REPO, free_port, wait_for  # noqa: E402
from tests.test_docker_image import python_prefix, require_container_tools  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TOOLS = REPO / ".ci" / "container-tools.sh"
KERNEL = "docker_python"
LABEL = "app=gateway-provisioners"  # set by GP's launch_docker.py on every kernel container
INSTALL = "from gateway_provisioners.cli.docker_specapp import DockerProvisionerApp as A; A.launch_instance()"
SCRIPTS = "/usr/local/bin/kernel-launchers/python/scripts"
DOCKERFILE = f"""\
FROM python:{sys.version_info.major}.{sys.version_info.minor}-slim
RUN pip install --no-cache-dir ipykernel=={version("ipykernel")} \\
      gateway_provisioners=={version("gateway_provisioners")} \\
 && jupyter image-bootstrap install --languages Python \\
 && chmod 0755 /usr/local/bin/bootstrap-kernel.sh \\
 && sed -i 's/"0\\.0\\.0\\.0"/"127.0.0.1"/' {SCRIPTS}/launch_ipykernel.py {SCRIPTS}/server_listener.py \\
 && ! grep -rn '0\\.0\\.0\\.0' {SCRIPTS} \\
 && useradd --uid 1000 --gid 100 --create-home jovyan
ENV KERNEL_LANGUAGE=Python
USER 1000:100
CMD ["/usr/local/bin/bootstrap-kernel.sh"]
"""
SHIM = '''\
from gateway_provisioners.docker_swarm import DockerProvisioner


class LoopbackDockerProvisioner(DockerProvisioner):
    """GP's DockerProvisioner for host-network containers: their kernel is at 127.0.0.1."""

    def get_container_status(self, iteration):
        status = super().get_container_status(iteration)
        if self.assigned_host and not self.assigned_ip:
            self.assigned_ip = "127.0.0.1"
        return status
'''
# Run in the kernel: the local addresses of every listening TCP socket of the container's
# processes (its own pid namespace, the host's network namespace), as /proc/net spells them.
LISTENING = """\
import os, re
inodes = set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            inodes.update(re.findall(r"^socket:\\[(\\d+)\\]$", os.readlink(f"/proc/{pid}/fd/{fd}")))
        except OSError:  # gone meanwhile (such as the fd of this very listdir)
            pass
rows = [line.split() for name in ("tcp", "tcp6") for line in open(f"/proc/net/{name}").readlines()[1:]]
print(sorted({r[1].split(":")[0] for r in rows if r[3] == "0A" and r[9] in inodes}))
"""


@functools.cache
def podman_env() -> dict[str, str]:
    exports = subprocess.run(["bash", str(TOOLS), "env"], capture_output=True, text=True, check=True).stdout
    return {**os.environ, **dict(re.findall(r"(\w+)=(\S+)", exports))}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=podman_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


def kernel_containers() -> list[str]:
    """Every container (running or not) that GP's launcher made, in the private store."""
    return podman("ps", "--all", "--filter", f"label={LABEL}", "--format", "{{.Names}}").stdout.split()


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The kernel image (built unless an identical one exists), on the stand-in base."""
    require_container_tools()
    base = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    prepared = subprocess.run(
        ["bash", str(TOOLS), "base", base, python_prefix()], capture_output=True, text=True, timeout=1200
    )
    assert prepared.returncode == 0, prepared.stderr
    tag = f"localhost/nb2svc-gp-kernel:{hashlib.sha256(DOCKERFILE.encode()).hexdigest()[:12]}"
    if podman("image", "exists", tag, check=False).returncode != 0:
        context = Path(podman_env()["CONTAINERS_STORAGE_CONF"]).parent / "gp-kernel-context"
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text(DOCKERFILE)
        podman(
            "build",
            "--pull=never",
            "--network",
            "host",
            "--format",
            "docker",
            "--tag",
            tag,
            str(context),
            timeout=900,
        )
    try:
        yield tag
    finally:
        for name in kernel_containers():
            podman("rm", "--force", "--time", "2", name, check=False)
        subprocess.run(["bash", str(TOOLS), "netclean"], timeout=120, check=False)


@pytest.fixture(scope="module")
def docker_host(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``podman system service`` on a private unix socket (root-only directory), stopped at the end."""
    run = tmp_path_factory.mktemp("podman")
    run.chmod(0o700)
    socket = run / "podman.sock"
    with open(run / "service.log", "wb") as log:
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=podman_env(),
        )
    try:
        wait_for(lambda: socket.exists() or service.poll() is not None, 30, "podman's API socket")
        assert service.poll() is None, (run / "service.log").read_text()
        yield f"unix://{socket}"
    finally:
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(10)


class DockerSpec:
    """GP's ``docker_python`` spec in a private prefix, using the loopback shim."""

    def __init__(self, root: Path, image: str, docker_host: str) -> None:
        prefix = root / "gp"
        subprocess.run(
            [sys.executable, "-c", INSTALL, "install", f"--kernel-name={KERNEL}", f"--image-name={image}"]
            + [f"--prefix={prefix}", "--unauthorized-users=nobody-placeholder"],  # the server runs as root
            check=True,
            capture_output=True,
            timeout=60,
        )
        spec_path = prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
        spec = json.loads(spec_path.read_text())
        provisioner = spec["metadata"]["kernel_provisioner"]
        assert provisioner["provisioner_name"] == "docker-provisioner"
        assert provisioner["config"]["image_name"] == image
        provisioner["provisioner_name"] = "docker-loopback-provisioner"
        spec["argv"][0] = sys.executable  # the installer writes a bare "python"
        spec_path.write_text(json.dumps(spec))

        shim = root / "shim"
        dist = shim / "nb2svc_gp_loopback-0.0.0.dist-info"
        dist.mkdir(parents=True)
        (shim / "nb2svc_gp_loopback.py").write_text(SHIM)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nb2svc-gp-loopback\nVersion: 0.0.0\n")
        (dist / "entry_points.txt").write_text(
            "[jupyter_client.kernel_provisioners]\n"
            "docker-loopback-provisioner = nb2svc_gp_loopback:LoopbackDockerProvisioner\n"
        )
        pythonpath = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {
            "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
            "PYTHONPATH": pythonpath,
            "DOCKER_HOST": docker_host,
            "DOCKER_NETWORK": "host",  # read by GP's launcher (launch_docker.py)
            "GP_DOCKER_NETWORK": "host",  # read by the provisioner
            "GP_RESPONSE_IP": "127.0.0.1",
            "GP_RESPONSE_PORT": str(free_port()),
        }
        self.args = ("--default-kernel", KERNEL, "--env-allow", "DOCKER_HOST,DOCKER_NETWORK")


def test_kernel_mode_with_gateway_docker_provisioner_on_podman(
    tmp_path: Path, image: str, docker_host: str
) -> None:
    spec = DockerSpec(tmp_path, image, docker_host)
    assert kernel_containers() == []
    with kernel_server(tmp_path, *spec.args, env=spec.env) as server:
        kernel_id = start_kernel(server)["id"]
        names = kernel_containers()
        assert len(names) == 1, names
        settings = json.loads(podman("inspect", names[0]).stdout)[0]
        assert settings["HostConfig"]["NetworkMode"] == "host"
        assert settings["Config"]["Image"] == image
        with KernelClient(server, kernel_id) as client:
            assert client.execute("print(6*7)", timeout=30).stdout == "42\n"
            where = client.execute("import os, socket; print(os.getuid(), socket.gethostname())").stdout
            assert where.split() == ["1000", names[0]]  # GP's default KERNEL_UID, in the container
            # The five kernel ports and the launcher's, all on 127.0.0.1 (0100007F) and nothing else.
            assert client.execute(LISTENING).stdout == "['0100007F']\n"
            msg_id = client.execute_request("import time; print('sleeping', flush=True); time.sleep(30)")
            client.wait_for(lambda m: m.msg_type == "stream" and m.parent_id == msg_id)  # the cell runs
            interrupted = server.request("POST", f"/api/kernels/{kernel_id}/interrupt", headers=AUTH)
            assert interrupted.status_code == 204  # over the launcher's socket, on 127.0.0.1
            result = client.collect(msg_id, timeout=15)
            assert result.status == "error" and result.reply["ename"] == "KeyboardInterrupt"

        deleted = server.request("DELETE", f"/api/kernels/{kernel_id}", headers=AUTH, timeout=60)
        assert deleted.status_code == 204
        wait_for(lambda: kernel_containers() == [], 30, "no kernel container left after DELETE")

        survivor = start_kernel(server)["id"]
        with KernelClient(server, survivor) as client:
            assert client.execute("print(6 * 7)", timeout=30).stdout == "42\n"
        assert len(kernel_containers()) == 1
        assert server.stop() == 0
    wait_for(lambda: kernel_containers() == [], 30, "no kernel container left after the server stopped")
