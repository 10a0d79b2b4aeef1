"""The ``missive admin`` parser: optional modules of other components plug in their families
(``register``) and actions on our families (``register_<family>``)."""

from __future__ import annotations

import argparse
import sys
import types

import pytest

from missive.cli import build_parser


def _fake_module(name: str, **hooks: object) -> types.ModuleType:
    module = types.ModuleType(name)
    for attr, value in hooks.items():
        setattr(module, attr, value)
    return module


def test_optional_family_and_action_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(admin: argparse._SubParsersAction) -> None:
        q = admin.add_parser("queue")
        q.set_defaults(func=lambda args: 0, marker="queue")

    def register_trust(trust: argparse._SubParsersAction) -> None:
        r = trust.add_parser("refresh")
        r.set_defaults(func=lambda args: 0, marker="trust-refresh")

    monkeypatch.setitem(sys.modules, "missive.cli.admin_queue",
                        _fake_module("missive.cli.admin_queue", register=register))
    monkeypatch.setitem(sys.modules, "missive.cli.admin_notify",
                        _fake_module("missive.cli.admin_notify", register_trust=register_trust))
    parser = build_parser()
    assert parser.parse_args(["admin", "queue"]).marker == "queue"
    assert parser.parse_args(["admin", "trust", "refresh"]).marker == "trust-refresh"
    # Our own families are still there.
    args = parser.parse_args(["admin", "pro", "list", "--json"])
    assert args.json is True and args.func.__name__ == "list_"


def test_families_without_optional_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("missive.cli.admin_queue", "missive.cli.admin_notify",
                 "missive.cli.admin_delegates_web"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["admin", "queue"])
    assert parser.parse_args(["admin", "delegates", "revoke", "3"]).id == 3
