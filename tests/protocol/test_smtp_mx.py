"""P7: the MX listener accepts mail only from trust-space operators, over TLS, with a client
certificate that chains to the CA registered for the sender's domain (and carries the
registered operator DN), and only for local recipients. Driven with smtplib and aiosmtplib.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
import pytest_asyncio
from smtp_harness import SmtpEnv, message, send, smtp_env, stop_env

from missive.certs import ca

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SmtpEnv]:
    e = await smtp_env(tmp_path_factory.mktemp("smtp-mx"))
    yield e
    await stop_env(e)


def mx_send(env: SmtpEnv, sender: str, rcpts: list[str], *, peer: str | None = "peer.test",
            starttls: bool = True) -> tuple[int, str]:
    cert = key = None
    if peer is not None:
        cert, key = env.peers[peer].cert, env.peers[peer].key
    c = env.smtp(listener="mx", cert=cert, key=key, starttls=starttls)
    try:
        return send(c, sender, rcpts, message(sender, rcpts[0]))
    finally:
        c.close()


async def test_trusted_operator_to_local_patient_accepted(env: SmtpEnv) -> None:
    before = await env.mailbox_count(env.patient)
    code, text = await asyncio.to_thread(mx_send, env, "dr.who@peer.test", [env.patient])
    assert code == 250 and text.startswith("2.0.0"), text
    assert await env.mailbox_count(env.patient) == before + 1
    stored = (await env.fetch_all(env.patient))[-1]
    assert stored.startswith(b"Received: from client.test ([127.0.0.1])")
    assert b"with ESMTPS id" in stored.split(b"\r\n\r\n")[0]


async def test_aiosmtplib_operator_null_sender_dsn_accepted(env: SmtpEnv) -> None:
    peer = env.peers["peer.test"]
    ctx = env.client_context(peer.cert, peer.key)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=env.ports["smtp_mx"],
                               start_tls=True, tls_context=ctx) as client:
        await client.ehlo(hostname="peer-mta.test")
        mail = await client.execute_command(b"MAIL", b"FROM:<>")
        assert mail.code == 250, mail
        rcpt = await client.rcpt(env.pro)
        data = await client.data(message("mailer-daemon@peer.test", env.pro))
    assert mail.code == 250 and rcpt.code == 250
    assert data.code == 250 and data.message.startswith("2.0.0")


async def test_mail_without_tls_530(env: SmtpEnv) -> None:
    def run() -> tuple[int, bytes]:
        c = env.smtp(listener="mx", starttls=False)
        reply = c.docmd("MAIL", "FROM:<dr.who@peer.test>")
        c.close()
        return reply

    assert await asyncio.to_thread(run) == (530, b"5.7.0 Must issue a STARTTLS command first")


async def test_no_client_certificate_550(env: SmtpEnv) -> None:
    code, text = await asyncio.to_thread(mx_send, env, "dr.who@peer.test", [env.patient],
                                         peer=None)
    assert (code, text) == (550, "5.7.1 A client certificate of a trust-space operator is "
                                 "required")


async def test_certificate_of_another_domain_550(env: SmtpEnv) -> None:
    # other.test's certificate is trusted by the listener, but not for peer.test.
    code, text = await asyncio.to_thread(mx_send, env, "dr.who@peer.test", [env.patient],
                                         peer="other.test")
    assert (code, text) == (550, "5.7.1 Client certificate does not belong to the sender "
                                 "domain's operator")


async def test_sender_domain_outside_trust_space_550(env: SmtpEnv) -> None:
    code, text = await asyncio.to_thread(mx_send, env, "spam@evil.example", [env.patient])
    assert (code, text) == (550, "5.7.1 Sender domain is not in the health trust space")


async def test_non_local_recipient_550(env: SmtpEnv) -> None:
    for rcpt in ("dr.x@other.test", "someone@gmail.example"):
        code, text = await asyncio.to_thread(mx_send, env, "dr.who@peer.test", [rcpt])
        assert (code, text) == (550, "5.7.1 Relay denied: this server only accepts mail for "
                                     "its own recipients")


async def test_p5_on_mx_opposed_patient(env: SmtpEnv) -> None:
    code, text = await asyncio.to_thread(mx_send, env, "dr.who@peer.test", [env.opposed])
    assert (code, text) == (550, "5.2.1 Recipient mailbox is not accepting messages")


async def test_certificate_from_unknown_ca_fails_handshake(env: SmtpEnv,
                                                           tmp_path: Path) -> None:
    from smtp_harness import make_settings_for

    rogue = make_settings_for(tmp_path / "rogue", domain="peer.test")
    ca.ensure_initialised(rogue)
    info = ca.issue_operator(rogue, "peer.test")

    def run() -> str:
        try:
            mx_send(env, "dr.who@peer.test", [env.patient], peer=None)
            c = env.smtp(listener="mx", cert=Path(info.cert_file), key=Path(info.key_file or ""))
            reply = send(c, "dr.who@peer.test", [env.patient],
                         message("dr.who@peer.test", env.patient))
            c.close()
            return str(reply)
        except (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            return type(exc).__name__

    result = await asyncio.to_thread(run)
    assert "250" not in result


async def test_no_auth_on_mx(env: SmtpEnv) -> None:
    def run() -> tuple[dict[str, str], tuple[int, bytes]]:
        peer = env.peers["peer.test"]
        c = env.smtp(listener="mx", cert=peer.cert, key=peer.key)
        features = dict(c.esmtp_features)
        reply = c.docmd("AUTH", "PLAIN AGFAYg==")
        c.close()
        return features, reply

    features, reply = await asyncio.to_thread(run)
    assert "auth" not in features
    assert reply[0] == 504
