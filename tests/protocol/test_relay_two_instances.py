"""Two Missive instances exchange mail both ways over mutual TLS; an untrusted third is refused.

Issue #4 acceptance (relay part). Each instance has its own data directory, domain, CA, server
and operator certificates (``missive init`` + ``certs issue-operator``), its own database and
keys. A and B have each other's CA (and operator DN) in their trust space; C trusts A but A does
not trust C. Each runs the real SMTP front (``missive.mta.server:start``) with the MX on a free
port; the relay workers reach the peers through static routes on 127.0.0.1.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from missive.certs import ca
from missive.certs.files import CertsLayout
from missive.cli.init import initialise
from missive.config import Settings, load_settings
from missive.directory.professionals import add_professional
from missive.directory.trust import add_trust_domain
from missive.identity.rpps import luhn_check_digit
from missive.mailbox.models import RelayQueue
from missive.mta.relay import RelayWorker
from missive.runtime import Core, build_core

server = pytest.importorskip("missive.mta.server",
                             reason="the SMTP front (missive.mta.server) is not in this build")


@dataclass
class Instance:
    name: str
    settings: Settings
    core: Core
    mailbox_id: int
    address: str
    operator_dn: str
    front: Any = None

    @property
    def ca_pem(self) -> bytes:
        return CertsLayout.of(self.settings).ca_cert.read_bytes()

    @property
    def mx_port(self) -> int:
        return int(self.front.ports["smtp_mx"])


async def _instance(tmp_path: Path, name: str, number: int) -> Instance:
    domain = f"{name}.test"
    settings = load_settings(
        tmp_path / name, environment="test", domain=domain, test_mode=True,
        mta={"submission_port": 0, "submission_tls_port": 0, "mx_port": 0})
    await initialise(settings)
    operator = ca.issue_operator(settings, domain)
    core = await build_core(settings, with_master_key=True)
    payload = f"10001234{number:02d}"
    address = f"user@{domain}"
    async with core.db.write() as s:
        pro = await add_professional(
            s, core.store, settings, actor=None, rpps=payload + luhn_check_digit(payload),
            name=f"Dr {name.upper()}", profession="Médecin", address=address)
    return Instance(name, settings, core, int(pro.mailbox_id), address, operator.subject)


async def _trust(who: Instance, peer: Instance) -> None:
    async with who.core.db.write() as s:
        await add_trust_domain(s, peer.settings.domain, ca_data=peer.ca_pem,
                               operator_dn=peer.operator_dn, actor=None)


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[dict[str, Instance]]:
    made: dict[str, Instance] = {}
    try:
        for number, name in enumerate(("a", "b", "c")):
            made[name] = await _instance(tmp_path, name, number)
        a, b, c = made["a"], made["b"], made["c"]
        await _trust(a, b)
        await _trust(b, a)
        await _trust(c, a)  # C trusts A; A does not trust C
        for inst in made.values():
            inst.front = await server.start(inst.core)
        a.settings.mta.relay_static_routes = {"b.test": f"127.0.0.1:{b.mx_port}"}
        b.settings.mta.relay_static_routes = {"a.test": f"127.0.0.1:{a.mx_port}"}
        c.settings.mta.relay_static_routes = {"a.test": f"127.0.0.1:{a.mx_port}"}
        yield made
    finally:
        for inst in made.values():
            if inst.front is not None:
                await inst.front.stop()
            await inst.core.close()


def _message(sender: Instance, to: str, subject: str) -> bytes:
    return (f"From: {sender.address}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@{sender.settings.domain}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Corps du message {subject}.\r\n").encode()


async def _send(sender: Instance, to: str, subject: str) -> None:
    d = sender.core.store.delivery(sender=sender.address, source="test")
    d.add_remote(to)
    await d.commit(_message(sender, to, subject))
    assert await RelayWorker(sender.core).run_once()


async def _inbox(inst: Instance) -> list[email.message.EmailMessage]:
    session = await inst.core.store.open(inst.mailbox_id)
    uids = [m.uid for m in await session.messages("INBOX")]
    raws = await session.fetch_many("INBOX", uids)
    out = []
    for uid in uids:
        msg = email.message_from_bytes(raws[uid], policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        out.append(msg)
    return out


async def _queue_states(inst: Instance) -> list[tuple[str, str | None]]:
    async with inst.core.db.read() as s:
        rows = (await s.execute(select(RelayQueue.state, RelayQueue.last_error)
                                .order_by(RelayQueue.id))).all()
    return [(state, err) for state, err in rows]


async def test_two_instances_exchange_mail_both_ways(instances: dict[str, Instance]) -> None:
    a, b = instances["a"], instances["b"]
    await _send(a, b.address, "aller")
    [received] = await _inbox(b)
    assert received["Subject"] == "aller"
    assert "Corps du message aller." in received.get_content()
    assert [s for s, _ in await _queue_states(a)] == ["sent"]
    await _send(b, a.address, "retour")
    [reply] = await _inbox(a)
    assert reply["Subject"] == "retour"
    assert [s for s, _ in await _queue_states(b)] == ["sent"]


async def test_untrusted_instance_is_refused(instances: dict[str, Instance]) -> None:
    a, c = instances["a"], instances["c"]
    await _send(c, a.address, "intrus")
    assert await _inbox(a) == []
    [(state, error)] = await _queue_states(c)
    assert state in ("pending", "failed") and error  # refused at TLS or at MAIL, never sent


async def test_unknown_mailbox_at_peer_returns_a_dsn(instances: dict[str, Instance]) -> None:
    a, b = instances["a"], instances["b"]
    await _send(a, "nobody@b.test", "perdu")
    assert await _inbox(b) == []
    [report] = await _inbox(a)
    assert report.get_content_type() == "multipart/report"
    raw = report.as_bytes()
    assert b"Final-Recipient: rfc822; nobody@b.test" in raw
    assert b"Action: failed" in raw and b"Status: 5." in raw
    assert [s for s, _ in await _queue_states(a)] == ["failed"]


async def test_running_relay_front_delivers(instances: dict[str, Instance]) -> None:
    """``missive serve``'s relay front: workers pick queued mail up without being asked."""
    import asyncio

    from missive.mta import relay

    a, b = instances["a"], instances["b"]
    a.settings.mta.relay_poll_seconds = 0.05
    front = await relay.start(a.core)
    try:
        d = a.core.store.delivery(sender=a.address, source="test")
        d.add_remote(b.address)
        await d.commit(_message(a, b.address, "automatique"))
        for _ in range(400):  # generous bound on a loaded machine; not a timing assertion
            if await _inbox(b):
                break
            await asyncio.sleep(0.05)
    finally:
        await front.stop()
    [received] = await _inbox(b)
    assert received["Subject"] == "automatique"
