"""Prometheus text exposition (format 0.0.4) for both modes' ``/_api/metrics``.

Each mode describes what it counts as :class:`Family` values; this module only writes
them out, so the two pages share one format: ``# HELP`` and ``# TYPE`` lines, then one
sample per label set, label values escaped as the format requires (a route, a notebook
or a kernel spec name may hold a quote or a backslash). Counters and gauges are per
worker, as gunicorn runs them: a scraper sums over replicas and workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4"


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
        lines += [f"{family.name}{_labels(labels)} {_number(value)}" for labels, value in family.samples]
    return "\n".join(lines) + "\n"


__all__ = ["CONTENT_TYPE", "Family", "exposition"]
