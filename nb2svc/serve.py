"""``nb2svc serve``'s steps: resolve a :class:`~nb2svc.plan.ServePlan`, print the banner, run.

Everything is decided here, in gunicorn's master, before the fork: the settings (flags,
then ``NB2SVC_*``, then ``KG_*``, then the config file), the token (read once and hidden
from the process's command line and environment, see :mod:`nb2svc.runtime.secret`), the
mounts with their own settings, the seed and the kernel names. The workers get the plan
(:class:`~nb2svc.runtime.server.Server` hands it to :mod:`nb2svc.runtime.entry`) and read
nothing from the environment.

Nothing zmq, gevent or jupyter_client is imported here (RUNTIME-NOTES: a master that
imported them breaks ``subprocess`` in the worker).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

import click

from nb2svc import targets as target_files
from nb2svc._version import __version__
from nb2svc.config import (
    OPTIONS_BY_NAME,
    Settings,
    env_value,
    load_config_file,
    load_mount_tables,
    parse_value,
    pool_bounds,
    settings_for_mounts,
    settings_from_env,
    shutdown_timing,
)
from nb2svc.plan import (
    ReloadPlan,
    ServePlan,
    api_plan,
    is_mounted,
    kernels_plan,
    seed_kernel_name,
    with_token,
)


def serve(
    *,
    targets: tuple[Path, ...],
    comment_prefix: str | None,
    mount_specs: tuple[str, ...],
    kernel_mode: bool,
    config_file: Path | None,
    get_path: str | None = None,
    **flags: Any,
) -> None:
    """Resolve the plan of ``nb2svc serve`` (see the command's help) and run it; ``flags``
    are the settings options (``None``: not given). With ``get_path``, serve for one
    ``GET`` and exit with its outcome (:mod:`nb2svc.get_once`)."""
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
    if get_path is not None:
        command = (targets, mount_specs, comment_prefix, kernel_mode, config_file)
        raise SystemExit(_serve_once(get_path, command, mode, flags))
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
    several = target_files.several(targets, mount_specs)
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
        plan = _mounted_plan(targets, mount_specs, comment_prefix, settings, mount_tables, given)
    elif target is None:
        raise click.UsageError("Missing argument 'TARGET' (a notebook or bundle), or --kernels")
    else:
        plan = _target_plan(target, comment_prefix, settings, config_file, mount_tables, given)
    _run_server(plan)


def _serve_once(
    get_path: str,
    command: tuple[tuple[Path, ...], tuple[str, ...], str | None, bool, Path | None],
    mode: str,
    flags: dict[str, Any],
) -> int:
    """``--get PATH``: check what can be checked here (the path, the settings, the notebooks
    compile: exit 2), then serve on a free loopback port for the one request with the same
    arguments, the given flags passed as their ``NB2SVC_*`` variables."""
    from nb2svc.get_once import check_get_path, get_once

    targets, mount_specs, comment_prefix, kernel_mode, config_file = command
    path = check_get_path(get_path)
    try:
        file_values = load_config_file(config_file) if config_file else {}
        token = read_token(settings_from_env(file_values=file_values, mode=mode, **flags))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not kernel_mode:
        if not targets and not mount_specs:
            raise click.UsageError("Missing argument 'TARGET' (a notebook or bundle), or --kernels")
        cell_parser = settings_from_env(file_values=file_values, mode=mode, **flags).cell_parser
        target_files.target_mounts(targets, mount_specs, comment_prefix, cell_parser)
    args = [str(t) for t in targets] + [a for m in mount_specs for a in ("--mount", m)]
    args += (["--comment-prefix", comment_prefix] if comment_prefix else []) + (["--kernels"] * kernel_mode)
    args += ["--config", str(config_file)] if config_file else []
    env = {
        OPTIONS_BY_NAME[name].env: env_value(OPTIONS_BY_NAME[name], parse_value(OPTIONS_BY_NAME[name], value))
        for name, value in flags.items()
        if value is not None
    }
    return get_once(args, env, path, token)


def _target_plan(
    target: Path,
    comment_prefix: str | None,
    settings: Settings,
    config_file: Path | None,
    mount_tables: dict[str, dict[str, Any]],
    given: frozenset[str],
) -> ServePlan:
    """The plan of one notebook (with or without ``--reload``) or of a bundle."""
    loaded = target_files.load_mounts(target, comment_prefix, settings.cell_parser)
    mounts = [m for m, _ in loaded]
    if mount_tables and len(mounts) == 1:
        raise click.UsageError(
            f"{config_file}: [mounts] tables set options per notebook of a service of several; "
            "for one notebook, set them at the top level"
        )
    target_files.check_languages(mounts)
    per_mount = (  # per-notebook settings are for a bundle of several
        _per_mount(settings, mount_tables, [(m.prefix, src.stem) for m, src in loaded], given)
        if is_mounted(mounts)
        else {}
    )
    if target.is_dir():
        if settings.reload:
            raise click.UsageError("--reload watches a notebook; a bundle is built once (serve the notebook)")
        located = [(mount, (target / source).resolve().parent) for mount, source in loaded]
        return api_plan(settings, located, per_mount, bundle=target.resolve())
    notebook = target.resolve()
    reload = _reload_plan(notebook, settings, comment_prefix) if settings.reload else None
    return api_plan(settings, [(mounts[0], notebook.parent)], reload=reload)


def _mounted_plan(
    targets: tuple[Path, ...],
    mount_specs: tuple[str, ...],
    comment_prefix: str | None,
    settings: Settings,
    mount_tables: dict[str, dict[str, Any]],
    given: frozenset[str],
) -> ServePlan:
    if settings.reload:
        raise click.UsageError("--reload watches one notebook; serve several without it")
    mounts = target_files.notebook_mounts(targets, mount_specs, comment_prefix, settings.cell_parser)
    target_files.check_languages([m for m, _ in mounts])
    per_mount = _per_mount(settings, mount_tables, [(m.prefix, nb.stem) for m, nb in mounts], given)
    return api_plan(settings, [(m, nb.resolve().parent) for m, nb in mounts], per_mount)


def _reload_plan(notebook: Path, settings: Settings, comment_prefix: str | None) -> ReloadPlan:
    extra = tuple(Path(p).resolve() for p in settings.reload_extra)
    missing = [str(p) for p in extra if not p.exists()]
    if missing:
        raise click.UsageError(f"--reload-extra: no such file: {', '.join(missing)}")
    return ReloadPlan(notebook, extra, comment_prefix)


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


def read_token(settings: Settings) -> str:
    """The token of ``--token`` or ``--token-file`` (``ValueError`` if both are given)."""
    return with_token(settings).token


def _take_token(settings: Settings) -> Settings:
    """Resolve ``--token``/``--token-file`` once, in the master, and hide the token from the
    process's command line and environment before the workers fork (see ``runtime/secret.py``).
    The plan carries it to the workers."""
    from nb2svc.runtime.secret import hide

    token = with_token(settings, warn=lambda text: click.echo(f"warning: {text}", err=True)).token
    if not hide(token):
        click.echo("warning: could not erase the token from this process's command line", err=True)
    return settings.replace(token=token)


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


class StoreUnreachable(click.ClickException):
    """The ``--store`` named cannot be used: a usage error (exit 2), one line."""

    exit_code = 2


def _check_store(settings: Settings) -> str:
    """Contact a Redis store once before any worker starts (in a child process: see
    ``runtime/store/check.py``); what the banner says of it, redacted. The embedded store
    is the workers' to open, after the fork."""
    from nb2svc.runtime.store.check import check_in_child
    from nb2svc.store_url import redact

    if not settings.store:
        return "embedded store (shared by this server's workers)"
    problem = check_in_child(settings.store, settings.store_password_file)
    if problem is not None:
        raise StoreUnreachable(f"--store: cannot use {problem}")
    return f"store {redact(settings.store)}"


def _check_port(settings: Settings) -> None:
    """Fail with one line if the address is taken (gunicorn would retry for 5 s, then exit)."""
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
                f"cannot listen on {settings.host}:{settings.port}: {target_files.os_reason(exc)}"
            ) from None


