"""``nb2svc serve --kernels`` on the command line: usage errors exit 2 before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import EXAMPLES, REPO


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nb2svc", "serve", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kernels", str(EXAMPLES / "hello.ipynb")), "pass --seed"),
        ((str(EXAMPLES / "hello.ipynb"), "--warm", "1"), "--warm: only used in kernel mode"),
        (("--kernels", "--pool-size", "3"), "--pool-size: only used in API mode"),
        (("--kernels", "--prespawn", "3", "--max-kernels", "2"), "--prespawn 3 is more than --max-kernels 2"),
        (("--kernels", "--seed", "no-such.ipynb"), "--seed no-such.ipynb cannot be used"),
        ((), "Missing argument 'TARGET'"),
    ],
)
def test_usage_errors(args: tuple[str, ...], message: str) -> None:
    result = serve(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_kernel_mode_options() -> None:
    text = serve("--help").stdout
    for flag in ("--kernels", "--list-kernels / --no-list-kernels", "--warm", "NB2SVC_CULL_IDLE_TIMEOUT"):
        assert flag in text


def test_boolean_options_come_from_the_environment_too() -> None:
    from nb2svc.config import settings_from_env

    assert settings_from_env({"KG_LIST_KERNELS": "False"}).list_kernels is False
    assert settings_from_env({"NB2SVC_CULL_CONNECTED": "true"}).cull_connected is True
    assert settings_from_env({}, list_kernels=False).list_kernels is False
