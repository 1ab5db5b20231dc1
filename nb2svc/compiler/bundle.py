"""Render a :class:`ServiceSpec` into a self-contained, deployable service bundle directory.

Files written (all deterministic: building twice gives byte-identical output):

- ``app.py``: a readable generated Flask app, one route declaration per endpoint
- ``service.json``: the ServiceSpec (the only contract with the runtime)
- ``openapi.json``: OpenAPI 3.1; ``notebook.ipynb``: the source notebook, verbatim
- several notebooks (:func:`render_mounted_bundle`): ``service.json`` of format 2 lists
  the mounts, each with its spec (see :mod:`nb2svc.compiler.mounts`), ``notebooks/``
  holds every source, ``app.py`` declares every mount's routes at their prefixes and
  ``openapi.json`` is the merged document; the rest is one of each, as for one notebook
- ``requirements.txt`` (every runtime dependency pinned) and ``wheels/nb2svc-*.whl``
  (nb2svc itself, which is not on PyPI): see :mod:`nb2svc.distribution`
- ``gunicorn.conf.py``, ``Dockerfile``, ``.dockerignore``
- ``Makefile`` and ``.github/workflows/deploy.yml``: install, ``nb2svc test``, build and
  push the image, apply the manifests (the workflow calls the Makefile's targets, so
  the two cannot drift apart)
- with ``k8s=True``: ``k8s/`` Deployment, Service, HorizontalPodAutoscaler (with
  ``keda=True`` a KEDA ScaledObject instead, which makes the HPA),
  PodDisruptionBudget and a ``kustomization.yaml``
- ``README.md``

Like the rest of the compiler this never starts a kernel, reads the environment or
touches a file but its own templates: it returns the files as bytes, and
:mod:`nb2svc.build` reads the notebooks and writes the directory. What it needs from the
installation (dependency pins, the nb2svc wheel, where the templates are) comes from
:mod:`nb2svc.distribution` (as a :class:`~nb2svc.distribution.Runtime`, so tests can
render with a fixed one).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nb2svc._version import __version__
from nb2svc.compiler.mounts import Mount, mounts_to_json
from nb2svc.compiler.openapi import mounted_openapi_document, openapi_document
from nb2svc.compiler.spec import Endpoint, ServiceSpec
from nb2svc.config import (
    DEPLOY_OPTIONS,
    OPTIONS_BY_NAME,
    env_value,
    mount_variable,
    pool_bounds,
    shutdown_timing,
)
from nb2svc.distribution import Runtime, current_runtime, templates_dir
from nb2svc.store_url import redact

#: The default FROM image, for the Python (``major.minor``) the dependency pins came from.
DEFAULT_BASE_IMAGE = "python:{python}-slim"
#: The image's unprivileged user; numeric so that Kubernetes' runAsNonRoot can check it.
APP_UID = 10001
#: Kernel specs the image has: ipykernel (pinned in requirements.txt) installs ``python3``.
#: A notebook for any other kernel needs it added to the image; the Dockerfile says which.
IMAGE_KERNELS = ("python3",)
#: PID 1 in the image (PyPI wheel, so no apt pinning): forwards SIGTERM to gunicorn, reaps orphans.
DUMB_INIT = "dumb-init==1.2.5.post1"

#: Resource requests per gunicorn worker and per warm kernel (measured RSS of an idle
#: worker ~80 MiB and an idle ipykernel ~60 MiB, plus headroom for request data). Limits
#: are twice the memory request (kernels hold user state that grows) and one core per
#: kernel plus half a core per worker (a busy kernel is CPU-bound on one core).
WORKER_CPU_MILLI, WORKER_MEMORY_MI = 100, 128
KERNEL_CPU_MILLI, KERNEL_MEMORY_MI = 250, 160
#: Seconds the pod keeps serving after it is marked terminating, so that load
#: balancers stop sending it traffic before gunicorn stops accepting.
PRESTOP_SECONDS = 5
#: The generated Deployment's scrape-only ``--metrics-port`` (Prometheus' usual port).
DEFAULT_METRICS_PORT = 9090
#: Where ``--keda``'s ScaledObject asks Prometheus by default: the in-cluster Service of the
#: Prometheus Operator (kube-prometheus-stack) in the ``monitoring`` namespace.
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


class BundleError(Exception):
    """The bundle cannot be written (e.g. the output directory is not ours to replace)."""


#: Deploy options that may hold credentials: wired from a Secret, never baked into files.
SECRET_OPTIONS = frozenset({"store"})


def _default(name: str) -> Any:
    return OPTIONS_BY_NAME[name].default


@dataclass(frozen=True)
class BundleOptions:
    """How to render a bundle.

    ``base_image`` defaults to :data:`DEFAULT_BASE_IMAGE` for the runtime's Python.
    ``image`` is the image reference the Dockerfile's build command, the Makefile and
    the manifests use; it must carry an explicit tag (never ``latest``). When ``None``
    it is ``<service>:<12 hex digits>``, a digest of every file the image is built from,
    so a changed notebook or nb2svc gives a new tag. ``replicas`` is the HPA's floor;
    the fields named like :data:`~nb2svc.config.DEPLOY_OPTIONS` (``port``, ``workers``,
    ``pool_size``, ``request_timeout``, ...) are baked into the image and manifests as
    ``NB2SVC_*`` defaults, one line per option of the table, and size the pod's
    resources and shutdown timing. ``requirements`` are the notebook's own packages
    (requirement lines, best pinned), installed with nb2svc's pins: the kernels import
    them, and nb2svc cannot know them.
    """

    base_image: str | None = None
    image: str | None = None
    k8s: bool = False
    #: Scale on queue depth too: ``k8s/scaledobject.yaml`` (a KEDA ScaledObject with a
    #: Prometheus trigger on ``nb2svc_pool_waiting_requests`` and a CPU trigger) instead of
    #: ``k8s/hpa.yaml``; KEDA makes the one HPA from it. ``prometheus_url`` is what it queries.
    keda: bool = False
    prometheus_url: str = DEFAULT_PROMETHEUS_URL
    replicas: int = 2
    max_replicas: int = 10
    port: int = field(default_factory=lambda: _default("port"))
    #: The Deployment's scrape-only port (``NB2SVC_METRICS_PORT``): Prometheus' pod
    #: annotations point there, so scraping works with a token set.
    metrics_port: int = DEFAULT_METRICS_PORT
    workers: int = field(default_factory=lambda: _default("workers"))
    base_url: str = field(default_factory=lambda: _default("base_url"))
    pool_size: int | str = field(default_factory=lambda: _default("pool_size"))
    request_timeout: float = field(default_factory=lambda: _default("request_timeout"))
    kernel_start_timeout: float = field(default_factory=lambda: _default("kernel_start_timeout"))
    graceful_timeout: float | None = field(default_factory=lambda: _default("graceful_timeout"))
    #: A shared store (``redis://...``): the Deployment reads ``NB2SVC_STORE`` from the
    #: Secret ``<name>-store`` (key ``url``); the URL itself is never written to a file.
    store: str = field(default_factory=lambda: _default("store"))
    requirements: tuple[str, ...] = ()
    #: Several notebooks: a mount's own pool settings (``{prefix: {option: value}}``, of
    #: :data:`~nb2svc.config.MOUNT_OPTIONS`), baked as ``NB2SVC_POOL_SIZE__<MOUNT>`` and the like.
    mounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.metrics_port < 65536 or self.metrics_port == self.port:
            raise BundleError(
                f"the metrics port must be a port from 1 to 65535 other than {self.port}, "
                f"got {self.metrics_port}"
            )
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.prometheus_url):
            raise BundleError(
                f"the Prometheus URL must be an http:// or https:// URL, got {self.prometheus_url!r}"
            )
        if self.replicas < 1 or self.max_replicas < self.replicas:
            raise BundleError(
                f"replicas must be at least 1 and at most max replicas, got {self.replicas} "
                f"and {self.max_replicas}"
            )


def template_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),  # the one place the compiler reads files
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders Python, Dockerfiles and YAML, never HTML
    )
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env


def dns_name(name: str) -> str:
    """``name`` as a DNS-1123 label (Kubernetes object names, image repository names).

    Lower case, runs of anything but ``[a-z0-9]`` become one ``-``, at most 63
    characters, never empty (``"My Notebook (v2)"`` → ``"my-notebook-v2"``).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63].rstrip("-")
    return slug or "service"


