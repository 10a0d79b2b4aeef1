"""The outbound relay against a real SMTP peer (aiosmtpd) over STARTTLS with client certificates.

The peer is another operator: its own CA (a second data directory), a server certificate for
127.0.0.1, STARTTLS required, client certificates required and checked against *our* CA. Our
side has the peer's CA in its trust space and a static route to the peer's port. The relay
worker runs with an injected clock, so the delay warning and expiry are reached without waiting.
Acceptance of issue #4 (relay part): a 5xx for an unknown mailbox yields a DSN in the sender's
INBOX; a peer that is down yields retries, then a delay DSN, then a failure DSN.
"""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from missive.certs import ca, tls
from missive.certs.files import CertsLayout
from missive.config import Settings, load_settings
from missive.db.base import utcnow
from missive.directory.professionals import add_professional
from missive.directory.trust import add_trust_domain
from missive.identity.rpps import luhn_check_digit
from missive.mailbox.models import RelayQueue
from missive.mta.relay import RelayWorker

PEER = "peer.test"
RAW = (b"From: Marie Curie <marie.curie@test.missive.localhost>\r\n"
       b"To: a@peer.test\r\nSubject: Compte rendu\r\nMessage-ID: <p1@test>\r\n\r\n"
       b"Bonjour,\r\n.leading dot survives\r\n")


class Clock:
    def __init__(self) -> None:
        self.now = utcnow() + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class PeerHandler:
    """Accepts every recipient except ``unknown@…``; records what it received."""

    received: list[tuple[str, list[str], bytes, dict[str, Any] | None]] = field(
        default_factory=list)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.startswith("unknown@"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        extra = session.ssl or {}
        content = envelope.original_content or b""
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), content,
                              extra.get("peercert")))
        return "250 2.0.0 queued"


@dataclass
class Peer:
    settings: Settings
    handler: PeerHandler
    port: int


def _peer_settings(path: Path, domain: str) -> Settings:
    settings = load_settings(path, environment="test", domain=domain)
    ca.ensure_initialised(settings)  # its own CA; server certificate covers 127.0.0.1
    return settings


async def _start_peer(peer_settings: Settings, client_ca: bytes) -> tuple[Any, Peer]:
    import asyncio

    context = tls.server_context(peer_settings, client_auth="required",
                                 extra_ca_pem=[client_ca], reload_seconds=3600)
    handler = PeerHandler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=f"mx.{peer_settings.domain}", tls_context=context,
                     require_starttls=True),
        "127.0.0.1", 0)
    return server, Peer(peer_settings, handler, server.sockets[0].getsockname()[1])


@pytest.fixture
async def ours(core: Any) -> AsyncIterator[tuple[Any, int]]:
    """Our instance: CA, server and operator certificates, a sender with a mailbox."""
    ca.ensure_initialised(core.settings)
    ca.issue_operator(core.settings, core.settings.domain)
    payload = "1000123456"
    async with core.db.write() as s:
        pro = await add_professional(
            s, core.store, core.settings, actor=None, rpps=payload + luhn_check_digit(payload),
            name="Marie Curie", profession="Médecin",
            address=f"marie.curie@{core.settings.domain}")
    core.settings.mta.relay_delay_warning_hours = 4
    core.settings.mta.relay_retry_days = 2
    yield core, int(pro.mailbox_id)


@pytest.fixture
async def peer(ours: tuple[Any, int], tmp_path: Path) -> AsyncIterator[Peer]:
    core, _ = ours
    peer_settings = _peer_settings(tmp_path / "peer", PEER)
    our_ca = CertsLayout.of(core.settings).ca_cert.read_bytes()
    server, running = await _start_peer(peer_settings, our_ca)
    async with core.db.write() as s:
        await add_trust_domain(s, PEER, actor=None,
                               ca_data=CertsLayout.of(peer_settings).ca_cert.read_bytes())
    core.settings.mta.relay_static_routes = {PEER: f"127.0.0.1:{running.port}"}
    yield running
    server.close()
    await server.wait_closed()


async def _queue(core: Any, rcpts: list[str]) -> None:
    d = core.store.delivery(sender=f"marie.curie@{core.settings.domain}", source="test")
    for r in rcpts:
        d.add_remote(r)
    await d.commit(RAW)


