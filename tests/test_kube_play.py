"""The generated Kubernetes Deployment, run as it is written with ``podman kube play``.

Builds the bundle's image as tests/test_docker_image.py does (its fixture skips, with the
reason, where podman, runc or debootstrap is missing or the user is not root), then plays
``k8s/deployment.yaml`` with one change a cluster would not need: each container port gets a
``hostPort`` on 127.0.0.1 (a free one), since podman 4.3 publishes every containerPort on
the host and the bundle's ports (8888, 9090) may be taken on a shared machine. The pod must
come up under the manifest's security context (user 10001, read-only root, emptyDirs for
/tmp and the home directory), answer ``/_api/health/ready`` with 200 through the published
port, want the token the Deployment reads from its Secret (given as a podman secret), and
serve the pool's gauges without the token on the published metrics port (what Prometheus,
and so the ``--keda`` trigger, scrape). ``podman kube down`` removes the pod; the image
is removed too, the base image is kept.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support import EXAMPLES, free_port, wait_for
from tests.test_docker_image import build_image, engine, podman  # noqa: F401 - engine is a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
TOKEN = "kube-play-token"


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
    built = subprocess.run(
        [
            sys.executable, "-m", "nb2svc", "build", str(notebook), "-o", str(bundle),
            "--k8s", "--keda", "--docker-tag", image, "--pool-size", "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    deployment = yaml.safe_load((bundle / "k8s" / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == name
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    assert api["image"] == image and api["imagePullPolicy"] == "IfNotPresent"
    ports = publish_on_loopback(deployment)
    played = tmp_path / "deployment.yaml"
    played.write_text(yaml.safe_dump(deployment))
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(token_secret_data()))
    url = f"http://127.0.0.1:{ports['http']}"
    try:
        build_image(bundle, image)
        podman("secret", "create", name, str(secret))
        podman("kube", "play", str(played), timeout=300)
        pod = f"{name}-pod-0"

        def ready() -> bool:
            try:
                return requests.get(url + "/_api/health/ready", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        try:
            wait_for(ready, 120, f"{url}/_api/health/ready from the played pod")
        except AssertionError:
            logs = podman("logs", f"{pod}-api", check=False)
            raise AssertionError((logs.stdout + logs.stderr)[-3000:]) from None
        assert json.loads(podman("pod", "inspect", pod).stdout)["State"] == "Running"
        inspected = json.loads(podman("container", "inspect", f"{pod}-api").stdout)[0]
        assert inspected["Config"]["User"].split(":")[0] == "10001"  # runAsUser
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True  # readOnlyRootFilesystem
        # The token comes from the Secret: the main port wants it, the metrics port does not.
        assert requests.get(url + "/hello/pod", timeout=10).status_code == 401
        answer = requests.get(url + "/hello/pod", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
        assert answer.text == "hello, pod\n"
        metrics = requests.get(f"http://127.0.0.1:{ports['metrics']}/_api/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "\nnb2svc_pool_waiting_requests 0" in metrics.text  # the KEDA trigger's gauge
    finally:
        podman("kube", "down", str(played), check=False, timeout=120)
        podman("secret", "rm", name, check=False)
        podman("rmi", "--force", image, check=False)
