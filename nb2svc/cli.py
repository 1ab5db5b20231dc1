"""The ``nb2svc`` command: build | serve | routes.

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

from nb2svc._version import __version__
from nb2svc.config import OPTIONS, Option, Settings, settings_from_env

BUNDLE_MARKER = "service.json"


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


def _compile(notebook: Path, comment_prefix: str | None):
    _skip_slow_format_checkers()
    from nb2svc.compiler import CompileError, compile_notebook

    try:
        spec = compile_notebook(notebook, comment_prefix=comment_prefix)
    except CompileError as exc:
        raise CompileFailed(f"error: {notebook} cannot be compiled:\n" + str(exc)) from None
    for warning in spec.warnings:
        click.echo(f"warning: {warning}", err=True)
    return spec


def _option_decorators(mode: str) -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    """Click options generated from the settings table (values resolved later)."""

    def decorator(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        env_help = option.env + (f", {option.kg_alias}" if option.kg_alias else "")
        default = ",".join(option.default) if option.type is list else option.default
        shown = "(empty)" if default in ("", ()) else default
        help_text = f"{option.help}  [default: {shown}; env: {env_help}]"
        click_type: Any = (
            click.Choice(option.choices)
            if option.choices
            else (str if option.type in (list, str) else option.type)
        )
        return click.option(option.flag, option.name, type=click_type, default=None, help=help_text)

    return [decorator(o) for o in OPTIONS if mode in o.modes or mode == "all"]


def settings_options(mode: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for deco in reversed(_option_decorators(mode)):
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
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle directory to write.  [default: build/<notebook name>]",
)
@click.option(
    "--comment-prefix", default=None, help="Annotation comment prefix (default: from the kernel language)."
)
@click.option("--force", is_flag=True, help="Replace an existing non-empty output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the list of written files as JSON on stdout.")
def build(
    notebook: Path, output: Path | None, comment_prefix: str | None, force: bool, as_json: bool
) -> None:
    """Compile NOTEBOOK into a self-contained service bundle directory."""
    from nb2svc.compiler.bundle import BundleError, write_bundle

    spec = _compile(notebook, comment_prefix)
    output = output or Path("build") / spec.name
    try:
        written = write_bundle(spec, notebook, output, force=force)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"bundle": str(output), "files": [str(p) for p in written]}))
    else:
        click.echo(
            f"built {output}/ from {notebook}: {len(spec.endpoints)} endpoints, "
            f"{len(spec.setup)} setup cells, {len(written)} files"
        )


@main.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--comment-prefix", default=None, help="Annotation comment prefix (notebooks only).")
@click.option("--json", "as_json", is_flag=True, help="Print the routes as JSON on stdout.")
def routes(target: Path, comment_prefix: str | None, as_json: bool) -> None:
    """List the endpoints of a notebook or bundle, in matching order."""
    spec = _load_spec(target, comment_prefix)
    rows = [
        {
            "method": ep.method,
            "path": ep.path,
            "cells": list(ep.cells),
            "response_info": list(ep.response_info.cells) if ep.response_info else [],
        }
        for ep in spec.endpoints
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


def _load_spec(target: Path, comment_prefix: str | None):
    from nb2svc.compiler.spec import ServiceSpec

    if target.is_dir():
        marker = target / BUNDLE_MARKER
        if not marker.exists():
            raise click.UsageError(
                f"{target} is a directory but not a bundle (no {BUNDLE_MARKER}); "
                "pass a notebook or the output of 'nb2svc build'"
            )
        try:
            return ServiceSpec.from_json(marker.read_text())
        except (ValueError, KeyError) as exc:
            raise click.ClickException(f"{marker}: {exc}") from None
    return _compile(target, comment_prefix)


@main.command()
@click.argument("target", type=click.Path(exists=True, path_type=Path))
@click.option("--comment-prefix", default=None, help="Annotation comment prefix (notebooks only).")
@settings_options("api")
def serve(target: Path, comment_prefix: str | None, **flags: Any) -> None:
    """Serve TARGET (a notebook or a bundle from 'nb2svc build') as an HTTP API.

    Flags override NB2SVC_* environment variables, which override Kernel Gateway's
    KG_* variables, which override the defaults.
    """
    try:
        settings = settings_from_env(**flags)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    spec = _load_spec(target, comment_prefix)
    from nb2svc.runtime.request import supports_language

    if not supports_language(spec.kernel.language):
        raise click.UsageError(f"API mode cannot serve {spec.kernel.language!r} kernels yet")
    os.environ.update(settings.to_env())  # a bundle's app.py reads its settings from here
    if target.is_dir():
        factory = _bundle_factory(target)
    else:
        factory = _notebook_factory(spec, settings, target.resolve().parent)
    _run_server(factory, settings, spec)


def _notebook_factory(spec: Any, settings: Settings, cwd: Path) -> Callable[[], Any]:
    def factory() -> Any:
        from nb2svc.runtime.http_api import create_app

        return create_app(spec, settings, cwd=cwd)

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


def _run_server(factory: Callable[[], Any], settings: Settings, spec: Any) -> None:
    from nb2svc.runtime.server import Server

    base = settings.base_url.rstrip("/")
    url = f"http://{settings.host}:{settings.port}{base}"
    click.echo(
        f"nb2svc {__version__}: serving {spec.name} ({len(spec.endpoints)} endpoints, "
        f"{settings.workers} worker(s) x {settings.pool_size} {spec.kernel.name} kernels)\n"
        f"  endpoints: {url}/\n  docs:      {url}/_api/docs\n  openapi:   {url}/openapi.json\n"
        f"  health:    {url}/_api/health/ready",
        err=True,
    )
    try:
        Server(factory, settings).run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise click.ClickException("the server stopped with an error (see the log above)") from None


def run() -> None:
    """Entry point that hides tracebacks unless --debug."""
    try:
        main(standalone_mode=True)
    except Exception:  # pragma: no cover - last resort
        if "--debug" in sys.argv:
            raise
        click.echo(f"error: {sys.exc_info()[1]}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