def image_repository(image: str) -> str:
    """``registry:5000/team/app:1.2`` → ``registry:5000/team/app`` (tag and digest removed)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def check_image_tag(image: str) -> str:
    """Return ``image`` if it names an explicit tag or digest; else a :class:`BundleError`.

    Manifests must never say ``latest`` (implicitly or not): the cluster could then run
    different code on different nodes, and a rollback would not roll anything back.
    """
    if not image or any(c.isspace() for c in image):
        raise BundleError(f"invalid image reference {image!r}")
    tag = "@digest" if "@" in image else image[len(image_repository(image)) + 1 :]
    if not tag:
        raise BundleError(f"image {image!r} has no tag; give one, e.g. {image}:1.0.0 (never latest)")
    if tag == "latest":
        raise BundleError(f"image {image!r}: use a version or commit tag, not latest")
    return image


def _view_name(index: int, ep: Endpoint) -> str:
    words = [w[1:] if w.startswith(":") else w for w in ep.segments]
    slug = "_".join("".join(c if c.isalnum() else "_" for c in w) for w in words) or "root"
    return f"{ep.method.lower()}_{slug}_{index}"


def _endpoint_context(
    index: int, ep: Endpoint, mount: Mount | None = None, ident: str = ""
) -> dict[str, Any]:
    """An endpoint as the templates show it; in a mount, its path, rule and view name carry
    the mount's prefix and identifier (the same rule a blueprint at the prefix would have)."""
    prefix = mount.prefix if mount else ""
    return {
        "method": ep.method,
        "path": mount.full_path(ep) if mount else ep.path,
        "cells": ep.cells,
        "response_info": ep.response_info,
        "rule": prefix
        if prefix and ep.flask_rule == "/"
        else prefix + ep.flask_rule,  # /orders, not /orders/
        "view": (f"{ident}_" if ident else "") + _view_name(index, ep),
        "args": ", ".join(f"{p}: str" for p in ep.params),
        "params_dict": "{" + ", ".join(f"{json.dumps(p)}: {p}" for p in ep.params) + "}",
    }


