"""The IMAP front driven by real clients over TLS: Python imaplib, imap-tools, aioimaplib, curl.

The server runs on 127.0.0.1 port 0 with a certificate from the operator CA (``missive.certs``);
a test authenticator maps one login to one mailbox (the directory-backed one is tested with the
directory). Messages are sealed through the store like any delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import imaplib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from missive.imap.auth import Principal
from missive.imap.server import ImapFront, start

LOGIN, PASSWORD = "dr.house@test.missive.localhost", "correct horse battery"


class StaticAuth:
    def __init__(self, users: dict[str, tuple[str, int]]) -> None:
        self.users = users

    async def password(self, login: str, password: str) -> Principal | None:
        entry = self.users.get(login.lower())
        if entry is None or entry[0] != password:
            return None
        return Principal(login, entry[1])

    async def certificate(self, cert: Any, authzid: str | None) -> Principal | None:
        return None


def message(i: int, *, attachment: bool = False, forwarded: bool = False,
            subject: str | None = None, body: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {i} <sender{i}@example.org>"
    msg["To"] = LOGIN
    msg["Subject"] = subject or f"Message {i}"
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    msg["Message-ID"] = f"<m{i}@example.org>"
    msg.set_content(body or f"Body of message {i}.\n")
    if attachment:
        msg.add_attachment(b"%PDF-1.4\n" + bytes(range(256)) * 4, maintype="application",
                           subtype="pdf", filename="compte-rendu.pdf")
    if forwarded:
        inner = EmailMessage()
        inner["From"] = "Inner <inner@example.org>"
        inner["Subject"] = "Forwarded one"
        inner.set_content("inner text\n")
        msg.add_attachment(inner)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Env:
    core: Any
    front: ImapFront
    mailbox_id: int
    ca_file: Path
    client_ctx: ssl.SSLContext

    @property
    def port(self) -> int:
        return self.front.ports["imaps"]

    @property
    def starttls_port(self) -> int:
        return self.front.ports["imap"]

    async def deliver(self, raw: bytes, folder: str = "INBOX") -> int:
        mbox = await self.core.store.open(self.mailbox_id)
        return (await mbox.append(folder, raw))[1]

    def imaplib(self) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL("localhost", self.port, ssl_context=self.client_ctx,
                                   timeout=10)
        client.login(LOGIN, PASSWORD)
        return client


@contextlib.asynccontextmanager
async def running(settings: Any) -> AsyncIterator[Env]:
    """An IMAP front on port 0 over ``settings`` (SQLite or PostgreSQL), one mailbox, a CA."""
    from missive.certs import ca
    from missive.certs.files import CertsLayout
    from missive.certs.tls import server_context
    from missive.db.schema import create_schema
    from missive.runtime import build_core

    settings.imap = settings.imap.model_copy(update={
        "port": 0, "tls_port": 0, "auth_failure_delay": 0, "max_literal": 1024 * 1024,
        "max_connections_per_user": 5})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    ca.init_ca(settings)
    ca.issue_server(settings, ["localhost"], ["127.0.0.1"])
    core = await build_core(settings, with_master_key=True)
    await create_schema(core.db)
    await core.events.start(settings.sqlalchemy_url)
    async with core.db.write() as s:
        mailbox_id = await core.store.create_mailbox(s, kind="professional")
    auth = StaticAuth({LOGIN: (PASSWORD, mailbox_id)})
    front = await start(core, authenticator=auth,
                        ssl_context=server_context(settings, client_auth="optional"))
    ca_file = CertsLayout.of(settings).ca_cert
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        yield Env(core, front, mailbox_id, ca_file, ctx)
    finally:
        await front.stop()
        await core.close()


@pytest.fixture
async def env(settings: Any) -> AsyncIterator[Env]:
    async with running(settings) as e:
        yield e


def run(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


# --- imaplib -----------------------------------------------------------------------------------


async def test_imaplib_login_list_select_fetch(env: Env) -> None:
    await env.deliver(message(1))
    second = message(2, attachment=True, forwarded=True)
    await env.deliver(second)

    def scenario() -> None:
        c = env.imaplib()
        typ, caps = c.capability()
        assert typ == "OK" and b"IDLE" in caps[0] and b"UIDPLUS" in caps[0]
        typ, boxes = c.list()
        assert typ == "OK"
        names = [b.decode() for b in boxes]
        assert any(n.endswith('"/" INBOX') for n in names)
        assert any("\\Sent" in n and n.endswith("Sent") for n in names)
        typ, data = c.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        typ, data = c.fetch("1:2", "(UID FLAGS ENVELOPE RFC822.SIZE)")
        assert typ == "OK"
        assert b"Message 1" in data[0] and b'"sender1" "example.org"' in data[0]
        typ, data = c.fetch("2", "(BODYSTRUCTURE)")
        assert typ == "OK"
        bs = data[0]
        assert b'"APPLICATION" "PDF"' in bs and b'"MESSAGE" "RFC822"' in bs
        assert b'"FILENAME" "compte-rendu.pdf"' in bs
        typ, data = c.uid("FETCH", "2", "(BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == second
        assert f"RFC822.SIZE {len(second)}".encode() in c.fetch("2", "RFC822.SIZE")[1][0]
        typ, data = c.fetch("2", "(BODY.PEEK[3.HEADER.FIELDS (SUBJECT)] BODY.PEEK[3.1])")
        assert typ == "OK"
        assert data[0][1] == b"Subject: Forwarded one\r\n\r\n"
        assert data[1][1] == b"inner text\r\n"
        typ, data = c.fetch("1", "(FLAGS)")
        assert b"\\Seen" not in data[0]
        c.fetch("1", "(BODY[TEXT])")
        typ, data = c.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0]
        c.logout()

    await run(scenario)


async def test_imaplib_store_search_copy_move_expunge(env: Env) -> None:
    await env.deliver(message(1, subject="Compte rendu opératoire", body="tension normale\n"))
    await env.deliver(message(2, subject="Ordonnance", body="amoxicilline 1g\n"))
    await env.deliver(message(3, subject="Rendez-vous", body="mardi 10h\n"))

    def scenario() -> None:
        c = env.imaplib()
        c.select("INBOX")
        typ, data = c.search(None, "SUBJECT", "ordonnance")
        assert (typ, data) == ("OK", [b"2"])
        typ, data = c.search("UTF-8", "BODY", "amoxicilline")
        assert data == [b"2"]
        typ, data = c.uid("SEARCH", "TEXT", "mardi")
        assert data == [b"3"]
        typ, data = c.search(None, "OR", "FROM", "sender1", "FROM", "sender3")
        assert data == [b"1 3"]
        typ, data = c.store("1", "+FLAGS", "(\\Flagged $Important)")
        assert typ == "OK" and b"\\Flagged" in data[0] and b"$Important" in data[0]
        typ, data = c.search(None, "FLAGGED")
        assert data == [b"1"]
        typ, data = c.search(None, "KEYWORD", "$Important")
        assert data == [b"1"]
        typ, data = c.copy("1", "Archive")
        assert typ == "OK"
        assert c.untagged_responses.get("COPYUID") or b"COPYUID" in data[0]
        typ, data = c.uid("MOVE", "2", "Trash")
        assert typ == "OK"
        typ, data = c.status("Trash", "(MESSAGES UNSEEN UIDNEXT)")
        assert typ == "OK" and b"MESSAGES 1" in data[0]
        typ, data = c.search(None, "ALL")
        assert data == [b"1 2"]
        c.store("1", "+FLAGS", "\\Deleted")
        typ, data = c.expunge()
        assert (typ, data[-1]) == ("OK", b"1")  # imaplib also keeps MOVE's "* 2 EXPUNGE"
        typ, data = c.search(None, "ALL")
        assert data == [b"1"]
        typ, data = c.fetch("1", "(ENVELOPE)")
        assert b"Rendez-vous" in data[0]
        c.close()
        c.logout()

    await run(scenario)


async def test_imaplib_create_rename_delete_append_utf7(env: Env) -> None:
    def scenario() -> None:
        c = env.imaplib()
        assert c.create("&AMk-t&AOk-/Re&AOc-us")[0] == "OK"
        typ, data = c.list('""', "&AMk-t&AOk-*")
        assert typ == "OK"
        assert [d for d in data if d.endswith(b"&AMk-t&AOk-/Re&AOc-us")]
        assert any(b"\\HasChildren" in d and d.endswith(b"&AMk-t&AOk-") for d in data)
        typ, data = c.append("&AMk-t&AOk-/Re&AOc-us", "(\\Seen)", None, message(7))
        assert typ == "OK" and b"APPENDUID" in data[0]
        assert c.rename("&AMk-t&AOk-/Re&AOc-us", "Kept")[0] == "OK"
        typ, data = c.select("Kept")
        assert data == [b"1"]
        typ, data = c.fetch("1", "(FLAGS)")
        assert b"\\Seen" in data[0]
        c.unselect()
        assert c.delete("Kept")[0] == "OK"
        typ, data = c.select("Kept")
        assert typ == "NO"
        typ, data = c.append("Nowhere", None, None, message(8))
        assert typ == "NO"
        c.logout()

    await run(scenario)


async def test_imaplib_bad_input_gets_bad_not_a_dropped_connection(env: Env) -> None:
    def scenario() -> None:
        c = env.imaplib()
        for line in (b"x1 FROB", b"x2 FETCH", b"x3 SELECT Tom&Jerry", b"x4 FETCH 1 FLAGS",
                     b"x5 LOGIN a b", b'x6 SEARCH "unterminated', b"x7 UID NOOP"):
            c.send(line + b"\r\n")
            reply = c.readline()
            assert reply.split(b" ")[1] in (b"BAD", b"NO"), reply
        c.send(b"{5}\r\n")
        assert c.readline().startswith(b"* BAD")
        assert c.noop()[0] == "OK"
        c.logout()

    await run(scenario)


async def test_literal_size_is_refused_before_being_read(env: Env) -> None:
    def scenario() -> None:
        c = env.imaplib()
        c.send(b"a1 APPEND INBOX {99999999}\r\n")
        reply = c.readline()
        assert reply.startswith(b"* BAD [TOOBIG]"), reply
        c.send(b"a2 APPEND INBOX {99999999+}\r\n" + b"x" * 10)
        c.sock.shutdown(socket.SHUT_WR)
        c.logout_ok = True

    await run(scenario)


async def test_starttls_logindisabled_then_login(env: Env) -> None:
    def scenario() -> None:
        c = imaplib.IMAP4("127.0.0.1", env.starttls_port, timeout=10)
        assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
        typ, _ = c._simple_command("LOGIN", LOGIN, '"x"')
        assert typ == "NO"
        c.starttls(ssl_context=ssl.create_default_context(cafile=str(env.ca_file)))
        assert "LOGINDISABLED" not in c.capabilities
        assert "AUTH=PLAIN" in c.capabilities
        c.login(LOGIN, PASSWORD)
        assert c.select("INBOX")[0] == "OK"
        c.logout()

    await run(scenario)


async def test_authenticate_plain_and_wrong_password(env: Env) -> None:
    def scenario() -> None:
        c = imaplib.IMAP4_SSL("localhost", env.port, ssl_context=env.client_ctx, timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            c.login(LOGIN, "wrong")
        typ, _ = c.authenticate("PLAIN", lambda _: f"\0{LOGIN}\0{PASSWORD}".encode())
        assert typ == "OK"
        assert c.select()[0] == "OK"
        c.logout()

    await run(scenario)


async def test_sasl_ir_initial_response(env: Env) -> None:
    import base64

    def scenario() -> None:
        c = imaplib.IMAP4_SSL("localhost", env.port, ssl_context=env.client_ctx, timeout=10)
        token = base64.b64encode(f"\0{LOGIN}\0{PASSWORD}".encode()).decode()
        c.send(f"s1 AUTHENTICATE PLAIN {token}\r\n".encode())
        assert c.readline().startswith(b"s1 OK")
        c.send(b"s2 NAMESPACE\r\n")
        assert c.readline() == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
        assert c.readline().startswith(b"s2 OK")
        c.send(b's3 ID ("name" "test")\r\n')
        assert c.readline().startswith(b'* ID ("name" "Missive"')

    await run(scenario)


# --- imap-tools, aioimaplib, curl ---------------------------------------------------------------


async def test_imap_tools_fetch_flag_move_delete(env: Env) -> None:
    from imap_tools import AND, MailBox, MailMessageFlags

    await env.deliver(message(1, attachment=True))
    await env.deliver(message(2, subject="Résultats", body="hémoglobine 14\n"))

    def scenario() -> None:
        with MailBox("localhost", env.port, ssl_context=env.client_ctx).login(
                LOGIN, PASSWORD, "INBOX") as mb:
            msgs = list(mb.fetch(mark_seen=False))
            assert [m.subject for m in msgs] == ["Message 1", "Résultats"]
            assert msgs[0].attachments[0].filename == "compte-rendu.pdf"
            assert msgs[0].attachments[0].payload.startswith(b"%PDF-1.4")
            found = list(mb.fetch(AND(text="hémoglobine"), charset="utf-8"))
            assert [m.subject for m in found] == ["Résultats"]
            mb.flag(msgs[0].uid, MailMessageFlags.FLAGGED, True)
            assert [m.uid for m in mb.fetch(AND(flagged=True))] == [msgs[0].uid]
            mb.move(msgs[1].uid, "Archive")
            mb.delete(msgs[0].uid)
            assert list(mb.fetch()) == []
            assert [f.name for f in mb.folder.list()][:1] == ["INBOX"]

    await run(scenario)


async def test_aioimaplib_login_select_fetch(env: Env) -> None:
    import aioimaplib

    await env.deliver(message(1))
    client = aioimaplib.IMAP4_SSL("localhost", env.port, ssl_context=env.client_ctx)
    await client.wait_hello_from_server()
    assert (await client.login(LOGIN, PASSWORD)).result == "OK"
    assert (await client.select("INBOX")).result == "OK"
    resp = await client.uid("fetch", "1:*", "(UID ENVELOPE BODY.PEEK[])")
    assert resp.result == "OK"
    assert any(b"Body of message 1." in bytes(line) for line in resp.lines
               if isinstance(line, bytes | bytearray))
    assert (await client.logout()).result == "OK"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_fetches_by_uid_and_lists(env: Env) -> None:
    await env.deliver(message(1, subject="Pour curl"))
    base = f"imaps://localhost:{env.port}"
    common = ["curl", "-sS", "--cacert", str(env.ca_file), "-u", f"{LOGIN}:{PASSWORD}"]
    listed = await asyncio.to_thread(subprocess.run, [*common, base + "/"],
                                     capture_output=True, timeout=30, check=False)
    assert listed.returncode == 0, listed.stderr
    assert b"INBOX" in listed.stdout and b"Sent" in listed.stdout
    fetched = await asyncio.to_thread(subprocess.run, [*common, base + "/INBOX;UID=1"],
                                      capture_output=True, timeout=30, check=False)
    assert fetched.returncode == 0, fetched.stderr
    assert b"Subject: Pour curl" in fetched.stdout


# --- concurrency and IDLE ------------------------------------------------------------------------


async def test_idle_sees_a_delivery_and_other_sessions_changes(env: Env) -> None:
    await env.deliver(message(1))
    reader, writer = await asyncio.open_connection("localhost", env.port, ssl=env.client_ctx)

    async def cmd(line: bytes) -> list[bytes]:
        writer.write(line + b"\r\n")
        await writer.drain()
        tag = line.split(b" ")[0]
        out = []
        while True:
            got = await asyncio.wait_for(reader.readline(), 10)
            out.append(got)
            if got.startswith(tag + b" "):
                return out

    await reader.readline()
    await cmd(f'a LOGIN "{LOGIN}" "{PASSWORD}"'.encode())
    await cmd(b"b SELECT INBOX")
    writer.write(b"c IDLE\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"+ ")
    await env.deliver(message(2))
    assert await asyncio.wait_for(reader.readline(), 10) == b"* 2 EXISTS\r\n"
    assert await asyncio.wait_for(reader.readline(), 10) == b"* 1 RECENT\r\n"
    mbox = await env.core.store.open(env.mailbox_id)
    await mbox.store_flags("INBOX", [1], ["\\Flagged"], "add")
    assert await asyncio.wait_for(reader.readline(), 10) == \
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n"
    await mbox.store_flags("INBOX", [1], ["\\Deleted"], "add")
    await asyncio.wait_for(reader.readline(), 10)
    await mbox.expunge("INBOX")
    assert await asyncio.wait_for(reader.readline(), 10) == b"* 1 EXPUNGE\r\n"
    writer.write(b"DONE\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"c OK")
    out = await cmd(b"d FETCH 1 (UID)")
    assert out[0] == b"* 1 FETCH (UID 2)\r\n"
    writer.close()


async def test_reads_and_deletions_are_audited_without_content(env: Env) -> None:
    from sqlalchemy import select

    from missive.audit.models import AuditEntry

    await env.deliver(message(1, subject="Secret diagnosis"))
    await env.deliver(message(2))

    def scenario() -> None:
        c = env.imaplib()
        c.select("INBOX")
        c.fetch("1:2", "(ENVELOPE FLAGS)")  # metadata only: not a read of the content
        c.fetch("1:2", "(BODY.PEEK[])")
        c.store("2", "+FLAGS", "\\Deleted")
        c.expunge()
        c.logout()

    await run(scenario)
    async with env.core.db.read() as s:
        rows = list((await s.execute(select(AuditEntry).where(
            AuditEntry.mailbox_id == env.mailbox_id).order_by(AuditEntry.seq))).scalars())
    reads = [r for r in rows if r.action == "message.read"]
    assert len(reads) == 1
    assert '"count": 2' in reads[0].details or '"count":2' in reads[0].details
    assert any(r.action == "message.expunge" for r in rows)
    assert not any("Secret" in (r.details or "") for r in rows)
