"""The shared Prometheus exposition: the format scrapers parse, whatever the names hold."""

from __future__ import annotations

from nb2svc.runtime.metrics import Family, exposition


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
