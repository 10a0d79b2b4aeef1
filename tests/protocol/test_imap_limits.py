"""Limits (SPEC §4): timeouts, connections per address and per user, command length."""

from __future__ import annotations

import asyncio
import imaplib
from typing import Any

from test_imap_clients import LOGIN, PASSWORD, running


async def _open(env: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("localhost", env.port, ssl=env.client_ctx)
    return reader, writer, await asyncio.wait_for(reader.readline(), 10)


async def test_silent_connections_are_logged_out(settings: Any) -> None:
    settings.imap = settings.imap.model_copy(update={"login_timeout": 1, "idle_timeout": 1})
    async with running(settings) as env:
        reader, writer, _ = await _open(env)
        assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"* BYE")
        reader, writer, _ = await _open(env)
        writer.write(f'a LOGIN "{LOGIN}" "{PASSWORD}"\r\nb IDLE\r\n'.encode())
        await writer.drain()
        lines = [await asyncio.wait_for(reader.readline(), 30) for _ in range(3)]
        assert lines[0].startswith(b"a OK") and lines[1].startswith(b"+ ")
        assert lines[2].startswith(b"* BYE")


async def test_connections_per_address_and_sessions_per_user(settings: Any) -> None:
    settings.imap = settings.imap.model_copy(update={"max_connections_per_ip": 3})
    async with running(settings) as env:
        env.front.server.settings = env.front.server.settings.model_copy(
            update={"max_connections_per_user": 2})
        conns = [await _open(env) for _ in range(3)]
        assert all(greeting.startswith(b"* OK") for _, _, greeting in conns)
        _, extra, greeting = await _open(env)
        assert greeting.startswith(b"* BYE")
        extra.close()
        replies = []
        for reader, writer, _ in conns:
            writer.write(f'a LOGIN "{LOGIN}" "{PASSWORD}"\r\n'.encode())
            await writer.drain()
            replies.append(await asyncio.wait_for(reader.readline(), 10))
        assert [r.split(b" ")[1] for r in replies] == [b"OK", b"OK", b"NO"]
        assert b"[LIMIT]" in replies[2]
        for _, writer, _ in conns:
            writer.close()


async def test_overlong_line_is_refused_and_the_session_goes_on(settings: Any) -> None:
    settings.imap = settings.imap.model_copy(update={"max_line": 1024})

    async with running(settings) as env:
        def scenario() -> None:
            c = imaplib.IMAP4_SSL("localhost", env.port, ssl_context=env.client_ctx, timeout=10)
            c.send(b"a NOOP " + b"x" * 5000 + b"\r\n")
            assert c.readline().startswith(b"* BAD")
            c.login(LOGIN, PASSWORD)
            assert c.noop()[0] == "OK"
            c.logout()

        await asyncio.to_thread(scenario)


async def test_commands_pipelined_before_starttls_are_discarded(settings: Any) -> None:
    import ssl

    async with running(settings) as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.starttls_port)
        await reader.readline()
        writer.write(b"a STARTTLS\r\nb CAPABILITY\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"a OK")
        await writer.start_tls(ssl.create_default_context(cafile=str(env.ca_file)),
                               server_hostname="localhost")
        writer.write(b"c NOOP\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"c OK")
        writer.close()
