"""The ``nb2svc`` command: build | serve | routes | test.

Exit codes: 0 success, 1 operational failure (a port in use, a worker that could not
boot), 2 usage or compile error. Errors go to stderr without a traceback unless
``--debug``; machine output (``--json``) goes to stdout only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nb2svc._version import __version__
from nb2svc.config import (
    DEPLOY_OPTIONS,
    MOUNT_OPTIONS,
    OPTIONS,
    OPTIONS_BY_NAME,
    Option,
    Settings,
    env_value,
    load_config_file,
    load_mount_tables,
    match_mount_tables,
    mount_variable,
    parse_value,
    settings_for_mounts,
    settings_from_env,
    shutdown_timing,
)

BUNDLE_MARKER = "service.json"
DEPLOY_NAMES = frozenset(o.name for o in DEPLOY_OPTIONS)
#: The serve options ``nb2svc test`` takes for the service it starts (and its token).
TEST_OPTIONS = (
    "cell_parser",
    "pool_size",
    "request_timeout",
    "kernel_name",
    "kernel_start_timeout",
    "transport",
    "env_allow",
    "token",
    "token_file",
)


class CompileFailed(click.ClickException):
    """A compile error, printed as the compiler's problem lines, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


def _skip_slow_format_checkers() -> None:
    """Keep jsonschema from compiling an IRI grammar we never use (about 0.7 s per start).

    nbformat imports jsonschema, whose format checkers import ``rfc3987_syntax`` when
    it is installed (Jupyter Server pulls it in); that import builds a lark grammar.
    The notebook schema uses no IRI formats, so this process does without it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


def _compile(notebook: Path, comment_prefix: str | None, cell_parser: str = "default"):
    _skip_slow_format_checkers()
    from nb2svc.compiler import CompileError, compile_notebook

    try:
        spec = compile_notebook(notebook, comment_prefix=comment_prefix, cell_parser=cell_parser)
    except CompileError as exc:
        raise CompileFailed(f"error: {notebook} cannot be compiled:\n" + str(exc)) from None
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    return spec


def _cell_parser(flag: str | None) -> str:
    """``--cell-parser`` of ``build`` and ``routes``: the flag, else ``NB2SVC_CELL_PARSER``,
    else Kernel Gateway's ``KG_CELL_PARSER`` (how the notebook is read, not a deploy setting)."""
    option = OPTIONS_BY_NAME["cell_parser"]
    raw = flag if flag is not None else os.environ.get(option.env, os.environ.get(option.kg_alias or ""))
    try:
        return parse_value(option, raw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


#: Kernel Gateway's flag names that mean the same (issue 10).
FLAG_ALIASES = {"host": ("--ip",)}


def _option_decorators(
    mode: str, only: tuple[str, ...] | None = None, defaults: dict[str, Any] | None = None
) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """Click options generated from the settings table (values resolved and checked later,
    by :func:`~nb2svc.config.settings_from_env`). ``only`` picks options by name;
    ``defaults`` shows another default where a command has its own (``nb2svc test``)."""
    defaults = defaults or {}

    def decorator(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        env_help = option.env + (f", {option.kg_alias}" if option.kg_alias else "")
        shown = defaults.get(option.name, option.default_text)
        help_text = f"{option.help}  [default: {shown}; env: {env_help}]"
        click_type: Any = (
            click.Choice(option.choices)
            if option.choices
            else (str if option.type in (list, str) or option.words else option.type)
        )
        if option.type is bool:  # --name/--no-name; None when not given, so env vars still apply
            flags = f"{option.flag}/--no-{option.flag[2:]}"
            return click.option(flags, option.name, default=None, help=help_text)
        names = (option.flag, *FLAG_ALIASES.get(option.name, ()))
        return click.option(*names, option.name, type=click_type, default=None, help=help_text)

    chosen = (o for o in OPTIONS if (mode in o.modes or mode == "all") and (only is None or o.name in only))
    return [decorator(o) for o in chosen]


def settings_options(
    mode: str, only: tuple[str, ...] | None = None, defaults: dict[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for deco in reversed(_option_decorators(mode, only, defaults)):
            fn = deco(fn)
        return fn

    return apply


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="nb2svc")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Compile Jupyter notebooks into HTTP microservices, and serve them on warm kernels."""
    ctx.obj = {"debug": debug}


@main.command()
@click.argument("targets", metavar="TARGET...", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--mount",
    "mount_specs",
    multiple=True,
    metavar="PREFIX=NOTEBOOK",
    help="Bundle NOTEBOOK mounted under PREFIX (repeatable), as for 'nb2svc serve'.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle directory to write.  [default: build/<notebook name>; several notebooks: "
    "build/<folder name>, or build/<notebook names joined by ->]",
)
@click.option(
    "--comment-prefix", default=None, help="Annotation comment prefix (default: from the kernel language)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing output directory, even one holding files this build would not write again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the list of written files as JSON on stdout.")
@click.option("--base-image", default=None, help="FROM image of the Dockerfile.  [default: a slim Python]")
@click.option(
    "--docker-tag",
    default=None,
    callback=lambda ctx, param, value: _image_tag(value),
    help="Image name with an explicit tag (never latest), used by the Makefile and k8s/; "
    "also prints the docker build command.  [default: <name>:<digest of the image's files>]",
)
@click.option("--k8s", is_flag=True, help="Also write Kubernetes manifests to k8s/ (kubectl apply -k).")
@click.option(
    "--requirements",
    "requirements_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The notebook's own packages (a pip requirements file, best pinned) to install in the image.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Fewest pods (the HorizontalPodAutoscaler's floor; with --k8s).",
)
@click.option(
    "--max-replicas",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Most pods the HorizontalPodAutoscaler may run (with --k8s).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML or JSON settings file, as for 'nb2svc serve': its options below are baked like "
    "the flags (a flag wins), and with several notebooks its [mounts] tables as each notebook's "
    "NB2SVC_*__<MOUNT> values.",
)
@settings_options("all", only=(*(o.name for o in DEPLOY_OPTIONS), "cell_parser"))
def build(
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
    requirements_file: Path | None,
    replicas: int,
    max_replicas: int,
    **flags: Any,
) -> None:
    """Compile TARGET into a self-contained service bundle directory.

    TARGET is a notebook; several notebooks (or a folder of them, or --mount
    PREFIX=NOTEBOOK) make one bundle that serves them together as 'nb2svc serve' would,
    each at /<its file stem> or its --mount prefix with its own kernels: one image, one
    app, one set of manifests. Clashing routes or prefixes are refused, naming the cells.

    The serve options below are baked into the image and manifests as NB2SVC_*
    defaults (a container's environment still overrides them); they also size the
    pod's resources and its shutdown grace period. Only flags and --config count here,
    not the NB2SVC_* variables of the machine that builds.
    """
    from nb2svc.build import write_bundle, write_mounted_bundle
    from nb2svc.compiler.bundle import BundleError, BundleOptions, docker_build_command

    if not targets and not mount_specs:
        raise click.UsageError("Missing argument 'TARGET...' (a notebook, several, or a folder of them)")
    given = frozenset(name for name, value in flags.items() if value is not None)
    try:
        file_values = load_config_file(config_file) if config_file else {}
        tables = load_mount_tables(config_file) if config_file else {}
        baked = {k: v for k, v in file_values.items() if k in DEPLOY_NAMES}
        settings = settings_from_env({}, file_values=baked, **{**flags, "cell_parser": None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cell_parser = _cell_parser(flags["cell_parser"] or file_values.get("cell_parser"))
    unbaked = sorted(set(file_values) - set(baked) - {"cell_parser"})
    if unbaked:
        click.echo(
            f"warning: {config_file}: not baked into the bundle (set them as NB2SVC_* where it runs): "
            + ", ".join(unbaked),
            err=True,
        )
    own: dict[str, dict[str, Any]] = {}
    if _several(targets, mount_specs):
        mounts = _mounts(targets, mount_specs, comment_prefix, cell_parser)
        name = _bundle_name(targets, [m for m, _ in mounts])
        source = ", ".join(str(nb) for _, nb in mounts)
        try:
            matched = match_mount_tables(tables, [(m.prefix, nb.stem) for m, nb in mounts])
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        own = {p: {n: v for n, v in t.items() if n not in given} for p, t in matched.items()}
        own = {p: t for p, t in own.items() if t}
    elif tables:
        raise click.UsageError(
            f"{config_file}: [mounts] tables set options per notebook of a bundle of several; "
            "for one notebook, set them at the top level"
        )
    else:
        if targets[0].is_dir():  # a notebook folder counts as several: this is a bundle
            raise click.UsageError(f"{targets[0]} is a bundle, not a notebook; build from its notebooks")
        spec = _compile(targets[0], comment_prefix, cell_parser)
        mounts, name, source = [], spec.name, str(targets[0])
    specs = [m.spec for m, _ in mounts] or [spec]
    _warn_missing_kernels(specs)
    output = output or Path("build") / name
    deploy = {o.name: getattr(settings, o.name) for o in DEPLOY_OPTIONS}
    try:
        options = BundleOptions(
            image=docker_tag,
            k8s=k8s,
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
    try:
        if mounts:
            written = write_mounted_bundle(mounts, name, output, force=force, options=options)
        else:
            written = write_bundle(spec, targets[0], output, force=force, options=options)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the bundle to {output}: {_os_reason(exc)}") from None
    command = docker_build_command(output, docker_tag) if docker_tag else None
    if as_json:
        files = [str(p) for p in written]
        click.echo(json.dumps({"bundle": str(output), "files": files, "docker_build": command}))
        return
    endpoints = sum(len(s.endpoints) for s in specs)
    setup = sum(len(s.setup) for s in specs)
    click.echo(
        f"built {output}/ from {source}: {endpoints} endpoints, {setup} setup cells, {len(written)} files"
    )
    if command:
        click.echo(command)


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


def _os_reason(exc: OSError) -> str:
    """``[Errno 2] No such file or directory: '/proc/x'`` as ``No such file or directory ('/proc/x')``."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


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
        raise click.BadParameter(_os_reason(exc), param_hint="--requirements") from None
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def _image_tag(value: str | None) -> str | None:
    from nb2svc.compiler.bundle import BundleError, check_image_tag

    try:
        return check_image_tag(value) if value is not None else None
    except BundleError as exc:
        raise click.BadParameter(str(exc), param_hint="--docker-tag") from None


@main.command()
@click.argument(
    "targets", metavar="TARGET...", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)
@click.option("--comment-prefix", default=None, help="Annotation comment prefix (notebooks only).")
@click.option(
    "--mount", "mount_specs", multiple=True, metavar="PREFIX=NOTEBOOK", help="As for 'nb2svc serve'."
)
@click.option("--json", "as_json", is_flag=True, help="Print the routes as JSON on stdout.")
@settings_options("all", only=("cell_parser",))
def routes(
    targets: tuple[Path, ...],
    comment_prefix: str | None,
    mount_specs: tuple[str, ...],
    as_json: bool,
    cell_parser: str | None,
) -> None:
    """List the endpoints of a notebook or bundle, in matching order; of several notebooks
    (or a folder of them), with their mount prefixes, as 'nb2svc serve' would serve them."""
    mounts, several = _target_mounts(targets, mount_specs, comment_prefix, _cell_parser(cell_parser))
    rows = [
        {
            "method": ep.method,
            "path": mount.full_path(ep),
            "cells": list(ep.cells),
            "response_info": list(ep.response_info.cells) if ep.response_info else [],
        }
        | ({"notebook": mount.spec.notebook} if several else {})
        for mount in mounts
        for ep in mount.spec.endpoints
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("METHOD", "PATH", "CELLS", "RESPONSEINFO")
    table = [header] + [
        (
            r["method"],
            r["path"],
            ",".join(map(str, r["cells"])),
            ",".join(map(str, r["response_info"])) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@main.command("test")
@click.argument(
    "targets", metavar="TARGET...", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)
@click.option("--comment-prefix", default=None, help="Annotation comment prefix (notebooks only).")
@click.option(
    "--mount", "mount_specs", multiple=True, metavar="PREFIX=NOTEBOOK", help="As for 'nb2svc serve'."
)
@click.option("--url", default=None, help="Test the service running at this URL instead of starting one.")
@click.option(
    "--start-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120,
    show_default=True,
    help="Seconds the service may take to be ready.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@settings_options("api", only=TEST_OPTIONS, defaults={"pool_size": "1 (stateful examples run in order)"})
def test_examples(
    targets: tuple[Path, ...],
    comment_prefix: str | None,
    mount_specs: tuple[str, ...],
    url: str | None,
    start_timeout: float,
    as_json: bool,
    **flags: Any,
) -> None:
    """Send the example requests TARGET's notebook declares and compare the answers.

    TARGET is a notebook or a bundle (or several notebooks, a folder of them, --mount:
    served together as 'nb2svc serve' would); unless --url is given, it is served on a free
    loopback port for the test, with the serve options below (the same as 'nb2svc
    serve', from flags or NB2SVC_* variables). Examples are declared in the endpoint
    cells' metadata (see the README). Exit 0 if all pass, 1 if any fails or the
    service does not start, 2 if there are no examples or a declaration is wrong.
    """
    from nb2svc import endpoint_tests

    if flags.get("pool_size") is None and "NB2SVC_POOL_SIZE" not in os.environ:
        flags["pool_size"] = 1
    try:
        settings = settings_from_env(mode="api", **flags)
        token = _read_token(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # the compiler checks the examples' declarations
    mounts, several = _target_mounts(targets, mount_specs, comment_prefix, settings.cell_parser)
    if several:
        notebook = ", ".join(m.spec.notebook for m in mounts)
    else:
        notebook = str(targets[0] / "notebook.ipynb" if targets[0].is_dir() else targets[0])
    examples = [
        example
        for mount in mounts
        for example in endpoint_tests.mounted(endpoint_tests.examples_from_spec(mount.spec), mount.prefix)
    ]
    if not examples:
        raise click.UsageError(
            f"{notebook} declares no examples (cell metadata nb2svc.examples; see the README)"
        )
    for mount in mounts:
        for ep in endpoint_tests.endpoints_without_examples(mount.spec, examples, mount.prefix):
            click.echo(
                f"warning: no examples for {ep.method} {mount.prefix}{ep.path} "
                f"({mount.spec.notebook}, cell {ep.cells[0]})",
                err=True,
            )
    serve_env = {o.env: env_value(o, getattr(settings, o.name)) for o in OPTIONS if o.name in TEST_OPTIONS}
    serve_env.pop("NB2SVC_TOKEN_FILE")
    serve_env["NB2SVC_TOKEN"] = token
    try:
        if url:
            outcomes = endpoint_tests.run_examples(url, examples, token=token)
        else:
            serve_args = [str(t) for t in targets] + [a for m in mount_specs for a in ("--mount", m)]
            with endpoint_tests.local_service(serve_args, env=serve_env, timeout=start_timeout) as base:
                outcomes = endpoint_tests.run_examples(base, examples, token=token)
    except endpoint_tests.ServiceFailed as exc:
        raise click.ClickException(str(exc)) from None
    failed = sum(not outcome.passed for outcome in outcomes)
    if as_json:
        click.echo(json.dumps([outcome.to_dict() for outcome in outcomes], indent=2))
    else:
        click.echo(endpoint_tests.format_table(outcomes))
        click.echo(f"\n{len(outcomes) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


def _load_mounts(
    target: Path, comment_prefix: str | None, cell_parser: str = "default"
) -> list[tuple[Any, Path]]:
    """``(Mount, source)`` of a notebook at the root, or of a bundle's mounts: its one
    notebook at the root, or the several notebooks of a bundle built from several
    (``service.json`` format 2, sources relative to the bundle)."""
    from nb2svc.compiler.mounts import Mount, mounts_from_json

    if not target.is_dir():
        return [(Mount("", _compile(target, comment_prefix, cell_parser)), target)]
    marker = target / BUNDLE_MARKER
    if not marker.exists():
        raise click.UsageError(
            f"{target} is a directory but not a bundle (no {BUNDLE_MARKER}); "
            "pass a notebook or the output of 'nb2svc build'"
        )
    try:
        return [
            (mount, Path(source)) for mount, source in mounts_from_json(marker.read_text(encoding="utf-8"))
        ]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, (KeyError, TypeError)) else str(exc)
        raise click.ClickException(
            f"{marker} is not a valid bundle spec ({detail}); rebuild the bundle with 'nb2svc build'"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"{marker}: {_os_reason(exc)}") from None


@main.command()
@click.argument("targets", metavar="[TARGET]...", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--comment-prefix", default=None, help="Annotation comment prefix (notebooks only).")
@click.option(
    "--mount",
    "mount_specs",
    multiple=True,
    metavar="PREFIX=NOTEBOOK",
    help="Serve NOTEBOOK under PREFIX (repeatable; by default each notebook is mounted at /<its file stem>).",
)
@click.option(
    "--kernels",
    "kernel_mode",
    is_flag=True,
    help="Kernel mode: serve Jupyter kernels over the Jupyter Server REST + websocket API (no TARGET).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="NB2SVC_CONFIG",
    default=None,
    help="TOML or JSON file of settings (option names as keys); flags and NB2SVC_* variables "
    "override it.  [env: NB2SVC_CONFIG]",
)
@settings_options("all")
def serve(
    targets: tuple[Path, ...],
    comment_prefix: str | None,
    mount_specs: tuple[str, ...],
    kernel_mode: bool,
    config_file: Path | None,
    **flags: Any,
) -> None:
    """Serve TARGET (a notebook or a bundle from 'nb2svc build') as an HTTP API, or with
    --kernels, serve Jupyter kernels to Jupyter clients (JupyterLab, jupyter server
    --gateway-url, @jupyterlab/services).

    Several notebooks (or a folder of them) make one service: each is mounted at
    /<its file stem>, or where --mount PREFIX=NOTEBOOK says, with its own kernels.

    Flags override NB2SVC_* environment variables, which override Kernel Gateway's
    KG_* variables, which override the --config file, which overrides the defaults.
    """
    if not targets and not mount_specs:
        from_env, kernel_mode = _from_environment(None, kernel_mode)
        targets = (from_env,) if from_env is not None else ()
    mode = "kernels" if kernel_mode else "api"
    misplaced = [
        OPTIONS_BY_NAME[n].flag
        for n, v in flags.items()
        if v is not None and mode not in OPTIONS_BY_NAME[n].modes
    ]
    if misplaced:
        other = "API mode (a TARGET)" if kernel_mode else "kernel mode (--kernels)"
        raise click.UsageError(f"{', '.join(misplaced)}: only used in {other}")
    given = frozenset(name for name, value in flags.items() if value is not None)
    try:
        file_values = load_config_file(config_file) if config_file else {}
        mount_tables = load_mount_tables(config_file) if config_file else {}
        settings = settings_from_env(file_values=file_values, mode=mode, **flags)
        from nb2svc.runtime.auth import check_cors

        check_cors(settings)
        settings = _take_token(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _check_timing(settings, mode)
    several = _several(targets, mount_specs)
    if mount_tables and kernel_mode:
        raise click.UsageError(
            f"{config_file}: [mounts] tables set options per notebook; kernel mode serves none"
        )
    target = targets[0] if len(targets) == 1 else None
    if kernel_mode:
        if len(targets) > 1:
            raise click.UsageError("--kernels serves kernels, not notebooks")
        _serve_kernels(target, settings)
        return
    if several:
        _serve_mounted(targets, mount_specs, comment_prefix, settings, mount_tables, given)
        return
    if target is None:
        raise click.UsageError("Missing argument 'TARGET' (a notebook or bundle), or --kernels")
    loaded = _load_mounts(target, comment_prefix, settings.cell_parser)
    mounts = [m for m, _ in loaded]
    if mount_tables and len(mounts) == 1:
        raise click.UsageError(
            f"{config_file}: [mounts] tables set options per notebook of a service of several; "
            "for one notebook, set them at the top level"
        )
    _check_languages(mounts)
    per_mount = (  # per-notebook settings are for a bundle of several
        _per_mount(settings, mount_tables, [(m.prefix, src.stem) for m, src in loaded], given)
        if len(mounts) > 1
        else {}
    )
    os.environ.update(_exported(settings))  # a bundle's app.py reads its settings from here
    if target.is_dir():
        if settings.reload:
            raise click.UsageError("--reload watches a notebook; a bundle is built once (serve the notebook)")
        _export_mount_settings(per_mount, given)
        factory = _bundle_factory(target)
    elif settings.reload:
        factory = _reloading_factory(target.resolve(), mounts[0].spec, settings, comment_prefix)
    else:
        factory = _notebook_factory(mounts[0].spec, settings, target.resolve().parent)
    _run_server(factory, settings, mounts, per_mount)


def _per_mount(
    settings: Settings,
    tables: dict[str, dict[str, Any]],
    mounts: list[tuple[str, str]],
    given: frozenset[str],
) -> dict[str, Settings]:
    """Each mount's own pool settings (flags, its ``NB2SVC_*__MOUNT`` variables, its
    ``[mounts]`` table); a bad one is a usage error."""
    try:
        return settings_for_mounts(settings, tables, mounts, flags=given)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _export_mount_settings(per_mount: dict[str, Settings], given: frozenset[str]) -> None:
    """Hand a bundle's app (which reads the environment) the per-mount settings resolved here:
    a flag drops every mount's variable for its option, and each mount's own value is set."""
    for name in given & MOUNT_OPTIONS:
        stem = OPTIONS_BY_NAME[name].env + "__"
        for variable in [v for v in os.environ if v.startswith(stem)]:
            del os.environ[variable]
    for prefix, own in per_mount.items():
        for name in MOUNT_OPTIONS - given:
            option = OPTIONS_BY_NAME[name]
            os.environ[mount_variable(name, prefix)] = env_value(option, getattr(own, name))


def _check_languages(mounts: list[Any]) -> None:
    """Refuse (exit 2) a notebook whose language API mode cannot bind REQUEST in."""
    from nb2svc.runtime.kernel.invoke import supports_language

    for mount in mounts:
        if not supports_language(mount.spec.kernel.language):
            where = f"{mount.spec.notebook}: " if len(mounts) > 1 or mount.prefix else ""
            raise click.UsageError(f"{where}API mode cannot serve {mount.spec.kernel.language!r} kernels yet")


def _from_environment(target: Path | None, kernel_mode: bool) -> tuple[Path | None, bool]:
    """Mode and notebook from NB2SVC_MODE / KG_API and NB2SVC_NOTEBOOK / KG_SEED_URI
    when the command line gives none (see nb2svc/seed_uri.py)."""
    from nb2svc.seed_uri import SeedError, SeedMissing, mode_from_env, notebook_uri_from_env, resolve

    try:
        kernel_mode = kernel_mode or (target is None and mode_from_env(os.environ) == "kernels")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    uri = notebook_uri_from_env(os.environ)
    if kernel_mode or target is not None or uri is None:
        return target, kernel_mode
    try:
        return resolve(uri), kernel_mode
    except SeedMissing as exc:
        raise click.UsageError(f"cannot load the notebook: {exc}") from None
    except SeedError as exc:
        raise click.ClickException(f"cannot load the notebook: {exc}") from None


def _seed_path(uri: str) -> Path:
    """``--seed``: a path as given (``_load_seed`` reports a missing one), or a fetched URI."""
    from nb2svc.seed_uri import SeedError, SeedMissing, resolve

    try:
        return resolve(uri)
    except SeedMissing:
        return Path(uri)
    except SeedError as exc:
        raise click.ClickException(f"cannot load the seed notebook: {exc}") from None


def _is_notebook_folder(path: Path) -> bool:
    return path.is_dir() and not (path / BUNDLE_MARKER).exists()


def _several(targets: tuple[Path, ...], mount_specs: tuple[str, ...]) -> bool:
    """Several notebooks (or a folder of them, or --mount) make one mounted service."""
    return len(targets) > 1 or bool(mount_specs) or (len(targets) == 1 and _is_notebook_folder(targets[0]))


def _target_mounts(
    targets: tuple[Path, ...], mount_specs: tuple[str, ...], comment_prefix: str | None, cell_parser: str
) -> tuple[list[Any], bool]:
    """The mounts ``routes`` and ``test`` work on, and whether they are several (mounted):
    one notebook or bundle at the root, a bundle of several, or the checked mounts of
    several notebooks, as ``serve`` would serve them."""
    if _several(targets, mount_specs):
        return [m for m, _ in _mounts(targets, mount_specs, comment_prefix, cell_parser)], True
    mounts = [m for m, _ in _load_mounts(targets[0], comment_prefix, cell_parser)]
    return mounts, len(mounts) > 1 or bool(mounts[0].prefix)


def _mounts(
    targets: tuple[Path, ...],
    mount_specs: tuple[str, ...],
    comment_prefix: str | None,
    cell_parser: str = "default",
) -> list[tuple[Any, Path]]:
    """``(Mount, notebook)`` for every notebook named, found in a folder, or given by --mount,
    checked together (prefixes, routes that clash across notebooks: exit 2)."""
    from nb2svc.compiler import CompileError
    from nb2svc.compiler.mounts import Mount, check_mounts, default_mount, normalise_prefix

    chosen: list[tuple[str | None, Path]] = []
    for target in targets:
        if target.is_dir():
            if (target / BUNDLE_MARKER).exists():
                raise click.UsageError(
                    f"{target} is a bundle (the output of 'nb2svc build'), not a notebook: several "
                    "notebooks are mounted from notebooks or folders of them"
                )
            found = sorted(target.glob("*.ipynb"))
            if not found:
                raise click.UsageError(
                    f"{target} is not a bundle (no {BUNDLE_MARKER}) and holds no .ipynb notebooks; "
                    "pass a notebook, a folder of notebooks or the output of 'nb2svc build'"
                )
            chosen += [(None, nb) for nb in found]
        else:
            chosen.append((None, target))
    for item in mount_specs:
        prefix, sep, notebook = item.partition("=")
        if not sep or not notebook:
            raise click.UsageError(f"--mount {item!r}: write PREFIX=NOTEBOOK, e.g. /api/v1=service.ipynb")
        path = Path(notebook)
        if path.is_dir():
            raise click.UsageError(f"--mount {item!r}: {notebook} is a folder; --mount takes one notebook")
        if not path.is_file():
            raise click.UsageError(f"--mount {item!r}: no such notebook {notebook}")
        chosen = [(p, nb) for p, nb in chosen if nb.resolve() != path.resolve()]
        chosen.append((normalise_prefix(prefix), path))
    mounts = []
    for prefix, notebook in chosen:
        spec = _compile(notebook, comment_prefix, cell_parser)
        mount = Mount(prefix, spec) if prefix is not None else default_mount(notebook.stem, spec)
        mounts.append((mount, notebook))
    try:
        check_mounts([m for m, _ in mounts])
    except CompileError as exc:
        raise CompileFailed(f"error: the notebooks cannot be mounted together:\n{exc}") from None
    return mounts


def _serve_mounted(
    targets: tuple[Path, ...],
    mount_specs: tuple[str, ...],
    comment_prefix: str | None,
    settings: Settings,
    mount_tables: dict[str, dict[str, Any]],
    given: frozenset[str],
) -> None:
    if settings.reload:
        raise click.UsageError("--reload watches one notebook; serve several without it")
    mounts = _mounts(targets, mount_specs, comment_prefix, settings.cell_parser)
    _check_languages([m for m, _ in mounts])
    per_mount = _per_mount(settings, mount_tables, [(m.prefix, nb.stem) for m, nb in mounts], given)
    os.environ.update(_exported(settings))

    def factory() -> Any:
        from nb2svc.runtime.http_api import create_mounted_app

        return create_mounted_app(
            [(m, nb.resolve().parent) for m, nb in mounts], settings, mount_settings=per_mount
        )

    _run_server(factory, settings, [m for m, _ in mounts], per_mount)


def _read_token(settings: Settings) -> str:
    """The token of ``--token`` or ``--token-file`` (``ValueError`` if both are given)."""
    from nb2svc.runtime.secret import read_token_file

    if settings.token and settings.token_file:
        raise ValueError("give either --token or --token-file, not both")
    return read_token_file(settings.token_file) if settings.token_file else settings.token


def _take_token(settings: Settings) -> Settings:
    """Resolve ``--token``/``--token-file`` once, in the master, and hide the token from the
    process's command line and environment before the workers fork (see ``runtime/secret.py``)."""
    from nb2svc.runtime.secret import hide

    token = _read_token(settings)
    if not hide(token):
        click.echo("warning: could not erase the token from this process's command line", err=True)
    return settings.replace(token=token)


def _exported(settings: Settings) -> dict[str, str]:
    """The ``NB2SVC_*`` variables for the app in the workers, without the token itself."""
    env = settings.to_env()
    env.pop(OPTIONS_BY_NAME["token"].env)
    return env


def _notebook_factory(spec: Any, settings: Settings, cwd: Path) -> Callable[[], Any]:
    def factory() -> Any:
        from nb2svc.runtime.http_api import create_app

        return create_app(spec, settings, cwd=cwd)

    return factory


def _reloading_factory(
    notebook: Path, spec: Any, settings: Settings, comment_prefix: str | None
) -> Callable[[], Any]:
    extra = tuple(Path(p).resolve() for p in settings.reload_extra)
    missing = [str(p) for p in extra if not p.exists()]
    if missing:
        raise click.UsageError(f"--reload-extra: no such file: {', '.join(missing)}")

    def factory() -> Any:
        from nb2svc.runtime.http_api import create_app
        from nb2svc.runtime.http_api.reload import ReloadingApp

        def build(version: Any, first: bool) -> Any:
            return create_app(version, settings, cwd=notebook.parent, exit_on_failure=first)

        return ReloadingApp(
            notebook,
            build,
            extra=extra,
            comment_prefix=comment_prefix,
            cell_parser=settings.cell_parser,
            ready_timeout=settings.kernel_start_timeout + 10,
            drain_timeout=settings.request_timeout + settings.queue_timeout,
            first=spec,
        )

    return factory


def _bundle_factory(bundle: Path) -> Callable[[], Any]:
    def factory() -> Any:
        import importlib.util

        spec = importlib.util.spec_from_file_location("nb2svc_bundle_app", bundle / "app.py")
        if spec is None or spec.loader is None:
            raise RuntimeError(f"{bundle}/app.py cannot be imported")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.app

    return factory


def _check_timing(settings: Settings, mode: str) -> None:
    """Warn when an explicit ``--graceful-timeout`` cannot let a request run to its timeout."""
    timing = shutdown_timing(settings.request_timeout, settings.graceful_timeout)
    if mode == "api" and not timing.covers_requests:
        click.echo(
            f"warning: --graceful-timeout {timing.graceful:g} leaves requests {timing.drain}s to finish "
            f"on shutdown, less than --request-timeout {settings.request_timeout:g}; requests in flight "
            "may be cut (leave it out: it is derived from --request-timeout)",
            err=True,
        )


def _check_port(settings: Settings) -> None:
    """Fail with one line if the address is taken (gunicorn would retry for 5 s, then exit)."""
    import errno
    import socket

    if settings.port == 0:
        return
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.UsageError(f"--host {settings.host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {settings.port} on {settings.host} is already in use; "
                    "stop what listens there or choose another with --port"
                ) from None
            raise click.ClickException(
                f"cannot listen on {settings.host}:{settings.port}: {_os_reason(exc)}"
            ) from None


def _run_server(
    factory: Callable[[], Any],
    settings: Settings,
    mounts: list[Any],
    per_mount: dict[str, Settings] | None = None,
) -> None:
    """Serve ``factory``'s app after a banner: one notebook at the root, or every mount
    (with its own pool settings from ``per_mount``, by prefix, where it has them)."""
    from nb2svc.runtime.server import Server

    _check_port(settings)
    base = settings.base_url.rstrip("/")
    url = f"http://{settings.host}:{settings.port}{base}"
    if len(mounts) == 1 and not mounts[0].prefix:
        spec = mounts[0].spec
        banner = (
            f"nb2svc {__version__}: serving {spec.name} ({len(spec.endpoints)} endpoints, "
            f"{settings.workers} worker(s) x {settings.pool_size} {spec.kernel.name} kernels)\n"
            f"  endpoints: {url}/\n  docs:      {url}/_api/docs\n  openapi:   {url}/openapi.json\n"
            f"  health:    {url}/_api/health/ready"
        )
    else:
        lines = [f"nb2svc {__version__}: serving {len(mounts)} notebooks ({settings.workers} worker(s))"]
        for m in mounts:
            own = (per_mount or {}).get(m.prefix, settings)
            lines.append(
                f"  {url}{m.prefix or '/'}  {m.spec.notebook} ({len(m.spec.endpoints)} endpoints, "
                f"{own.pool_size} {own.kernel_name or m.spec.kernel.name} kernels)"
            )
        lines += [f"  docs:   {url}/_api/docs", f"  health: {url}/_api/health/ready"]
        banner = "\n".join(lines)
    click.echo(banner, err=True)
    _run(Server(factory, settings))


#: gunicorn's exit codes for a worker that could not boot or load the app: the master
#: halts instead of respawning (see ``runtime/server.py``).
_BOOT_FAILURES = (3, 4)


def _run(server: Any) -> None:
    master = os.getpid()
    try:
        server.run()
    except SystemExit as exc:
        if os.getpid() != master:
            raise  # a forked worker's exit: its code must reach the master unchanged
        if exc.code in _BOOT_FAILURES:
            raise click.ClickException("the server could not start (the reason is above)") from None
        if exc.code not in (0, None):
            raise click.ClickException("the server stopped with an error (see the log above)") from None


def _serve_kernels(target: Path | None, settings: Settings) -> None:
    """Kernel mode (one worker: every kernel id must resolve in one process)."""
    if target is not None:
        raise click.UsageError(
            f"--kernels serves kernels, not {target}; to run a notebook on each kernel, pass --seed {target}"
        )
    if settings.max_kernels and settings.prespawn > settings.max_kernels:
        raise click.UsageError(
            f"--prespawn {settings.prespawn} is more than --max-kernels {settings.max_kernels}"
        )
    warning = _kernel_auth_warning(settings)
    seed = _load_seed(_seed_path(settings.seed), settings.force_kernel) if settings.seed else None
    from nb2svc.runtime.kernels_api.worker import KernelServer

    os.environ.update(_exported(settings))
    _check_port(settings)
    url = f"http://{settings.host}:{settings.port}{settings.base_url.rstrip('/')}"
    seeded = f", seeded from {settings.seed} ({len(seed.cells)} cells)" if seed else ""
    click.echo(
        f"nb2svc {__version__}: serving Jupyter kernels (prespawn {settings.prespawn}, warm {settings.warm}"
        f"{seeded})\n  kernels:   {url}/api/kernels\n  specs:     {url}/api/kernelspecs\n"
        f"  health:    {url}/_api/health/ready" + (f"\n  warning:   {warning}" if warning else ""),
        err=True,
    )
    _run(KernelServer(_kernel_app_factory(settings, seed), settings))


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the port on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _kernel_auth_warning(settings: Settings) -> str | None:
    """Refuse a tokenless kernel server on a non-loopback address unless ``--no-auth``; the
    banner's warning when there is no token."""
    if settings.token:
        if not settings.auth:
            raise click.UsageError("--no-auth and a token contradict each other; drop one")
        return None
    if is_loopback(settings.host):
        return (
            "no --token: anyone on this machine (any user, any local process or container port "
            "forward) can run code as you through this port"
        )
    if settings.auth:
        raise click.UsageError(
            f"--host {settings.host} is not a loopback address and no token is set: anyone who can "
            f"reach port {settings.port} could run code on this machine. Set --token or --token-file, "
            "or pass --no-auth to serve without one anyway."
        )
    return f"--no-auth: anyone who can reach {settings.host}:{settings.port} can run code as you"


def _kernel_app_factory(settings: Settings, seed: Any) -> Callable[[], Any]:
    def factory() -> Any:
        from nb2svc.runtime.kernels_api.rest import create_app  # in the worker: zmq after fork

        return create_app(settings, seed)

    return factory


def _load_seed(path: Path, force_kernel: str) -> Any:
    """The ``--seed`` notebook's code cells, for the kernel spec they are for."""
    _skip_slow_format_checkers()
    from nb2svc.compiler import CompileError
    from nb2svc.compiler.notebook import load_notebook
    from nb2svc.runtime.kernels_api.seed import Seed

    try:
        loaded = load_notebook(path)
    except CompileError as exc:
        raise CompileFailed(f"error: --seed {path} cannot be used:\n{exc}") from None
    sources = [(n, c.source) for n, c in enumerate(loaded.notebook.cells, start=1) if c.cell_type == "code"]
    texts = ((n, "".join(src) if isinstance(src, list) else src) for n, src in sources)
    cells = tuple((n, text) for n, text in texts if text.strip())
    return Seed(source=str(path), kernel_name=force_kernel or loaded.kernel.name, cells=cells)


def run() -> None:
    """The console script and ``python -m nb2svc``: no traceback unless ``--debug``.

    Domain errors are click errors already (exit 2 for usage and compile errors, 1 for
    operational ones); anything else is a bug or an environment problem, printed as one
    line with exit 1.
    """
    try:
        main(standalone_mode=True)
    except Exception as exc:
        if "--debug" in sys.argv[1:]:
            raise
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        click.echo(f"error: {detail} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    run()