def api_banner(plan: ServePlan) -> str:
    """What ``serve`` prints before it listens: one notebook at the root, or every mount
    (with its own pool settings where it has them)."""
    settings = plan.settings
    url = f"http://{settings.host}:{settings.port}{settings.base_url.rstrip('/')}"
    if len(plan.mounts) == 1 and not plan.mounts[0].mount.prefix:
        spec = plan.mounts[0].mount.spec
        return (
            f"nb2svc {__version__}: serving {spec.name} ({len(spec.endpoints)} endpoints, "
            f"{settings.workers} worker(s) x {settings.pool_size} {spec.kernel.name} kernels)\n"
            f"  endpoints: {url}/\n  docs:      {url}/_api/docs\n  openapi:   {url}/openapi.json\n"
            f"  health:    {url}/_api/health/ready" + _state_note(plan)
        )
    lines = [f"nb2svc {__version__}: serving {len(plan.mounts)} notebooks ({settings.workers} worker(s))"]
    for m in plan.mounts:
        spec = m.mount.spec
        lines.append(
            f"  {url}{m.mount.prefix or '/'}  {spec.notebook} ({len(spec.endpoints)} endpoints, "
            f"{m.settings.pool_size} {m.kernel_name} kernels)"
        )
    lines += [f"  docs:   {url}/_api/docs", f"  health: {url}/_api/health/ready"]
    return "\n".join(lines) + _state_note(plan)


