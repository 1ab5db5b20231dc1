"""The ``nb2svc`` command: build | serve | routes | test.

This module parses and prints; the steps live in :mod:`nb2svc.targets` (what a command
works on), :mod:`nb2svc.bundling` (``build``), :mod:`nb2svc.serve` (``serve``: the
:class:`~nb2svc.plan.ServePlan`, the banner, the server) and :mod:`nb2svc.endpoint_tests`
(``test``).

Exit codes: 0 success, 1 operational failure (a port in use, a worker that could not
boot), 2 usage or compile error. Errors go to stderr without a traceback unless
``--debug``; machine output (``--json``) goes to stdout only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nb2svc import targets as target_files
from nb2svc._version import __version__
from nb2svc.bundling import image_tag
from nb2svc.config import DEPLOY_OPTIONS, OPTIONS, Option, env_value, settings_from_env
from nb2svc.help_format import GroupedCommand

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


class UsageLine(click.ClickException):
    """A usage error that needs no usage banner: one ``Error: ...`` line, exit 2."""

    exit_code = 2


#: Other spellings of an option's flag: Kernel Gateway's names that mean the same (issue 10),
#: and the short ``-p`` every server CLI has for its port (issue 22).
FLAG_ALIASES = {"host": ("--ip",), "port": ("-p",)}


class ServeCommand(GroupedCommand):
    """``nb2svc serve``: also takes Kernel Gateway's own flag spellings (:mod:`nb2svc.kg_flags`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from nb2svc.kg_flags import translate

        return super().parse_args(ctx, translate(args))


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
@click.version_option(__version__, "-V", "--version", prog_name="nb2svc")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Compile Jupyter notebooks into HTTP microservices, and serve them on warm kernels."""
    ctx.obj = {"debug": debug}


@main.command(cls=GroupedCommand)
@click.argument("targets", metavar="TARGET...", nargs=-1, type=target_files.Target())
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
    callback=lambda ctx, param, value: image_tag(value),
    help="Image name with an explicit tag (never latest), used by the Makefile and k8s/; "
    "also prints the docker build command.  [default: <name>:<digest of the image's files>]",
)
@click.option("--k8s", is_flag=True, help="Also write Kubernetes manifests to k8s/ (kubectl apply -k).")
@click.option(
    "--kernels",
    "kernel_gateway",
    is_flag=True,
    help="Build a kernel gateway instead (no TARGET): an image of 'nb2svc serve --kernels' and k8s/ "
    "with --replicas gateways, kernels in pods of their own (gateway_provisioners), RBAC for them.",
)
@click.option(
    "--kernel-image",
    "kernel_images",
    multiple=True,
    metavar="NAME=IMAGE",
    help="With --kernels: a kernel spec NAME whose kernels run in IMAGE (repeatable; the first is "
    "the default kernel).  [default: python_k8s=elyra/kernel-py:3.2.3]",
)
@click.option(
    "--namespace",
    default=None,
    help="With --kernels: the Kubernetes namespace of the gateways and their kernel pods.  "
    "[default: default]",
)
@click.option(
    "--keda",
    is_flag=True,
    help="With --k8s: scale on queue depth (waiting requests, from Prometheus) as well as CPU, "
    "with a KEDA ScaledObject in place of the HorizontalPodAutoscaler (KEDA makes the HPA).",
)
@click.option(
    "--prometheus-url",
    default=None,
    metavar="URL",
    help="With --keda: the Prometheus that scrapes the pods, as KEDA reaches it.  "
    "[default: http://prometheus-operated.monitoring.svc:9090]",
)
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
    default=None,
    help="Fewest pods (the HorizontalPodAutoscaler's floor; with --k8s); with --kernels, the "
    "gateways (more than 1 needs --store redis://...).  [default: 2; --kernels: 1]",
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
def build(**params: Any) -> None:
    """Compile TARGET into a self-contained service bundle directory.

    TARGET is a notebook; several notebooks (or a folder of them, or --mount
    PREFIX=NOTEBOOK) make one bundle that serves them together as 'nb2svc serve' would,
    each at /<its file stem> or its --mount prefix with its own kernels: one image, one
    app, one set of manifests. Clashing routes or prefixes are refused, naming the cells.

    The serve options below are baked into the image and manifests as NB2SVC_*
    defaults (a container's environment still overrides them); they also size the
    pod's resources and its shutdown grace period. Only flags and --config count here,
    not the NB2SVC_* variables of the machine that builds.

    With --kernels (and no TARGET) the bundle is a kernel gateway's instead: an image of
    'nb2svc serve --kernels' with a kernel spec per --kernel-image, and k8s/ with the
    gateways, their Service and the RBAC their kernel pods need.
    """
    from nb2svc.bundling import build_bundle

    build_bundle(**params)


@main.command()
@click.argument("targets", metavar="TARGET...", nargs=-1, required=True, type=target_files.Target())
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
    mounts, several = target_files.target_mounts(
        targets, mount_specs, comment_prefix, target_files.cell_parser_setting(cell_parser)
    )
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


@main.command("test", cls=GroupedCommand)
@click.argument("targets", metavar="TARGET...", nargs=-1, required=True, type=target_files.Target())
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
    from nb2svc.serve import read_token

    if flags.get("pool_size") is None and "NB2SVC_POOL_SIZE" not in os.environ:
        flags["pool_size"] = 1
    try:
        settings = settings_from_env(mode="api", **flags)
        token = read_token(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # the compiler checks the examples' declarations
    mounts, several = target_files.target_mounts(targets, mount_specs, comment_prefix, settings.cell_parser)
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
        raise UsageLine(
            f"{notebook} declares no examples to run: add some to its endpoint cells' metadata "
            "(nb2svc.examples; see the README, Endpoint examples)"
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
    except KeyboardInterrupt:  # the service (if started) is stopped by now; 128 + SIGINT, as shells expect
        click.echo("interrupted", err=True)
        sys.exit(130)
    failed = sum(not outcome.passed for outcome in outcomes)
    if as_json:
        click.echo(json.dumps([outcome.to_dict() for outcome in outcomes], indent=2))
    else:
        click.echo(endpoint_tests.format_table(outcomes))
        click.echo(f"\n{len(outcomes) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@main.command(cls=ServeCommand)
@click.argument("targets", metavar="[TARGET]...", nargs=-1, type=target_files.Target())
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
@click.option(
    "--get",
    "get_path",
    metavar="PATH",
    default=None,
    help="Serve on a free loopback port for one GET of PATH (with the token, if one is set), print "
    "its body and exit: 0 for a 2xx answer, 1 otherwise. A smoke test for CI.",
)
@settings_options("all")
def serve(**params: Any) -> None:
    """Serve TARGET (a notebook or a bundle from 'nb2svc build') as an HTTP API, or with
    --kernels, serve Jupyter kernels to Jupyter clients (JupyterLab, jupyter server
    --gateway-url, @jupyterlab/services).

    Several notebooks (or a folder of them) make one service: each is mounted at
    /<its file stem>, or where --mount PREFIX=NOTEBOOK says, with its own kernels.

    Flags override NB2SVC_* environment variables, which override Kernel Gateway's
    KG_* variables, which override the --config file, which overrides the defaults.
    """
    from nb2svc.serve import serve as serve_plan

    serve_plan(**params)


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
