"""What a kernel process may see of the server's environment: a whitelist.

The server's own secrets (its token, cloud credentials, database URLs) must never
reach notebook code, so a kernel gets only :data:`BASE_ENV_ALLOW`, ``LC_*``,
``KERNEL_*`` and the names the operator allows with ``--env-allow``.

Every kernel also sees :data:`MARKERS`: ``KERNEL_GATEWAY=1`` (as Kernel Gateway sets
it; notebooks test it to skip their interactive client code when served) and
``NB2SVC=1``. They are set last, so neither the server's environment nor a client's
``env`` can override them (Kernel Gateway does the same).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from nb2svc.config import KERNEL_ENV_ALLOW as BASE_ENV_ALLOW  # one list, shown in --help too
from nb2svc.config import KERNEL_ENV_PREFIXES as BASE_ENV_PREFIXES

#: Set in every kernel's environment, whatever the request or server environment says.
MARKERS = MappingProxyType({"KERNEL_GATEWAY": "1", "NB2SVC": "1"})


def kernel_env(
    allow: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whitelisted environment for a kernel process, plus ``extra``, plus :data:`MARKERS`."""
    environ = os.environ if environ is None else environ
    allowed = set(BASE_ENV_ALLOW) | set(allow)
    env = {k: v for k, v in environ.items() if k in allowed or k.startswith(BASE_ENV_PREFIXES)}
    env.update(extra or {})
    env.update(MARKERS)
    return env
