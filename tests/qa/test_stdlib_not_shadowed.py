"""The standard library is never shadowed by our module names (ARCHITECTURE.md, first note).

``missive.mailbox`` is safe as a sub-package only while ``src/missive`` itself is not on
``sys.path``: then the top-level name ``mailbox`` is the standard library's. Our tree has other
names the standard library uses too (``logging.py`` at the top of the package,
``notify/queue.py``, ``webmail/routes/mailbox.py``). The realistic ways they could leak:

- an import of ours bound under a top-level name (``sys.modules["mailbox"]`` being our package):
  checked in this process and in a fresh interpreter that imports every module of the package;
- the supported entry points, ``missive`` (console script) and ``python -m missive``, started from
  the places people start them (the repository, ``src/``, a data directory, ``src/missive``):
  ``-m`` and ``-c`` put the *current directory* first on ``sys.path``;
- a new top-level module named like a standard one (each one is one more way to break
  ``python -m missive`` run from ``src/missive``);
- the installed ``missive`` not being this tree (an old non-editable install, or a stray
  ``missive`` directory at the repository root picked up before it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "missive"
PYTHON = sys.executable
MISSIVE = str(Path(sys.executable).with_name("missive"))
#: Standard modules whose names we also use; each must still resolve to the standard library.
SHADOW_CANDIDATES = ("mailbox", "logging", "queue")
#: Top-level names of the package that the standard library also uses, knowingly (see the
#: xfail below for what running from ``src/missive`` does with them).
KNOWN_TOP_LEVEL = {"mailbox"}

CWD_INSIDE_PACKAGE_REASON = (
    "with cwd=src/missive, `python -m missive` puts that directory first on sys.path, so a bare "
    "`import mailbox` there finds src/missive/mailbox/ (the design's sub-package name, kept on "
    "purpose, ARCHITECTURE.md). Nothing in Missive imports the standard `mailbox`, so the CLI "
    "runs (see test_python_m_missive_help); a plug-in that did would break there"
)

#: Run in a fresh interpreter: import the package's modules, then the candidates; report files.
PROBE = """
import importlib, json, sys
import missive
failed = {}
for name in json.loads(sys.argv[1]):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = repr(exc)
for name in sys.argv[2:]:
    importlib.import_module(name)
files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if m is not None}
print(json.dumps({"files": files, "failed": failed}))
"""


def _stdlib_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("stdlib", "platstdlib")]


def is_stdlib(file: str | None) -> bool:
    if file is None:  # built into the interpreter
        return True
    path = Path(file).resolve()
    return any(path.is_relative_to(d) for d in _stdlib_dirs()) and "site-packages" not in path.parts


def offenders(files: dict[str, str | None]) -> list[str]:
    """Modules loaded from our tree under a name that is not ``missive…``, and candidates
    loaded from anywhere but the standard library."""
    bad = []
    for name, file in files.items():
        ours = file is not None and Path(file).resolve().is_relative_to(PACKAGE)
        if ours and name.split(".")[0] != "missive":
            bad.append(f"{name} <- {file}")
    for name in SHADOW_CANDIDATES:
        if name in files and not is_stdlib(files[name]):
            bad.append(f"{name} <- {files[name]} (not the standard library)")
    return bad


def all_modules() -> list[str]:
    """Every module of the package from the file tree (pkgutil would skip directories without
    ``__init__.py``), but the entry point, whose import runs the CLI, and Alembic's scripts."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "db" / "migrations") or path.name == "__main__.py":
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def probe(cwd: Path, scope: str) -> dict[str, object]:
    modules = all_modules() if scope == "all" else ["missive.mailbox", "missive.cli"]
    done = subprocess.run([PYTHON, "-c", PROBE, json.dumps(modules), *SHADOW_CANDIDATES], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_in_this_process() -> None:
    import importlib

    ours = [importlib.import_module(n) for n in
            ("missive.mailbox", "missive.logs", "missive.notify.queue",
             "missive.webmail.routes.mailbox")]
    import logging
    import mailbox
    import queue

    for std, attr in ((mailbox, "Maildir"), (logging, "LogRecord"), (queue, "SimpleQueue")):
        assert is_stdlib(std.__file__), std.__file__
        assert hasattr(std, attr)
        assert std not in ours
    assert sys.modules["mailbox"] is mailbox and sys.modules["missive.mailbox"] is ours[0]


def test_every_module_in_a_fresh_interpreter(tmp_path: Path) -> None:
    result = probe(tmp_path, "all")
    files = result["files"]
    assert isinstance(files, dict)
    assert "missive.mailbox.store" in files and "missive.webmail.routes.mailbox" in files
    assert result["failed"] == {}, "modules that cannot be imported were not checked"
    assert offenders(files) == []


def test_the_check_sees_a_shadowing_module() -> None:
    """The detector itself: our file under a top-level name, or a candidate from elsewhere."""
    import mailbox

    assert offenders({"mailbox": mailbox.__file__,
                      "missive.mailbox": str(PACKAGE / "mailbox" / "__init__.py")}) == []
    assert offenders({"mailbox": str(PACKAGE / "mailbox" / "__init__.py")}) != []
    assert offenders({"logging": str(PACKAGE / "logging.py")}) != []
    assert offenders({"queue": "/tmp/elsewhere/queue.py"}) != []


def test_the_installed_package_is_this_tree(tmp_path: Path) -> None:
    result = probe(REPO, "cli")
    files = result["files"]
    assert isinstance(files, dict)
    assert Path(str(files["missive"])).resolve() == PACKAGE / "__init__.py"
    assert not (REPO / "missive").exists() and not (REPO / "missive.py").exists()


@pytest.mark.parametrize("where", [
    "repo", "src", "data-dir", "src/missive",
])
def test_python_m_missive_help(where: str, tmp_path: Path) -> None:
    cwd = {"repo": REPO, "src": REPO / "src", "data-dir": tmp_path,
           "src/missive": PACKAGE}[where]
    done = subprocess.run([PYTHON, "-m", "missive", "--help"], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: missive")
    assert "admin" in done.stdout


@pytest.mark.xfail(strict=True, reason=CWD_INSIDE_PACKAGE_REASON)
def test_cwd_inside_the_package_with_python_m_semantics() -> None:
    """``python -c`` puts the current directory first on ``sys.path`` exactly as ``-m`` does."""
    result = probe(PACKAGE, "cli")
    files = result["files"]
    assert isinstance(files, dict)
    assert offenders(files) == []


@pytest.mark.parametrize("where", ["src/missive", "src/missive/mailbox"])
def test_console_script_from_inside_the_package(where: str) -> None:
    """The console script puts its own directory, not the current one, on ``sys.path``."""
    done = subprocess.run([MISSIVE, "--help"], cwd=REPO / where, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: missive")


def test_no_new_top_level_name_shadows_the_standard_library() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert "mailbox" in top and "cli" in top  # the listing itself works
    clashes = top & set(sys.stdlib_module_names)
    assert clashes - KNOWN_TOP_LEVEL == set(), (
        f"src/missive/{sorted(clashes - KNOWN_TOP_LEVEL)} named like standard modules: "
        "`python -m missive` run from src/missive would import them instead")
