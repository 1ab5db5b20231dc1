"""Prometheus text exposition (format 0.0.4) for both modes' ``/_api/metrics``.

Each mode describes what it counts as :class:`Family` values (counters and gauges read
when the page is asked for) and :class:`Histogram` values (observations kept as they
happen); this module only writes them out, so the two pages share one format: ``# HELP``
and ``# TYPE`` lines, then one sample per label set, label values escaped as the format
requires (a route, a notebook or a kernel spec name may hold a quote or a backslash).
Values are in base units (seconds, bytes) and named as Prometheus asks (``_seconds``,
``_total``; a histogram's ``_bucket{le=...}``, ``_sum`` and ``_count``).

Everything is per worker process, as gunicorn runs them (bench/metrics_cost.py measured
this writer against prometheus-client, single-process and multiprocess: see
bench/README.md for the figures and the reason it stays).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4"

#: Request durations (seconds): a fast cell takes milliseconds, a slow one the request timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Kernel starts (seconds): an ipykernel in a fraction of a second, a container or remote kernel in tens.
KERNEL_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class Family:
    """One metric: its name, ``counter`` or ``gauge``, help text and samples."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        out += [f"{self.name}{_labels(labels)} {_number(value)}" for labels, value in self.samples]
        return out


class Histogram:
    """A Prometheus histogram: cumulative ``le`` buckets, ``_sum`` and ``_count`` per label set.

    ``observe(seconds, route="/x", status="200")`` costs a bisect and three additions;
    the label sets seen so far are written in the order they first appeared.
    """

    def __init__(self, name: str, help: str, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError("histogram buckets must be increasing")
        self.name = name
        self.help = help
        self.buckets = tuple(float(b) for b in buckets)
        self._series: dict[tuple[tuple[str, str], ...], list[float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(labels.items())
        series = self._series.get(key)
        if series is None:  # per-bucket counts (not cumulative), then +Inf, sum
            series = self._series[key] = [0.0] * (len(self.buckets) + 2)
        series[bisect.bisect_left(self.buckets, value)] += 1
        series[-1] += value

    @classmethod
    def combined(cls, parts: Sequence[tuple[Histogram, dict[str, str]]]) -> Histogram:
        """One histogram of several of the same name (one per mounted notebook), each
        part's series with its own extra labels first (``notebook=...``): for the page."""
        first = parts[0][0]
        merged = cls(first.name, first.help, first.buckets)
        for histogram, extra in parts:
            for key, series in histogram._series.items():
                merged._series[(*extra.items(), *key)] = series
        return merged

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, series in self._series.items():
            labels = dict(key)
            total = 0.0
            for bound, count in zip((*self.buckets, float("inf")), series, strict=False):
                total += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                out.append(f"{self.name}_bucket{_labels({**labels, 'le': le})} {_number(total)}")
            out.append(f"{self.name}_sum{_labels(labels)} {_number(series[-1])}")
            out.append(f"{self.name}_count{_labels(labels)} {_number(total)}")
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(str(value))}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    """Integers without a fraction, other values exactly (``repr``): counters keep every digit."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def exposition(families: Iterable[Family | Histogram]) -> str:
    """The text a Prometheus scraper reads for ``families``, in the order given."""
    lines: list[str] = []
    for family in families:
        lines += family.lines()
    return "\n".join(lines) + "\n"


__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "KERNEL_START_BUCKETS",
    "Family",
    "Histogram",
    "exposition",
]
