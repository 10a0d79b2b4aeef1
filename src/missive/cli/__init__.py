"""The ``missive`` command line (SPEC §7, a stable contract for operators and harnesses).

``missive [--data-dir DIR] COMMAND …``. Each command family lives in its own module with a
``register(subparsers)`` function; commands are ``async`` or plain functions taking the parsed
arguments and returning an exit code. Errors go to stderr with a non-zero exit and a sentence that
says what to fix; ``--json`` prints machine-readable output on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Sequence

from missive.cli import common

#: Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "missive.cli.init",
    "missive.cli.serve",
    "missive.cli.deliver",
    "missive.cli.admin",
    "missive.cli.certs",
    "missive.cli.audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="missive",
        description="Missive secure health-messaging server.",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("MISSIVE_DATA_DIR", "./data"),
        help="data directory (default: $MISSIVE_DATA_DIR or ./data)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a command family not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        result = func(args)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
        return int(result or 0)
    except common.CommandError as exc:
        common.fail(str(exc), as_json=getattr(args, "json", False))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
