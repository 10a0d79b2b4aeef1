"""House rules from STYLE.md that a machine can check on every module of ``src/missive``.

- "Module docstrings say what the module is for": every module has one.
- "Logs: ``logging.getLogger(__name__)``": our modules log under their own names (a literal
  ``"missive…"`` name, or logging straight on the root logger, hides where a line came from
  and escapes per-module levels). Naming a library's logger to configure it is fine.
- Library code writes no ``print``: output belongs to the command line (``cli/``), everything
  else logs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "missive"
ROOT_CALLS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def modules() -> list[object]:
    return [pytest.param(p, id=p.relative_to(PACKAGE).as_posix())
            for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts]


def problems(path: Path, source: str | None = None) -> list[str]:
    rel = path.relative_to(PACKAGE).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    found = []
    if not (ast.get_docstring(tree) or "").strip():
        found.append("no module docstring saying what the module is for")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "logging"):
            if func.attr in ROOT_CALLS and rel != "logging.py":
                found.append(f"line {node.lineno}: logging.{func.attr}() logs on the root "
                             "logger; use log = logging.getLogger(__name__)")
            if (func.attr == "getLogger" and node.args and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).startswith("missive")):
                found.append(f"line {node.lineno}: getLogger({node.args[0].value!r}); use "
                             "__name__")
        if isinstance(func, ast.Name) and func.id == "print" and not rel.startswith("cli/"):
            found.append(f"line {node.lineno}: print() outside the command line; log instead")
    return found


@pytest.mark.parametrize("path", modules())
def test_module_follows_house_rules(path: Path) -> None:
    assert problems(path) == []


def test_checker() -> None:
    fake = PACKAGE / "mta" / "made_up.py"  # never written: only its name is used
    source = ("import logging\nlogging.info('x')\nlog = logging.getLogger('missive.mta')\n"
              "aiosmtpd = logging.getLogger('mail.log')\nprint('hello')\n")
    found = problems(fake, source)
    assert [f.split(":")[0] for f in found] == [
        "no module docstring saying what the module is for", "line 2", "line 3", "line 5"]
    assert problems(fake, '"""Why."""\nlog = __import__("logging").getLogger(__name__)\n') == []
