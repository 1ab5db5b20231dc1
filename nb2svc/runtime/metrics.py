"""Prometheus text exposition (format 0.0.4) for both modes' ``/_api/metrics``.

Each mode describes what it counts as :class:`Family` values (counters and gauges read
when the page is asked for) and :class:`Histogram` values (observations kept as they
happen); this module only writes them out, so the two pages share one format: ``# HELP``
and ``# TYPE`` lines, then one sample per label set, label values escaped as the format
requires (a route, a notebook or a kernel spec name may hold a quote or a backslash).
Values are in base units (seconds, bytes) and named as Prometheus asks (``_seconds``,
``_total``; a histogram's ``_bucket{le=...}``, ``_sum`` and ``_count``).

Each worker describes its own state; with ``--workers`` above 1 the page a scrape gets is
the server's, made by :func:`merge` from every live worker's page (the snapshots are
shared by :mod:`nb2svc.runtime.shared_metrics`). How a family adds up is its own
:attr:`Family.merge`:

- ``"sum"`` (counters, histograms, and gauges that count things): the same sample name
  and label set added over the workers; a histogram's cumulative buckets add up bucket by
  bucket, since every worker uses the same bounds;
- ``"worker"`` (values of one process, where a sum means nothing: its start time, its own
  memory): kept per worker, each sample labelled ``worker="<pid>"``;
- a :class:`Ratio` (``nb2svc_pool_saturation``): recomputed from the summed families it
  divides, never summed itself.

:func:`parse` reads this module's own output back (it is not a general Prometheus parser:
no timestamps, no exemplars, no escaped ``# HELP`` text) and keeps each label set as
written, since every worker writes the same set the same way. bench/metrics_cost.py measured
this writer against prometheus-client, single-process and multiprocess: see
bench/README.md for the figures and the reason it stays.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4"

#: Request durations (seconds): a fast cell takes milliseconds, a slow one the request timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: Kernel starts (seconds): an ipykernel in a fraction of a second, a container or remote kernel in tens.
KERNEL_START_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class Ratio:
    """How a gauge that divides other families merges: ``sum(numerators) / max(floor, denominator)``
    per label set, each from the server-wide sums (a mean of per-worker ratios would weigh a
    small pool like a large one)."""

    numerators: tuple[str, ...]
    denominator: str
    floor: float = 1.0


#: How a family adds up over workers: ``"sum"``, ``"worker"`` or a :class:`Ratio` (module doc).
Merge = str | Ratio


@dataclass
class Family:
    """One metric: its name, ``counter`` or ``gauge``, help text, samples, and how it merges."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    merge: Merge = "sum"

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
    the label sets seen so far are written in the order they first appeared. Several
    workers' histograms add up (:func:`merge`).
    """

    merge: Merge = "sum"

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


def exposition(families: Iterable[Family | Histogram | Page]) -> str:
    """The text a Prometheus scraper reads for ``families``, in the order given."""
    lines: list[str] = []
    for family in families:
        lines += family.lines()
    return "\n".join(lines) + "\n"


# --- reading pages back and adding them up -------------------------------------------------

#: A metric name (what a sample line starts with).
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")

#: A sample's labels as written, ``{a="x",b="y"}`` or ``""``. Compared as text: every
#: worker writes a label set in the same order and escapes it the same way, so the same
#: set is the same text, and nothing is unescaped or escaped again (the fast path of a scrape).
Labels = str


@dataclass
class Page:
    """One family read back from a page: its samples by (sample name, labels as written), in page order."""

    name: str
    kind: str
    help: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        out += [f"{name}{labels} {_number(value)}" for (name, labels), value in self.samples.items()]
        return out


def parse(text: str) -> list[Page]:
    """The families of a page :func:`exposition` wrote (a worker's snapshot), in order.

    A line that is not of that format raises ``ValueError``: a snapshot is written whole
    (a rename) by this same code, so a bad line is a bug, not a race.
    """
    pages: list[Page] = []
    current: Page | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            current = Page(name, "untyped", help_text)
            pages.append(current)
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if current is None or current.name != name:
                raise ValueError(f"# TYPE without its # HELP: {line!r}")
            current.kind = kind
            continue
        head, _, value = line.rpartition(" ")  # a label value may hold spaces, a number not
        name, brace, labels = head.partition("{")
        if current is None or not _NAME.fullmatch(name) or (brace and not labels.endswith("}")):
            raise ValueError(f"not a sample line of this format: {line!r}")
        current.samples[(name, brace + labels)] = float(value)
    return pages


def merge(workers: Sequence[tuple[str, list[Page]]], how: dict[str, Merge]) -> list[Page]:
    """One server page from each worker's ``(pid, families)``, each family merged as
    ``how[name]`` says (``"sum"`` for a name not in it); families and samples in the order
    first seen (the first worker's page is the order of the result)."""
    merged: dict[str, Page] = {}
    for pid, families in workers:
        for family in families:
            into = merged.setdefault(family.name, Page(family.name, family.kind, family.help))
            rule = how.get(family.name, "sum")
            if isinstance(rule, Ratio):
                continue  # recomputed below from the merged families it divides
            for (name, labels), value in family.samples.items():
                if rule == "worker":
                    worker = f'worker="{pid}"' + ("," + labels[1:] if labels else "}")
                    into.samples[(name, "{" + worker)] = value
                else:
                    key = (name, labels)
                    into.samples[key] = into.samples.get(key, 0.0) + value
    for name, rule in how.items():
        if isinstance(rule, Ratio) and name in merged:
            merged[name].samples = _ratio(merged, name, rule)
    return list(merged.values())


def _ratio(merged: dict[str, Page], name: str, rule: Ratio) -> dict[tuple[str, Labels], float]:
    def values(family: str) -> dict[Labels, float]:
        page = merged.get(family)
        return {labels: value for (_, labels), value in page.samples.items()} if page else {}

    denominator = values(rule.denominator)
    numerators = [values(numerator) for numerator in rule.numerators]
    return {
        (name, labels): sum(n.get(labels, 0.0) for n in numerators) / max(rule.floor, size)
        for labels, size in denominator.items()
    }


__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "KERNEL_START_BUCKETS",
    "Family",
    "Histogram",
    "Merge",
    "Page",
    "Ratio",
    "exposition",
    "merge",
    "parse",
]
