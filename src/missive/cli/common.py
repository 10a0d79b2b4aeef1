"""Helpers shared by the command modules: output, errors, settings and services."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

from missive.config import Settings, load_settings
from missive.errors import MissiveError


class CommandError(Exception):
    """A command failed for a reason the user can fix; the message says how."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(Path(args.data_dir))
    except MissiveError as exc:
        raise CommandError(str(exc)) from None


def require_initialised(settings: Settings) -> None:
    if not settings.config_file.exists() and not settings.database_url:
        raise CommandError(
            f"{settings.data_dir} is not a Missive data directory: run "
            f"`missive --data-dir {settings.data_dir} init` first"
        )


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit(
    data: Any, *, as_json: bool, human: Callable[[Any], str] | str | None = None
) -> None:
    """Print ``data`` as JSON (``--json``) or as the human text ``human`` gives."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=_default, ensure_ascii=False, indent=2) + "\n")
        return
    if human is None:
        text = json.dumps(data, default=_default, ensure_ascii=False, indent=2)
    elif callable(human):
        text = human(data)
    else:
        text = human
    sys.stdout.write(text.rstrip("\n") + "\n")


def fail(message: str, *, as_json: bool = False) -> None:
    if as_json:
        sys.stderr.write(json.dumps({"error": message}, ensure_ascii=False) + "\n")
    else:
        sys.stderr.write(f"missive: error: {message}\n")


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain text table for human output."""
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))
    return "\n".join(lines)
