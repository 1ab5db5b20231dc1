"""The shared Prometheus exposition: the format scrapers parse, whatever the names hold."""

from __future__ import annotations

from nb2svc.runtime.metrics import Family, Histogram, exposition


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


def test_histograms_are_cumulative_with_sum_and_count() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.5, 3.0):
        histogram.observe(value)
    text = exposition([Family("w_seconds", "histogram", "Waits.").add_histogram(histogram, notebook="a")])
    assert text.splitlines() == [
        "# HELP w_seconds Waits.",
        "# TYPE w_seconds histogram",
        'w_seconds_bucket{notebook="a",le="0.1"} 2',
        'w_seconds_bucket{notebook="a",le="1.0"} 3',
        'w_seconds_bucket{notebook="a",le="+Inf"} 4',
        'w_seconds_sum{notebook="a"} 3.6',
        'w_seconds_count{notebook="a"} 4',
    ]
