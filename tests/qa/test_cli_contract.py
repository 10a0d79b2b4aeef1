"""The command-line contract of SPEC §7 ("stable: operators and test harnesses script it").

Read from the parser itself (no command is run): every command SPEC §7 names exists, every
command that reports something has ``--json``, and every command has a help line. The two
long-running commands (``serve``, ``demo``) report through ``run/ports.json`` and logs instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from missive.cli import build_parser

#: SPEC §7, command by command.
SPEC_COMMANDS = [
    "init", "serve", "demo", "deliver",
    "admin pro add", "admin patient add", "admin patient import", "admin pro import",
    "admin trust add", "admin trust import",
    "admin pro show", "admin pro list", "admin pro set-status", "admin pro delete",
    "admin patient show", "admin patient list", "admin patient set-status",
    "admin patient delete", "admin delegates list", "admin keys rotate",
    "admin queue list", "admin notify list",
    "certs init-ca", "certs issue-server", "certs issue-operator", "certs issue-pro",
    "certs revoke", "certs crl", "certs list", "certs check",
    "audit verify",
]
LONG_RUNNING = {"serve", "demo"}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = (),
           help_text: str | None = None
           ) -> Iterator[tuple[str, argparse.ArgumentParser, str | None]]:
    """``(command, parser, help)`` for every command that takes no further sub-command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(path), parser, help_text or parser.description
        return
    for action in subs:
        helps = {c.dest: c.help for c in action._choices_actions}
        for name, child in action.choices.items():
            yield from leaves(child, (*path, name), helps.get(name))


def commands() -> dict[str, tuple[argparse.ArgumentParser, str | None]]:
    return {c: (p, h) for c, p, h in leaves(build_parser())}


def test_every_spec_command_exists() -> None:
    found = commands()
    assert sorted(set(SPEC_COMMANDS) - set(found)) == []


def test_reporting_commands_have_json() -> None:
    missing = [c for c, (p, _) in commands().items() if c.split()[0] not in LONG_RUNNING
               and not any("--json" in a.option_strings for a in p._actions)]
    assert missing == []


def test_every_command_has_help() -> None:
    found = commands()
    assert len(found) > 30
    assert sorted(c for c, (_, text) in found.items() if not text) == []


def test_walk_sees_nested_commands() -> None:
    found = commands()
    assert "admin pro alias add" in found or "admin pro add" in found
    assert "admin" not in found  # only leaves
