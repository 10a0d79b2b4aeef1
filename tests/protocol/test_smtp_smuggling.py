"""P12: strict framing. SMTP smuggling end-of-data variants neither end the data early nor
inject a second message; bare CR/LF in commands are refused; long lines are refused; the
session stays in step (a NOOP afterwards gets its own reply and nothing else).

Driven over a raw TLS socket (asyncio streams), since clients never send these on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from smtp_harness import PASSWORD, SmtpEnv, smtp_env, stop_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Published variants (SEC Consult 2023, and the follow-ups): a fake end of data, after which
# a second transaction is smuggled.
VARIANTS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r.\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SmtpEnv]:
    e = await smtp_env(tmp_path_factory.mktemp("smtp-smuggling"), max_errors=50)
    yield e
    await stop_env(e)


class Raw:
    """A line-oriented SMTP client over implicit TLS that sends bytes exactly as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, env: SmtpEnv, login: bool = True) -> Raw:
        ctx = env.client_context()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", env.ports["smtp_submission_tls"], ssl=ctx)
        raw = cls(reader, writer)
        assert (await raw.reply()).startswith(b"220")
        await raw.cmd(b"EHLO raw.test\r\n")
        if login:
            token = base64.b64encode(f"\0{env.pro}\0{PASSWORD}".encode())
            assert (await raw.cmd(b"AUTH PLAIN " + token + b"\r\n")).startswith(b"235")
        return raw

    async def reply(self) -> bytes:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            assert line, "connection closed"
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    async def cmd(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def nothing_pending(self) -> bool:
        try:
            extra = await asyncio.wait_for(self.reader.read(1), 0.3)
        except TimeoutError:
            return True
        return extra == b""

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass


@pytest.mark.parametrize("variant", VARIANTS, ids=[repr(v) for v in VARIANTS])
async def test_smuggling_variant_does_not_inject(env: SmtpEnv, variant: bytes) -> None:
    victim = env.pro2
    before = await env.mailbox_count(victim)
    raw = await Raw.connect(env)
    try:
        assert (await raw.cmd(f"MAIL FROM:<{env.pro}>\r\n".encode())).startswith(b"250")
        assert (await raw.cmd(f"RCPT TO:<{victim}>\r\n".encode())).startswith(b"250")
        assert (await raw.cmd(b"DATA\r\n")).startswith(b"354")
        smuggled = (f"MAIL FROM:<{env.pro}>\r\nRCPT TO:<{victim}>\r\nDATA\r\n"
                    f"From: <{env.pro}>\r\nSubject: smuggled\r\n\r\nsmuggled\r\n").encode()
        body = (f"From: <{env.pro}>\r\nTo: <{victim}>\r\nSubject: first\r\n\r\nfirst".encode()
                + variant + smuggled + b".\r\n")
        final = await raw.cmd(body)
        has_bare = variant.replace(b"\r\n", b"").strip(b".\x00") != b""
        if has_bare:
            assert final.startswith(b"554 5.6.0"), final
        else:
            assert final.startswith(b"250 2.0.0"), final
        # In step: a NOOP gets exactly its own reply.
        assert await raw.cmd(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
        assert await raw.nothing_pending()
    finally:
        await raw.close()
    after = await env.mailbox_count(victim)
    assert after == before + (0 if has_bare else 1)
    if not has_bare:
        stored = (await env.fetch_all(victim))[-1]
        assert b"Subject: first" in stored  # the smuggled text stayed inside the first message


@pytest.mark.parametrize("line", [b"NOOP\n", b"NOOP\rNOOP\r\n", b"NO\rOP\r\n",
                                  b"MAIL FROM:<a@b.test>\rRCPT TO:<c@d.test>\r\n"])
async def test_bare_cr_lf_in_commands_refused_and_session_in_step(env: SmtpEnv,
                                                                  line: bytes) -> None:
    raw = await Raw.connect(env)
    try:
        reply = await raw.cmd(line)
        assert reply.startswith(b"500 5.5.2"), reply
        assert await raw.cmd(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
        assert await raw.nothing_pending()
    finally:
        await raw.close()


async def test_overlong_command_refused(env: SmtpEnv) -> None:
    raw = await Raw.connect(env)
    try:
        reply = await raw.cmd(b"NOOP " + b"x" * 600 + b"\r\n")
        assert reply.startswith(b"500 5.5.2 Line too long"), reply
        reply = await raw.cmd(b"NOOP " + b"x" * 5000 + b"\r\n")
        assert reply.startswith(b"500 5.5.2"), reply
        assert await raw.cmd(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    finally:
        await raw.close()


async def test_overlong_data_line_refused(env: SmtpEnv) -> None:
    raw = await Raw.connect(env)
    try:
        await raw.cmd(f"MAIL FROM:<{env.pro}>\r\n".encode())
        await raw.cmd(f"RCPT TO:<{env.pro2}>\r\n".encode())
        await raw.cmd(b"DATA\r\n")
        reply = await raw.cmd(b"Subject: x\r\n\r\n" + b"z" * 1200 + b"\r\n.\r\n")
        assert reply.startswith(b"554 5.6.0 Message refused: a line is longer"), reply
        assert await raw.cmd(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    finally:
        await raw.close()


async def test_malformed_commands_get_5xx_then_session_closed(env: SmtpEnv) -> None:
    raw = await Raw.connect(env, login=False)
    try:
        assert (await raw.cmd(b"MAIL FROM:<<<\r\n")).startswith(b"5")
        assert (await raw.cmd(b"RCPT\r\n")).startswith(b"5")
        assert (await raw.cmd(b"\r\n")).startswith(b"500 5.5.2")
        assert (await raw.cmd(b"XYZZY\r\n")) == b"500 5.5.1 Command not recognized\r\n"
        assert await raw.cmd(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"
    finally:
        await raw.close()


async def test_error_limit_closes_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = await smtp_env(tmp_path_factory.mktemp("smtp-errors"), max_errors=3)
    try:
        raw = await Raw.connect(env, login=False)
        replies = [await raw.cmd(b"HELO\r\n") for _ in range(3)]
        assert all(r.startswith(b"501 5.5.4") for r in replies)
        assert (await raw.reply()).startswith(b"421 4.7.0 Too many errors")
        assert await raw.reader.read() == b""
        await raw.close()
    finally:
        await stop_env(env)
