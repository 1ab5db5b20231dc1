"""The shared Prometheus exposition: the format scrapers parse, whatever the names hold."""

from __future__ import annotations

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
