"""``docs/architecture.md`` maps every package and top-level module that exists.

A package added without a line in the map is the first step to a second, undocumented layer;
a line for a package that was removed misleads the next reader.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "missive"
DOC = REPO / "docs" / "architecture.md"


def parts() -> set[str]:
    """``name/`` for sub-packages and ``name.py`` for top-level modules."""
    found = {f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    found |= {p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py",
                                                                        "__main__.py")}
    return found


def mapped() -> set[str]:
    """The names in the first backticked column cells of the package table."""
    names: set[str] = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in ("entry", "front", "beside the fronts", "core",
                                             "bottom"):
            names.update(re.findall(r"`([a-z_]+(?:/|\.py))`", cells[1]))
    return names


def test_every_package_is_mapped() -> None:
    existing = parts()
    assert {"mailbox/", "mta/", "runtime.py"} <= existing
    assert sorted(existing - mapped()) == [], "add these to the table in docs/architecture.md"


def test_no_package_mapped_that_is_gone() -> None:
    assert sorted(mapped() - parts()) == [], "remove these from docs/architecture.md"