def _identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for a mount in app.py (``"my-orders"`` → ``my_orders``), unique."""
    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "notebook"
    slug = f"n_{slug}" if slug[0].isdigit() else slug
    ident, n = slug, 1
    while ident in taken:
        n += 1
        ident = f"{slug}_{n}"
    taken.add(ident)
    return ident


def source_paths(mounts: Sequence[Mount]) -> list[str]:
    """Where each mount's notebook goes in a bundle: ``notebooks/<its file name>``, or
    ``notebooks/<n>/<its file name>`` for a second notebook of the same name (possible
    with ``--mount``). The file keeps its name, so the runtime's ``/_api/source`` finds it
    in the kernel's working directory (the file's folder), as for a served notebook."""
    paths: list[str] = []
    for n, mount in enumerate(mounts, start=1):
        path = f"notebooks/{mount.spec.notebook}"
        paths.append(f"notebooks/{n}/{mount.spec.notebook}" if path in paths else path)
    return paths


def _resources(options: BundleOptions, pools: int) -> dict[str, dict[str, str]]:
    """Pod resources derived from the pools (``pools``: a worker's kernels, over every
    notebook): see the constants above for the reasoning."""
    kernels = options.workers * pools
    cpu = options.workers * WORKER_CPU_MILLI + kernels * KERNEL_CPU_MILLI
    memory = options.workers * WORKER_MEMORY_MI + kernels * KERNEL_MEMORY_MI
    cpu_limit = kernels * 1000 + options.workers * 500
    return {
        "requests": {"cpu": f"{cpu}m", "memory": f"{memory}Mi"},
        "limits": {"cpu": f"{cpu_limit}m", "memory": f"{2 * memory}Mi"},
    }


def _timing(options: BundleOptions) -> dict[str, Any]:
    """Shutdown timing: requests in flight finish, then kernels stop, before any SIGKILL.

    The same :func:`~nb2svc.config.shutdown_timing` as ``nb2svc serve``: gunicorn's
    graceful timeout covers the request timeout (an in-flight request can run to its
    end), and the pod's grace period covers the preStop pause, the graceful timeout and
    the kernels' shutdown.
    """
    timing = shutdown_timing(options.request_timeout, options.graceful_timeout)
    return {
        "request_timeout": f"{options.request_timeout:g}",
        "graceful_timeout": timing.graceful,
        "prestop_seconds": PRESTOP_SECONDS,
        "termination_grace": timing.termination_grace(PRESTOP_SECONDS),
    }


def _deploy_env(options: BundleOptions) -> list[tuple[str, str]]:
    """``(NB2SVC_*, value)`` for every deploy option of the table, as the image and pods get them.

    The graceful timeout is written as the derived number (not ``auto``), so the image,
    the Deployment's grace period and gunicorn agree on one value.
    """
    graceful = shutdown_timing(options.request_timeout, options.graceful_timeout).graceful
    values = {o.name: getattr(options, o.name) for o in DEPLOY_OPTIONS} | {"graceful_timeout": graceful}
    lines = [(o.env, env_value(o, values[o.name])) for o in DEPLOY_OPTIONS if o.name not in SECRET_OPTIONS]
    for prefix, own in sorted(options.mounts.items()):
        lines += [(mount_variable(n, prefix), env_value(OPTIONS_BY_NAME[n], own[n])) for n in sorted(own)]
    return lines


def image_digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    return digest.hexdigest()[:12]


IMAGE_FILES = ("app.py", "gunicorn.conf.py", "service.json", "openapi.json", "notebook.ipynb")
#: A bundle of several notebooks copies these and ``notebooks/`` (every source) into the image.
MOUNTED_IMAGE_FILES = IMAGE_FILES[:-1]
K8S_FILES = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml", "kustomization.yaml")


def k8s_files(options: BundleOptions) -> tuple[str, ...]:
    """The ``k8s/`` manifests: with ``keda``, KEDA's ScaledObject replaces the HPA (KEDA
    creates the Deployment's one HPA from it; a second would fight it for the replica count)."""
    if not options.keda:
        return K8S_FILES
    return tuple("scaledobject.yaml" if f == "hpa.yaml" else f for f in K8S_FILES)