def _state_note(plan: ServePlan) -> str:
    """One banner line when a notebook is served by more than one kernel: a request lands on
    any of them, so what a cell keeps in a variable is seen only by later requests that land
    on the same kernel (the todo example once answered 404 and 200 in turn)."""
    kernels = max(plan.settings.workers * pool_bounds(m.settings.pool_size)[1] for m in plan.mounts)
    if kernels < 2:
        return ""
    return (
        f"\n  note:      up to {kernels} kernels serve each notebook; state kept in kernel memory "
        "(a variable) is per kernel, so keep shared state in a file or database (README: Writing a "
        "service notebook)"
    )


def _run_server(plan: ServePlan) -> None:
    """Serve an API-mode plan after its banner."""
    from nb2svc.runtime.kernel.early import start_for_plan
    from nb2svc.runtime.server import Server

    if plan.settings.static_path:
        problems = target_files.public_path_problems([m.mount for m in plan.mounts])
        if problems:
            raise target_files.CompileFailed("\n".join(f"error: {problem}" for problem in problems))
    _check_port(plan.settings)
    store = _check_store(plan.settings)
    # the kernel templates start now, on another core, while gunicorn forks and boots the worker
    early = start_for_plan(plan)
    click.echo(f"{api_banner(plan)}\n  jobs:      {store}", err=True)
    _run(Server(plan, early_templates=early))


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
    seed = _load_seed(_seed_path(settings.seed), settings) if settings.seed else None
    from nb2svc.runtime.kernel.early import start_for_plan
    from nb2svc.runtime.kernels_api.worker import KernelServer

    _check_port(settings)
    # with a shared store, the kernel registry of every replica (see kernels_api/replicas.py)
    shared = f"\n  replicas:  {_check_store(settings)}" if settings.store else ""
    url = f"http://{settings.host}:{settings.port}{settings.base_url.rstrip('/')}"
    seeded = f", seeded from {settings.seed} ({len(seed.cells)} cells)" if seed else ""
    # a web page beside the kernels (examples/kernel-page): its files need no token, its script does
    files = f"\n  files:     {url}/public/ (no token: {settings.static_path})" if settings.static_path else ""
    click.echo(
        f"nb2svc {__version__}: serving Jupyter kernels (prespawn {settings.prespawn}, warm {settings.warm}"
        f"{seeded})\n  kernels:   {url}/api/kernels\n  specs:     {url}/api/kernelspecs\n"
        f"  health:    {url}/_api/health/ready{files}{shared}"
        + (f"\n  warning:   {warning}" if warning else ""),
        err=True,
    )
    plan = kernels_plan(settings, seed)
    # the default kernel spec's template starts now, on another core, while the worker boots
    _run(KernelServer(plan, early_templates=start_for_plan(plan)))


def _kernel_auth_warning(settings: Settings) -> str | None:
    """Refuse a tokenless kernel server on a non-loopback address unless ``--no-auth``; the
    banner's warning when there is no token."""
    if settings.token:
        if not settings.auth:
            raise click.UsageError("--no-auth and a token contradict each other; drop one")
        return None
    from nb2svc.runtime.auth import is_loopback

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


def _load_seed(path: Path, settings: Settings) -> Any:
    """The ``--seed`` notebook's code cells, for the kernel spec they are for."""
    target_files.skip_slow_format_checkers()
    from nb2svc.compiler import CompileError
    from nb2svc.compiler.notebook import load_notebook
    from nb2svc.runtime.kernels_api.seed import Seed

    try:
        loaded = load_notebook(path)
    except CompileError as exc:
        raise target_files.CompileFailed(f"error: --seed {path} cannot be used:\n{exc}") from None
    sources = [(n, c.source) for n, c in enumerate(loaded.notebook.cells, start=1) if c.cell_type == "code"]
    texts = ((n, "".join(src) if isinstance(src, list) else src) for n, src in sources)
    cells = tuple((n, text) for n, text in texts if text.strip())
    return Seed(source=str(path), kernel_name=seed_kernel_name(settings, loaded.kernel.name), cells=cells)
