"""P10 over real sockets: message rate per sender, connections per client address, command
timeout answered with 421. Each test builds its own front with small limits."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest
from smtp_harness import message, send, smtp_env, stop_env

from missive.audit.models import AuditEntry


async def test_sender_rate_limit_450_then_refusal_audited(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, rate_per_sender=1.0, rate_burst=2.0)
    try:
        def run() -> list[tuple[int, str]]:
            c = env.login()
            try:
                return [send(c, env.pro, [env.pro2], message(env.pro, env.pro2))
                        for _ in range(3)]
            finally:
                c.close()

        replies = await asyncio.to_thread(run)
        assert [r[0] for r in replies[:2]] == [250, 250]
        assert replies[2] == (450, "4.7.1 Too many messages from this sender, try again later")
        from sqlalchemy import select

        async with env.admin.db.read() as s:
            reasons = (await s.execute(select(AuditEntry.reason).where(
                AuditEntry.action == "smtp.refuse"))).scalars().all()
        assert "P10: sender rate limit" in reasons
    finally:
        await stop_env(env)


async def test_connections_per_address_421(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, max_connections_per_address=2)
    try:
        def run() -> tuple[int, bytes]:
            held = [smtplib.SMTP("127.0.0.1", env.ports["smtp_submission"], timeout=10)
                    for _ in range(2)]
            try:
                third = smtplib.SMTP(timeout=10)
                try:
                    return third.connect("127.0.0.1", env.ports["smtp_submission"])
                finally:
                    third.close()
            finally:
                for c in held:
                    c.close()

        code, text = await asyncio.to_thread(run)
        assert (code, text) == (421, b"4.7.0 Too many connections from your address, try later")

        def again() -> int:
            c = smtplib.SMTP("127.0.0.1", env.ports["smtp_submission"], timeout=10)
            code = c.noop()[0]
            c.close()
            return code

        # once the others are closed, a new connection is accepted
        await asyncio.sleep(0.2)
        assert await asyncio.to_thread(again) == 250
    finally:
        await stop_env(env)


@pytest.mark.parametrize("phase", ["command", "data"])
async def test_timeouts_answer_421(tmp_path: Path, phase: str) -> None:
    env = await smtp_env(tmp_path, command_timeout=0.5, data_timeout=0.8)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", env.ports["smtp_submission_tls"], ssl=env.client_context())
        await reader.readline()
        if phase == "data":
            import base64

            from smtp_harness import PASSWORD

            token = base64.b64encode(f"\0{env.pro}\0{PASSWORD}".encode())
            for line in (b"EHLO t\r\n", b"AUTH PLAIN " + token + b"\r\n",
                         f"MAIL FROM:<{env.pro}>\r\n".encode(),
                         f"RCPT TO:<{env.pro2}>\r\n".encode(), b"DATA\r\n"):
                writer.write(line)
                await writer.drain()
                while True:
                    reply = await asyncio.wait_for(reader.readline(), 5)
                    if reply[3:4] != b"-":
                        break
            writer.write(b"Subject: slow\r\n")
            await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.startswith(b"421 4.4.2 Timeout")
        writer.close()
    finally:
        await stop_env(env)


async def test_timeouts_count_from_the_last_command(tmp_path: Path) -> None:
    """The idle timer is moved at every command (kept armed, re-armed when due early): a
    client that keeps talking is never timed out, the longer data timeout holds during DATA
    even though the command timer was armed first, and silence still ends in 421."""
    import base64

    from smtp_harness import PASSWORD

    env = await smtp_env(tmp_path, command_timeout=0.5, data_timeout=1.5)
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", env.ports["smtp_submission_tls"], ssl=env.client_context())
        await reader.readline()

        async def command(line: bytes) -> bytes:
            writer.write(line)
            await writer.drain()
            while True:
                reply = await asyncio.wait_for(reader.readline(), 5)
                if reply[3:4] != b"-":
                    return reply

        token = base64.b64encode(f"\0{env.pro}\0{PASSWORD}".encode())
        await command(b"EHLO t\r\n")
        await command(b"AUTH PLAIN " + token + b"\r\n")
        for _ in range(5):  # 1.5 s in all, 0.3 s apart: never 0.5 s idle
            await asyncio.sleep(0.3)
            assert (await command(b"NOOP\r\n")).startswith(b"250")
        await command(f"MAIL FROM:<{env.pro}>\r\n".encode())
        await command(f"RCPT TO:<{env.pro2}>\r\n".encode())
        assert (await command(b"DATA\r\n")).startswith(b"354")
        await asyncio.sleep(0.9)  # over the command timeout, under the data timeout
        writer.write(f"From: <{env.pro}>\r\nTo: <{env.pro2}>\r\nSubject: slow\r\n\r\nx\r\n"
                     .encode())
        assert (await command(b".\r\n")).startswith(b"250")
        started = asyncio.get_running_loop().time()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.startswith(b"421 4.4.2 Timeout")
        assert asyncio.get_running_loop().time() - started < 1.4  # the command timeout again
        writer.close()
    finally:
        await stop_env(env)
