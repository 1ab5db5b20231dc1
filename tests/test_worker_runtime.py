"""The serve plan and the worker runtime, as mechanisms (no server, no kernel).

End to end, the plan is exercised by every test that runs ``nb2svc serve`` or a bundle;
here: kernel names decided once, a bundle's plan read once from its environment, the
runtime's hooks (each run once, newest first, a failing one does not stop the others),
its registration on an app, and ``--reload`` swapping versions without stacking hooks.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import gevent
import nbformat
import pytest
from flask import Flask

from nb2svc.compiler import compile_notebook
from nb2svc.config import OPTIONS, Settings, settings_from_env
from nb2svc.plan import NATIVE_KERNEL, ReloadPlan, api_plan, bundle_plan, kernel_names
from nb2svc.runtime.worker_runtime import EdgeLimits, WorkerRuntime, runtime_of
from tests.notebooks import notebook


def test_settings_are_typed_fields_of_the_options_table() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names == [o.name for o in OPTIONS]
    settings = settings_from_env({"NB2SVC_POOL_SIZE": "3", "NB2SVC_ENV_ALLOW": "A,B"})
    assert settings.pool_size == 3 and settings.env_allow == ("A", "B")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.pool_size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        Settings({"pool_size": 3})  # type: ignore[misc]  # keyword-only: no positional bag


def test_native_kernel_is_jupyter_clients() -> None:
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    assert NATIVE_KERNEL == NATIVE_KERNEL_NAME


@pytest.mark.parametrize(
    ("env", "seed", "default", "warm", "requested"),
    [
        ({}, None, "python3", "python3", "python3"),
        ({}, "ir", "ir", "ir", "python3"),
        ({"NB2SVC_DEFAULT_KERNEL": "julia"}, "ir", "julia", "ir", "python3"),
        ({"NB2SVC_KERNEL_NAME": "bash"}, None, "bash", "bash", "python3"),
        ({"NB2SVC_FORCE_KERNEL": "bash", "NB2SVC_DEFAULT_KERNEL": "julia"}, "ir", "bash", "bash", "bash"),
    ],
)
def test_kernel_mode_decides_kernel_names_once(
    env: dict[str, str], seed: str | None, default: str, warm: str, requested: str
) -> None:
    names = kernel_names(settings_from_env(env), seed)
    assert (names.default, names.warm) == (default, warm)
    assert names.for_request("python3") == requested
    assert names.for_request(None) == (names.forced or default)


def test_a_bundle_reads_its_plan_once_from_its_environment(tmp_path: Path) -> None:
    from nb2svc.build import write_bundle

    path = tmp_path / "svc.ipynb"
    nbformat.write(notebook("# GET /x\nprint(1)", kernel="python3", language="python"), path)
    write_bundle(compile_notebook(path), path, tmp_path / "bundle")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    environ = {"NB2SVC_POOL_SIZE": "3", "NB2SVC_TOKEN_FILE": str(token_file), "NB2SVC_HEADER_TIMEOUT": "4"}
    plan = bundle_plan(tmp_path / "bundle", environ)
    assert plan.mode == "api" and plan.token == "s3cret-token"
    (mounted,) = plan.mounts
    assert mounted.settings.pool_size == 3 and mounted.cwd == tmp_path / "bundle"
    assert mounted.kernel_name == "python3"
    assert plan.edge == dataclasses.replace(EdgeLimits(), header_timeout=4.0)


def test_hooks_run_once_newest_first_and_survive_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    runtime = WorkerRuntime()
    ran: list[str] = []
    runtime.on_exit(lambda: ran.append("pools"))
    runtime.on_exit(lambda: 1 / 0)
    runtime.on_exit(lambda: ran.append("registry"))
    with caplog.at_level(logging.ERROR, logger="nb2svc"):
        runtime.exit()
        runtime.exit()
    assert ran == ["registry", "pools"]
    assert "error while shutting down" in caplog.text
    drained: list[int] = []
    runtime.on_drain(lambda: drained.append(1))
    runtime.drain()
    assert drained == [1]


def test_a_runtime_is_registered_once_and_found_again() -> None:
    app = Flask("x")
    runtime = WorkerRuntime()
    assert runtime.register(app) is app and runtime_of(app) is runtime
    with pytest.raises(RuntimeError):
        WorkerRuntime().register(app)

    class Plain:
        pass

    plain = Plain()
    runtime.register(plain)
    assert runtime_of(plain) is runtime and runtime_of(object()) is None


class _Pool:
    ready = True
    failure = None
    size = 1


class _Service:
    """What ``ReloadingApp`` reads of a version's service: its pool and its shutdown."""

    def __init__(self, stopped: list[int], number: int) -> None:
        self.pool = _Pool()
        self._stopped, self._number = stopped, number

    def shutdown(self) -> None:
        self._stopped.append(self._number)