def render_bundle(
    spec: ServiceSpec,
    notebook_bytes: bytes,
    options: BundleOptions | None = None,
    runtime: Runtime | None = None,
) -> dict[str, bytes]:
    """Every bundle file as ``{relative path: content}``, without touching the disk.

    ``runtime`` defaults to this installation's (:func:`nb2svc.distribution.current_runtime`).
    """
    endpoints = [_endpoint_context(i, ep) for i, ep in enumerate(spec.endpoints)]
    service = {
        "app.py": ("app.py.j2", {"spec": _SpecView(spec, endpoints)}),
        "service.json": spec.to_json().encode(),
        "openapi.json": _json_bytes(openapi_document(spec)),
        "notebook.ipynb": notebook_bytes,
    }
    kernels = [{"kernel": spec.kernel.name, "notebook": spec.notebook, "prefix": ""}]
    context = {"spec": spec, "endpoints": endpoints, "image_files": IMAGE_FILES, "sources": ()}
    return _render(spec.name, service, context, kernels, options, runtime)


def render_mounted_bundle(
    mounts: Sequence[Mount],
    sources: Sequence[bytes],
    name: str,
    options: BundleOptions | None = None,
    runtime: Runtime | None = None,
) -> dict[str, bytes]:
    """The bundle of several notebooks served together, as ``nb2svc serve a.ipynb b.ipynb``
    would: ``mounts`` (checked with :func:`~nb2svc.compiler.mounts.check_mounts`) and
    each one's notebook bytes, in the same order; ``name`` names the service (image,
    Kubernetes objects). One image, one app, one set of manifests: see the module doc.
    """
    if not mounts or len(sources) != len(mounts):
        raise BundleError("a bundle of several notebooks needs every mount and its notebook's bytes")
    paths = source_paths(mounts)
    taken: set[str] = set()
    views = []
    for mount, path in zip(mounts, paths, strict=True):
        ident = _identifier(mount.name, taken)
        endpoints = [_endpoint_context(i, ep, mount, ident) for i, ep in enumerate(mount.spec.endpoints)]
        views.append(
            {
                "prefix": mount.prefix or "/",
                "mount": mount.prefix,
                "notebook": mount.spec.notebook,
                "kernel": mount.spec.kernel.name,
                "service": f"{ident}_service",
                "source": path,
                "stem": Path(path).stem,
                "endpoints": endpoints,
            }
        )
    notebooks = ", ".join(m.spec.notebook for m in mounts)
    service: dict[str, Any] = {
        "app.py": ("app.py.j2", {}),
        "service.json": mounts_to_json(list(zip(mounts, paths, strict=True))).encode(),
        "openapi.json": _json_bytes(mounted_openapi_document(mounts)),
        **dict(zip(paths, sources, strict=True)),
    }
    context = {
        "spec": _MountedView(name, notebooks),
        "mounts": views,
        "build_args": " ".join(f"--mount {m['prefix']}={m['notebook']}" for m in views),
        "image_files": MOUNTED_IMAGE_FILES,
        "sources": paths,
    }
    return _render(name, service, context, views, options, runtime)


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _render(
    service_name: str,
    service: dict[str, Any],
    specific: dict[str, Any],
    kernels: list[dict[str, Any]],
    options: BundleOptions | None,
    runtime: Runtime | None,
) -> dict[str, bytes]:
    """The files of one bundle, one notebook or several. ``service`` holds the files that
    differ (a ``(template, extra context)`` pair, or the bytes); ``specific`` the context
    that does (``spec`` as the templates see it, ``image_files``, ``sources``, ...);
    ``kernels`` each notebook's kernel, for the Dockerfile's note on what the image lacks.
    """
    if runtime is None:
        runtime = current_runtime()
    options = options or BundleOptions()
    unknown = sorted(set(options.mounts) - {k.get("mount", "") for k in kernels})
    if unknown:
        raise BundleError(f"per-notebook settings for {', '.join(unknown)}, which is not mounted")
    # Pods are sized for every pool at its MAX (``--pool-size MIN..MAX``): a pod that only
    # fits MIN kernels would be OOM-killed or throttled exactly when the pools grow.
    pools = sum(
        pool_bounds(options.mounts.get(k.get("mount", ""), {}).get("pool_size", options.pool_size))[1]
        for k in kernels
    )
    env = template_environment()
    name = dns_name(service_name)
    context: dict[str, Any] = {
        "mounted": "mounts" in specific,
        "name": name,
        "version": __version__,
        "requirements": runtime.requirements,
        "wheel": runtime.wheel_name,
        "dumb_init": DUMB_INIT,
        "uid": APP_UID,
        "image_kernels": IMAGE_KERNELS,
        "missing_kernels": [k for k in kernels if k["kernel"] not in IMAGE_KERNELS],
        "k8s": options.k8s,
        "k8s_resources": [f for f in k8s_files(options) if f != "kustomization.yaml"],
        "autoscaler": "scaledobject.yaml" if options.keda else "hpa.yaml",
        "keda_threshold": options.workers * pools,
        "options": options,
        "base_image": options.base_image or DEFAULT_BASE_IMAGE.format(python=runtime.python),
        "python": runtime.python,
        "gh": lambda expression: "${{ " + expression + " }}",  # a GitHub Actions expression
        "notebooks": len(kernels),
        "kernels_per_pod": options.workers * pools,
        "kernels_per_worker": pools,
        "uneven_pools": any("pool_size" in own for own in options.mounts.values()),
        "elastic_pools": any(
            pool_bounds(size)[0] < pool_bounds(size)[1]
            for size in (options.pool_size, *(own.get("pool_size", 1) for own in options.mounts.values()))
        ),
        "resources": _resources(options, pools),
        "deploy_env": _deploy_env(options),
        "store_hint": redact(options.store),
        "base": options.base_url,
        **_timing(options),
        **specific,
    }

    def render(template: str, **extra: Any) -> bytes:
        return env.get_template(template).render({**context, **extra}).encode()

    files = {
        path: render(content[0], **content[1]) if isinstance(content, tuple) else content
        for path, content in service.items()
    }
    files.update(
        {
            "requirements.txt": render("requirements.txt.j2"),
            f"wheels/{runtime.wheel_name}": runtime.wheel,
            "gunicorn.conf.py": render("gunicorn.conf.py.j2"),
            "Dockerfile": render("Dockerfile.j2"),
            ".dockerignore": render("dockerignore.j2"),
        }
    )
    image = options.image or f"{name}:{image_digest(files)}"
    context["image"] = check_image_tag(image)
    context["image_repository"] = image_repository(image)
    files["README.md"] = render("README.md.j2")
    files["Makefile"] = render("ci/Makefile.j2")
    files[".github/workflows/deploy.yml"] = render("ci/deploy.yml.j2")
    if options.k8s:
        for manifest in k8s_files(options):
            files[f"k8s/{manifest}"] = render(f"k8s/{manifest}.j2")
    return files


class _SpecView:
    """The spec as app.py.j2 sees it: endpoints carry their route and view names."""

    def __init__(self, spec: ServiceSpec, endpoints: list[dict[str, Any]]) -> None:
        self.name = spec.name
        self.notebook = spec.notebook
        self.kernel = spec.kernel
        self.endpoints = endpoints


@dataclass(frozen=True)
class _MountedView:
    """``spec`` as the shared templates see a bundle of several notebooks: its name, and its
    notebooks listed where one notebook's file name would be."""

    name: str
    notebook: str


def docker_build_command(output: Path, image: str) -> str:
    """The exact command that builds the bundle's image (``podman build`` takes the same)."""
    return f"docker build --tag {image} {output}"
