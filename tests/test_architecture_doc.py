"""docs/architecture.md is the map of the code: every module under nb2svc/ is named in it."""

from __future__ import annotations

from pathlib import Path

from tests.support import REPO

GUIDE = REPO / "docs" / "architecture.md"


def _name(path: Path) -> str:
    """How the guide names a module: its path under ``nb2svc/``; a package by its folder."""
    relative = path.relative_to(REPO / "nb2svc")
    if path.name == "__init__.py":
        return f"`{relative.parent.as_posix()}/`" if relative.parent != Path(".") else "`__init__.py`"
    return f"`{relative.as_posix()}`"


def test_every_module_is_named_in_the_architecture_guide() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    missing = [_name(p) for p in sorted((REPO / "nb2svc").rglob("*.py")) if _name(p) not in text]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_the_guide_names_no_module_that_is_gone() -> None:
    import re

    text = GUIDE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:compiler|runtime)/[\\w/]+\\.py)`", text))
    gone = sorted(name for name in named if not (REPO / "nb2svc" / name).exists())
    assert not gone, f"docs/architecture.md names modules that do not exist: {', '.join(gone)}"


def test_the_readme_links_the_guide_and_nothing_outside_the_repository() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "(docs/architecture.md)" in readme
    assert "../shared" not in readme
