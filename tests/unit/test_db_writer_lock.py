"""``Database.run_write`` on SQLite queues behind other processes' writers on a ``flock`` (the
SMTP worker processes, ``mta.processes``), instead of sleeping in SQLite's busy handler."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from missive.db.engine import Database

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


async def test_run_write_waits_for_another_process_holding_the_writer_lock(
        tmp_path: Path) -> None:
    path = tmp_path / "missive.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        def create(s: Session) -> None:
            s.execute(text("CREATE TABLE t (x INTEGER)"))

        await db.run_write(create)
        lock = Path(f"{path}-writer.lock")
        assert lock.exists()
        assert lock.stat().st_mode & 0o777 == 0o600
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "1.0"],
                                  stdout=subprocess.PIPE)
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"held\n"
            started = time.monotonic()

            def insert(s: Session) -> float:
                s.execute(text("INSERT INTO t VALUES (1)"))
                return time.monotonic()

            wrote_at = await db.run_write(insert)
            # The write began only once the other process let the lock go.
            assert holder.wait(10) == 0
            assert wrote_at - started >= 0.5
        finally:
            holder.kill()

        def count(s: Session) -> int:
            return int(s.execute(text("SELECT count(*) FROM t")).scalar_one())

        assert await db.run_read(count) == 1
        # Free again: another process can take it at once.
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        await db.dispose()
