"""The relay worker's queue logic on SQLite and PostgreSQL, with a scripted peer.

The SMTP exchange itself is replaced by a script (``ScriptedWorker._send``); the real client
against a real peer is exercised in ``tests/protocol/test_relay_peer.py``. The clock is
injected, so delays and expiry are reached without waiting.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from missive.audit.models import AuditEntry
from missive.db.base import utcnow
from missive.directory.professionals import add_professional
from missive.directory.trust import add_trust_domain, delete_trust_domain
from missive.identity.rpps import luhn_check_digit
from missive.mailbox.models import RelayQueue
from missive.mta import relay as relay_mod
from missive.mta.client import RecipientResult, SendResult, TransactionError
from missive.mta.relay import RelayWorker
from missive.mta.routing import Route

PEER = "peer.test"
RAW = (b"From: Marie Curie <marie.curie@test.missive.localhost>\r\n"
       b"To: a@peer.test\r\nSubject: Resultats\r\nMessage-ID: <q1@test>\r\n\r\nCorps.\r\n")

Reply = Callable[[str], tuple[int, str]]
Step = Reply | Exception


def _ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Peer test CA")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.PEM)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow() + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class ScriptedWorker(RelayWorker):
    """A worker whose SMTP transactions follow a script: a reply per address, or an error."""

    def __init__(self, core: Any, clock: Clock, script: list[Step]) -> None:
        super().__init__(core, clock=clock,
                         tls_factory=lambda cas: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        self.script = script
        self.sent: list[list[str]] = []
        self.routes: list[Route] = []

    async def _send(self, route: Route, tls: ssl.SSLContext, claim: Any,
                    recipients: Sequence[Any]) -> SendResult:
        self.sent.append([r.address for r in recipients])
        self.routes.append(route)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return SendResult(route.host, False,
                          [RecipientResult(r.address, *step(r.address)) for r in recipients])


def ok(_addr: str) -> tuple[int, str]:
    return 250, "2.0.0 OK"


def unknown_b(addr: str) -> tuple[int, str]:
    return (550, "5.1.1 no such mailbox") if addr.startswith("b@") else (250, "2.1.5 OK")


def later_c(addr: str) -> tuple[int, str]:
    if addr.startswith("b@"):
        return 550, "5.1.1 no such mailbox"
    if addr.startswith("c@"):
        return 451, "4.2.0 try again later"
    return 250, "2.1.5 OK"


DOWN = TransactionError("connect", "cannot connect: connection refused", status="4.4.1")


@pytest.fixture
async def sender_box(core: Any) -> int:
    core.settings.mta.relay_static_routes = {PEER: "127.0.0.1:2525"}
    core.settings.mta.relay_delay_warning_hours = 4
    core.settings.mta.relay_retry_days = 2
    payload = "1000123456"
    async with core.db.write() as s:
        pro = await add_professional(
            s, core.store, core.settings, actor=None, rpps=payload + luhn_check_digit(payload),
            name="Marie Curie", profession="Médecin",
            address=f"marie.curie@{core.settings.domain}")
        await add_trust_domain(s, PEER, ca_data=_ca_pem(), actor=None)
        return int(pro.mailbox_id)


def _sender(core: Any) -> str:
    return f"marie.curie@{core.settings.domain}"


async def _queue(core: Any, rcpts: Sequence[str], *, sender: str | None = None,
                 notify: Sequence[str] = (), ret: str | None = None,
                 envid: str | None = None) -> None:
    d = core.store.delivery(sender=_sender(core) if sender is None else sender, source="test")
    for r in rcpts:
        d.add_remote(r, notify=notify, orcpt=f"rfc822;{r}")
    d.ret, d.envid = ret, envid
    await d.commit(RAW)


async def _rows(core: Any) -> list[RelayQueue]:
    async with core.db.read() as s:
        return list((await s.execute(select(RelayQueue).order_by(RelayQueue.id))).scalars())


async def _inbox(core: Any, mailbox_id: int) -> list[email.message.EmailMessage]:
    session = await core.store.open(mailbox_id)
    uids = [m.uid for m in await session.messages("INBOX")]
    raws = await session.fetch_many("INBOX", uids)
    out = []
    for uid in uids:
        msg = email.message_from_bytes(raws[uid], policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        out.append(msg)
    return out


def _status_text(msg: email.message.EmailMessage) -> str:
    raw = msg.as_bytes()
    start = raw.index(b"Reporting-MTA:")
    return raw[start:raw.index(b"\n--", start)].decode()


async def _actions(core: Any) -> list[tuple[str, str]]:
    async with core.db.read() as s:
        rows = (await s.execute(select(AuditEntry.action, AuditEntry.details)
                                .where(AuditEntry.action.like("relay.%"))
                                .order_by(AuditEntry.seq))).all()
    return [(a, d) for a, d in rows]


async def test_open_relay_item_roundtrip(core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test", "b@peer.test"], notify=["FAILURE"], ret="HDRS",
                 envid="E1")
    worker = ScriptedWorker(core, Clock(), [])
    claim = await worker.claim()
    assert claim is not None
    assert claim.raw == RAW
    assert claim.envelope["sender"] == _sender(core)
    assert (claim.envelope["ret"], claim.envelope["envid"]) == ("HDRS", "E1")
    assert [r["address"] for r in claim.envelope["recipients"]] == ["a@peer.test", "b@peer.test"]
    assert claim.envelope["recipients"][0]["notify"] == ["FAILURE"]
    row = (await _rows(core))[0]
    assert RAW not in row.body and b"peer.test" not in row.envelope  # sealed at rest


async def test_success_marks_sent_and_audits(core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test"])
    worker = ScriptedWorker(core, Clock(), [ok])
    assert await worker.run_once() is True
    assert await worker.run_once() is False  # nothing due any more
    [row] = await _rows(core)
    assert (row.state, row.attempts, row.body) == ("sent", 1, b"")
    assert await _inbox(core, sender_box) == []  # no NOTIFY=SUCCESS: no report
    actions = await _actions(core)
    assert [a for a, _ in actions] == ["relay.sent"]
    assert '"domain": "peer.test"' in actions[0][1] and "a@" not in actions[0][1]


async def test_claim_lease_and_fencing(core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test"])
    clock = Clock()
    first = ScriptedWorker(core, clock, [ok])
    second = ScriptedWorker(core, clock, [ok])
    stale = await first.claim()
    assert stale is not None
    assert await second.claim() is None  # leased
    clock.advance(seconds=core.settings.mta.relay_lease_seconds + 1)  # first worker "died"
    fresh = await second.claim()
    assert fresh is not None and fresh.token == stale.token + 1
    # The stale worker finishes late: its outcome must not be recorded.
    await first.finish(stale, await first.attempt(stale))
    [row] = await _rows(core)
    assert (row.state, row.attempts) == ("sending", 2)
    await second.finish(fresh, await second.attempt(fresh))
    [row] = await _rows(core)
    assert row.state == "sent"


async def test_concurrent_workers_take_different_rows(core: Any, sender_box: int) -> None:
    for _ in range(4):
        await _queue(core, ["a@peer.test"])
    clock = Clock()
    workers = [ScriptedWorker(core, clock, [ok]) for _ in range(4)]
    claims = await asyncio.gather(*(w.claim() for w in workers))
    ids = [c.row.id for c in claims if c is not None]
    assert len(ids) == 4 and len(set(ids)) == 4


async def test_per_recipient_results(core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test", "b@peer.test", "c@peer.test"])
    clock = Clock()
    worker = ScriptedWorker(core, clock, [later_c, ok])
    await worker.run_once()
    [row] = await _rows(core)
    assert row.state == "pending" and row.next_attempt_at > clock.now
    [report] = await _inbox(core, sender_box)
    status = _status_text(report)
    assert "Final-Recipient: rfc822; b@peer.test" in status
    assert "a@peer.test" not in status and "c@peer.test" not in status
    assert report["From"].addresses[0].username == "mailer-daemon"
    # Only the deferred recipient is tried again.
    clock.advance(hours=1)
    await worker.run_once()
    assert worker.sent == [["a@peer.test", "b@peer.test", "c@peer.test"], ["c@peer.test"]]
    [row] = await _rows(core)
    assert row.state == "sent"
    kinds = [a for a, _ in await _actions(core)]
    assert kinds == ["relay.sent", "relay.failed", "relay.deferred", "relay.sent"]


async def test_delay_warning_once_then_failure_on_expiry(core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test"], envid="ENV-7")
    clock = Clock()
    worker = ScriptedWorker(core, clock, [DOWN] * 4)
    await worker.run_once()
    assert await _inbox(core, sender_box) == []  # not yet worth a warning
    clock.advance(hours=5)
    await worker.run_once()
    [delay] = await _inbox(core, sender_box)
    assert "Action: delayed" in _status_text(delay)
    assert "Will-Retry-Until:" in _status_text(delay)
    assert "Original-Envelope-Id: ENV-7" in _status_text(delay)
    clock.advance(hours=5)
    await worker.run_once()
    assert len(await _inbox(core, sender_box)) == 1  # the warning is sent once
    [row] = await _rows(core)
    assert row.delay_notified and row.state == "pending"
    clock.advance(days=3)  # past relay_retry_days
    await worker.run_once()
    reports = await _inbox(core, sender_box)
    assert len(reports) == 2
    status = _status_text(reports[1])
    assert "Action: failed" in status and "Status: 4.4.7" in status
    [row] = await _rows(core)
    assert (row.state, row.attempts) == ("failed", 4)
    assert b"Corps." in reports[1].as_bytes()  # failure: the message returns


async def test_backoff_never_passes_expiry(core: Any, sender_box: int) -> None:
    core.settings.mta.relay_backoff_base_seconds = 10 * 86400
    await _queue(core, ["a@peer.test"])
    clock = Clock()
    await ScriptedWorker(core, clock, [DOWN]).run_once()
    [row] = await _rows(core)
    assert row.next_attempt_at <= row.created_at + timedelta(days=2)


@pytest.mark.parametrize("notify", [["NEVER"], ["SUCCESS"]])
async def test_notify_without_failure_gets_no_failure_report(
        core: Any, sender_box: int, notify: list[str]) -> None:
    await _queue(core, ["b@peer.test"], notify=notify)
    await ScriptedWorker(core, Clock(), [unknown_b]).run_once()
    assert await _inbox(core, sender_box) == []
    [row] = await _rows(core)
    assert row.state == "failed"


async def test_notify_success_without_peer_dsn_gets_relayed_report(
        core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test"], notify=["SUCCESS", "FAILURE"])
    await ScriptedWorker(core, Clock(), [ok]).run_once()
    [report] = await _inbox(core, sender_box)
    assert "Action: relayed" in _status_text(report)
    assert b"Corps." not in report.as_bytes()  # no failure: headers only


async def test_null_sender_never_gets_a_report(core: Any, sender_box: int) -> None:
    await _queue(core, ["b@peer.test"], sender="")
    await ScriptedWorker(core, Clock(), [unknown_b]).run_once()
    assert await _inbox(core, sender_box) == []


async def test_report_for_non_local_sender_is_dropped_and_audited(
        core: Any, sender_box: int) -> None:
    await _queue(core, ["b@peer.test"], sender="someone@elsewhere.test")
    await ScriptedWorker(core, Clock(), [unknown_b]).run_once()
    actions = await _actions(core)
    assert ("relay.dsn" in [a for a, _ in actions])
    [row] = await _rows(core)
    assert row.state == "failed"


async def test_domain_removed_from_trust_space_fails_without_sending(
        core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test"])
    async with core.db.write() as s:
        await delete_trust_domain(s, PEER, actor=None)
    worker = ScriptedWorker(core, Clock(), [])
    await worker.run_once()
    assert worker.sent == []
    [row] = await _rows(core)
    assert row.state == "failed" and "trust space" in (row.last_error or "")
    [report] = await _inbox(core, sender_box)
    assert "Status: 5.7.1" in _status_text(report)


async def test_front_starts_and_stops(core: Any, sender_box: int) -> None:
    core.settings.mta.relay_poll_seconds = 0.05
    front = await relay_mod.start(core)
    assert front.ports == {}
    assert len(front.workers) == core.settings.mta.relay_workers
    await asyncio.sleep(0.1)
    await front.stop()
    assert all(t.done() for t in front._tasks)


async def test_mx_lookup_through_the_resolver_in_core_extras(core: Any, sender_box: int) -> None:
    class Resolver:
        async def mx(self, domain: str) -> list[tuple[int, str]]:
            assert domain == PEER
            return [(20, "mx2.peer.test."), (10, "mx1.peer.test.")]

    core.settings.mta.relay_static_routes = {}
    core.extras[relay_mod.RESOLVER_EXTRA] = Resolver()
    await _queue(core, ["a@peer.test"])
    # The preferred host does not answer; the next one does.
    worker = ScriptedWorker(core, Clock(), [DOWN, ok])
    await worker.run_once()
    assert [(r.host, r.port) for r in worker.routes] == [("mx1.peer.test", 25),
                                                         ("mx2.peer.test", 25)]
    [row] = await _rows(core)
    assert row.state == "sent"


async def test_queue_listing_retry_and_purge(core: Any, sender_box: int) -> None:
    await _queue(core, ["a@peer.test"])
    await _queue(core, ["b@peer.test"])
    clock = Clock()
    worker = ScriptedWorker(core, clock, [ok, DOWN])
    await worker.run_once()
    await worker.run_once()
    entries = await relay_mod.list_queue(core.db)
    assert [(e.domain, e.state, e.attempts) for e in entries] == [
        (PEER, "sent", 1), (PEER, "pending", 1)]
    assert "b@" not in str([e.to_dict() for e in entries])  # no addresses in the listing
    assert [e.id for e in await relay_mod.list_queue(core.db, states=["pending"])] == [
        entries[1].id]
    # The waiting entry is not due yet; "retry now" makes it due.
    assert await worker.claim() is None
    assert await relay_mod.retry_now(core.db, entries[1].id, now=clock.now) == 1
    worker.script.append(ok)
    assert await worker.run_once()
    # Finished entries go once they are older than the keep period.
    assert await relay_mod.purge_done(core.db, clock.now - timedelta(days=1)) == 0
    assert await relay_mod.purge_done(core.db, clock.now + timedelta(seconds=1)) == 2
    assert await relay_mod.list_queue(core.db) == []