async def _row(core: Any) -> RelayQueue:
    async with core.db.read() as s:
        return (await s.execute(select(RelayQueue))).scalar_one()


async def _inbox(core: Any, mailbox_id: int) -> list[bytes]:
    session = await core.store.open(mailbox_id)
    uids = [m.uid for m in await session.messages("INBOX")]
    got = await session.fetch_many("INBOX", uids)
    return [got[u] for u in uids]


def _report_fields(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    start = raw.index(b"Reporting-MTA:")
    return raw[start:raw.index(b"\r\n--", start)].decode()


async def test_relays_over_mutual_tls(ours: tuple[Any, int], peer: Peer) -> None:
    core, sender_box = ours
    await _queue(core, ["a@peer.test", "b@peer.test"])
    worker = RelayWorker(core, clock=Clock())
    assert await worker.run_once()
    [(mail_from, rcpts, content, cert)] = peer.handler.received
    assert mail_from == f"marie.curie@{core.settings.domain}"
    assert rcpts == ["a@peer.test", "b@peer.test"]
    assert content.replace(b"\r\n", b"\n") == RAW.replace(b"\r\n", b"\n")  # dot-stuffing undone
    # The peer saw our operator certificate.
    assert cert is not None
    subject = dict(x[0] for x in cert["subject"])
    assert subject["commonName"] == core.settings.domain
    row = await _row(core)
    assert (row.state, row.attempts) == ("sent", 1)
    assert await _inbox(core, sender_box) == []


async def test_unknown_mailbox_yields_dsn_in_sender_inbox(
        ours: tuple[Any, int], peer: Peer) -> None:
    core, sender_box = ours
    await _queue(core, ["a@peer.test", "unknown@peer.test"])
    assert await RelayWorker(core, clock=Clock()).run_once()
    [(_, rcpts, _, _)] = peer.handler.received
    assert rcpts == ["a@peer.test"]
    [report] = await _inbox(core, sender_box)
    fields = _report_fields(report)
    assert "Final-Recipient: rfc822; unknown@peer.test" in fields
    assert "Action: failed" in fields and "Status: 5.1.1" in fields
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such mailbox here" in fields
    assert "Remote-MTA: dns; 127.0.0.1" in fields
    assert "a@peer.test" not in fields
    assert (await _row(core)).state == "sent"


async def test_peer_down_retries_then_delay_then_failure(
        ours: tuple[Any, int], peer: Peer) -> None:
    core, sender_box = ours
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    core.settings.mta.relay_static_routes = {PEER: f"127.0.0.1:{closed_port}"}
    await _queue(core, ["a@peer.test"])
    clock = Clock()
    worker = RelayWorker(core, clock=clock)
    assert await worker.run_once()
    row = await _row(core)
    assert row.state == "pending" and row.next_attempt_at > clock.now
    assert "connect" in (row.last_error or "")
    assert await worker.run_once() is False  # not due yet: backoff
    assert await _inbox(core, sender_box) == []
    clock.advance(hours=5)
    assert await worker.run_once()
    [delay] = await _inbox(core, sender_box)
    assert "Action: delayed" in _report_fields(delay)
    clock.advance(days=3)
    assert await worker.run_once()
    reports = await _inbox(core, sender_box)
    assert len(reports) == 2
    fields = _report_fields(reports[1])
    assert "Action: failed" in fields and "Status: 4.4.7" in fields
    row = await _row(core)
    assert (row.state, row.attempts) == ("failed", 3)
    assert peer.handler.received == []


async def test_peer_with_untrusted_certificate_gets_nothing(
        ours: tuple[Any, int], peer: Peer, tmp_path: Path) -> None:
    core, _ = ours
    # An impostor for peer.test: its certificate chains to a CA outside our trust space.
    impostor_settings = _peer_settings(tmp_path / "impostor", PEER)
    our_ca = CertsLayout.of(core.settings).ca_cert.read_bytes()
    server, impostor = await _start_peer(impostor_settings, our_ca)
    try:
        core.settings.mta.relay_static_routes = {PEER: f"127.0.0.1:{impostor.port}"}
        await _queue(core, ["a@peer.test"])
        assert await RelayWorker(core, clock=Clock()).run_once()
        assert impostor.handler.received == []
        row = await _row(core)
        assert row.state == "pending"
        assert "TLS" in (row.last_error or "")
    finally:
        server.close()
        await server.wait_closed()
