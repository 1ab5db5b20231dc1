"""Render the deploy bundle of kernel mode: ``nb2svc build --kernels`` (issue 19).

A gateway, not a notebook: N replicas of ``nb2svc serve --kernels`` whose kernels run in
pods of their own, started by gateway_provisioners' ``KubernetesProvisioner``. Files
(deterministic, like :mod:`nb2svc.compiler.bundle`, whose helpers this shares):

- ``Dockerfile``: the gateway's image, nb2svc's pins plus gateway_provisioners, with one
  kernel spec per kernel image made by gateway_provisioners' own ``jupyter k8s-spec
  install`` at build time (its launcher and pod template, never copies of them)
- ``requirements.txt``, ``wheels/nb2svc-*.whl``, ``.dockerignore``
- ``kernels.json``: the kernel specs and their images (what the image was built for)
- ``k8s/``: a Deployment of ``replicas`` gateways (no replica-to-pod affinity needed by
  clients), a Service without session affinity, RBAC for the provisioner (a
  ServiceAccount and a Role over pods in the gateways' namespace, where the kernel pods
  run), a PodDisruptionBudget and a ``kustomization.yaml``
- ``README.md``: how to deploy, and how JupyterLab connects (``--gateway-url``)

Secrets are never written: the token comes from the Secret ``<name>`` (key ``token``) and
the store's URL from ``<name>-store`` (key ``url``). Several replicas share their kernel
registry through a Redis store, so ``replicas > 1`` without ``store`` is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from nb2svc._version import __version__
from nb2svc.compiler.bundle import (
    APP_UID,
    DEFAULT_BASE_IMAGE,
    DUMB_INIT,
    PRESTOP_SECONDS,
    BundleError,
    check_image_tag,
    dns_name,
    image_digest,
    image_repository,
    template_environment,
)
from nb2svc.config import OPTIONS_BY_NAME
from nb2svc.distribution import Runtime, current_runtime
from nb2svc.store_url import normalize_store_url, redact

#: gateway_provisioners with the Kubernetes client, pinned: its launcher and pod template
#: go into the kernel specs, so the image must not pick up another release by chance.
GATEWAY_PROVISIONERS = "gateway_provisioners[k8s]==0.5.0"
#: The kernel spec of a bundle that names no kernel image: gateway_provisioners' own
#: Python kernel image (ipykernel with its kernel launcher), as its documentation uses.
DEFAULT_KERNEL_IMAGES = (("python_k8s", "elyra/kernel-py:3.2.3"),)
#: Where gateway_provisioners' kernel pods connect back to with their connection info
#: (its ``GP_RESPONSE_PORT`` default), on the gateway pod's own IP.
RESPONSE_PORT = 8877
#: Seconds a gateway keeps serving after it is marked terminating, then its shutdown.
GATEWAY_GRACE_SECONDS = 30
KERNEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
#: Environment a kernel launcher needs to reach the Kubernetes API from the gateway pod
#: (in-cluster config); nb2svc passes kernels only the variables it is told to.
LAUNCHER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
K8S_FILES = ("deployment.yaml", "service.yaml", "rbac.yaml", "pdb.yaml", "kustomization.yaml")
#: Rendered from API mode's templates (templates/k8s/): the same for a gateway.
SHARED_K8S_FILES = ("pdb.yaml", "kustomization.yaml")


def _default(name: str) -> Any:
    return OPTIONS_BY_NAME[name].default


@dataclass(frozen=True)
class KernelBundleOptions:
    """How to render a kernel-mode bundle.

    ``kernel_images`` are ``(kernel spec name, image)`` pairs; the first is the default
    kernel. ``replicas`` is the Deployment's fixed count of gateways (kernel load lives in
    the kernel pods, not in the gateways, so there is no autoscaler). ``store`` is only
    checked and used to say which Secret to create; its value is never written.
    """

    name: str = "kernels"
    base_image: str | None = None
    image: str | None = None
    replicas: int = 1
    #: Where the gateways and their kernel pods run (kustomization's namespace, RBAC's subject).
    namespace: str = "default"
    port: int = field(default_factory=lambda: _default("port"))
    base_url: str = field(default_factory=lambda: _default("base_url"))
    store: str = ""
    kernel_images: tuple[tuple[str, str], ...] = DEFAULT_KERNEL_IMAGES

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise BundleError(f"replicas must be at least 1, got {self.replicas}")
        try:
            normalize_store_url(self.store)
        except ValueError as exc:
            raise BundleError(f"store: {exc}") from None
        if self.replicas > 1 and not self.store:
            raise BundleError(
                f"{self.replicas} replicas share their kernels through a Redis store: "
                "add --store redis://HOST:PORT/DB (or build --replicas 1)"
            )
        if dns_name(self.namespace) != self.namespace:
            raise BundleError(
                f"namespace {self.namespace!r} is not a Kubernetes name (lower case, digits, '-')"
            )
        if not self.kernel_images:
            raise BundleError("a kernel bundle needs at least one kernel image")
        names = [name for name, _ in self.kernel_images]
        for name, image in self.kernel_images:
            if not KERNEL_NAME.fullmatch(name):
                raise BundleError(f"kernel spec name {name!r}: use lower case letters, digits, '.', '_', '-'")
            check_image_tag(image)
        if len(set(names)) != len(names):
            raise BundleError(f"kernel spec names repeat: {', '.join(names)}")


def parse_kernel_image(value: str) -> tuple[str, str]:
    """``NAME=IMAGE`` (``--kernel-image``) as a pair, or a :class:`BundleError` saying why."""
    name, sep, image = value.partition("=")
    if not sep or not name or not image:
        raise BundleError(f"expected NAME=IMAGE (e.g. python_k8s=elyra/kernel-py:3.2.3), got {value!r}")
    check_image_tag(image)
    return name, image


def render_kernels_bundle(options: KernelBundleOptions, runtime: Runtime | None = None) -> dict[str, bytes]:
    """Every file of the kernel-mode bundle as ``{relative path: content}``."""
    runtime = runtime or current_runtime()
    env = template_environment()
    name = dns_name(options.name)
    kernels = [{"name": k, "image": image} for k, image in options.kernel_images]
    context: dict[str, Any] = {
        "name": name,
        "version": __version__,
        "options": options,
        "requirements": runtime.requirements,
        "wheel": runtime.wheel_name,
        "dumb_init": DUMB_INIT,
        "gateway_provisioners": GATEWAY_PROVISIONERS,
        "uid": APP_UID,
        "base_image": options.base_image or DEFAULT_BASE_IMAGE.format(python=runtime.python),
        "kernels": kernels,
        "default_kernel": kernels[0]["name"],
        "response_port": RESPONSE_PORT,
        "launcher_env": ",".join(LAUNCHER_ENV),
        "store_hint": redact(options.store),
        "base": options.base_url,
        "prestop_seconds": PRESTOP_SECONDS,
        "termination_grace": PRESTOP_SECONDS + GATEWAY_GRACE_SECONDS,
        "k8s_resources": [f for f in K8S_FILES if f != "kustomization.yaml"],
        "component": "gateway",
        "kube_namespace": options.namespace,
        "makefile": False,
        # for the templates shared with API mode (k8s/pdb.yaml, k8s/kustomization.yaml, .dockerignore)
        "spec": {"name": name},
        "image_files": (),
        "sources": (),
    }

    def render(template: str) -> bytes:
        return env.get_template(f"{template}.j2").render(context).encode()

    description = {"format": 1, "nb2svc": __version__, "default_kernel": context["default_kernel"]}
    files = {
        "requirements.txt": render("kernels/requirements.txt"),
        f"wheels/{runtime.wheel_name}": runtime.wheel,
        "Dockerfile": render("kernels/Dockerfile"),
        ".dockerignore": render("dockerignore"),
        "kernels.json": (json.dumps({**description, "kernels": kernels}, indent=2) + "\n").encode(),
    }
    image = options.image or f"{name}:{image_digest(files)}"
    context["image"] = check_image_tag(image)
    context["image_repository"] = image_repository(image)
    files["README.md"] = render("kernels/README.md")
    for manifest in K8S_FILES:
        shared = manifest in SHARED_K8S_FILES
        files[f"k8s/{manifest}"] = render(f"k8s/{manifest}" if shared else f"kernels/k8s/{manifest}")
    return files
