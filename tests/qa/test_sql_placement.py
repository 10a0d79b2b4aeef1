"""SQL lives in the store, directory and audit modules, and in a front's own queue or table
module, never in protocol code, route functions, policy or the command line (ARCHITECTURE.md:
"SQL in the store and directory modules only"; STYLE.md: "SQL out of route functions").

A module "writes SQL" when it imports a statement builder from SQLAlchemy (``select``,
``insert``, ``update``, ``delete``, ``text``, ``exists``, ``func``…, from ``sqlalchemy``, its
``sql`` package or a dialect). Importing sessions, types or exceptions is fine. Each module is
read with :mod:`ast`; a failure names the file, the line and the builders.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "missive"

BUILDERS = frozenset({"select", "insert", "update", "delete", "text", "exists", "func",
                      "union", "union_all", "literal", "literal_column", "table", "column",
                      "and_", "or_", "not_", "case", "tuple_", "values", "bindparam"})

#: Where SQL belongs: the core's data modules, the schema, table declarations, and the fronts'
#: own queue/table modules (each documents the tables it alone touches).
ALLOWED_PACKAGES = ("audit/", "directory/", "mailbox/", "db/")
ALLOWED_FILES = frozenset({
    "mta/relay.py",  # the relay queue (its worker and `admin queue` helpers)
    "notify/queue.py",  # "All SQL of the notify worker"
    "webmail/sessions.py", "webmail/codes.py", "webmail/invitations.py", "webmail/totp.py",
    "ops.py", "webmail/routes/health.py",  # readiness probes: SELECT 1
})

#: Known exceptions, each an xfail naming the file and line (none at the moment).
KNOWN: dict[str, str] = {}


def sql_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == "sqlalchemy" or node.module.startswith(("sqlalchemy.sql",
                                                                       "sqlalchemy.dialects"))):
            names = sorted(a.name for a in node.names if a.name in BUILDERS)
            if names:
                found.append(f"{node.lineno}: {', '.join(names)} from {node.module}")
    return found


def allowed(rel: str) -> bool:
    return (rel.startswith(ALLOWED_PACKAGES) or rel in ALLOWED_FILES
            or rel.endswith("models.py"))


def cases() -> list[object]:
    params: list[object] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if allowed(rel):
            continue
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[rel])] if rel in KNOWN else []
        params.append(pytest.param(path, id=rel, marks=marks))
    return params


@pytest.mark.parametrize("path", cases())
def test_no_sql_outside_its_modules(path: Path) -> None:
    found = sql_imports(path.read_text(encoding="utf-8"))
    assert found == [], f"{path.relative_to(SRC.parent)} builds SQL: {found}"


def test_allowlist_names_existing_files() -> None:
    missing = sorted(f for f in ALLOWED_FILES | set(KNOWN) if not (PACKAGE / f).exists())
    assert missing == []
    assert len(cases()) > 50


def test_detector() -> None:
    src = ("from sqlalchemy import select, Integer\n"
           "from sqlalchemy.ext.asyncio import AsyncSession\n"
           "from sqlalchemy.exc import IntegrityError\n"
           "from sqlalchemy.dialects.postgresql import insert\n"
           "def f():\n    from sqlalchemy import text\n")
    assert sql_imports(src) == ["1: select from sqlalchemy",
                                "4: insert from sqlalchemy.dialects.postgresql",
                                "6: text from sqlalchemy"]
