"""Render a :class:`ServiceSpec` into a self-contained service bundle directory.

Files written (all deterministic: building twice gives byte-identical output):

- ``app.py``: a readable generated Flask app, one route declaration per endpoint
- ``service.json``: the ServiceSpec (the only contract with the runtime)
- ``openapi.json``: OpenAPI 3.1; ``notebook.ipynb``: the source notebook, verbatim
- ``requirements.txt``, ``gunicorn.conf.py``, ``Dockerfile``, ``.dockerignore``, ``README.md``

Like the rest of the compiler this never starts a kernel; it only reads the notebook
file and writes the output directory.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nb2svc._version import __version__
from nb2svc.compiler.openapi import openapi_document
from nb2svc.compiler.spec import Endpoint, ServiceSpec

DEFAULT_BASE_IMAGE = "python:3.11-slim"
DEFAULT_PORT = 8888


class BundleError(Exception):
    """The bundle cannot be written (e.g. the output directory is not ours to replace)."""


@dataclass(frozen=True)
class BundleOptions:
    base_image: str = DEFAULT_BASE_IMAGE
    port: int = DEFAULT_PORT


def templates_dir() -> Path:
    """The templates shipped with nb2svc (package data ``nb2svc.templates``)."""
    try:
        path = Path(str(resources.files("nb2svc.templates")))
        if (path / "app.py.j2").exists():
            return path
    except ModuleNotFoundError:
        pass
    source_tree = Path(__file__).resolve().parents[2] / "templates"
    if (source_tree / "app.py.j2").exists():
        return source_tree
    raise BundleError("nb2svc's templates are missing from this installation; reinstall nb2svc")


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(templates_dir())),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - renders Python, Dockerfiles and YAML, never HTML
    )


def _view_name(index: int, ep: Endpoint) -> str:
    words = [w[1:] if w.startswith(":") else w for w in ep.segments]
    slug = "_".join("".join(c if c.isalnum() else "_" for c in w) for w in words) or "root"
    return f"{ep.method.lower()}_{slug}_{index}"


def _endpoint_context(index: int, ep: Endpoint) -> dict[str, Any]:
    rule = "/".join(f"<{s[1:]}>" if s.startswith(":") else s for s in ep.path.split("/"))
    return {
        "method": ep.method,
        "path": ep.path,
        "cells": ep.cells,
        "response_info": ep.response_info,
        "rule": rule,
        "view": _view_name(index, ep),
        "args": ", ".join(f"{p}: str" for p in ep.params),
        "params_dict": "{" + ", ".join(f"{json.dumps(p)}: {p}" for p in ep.params) + "}",
    }


def _kernel_requirements(spec: ServiceSpec) -> list[str]:
    if spec.kernel.language.lower() != "python":
        return []
    try:
        return [f"ipykernel=={metadata.version('ipykernel')}"]
    except metadata.PackageNotFoundError:
        return ["ipykernel"]


def render_bundle(
    spec: ServiceSpec, notebook_bytes: bytes, options: BundleOptions | None = None
) -> dict[str, bytes]:
    """Every bundle file as ``{relative path: content}``, without touching the disk."""
    options = options or BundleOptions()
    env = _environment()
    context = {
        "spec": spec,
        "version": __version__,
        "endpoints": [_endpoint_context(i, ep) for i, ep in enumerate(spec.endpoints)],
        "requirements": _kernel_requirements(spec),
        "base_image": options.base_image,
        "port": options.port,
    }

    def render(name: str) -> bytes:
        return env.get_template(name).render(**context).encode()

    app_context = dict(context, spec=_SpecView(spec, context["endpoints"]))
    files = {
        "app.py": env.get_template("app.py.j2").render(**app_context).encode(),
        "service.json": spec.to_json().encode(),
        "openapi.json": (json.dumps(openapi_document(spec), indent=2, sort_keys=True) + "\n").encode(),
        "notebook.ipynb": notebook_bytes,
        "requirements.txt": render("requirements.txt.j2"),
        "gunicorn.conf.py": render("gunicorn.conf.py.j2"),
        "Dockerfile": render("Dockerfile.j2"),
        ".dockerignore": render("dockerignore.j2"),
        "README.md": render("README.md.j2"),
    }
    return files


class _SpecView:
    """The spec as app.py.j2 sees it: endpoints carry their route and view names."""

    def __init__(self, spec: ServiceSpec, endpoints: list[dict[str, Any]]) -> None:
        self.name = spec.name
        self.notebook = spec.notebook
        self.kernel = spec.kernel
        self.endpoints = endpoints


def write_bundle(
    spec: ServiceSpec,
    notebook: Path,
    output: Path,
    *,
    force: bool = False,
    options: BundleOptions | None = None,
) -> list[Path]:
    """Write the bundle for ``spec`` into ``output``; returns the written paths.

    An existing directory is replaced only if it is empty, is an earlier bundle
    (has ``service.json``), or ``force`` is set: nothing else of the user's is lost.
    """
    files = render_bundle(spec, Path(notebook).read_bytes(), options)
    if output.exists():
        if not output.is_dir():
            raise BundleError(f"{output} exists and is not a directory")
        is_bundle = (output / "service.json").exists()
        if any(output.iterdir()) and not (is_bundle or force):
            raise BundleError(
                f"{output} is not empty and is not an nb2svc bundle; pass --force to replace it"
            )
        shutil.rmtree(output)
    written = []
    for relative, content in sorted(files.items()):
        path = output / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written
