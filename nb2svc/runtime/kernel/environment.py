"""What a kernel process may see of the server's environment: a whitelist.

The server's own secrets (its token, cloud credentials, database URLs) must never
reach notebook code, so a kernel gets only :data:`BASE_ENV_ALLOW`, ``LC_*``,
``KERNEL_*`` and the names the operator allows with ``--env-allow``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from nb2svc.config import KERNEL_ENV_ALLOW as BASE_ENV_ALLOW  # one list, shown in --help too
from nb2svc.config import KERNEL_ENV_PREFIXES as BASE_ENV_PREFIXES


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
