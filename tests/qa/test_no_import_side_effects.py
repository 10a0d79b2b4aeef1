"""Importing any module of the package does nothing but define things (ARCHITECTURE.md: "No
globals built at import time"; BRIEF: "No I/O or globals built at import time").

A fresh interpreter, started in an empty directory, imports every module of ``missive`` one after
the other (every ``.py`` file of the tree; :mod:`pkgutil`'s walk is compared with that list,
since it skips directories without ``__init__.py``) and records, after each one, what appeared:
sockets created and host names resolved, files or directories in the current directory (the
default data directory is ``./data``), threads, SQLAlchemy engines, child processes, handlers on
the root logger, and signal handlers. Whatever appears is charged to the module whose import
caused it (its own code or a library it pulled in), and that module's case fails naming it.

``missive.__main__`` is left out: importing it *is* running the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "missive"

PROBE = r'''
import importlib, json, logging, os, pkgutil, signal, socket, subprocess, sys, threading

events = []

def record(kind, what):
    events.append((kind, what))

_socket_init = socket.socket.__init__
def socket_init(self, *args, **kwargs):
    _socket_init(self, *args, **kwargs)
    record("socket", f"socket(family={self.family!s}, type={self.type!s})")
socket.socket.__init__ = socket_init

_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    record("socket", f"getaddrinfo({host!r})")
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo

_popen_init = subprocess.Popen.__init__
def popen_init(self, args, *a, **k):
    record("process", repr(args)[:200])
    return _popen_init(self, args, *a, **k)
subprocess.Popen.__init__ = popen_init

import sqlalchemy.engine.base as sa_base
_engine_init = sa_base.Engine.__init__
def engine_init(self, *args, **kwargs):
    _engine_init(self, *args, **kwargs)
    record("engine", str(self.url))
sa_base.Engine.__init__ = engine_init

def files():
    found = set()
    for root, dirs, names in os.walk("."):
        for n in dirs + names:
            found.add(os.path.join(root, n))
    return found

SIGNALS = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)]

def state():
    return {
        "threads": {t.ident: t.name for t in threading.enumerate()},
        "files": files(),
        "handlers": [repr(h) for h in logging.getLogger().handlers],
        "level": logging.getLogger().level,
        "signals": {int(s): repr(signal.getsignal(s)) for s in SIGNALS},
    }

import missive

report = {}
walked = []
walk_errors = []
for info in pkgutil.walk_packages(missive.__path__, "missive.",
                                  onerror=lambda name: walk_errors.append(name)):
    if not info.name.endswith(".__main__"):
        walked.append(info.name)
# The module names come from the test (read from the file tree): pkgutil skips directories
# without __init__.py, and they must be checked too.
for name in json.loads(sys.argv[1]):
    before = state()
    events.clear()
    entry = {}
    try:
        importlib.import_module(name)
    except BaseException as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
    after = state()
    new_threads = [n for i, n in after["threads"].items() if i not in before["threads"]]
    if new_threads:
        entry["threads"] = new_threads
    new_files = sorted(after["files"] - before["files"])
    if new_files:
        entry["files"] = new_files
    if after["handlers"] != before["handlers"] or after["level"] != before["level"]:
        entry["root logger"] = [after["handlers"], after["level"]]
    if after["signals"] != before["signals"]:
        entry["signals"] = after["signals"]
    for kind, what in events:
        entry.setdefault(kind, []).append(what)
    report[name] = entry

print(json.dumps({"walked": walked, "report": report, "walk_errors": walk_errors}))
'''


#: Loaded by Alembic from their paths, never imported as modules of the package.
NOT_MODULES = (PACKAGE / "db" / "migrations",)


def package_modules() -> list[str]:
    """Every module of the package, read from the file tree."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(path.is_relative_to(d) for d in NOT_MODULES):
            continue
        rel = path.relative_to(PACKAGE.parent)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if name != "missive" and not name.endswith(".__main__"):
            names.append(name)
    return names


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("import-side-effects")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSIVE_")}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(package_modules())], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_pkgutil_walk_finds_every_module(probe: dict[str, Any]) -> None:
    assert probe["walk_errors"] == []
    assert sorted(set(package_modules()) - set(probe["walked"])) == []


def test_every_module_was_imported(probe: dict[str, Any]) -> None:
    assert sorted(probe["report"]) == sorted(package_modules())
    assert {"missive.mailbox.store", "missive.webmail.app"} <= set(probe["report"])


@pytest.mark.parametrize("module", package_modules())
def test_import_has_no_side_effect(probe: dict[str, Any], module: str) -> None:
    assert probe["report"][module] == {}, f"importing {module}: {probe['report'][module]}"


def test_the_probe_sees_side_effects(tmp_path: Path) -> None:
    """The probe itself: a made-up package that does every forbidden thing at import."""
    pkg = tmp_path / "lib" / "missive"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "noisy.py").write_text(
        "import logging, socket, threading, time, pathlib\n"
        "from sqlalchemy import create_engine\n"
        "socket.socket().close()\n"
        "threading.Thread(target=time.sleep, args=(2,), daemon=True).start()\n"
        "pathlib.Path('data').mkdir()\n"
        "ENGINE = create_engine('sqlite://')\n"
        "logging.basicConfig()\n")
    (pkg / "quiet.py").write_text("X = 1\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-I", "-c",
                           f"import sys; sys.path.insert(0, {str(tmp_path / 'lib')!r}); "
                           f"exec({PROBE!r})", '["missive.quiet", "missive.noisy"]'],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)["report"]
    assert report["missive.quiet"] == {}
    noisy = report["missive.noisy"]
    assert set(noisy) == {"socket", "threads", "files", "engine", "root logger"}
    assert noisy["files"] == ["./data"]
