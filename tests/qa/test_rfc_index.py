"""``docs/rfc-index.md`` lists every RFC the code cites, each with an honest status (STYLE.md:
"``docs/rfc-index.md`` lists each RFC and extension with Yes/Partial/No").

Citations are found the way a reader finds them: ``RFC nnnn`` in any source file under
``src/missive`` (docstrings, comments, messages, templates), including lists and ranges written
``RFC 2045/2046``, ``RFCs 2045, 2046 and 2047`` or ``RFC 2045–2049``. ``RFC822`` without a space
is an IMAP data item name, not a citation.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "missive"
INDEX = REPO / "docs" / "rfc-index.md"
STATUSES = ("Yes", "Partial", "No")
SOURCE_SUFFIXES = {".py", ".html", ".j2", ".txt", ".toml", ".ini", ".mako", ".md", ".css"}

CITATION = re.compile(r"\bRFCs? (\d{3,5})((?:\s*(?:/|,|, and|and|or|–|-)\s*\d{3,5}\b)*)")
FOLLOWING = re.compile(r"(/|,|and|or|–|-)?\s*(\d{3,5})")
ROW = re.compile(r"^\|(?P<cells>.*)\|\s*$")


def cited_in(text: str) -> set[int]:
    found: set[int] = set()
    for match in CITATION.finditer(text):
        previous = int(match.group(1))
        found.add(previous)
        for sep, number in FOLLOWING.findall(match.group(2)):
            n = int(number)
            if sep in ("–", "-") and 0 < n - previous <= 10:
                found.update(range(previous, n + 1))
            else:
                found.add(n)
            previous = n
    return found


def citations() -> dict[int, list[str]]:
    where: dict[int, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in SOURCE_SUFFIXES or "__pycache__" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for number in cited_in(text):
            where.setdefault(number, []).append(str(path.relative_to(PACKAGE)))
    return where


def index_rows() -> list[list[str]]:
    rows = []
    for line in INDEX.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if not match:
            continue
        cells = [c.strip() for c in match.group("cells").split("|")]
        if cells[0] in ("RFC", "Standard") or set(cells[0]) <= {"-", ":"}:
            continue  # header and separator lines
        rows.append(cells)
    return rows


def indexed() -> dict[int, list[str]]:
    table: dict[int, list[str]] = {}
    for cells in index_rows():
        m = re.fullmatch(r"RFC (\d{3,5})", cells[0])
        if m:
            assert int(m.group(1)) not in table, f"RFC {m.group(1)} is listed twice"
            table[int(m.group(1))] = cells
    return table


def test_every_cited_rfc_is_listed() -> None:
    cited = citations()
    assert {5321, 3501, 9180} <= set(cited)  # the scan works
    missing = sorted(set(cited) - set(indexed()))
    assert missing == [], "add to docs/rfc-index.md: " + "; ".join(
        f"RFC {n} (cited in {', '.join(cited[n][:3])})" for n in missing)


def test_rows_are_well_formed() -> None:
    rows = index_rows()
    assert len(rows) >= 60
    bad = []
    for cells in rows:
        name = cells[0]
        if len(cells) != 5:
            bad.append(f"{name}: {len(cells)} columns instead of 5 (name, title, status, where, "
                       "notes)")
            continue
        _, title, status, _, note = cells
        if status not in STATUSES:
            bad.append(f"{name}: status {status!r} is not one of {', '.join(STATUSES)}")
        if status in ("Partial", "No") and not note:
            bad.append(f"{name}: a {status} row needs a note saying what is missing or why")
        if not title:
            bad.append(f"{name}: no title")
    assert bad == []


def test_paths_in_where_exist() -> None:
    missing = []
    for cells in index_rows():
        for path in re.findall(r"`([a-z_/]+(?:\.py|/))`", cells[3] if len(cells) > 3 else ""):
            if not (PACKAGE / path).exists():
                missing.append(f"{cells[0]}: {path}")
    assert missing == [], "paths (relative to src/missive) that no longer exist"


def test_the_brief_list_is_covered() -> None:
    """The standards the product is built on (SPEC §3, §4) are all in the index."""
    expected = {5321, 5322, 3207, 4954, 1870, 6152, 6531, 2920, 3461, 3463, 3464, 8098, 8314,
                5248, 3501, 9051, 2177, 4315, 6851, 6154, 2342, 2971, 5161, 7888, 4959, 3691,
                2193, 7162, 2045, 2046, 2047, 2048, 2049, 2231, 9180, 8446, 5246, 5280}
    assert sorted(expected - set(indexed())) == []


def test_citation_scan() -> None:
    assert cited_in("see RFC 5321 §4.5.3.1.6") == {5321}
    assert cited_in("RFCs 2045, 2046 and 2047") == {2045, 2046, 2047}
    assert cited_in("RFC 2045/2046 parts") == {2045, 2046}
    assert cited_in("RFC 2045–2049") == {2045, 2046, 2047, 2048, 2049}
    assert cited_in("FETCH RFC822.HEADER and message/rfc822") == set()
    assert cited_in("RFC 3501 §6.3.8-9") == {3501}
