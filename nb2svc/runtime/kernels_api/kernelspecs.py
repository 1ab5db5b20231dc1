"""Kernel spec models and resource files, shaped as Jupyter Server serves them."""

from __future__ import annotations

import glob
import os
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel


def _model(name: str, spec: dict[str, Any], resource_dir: str, base: str) -> dict[str, Any]:
    resources: dict[str, str] = {}
    for resource in ("kernel.js", "kernel.css"):
        if os.path.exists(os.path.join(resource_dir, resource)):
            resources[resource] = f"{base}/kernelspecs/{name}/{resource}"
    for logo in sorted(glob.glob(os.path.join(glob.escape(resource_dir), "logo-*"))):
        filename = os.path.basename(logo)
        resources[os.path.splitext(filename)[0]] = f"{base}/kernelspecs/{name}/{filename}"
    return {"name": name, "spec": spec, "resources": resources}


def all_models(specs: KernelSpecManager, default: str, base: str) -> dict[str, Any]:
    """``GET /api/kernelspecs``: ``{"default": name, "kernelspecs": {name: model}}``."""
    models = {
        name: _model(name, found["spec"], found["resource_dir"], base)
        for name, found in sorted(specs.get_all_specs().items())
    }
    return {"default": default, "kernelspecs": models}


def one_model(specs: KernelSpecManager, name: str, base: str) -> dict[str, Any] | None:
    """``GET /api/kernelspecs/{name}``, or ``None`` if there is no such spec."""
    try:
        spec = specs.get_kernel_spec(name)
    except NoSuchKernel:
        return None
    return _model(name, spec.to_dict(), spec.resource_dir, base)


def resource_dir(specs: KernelSpecManager, name: str) -> str | None:
    try:
        return specs.get_kernel_spec(name).resource_dir
    except NoSuchKernel:
        return None
