"""What users of other servers expect to find (issue 22): ``-p``, ``-V``, a ``--help`` in
sections, shell completion, and the conventional ``/livez`` ``/readyz`` ``/metrics``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

from nb2svc.compiler.mounts import Mount
from nb2svc.compiler.spec import Endpoint, KernelInfo, ServiceSpec
from nb2svc.config import OPTION_GROUPS, OPTIONS, settings_from_env
from nb2svc.runtime.http_api.routes import claimed_paths
from nb2svc.runtime.metrics import Family
from nb2svc.runtime.webapp import create_webapp
from tests.notebooks import notebook
from tests.support import EXAMPLES, REPO, Server, alive

SCRIPT = str(Path(sys.executable).parent / "nb2svc")


def nb2svc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_short_version_and_port_flags() -> None:
    assert nb2svc("-V").stdout.strip() == nb2svc("--version").stdout.strip()
    assert nb2svc("-V").stdout.startswith("nb2svc, version")
    assert "-p, --port INTEGER" in nb2svc("serve", "--help").stdout


def test_serve_help_has_one_section_per_group_holding_its_options() -> None:
    text = nb2svc("serve", "--help", env={"COLUMNS": "200"}).stdout
    starts = [text.index(f"\n{title}:\n") for title in OPTION_GROUPS]
    assert starts == sorted(starts), "sections print in OPTION_GROUPS order"
    ends = [*starts[1:], len(text)]
    for option in OPTIONS:
        index = OPTION_GROUPS.index(option.group)
        section = text[starts[index] : ends[index]]
        assert f"  {option.flag}" in section or f", {option.flag}" in section, (option.name, option.group)
    assert text.index("--mount PREFIX=NOTEBOOK") < starts[0]  # the command's own options first


def test_shell_completion_completes_commands_and_flags() -> None:
    script = nb2svc(env={"_NB2SVC_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "complete -o nosort -F _nb2svc_completion nb2svc" in script.stdout
    words = nb2svc(env={"_NB2SVC_COMPLETE": "bash_complete", "COMP_WORDS": "nb2svc se", "COMP_CWORD": "1"})
    assert "plain,serve" in words.stdout.split()
    flags = nb2svc(
        env={"_NB2SVC_COMPLETE": "bash_complete", "COMP_WORDS": "nb2svc serve --pool", "COMP_CWORD": "2"}
    )
    assert "plain,--pool-size" in flags.stdout.split()
    readme = (REPO / "README.md").read_text()
    assert 'eval "$(_NB2SVC_COMPLETE=bash_source nb2svc)"' in readme


def _app(claimed: Callable[[str], bool] | None = None, base_url: str = "/"):  # noqa: ANN202 - a Flask app
    settings = settings_from_env({}, token="secret", base_url=base_url)
    family = Family("nb2svc_up", "gauge", "Whether the server is up.").add(1.0)
    return create_webapp(
        "t", settings, readiness=lambda: (True, {"ready": True}), metrics=lambda: [family], claimed=claimed
    )


def test_aliases_answer_like_their_originals_with_the_same_token_rule() -> None:
    client = _app(base_url="/api").test_client()
    assert client.get("/api/livez").json == {"status": "ok"}
    assert client.get("/api/readyz").json == {"ready": True}
    assert client.get("/api/metrics").status_code == 401  # /_api/metrics needs the token: so does /metrics
    scraped = client.get("/api/metrics", headers={"Authorization": "token secret"})
    assert scraped.status_code == 200 and "nb2svc_up 1" in scraped.text
    assert client.get("/livez").status_code == 401  # under --base-url only; anything else needs the token


def test_an_alias_a_route_claims_is_not_installed() -> None:
    client = _app(claimed=lambda path: path in ("/metrics", "/livez")).test_client()
    auth = {"Authorization": "token secret"}
    assert client.get("/metrics", headers=auth).status_code == 404
    assert client.get("/livez").status_code == 401  # not exempt: it is not a health check here
    assert client.get("/readyz").status_code == 200


def test_claimed_paths_match_parameters_and_mounts() -> None:
    def spec(*paths: str) -> ServiceSpec:
        endpoints = tuple(Endpoint("GET", p, (), (1,), "") for p in paths)
        return ServiceSpec("n", "n.ipynb", KernelInfo("python3", "python"), (), endpoints)

    claimed = claimed_paths([Mount("/orders", spec("/:id")), Mount("", spec("/metrics/:x", "/readyz"))])
    assert claimed("/orders/livez") and claimed("/readyz")
    assert not claimed("/metrics") and not claimed("/livez")
    assert claimed_paths([Mount("", spec("/:anything"))])("/metrics")


def test_a_notebooks_own_metrics_route_keeps_its_token(tmp_path: Path) -> None:
    path = tmp_path / "metrics.ipynb"
    nbformat.write(notebook('# GET /metrics\nprint("mine")', kernel="python3", language="python"), path)
    server = Server([str(path), "--pool-size", "1", "--token", "secret"], log_dir=tmp_path)
    try:
        server.wait_ready()
        assert server.get("/livez").json() == {"status": "ok"}
        assert server.get("/readyz").status_code == 200
        assert server.get("/metrics").status_code == 401
        assert server.get("/metrics", headers={"Authorization": "token secret"}).text == "mine\n"
        original = server.get("/_api/metrics", headers={"Authorization": "token secret"})
        assert "nb2svc_" in original.text
        assert "is per kernel" not in server.log()  # one kernel: no note about per-kernel state
    finally:
        server.kill()


def test_get_serves_one_request_prints_its_body_and_leaves_nothing_running(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    setup = f"import os\nwith open({str(pids)!r}, 'a') as f:\n    print(os.getpid(), file=f)"
    path = tmp_path / "svc.ipynb"
    nbformat.write(
        notebook(setup, '# GET /svc/hi\nprint("hi there")', kernel="python3", language="python"), path
    )
    result = nb2svc("serve", str(path), "--token", "t0k", "--get", "/svc/hi")
    assert (result.returncode, result.stdout) == (0, "hi there\n"), result.stderr
    kernels = [int(pid) for pid in pids.read_text().split()]
    assert kernels and not any(alive(pid) for pid in kernels)
    missing = nb2svc("serve", str(path), "--token", "t0k", "--get", "/svc/nope")
    assert missing.returncode == 1 and json.loads(missing.stdout)["error"] == "NotFound"
    assert missing.stderr.strip() == "GET /svc/nope: 404 Not Found"


def test_get_refuses_bad_input_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "bad.ipynb"
    nbformat.write(
        notebook("# GET /x/:id\nprint(1)", "# GET /x/:key\nprint(2)", kernel="python3", language="python"),
        path,
    )
    duplicate = nb2svc("serve", str(path), "--get", "/x/1")
    assert duplicate.returncode == 2 and "bad.ipynb, cell 2" in duplicate.stderr
    relative = nb2svc("serve", str(path), "--get", "x")
    assert relative.returncode == 2 and "--get takes a path such as /hello/world" in relative.stderr


def test_an_unknown_config_key_suggests_the_closest_one(tmp_path: Path) -> None:
    from nb2svc.config import load_config_file

    for text, hint in [
        ("pool_sise = 3\n", "unknown setting 'pool_sise'; did you mean 'pool_size'?"),
        ("request-timout = 3\n", "unknown setting 'request-timout'; did you mean 'request-timeout'?"),
        ("zzzqqq = 3\n", "unknown setting 'zzzqqq'; see 'nb2svc serve --help' for the settings"),
    ]:
        config = tmp_path / "c.toml"
        config.write_text(text)
        with pytest.raises(ValueError) as caught:
            load_config_file(config)
        assert str(caught.value) == f"{config}: {hint}"


def test_test_without_examples_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bare.ipynb"
    nbformat.write(notebook('# GET /bare\nprint("x")', kernel="python3", language="python"), path)
    result = nb2svc("test", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: {path} declares no examples to run: add some to its endpoint cells' metadata "
        "(nb2svc.examples; see the README, Endpoint examples)"
    ]


def test_test_stops_at_an_unreachable_url_with_one_line() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = nb2svc("test", str(EXAMPLES / "hello.ipynb"), "--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: cannot reach http://127.0.0.1:{port}: Connection refused"
    assert result.stdout == ""


def test_test_exits_130_on_ctrl_c() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        silent.settimeout(60)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen(
            [SCRIPT, "test", str(EXAMPLES / "hello.ipynb"), "--url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            connection, _ = silent.accept()  # the first example's request is on its way
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
            connection.close()
        finally:
            process.kill()
    assert process.returncode == 130
    assert err.strip() == "interrupted" and "Traceback" not in err
