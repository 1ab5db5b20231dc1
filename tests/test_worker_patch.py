"""The worker's gevent patching reads the entry points once and still calls gevent's plugins.

In a fresh interpreter (patching the test process would change every later test): a
package on ``sys.path`` declares a plugin for gevent's ``will_patch_all`` event through an
entry point, as gevent's plugin API asks; the worker's ``patch`` must call it, patch the
modules, and leave ``importlib.metadata.entry_points`` as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

SCENARIO = """
import importlib.metadata as metadata, json, sys
sys.path.insert(0, sys.argv[1])
from gevent import monkey
from nb2svc.runtime.worker import Nb2svcWorker
lookup = metadata.entry_points
worker = Nb2svcWorker.__new__(Nb2svcWorker)
worker.sockets = []
worker.patch()
import recorder
print(json.dumps({
    "plugin_called": recorder.CALLS,
    "socket_patched": monkey.is_module_patched("socket"),
    "lookup_restored": metadata.entry_points is lookup,
}))
"""


def test_patch_calls_gevent_plugins_and_restores_the_lookup(tmp_path: Path) -> None:
    plugin = "CALLS = []\n\ndef will_patch_all(event):\n    CALLS.append('all')\n"
    (tmp_path / "recorder.py").write_text(plugin)
    info = tmp_path / "recorder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[gevent.plugins.monkey.will_patch_all]\nrecorder = recorder:will_patch_all\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "plugin_called": ["all"],
        "socket_patched": True,
        "lookup_restored": True,
    }
    assert "Warning" not in result.stderr, result.stderr
