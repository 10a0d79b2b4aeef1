"""CONDSTORE (RFC 7162) and RFC-exact untagged responses, over a raw TLS connection."""

from __future__ import annotations

import asyncio
import re

from test_imap_clients import LOGIN, PASSWORD, Env, env, message  # noqa: F401 - fixture


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.n = 0

    async def cmd(self, text: str) -> list[str]:
        self.n += 1
        tag = f"t{self.n}"
        self.writer.write(f"{tag} {text}\r\n".encode())
        await self.writer.drain()
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            lines.append(line.rstrip("\r\n"))
            if line.startswith(tag + " "):
                return lines


async def connect(e: Env) -> Raw:
    reader, writer = await asyncio.open_connection("localhost", e.port, ssl=e.client_ctx)
    await reader.readline()
    raw = Raw(reader, writer)
    assert (await raw.cmd(f'LOGIN "{LOGIN}" "{PASSWORD}"'))[-1].startswith("t1 OK")
    return raw


async def test_condstore_fetch_store_search(env: Env) -> None:  # noqa: F811
    for i in range(3):
        await env.deliver(message(i))
    c = await connect(env)
    out = await c.cmd("ENABLE CONDSTORE")
    assert out[0] == "* ENABLED CONDSTORE"
    out = await c.cmd("SELECT INBOX (CONDSTORE)")
    highest = int(next(re.search(r"HIGHESTMODSEQ (\d+)", x).group(1)  # type: ignore[union-attr]
                       for x in out if "HIGHESTMODSEQ" in x))
    out = await c.cmd("STORE 1 +FLAGS (\\Flagged)")
    m = re.fullmatch(r"\* 1 FETCH \(FLAGS \(\\Flagged\) MODSEQ \((\d+)\)\)", out[0])
    assert m is not None, out
    after = int(m.group(1))
    assert after > highest
    out = await c.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert out[:-1] == [f"* 1 FETCH (FLAGS (\\Flagged) MODSEQ ({after}))"]
    out = await c.cmd(f"STORE 1,2 (UNCHANGEDSINCE {highest}) +FLAGS (\\Seen)")
    assert out[-1].split(" ", 1)[1].startswith("OK [MODIFIED 1]")
    assert any(x.startswith("* 2 FETCH (FLAGS (\\Seen) MODSEQ (") for x in out)
    out = await c.cmd(f"SEARCH MODSEQ {after}")
    assert re.fullmatch(r"\* SEARCH 1 2 \(MODSEQ \d+\)", out[0]), out
    out = await c.cmd("STATUS Sent (HIGHESTMODSEQ MESSAGES)")
    assert re.fullmatch(r'\* STATUS Sent \(HIGHESTMODSEQ \d+ MESSAGES 0\)', out[0]), out
    c.writer.close()


async def test_new_keyword_updates_flags_and_other_session_sees_changes(env: Env) -> None:  # noqa: F811
    await env.deliver(message(1))
    await env.deliver(message(2))
    a, b = await connect(env), await connect(env)
    await a.cmd("SELECT INBOX")
    await b.cmd("SELECT INBOX")
    out = await a.cmd("STORE 1 +FLAGS ($Urgent)")
    assert "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent)" in out
    assert "* 1 FETCH (FLAGS ($Urgent))" in out
    await a.cmd("STORE 2 +FLAGS (\\Deleted)")
    await a.cmd("EXPUNGE")
    # b hears about the flag change but not the expunge during a non-UID FETCH ...
    out = await b.cmd("FETCH 1 (FLAGS)")
    assert "* 1 EXPUNGE" not in out and "* 2 EXPUNGE" not in out
    # ... and then at NOOP.
    out = await b.cmd("NOOP")
    assert "* 2 EXPUNGE" in out
    out = await b.cmd("FETCH 1:* (UID)")
    assert out[:-1] == ["* 1 FETCH (UID 1)"]
    a.writer.close()
    b.writer.close()
