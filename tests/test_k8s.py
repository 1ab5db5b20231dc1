"""Kubernetes manifests from `nb2svc build --k8s`: schema-valid, and what a platform team checks.

Schema validation uses kubernetes-validate's bundled schemas for its latest Kubernetes
version, in strict mode (unknown fields are errors), with no network.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nb2svc.compiler import compile_notebook
from nb2svc.compiler.bundle import BundleOptions, render_bundle
from nb2svc.distribution import Runtime, wheel_filename
from tests.support import EXAMPLES

kubernetes_validate = pytest.importorskip("kubernetes_validate")

RUNTIME = Runtime(("flask==3.1.3",), wheel_filename(), b"wheel", "3.11")
MANIFESTS = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")


def manifests(**options: Any) -> dict[str, Any]:
    path = EXAMPLES / "todo.ipynb"
    files = render_bundle(
        compile_notebook(path), path.read_bytes(), BundleOptions(k8s=True, **options), RUNTIME
    )
    return {
        name.removeprefix("k8s/"): yaml.safe_load(data)
        for name, data in files.items()
        if name.startswith("k8s/")
    }


@pytest.fixture(scope="module")
def k8s() -> dict[str, Any]:
    return manifests(image="registry.example.com/team/todo:1.0.0")


def container(k8s: dict[str, Any]) -> dict[str, Any]:
    (api,) = k8s["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    return api


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates_against_the_kubernetes_schema(k8s: dict[str, Any], name: str) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(k8s[name], version, strict=True)


def test_kustomization_lists_every_manifest(k8s: dict[str, Any]) -> None:
    kustomization = k8s["kustomization.yaml"]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(MANIFESTS)


def test_probes_ports_and_image(k8s: dict[str, Any]) -> None:
    api = container(k8s)
    assert api["image"] == "registry.example.com/team/todo:1.0.0"
    assert api["readinessProbe"]["httpGet"] == {"path": "/_api/health/ready", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/_api/health/live", "port": "http"}
    assert api["ports"] == [
        {"name": "http", "containerPort": 8888, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},  # scrape-only (issue 22)
    ]
    service = k8s["service.yaml"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    labels = k8s["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["selector"],
        k8s["pdb.yaml"]["spec"]["selector"]["matchLabels"],
        k8s["deployment.yaml"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()


def test_default_image_tag_is_never_latest() -> None:
    image = container(manifests())["image"]
    assert re.fullmatch(r"todo:[0-9a-f]{12}", image), image


def test_runs_as_non_root_with_a_read_only_root(k8s: dict[str, Any]) -> None:
    pod = k8s["deployment.yaml"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's numeric USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(k8s)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    # writable places a kernel needs, as emptyDirs
    assert {m["mountPath"] for m in container(k8s)["volumeMounts"]} == {"/tmp", "/home/nb2svc"}


def env(k8s: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container(k8s)["env"]}


def test_graceful_termination_outlasts_the_request_timeout() -> None:
    k8s = manifests(request_timeout=45)
    settings = env(k8s)
    grace = k8s["deployment.yaml"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    prestop = int(container(k8s)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert settings["NB2SVC_REQUEST_TIMEOUT"] == "45"
    assert int(settings["NB2SVC_GRACEFUL_TIMEOUT"]) > 45  # gunicorn lets a request in flight finish
    assert grace > prestop + int(settings["NB2SVC_GRACEFUL_TIMEOUT"])  # ...before the kubelet kills


def quantity(value: str) -> int:
    return int(value.removesuffix("m").removesuffix("Mi"))


def test_resources_grow_with_the_pool() -> None:
    small = container(manifests(pool_size=1))["resources"]
    large = container(manifests(pool_size=4, workers=2))["resources"]
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert quantity(large[kind][resource]) > quantity(small[kind][resource])
    assert env(manifests(pool_size=4, workers=2))["NB2SVC_POOL_SIZE"] == "4"


def test_autoscaling_and_disruption_budget(k8s: dict[str, Any]) -> None:
    hpa = k8s["hpa.yaml"]["spec"]
    assert k8s["hpa.yaml"]["apiVersion"] == "autoscaling/v2"
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "todo"}
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # the HPA owns the replica count; a count in the Deployment would reset it on every apply
    assert "replicas" not in k8s["deployment.yaml"]["spec"]
    assert k8s["pdb.yaml"]["spec"]["maxUnavailable"] == 1


def test_hpa_documents_scaling_on_pool_saturation() -> None:
    """The commented block is valid once uncommented."""
    path = EXAMPLES / "todo.ipynb"
    text = render_bundle(compile_notebook(path), path.read_bytes(), BundleOptions(k8s=True), RUNTIME)[
        "k8s/hpa.yaml"
    ].decode()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    # - type: Pods"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    #"))
    uncommented = "\n".join(line[:4] + line[6:] for line in lines[start:end])
    hpa = yaml.safe_load(text)
    hpa["spec"]["metrics"] += yaml.safe_load(uncommented)
    assert hpa["spec"]["metrics"][-1]["pods"]["metric"]["name"] == "nb2svc_pool_saturation"
    kubernetes_validate.validate(hpa, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_validate_cli_accepts_the_written_files(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    built = subprocess.run(
        [sys.executable, "-m", "nb2svc", "build", str(EXAMPLES / "hello.ipynb"), "-o", str(out), "--k8s"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    validate_files([out / "k8s" / name for name in MANIFESTS], len(MANIFESTS))


def validate_files(files: list[Path], objects: int) -> None:
    """kubernetes-validate's own command, strict, on written files holding ``objects`` objects."""
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == objects


