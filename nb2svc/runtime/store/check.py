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


def check_in_child(url: str, password_file: str = "", timeout: float = 30.0) -> str | None:
    """Run :func:`check` in a child process (see the module docstring): ``None`` if usable,
    else one redacted line saying why. A password in ``url`` is first erased from this
    process's command line and initial environment, as the token is."""
    import subprocess
    from urllib.parse import urlsplit

    from nb2svc.runtime.secret import erase
    from nb2svc.store_url import redact

    in_url = urlsplit(url).password
    if in_url and not erase(in_url):
        print("warning: could not erase the store password from this process's command line", file=sys.stderr)
    request = json.dumps({"url": url, "password_file": password_file})
    try:
        checked = subprocess.run(
            [sys.executable, "-m", "nb2svc.runtime.store.check"],
            input=request,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"{redact(url)}: no answer within {timeout:g}s"
    if checked.returncode == 0:
        return None
    return (checked.stdout.strip() or checked.stderr.strip() or "the check failed").splitlines()[-1]


def main() -> int:
    request = json.loads(sys.stdin.read())
    problem = check(request["url"], request.get("password_file", ""))
    if problem is not None:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
