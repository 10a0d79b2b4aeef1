"""Imports go downwards (ARCHITECTURE.md, "Rules of the house").

"fronts (``mta``, ``imap``, ``webmail``, ``notify``, ``cli``) → core (``policy``, ``directory``,
``mailbox``, ``audit``) → ``identity``, ``db``. The core never imports a front. ``certs`` is used
by fronts and the CLI only." ``mime`` (pure MIME and IHE XDM parsing, used by ``policy`` and
``mailbox``) counts as core. ``runtime`` wires the fronts together, so it is above all of them.

Every module is read with :mod:`ast` (nothing is imported), so an import inside a function or
under ``if TYPE_CHECKING:`` counts as well: a type-only dependency still points the wrong way.
Relative imports are resolved. A string that *is* a dotted module name of a forbidden layer
(``importlib.import_module("missive.notify.models")``) counts as an import too, with one
sanctioned exception: ``missive.db.schema`` names every component's ``models`` module so that
Alembic sees the whole schema.

A failure names the file, the line and what it imports.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "missive"

FRONTS = ("mta", "imap", "webmail", "notify", "cli")
CORE = ("policy", "directory", "mailbox", "audit", "mime")


@dataclass(frozen=True)
class Rule:
    layer: str  # a sub-package of missive
    forbidden: tuple[str, ...]
    why: str


RULES = (
    *(Rule(c, (*FRONTS, "certs", "runtime"), "the core never imports a front (nor certs)")
      for c in CORE),
    Rule("identity", ("db", "directory", "policy", "mailbox", "audit", *FRONTS, "certs",
                      "runtime"), "identity is pure: it imports neither db nor the core"),
    Rule("db", ("policy", "directory", "mailbox", "audit", *FRONTS, "certs", "runtime"),
         "db is the bottom layer"),
    Rule("certs", (*FRONTS, "runtime"), "certs is used by fronts and the CLI, not the reverse"),
)

#: (module, pattern) pairs the architecture allows, as optional imports by name only (a
#: component's models are optional until it exists, see ``MODEL_MODULES``).
SANCTIONED = (
    ("missive.db.schema", re.compile(r"missive\.[a-z_]+\.models")),
)

DOTTED = re.compile(r"missive(\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass(frozen=True)
class Found:
    line: int
    target: str
    how: str  # "import" or "string"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, *, is_package: bool = False) -> Iterator[Found]:
    """Every ``missive…`` module ``source`` imports or names as a module string."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Found(node.lineno, alias.name, "import")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts)
                origin = f"{base}.{node.module}" if node.module else base
            else:
                origin = node.module or ""
            yield Found(node.lineno, origin, "import")
            for alias in node.names:  # ``from missive import mta`` imports missive.mta
                if alias.name != "*":
                    yield Found(node.lineno, f"{origin}.{alias.name}", "import")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if DOTTED.fullmatch(node.value):
                yield Found(node.lineno, node.value, "string")


def violations(path: Path, rule: Rule, *, source: str | None = None) -> list[str]:
    """What ``path`` (or ``source``, as if it were ``path``) imports against ``rule``."""
    module = module_name(path)
    text = path.read_text(encoding="utf-8") if source is None else source
    found = imports_of(text, module, is_package=path.name == "__init__.py")
    bad = []
    for f in found:
        parts = f.target.split(".")
        if parts[0] != "missive" or len(parts) < 2 or parts[1] not in rule.forbidden:
            continue
        if f.how == "string" and any(module == who and pattern.fullmatch(f.target)
                                     for who, pattern in SANCTIONED):
            continue
        what = "imports" if f.how == "import" else "names the module"
        bad.append(f"{path.relative_to(SRC.parent)}:{f.line} {what} {f.target} ({rule.why})")
    return sorted(set(bad))


def cases() -> list[object]:
    params: list[object] = []
    for rule in RULES:
        for path in sorted((PACKAGE / rule.layer).rglob("*.py")):
            rel = path.relative_to(PACKAGE).as_posix()
            params.append(pytest.param(rule, path, id=rel))
    return params


def test_every_layer_exists() -> None:
    """A renamed package would silently make its rule check nothing."""
    missing = [r.layer for r in RULES if not any((PACKAGE / r.layer).rglob("*.py"))]
    assert missing == []
    assert len(cases()) > 40


@pytest.mark.parametrize(("rule", "path"), cases())
def test_imports_go_downwards(rule: Rule, path: Path) -> None:
    assert violations(path, rule) == []


def test_the_check_sees_wrong_way_imports() -> None:
    """The detector on a made-up core module: each form of import is caught."""
    source = '''
from __future__ import annotations
import importlib
from typing import TYPE_CHECKING
from missive import mta
from missive.mailbox.models import Message
from ..notify import queue
if TYPE_CHECKING:
    from missive.runtime import Core
def later() -> None:
    import missive.webmail.app
    importlib.import_module("missive.imap.server")
DOC = "see missive.mta for the SMTP side"
'''
    path = PACKAGE / "mailbox" / "made_up.py"  # never written: only its name is used
    found = {(f.line, f.target) for f in imports_of(source, module_name(path))}
    assert (5, "missive.mta") in found
    assert (7, "missive.notify.queue") in found
    assert (9, "missive.runtime.Core") in found
    assert (11, "missive.webmail.app") in found
    assert (12, "missive.imap.server") in found
    assert not any(t.startswith("see ") for _, t in found)

    rule = RULES[CORE.index("mailbox")]
    reported = violations(path, rule, source=source)
    assert {int(v.split(":")[1].split()[0]) for v in reported} == {5, 7, 9, 11, 12}
    assert reported[0].startswith("src/missive/mailbox/made_up.py:")


def test_sanctioned_exception_is_narrow() -> None:
    """``db.schema`` may name ``<component>.models`` modules, nothing else of the fronts."""
    schema = PACKAGE / "db" / "schema.py"
    rule = next(r for r in RULES if r.layer == "db")
    assert violations(schema, rule) == []
    extra = schema.read_text() + '\nOTHER = "missive.notify.worker"\nimport missive.mta.models\n'
    reported = violations(schema, rule, source=extra)
    assert len(reported) == 2
    assert "names the module missive.notify.worker" in reported[0] + reported[1]
    assert "imports missive.mta.models" in reported[0] + reported[1]
