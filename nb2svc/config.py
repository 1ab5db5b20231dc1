"""One table of settings drives the CLI, the environment and the generated bundle.

Every runtime option is declared once in :data:`OPTIONS`: its name, its ``NB2SVC_*``
environment variable, the Kernel Gateway ``KG_*`` alias where the reference has one,
its type, default and help. From that table come the click options of ``nb2svc
serve`` (with ``show_default`` and ``show_envvar``), the typed :class:`Settings` (one
field per option, checked against the table at import), :func:`settings_from_env`,
config-file keys and the docs. A test fails when an option is missing from the README.

Settings are resolved once, where a server is planned (:mod:`nb2svc.plan`): by ``nb2svc
serve`` in gunicorn's master from flags, variables and the config file, or by a generated
bundle's ``app.py`` from its environment. Workers get them inside the plan and read no
variable again.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2svc.store_url import normalize_store_url


@dataclass(frozen=True)
class Option:
    """One setting. ``type`` is one of ``str``, ``int``, ``float``, ``bool``, ``list``.

    Numbers are checked against ``minimum`` (inclusive), ``above`` (exclusive) and
    ``maximum``; ``words`` are spelled values that stand for another (``auto`` for a
    derived value, ``None``); ``normalize`` turns an accepted string into its canonical
    form or raises ``ValueError`` with the reason. A value that fails any of these is a
    usage error naming the flag and its variable, before anything starts.
    """

    name: str
    type: type
    default: Any
    help: str
    kg_alias: str | None = None
    modes: tuple[str, ...] = ("api", "kernels")
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    words: Mapping[str, Any] = field(default_factory=dict)
    normalize: Callable[[str], Any] | None = None
    #: How the default reads in ``--help`` and the README (``None``: the value itself).
    shown_default: str | None = None
    #: Part of ``nb2svc build`` (baked into the image and manifests) as well as ``serve``.
    deploy: bool = False
    #: The :class:`Settings` field's type when ``normalize`` gives another than ``type``.
    field_type: str | None = None
    #: Its section of ``--help``: one of :data:`OPTION_GROUPS`, in that order.
    group: str = ""

    @property
    def env(self) -> str:
        return "NB2SVC_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        """The default as ``--help`` and the README show it."""
        if self.shown_default is not None:
            return self.shown_default
        if self.type is list:
            return ",".join(self.default) or "(none)"
        if self.type is bool:
            return "on" if self.default else "off"
        if self.default == "":
            return "(none)"
        if self.type is float:
            return f"{self.default:g}"
        return str(self.default)

    def check(self, value: Any) -> None:
        """Raise ``ValueError`` (the reason, without the option's name) for an out-of-range number."""
        if self.type not in (int, float, ByteSize) or value is None:
            return
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}, got {value:g}")
        if self.above is not None and value <= self.above:
            raise ValueError(f"must be more than {self.above:g}, got {value:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"must be at most {self.maximum:g}, got {value:g}")


MiB = 1024 * 1024

#: Units a size in bytes may carry (case-insensitive; a bare number is bytes). ``MiB`` is
#: what ``--help`` prints; ``MB`` is read as MiB too, as people mean it for a body limit.
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": MiB, "mb": MiB, "mib": MiB}
SIZE_UNITS |= {"g": 1024 * MiB, "gb": 1024 * MiB, "gib": 1024 * MiB}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


class ByteSize(int):
    """A size in bytes, written as ``10485760``, ``10MiB``, ``10 MiB`` or ``10MB``: an
    option's type where ``--help`` shows a size with its unit, so what it prints is accepted."""

    description = "a size such as 10MiB or 1048576"

    def __new__(cls, value: Any) -> ByteSize:
        if isinstance(value, int) and not isinstance(value, bool):
            return super().__new__(cls, value)
        match = _SIZE.match(str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in SIZE_UNITS:
            raise ValueError(value)
        return super().__new__(cls, int(float(match.group(1)) * SIZE_UNITS[unit]))


#: Seconds a drain waits beyond ``--request-timeout``: the 504 (or the late answer) of a
#: request that started just before SIGTERM still has to be written.
DRAIN_MARGIN = 5
#: Seconds of the graceful timeout kept back, after the drain, for stopping kernels.
SHUTDOWN_RESERVE = 3

#: Environment variables every kernel receives (see ``runtime/kernel/environment.py``);
#: here so that ``--env-allow``'s help and the README cannot drift from the code.
KERNEL_ENV_ALLOW = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "USER")
KERNEL_ENV_PREFIXES = ("LC_", "KERNEL_")
ENV_ALWAYS = KERNEL_ENV_ALLOW + tuple(prefix + "*" for prefix in KERNEL_ENV_PREFIXES)


def normalize_base_url(value: str) -> str:
    """``api`` and ``/api`` become ``/api/``: one leading and one trailing slash."""
    text = value.strip()
    if any(c in text for c in "?#\\ ") or "://" in text:
        raise ValueError(f"must be a URL path such as /api/, got {value!r}")
    parts = [p for p in text.split("/") if p]
    return "/" + "".join(p + "/" for p in parts)


def normalize_host(value: str) -> str:
    text = value.strip()
    if not text or any(c.isspace() for c in text) or "/" in text:
        raise ValueError(f"must be a host name or IP address, got {value!r}")
    return text


def normalize_advertise_url(value: str) -> str:
    """``http(s)://host:port`` only: other replicas add the request's path (base URL included)."""
    from urllib.parse import urlsplit

    text = value.strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be http://host:port or https://host:port, got {value!r}")
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"scheme, host and port only (the base URL is added), got {value!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def normalize_static_path(value: str) -> str:
    """An existing directory, made absolute (workers resolve it the same wherever they run)."""
    text = value.strip()
    if not text:
        return ""
    if not os.path.isdir(text):
        raise ValueError(f"no such directory: {value!r}")
    return os.path.abspath(text)


POOL_SIZE_FORM = re.compile(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?")


def pool_bounds(value: int | str) -> tuple[int, int]:
    """``(MIN, MAX)`` of a ``--pool-size``: ``3`` is ``(3, 3)``, ``"1..4"`` is ``(1, 4)``.

    Raises ``ValueError`` with the reason: a fixed pool has at least one kernel, an elastic
    one at least one at its most (MIN may be 0: no kernel while nothing is asked).
    """
    match = POOL_SIZE_FORM.fullmatch(str(value))
    if match is None:
        raise ValueError(f"must be N or MIN..MAX (e.g. 2 or 1..8), got {value!r}")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) is not None else low
    if high < 1:
        if match.group(2) is None:
            raise ValueError(f"must be at least 1, got {low}")
        raise ValueError(f"MAX must be at least 1, got {value!r}")
    if low > high:
        raise ValueError(f"MIN must not be above MAX, got {value!r}")
    return low, high


def normalize_pool_size(value: str) -> Any:
    """A fixed size as its number (``"3"`` is ``3``, as before elastic pools), an elastic one
    in its canonical spelling (``" 1 .. 4"`` is ``"1..4"``)."""
    low, high = pool_bounds(value)
    return low if low == high else f"{low}..{high}"


#: ``--cell-parser`` values, and Kernel Gateway's ``KG_CELL_PARSER`` module names for them.
CELL_PARSERS = ("default", "swagger")
KG_CELL_PARSERS = {
    "kernel_gateway.notebook_http.cell.parser": "default",
    "kernel_gateway.notebook_http.swagger.parser": "swagger",
}


#: The sections of ``nb2svc serve --help`` (and ``build``, ``test``), by mode and topic, in
#: the order they print; every option names one, so the help cannot drift from the table.
GROUP_SERVER = "Server"
GROUP_SECURITY = "Security and CORS"
GROUP_LOGGING = "Logging"
GROUP_KERNELS = "Kernels (both modes)"
GROUP_POOL = "API mode: kernel pool and requests"
GROUP_JOBS = "API mode: async jobs and the shared store"
GROUP_NOTEBOOK = "API mode: development and Kernel Gateway extras"
GROUP_KERNEL_MODE = "Kernel mode (--kernels)"
OPTION_GROUPS = (
    GROUP_SERVER,
    GROUP_SECURITY,
    GROUP_LOGGING,
    GROUP_KERNELS,
    GROUP_POOL,
    GROUP_JOBS,
    GROUP_NOTEBOOK,
    GROUP_KERNEL_MODE,
)

OPTIONS: tuple[Option, ...] = (
    Option(
        "host",
        str,
        "127.0.0.1",
        "Interface to listen on (0.0.0.0 for all).",
        kg_alias="KG_IP",
        normalize=normalize_host,
        group=GROUP_SERVER,
    ),
    Option(
        "port",
        int,
        8888,
        "Port to listen on (0: any free port).",
        kg_alias="KG_PORT",
        minimum=0,
        maximum=65535,
        deploy=True,
        group=GROUP_SERVER,
    ),
    Option(
        "metrics_port",
        int,
        0,
        "A second port on --host that serves only /_api/metrics and the health checks, "
        "without the token: for a Prometheus scraper when a token is set (0: none; the main "
        "port's /_api/metrics then needs the token).",
        minimum=0,
        maximum=65535,
        group=GROUP_SERVER,
    ),
    Option(
        "workers",
        int,
        1,
        "gunicorn worker processes (API mode: each owns its own kernel pool).",
        minimum=1,
        deploy=True,
        group=GROUP_SERVER,
    ),
    Option(
        "base_url",
        str,
        "/",
        "URL prefix for every route (api, /api and /api/ all mean /api/).",
        kg_alias="KG_BASE_URL",
        normalize=normalize_base_url,
        deploy=True,
        group=GROUP_SERVER,
    ),
    Option(
        "static_path",
        str,
        "",
        "Serve the files in this directory at /public/... without a token, as Kernel Gateway does "
        "(empty: no /public); in kernel mode, a web page served beside the kernels it starts.",
        kg_alias="KG_STATIC_PATH",
        normalize=normalize_static_path,
        group=GROUP_SERVER,
    ),
    Option(
        "token",
        str,
        "",
        "Require this token ('Authorization: token ...', 'Bearer ...' or ?token=). Empty: no auth.",
        kg_alias="KG_AUTH_TOKEN",
        group=GROUP_SECURITY,
    ),
    Option(
        "allow_origin",
        str,
        "",
        "CORS Access-Control-Allow-Origin (empty: CORS off).",
        kg_alias="KG_ALLOW_ORIGIN",
        group=GROUP_SECURITY,
    ),
    Option(
        "allow_credentials",
        str,
        "",
        "CORS Access-Control-Allow-Credentials.",
        kg_alias="KG_ALLOW_CREDENTIALS",
        group=GROUP_SECURITY,
    ),
    Option(
        "allow_headers",
        str,
        "",
        "CORS Access-Control-Allow-Headers.",
        kg_alias="KG_ALLOW_HEADERS",
        group=GROUP_SECURITY,
    ),
    Option(
        "allow_methods",
        str,
        "",
        "CORS Access-Control-Allow-Methods.",
        kg_alias="KG_ALLOW_METHODS",
        group=GROUP_SECURITY,
    ),
    Option(
        "expose_headers",
        str,
        "",
        "CORS Access-Control-Expose-Headers.",
        kg_alias="KG_EXPOSE_HEADERS",
        group=GROUP_SECURITY,
    ),
    Option(
        "max_age",
        str,
        "",
        "CORS Access-Control-Max-Age (seconds).",
        kg_alias="KG_MAX_AGE",
        group=GROUP_SECURITY,
    ),
    Option(
        "pool_size",
        str,
        2,
        "Warm kernels per worker (API mode): N, or MIN..MAX to start more while requests wait "
        "and stop them after --pool-idle-timeout (never below MIN; ready once MIN are warm).",
        kg_alias="KG_PRESPAWN_COUNT",
        modes=("api",),
        normalize=normalize_pool_size,
        deploy=True,
        field_type="int | str",
        group=GROUP_POOL,
    ),
    Option(
        "pool_idle_timeout",
        float,
        60.0,
        "Seconds a kernel above an elastic pool's MIN may stay idle before it is stopped.",
        modes=("api",),
        above=0,
        group=GROUP_POOL,
    ),
    Option(
        "kernel_max_requests",
        int,
        0,
        "Replace a kernel after it has answered this many requests (0: never).",
        modes=("api",),
        minimum=0,
        group=GROUP_POOL,
    ),
    Option(
        "kernel_max_memory",
        int,
        0,
        "Replace a kernel whose resident memory is over this many MiB after it answers (0: never).",
        modes=("api",),
        minimum=0,
        group=GROUP_POOL,
    ),
    Option(
        "request_timeout",
        float,
        30.0,
        "Seconds a request may run its cells; then the kernel is interrupted and the answer is 504.",
        modes=("api",),
        above=0,
        deploy=True,
        group=GROUP_POOL,
    ),
    Option(
        "queue_timeout",
        float,
        30.0,
        "Seconds a request may wait for a free kernel before a 503.",
        modes=("api",),
        above=0,
        group=GROUP_POOL,
    ),
    Option(
        "max_queue",
        int,
        256,
        "Requests that may wait for a kernel per worker; more get 503 (0: none wait).",
        modes=("api",),
        minimum=0,
        group=GROUP_POOL,
    ),
    # --- async jobs and the shared store (issue 18) ---
    Option(
        "store",
        str,
        "",
        "Where jobs, and kernel mode's kernels and sessions, live: empty for the embedded store "
        "(SQLite, shared by this server's workers), or redis://[:password@]host:port/db / "
        "rediss://... for several replicas. Printed with the password redacted.",
        normalize=normalize_store_url,
        shown_default="embedded",
        deploy=True,  # `build --k8s --store URL` reads it from a Secret; never baked (see bundle.py)
        group=GROUP_JOBS,
    ),
    Option(
        "store_password_file",
        str,
        "",
        "Read the store's password from this file (first line); keeps it out of the URL, the "
        "command line and the environment.",
        group=GROUP_JOBS,
    ),
    Option(
        "advertise_url",
        str,
        "",
        "Kernel mode with a shared --store: the URL other replicas reach this one at (its pod "
        "address on Kubernetes) to forward requests for the kernels it owns (default: the bound "
        "address).",
        modes=("kernels",),
        normalize=normalize_advertise_url,
        shown_default="the bound address",
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "replica_lease",
        float,
        10.0,
        "Kernel mode with a shared --store: seconds after which a replica that stopped renewing "
        "its lease is gone; another adopts its kernels that can be reloaded.",
        modes=("kernels",),
        above=0,
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "max_jobs_per_client",
        int,
        100,
        "Async jobs one client (its address, and token when one is required) may have running or "
        "not yet collected; one more is a 429.",
        modes=("api",),
        minimum=1,
        group=GROUP_JOBS,
    ),
    Option(
        "job_result_max_bytes",
        ByteSize,
        16 * MiB,
        "Largest answer a job keeps (status, headers and body); a larger one fails the job "
        "with JobResultTooLarge instead of being truncated.",
        modes=("api",),
        minimum=1,
        shown_default="16 MiB",
        group=GROUP_JOBS,
    ),
    Option(
        "job_ttl",
        float,
        600.0,
        "Seconds a finished job's answer is kept for its poller.",
        modes=("api",),
        above=0,
        group=GROUP_JOBS,
    ),
    Option(
        "job_lease",
        float,
        10.0,
        "Seconds after which a job whose worker or replica stopped renewing its lease "
        "fails with reason 'replica lost'.",
        modes=("api",),
        minimum=1,
        group=GROUP_JOBS,
    ),
    Option(
        "max_body_size",
        ByteSize,
        10 * MiB,
        "Largest request body, in bytes or with a unit (10MiB, 512KiB); larger gets 413.",
        minimum=0,
        shown_default="10 MiB",
        group=GROUP_SERVER,
    ),
    Option(
        "kernel_name",
        str,
        "",
        "Kernel spec to run (default: the notebook's).",
        group=GROUP_KERNELS,
    ),
    Option(
        "kernel_start_timeout",
        float,
        60.0,
        "Seconds a kernel may take to start and run its setup.",
        above=0,
        deploy=True,
        group=GROUP_KERNELS,
    ),
    Option(
        "kernel_start",
        str,
        "auto",
        "How pool kernels start: fork (from a template that ran the notebook's setup once; local "
        "ipykernel only), spawn (each runs setup itself), or auto (fork where safe, else spawn and say why).",
        choices=("auto", "fork", "spawn"),
        group=GROUP_KERNELS,
    ),
    Option(
        "transport",
        str,
        "auto",
        "How the server reaches kernels: auto (IPC for a local ipykernel, else TCP on the loopback "
        "or the provisioner's address), tcp or ipc.",
        choices=("auto", "tcp", "ipc"),
        group=GROUP_KERNELS,
    ),
    Option(
        "env_allow",
        list,
        (),
        "Extra environment variable names passed to kernels (comma-separated); "
        + ", ".join(ENV_ALWAYS)
        + " always pass.",
        group=GROUP_KERNELS,
    ),
    Option(
        "log_level",
        str,
        "info",
        "Log level.",
        choices=("debug", "info", "warning", "error"),
        group=GROUP_LOGGING,
    ),
    Option(
        "log_format",
        str,
        "text",
        "Log format: Jupyter-style text, or JSON lines for containers.",
        choices=("text", "json"),
        group=GROUP_LOGGING,
    ),
    Option(
        "graceful_timeout",
        float,
        None,
        "Seconds a shutdown (SIGTERM, Ctrl-C) gives requests in flight and then the kernels' stop "
        f"(auto: --request-timeout + {DRAIN_MARGIN + SHUTDOWN_RESERVE}, so a running request can finish).",
        above=0,
        words={"auto": None},
        shown_default="auto",
        deploy=True,
        group=GROUP_SERVER,
    ),
    # --- kernel mode (nb2svc serve --kernels) ---
    Option(
        "max_kernels",
        int,
        0,
        "Most kernels at once (0: no limit); POST /api/kernels beyond it is a 403.",
        kg_alias="KG_MAX_KERNELS",
        modes=("kernels",),
        minimum=0,
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "default_kernel",
        str,
        "",
        "Kernel spec for requests that name none (default: the seed notebook's, else python3).",
        kg_alias="KG_DEFAULT_KERNEL_NAME",
        modes=("kernels",),
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "force_kernel",
        str,
        "",
        "Start every kernel with this spec, whatever the client asks for.",
        kg_alias="KG_FORCE_KERNEL_NAME",
        modes=("kernels",),
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "list_kernels",
        bool,
        True,
        "Allow GET /api/kernels and /api/sessions (JupyterLab and --gateway-url poll them).",
        kg_alias="KG_LIST_KERNELS",
        modes=("kernels",),
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "cull_idle_timeout",
        float,
        0.0,
        "Shut down kernels idle (and not busy) for this many seconds (0: never).",
        modes=("kernels",),
        minimum=0,
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "cull_interval",
        float,
        300.0,
        "Seconds between idle-kernel checks.",
        modes=("kernels",),
        above=0,
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "cull_connected",
        bool,
        False,
        "Also cull idle kernels that have clients connected.",
        modes=("kernels",),
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "prespawn",
        int,
        0,
        "Kernels started (and seeded) at start-up; listed like any other.",
        kg_alias="KG_PRESPAWN_COUNT",
        modes=("kernels",),
        minimum=0,
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "seed",
        str,
        "",
        "Notebook whose code cells run on every new kernel of its kernel spec.",
        kg_alias="KG_SEED_URI",
        modes=("kernels",),
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "warm",
        int,
        0,
        "Hidden, already started (and seeded) kernels that POST /api/kernels hands out at once.",
        modes=("kernels",),
        minimum=0,
        group=GROUP_KERNEL_MODE,
    ),
    # --- security (see README, Security) ---
    Option(
        "auth",
        bool,
        True,
        "--no-auth: serve kernels without a token on a non-loopback --host (anyone who can reach "
        "the port runs code as this user); without it that combination refuses to start.",
        modes=("kernels",),
        group=GROUP_SECURITY,
    ),
    Option(
        "allow_remote_access",
        bool,
        False,
        "Answer a tokenless server on a loopback --host whatever Host header a request names "
        "(off: a Host that is not localhost, 127.0.0.0/8, ::1 or --allow-host gets 403, which stops "
        "DNS rebinding).",
        group=GROUP_SECURITY,
    ),
    Option(
        "allow_host",
        list,
        (),
        "More Host names a tokenless loopback server answers (comma-separated), e.g. a name in "
        "/etc/hosts or a dev proxy's.",
        group=GROUP_SECURITY,
    ),
    Option(
        "token_file",
        str,
        "",
        "Read the token from this file (first line); keeps it out of the command line and environment.",
        group=GROUP_SECURITY,
    ),
    Option(
        "error_detail",
        str,
        "full",
        "What a failing cell's 500 carries: 'full' (error, message, the notebook's traceback) "
        "or 'message' (no traceback).",
        modes=("api",),
        choices=("full", "message"),
        group=GROUP_SECURITY,
    ),
    Option(
        "header_timeout",
        float,
        10.0,
        "Seconds a client has to send a request's line and headers; then the connection is closed.",
        above=0,
        group=GROUP_SERVER,
    ),
    Option(
        "keepalive_timeout",
        float,
        5.0,
        "Seconds a keep-alive connection may stay idle between requests before it is closed.",
        above=0,
        group=GROUP_SERVER,
    ),
    Option(
        "max_message_size",
        ByteSize,
        64 * MiB,
        "Largest websocket message, in bytes or with a unit (64MiB); a larger one closes the socket "
        "with 1009.",
        modes=("kernels",),
        minimum=1,
        shown_default="64 MiB",
        group=GROUP_KERNEL_MODE,
    ),
    Option(
        "reload",
        bool,
        False,
        "Watch the notebook and serve each saved version once it compiles and its pool is warm "
        "(development; not for bundles).",
        modes=("api",),
        group=GROUP_NOTEBOOK,
    ),
    Option(
        "reload_extra",
        list,
        (),
        "More files whose changes trigger --reload (comma-separated), e.g. a module the notebook imports.",
        modes=("api",),
        group=GROUP_NOTEBOOK,
    ),
    # --- Kernel Gateway's notebook-http extras (issue 10) ---
    Option(
        "allow_notebook_download",
        bool,
        False,
        "Serve the notebook itself at GET /_api/source (token required, as every endpoint).",
        kg_alias="KG_ALLOW_NOTEBOOK_DOWNLOAD",
        modes=("api",),
        group=GROUP_NOTEBOOK,
    ),
    Option(
        "cell_parser",
        str,
        "default",
        "How endpoints are declared: 'default' (`# GET /path` cells) or 'swagger' (a Swagger/OpenAPI "
        "document in a markdown cell, `# operationId: name` cells); Kernel Gateway's module names "
        "are accepted too.",
        kg_alias="KG_CELL_PARSER",
        modes=("api",),
        choices=CELL_PARSERS,
        words=KG_CELL_PARSERS,
        group=GROUP_NOTEBOOK,
    ),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
#: What ``nb2svc build`` bakes into the image and manifests (flags of ``build`` too).
DEPLOY_OPTIONS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.deploy)


@dataclass(frozen=True)
class ShutdownTiming:
    """How long a shutdown takes, derived in one place for ``serve``, the bundle's
    ``gunicorn.conf.py``, its Dockerfile and its Kubernetes Deployment.

    ``graceful`` is gunicorn's graceful timeout (the master SIGKILLs a worker after it);
    the worker drains requests in flight for ``drain`` seconds and keeps the rest for
    shutting its kernels down. By default ``drain`` covers ``request_timeout`` plus
    :data:`DRAIN_MARGIN`, so a request SIGTERM interrupts still gets its answer.
    """

    request_timeout: float
    graceful: int

    @property
    def drain(self) -> int:
        return max(1, self.graceful - SHUTDOWN_RESERVE)

    @property
    def covers_requests(self) -> bool:
        """Whether a request that runs up to ``request_timeout`` finishes within the drain."""
        return self.drain >= self.request_timeout

    def termination_grace(self, prestop: int) -> int:
        """A pod's ``terminationGracePeriodSeconds``: preStop pause, graceful timeout, slack."""
        return prestop + self.graceful + 10


def shutdown_timing(request_timeout: float, graceful_timeout: float | None = None) -> ShutdownTiming:
    """The shutdown timing for these settings; ``graceful_timeout`` ``None`` means derived."""
    if graceful_timeout is None:
        graceful = math.ceil(request_timeout) + DRAIN_MARGIN + SHUTDOWN_RESERVE
    else:
        graceful = max(1, math.ceil(graceful_timeout))
    return ShutdownTiming(request_timeout, graceful)


def parse_value(option: Option, raw: Any) -> Any:
    """Convert a raw (string or typed) value to the option's type and check it.

    Raises ``ValueError`` with one line naming the flag and its variable
    (``--port (NB2SVC_PORT): must be at most 65535, got 99999``).
    """
    if raw is None:
        return option.default
    where = f"{option.flag} ({option.env})"
    if isinstance(raw, str) and raw.strip().lower() in option.words:
        return option.words[raw.strip().lower()]
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
        if option.type in (int, ByteSize) and isinstance(raw, (bool, float)):
            raise ValueError(raw)
        value = option.type(raw.strip() if isinstance(raw, str) and option.type is not str else raw)
    except (TypeError, ValueError):
        words = "".join(f" or {w!r}" for w in option.words)
        kind = getattr(option.type, "description", option.type.__name__)
        raise ValueError(f"{where}: expected {kind}{words}, got {raw!r}") from None
    if option.choices and value not in option.choices:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(option.choices)}")
    try:
        option.check(value)
        if option.normalize is not None:
            value = option.normalize(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return value


def _default(name: str) -> Any:
    return OPTIONS_BY_NAME[name].default


#: How each option type reads as a :class:`Settings` field annotation.
_FIELD_TYPES = {
    str: "str",
    int: "int",
    ByteSize: "int",
    float: "float",
    bool: "bool",
    list: "tuple[str, ...]",
}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Resolved settings: one typed field per :data:`OPTIONS` entry, in the table's order.

    Written out (rather than generated) so readers and type checkers see each field;
    :func:`_check_settings_fields` keeps it and the table in step at import, so the
    table stays the one source of names, types and defaults.
    """

    host: str = _default("host")
    port: int = _default("port")
    metrics_port: int = _default("metrics_port")
    workers: int = _default("workers")
    base_url: str = _default("base_url")
    static_path: str = _default("static_path")
    token: str = _default("token")
    allow_origin: str = _default("allow_origin")
    allow_credentials: str = _default("allow_credentials")
    allow_headers: str = _default("allow_headers")
    allow_methods: str = _default("allow_methods")
    expose_headers: str = _default("expose_headers")
    max_age: str = _default("max_age")
    pool_size: int | str = _default("pool_size")  # N, or "MIN..MAX" (:func:`pool_bounds`)
    pool_idle_timeout: float = _default("pool_idle_timeout")
    kernel_max_requests: int = _default("kernel_max_requests")
    kernel_max_memory: int = _default("kernel_max_memory")
    request_timeout: float = _default("request_timeout")
    queue_timeout: float = _default("queue_timeout")
    max_queue: int = _default("max_queue")
    store: str = _default("store")
    store_password_file: str = _default("store_password_file")
    advertise_url: str = _default("advertise_url")
    replica_lease: float = _default("replica_lease")
    max_jobs_per_client: int = _default("max_jobs_per_client")
    job_result_max_bytes: int = _default("job_result_max_bytes")
    job_ttl: float = _default("job_ttl")
    job_lease: float = _default("job_lease")
    max_body_size: int = _default("max_body_size")
    kernel_name: str = _default("kernel_name")
    kernel_start_timeout: float = _default("kernel_start_timeout")
    kernel_start: str = _default("kernel_start")
    transport: str = _default("transport")
    env_allow: tuple[str, ...] = _default("env_allow")
    log_level: str = _default("log_level")
    log_format: str = _default("log_format")
    graceful_timeout: float | None = _default("graceful_timeout")
    max_kernels: int = _default("max_kernels")
    default_kernel: str = _default("default_kernel")
    force_kernel: str = _default("force_kernel")
    list_kernels: bool = _default("list_kernels")
    cull_idle_timeout: float = _default("cull_idle_timeout")
    cull_interval: float = _default("cull_interval")
    cull_connected: bool = _default("cull_connected")
    prespawn: int = _default("prespawn")
    seed: str = _default("seed")
    warm: int = _default("warm")
    auth: bool = _default("auth")
    allow_remote_access: bool = _default("allow_remote_access")
    allow_host: tuple[str, ...] = _default("allow_host")
    token_file: str = _default("token_file")
    error_detail: str = _default("error_detail")
    header_timeout: float = _default("header_timeout")
    keepalive_timeout: float = _default("keepalive_timeout")
    max_message_size: int = _default("max_message_size")
    reload: bool = _default("reload")
    reload_extra: tuple[str, ...] = _default("reload_extra")
    allow_notebook_download: bool = _default("allow_notebook_download")
    cell_parser: str = _default("cell_parser")

    @property
    def url(self) -> str:
        """Where the server answers: ``http://host:port/base/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.base_url}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _check_settings_fields(options: Sequence[Option] = OPTIONS, settings: type = Settings) -> None:
    """Fail at import when :class:`Settings` and :data:`OPTIONS` disagree (a name, order or type)."""
    expected = [
        (o.name, (o.field_type or _FIELD_TYPES[o.type]) + (" | None" if o.default is None else ""))
        for o in options
    ]
    actual = [(f.name, str(f.type)) for f in dataclasses.fields(settings)]
    if actual != expected:
        extra = sorted(set(actual) ^ set(expected))
        raise TypeError(f"Settings does not match OPTIONS (name, type, or order): {extra or actual}")
    ungrouped = [o.name for o in options if o.group not in OPTION_GROUPS]
    if ungrouped:
        raise TypeError(f"options without a --help section of OPTION_GROUPS: {', '.join(ungrouped)}")


_check_settings_fields()


def env_value(option: Option, value: Any) -> str:
    """``value`` as the option's ``NB2SVC_*`` variable spells it (what :func:`parse_value` reads back)."""
    if option.type is list:
        return ",".join(value)
    if option.type is bool:
        return "true" if value else "false"
    if value is None:
        return next(word for word, meant in option.words.items() if meant is None)
    if option.type is float:
        return f"{value:g}"
    return str(value)


def _config_table(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings table of a TOML or JSON file: the top level, or its ``[nb2svc]`` table."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(
            f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'TOML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    table = data.get("nb2svc", data)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [nb2svc] must be a table of settings")
    return table


def _parse_settings(table: Mapping[str, Any], where: str, allowed: Iterable[str]) -> dict[str, Any]:
    """``{option name: value}`` of a table whose keys are option names (``pool_size`` or
    ``pool-size``). An unknown key is an error naming the closest valid one, so a typo never
    silently falls back to a default."""
    allowed = sorted(allowed)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            if name in OPTIONS_BY_NAME:
                raise ValueError(f"{where}: not a per-notebook setting {key!r} (valid: {', '.join(allowed)})")
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = "see 'nb2svc serve --help' for the settings"
            if close:  # spelled the way the file spells its keys
                hint = f"did you mean {(close[0].replace('_', '-') if '-' in str(key) else close[0])!r}?"
            raise ValueError(f"{where}: unknown setting {key!r}; {hint}")
        try:
            values[name] = parse_value(OPTIONS_BY_NAME[name], raw)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return values


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML or JSON file: option names as keys (``pool_size`` or ``pool-size``),
    at the top level or under an ``[nb2svc]`` table. The ``mounts`` table is read by
    :func:`load_mount_tables`."""
    table = {k: v for k, v in _config_table(path).items() if k != MOUNTS_KEY}
    return _parse_settings(table, str(path), OPTIONS_BY_NAME)


#: Options a config file may set for one mounted notebook: what belongs to its own pool.
MOUNT_OPTIONS = frozenset(
    {
        "pool_size",
        "pool_idle_timeout",
        "max_queue",
        "queue_timeout",
        "kernel_name",
        "kernel_start",
        "kernel_max_requests",
        "kernel_max_memory",
    }
)
MOUNTS_KEY = "mounts"


def load_mount_tables(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Per-notebook settings of a config file: ``[mounts."/prefix"]`` or ``[mounts.stem]``
    tables of :data:`MOUNT_OPTIONS` (``{key: {option name: value}}``; ``{}`` without any).

    Which mount a key names is decided when the mounts are known (:func:`settings_for_mounts`).
    """
    tables = _config_table(path).get(MOUNTS_KEY, {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ValueError(f'{path}: {MOUNTS_KEY} must hold one table per notebook, e.g. [mounts."/orders"]')
    return {
        str(key): _parse_settings(table, f"{path}, [{MOUNTS_KEY}.{key}]", MOUNT_OPTIONS)
        for key, table in tables.items()
    }


def mount_key(prefix: str) -> str:
    """A mount's name in variable names: ``/api/v1`` -> ``API_V1``, the root ``ROOT``."""
    return re.sub(r"[^A-Z0-9]+", "_", prefix.upper()).strip("_") or "ROOT"


def mount_variable(name: str, prefix: str) -> str:
    """The variable that sets option ``name`` for the mount at ``prefix`` alone:
    ``NB2SVC_POOL_SIZE__ORDERS`` (no option's variable holds ``__``)."""
    return f"{OPTIONS_BY_NAME[name].env}__{mount_key(prefix)}"


def match_mount_tables(
    tables: Mapping[str, Mapping[str, Any]], mounts: Sequence[tuple[str, str]]
) -> dict[str, Mapping[str, Any]]:
    """Each ``[mounts.KEY]`` table by the prefix of the mount it names: KEY is a prefix
    (``/orders``) or a notebook file stem (``orders``) of the ``(prefix, stem)`` pairs.
    A table that names no mount, or two tables for one mount, is a ``ValueError``."""
    own: dict[str, Mapping[str, Any]] = {}
    for key, table in tables.items():
        matches = [prefix for prefix, stem in mounts if key in (prefix or "/", stem)]
        if not matches:
            known = ", ".join(f"{prefix or '/'} ({stem})" for prefix, stem in mounts)
            raise ValueError(f"[{MOUNTS_KEY}.{key}] names no mounted notebook (mounted: {known})")
        for prefix in matches:
            if prefix in own:
                raise ValueError(f"[{MOUNTS_KEY}.{key}]: {prefix or '/'} has two tables (by prefix and stem)")
            own[prefix] = table
    return own


def settings_for_mounts(
    settings: Settings,
    tables: Mapping[str, Mapping[str, Any]],
    mounts: Sequence[tuple[str, str]],
    *,
    flags: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> dict[str, Settings]:
    """Each mount's settings (by prefix), where it has its own: ``settings`` with the
    :data:`MOUNT_OPTIONS` of its variables (:func:`mount_variable`) and of its config-file
    table applied.

    ``mounts`` are ``(prefix, notebook file stem)`` pairs; a table's key is a prefix
    (``/orders``) or a stem (``orders``). The sources keep their order (a flag, then a
    variable, then the file), and within a source the more specific wins: a mount's
    variable beats ``NB2SVC_POOL_SIZE``, its table the file's top level, while a flag
    (named in ``flags``) beats both and a global variable beats the whole file. A table
    or variable that names no mount, or a variable whose mount name two prefixes share,
    is an error.
    """
    environ = os.environ if environ is None else environ
    flags = frozenset(flags)
    in_env = {
        name
        for name in MOUNT_OPTIONS
        if OPTIONS_BY_NAME[name].env in environ or (OPTIONS_BY_NAME[name].kg_alias or "") in environ
    }
    own = match_mount_tables(tables, mounts)
    keys: dict[str, list[str]] = {}
    for prefix, _ in mounts:
        keys.setdefault(mount_key(prefix), []).append(prefix or "/")
    for name in MOUNT_OPTIONS:
        stem = OPTIONS_BY_NAME[name].env + "__"
        stray = sorted(v for v in environ if v.startswith(stem) and v[len(stem) :] not in keys)
        if stray:
            known = ", ".join(f"{key} ({' and '.join(prefixes)})" for key, prefixes in keys.items())
            raise ValueError(f"{stray[0]} names no mounted notebook (mounted: {known})")
    chosen: dict[str, Settings] = {}
    for prefix, _ in mounts:
        changes: dict[str, Any] = {}
        for name in sorted(MOUNT_OPTIONS - flags):
            variable = mount_variable(name, prefix)
            if variable in environ:
                if len(keys[mount_key(prefix)]) > 1:
                    shared = " and ".join(keys[mount_key(prefix)])
                    raise ValueError(
                        f"{variable}: {shared} share the name {mount_key(prefix)}; mount one elsewhere"
                    )
                changes[name] = _parse_variable(name, variable, environ[variable])
            elif name in own.get(prefix, {}) and name not in in_env:
                changes[name] = own[prefix][name]
        if changes:
            chosen[prefix] = settings.replace(**changes)
    return chosen


def _parse_variable(name: str, variable: str, raw: str) -> Any:
    try:
        return parse_value(OPTIONS_BY_NAME[name], raw)
    except ValueError as exc:
        option = OPTIONS_BY_NAME[name]
        raise ValueError(str(exc).replace(f"{option.flag} ({option.env})", variable, 1)) from None


def settings_from_env(
    environ: Mapping[str, str] | None = None,
    file_values: Mapping[str, Any] | None = None,
    *,
    mode: str | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve every option: flags (``overrides``), then ``NB2SVC_*``, then ``KG_*``
    aliases, then the config file's ``file_values``, then the defaults.

    Raises ``ValueError`` for an invalid value. With ``mode`` (``api`` or ``kernels``),
    an invalid environment value of an option that mode does not use is ignored: a
    shared ``KG_PRESPAWN_COUNT=0`` means "no prespawned kernels" in kernel mode and must
    not fail on API mode's ``--pool-size`` rule.
    """
    environ = os.environ if environ is None else environ
    file_values = file_values or {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = environ.get(option.env)
        if raw is None and option.kg_alias:
            raw = environ.get(option.kg_alias)
        try:
            values[option.name] = (
                parse_value(option, raw) if raw is not None else file_values.get(option.name, option.default)
            )
        except ValueError:
            if mode is None or mode in option.modes:
                raise
            values[option.name] = option.default
    for name, value in overrides.items():
        if value is not None:
            values[name] = parse_value(OPTIONS_BY_NAME[name], value)
    return Settings(**values)


def settings_or_exit(
    environ: Mapping[str, str] | None = None, mounts: Sequence[tuple[str, str]] = ()
) -> Settings:
    """:func:`settings_from_env`, or one ``error:`` line on stderr and exit 2; with
    ``mounts`` (``(prefix, stem)`` of a bundle of several notebooks) their per-notebook
    variables are checked too (:func:`settings_for_mounts`).

    For a bundle run straight by gunicorn (the image's ``CMD``): its ``gunicorn.conf.py``
    resolves the settings in the master, and a bad ``NB2SVC_*`` value must read like
    ``nb2svc serve``'s usage error, not gunicorn's "Failed to read config file" traceback
    (gunicorn reports an ``Exception`` from a config file with its traceback; a
    ``SystemExit`` passes through it).
    """
    try:
        settings = settings_from_env(environ)
        if mounts:
            settings_for_mounts(settings, {}, mounts, environ=environ)
        return settings
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


# --- the README's option tables ---------------------------------------------------------

#: The README's generated blocks: ``<!-- options:api -->`` ... ``<!-- /options:api -->``.
README_BLOCKS = {"api": "options:api", "kernels": "options:kernels"}


def options_markdown(mode: str) -> str:
    """The Markdown table of ``mode``'s options: ``api`` lists every option API mode
    uses, ``kernels`` those only kernel mode uses (the shared ones are in the first)."""
    rows = ["| option | env | default | meaning |", "| --- | --- | --- | --- |"]
    for option in OPTIONS:
        if mode == "api" and "api" not in option.modes:
            continue
        if mode == "kernels" and option.modes != ("kernels",):
            continue
        flag = f"`{option.flag}/--no-{option.flag[2:]}`" if option.type is bool else f"`{option.flag}`"
        env = f"`{option.env}`" + (f" (`{option.kg_alias}`)" if option.kg_alias else "")
        meaning = option.help.replace("|", "\\|")
        if option.choices:
            meaning += " One of " + ", ".join(f"`{c}`" for c in option.choices) + "."
        rows.append(f"| {flag} | {env} | {option.default_text} | {meaning} |")
    return "\n".join(rows) + "\n"


def render_readme(text: str) -> str:
    """``text`` (the README) with every generated block replaced by the current tables."""
    for mode, marker in README_BLOCKS.items():
        start, end = f"<!-- {marker} -->\n", f"<!-- /{marker} -->"
        head, found, rest = text.partition(start)
        if not found or end not in rest:
            raise ValueError(f"README.md has no {start.strip()} ... {end} block")
        text = head + start + options_markdown(mode) + end + rest.split(end, 1)[1]
    return text


def main(argv: list[str] | None = None) -> int:
    """``python -m nb2svc.config --markdown [README.md]``: regenerate the README's option
    tables; with ``--check``, exit 1 (and change nothing) if they are stale."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nb2svc.config", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="regenerate the README's option tables")
    parser.add_argument("--check", action="store_true", help="only check that they are current")
    parser.add_argument("readme", nargs="?", default="README.md")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("nothing to do: pass --markdown")
    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    try:
        updated = render_readme(text)
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    if updated == text:
        return 0
    if args.check:
        print(f"{path}: option tables are stale; run python -m nb2svc.config --markdown", file=sys.stderr)
        return 1
    path.write_text(updated, encoding="utf-8")
    print(f"{path}: option tables updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
