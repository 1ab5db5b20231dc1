"""Kernel Gateway's command-line spellings for ``nb2svc serve``.

A Kernel Gateway deployment switches by changing its command: ``jupyter kernelgateway
--KernelGatewayApp.api=kernel_gateway.notebook_http --KernelGatewayApp.seed_uri=URL
--port=8888`` becomes ``nb2svc serve`` with the same arguments. :func:`translate` rewrites
the traitlets forms (``--KernelGatewayApp.NAME=V``, ``--NotebookHTTPPersonality.NAME=V``,
``--JupyterWebsocketPersonality.NAME=V``, with ``=`` or a separate value) and Kernel
Gateway's own short aliases (``--api``, ``--seed_uri``, ``--prespawn_count``, ...) into
nb2svc's flags, for the options the README's migration table lists. One nb2svc has no
equivalent for is a usage error that says what to do instead; anything else is left for
click to judge.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

#: Kernel Gateway's traitlets classes whose options are read here.
KG_CLASSES = ("KernelGatewayApp", "NotebookHTTPPersonality", "JupyterWebsocketPersonality")

#: Kernel Gateway option → the nb2svc flag that means the same (value passed as given).
SAME = {
    "ip": "--host",
    "port": "--port",
    "base_url": "--base-url",
    "auth_token": "--token",
    "allow_origin": "--allow-origin",
    "allow_credentials": "--allow-credentials",
    "allow_headers": "--allow-headers",
    "allow_methods": "--allow-methods",
    "expose_headers": "--expose-headers",
    "max_age": "--max-age",
    "default_kernel_name": "--default-kernel",
    "force_kernel_name": "--force-kernel",
    "max_kernels": "--max-kernels",
    "env_process_whitelist": "--env-allow",
    "env_whitelist": "--env-allow",
    "comment_prefix": "--comment-prefix",
    "static_path": "--static-path",
    "cell_parser": "--cell-parser",
}
#: Kernel Gateway's switches (``True``/``False`` values) and nb2svc's ``--X/--no-X`` flags.
SWITCHES = {"list_kernels": "list-kernels", "allow_notebook_download": "allow-notebook-download"}

#: Options nb2svc deliberately lacks, and what to write instead (the migration table's notes).
INSTEAD = {
    "port_retries": "a taken port is an error here; pick a free one with --port (0: any free port)",
    "certfile": "terminate TLS in front of nb2svc (ingress, load balancer, sidecar)",
    "keyfile": "terminate TLS in front of nb2svc (ingress, load balancer, sidecar)",
    "client_ca": "terminate TLS in front of nb2svc (ingress, load balancer, sidecar)",
    "ssl_version": "terminate TLS in front of nb2svc (ingress, load balancer, sidecar)",
    "trust_xheaders": "nb2svc builds no URL from client addresses; let the proxy in front log them",
    "ws_ping_interval": "idle websockets are kept by the clients' own pings; nothing to set",
    "log_datefmt": "use --log-format json for machine-read timestamps",
    "generate_config": "write a TOML file of option names and pass --config FILE",
}

#: Names Kernel Gateway accepts without a class (its aliases), beyond nb2svc's own flags.
BARE = frozenset({"api", "seed_uri", "prespawn_count", "port_retries", "certfile", "keyfile", "client_ca"})

KERNEL_MODE_APIS = ("kernel_gateway.jupyter_websocket", "jupyter_websocket", "jupyter-websocket")
API_MODE_APIS = ("kernel_gateway.notebook_http", "notebook_http", "notebook-http")
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _kg_name(arg: str) -> tuple[str, str | None] | None:
    """``(option name, value or None)`` of a Kernel Gateway spelling, else ``None``."""
    if not arg.startswith("--"):
        return None
    key, eq, value = arg[2:].partition("=")
    cls, dot, name = key.rpartition(".")
    if dot and cls not in KG_CLASSES:
        return None
    name = name.replace("-", "_")
    if not dot and name not in BARE and not (name in INSTEAD and "_" in name):
        return None
    return name, (value if eq else None)


def translate(args: Sequence[str]) -> list[str]:
    """``args`` of ``nb2svc serve`` with Kernel Gateway's spellings rewritten (see module doc)."""
    out: list[str] = []
    seed: str | None = None
    kernel_mode = "--kernels" in args
    prespawn: str | None = None
    items = list(args)
    index = 0
    while index < len(items):
        arg = items[index]
        index += 1
        if arg == "--":
            out += items[index - 1 :]
            break
        found = _kg_name(arg)
        if found is None:
            out.append(arg)
            continue
        name, value = found
        if name in INSTEAD:
            raise click.UsageError(f"{arg.partition('=')[0]}: not an nb2svc option; {INSTEAD[name]}")
        if value is None:
            if index >= len(items):
                raise click.UsageError(f"{arg}: Kernel Gateway's option needs a value ({arg}=VALUE)")
            value = items[index]
            index += 1
        if name == "api":
            if value in KERNEL_MODE_APIS:
                kernel_mode = True
            elif value not in API_MODE_APIS:
                raise click.UsageError(
                    f"{arg.partition('=')[0]}: {value!r} is not kernel_gateway.notebook_http or "
                    "kernel_gateway.jupyter_websocket"
                )
        elif name == "seed_uri":
            seed = value
        elif name == "prespawn_count":
            prespawn = value
        elif name in SWITCHES:
            if value.lower() not in TRUE + FALSE:
                raise click.UsageError(f"{arg.partition('=')[0]}: expected True or False, got {value!r}")
            out.append(("--" if value.lower() in TRUE else "--no-") + SWITCHES[name])
        elif name == "log_level":
            out += ["--log-level", value.lower()]
        elif name in SAME:
            out += [SAME[name], value]
        else:
            raise click.UsageError(
                f"{arg.partition('=')[0]}: not a Kernel Gateway option nb2svc reads "
                "(see the README, Migrating from Kernel Gateway)"
            )
    if kernel_mode and "--kernels" not in out:
        out.append("--kernels")
    if prespawn is not None:
        out += ["--prespawn" if kernel_mode else "--pool-size", prespawn]
    if seed is not None:
        out += ["--seed", seed] if kernel_mode else [seed]
    return out


__all__ = ["translate"]
