"""The generated Kubernetes Deployments, run as they are written with ``podman kube play``:
an API-mode service's (``build --k8s --keda``) and a kernel gateway's (``build --kernels``).

Builds the bundle's image as tests/test_docker_image.py does (its fixture skips, with the
reason, where podman, runc or debootstrap is missing or the user is not root), then plays
``k8s/deployment.yaml`` with one change a cluster would not need: each container port gets a
``hostPort`` on 127.0.0.1 (a free one), since podman 4.3 publishes every containerPort on
the host and the bundle's ports (8888, 9090) may be taken on a shared machine; and the
downward API's namespace and pod IP, which podman 4.3 refuses, are given as values. The pod must
come up under the manifest's security context (user 10001, read-only root, emptyDirs for
/tmp and the home directory), answer ``/_api/health/ready`` with 200 through the published
port, want the token the Deployment reads from its Secret (given as a podman secret), and
serve the pool's gauges without the token on the published metrics port (what Prometheus,
and so the ``--keda`` trigger, scrape). ``podman kube down`` removes the pod; the image
is removed too, the base image is kept.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support import EXAMPLES, free_port, wait_for
from tests.test_docker_image import build_image, engine, podman  # noqa: F401 - engine is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
TOKEN = "kube-play-token"
#: What the downward API would give (podman 4.3's kube play refuses these fieldRefs).
DOWNWARD_API = {"metadata.namespace": "default", "status.podIP": "127.0.0.1"}


def publish_on_loopback(deployment: dict[str, Any]) -> dict[str, int]:
    """Give each port of the Deployment's container a free ``hostPort`` on 127.0.0.1; by name."""
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    published = {}
    for port in api["ports"]:
        port["hostPort"] = published[port["name"]] = free_port()
        port["hostIP"] = "127.0.0.1"
    return published


def token_secret_data() -> dict[str, str]:
    """The ``data`` of the optional Secret the Deployment reads ``NB2SVC_TOKEN`` from
    (``kubectl create secret generic NAME --from-literal=token=...``): podman 4.3's kube play
    resolves a secretKeyRef from the podman secret of that name holding this map."""
    return {"token": base64.b64encode(TOKEN.encode()).decode()}


def build(*args: str) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", *args], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr


def ready(url: str) -> bool:
    try:
        return requests.get(url + "/_api/health/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@contextlib.contextmanager
def played(bundle: Path, image: str, name: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """Build ``bundle``'s image, play its Deployment (ports on loopback, token as a podman
    secret) and yield the pod's name and published ports once it is ready; then remove
    the pod, the secret and the image."""
    deployment = yaml.safe_load((bundle / "k8s" / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == name
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image and container["imagePullPolicy"] == "IfNotPresent"
    ports = publish_on_loopback(deployment)
    for variable in container["env"]:  # podman 4.3 takes no fieldRef but metadata.name and the like
        field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if field in DOWNWARD_API:
            variable.pop("valueFrom")
            variable["value"] = DOWNWARD_API[field]
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(token_secret_data()))
    pod = f"{name}-pod-0"
    url = f"http://127.0.0.1:{ports['http']}"
    try:
        build_image(bundle, image)
        podman("secret", "create", name, str(secret))
        podman("kube", "play", str(manifest), timeout=300)
        try:
            wait_for(lambda: ready(url), 120, f"{url}/_api/health/ready from the played pod")
        except AssertionError:
            logs = podman("logs", f"{pod}-{container['name']}", check=False)
            raise AssertionError((logs.stdout + logs.stderr)[-3000:]) from None
        assert json.loads(podman("pod", "inspect", pod).stdout)["State"] == "Running"
        inspected = json.loads(podman("container", "inspect", f"{pod}-{container['name']}").stdout)[0]
        assert inspected["Config"]["User"].split(":")[0] == "10001"  # runAsUser
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True  # readOnlyRootFilesystem
        yield pod, ports
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)
        podman("secret", "rm", name, check=False)
        podman("rmi", "--force", image, check=False)


@pytest.mark.usefixtures("engine")
def test_the_deployment_plays_ready_and_scrapable(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    # podman resolves a short or localhost/ name against a registry; the full docker.io name
    # is found in the local store (with imagePullPolicy IfNotPresent, nothing is pulled).
    image = f"docker.io/library/nb2svc-test-kube:{suffix}"
    # A name of its own (the Deployment's, the pod's and the Secret's), so that runs at once do not clash.
    name = f"kube-{suffix}"
    notebook = tmp_path / f"{name}.ipynb"
    notebook.write_bytes((EXAMPLES / "hello.ipynb").read_bytes())
    bundle = tmp_path / "bundle"
    build(str(notebook), "-o", str(bundle), "--k8s", "--keda", "--docker-tag", image, "--pool-size", "1")
    with played(bundle, image, name, tmp_path) as (_, ports):
        url = f"http://127.0.0.1:{ports['http']}"
        # The token comes from the Secret: the main port wants it, the metrics port does not.
        assert requests.get(url + "/hello/pod", timeout=10).status_code == 401
        answer = requests.get(url + "/hello/pod", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
        assert answer.text == "hello, pod\n"
        metrics = requests.get(f"http://127.0.0.1:{ports['metrics']}/_api/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "\nnb2svc_pool_waiting_requests 0" in metrics.text  # the KEDA trigger's gauge


@pytest.mark.usefixtures("engine")
def test_the_kernel_gateway_plays_ready_with_its_kernel_specs(tmp_path: Path) -> None:
    """``build --kernels``: the image installs gateway_provisioners' kernel spec, the gateway
    starts with it as the default and the token from its Secret. No cluster here, so a kernel
    start must fail at once with the provisioner's reason (not hang)."""
    suffix = uuid.uuid4().hex[:8]
    image = f"docker.io/library/nb2svc-test-gateway:{suffix}"
    name = f"gateway-{suffix}"
    bundle = tmp_path / "bundle"
    build("--kernels", "-o", str(bundle), "--docker-tag", image, "--namespace", "lab")
    (bundle / "k8s" / "deployment.yaml").write_text(
        (bundle / "k8s" / "deployment.yaml").read_text().replace("name: kernels", f"name: {name}")
    )  # the Deployment's name and its Secret's: its own, so that runs at once do not clash
    with played(bundle, image, name, tmp_path) as (_, ports):
        url = f"http://127.0.0.1:{ports['http']}"
        assert requests.get(url + "/api/kernelspecs", timeout=10).status_code == 401
        auth = {"Authorization": f"token {TOKEN}"}
        specs = requests.get(url + "/api/kernelspecs", headers=auth, timeout=10).json()
        assert specs["default"] == "python_k8s"
        provisioner = specs["kernelspecs"]["python_k8s"]["spec"]["metadata"]["kernel_provisioner"]
        assert provisioner["provisioner_name"] == "kubernetes-provisioner"
        assert provisioner["config"]["image_name"] == "elyra/kernel-py:3.2.3"
        started = requests.post(url + "/api/kernels", headers=auth, json={}, timeout=60)
        assert started.status_code == 500
        assert "kubernetes-provisioner" in started.json()["message"]
        assert requests.get(url + "/api/kernels", headers=auth, timeout=10).json() == []
