"""``nb2svc build``'s steps: resolve what is baked, compile the notebooks, write the bundle.

The command in ``cli.py`` parses its flags and calls :func:`build_bundle`; the bundle's
files are rendered by :mod:`nb2svc.compiler.bundle` and written by :mod:`nb2svc.build`.
Errors are click errors (exit 2 for usage and compile errors, 1 for a bundle that cannot
be written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from nb2svc import targets as target_files
from nb2svc.config import (
    DEPLOY_OPTIONS,
    load_config_file,
    load_mount_tables,
    match_mount_tables,
    settings_from_env,
)
from nb2svc.targets import compile_target, os_reason

DEPLOY_NAMES = frozenset(o.name for o in DEPLOY_OPTIONS)


def build_bundle(
    *,
    targets: tuple[Path, ...],
    mount_specs: tuple[str, ...],
    config_file: Path | None,
    output: Path | None,
    comment_prefix: str | None,
    force: bool,
    as_json: bool,
    base_image: str | None,
    docker_tag: str | None,
    k8s: bool,
    keda: bool,
    prometheus_url: str | None,
    requirements_file: Path | None,
    replicas: int | None,
    max_replicas: int,
    kernel_gateway: bool,
    kernel_images: tuple[str, ...],
    namespace: str | None,
    **flags: Any,
) -> None:
    """``nb2svc build`` (see its help): compile ``targets`` into a bundle directory and say so;
    ``flags`` are the baked settings options (``None``: not given)."""
    from nb2svc.build import write_bundle, write_mounted_bundle
    from nb2svc.compiler.bundle import BundleError, BundleOptions

    if kernel_gateway:
        if (
            targets
            or mount_specs
            or requirements_file
            or config_file
            or comment_prefix
            or keda
            or prometheus_url
        ):
            raise click.UsageError(
                "--kernels builds a kernel gateway: no TARGET, --mount, --requirements, --config, "
                "--comment-prefix or --keda"
            )
        gateway = dict(output=output, force=force, as_json=as_json, base_image=base_image, image=docker_tag)
        build_kernels_bundle(
            replicas=replicas, kernel_images=kernel_images, namespace=namespace, **gateway, **flags
        )
        return
    if kernel_images or namespace:
        raise click.UsageError("--kernel-image and --namespace shape a kernel gateway: add --kernels")
    replicas = 2 if replicas is None else replicas
    if (keda or prometheus_url) and not k8s:
        raise click.UsageError("--keda and --prometheus-url shape the Kubernetes manifests: add --k8s")
    if prometheus_url and not keda:
        raise click.UsageError("--prometheus-url is where --keda's ScaledObject asks: add --keda")
    if not targets and not mount_specs:
        raise click.UsageError("Missing argument 'TARGET...' (a notebook, several, or a folder of them)")
    given = frozenset(name for name, value in flags.items() if value is not None)
    settings, cell_parser, tables = _baked_settings(config_file, flags)
    own: dict[str, dict[str, Any]] = {}
    if target_files.several(targets, mount_specs):
        mounts = target_files.notebook_mounts(targets, mount_specs, comment_prefix, cell_parser)
        name = _bundle_name(targets, [m for m, _ in mounts])
        source = ", ".join(str(nb) for _, nb in mounts)
        own = _own_tables(tables, [(m.prefix, nb.stem) for m, nb in mounts], given)
    elif tables:
        raise click.UsageError(
            f"{config_file}: [mounts] tables set options per notebook of a bundle of several; "
            "for one notebook, set them at the top level"
        )
    else:
        if targets[0].is_dir():  # a notebook folder counts as several: this is a bundle
            raise click.UsageError(f"{targets[0]} is a bundle, not a notebook; build from its notebooks")
        spec = compile_target(targets[0], comment_prefix, cell_parser)
        mounts, name, source = [], spec.name, str(targets[0])
    specs = [m.spec for m, _ in mounts] or [spec]
    _warn_missing_kernels(specs)
    from nb2svc.compiler.mounts import Mount

    for problem in target_files.public_path_problems([m for m, _ in mounts] or [Mount("", spec)]):
        click.echo(f"warning: {problem}; such a bundle does not start with --static-path", err=True)
    output = output or Path("build") / name
    deploy = {o.name: getattr(settings, o.name) for o in DEPLOY_OPTIONS}
    try:
        options = BundleOptions(
            image=docker_tag,
            k8s=k8s,
            keda=keda,
            **({"prometheus_url": prometheus_url} if prometheus_url else {}),
            requirements=_requirement_lines(requirements_file),
            replicas=replicas,
            max_replicas=max_replicas,
            mounts=own,
            **deploy,
        )
    except BundleError as exc:
        raise click.UsageError(str(exc)) from None
    if base_image:
        options = dataclasses.replace(options, base_image=base_image)
    with _writing(output):
        if mounts:
            written = write_mounted_bundle(mounts, name, output, force=force, options=options)
        else:
            written = write_bundle(spec, targets[0], output, force=force, options=options)
    endpoints = sum(len(s.endpoints) for s in specs)
    setup = sum(len(s.setup) for s in specs)
    summary = f" from {source}: {endpoints} endpoints, {setup} setup cells"
    _say_built(output, written, docker_tag, as_json, summary)


#: The settings a kernel gateway's bundle takes; the other baked options are API mode's.
GATEWAY_SETTINGS = frozenset({"port", "base_url", "store"})


def build_kernels_bundle(
    *,
    output: Path | None,
    force: bool,
    as_json: bool,
    base_image: str | None,
    image: str | None,
    replicas: int | None,
    kernel_images: tuple[str, ...],
    namespace: str | None,
    **flags: Any,
) -> None:
    """``nb2svc build --kernels``: write a kernel gateway's bundle (image and k8s/) and say so."""
    from nb2svc.build import write_files
    from nb2svc.compiler.bundle import BundleError
    from nb2svc.compiler.kernels_bundle import KernelBundleOptions, parse_kernel_image, render_kernels_bundle

    given = sorted(
        name for name, value in flags.items() if value is not None and name not in GATEWAY_SETTINGS
    )
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise click.UsageError(
            f"{flag} is an API-mode setting; a --kernels bundle takes --port, --base-url, --store"
        )
    settings = {name: flags[name] for name in GATEWAY_SETTINGS if flags.get(name) is not None}
    try:
        pairs = tuple(parse_kernel_image(value) for value in kernel_images)
        options = KernelBundleOptions(
            base_image=base_image,
            image=image,
            replicas=1 if replicas is None else replicas,
            **({"namespace": namespace} if namespace else {}),
            **({"kernel_images": pairs} if pairs else {}),
            **settings,
        )
    except BundleError as exc:
        raise click.UsageError(str(exc)) from None
    output = output or Path("build") / options.name
    with _writing(output):
        written = write_files(render_kernels_bundle(options), output, force=force)
    kernels = ", ".join(name for name, _ in options.kernel_images)
    _say_built(
        output,
        written,
        image,
        as_json,
        f": a kernel gateway, {options.replicas} replica(s), kernels {kernels}",
    )


