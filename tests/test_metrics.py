"""The shared Prometheus exposition: the format scrapers parse, whatever the names hold."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
import requests
import yaml
from nbformat.v4 import new_code_cell

from nb2svc.runtime.metrics import Family, exposition
from tests.notebooks import notebook
from tests.support import EXAMPLES, Server, free_port, wait_for


def test_families_are_written_with_help_type_and_escaped_labels() -> None:
    text = exposition(
        [
            Family("a_total", "counter", "Things.").add(3, route='GET /x/"q"\\n', status="200").add(2.5),
            Family("b", "gauge", "Empty family still declares itself."),
        ]
    )
    assert text.splitlines() == [
        "# HELP a_total Things.",
        "# TYPE a_total counter",
        'a_total{route="GET /x/\\"q\\"\\\\n",status="200"} 3',
        "a_total 2.5",
        "# HELP b Empty family still declares itself.",
        "# TYPE b gauge",
    ]


def test_counters_keep_every_digit() -> None:
    line = exposition([Family("s", "counter", "Seconds.").add(1234.5678912345)]).splitlines()[-1]
    assert line == "s 1234.5678912345"


# --- histograms -----------------------------------------------------------------------------


def test_a_histogram_writes_cumulative_buckets_sum_and_count_per_label_set() -> None:
    from nb2svc.runtime.metrics import Histogram

    histogram = Histogram("d_seconds", "Durations.", (0.1, 1))
    for value in (0.1, 0.5, 5):  # a value on a bound counts in that bucket (le is inclusive)
        histogram.observe(value, route="/a")
    histogram.observe(0.05, route='/b"')
    assert exposition([histogram]).splitlines() == [
        "# HELP d_seconds Durations.",
        "# TYPE d_seconds histogram",
        'd_seconds_bucket{route="/a",le="0.1"} 1',
        'd_seconds_bucket{route="/a",le="1"} 2',
        'd_seconds_bucket{route="/a",le="+Inf"} 3',
        'd_seconds_sum{route="/a"} 5.6',
        'd_seconds_count{route="/a"} 3',
        'd_seconds_bucket{route="/b\\"",le="0.1"} 1',
        'd_seconds_bucket{route="/b\\"",le="1"} 1',
        'd_seconds_bucket{route="/b\\"",le="+Inf"} 1',
        'd_seconds_sum{route="/b\\""} 0.05',
        'd_seconds_count{route="/b\\""} 1',
    ]
    combined = Histogram.combined([(histogram, {"notebook": "x"})])
    assert 'd_seconds_count{notebook="x",route="/a"} 3' in exposition([combined])


def test_histogram_buckets_must_increase() -> None:
    from nb2svc.runtime.metrics import Histogram

    with pytest.raises(ValueError, match="increasing"):
        Histogram("x_seconds", "X.", (1, 0.5))


# --- a real server: durations to the last byte, by mount; scraping with a token ------------


def sample(page: str, name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    found = []
    for line in page.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                found.append(float(value))
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_durations_by_mount_to_the_last_byte_scraped_on_the_metrics_port_with_a_token_set(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    streamed = new_code_cell(
        "# GET /orders/stream\nimport time\nprint('a', flush=True)\ntime.sleep(0.6)\nprint('b')"
    )
    streamed.metadata["nb2svc"] = {"response": "stream"}
    nbformat.write(notebook("# GET /ok\nprint('ok')", streamed, kernel="python3"), tmp_path / "orders.ipynb")
    nbformat.write(notebook("# GET /ok\nprint('ok')", kernel="python3"), tmp_path / "users.ipynb")
    metrics_port = free_port()
    server = start_server(
        str(tmp_path / "orders.ipynb"),
        str(tmp_path / "users.ipynb"),
        "--pool-size",
        "1",
        "--metrics-port",
        str(metrics_port),
        env={"NB2SVC_TOKEN": "scrape-test-token"},
        ready=False,
    )
    scrape = f"http://127.0.0.1:{metrics_port}"
    wait_for(
        lambda: server.proc.poll() is None and _status(scrape + "/_api/health/ready") == 200, 60, "ready"
    )
    auth = {"Authorization": "token scrape-test-token"}
    assert server.get("/users/ok", headers=auth).text == "ok\n"
    with requests.get(server.url("/orders/orders/stream"), headers=auth, stream=True, timeout=30) as r:
        assert r.text == "a\nb\n"
    assert server.get("/_api/metrics").status_code == 401  # the main port keeps the token
    assert server.get("/_api/metrics", headers=auth).status_code == 200
    assert _status(scrape + "/users/ok") == 404  # the scrape port serves nothing else
    page = requests.get(scrape + "/_api/metrics", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = page.text
    assert "# TYPE nb2svc_request_duration_seconds histogram" in text
    assert "nb2svc_request_seconds_sum" not in text  # the old counter that was a sum
    stream = {"method": "GET", "route": "/orders/orders/stream", "status": "200", "notebook": "orders"}
    assert sample(text, "nb2svc_request_duration_seconds_count", **stream) == 1
    # the cell sleeps 0.6 s between its two lines: the answer's last byte comes after that
    assert sample(text, "nb2svc_request_duration_seconds_bucket", le="0.5", **stream) == 0
    assert sample(text, "nb2svc_request_duration_seconds_sum", **stream) >= 0.6
    users = {"route": "/users/ok", "status": "200", "notebook": "users"}
    assert sample(text, "nb2svc_request_duration_seconds_count", **users) == 1
    assert sample(text, "nb2svc_kernel_start_seconds_count", notebook="users") == 1


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=10).status_code
    except (requests.ConnectionError, requests.Timeout):
        return 0


def test_the_deployment_scrapes_the_metrics_port_it_opens() -> None:
    from nb2svc.compiler import compile_notebook
    from nb2svc.compiler.bundle import BundleOptions, render_bundle
    from nb2svc.distribution import Runtime, wheel_filename

    path = EXAMPLES / "hello.ipynb"
    runtime = Runtime(("flask==3.1.3",), wheel_filename(), b"wheel", "3.11")
    files = render_bundle(compile_notebook(path), path.read_bytes(), BundleOptions(k8s=True), runtime)
    pod = yaml.safe_load(files["k8s/deployment.yaml"])["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["NB2SVC_METRICS_PORT"] == str(ports["metrics"])
    assert ports["metrics"] != ports["http"]
    assert annotations["prometheus.io/path"] == "/_api/metrics"


# --- several workers: reading pages back and adding them up --------------------------------


def test_a_page_reads_back_exactly_and_adds_up_whatever_its_label_values_hold() -> None:
    from nb2svc.runtime.metrics import Histogram, merge, parse

    awkward = 'GET /x/"q"\\n\n,}{ é 1'  # quotes, backslashes, a newline, braces, spaces
    histogram = Histogram("d_seconds", "Durations.", (0.1, 1))
    histogram.observe(0.5, route=awkward, status="200")
    families = [Family("a_total", "counter", "Things.").add(3, route=awkward).add(1.25), histogram]
    text = exposition(families)
    pages = parse(text)
    assert exposition(pages) == text
    assert pages[1].kind == "histogram"
    # two workers' pages: one sample per label set, its labels written as they came
    twice = exposition(merge([("1", pages), ("2", parse(text))], {}))
    doubled = [Family("a_total", "counter", "Things.").add(6, route=awkward).add(2.5), histogram]
    histogram.observe(0.5, route=awkward, status="200")
    assert twice == exposition(doubled)
    worker = exposition(merge([("7", pages)], {"a_total": "worker"})).splitlines()
    assert worker[2:4] == [
        exposition([Family("a_total", "counter", "T.").add(3, worker="7", route=awkward)]).splitlines()[-1],
        'a_total{worker="7"} 1.25',
    ]


@pytest.mark.parametrize("line", ['a{x="1" 2', "a b 2", "a{} two", "a"])
def test_a_line_not_of_this_format_is_refused(line: str) -> None:
    from nb2svc.runtime.metrics import parse

    with pytest.raises(ValueError):
        parse(f"# HELP a A.\n# TYPE a gauge\n{line}\n")


def test_workers_pages_add_up_by_name_and_label_set() -> None:
    from nb2svc.runtime.metrics import Histogram, merge, parse

    def worker(requests: dict[str, int], durations: list[float], live: int) -> list:
        families = Family("r_total", "counter", "Requests.")
        for route, count in requests.items():
            families.add(count, route=route)
        histogram = Histogram("d_seconds", "Durations.", (0.1, 1))
        for value in durations:
            histogram.observe(value, route="/a")
        return parse(exposition([families, histogram, Family("live", "gauge", "Live.").add(live)]))

    one = worker({"/a": 2, "/b": 1}, [0.05, 0.5], live=2)
    two = worker({"/a": 3, "/c": 4}, [5.0], live=1)
    assert exposition(merge([("11", one), ("22", two)], {})).splitlines() == [
        "# HELP r_total Requests.",
        "# TYPE r_total counter",
        'r_total{route="/a"} 5',
        'r_total{route="/b"} 1',
        'r_total{route="/c"} 4',  # a label set only another worker saw
        "# HELP d_seconds Durations.",
        "# TYPE d_seconds histogram",
        'd_seconds_bucket{route="/a",le="0.1"} 1',
        'd_seconds_bucket{route="/a",le="1"} 2',
        'd_seconds_bucket{route="/a",le="+Inf"} 3',
        'd_seconds_sum{route="/a"} 5.55',
        'd_seconds_count{route="/a"} 3',
        "# HELP live Live.",
        "# TYPE live gauge",
        "live 3",
    ]


def test_a_per_process_family_is_labelled_by_worker_and_a_ratio_is_recomputed() -> None:
    from nb2svc.runtime.metrics import Ratio, merge, parse

    rule = Ratio(("busy", "waiting"), "size")

    def worker(busy: int, waiting: int, size: int, started: float) -> tuple[dict, list]:
        families = [
            Family("busy", "gauge", "B.").add(busy, notebook="n"),
            Family("waiting", "gauge", "W.").add(waiting, notebook="n"),
            Family("size", "gauge", "S.").add(size, notebook="n"),
            Family("sat", "gauge", "Ratio.", merge=rule).add((busy + waiting) / size, notebook="n"),
            Family("started", "gauge", "Start time.", merge="worker").add(started),
        ]
        return {f.name: f.merge for f in families}, parse(exposition(families))

    how, one = worker(busy=1, waiting=0, size=1, started=100.5)  # saturated
    _, two = worker(busy=0, waiting=0, size=3, started=200)
    page = exposition(merge([("11", one), ("22", two)], how))
    assert 'sat{notebook="n"} 0.25' in page.splitlines()  # (1 + 0) / (1 + 3), not 1 + 0
    assert page.endswith('started{worker="11"} 100.5\nstarted{worker="22"} 200\n')


def _owner_dir(server: Path, pid: int) -> Path:
    """``server``/``<pid>-<start time>``: how the reaper names a live process's directory."""
    from nb2svc.runtime import reaper

    name = reaper._name(pid)
    assert name is not None
    (server / name).mkdir(parents=True)
    return server / name