def test_reload_swaps_versions_without_stacking_hooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each version used to register its own exit hook: a hundred saves, a hundred hooks."""
    from nb2svc.runtime import entry
    from nb2svc.runtime.http_api import app as api_app

    path = tmp_path / "svc.ipynb"
    nbformat.write(notebook("# GET /x\nprint(1)", kernel="python3", language="python"), path)
    stopped: list[int] = []
    built: list[Any] = []

    def fake_api_app(plan: Any, runtime: WorkerRuntime, **_: Any) -> Flask:
        version = Flask(f"v{len(built)}")
        service = _Service(stopped, len(built))
        version.extensions.update({"nb2svc": service, "nb2svc.services": [service]})
        built.append(version)
        return version

    monkeypatch.setattr(api_app, "create_api_app", fake_api_app)
    settings = settings_from_env({})
    plan = api_plan(settings, [(_mount(path), tmp_path)], reload=ReloadPlan(path.resolve(), (), None))
    reloading = entry.build_app(plan)
    runtime = runtime_of(reloading)
    assert runtime is not None and len(runtime.exit_hooks) == 1
    for _ in range(5):
        assert reloading.reload()
    gevent.sleep(0)  # let the retiring greenlets stop the versions they replaced
    assert len(built) == 6 and len(runtime.exit_hooks) == 1
    assert reloading.current is built[-1] and reloading.version == 6
    assert sorted(stopped) == [0, 1, 2, 3, 4]
    runtime.exit()
    assert sorted(stopped) == [0, 1, 2, 3, 4, 5] and reloading.live == []


def _mount(path: Path) -> Any:
    from nb2svc.compiler.mounts import Mount

    return Mount("", compile_notebook(path))


def test_the_master_plans_without_the_runtimes_heavy_imports() -> None:
    """Planning ``nb2svc serve`` (and the server object) imports no zmq, jupyter_client,
    gevent or Flask in gunicorn's master: they break ``subprocess`` in the forked worker."""
    import subprocess
    import sys

    from tests.support import EXAMPLES, REPO

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import nb2svc.cli, nb2svc.runtime.server\n"
        "from nb2svc.config import settings_from_env\n"
        "from nb2svc.plan import api_plan\n"
        "from nb2svc.targets import load_mounts\n"
        f"mounts = load_mounts(Path({str(EXAMPLES / 'hello.ipynb')!r}), None)\n"
        "plan = api_plan(settings_from_env({}), [(m, None) for m, _ in mounts])\n"
        "nb2svc.runtime.server.Server(plan)\n"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'zmq', 'jupyter_client', 'gevent', 'flask'}\n"
        "print(sorted(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_each_worker_binds_its_own_runtime_to_its_handler() -> None:
    """The edge limits and the draining state are the worker's, never class state shared by all."""
    from nb2svc.runtime.kernels_api.worker import KernelModeHandler
    from nb2svc.runtime.worker import DrainingHandler, bind_handler

    first = WorkerRuntime(edge=EdgeLimits(max_body_size=10))
    second = WorkerRuntime()
    one, two = bind_handler(DrainingHandler, first), bind_handler(KernelModeHandler, second)
    assert one.runtime is first and two.runtime is second and issubclass(two, KernelModeHandler)
    first.connections.draining = True
    assert not second.connections.draining and not hasattr(DrainingHandler, "draining")
    assert one.runtime.edge.max_body_size == 10


def test_settings_and_the_table_cannot_drift_apart() -> None:
    """A new option without its Settings field (or a field of another type) fails at import."""
    from nb2svc.config import Option, _check_settings_fields

    _check_settings_fields()
    with pytest.raises(TypeError, match="does not match"):
        _check_settings_fields((*OPTIONS, Option("new_knob", int, 1, "A new option.")))
    retyped = tuple(dataclasses.replace(o, type=float) if o.name == "max_queue" else o for o in OPTIONS)
    with pytest.raises(TypeError, match="max_queue"):
        _check_settings_fields(retyped)
