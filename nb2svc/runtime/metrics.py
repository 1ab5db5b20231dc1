"""Prometheus text exposition (format 0.0.4) for both modes' ``/_api/metrics``.

Each mode describes what it counts as :class:`Family` values; this module only writes
them out, so the two pages share one format: ``# HELP`` and ``# TYPE`` lines, then one
sample per label set, label values escaped as the format requires (a route, a notebook
or a kernel spec name may hold a quote or a backslash). Counters, gauges and histograms
(:class:`Histogram`: cumulative ``_bucket`` samples with ``le``, ``_sum``, ``_count``) are
per worker, as gunicorn runs them: a scraper sums over replicas and workers.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4"


#: A sample: its labels and value, and optionally a suffix of the family's name (``_sum``).
Sample = tuple[dict[str, str], float] | tuple[dict[str, str], float, str]


@dataclass
class Family:
    """One metric: its name, ``counter``, ``gauge`` or ``histogram``, help text and samples."""

    name: str
    kind: str
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def add_histogram(self, histogram: Histogram, **labels: str) -> Family:
        """The samples of one histogram: cumulative buckets, then ``_sum`` and ``_count``."""
        running = 0
        for bound, count in zip((*histogram.bounds, math.inf), histogram.counts, strict=True):
            running += count
            self.samples.append(({**labels, "le": _bound(bound)}, running, "_bucket"))
        self.samples.append((labels, histogram.total, "_sum"))
        self.samples.append((labels, running, "_count"))
        return self


@dataclass
class Histogram:
    """Observations counted per bucket (``counts[i]``: values up to ``bounds[i]``, not
    cumulative; the last count is above every bound), and their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(str(value))}"' for name, value in labels.items()) + "}"


def _number(value: float) -> str:
    """Integers without a fraction, other values exactly (``repr``): counters keep every digit."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def exposition(families: Iterable[Family]) -> str:
    """The text a Prometheus scraper reads for ``families``, in the order given."""
    lines: list[str] = []
    for family in families:
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        for labels, value, *suffix in family.samples:
            lines.append(f"{family.name}{''.join(suffix)}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


__all__ = ["CONTENT_TYPE", "Family", "Histogram", "exposition"]