def test_a_scrape_adds_the_live_workers_snapshots_and_keeps_a_dead_ones_counts(tmp_path: Path) -> None:
    from nb2svc.runtime import reaper
    from nb2svc.runtime.retired_metrics import RETIRED, read
    from nb2svc.runtime.shared_metrics import SNAPSHOT, SharedMetrics

    server = tmp_path / str(reaper._name(os.getppid()))
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    gone = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        mine, others, dead = (_owner_dir(server, pid) for pid in (os.getpid(), other.pid, gone.pid))
        gone.communicate(timeout=30)  # it exits: a dead worker whose snapshot was left behind
        for directory, count in ((others, 5), (dead, 100)):
            page = exposition(
                [Family("r_total", "counter", "R.").add(count, route="/a"), Family("g", "gauge", "G.").add(7)]
            )
            (directory / SNAPSHOT).write_text(page)
        (dead / "k1").mkdir()  # a kernel's directory: the master's to reap, never the scraper's
        shared = SharedMetrics()
        shared.source = lambda: [Family("r_total", "counter", "R.").add(1, route="/a")]
        assert shared.start(2, lambda: str(mine), period=3600)
        assert (
            mine / SNAPSHOT
        ).read_text() == '# HELP r_total R.\n# TYPE r_total counter\nr_total{route="/a"} 1\n'
        page = shared.page(shared.source)
        # its own fresh page, the live worker's and the dead one's counter; the dead one's gauge left out
        assert 'r_total{route="/a"} 106\n' in page and "g 7\n" in page
        assert not (dead / SNAPSHOT).exists() and (dead / "k1").is_dir()
        assert (server / RETIRED).exists() and shared.page(shared.source) == page  # folded once
        shared.stop()  # a graceful exit: its final page joins the retired counts
        assert not (mine / SNAPSHOT).exists() and not shared.sharing
        retired, folded = read(str(server))
        assert exposition(retired) == '# HELP r_total R.\n# TYPE r_total counter\nr_total{route="/a"} 101\n'
        assert folded == {dead.name, mine.name}  # their directories are still there
    finally:
        other.kill()
        other.wait(10)
        gone.kill()
        gone.wait(10)


def test_one_worker_shares_nothing(tmp_path: Path) -> None:
    from nb2svc.runtime.shared_metrics import SharedMetrics

    shared = SharedMetrics()
    shared.source = lambda: [Family("r_total", "counter", "R.").add(1)]
    assert not shared.start(1, lambda: pytest.fail("one worker makes no directory"))
    families = shared.source()
    assert shared.page(shared.source) == exposition(families) and not shared.sharing
    assert list(tmp_path.iterdir()) == []
