"""Structured JSON-lines logging (SPEC §7). Never given message content or AUTH secrets.

``setup(level)`` installs a handler on the root logger that writes one JSON object per line on
stderr: time, level, logger, message, and any ``extra={...}`` fields the caller passed.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value if isinstance(value, str | int | float | bool | None) else str(
                    value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries whose DEBUG output carries data (SMTP transcripts with addresses, SQL with
    # parameters such as an INS): never below WARNING, whatever the level asked for.
    for name in ("mail.log", "aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING)
