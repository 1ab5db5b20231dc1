"""One table of settings drives the CLI, the environment and the generated bundle.

Every runtime option is declared once in :data:`OPTIONS`: its name, its ``NB2SVC_*``
environment variable, the Kernel Gateway ``KG_*`` alias where the reference has one,
its type, default and help. From that table come the click options of ``nb2svc
serve`` (with ``show_default`` and ``show_envvar``), :func:`settings_from_env` (used by
generated bundles inside containers) and the docs. A test fails when an option is
missing from the README.

``nb2svc serve`` resolves flags, then exports the result as ``NB2SVC_*`` variables
before gunicorn loads the app, so a generated ``app.py`` and ``nb2svc serve`` read
their settings the same way: from the environment.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Option:
    """One setting. ``type`` is one of ``str``, ``int``, ``float``, ``bool``, ``list``."""

    name: str
    type: type
    default: Any
    help: str
    kg_alias: str | None = None
    modes: tuple[str, ...] = ("api", "kernels")
    choices: tuple[str, ...] | None = None

    @property
    def env(self) -> str:
        return "NB2SVC_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


MiB = 1024 * 1024

OPTIONS: tuple[Option, ...] = (
    Option("host", str, "127.0.0.1", "Interface to listen on (0.0.0.0 for all).", kg_alias="KG_IP"),
    Option("port", int, 8888, "Port to listen on.", kg_alias="KG_PORT"),
    Option("workers", int, 1, "gunicorn worker processes (API mode: each owns its own kernel pool)."),
    Option("base_url", str, "/", "URL prefix for every route.", kg_alias="KG_BASE_URL"),
    Option(
        "token",
        str,
        "",
        "Require this token ('Authorization: token ...', 'Bearer ...' or ?token=). Empty: no auth.",
        kg_alias="KG_AUTH_TOKEN",
    ),
    Option(
        "allow_origin",
        str,
        "",
        "CORS Access-Control-Allow-Origin (empty: CORS off).",
        kg_alias="KG_ALLOW_ORIGIN",
    ),
    Option(
        "allow_credentials",
        str,
        "",
        "CORS Access-Control-Allow-Credentials.",
        kg_alias="KG_ALLOW_CREDENTIALS",
    ),
    Option("allow_headers", str, "", "CORS Access-Control-Allow-Headers.", kg_alias="KG_ALLOW_HEADERS"),
    Option("allow_methods", str, "", "CORS Access-Control-Allow-Methods.", kg_alias="KG_ALLOW_METHODS"),
    Option("expose_headers", str, "", "CORS Access-Control-Expose-Headers.", kg_alias="KG_EXPOSE_HEADERS"),
    Option("max_age", str, "", "CORS Access-Control-Max-Age (seconds).", kg_alias="KG_MAX_AGE"),
    Option(
        "pool_size",
        int,
        2,
        "Warm kernels per worker (API mode).",
        kg_alias="KG_PRESPAWN_COUNT",
        modes=("api",),
    ),
    Option(
        "request_timeout",
        float,
        30.0,
        "Seconds a request may run its cells; then the kernel is interrupted and the answer is 504.",
        modes=("api",),
    ),
    Option(
        "queue_timeout",
        float,
        30.0,
        "Seconds a request may wait for a free kernel before a 503.",
        modes=("api",),
    ),
    Option(
        "max_queue", int, 256, "Requests that may wait for a kernel per worker; more get 503.", modes=("api",)
    ),
    Option("max_body_size", int, 10 * MiB, "Largest request body in bytes; larger gets 413."),
    Option("kernel_name", str, "", "Kernel spec to run (default: the notebook's)."),
    Option("kernel_start_timeout", float, 60.0, "Seconds a kernel may take to start and run its setup."),
    Option(
        "transport",
        str,
        "auto",
        "How the server reaches kernels: auto (IPC for a local ipykernel, else TCP on the loopback "
        "or the provisioner's address), tcp or ipc.",
        choices=("auto", "tcp", "ipc"),
    ),
    Option(
        "env_allow",
        list,
        (),
        "Extra environment variable names passed to kernels (comma-separated); "
        "PATH, HOME, LANG, LC_*, TZ, TMPDIR, PYTHONPATH, VIRTUAL_ENV and KERNEL_* always pass.",
    ),
    Option("log_level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Option(
        "log_format",
        str,
        "text",
        "Log format: Jupyter-style text, or JSON lines for containers.",
        choices=("text", "json"),
    ),
    Option("graceful_timeout", float, 30.0, "Seconds in-flight requests may take to finish on shutdown."),
    # --- kernel mode (nb2svc serve --kernels) ---
    Option(
        "max_kernels",
        int,
        0,
        "Most kernels at once (0: no limit); POST /api/kernels beyond it is a 403.",
        kg_alias="KG_MAX_KERNELS",
        modes=("kernels",),
    ),
    Option(
        "default_kernel",
        str,
        "",
        "Kernel spec for requests that name none (default: the seed notebook's, else python3).",
        kg_alias="KG_DEFAULT_KERNEL_NAME",
        modes=("kernels",),
    ),
    Option(
        "force_kernel",
        str,
        "",
        "Start every kernel with this spec, whatever the client asks for.",
        kg_alias="KG_FORCE_KERNEL_NAME",
        modes=("kernels",),
    ),
    Option(
        "list_kernels",
        bool,
        True,
        "Allow GET /api/kernels and /api/sessions (JupyterLab and --gateway-url poll them).",
        kg_alias="KG_LIST_KERNELS",
        modes=("kernels",),
    ),
    Option(
        "cull_idle_timeout",
        float,
        0.0,
        "Shut down kernels idle (and not busy) for this many seconds (0: never).",
        modes=("kernels",),
    ),
    Option("cull_interval", float, 300.0, "Seconds between idle-kernel checks.", modes=("kernels",)),
    Option(
        "cull_connected",
        bool,
        False,
        "Also cull idle kernels that have clients connected.",
        modes=("kernels",),
    ),
    Option(
        "prespawn",
        int,
        0,
        "Kernels started (and seeded) at start-up; listed like any other.",
        kg_alias="KG_PRESPAWN_COUNT",
        modes=("kernels",),
    ),
    Option(
        "seed",
        str,
        "",
        "Notebook whose code cells run on every new kernel of its kernel spec.",
        kg_alias="KG_SEED_URI",
        modes=("kernels",),
    ),
    Option(
        "warm",
        int,
        0,
        "Hidden, already started (and seeded) kernels that POST /api/kernels hands out at once.",
        modes=("kernels",),
    ),
    # --- security (see README, Security) ---
    Option(
        "auth",
        bool,
        True,
        "--no-auth: serve kernels without a token on a non-loopback --host (anyone who can reach "
        "the port runs code as this user); without it that combination refuses to start.",
        modes=("kernels",),
    ),
    Option(
        "token_file",
        str,
        "",
        "Read the token from this file (first line); keeps it out of the command line and environment.",
    ),
    Option(
        "error_detail",
        str,
        "full",
        "What a failing cell's 500 carries: 'full' (error, message, the notebook's traceback) "
        "or 'message' (no traceback).",
        modes=("api",),
        choices=("full", "message"),
    ),
    Option(
        "header_timeout",
        float,
        10.0,
        "Seconds a client has to send a request's line and headers; then the connection is closed.",
    ),
    Option(
        "keepalive_timeout",
        float,
        5.0,
        "Seconds a keep-alive connection may stay idle between requests before it is closed.",
    ),
    Option(
        "max_message_size",
        int,
        64 * MiB,
        "Largest websocket message in bytes; a larger one closes the socket with 1009.",
        modes=("kernels",),
    ),
    Option(
        "reload",
        bool,
        False,
        "Watch the notebook and serve each saved version once it compiles and its pool is warm "
        "(development; not for bundles).",
        modes=("api",),
    ),
    Option(
        "reload_extra",
        list,
        (),
        "More files whose changes trigger --reload (comma-separated), e.g. a module the notebook imports.",
        modes=("api",),
    ),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def parse_value(option: Option, raw: Any) -> Any:
    """Convert a raw (string or typed) value to the option's type, with a clear error."""
    if raw is None:
        return option.default
    try:
        if option.type is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if option.type is list:
            if isinstance(raw, (list, tuple)):
                return tuple(str(v) for v in raw)
            return tuple(v.strip() for v in str(raw).split(",") if v.strip())
        value = option.type(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{option.env}: expected {option.type.__name__}, got {raw!r}") from None
    if option.choices and value not in option.choices:
        raise ValueError(f"{option.env}: {value!r} is not one of {', '.join(option.choices)}")
    return value


@dataclass(frozen=True)
class Settings:
    """Resolved settings: one value per :data:`OPTIONS` entry."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            if name in OPTIONS_BY_NAME:
                return OPTIONS_BY_NAME[name].default
            raise AttributeError(name) from None

    def replace(self, **changes: Any) -> Settings:
        return Settings({**self.values, **changes})

    def to_env(self) -> dict[str, str]:
        """The ``NB2SVC_*`` variables that reproduce these settings in another process."""
        env = {}
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.type is list:
                env[option.env] = ",".join(value)
            elif option.type is bool:
                env[option.env] = "true" if value else "false"
            else:
                env[option.env] = str(value)
        return env


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML or JSON file: option names as keys (``pool_size`` or ``pool-size``).

    Either at the top level or under an ``[nb2svc]`` table. An unknown key is an error
    that lists the valid ones, so a typo never silently falls back to a default.
    """
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(
            f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'TOML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    data = data.get("nb2svc", data)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = str(key).replace("-", "_")
        if name not in OPTIONS_BY_NAME:
            valid = ", ".join(sorted(OPTIONS_BY_NAME))
            raise ValueError(f"{path}: unknown setting {key!r} (valid: {valid})")
        try:
            values[name] = parse_value(OPTIONS_BY_NAME[name], raw)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return values


def settings_from_env(
    environ: Mapping[str, str] | None = None, file_values: Mapping[str, Any] | None = None, **overrides: Any
) -> Settings:
    """Resolve every option: flags (``overrides``), then ``NB2SVC_*``, then ``KG_*``
    aliases, then the config file's ``file_values``, then the defaults."""
    environ = os.environ if environ is None else environ
    file_values = file_values or {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = environ.get(option.env)
        if raw is None and option.kg_alias:
            raw = environ.get(option.kg_alias)
        values[option.name] = (
            parse_value(option, raw) if raw is not None else file_values.get(option.name, option.default)
        )
    for name, value in overrides.items():
        if value is not None:
            values[name] = parse_value(OPTIONS_BY_NAME[name], value)
    return Settings(values)