@contextlib.contextmanager
def _writing(output: Path) -> Iterator[None]:
    """A bundle that cannot be written is one line and exit 1, never a traceback."""
    from nb2svc.compiler.bundle import BundleError

    try:
        yield
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the bundle to {output}: {os_reason(exc)}") from None


def _say_built(output: Path, written: list[Path], image: str | None, as_json: bool, summary: str) -> None:
    """The one-line summary (``built DIR/SUMMARY, N files``) and the image's build command,
    or all of it as JSON on stdout with ``--json``."""
    from nb2svc.compiler.bundle import docker_build_command

    command = docker_build_command(output, image) if image else None
    if as_json:
        files = [str(p) for p in written]
        click.echo(json.dumps({"bundle": str(output), "files": files, "docker_build": command}))
        return
    click.echo(f"built {output}/{summary}, {len(written)} files")
    if command:
        click.echo(command)


def _baked_settings(config_file: Path | None, flags: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """What is baked: the deploy options of the flags and the config file (not this
    machine's ``NB2SVC_*`` variables), the cell parser, and the file's ``[mounts]`` tables;
    the file's other options are named in a warning."""
    try:
        file_values = load_config_file(config_file) if config_file else {}
        tables = load_mount_tables(config_file) if config_file else {}
        baked = {k: v for k, v in file_values.items() if k in DEPLOY_NAMES}
        settings = settings_from_env({}, file_values=baked, **{**flags, "cell_parser": None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cell_parser = target_files.cell_parser_setting(flags["cell_parser"] or file_values.get("cell_parser"))
    unbaked = sorted(set(file_values) - set(baked) - {"cell_parser"})
    if unbaked:
        click.echo(
            f"warning: {config_file}: not baked into the bundle (set them as NB2SVC_* where it runs): "
            + ", ".join(unbaked),
            err=True,
        )
    return settings, cell_parser, tables


def _own_tables(
    tables: dict[str, Any], mounts: list[tuple[str, str]], given: frozenset[str]
) -> dict[str, dict[str, Any]]:
    """Each mount's ``[mounts]`` table by prefix, without the options a flag sets for all."""
    try:
        matched = match_mount_tables(tables, mounts)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    own = {p: {n: v for n, v in t.items() if n not in given} for p, t in matched.items()}
    return {p: t for p, t in own.items() if t}


def _bundle_name(targets: tuple[Path, ...], mounts: list[Any]) -> str:
    """A bundle of several notebooks is named after their folder when one folder is given,
    else after the notebooks (``orders-billing``): the image, Kubernetes objects, output."""
    if len(targets) == 1 and targets[0].is_dir():
        return targets[0].resolve().name
    return "-".join(m.name for m in mounts)


def _warn_missing_kernels(specs: list[Any]) -> None:
    """Say at build time which notebooks need a kernel the image will not have (the
    Dockerfile says it too): only ipykernel's comes with nb2svc's pins."""
    from nb2svc.compiler.bundle import IMAGE_KERNELS

    for spec in specs:
        if spec.kernel.name not in IMAGE_KERNELS:
            click.echo(
                f"warning: {spec.notebook} needs the {spec.kernel.name} kernel, which the image does not "
                "have: add it to the image (see the Dockerfile) or pass --base-image with it",
                err=True,
            )


def _requirement_lines(path: Path | None) -> tuple[str, ...]:
    """The requirement lines of ``path``, without comments and blank lines."""
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8", param_hint="--requirements"
        ) from None
    except OSError as exc:
        raise click.BadParameter(os_reason(exc), param_hint="--requirements") from None
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def image_tag(value: str | None) -> str | None:
    from nb2svc.compiler.bundle import BundleError, check_image_tag

    try:
        return check_image_tag(value) if value is not None else None
    except BundleError as exc:
        raise click.BadParameter(str(exc), param_hint="--docker-tag") from None
