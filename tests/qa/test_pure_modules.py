"""Pure modules stay pure (ARCHITECTURE.md: "Protocol parsing is pure (bytes in, command out)
… domain rules live in ``policy``"; ``identity``: "pure functions, no I/O").

The modules below say so in their docstrings. They must not import anything that does I/O or
holds state (event loops, sockets, TLS, processes, the database, HTTP, the SMTP libraries, or
the stateful parts of Missive), so that they can be tested from tables of examples and reused
by any front. Read with :mod:`ast`, including imports inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "missive"

PURE = [
    *sorted(p.relative_to(PACKAGE).as_posix() for d in ("identity", "mime", "policy")
            for p in (PACKAGE / d).glob("*.py")),
    "imap/parser.py", "imap/encode.py", "imap/utf7.py", "imap/fetch.py",
    "mta/params.py", "mta/dsn.py", "notify/schedule.py", "notify/signing.py",
]
IMPURE = ("asyncio", "socket", "ssl", "selectors", "subprocess", "threading", "multiprocessing",
          "sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "aiosmtpd", "aiosmtplib", "smtplib",
          "httpx", "urllib.request", "fastapi", "starlette", "uvicorn", "dns",
          "missive.db", "missive.mailbox", "missive.directory", "missive.audit",
          "missive.runtime", "missive.certs", "missive.cli")


def imported(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def impure(source: str) -> list[str]:
    return [f"line {line}: {name}" for line, name in imported(source)
            if any(name == m or name.startswith(m + ".") for m in IMPURE)]


def test_listed_modules_exist() -> None:
    assert [p for p in PURE if not (PACKAGE / p).exists()] == []
    assert len(PURE) > 15


@pytest.mark.parametrize("rel", PURE)
def test_pure_module_imports_no_io(rel: str) -> None:
    assert impure((PACKAGE / rel).read_text(encoding="utf-8")) == []


def test_checker() -> None:
    source = ("import re\nimport asyncio\nfrom sqlalchemy import select\n"
              "from missive.mailbox.store import MailboxStore\nimport dns.resolver\n"
              "from missive.identity.ins import parse\nimport sslib\n")
    assert impure(source) == ["line 2: asyncio", "line 3: sqlalchemy",
                              "line 4: missive.mailbox.store", "line 5: dns.resolver"]
