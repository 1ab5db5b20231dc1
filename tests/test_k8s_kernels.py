"""Kernel mode's bundle (`nb2svc build --kernels`, issue 19): a gateway Deployment, its
Service, RBAC for gateway_provisioners' KubernetesProvisioner and the store wiring.

Every manifest passes kubernetes-validate in strict mode (its bundled schemas for the
latest Kubernetes, no network); the rest checks what a platform team would: no session
affinity, least-privilege RBAC bound to the account the pods run as, secrets only by
reference, and a Dockerfile whose kernel spec command gateway_provisioners accepts.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nb2svc.compiler.bundle import BundleError
from nb2svc.compiler.kernels_bundle import KernelBundleOptions, render_kernels_bundle
from nb2svc.distribution import Runtime, wheel_filename
from tests.test_k8s import validate_files

kubernetes_validate = pytest.importorskip("kubernetes_validate")

RUNTIME = Runtime(("flask==3.1.3",), wheel_filename(), b"wheel", "3.11")
IMAGES = (("python_k8s", "elyra/kernel-py:3.2.3"), ("r_k8s", "elyra/kernel-r:3.2.3"))


def bundle(**options: Any) -> dict[str, bytes]:
    return render_kernels_bundle(KernelBundleOptions(**options), RUNTIME)


def documents(files: dict[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    return {
        name.removeprefix("k8s/"): list(yaml.safe_load_all(data))
        for name, data in files.items()
        if name.startswith("k8s/")
    }


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    """Three replicas on a Redis store, two kernel images, in namespace ``jupyter``."""
    files = bundle(
        replicas=3, store="redis://:secret-pw@redis:6379/0", namespace="jupyter", kernel_images=IMAGES
    )
    return {"files": files, "k8s": documents(files)}


def by_kind(k8s: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    objects = [doc for name, docs in k8s.items() if name != "kustomization.yaml" for doc in docs]
    kinds = [o["kind"] for o in objects]
    assert len(set(kinds)) == len(kinds), kinds
    return {o["kind"]: o for o in objects}


def gateway(k8s: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (container,) = by_kind(k8s)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_every_manifest_validates_strictly(shared: dict[str, Any]) -> None:
    version = kubernetes_validate.latest_version()
    objects = by_kind(shared["k8s"])
    assert sorted(objects) == sorted(
        ["Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "PodDisruptionBudget"]
    )
    for document in objects.values():
        kubernetes_validate.validate(document, version, strict=True)
    kustomization = shared["k8s"]["kustomization.yaml"][0]
    assert kustomization["namespace"] == "jupyter"
    assert sorted(kustomization["resources"]) == sorted(n for n in shared["k8s"] if n != "kustomization.yaml")


def test_replicas_without_affinity(shared: dict[str, Any]) -> None:
    objects = by_kind(shared["k8s"])
    assert objects["Deployment"]["spec"]["replicas"] == 3
    service = objects["Service"]["spec"]
    assert service["sessionAffinity"] == "None"
    assert (
        service["selector"].items() <= objects["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    probes = gateway(shared["k8s"])
    assert probes["readinessProbe"]["httpGet"] == {"path": "/_api/health/ready", "port": "http"}
    assert probes["livenessProbe"]["httpGet"] == {"path": "/_api/health/live", "port": "http"}


def test_rbac_is_least_privilege_and_bound_to_the_pods_account(shared: dict[str, Any]) -> None:
    objects = by_kind(shared["k8s"])
    assert not {"ClusterRole", "ClusterRoleBinding"} & set(objects)  # nothing cluster-wide
    (rule,) = objects["Role"]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "list", "delete"]}
    binding = objects["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": objects["Role"]["metadata"]["name"],
    }
    account = objects["ServiceAccount"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "jupyter"}]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account
    assert pod["automountServiceAccountToken"] is True  # the launcher's in-cluster credentials
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False  # only where asked
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert gateway(shared["k8s"])["securityContext"]["readOnlyRootFilesystem"] is True


def test_kernels_go_to_the_gateways_namespace_and_answer_to_the_pod(shared: dict[str, Any]) -> None:
    env = {e["name"]: e for e in gateway(shared["k8s"])["env"]}
    assert env["GP_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["GP_SHARED_NAMESPACE"]["value"] == "True"  # no namespace per kernel: none created
    assert env["GP_RESPONSE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    ports = {p["name"]: p["containerPort"] for p in gateway(shared["k8s"])["ports"]}
    assert env["GP_RESPONSE_PORT"]["value"] == str(ports["kernel-response"])


def test_token_and_store_come_from_secrets_and_are_never_written(shared: dict[str, Any]) -> None:
    env = {e["name"]: e for e in gateway(shared["k8s"])["env"]}
    name = by_kind(shared["k8s"])["Deployment"]["metadata"]["name"]
    assert env["NB2SVC_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": name, "key": "token"}}  # required
    assert env["NB2SVC_STORE"]["valueFrom"] == {"secretKeyRef": {"name": f"{name}-store", "key": "url"}}
    assert not [n for n, data in shared["files"].items() if b"secret-pw" in data]
    assert "NB2SVC_STORE" not in {e["name"] for e in gateway(documents(bundle()))["env"]}  # none given


def test_several_replicas_need_a_store() -> None:
    with pytest.raises(
        BundleError, match=r"3 replicas share their kernels through a Redis store: add --store"
    ):
        KernelBundleOptions(replicas=3)
    assert by_kind(documents(bundle()))["Deployment"]["spec"]["replicas"] == 1


def test_dockerfile_installs_one_kernel_spec_per_image(shared: dict[str, Any]) -> None:
    dockerfile = shared["files"]["Dockerfile"].decode()
    installs = re.findall(r"^RUN (jupyter k8s-spec install .*)$", dockerfile, re.M)
    assert installs == [
        f"jupyter k8s-spec install --sys-prefix --kernel-name {k} --image-name {image}" for k, image in IMAGES
    ]
    assert "NB2SVC_DEFAULT_KERNEL=python_k8s" in dockerfile
    assert dockerfile.rstrip().endswith('CMD ["nb2svc", "serve", "--kernels"]')
    assert re.search(r"^gateway_provisioners\[k8s\]==", shared["files"]["requirements.txt"].decode(), re.M)
    assert json.loads(shared["files"]["kernels.json"])["kernels"] == [
        {"name": k, "image": image} for k, image in IMAGES
    ]


def test_the_kernel_spec_command_makes_a_kubernetes_kernel_spec(tmp_path: Path) -> None:
    """The Dockerfile's command, run with gateway_provisioners here (into a prefix)."""
    pytest.importorskip("gateway_provisioners")
    name, image = IMAGES[0]
    dockerfile = bundle(kernel_images=IMAGES[:1])["Dockerfile"].decode()
    command = re.search(r"^RUN jupyter (k8s-spec install .*)$", dockerfile, re.M).group(1)  # type: ignore[union-attr]
    argv = command.replace("--sys-prefix", f"--prefix {tmp_path}").split()
    jupyter = Path(sys.executable).with_name("jupyter")
    done = subprocess.run([str(jupyter), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = json.loads((tmp_path / "share" / "jupyter" / "kernels" / name / "kernel.json").read_text())
    provisioner = spec["metadata"]["kernel_provisioner"]
    assert provisioner["provisioner_name"] == "kubernetes-provisioner"
    assert provisioner["config"]["image_name"] == image


def run_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", *args], capture_output=True, text=True, timeout=120
    )


def test_build_writes_files_that_kubernetes_validate_accepts(tmp_path: Path) -> None:
    out = tmp_path / "gateway"
    built = run_build("--kernels", "-o", str(out), "--replicas", "2", "--store", "redis://redis:6379/0")
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(f"built {out}/: a kernel gateway, 2 replica(s), kernels python_k8s")
    files = [out / "k8s" / n for n in ("deployment.yaml", "service.yaml", "rbac.yaml", "pdb.yaml")]
    validate_files(files, 6)  # rbac.yaml holds three objects
    again = run_build("--kernels", "-o", str(out))  # an earlier gateway bundle is ours to replace
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2"], "2 replicas share their kernels through a Redis store: add --store"),
        (["--pool-size", "3"], "--pool-size is an API-mode setting"),
        (["--kernel-image", "python"], "expected NAME=IMAGE"),
        (["--kernel-image", "py=elyra/kernel-py:latest"], "not latest"),
        (["--namespace", "Not_A_Name"], "is not a Kubernetes name"),
        (["--keda"], "--kernels builds a kernel gateway"),
        (["--comment-prefix", "#"], "--kernels builds a kernel gateway"),
    ],
)
def test_bad_gateway_flags_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    built = run_build("--kernels", "-o", str(tmp_path / "b"), *args)
    assert built.returncode == 2
    errors = [line for line in built.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], built.stderr
    assert "Traceback" not in built.stderr
    assert not (tmp_path / "b").exists()


def test_gateway_flags_need_kernels(tmp_path: Path) -> None:
    from tests.support import EXAMPLES

    built = run_build(str(EXAMPLES / "hello.ipynb"), "-o", str(tmp_path / "b"), "--namespace", "x")
    assert built.returncode == 2 and "add --kernels" in built.stderr
