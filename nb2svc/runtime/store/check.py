"""``python -m nb2svc.runtime.store.check``: can the store be used? Run by ``nb2svc serve``
before any worker starts, in a child process of its own.

Why a child: redis-py imports ``ssl``; imported in gunicorn's master, it would be imported
before the workers' gevent monkey-patching, which gevent warns may break TLS. The URL
and password file come on stdin (never argv, which other users can read); the answer is
one line on stdout (redacted) and the exit code: 0 usable, 1 not.
"""

from __future__ import annotations

import json
import sys

from nb2svc.runtime.store import StoreUnavailable, open_store


def check(url: str, password_file: str) -> str | None:
    """``None`` if the store answers a ping, else why not (credentials redacted)."""
    try:
        store = open_store(url, password_file)
        try:
            store.ping()
        finally:
            store.close()
    except StoreUnavailable as exc:
        return str(exc)
    return None


def main() -> int:
    request = json.loads(sys.stdin.read())
    problem = check(request["url"], request.get("password_file", ""))
    if problem is not None:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
