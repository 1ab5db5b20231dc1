"""The serve plan: everything a worker needs, resolved once, before the fork.

``nb2svc serve`` builds one :class:`ServePlan` in gunicorn's master from its flags, the
environment, the config file, the bundle and the seed notebook; a generated bundle's
``app.py`` run by plain gunicorn builds one from its environment
(:func:`bundle_plan`). Either way the plan is frozen and typed, and the worker builds
its app from it alone (:func:`nb2svc.runtime.entry.build_app`): no worker reads a
setting from the environment again, and the token crosses the fork inside the plan
rather than in a variable another process could read.

Kept free of runtime imports: this module is read in the master, which must not import
zmq, gevent or jupyter_client before the workers fork (RUNTIME-NOTES).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nb2svc.compiler.mounts import Mount, mounts_from_json
from nb2svc.config import Settings, settings_for_mounts, settings_from_env
from nb2svc.runtime.kernels_api.seed import Seed
from nb2svc.runtime.secret import loose_permissions, read_token_file

#: jupyter_client's ``NATIVE_KERNEL_NAME`` (not imported: this module runs in the master).
NATIVE_KERNEL = "python3"


@dataclass(frozen=True)
class EdgeLimits:
    """What the HTTP edge of a worker enforces before any app code runs (see :mod:`nb2svc.runtime.worker`)."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    max_body_size: int = 10 * 1024 * 1024
    max_message_size: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            header_timeout=settings.header_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            max_body_size=settings.max_body_size,
            max_message_size=settings.max_message_size,
        )


@dataclass(frozen=True)
class KernelNames:
    """Kernel mode's kernel specs: for a request that names none, for prespawned and warm
    kernels, and the one every kernel must use (``""``: none forced)."""

    default: str
    warm: str
    forced: str = ""

    def for_request(self, requested: str | None) -> str:
        """``--force-kernel`` if set, else the request's, else the default."""
        return self.forced or requested or self.default


def kernel_names(settings: Settings, seed_kernel: str | None = None) -> KernelNames:
    """The one place kernel mode decides kernel names (as Kernel Gateway does).

    ``seed_kernel`` is the ``--seed`` notebook's own spec. The seed runs on kernels of
    :func:`seed_kernel_name`; the default is ``--force-kernel``, ``--default-kernel``,
    ``--kernel-name``, the seed's, then jupyter_client's native kernel; prespawned and
    warm kernels are the forced one, else the seed's, else the default.
    """
    seeded = seed_kernel_name(settings, seed_kernel) if seed_kernel else ""
    default = (
        settings.force_kernel or settings.default_kernel or settings.kernel_name or seeded or NATIVE_KERNEL
    )
    return KernelNames(
        default=default, warm=settings.force_kernel or seeded or default, forced=settings.force_kernel
    )


def seed_kernel_name(settings: Settings, notebook_kernel: str) -> str:
    """The spec a ``--seed`` notebook's cells are for: ``--force-kernel``, else the notebook's."""
    return settings.force_kernel or notebook_kernel


@dataclass(frozen=True)
class MountPlan:
    """One notebook of API mode: where it is mounted, where its kernels work, its own settings."""

    mount: Mount
    cwd: Path | None
    settings: Settings

    @property
    def kernel_name(self) -> str:
        """``--kernel-name`` (or the mount's own), else the notebook's."""
        return self.settings.kernel_name or self.mount.spec.kernel.name


@dataclass(frozen=True)
class ReloadPlan:
    """``--reload``: the notebook watched, the other files watched, how it is compiled."""

    notebook: Path
    extra: tuple[Path, ...] = ()
    comment_prefix: str | None = None


@dataclass(frozen=True)
class ServePlan:
    """How one server runs: its mode, settings (token resolved), mounts, bundle, reload, seed.

    ``bundle`` set: the worker runs that bundle's ``app.py`` and hands it this plan.
    """

    mode: str  # "api" or "kernels"
    settings: Settings
    mounts: tuple[MountPlan, ...] = ()
    bundle: Path | None = None
    reload: ReloadPlan | None = None
    seed: Seed | None = None
    kernels: KernelNames = field(default_factory=lambda: KernelNames(NATIVE_KERNEL, NATIVE_KERNEL))

    @property
    def token(self) -> str:
        return self.settings.token

    @property
    def edge(self) -> EdgeLimits:
        return EdgeLimits.from_settings(self.settings)

    @property
    def several(self) -> bool:
        """Several notebooks (or one at a prefix): one "ready" line for all, blueprints by prefix."""
        return len(self.mounts) > 1


def api_plan(
    settings: Settings,
    mounts: Sequence[tuple[Mount, Path | None]],
    own: Mapping[str, Settings] | None = None,
    *,
    bundle: Path | None = None,
    reload: ReloadPlan | None = None,
) -> ServePlan:
    """API mode's plan: each ``(mount, working directory)`` with its own settings from
    ``own`` (by prefix) where it has them."""
    own = own or {}
    planned = tuple(MountPlan(m, cwd, own.get(m.prefix, settings)) for m, cwd in mounts)
    return ServePlan("api", settings, planned, bundle=bundle, reload=reload)


def kernels_plan(settings: Settings, seed: Seed | None) -> ServePlan:
    """Kernel mode's plan: the seed and the kernel names decided once."""
    return ServePlan(
        "kernels", settings, seed=seed, kernels=kernel_names(settings, seed and seed.kernel_name)
    )


def with_token(settings: Settings, warn: Callable[[str], None] | None = None) -> Settings:
    """``settings`` with ``--token-file`` read into ``token`` (``ValueError`` if both are given);
    ``warn`` is told when the file is open to its group or others (it is still used)."""
    if settings.token and settings.token_file:
        raise ValueError("give either --token or --token-file, not both")
    if settings.token_file:
        token = read_token_file(settings.token_file)
        warning = loose_permissions(settings.token_file)
        if warning and warn is not None:
            warn(warning)
        return settings.replace(token=token)
    return settings


def is_mounted(mounts: Sequence[Mount]) -> bool:
    """Whether notebooks are mounted (several, or one at a prefix: a bundle built from
    several): then each has its own ``NB2SVC_<OPTION>__<MOUNT>`` settings."""
    return len(mounts) > 1 or bool(mounts[0].prefix)


def bundle_plan(directory: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> ServePlan:
    """The plan of a bundle run by plain gunicorn (its image's ``CMD``), from its
    ``service.json`` and the environment (``NB2SVC_*``, ``NB2SVC_<OPTION>__<MOUNT>``).

    Read once per worker, when the bundle's ``app.py`` is imported; its
    ``gunicorn.conf.py`` has checked the same variables in the master already.
    """
    here = Path(directory)
    mounts = mounts_from_json((here / "service.json").read_text(encoding="utf-8"))
    settings = with_token(settings_from_env(environ), warn=logging.getLogger("nb2svc").warning)
    located = [(mount, (here / source).parent) for mount, source in mounts]
    own = (
        settings_for_mounts(settings, {}, [(m.prefix, Path(s).stem) for m, s in mounts], environ=environ)
        if is_mounted([m for m, _ in mounts])
        else {}
    )
    return api_plan(settings, located, own)


__all__ = [
    "NATIVE_KERNEL",
    "EdgeLimits",
    "KernelNames",
    "MountPlan",
    "ReloadPlan",
    "ServePlan",
    "api_plan",
    "bundle_plan",
    "is_mounted",
    "kernel_names",
    "kernels_plan",
    "seed_kernel_name",
    "with_token",
]
