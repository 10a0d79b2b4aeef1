"""IDLE (RFC 2177): a message accepted for delivery shows up as ``* n EXISTS`` in an idling
session — in the same process on SQLite, and from another process on PostgreSQL, where the
wake-up travels by LISTEN/NOTIFY (SPEC §7)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from test_imap_clients import LOGIN, PASSWORD, message, running

DELIVER = """
import asyncio, sys
from missive.config import load_settings
from missive.runtime import build_core

async def main() -> None:
    overrides = dict(environment="test", domain="test.missive.localhost", test_mode=True)
    if sys.argv[2]:
        overrides["database_url"] = sys.argv[2]
    settings = load_settings(sys.argv[1], **overrides)
    core = await build_core(settings, with_master_key=False)  # as the SMTP process (C2)
    delivery = core.store.delivery(sender="sender@example.org", source="smtp")
    delivery.add_local(int(sys.argv[3]))
    await delivery.commit(sys.stdin.buffer.read())
    await core.close()

asyncio.run(main())
"""


async def _idle_until_exists(backend_settings: Any, deliver_elsewhere: bool) -> float:
    async with running(backend_settings) as env:
        reader, writer = await asyncio.open_connection("localhost", env.port,
                                                       ssl=env.client_ctx)

        async def cmd(line: bytes) -> None:
            writer.write(line + b"\r\n")
            await writer.drain()
            while not (await asyncio.wait_for(reader.readline(), 10)).startswith(
                    line.split(b" ")[0] + b" "):
                pass

        await reader.readline()
        await cmd(f'a LOGIN "{LOGIN}" "{PASSWORD}"'.encode())
        await cmd(b"b SELECT INBOX")
        writer.write(b"c IDLE\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"+ ")
        raw = message(1)
        if deliver_elsewhere:
            url = backend_settings.database_url or ""
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", DELIVER, str(backend_settings.data_dir), url,
                str(env.mailbox_id), stdin=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(raw), 60)
            assert proc.returncode == 0, err.decode()[-2000:]
        else:
            delivery = env.core.store.delivery(sender="sender@example.org", source="smtp")
            delivery.add_local(env.mailbox_id)
            await delivery.commit(raw)
        accepted = time.monotonic()
        assert await asyncio.wait_for(reader.readline(), 10) == b"* 1 EXISTS\r\n"
        seen = time.monotonic() - accepted
        assert await asyncio.wait_for(reader.readline(), 10) == b"* 1 RECENT\r\n"
        writer.write(b"DONE\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"c OK")
        writer.close()
        return seen


async def test_idle_sees_a_delivery_in_this_process(backend_settings: Any) -> None:
    seen = await _idle_until_exists(backend_settings, deliver_elsewhere=False)
    print(f"EXISTS {seen * 1000:.0f} ms after the delivery committed")


async def test_idle_sees_a_delivery_from_another_process_on_postgres(pg_url: str,
                                                                     tmp_path: Any) -> None:
    from support import make_settings

    settings = make_settings(tmp_path / "data", database_url=pg_url)
    seen = await _idle_until_exists(settings, deliver_elsewhere=True)
    print(f"EXISTS {seen * 1000:.0f} ms after the other process committed")
