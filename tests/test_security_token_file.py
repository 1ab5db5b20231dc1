"""Issue 23, low: a token file others can read is used, with one warning (as ssh warns).

Why a warning and not a refusal: a Kubernetes Secret volume is mode 0644 unless its
``defaultMode`` says otherwise, and in a container the server's user is the only one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nb2svc.runtime.secret import loose_permissions
from tests.kernels_support import kernel_server

TOKEN = "f1le-t0ken"


def token_file(folder: Path, mode: int) -> Path:
    path = folder / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


def test_a_world_readable_token_file_is_used_with_one_warning(tmp_path: Path) -> None:
    path = token_file(tmp_path, 0o644)
    with kernel_server(tmp_path, "--token-file", str(path), token=None) as server:
        assert server.get("/api/kernels").status_code == 401
        assert server.get("/api/kernels", headers={"Authorization": f"token {TOKEN}"}).status_code == 200
        log = server.log()
    assert log.count(f"--token-file {path} is accessible to everyone (mode 644)") == 1
    assert f"chmod 600 {path}" in log
    assert TOKEN not in log


def test_a_private_token_file_gets_no_warning(tmp_path: Path) -> None:
    path = token_file(tmp_path, 0o600)
    with kernel_server(tmp_path, "--token-file", str(path), token=None) as server:
        assert server.get("/api/kernels", headers={"Authorization": f"token {TOKEN}"}).status_code == 200
        assert "is accessible to" not in server.log()


@pytest.mark.parametrize(("mode", "who"), [(0o640, "its group"), (0o604, "everyone"), (0o620, "its group")])
def test_group_or_other_access_is_named(tmp_path: Path, mode: int, who: str) -> None:
    warning = loose_permissions(token_file(tmp_path, mode))
    assert warning is not None and f"accessible to {who} (mode {mode:03o})" in warning
    assert loose_permissions(token_file(tmp_path, 0o400)) is None
