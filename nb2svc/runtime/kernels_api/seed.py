"""``--seed NOTEBOOK``: code that runs on every new kernel of the notebook's kernel spec.

Kept free of runtime imports: the CLI builds a :class:`Seed` in the gunicorn master.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Seed:
    """The code cells of a seed notebook and the kernel spec they are for."""

    source: str
    kernel_name: str
    cells: tuple[tuple[int, str], ...]  # (cell number, code), in notebook order
