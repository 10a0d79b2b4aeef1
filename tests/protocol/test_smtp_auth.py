"""Submission: TLS and AUTH (P1, P3, P10 lockout), with smtplib and aiosmtplib over real sockets.

P1: AUTH is not offered before TLS; MAIL before TLS or before AUTH is ``530 5.7.0``.
P3: a suspended professional cannot log in. P10: repeated failures lock out (per login and
client address, capped), and close the session with ``421``. EXTERNAL uses the professional
client certificate (identity from the certificate; revoked certificates refused).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
import pytest_asyncio
from smtp_harness import PASSWORD, SmtpEnv, message, send, smtp_env, stop_env

from missive.certs import ca

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SmtpEnv]:
    e = await smtp_env(tmp_path_factory.mktemp("smtp-auth"))
    yield e
    await stop_env(e)


async def test_auth_not_offered_before_tls_and_mail_refused(env: SmtpEnv) -> None:
    def run() -> tuple[dict[str, str], tuple[int, bytes], tuple[int, bytes]]:
        c = env.smtp(starttls=False)
        features = dict(c.esmtp_features)
        auth = c.docmd("AUTH", "PLAIN " + base64.b64encode(
            f"\0{env.pro}\0{PASSWORD}".encode()).decode())
        mail = c.docmd("MAIL", f"FROM:<{env.pro}>")
        c.close()
        return features, auth, mail

    features, auth, mail = await asyncio.to_thread(run)
    assert "starttls" in features
    assert "auth" not in features
    assert auth[0] == 530 and auth[1].startswith(b"5.7.0")
    assert mail == (530, b"5.7.0 Must issue a STARTTLS command first")


async def test_mail_before_auth_is_530(env: SmtpEnv) -> None:
    def run() -> tuple[int, bytes]:
        c = env.smtp()
        assert "auth" in c.esmtp_features
        reply = c.docmd("MAIL", f"FROM:<{env.pro}>")
        c.quit()
        return reply

    assert await asyncio.to_thread(run) == (530, b"5.7.0 Authentication required")
    from sqlalchemy import select

    from missive.audit.models import AuditEntry

    async with env.admin.db.read() as s:
        reasons = (await s.execute(select(AuditEntry.reason).where(
            AuditEntry.action == "smtp.refuse"))).scalars().all()
    assert "P1: command before AUTH" in reasons


@pytest.mark.parametrize("listener", ["submission", "submission_tls"])
async def test_plain_login_then_send(env: SmtpEnv, listener: str) -> None:
    before = await env.mailbox_count(env.pro2)

    def run() -> tuple[int, str]:
        c = env.login(listener=listener)
        reply = send(c, env.pro, [env.pro2], message(env.pro, env.pro2))
        c.quit()
        return reply

    code, text = await asyncio.to_thread(run)
    assert code == 250 and text.startswith("2.0.0"), text
    assert await env.mailbox_count(env.pro2) == before + 1


async def test_auth_login_mechanism(env: SmtpEnv) -> None:
    def run() -> tuple[int, bytes]:
        c = env.smtp()
        c.user, c.password = env.pro, PASSWORD
        reply = c.auth("LOGIN", c.auth_login)
        c.quit()
        return reply

    code, text = await asyncio.to_thread(run)
    assert (code, text) == (235, b"2.7.0 Authentication successful")


async def test_aiosmtplib_client_implicit_tls(env: SmtpEnv) -> None:
    ctx = env.client_context()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=env.ports["smtp_submission_tls"],
                               use_tls=True, tls_context=ctx) as client:
        await client.login(env.pro, PASSWORD)
        errors, text = await client.sendmail(env.pro, [env.pro2], message(env.pro, env.pro2))
    assert errors == {}
    assert text.startswith("2.0.0 Message accepted")


async def test_wrong_password_and_suspended_are_535(env: SmtpEnv) -> None:
    def run(user: str, password: str) -> tuple[int, str]:
        c = env.smtp()
        try:
            c.login(user, password)
        except smtplib.SMTPAuthenticationError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        finally:
            c.close()
        return 235, ""

    assert await asyncio.to_thread(run, env.pro2, "wrong password") == (
        535, "5.7.8 Authentication credentials invalid")
    # P3: the right password of a suspended professional is refused the same way.
    assert await asyncio.to_thread(run, env.suspended, PASSWORD) == (
        535, "5.7.8 Authentication credentials invalid")


async def test_suspended_during_session_cannot_send(env: SmtpEnv) -> None:
    from missive.directory.professionals import set_professional_status

    c = await asyncio.to_thread(env.login, env.pro2)
    try:
        async with env.admin.db.write() as s:
            await set_professional_status(s, env.pro2, "suspended", actor="test")
        reply = await asyncio.to_thread(c.docmd, "MAIL", f"FROM:<{env.pro2}>")
        assert reply == (550, b"5.7.1 This account is suspended and may not send messages")
    finally:
        await asyncio.to_thread(c.close)
        async with env.admin.db.write() as s:
            await set_professional_status(s, env.pro2, "active", actor="test")


def _plain(user: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def test_session_closed_after_repeated_failures(env: SmtpEnv) -> None:
    def run() -> list[tuple[int, bytes]]:
        c = env.smtp()
        replies = [c.docmd("AUTH", _plain("nobody@test.missive.localhost", f"bad{i}"))
                   for i in range(3)]
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.noop()
        return replies

    replies = await asyncio.to_thread(run)
    assert [r[0] for r in replies] == [535, 535, 421]
    assert replies[2][1].startswith(b"4.7.0")


async def test_lockout_per_login_and_address_with_victim_unaffected(env: SmtpEnv) -> None:
    victim = env.pro

    def attempt(source: str, password: str) -> tuple[int, bytes]:
        c = smtplib.SMTP("127.0.0.1", env.ports["smtp_submission"], timeout=20,
                         source_address=(source, 0))
        c.ehlo("x")
        c.starttls(context=env.client_context())
        c.ehlo("x")
        reply = c.docmd("AUTH", _plain(victim, password))
        c.close()
        return reply

    # The attacker at 127.0.0.2 fails 5 times (threshold), then even the right password is
    # refused from there with 454 4.7.0 …
    for i in range(5):
        assert (await asyncio.to_thread(attempt, "127.0.0.2", f"guess{i}"))[0] == 535
    locked = await asyncio.to_thread(attempt, "127.0.0.2", PASSWORD)
    assert locked == (454, b"4.7.0 Too many authentication failures, try again later")
    # … while the professional, from their own address, still logs in.
    assert (await asyncio.to_thread(attempt, "127.0.0.1", PASSWORD))[0] == 235


@pytest.fixture(scope="module")
def pro_cert(env: SmtpEnv) -> tuple[Path, Path, str]:
    info = ca.issue_professional(env.settings, env.pro_rpps, "Marie Curie", email=env.pro)
    assert info.key_file is not None
    return Path(info.cert_file), Path(info.key_file), info.serial


async def test_external_with_professional_certificate(
        env: SmtpEnv, pro_cert: tuple[Path, Path, str]) -> None:
    cert, key, _ = pro_cert

    def run() -> tuple[dict[str, str], tuple[int, bytes], tuple[int, str]]:
        c = env.smtp(cert=cert, key=key)
        features = dict(c.esmtp_features)
        auth = c.docmd("AUTH", "EXTERNAL =")
        reply = send(c, env.pro, [env.pro2], message(env.pro, env.pro2))
        c.quit()
        return features, auth, reply

    features, auth, reply = await asyncio.to_thread(run)
    assert "EXTERNAL" in features["auth"].split()
    assert auth == (235, b"2.7.0 Authentication successful")
    assert reply[0] == 250


async def test_external_without_certificate_is_refused(env: SmtpEnv) -> None:
    def run() -> tuple[int, bytes]:
        c = env.smtp()
        reply = c.docmd("AUTH", "EXTERNAL =")
        c.close()
        return reply

    code, text = await asyncio.to_thread(run)
    assert code == 535 and text.startswith(b"5.7.8")


async def test_auth_secrets_never_logged(env: SmtpEnv, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-never-in-logs"
    caplog.set_level(logging.DEBUG)

    def run() -> None:
        c = env.smtp()
        c.docmd("AUTH", _plain(env.pro2, secret))
        c.close()

    await asyncio.to_thread(run)
    encoded = base64.b64encode(f"\0{env.pro2}\0{secret}".encode()).decode()
    for record in caplog.records:
        text = record.getMessage()
        assert secret not in text and encoded not in text


async def test_revoked_certificate_is_refused(env: SmtpEnv) -> None:
    info = ca.issue_professional(env.settings, env.pro_rpps, "Marie Curie", email=env.pro)
    assert info.key_file is not None
    ca.revoke(env.settings, info.serial)
    env.front.ctx.tls["submission"].reload(force=True)

    def run() -> tuple[int, bytes] | str:
        try:
            c = env.smtp(cert=Path(info.cert_file), key=Path(info.key_file or ""))
            reply = c.docmd("AUTH", "EXTERNAL =")
            c.close()
            return reply
        except (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            return type(exc).__name__

    result = await asyncio.to_thread(run)
    # Refused either by the handshake (CRL checked by OpenSSL) or at AUTH.
    assert isinstance(result, str) or result[0] == 535


async def test_plaintext_auth_only_when_configured_for_development(tmp_path: Path) -> None:
    from smtp_harness import smtp_env as make_env

    dev = await make_env(tmp_path, allow_plaintext_auth=True)
    try:
        def run() -> tuple[int, str]:
            c = dev.smtp(starttls=False)
            assert "auth" in c.esmtp_features
            c.login(dev.pro, PASSWORD)
            try:
                return send(c, dev.pro, [dev.pro2], message(dev.pro, dev.pro2))
            finally:
                c.close()

        assert (await asyncio.to_thread(run))[0] == 250
    finally:
        await stop_env(dev)