#: The part of KEDA's ScaledObject CRD (keda.sh/v1alpha1, KEDA 2.10+) that the bundle
#: uses, written from its documented fields; ``additionalProperties: false`` makes a
#: misspelt or misplaced field an error, as a strict schema check would. The HPA
#: behavior inside it is checked separately against Kubernetes' own schema.
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": STRING_MAP},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {k: {"type": "string"} for k in ("apiVersion", "kind", "name")},
                },
                **{
                    k: {"type": "integer", "minimum": 0}
                    for k in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod")
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": STRING_MAP,
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def keda() -> dict[str, Any]:
    return manifests(keda=True, pool_size=3, workers=2, prometheus_url="http://prom.monitoring:9090")


def test_keda_replaces_the_hpa_with_a_scaled_object(keda: dict[str, Any]) -> None:
    """KEDA makes its own HPA from the ScaledObject: the bundle writes no second one."""
    assert "hpa.yaml" not in keda
    assert sorted(keda["kustomization.yaml"]["resources"]) == sorted(
        ("deployment.yaml", "service.yaml", "scaledobject.yaml", "pdb.yaml")
    )
    version = kubernetes_validate.latest_version()
    for name in ("deployment.yaml", "service.yaml", "pdb.yaml"):
        kubernetes_validate.validate(keda[name], version, strict=True)


def test_scaled_object_is_structurally_valid(keda: dict[str, Any]) -> None:
    import jsonschema

    scaled = keda["scaledobject.yaml"]
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    # Its behavior is an HPA's: validated by Kubernetes' schema inside the HPA it becomes.
    spec = scaled["spec"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{scaled['metadata']['name']}"},
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    kubernetes_validate.validate(hpa, kubernetes_validate.latest_version(), strict=True)
    # A misspelt field fails, so the schema above does check something.
    spec["triggers"][0]["metadta"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)


def test_scaled_object_scales_on_waiting_requests_and_cpu(keda: dict[str, Any]) -> None:
    from nb2svc.runtime.http_api.health import POOL_GAUGES

    spec = keda["scaledobject.yaml"]["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "todo"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 10)
    queue, cpu = spec["triggers"]
    assert queue["type"] == "prometheus" and queue["metricType"] == "AverageValue"
    assert queue["metadata"]["serverAddress"] == "http://prom.monitoring:9090"
    gauge = re.match(r"sum\((\w+)\{", queue["metadata"]["query"]).group(1)  # type: ignore[union-attr]
    assert gauge == "nb2svc_pool_waiting_requests" and gauge in {g[0] for g in POOL_GAUGES}
    assert 'app_kubernetes_io_name="todo"' in queue["metadata"]["query"]
    assert queue["metadata"]["threshold"] == "6"  # a pod's kernels: 2 workers x 3
    assert cpu == {"type": "cpu", "name": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    # the query's label is one the pods carry; readiness and scraping are as without KEDA
    labels = keda["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "todo"
    pod = keda["deployment.yaml"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9090"
    assert container(keda)["readinessProbe"]["httpGet"]["path"] == "/_api/health/ready"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--keda"], "add --k8s"),
        (["--k8s", "--prometheus-url", "http://p:9090"], "add --keda"),
        (["--k8s", "--keda", "--prometheus-url", "prometheus:9090"], "http:// or https:// URL"),
    ],
)
def test_keda_flags_are_checked(tmp_path: Path, flags: list[str], message: str) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "nb2svc",
            "build",
            str(EXAMPLES / "hello.ipynb"),
            "-o",
            str(tmp_path / "b"),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 2
    assert message in built.stderr and "Traceback" not in built.stderr
    assert not (tmp_path / "b").exists()
