"""What a kernel process may see of the server's environment: a whitelist.

The server's own secrets (its token, cloud credentials, database URLs) must never
reach notebook code, so a kernel gets only :data:`BASE_ENV_ALLOW`, ``LC_*``,
``KERNEL_*`` and the names the operator allows with ``--env-allow``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

#: Environment variables a kernel always receives (everything else must be allowed).
BASE_ENV_ALLOW = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "USER")
BASE_ENV_PREFIXES = ("LC_", "KERNEL_")


def kernel_env(
    allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whitelisted environment for a kernel process, plus ``extra``."""
    environ = os.environ if environ is None else environ
    allowed = set(BASE_ENV_ALLOW) | set(allow)
    env = {k: v for k, v in environ.items() if k in allowed or k.startswith(BASE_ENV_PREFIXES)}
    env.update(extra or {})
    return env
