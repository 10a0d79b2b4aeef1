"""Replies to a pipelined command group (RFC 2920): same replies, same order, fewer writes.

The front holds a reply to MAIL or RCPT while the client's next command is already buffered and
sends it with the next reply; it flushes before it would wait for the client (RFC 2920 §3.2).
Checked over a raw TLS socket: a group ``MAIL``/``RCPT``/``DATA`` is answered in one write
(250, 250, 354), a group that ends with RCPT is answered at once (nothing is left waiting for a
command that is not coming), a lock-step client gets each reply before sending the next
command, and refusals inside a group keep their place.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from smtp_harness import PASSWORD, SmtpEnv, smtp_env, stop_env

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SmtpEnv]:
    e = await smtp_env(tmp_path_factory.mktemp("smtp-pipelining"))
    yield e
    await stop_env(e)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, env: SmtpEnv) -> Client:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", env.ports["smtp_submission_tls"], ssl=env.client_context())
        c = cls(reader, writer)
        assert (await c.reply()).startswith(b"220")
        assert (await c.send(b"EHLO pipe.test\r\n")).startswith(b"250")
        token = base64.b64encode(f"\0{env.pro}\0{PASSWORD}".encode())
        assert (await c.send(b"AUTH PLAIN " + token + b"\r\n")).startswith(b"235")
        return c

    async def reply(self) -> bytes:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            assert line, "connection closed"
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def send(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


@pytest.fixture
def server_writes(env: SmtpEnv, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What the front writes to its clients, write by write (the front runs in this loop)."""
    port = env.ports["smtp_submission_tls"]
    writes: list[bytes] = []
    original = asyncio.StreamWriter.write

    def write(self: asyncio.StreamWriter, data: Any) -> None:
        sockname = self.get_extra_info("sockname")
        if sockname is not None and sockname[1] == port:
            writes.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(asyncio.StreamWriter, "write", write)
    return writes


def _message(env: SmtpEnv, to: str) -> bytes:
    return (f"From: <{env.pro}>\r\nTo: <{to}>\r\nSubject: pipelined\r\n\r\nBonjour.\r\n.\r\n"
            ).encode()


async def test_a_mail_rcpt_data_group_is_answered_in_one_write(
        env: SmtpEnv, server_writes: list[bytes]) -> None:
    c = await Client.connect(env)
    try:
        server_writes.clear()
        c.writer.write(f"MAIL FROM:<{env.pro}>\r\nRCPT TO:<{env.pro2}>\r\nDATA\r\n".encode())
        await c.writer.drain()
        replies = [await c.reply() for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354"]
        assert server_writes == [b"".join(replies)]
        assert (await c.send(_message(env, env.pro2))).startswith(b"250 2.0.0")
        assert await c.send(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    finally:
        await c.close()


async def test_a_group_ending_with_rcpt_is_answered_without_waiting(env: SmtpEnv) -> None:
    c = await Client.connect(env)
    try:
        c.writer.write(f"MAIL FROM:<{env.pro}>\r\nRCPT TO:<{env.pro2}>\r\n".encode())
        await c.writer.drain()
        assert (await c.reply()).startswith(b"250")
        assert (await c.reply()).startswith(b"250")  # flushed: no further command buffered
        assert (await c.send(b"DATA\r\n")).startswith(b"354")
        assert (await c.send(_message(env, env.pro2))).startswith(b"250 2.0.0")
    finally:
        await c.close()


async def test_lock_step_commands_get_their_replies_one_by_one(
        env: SmtpEnv, server_writes: list[bytes]) -> None:
    c = await Client.connect(env)
    try:
        server_writes.clear()
        assert (await c.send(f"MAIL FROM:<{env.pro}>\r\n".encode())).startswith(b"250")
        assert (await c.send(f"RCPT TO:<{env.pro2}>\r\n".encode())).startswith(b"250")
        assert (await c.send(b"DATA\r\n")).startswith(b"354")
        assert len(server_writes) == 3
        assert (await c.send(_message(env, env.pro2))).startswith(b"250 2.0.0")
    finally:
        await c.close()


async def test_refusals_inside_a_group_keep_their_place(env: SmtpEnv) -> None:
    c = await Client.connect(env)
    try:
        c.writer.write((f"MAIL FROM:<{env.pro}>\r\nRCPT TO:<nobody@elsewhere.invalid>\r\n"
                        f"RCPT TO:<{env.pro2}>\r\nRCPT TO:<bad address>\r\nRSET\r\n"
                        "NOOP\r\n").encode())
        await c.writer.drain()
        replies = [await c.reply() for _ in range(6)]
        codes = [r[:1] for r in replies]
        assert codes[0] == b"2" and codes[1] == b"5" and codes[2] == b"2" and codes[3] == b"5"
        assert replies[4].startswith(b"250") and replies[5] == b"250 2.0.0 OK\r\n"
    finally:
        await c.close()
