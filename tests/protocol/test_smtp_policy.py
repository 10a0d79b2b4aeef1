"""Policy P2–P11 in the SMTP dialogue: for each rule an accepted and a refused case, with the
exact reply code and enhanced status, over STARTTLS submission with smtplib.

(P1 and P3 at login are in ``test_smtp_auth.py``, P7 in ``test_smtp_mx.py``, P12 in
``test_smtp_smuggling.py``, the open-relay cases in ``test_smtp_relay_denied.py``.)
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from smtp_harness import PATIENT_PASSWORD, SmtpEnv, message, send, smtp_env, stop_env

from missive.audit.models import AuditEntry

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 64 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SmtpEnv]:
    e = await smtp_env(tmp_path_factory.mktemp("smtp-policy"), max_message_size=LIMIT)
    yield e
    await stop_env(e)


async def submit(env: SmtpEnv, rcpts: list[str], data: bytes, *, sender: str | None = None,
                 login: str | None = None, password: str | None = None,
                 mail_options: tuple[str, ...] = ()) -> tuple[int, str]:
    def run() -> tuple[int, str]:
        if password is not None:
            c = env.login(login, password)
        else:
            c = env.login(login)
        try:
            return send(c, sender or login or env.pro, rcpts, data, mail_options)
        finally:
            c.close()

    return await asyncio.to_thread(run)


async def refusals(env: SmtpEnv, rule: str) -> int:
    from sqlalchemy import func, select

    async with env.admin.db.read() as s:
        return int((await s.execute(select(func.count(AuditEntry.seq)).where(
            AuditEntry.action == "smtp.refuse", AuditEntry.reason.like(f"{rule}:%")))
        ).scalar_one())


# --- P2 ------------------------------------------------------------------------------------------

async def test_p2_own_address_accepted(env: SmtpEnv) -> None:
    code, text = await submit(env, [env.pro2], message(env.pro, env.pro2))
    assert code == 250 and text.startswith("2.0.0")


async def test_p2_envelope_sender_not_owned_553(env: SmtpEnv) -> None:
    before = await refusals(env, "P2")
    code, text = await submit(env, [env.pro2], message(env.pro2, env.pro2), sender=env.pro2)
    assert (code, text) == (553, "5.7.1 Sender address rejected: not owned by the "
                                 "authenticated user")
    assert await refusals(env, "P2") == before + 1


async def test_p2_header_from_not_owned_550(env: SmtpEnv) -> None:
    code, text = await submit(env, [env.pro2], message(env.pro2, env.pro2))
    assert code == 550 and text.startswith("5.7.1 The From header"), text


async def test_p2_display_name_spoofing_550(env: SmtpEnv) -> None:
    data = message(env.pro, env.pro2).replace(
        b"From: Dr Test", f'From: "{env.pro2}"'.encode(), 1)
    code, text = await submit(env, [env.pro2], data)
    assert code == 550 and text.startswith("5.7.1 The display name"), text


# --- P4 ------------------------------------------------------------------------------------------

async def test_p4_local_and_trust_space_accepted(env: SmtpEnv) -> None:
    before = (await env.admin.store.stats())["relay_pending"]
    remote = "dr.who@peer.test"
    code, _ = await submit(env, [env.pro2, remote], message(env.pro, remote))
    assert code == 250
    assert (await env.admin.store.stats())["relay_pending"] == before + 1


async def test_p4_outside_trust_space_550(env: SmtpEnv) -> None:
    code, text = await submit(env, ["someone@gmail.example"], message(env.pro, "x@gmail.example"))
    assert (code, text) == (550, "5.7.1 Relay denied: recipient domain is not in the health "
                                 "trust space")


async def test_p4_unknown_local_mailbox_550_511(env: SmtpEnv) -> None:
    nobody = f"nobody@{env.domain}"
    code, text = await submit(env, [nobody], message(env.pro, nobody))
    assert (code, text) == (550, "5.1.1 No such mailbox")


# --- P5 ------------------------------------------------------------------------------------------

async def test_p5_active_and_pending_patients_accepted(env: SmtpEnv) -> None:
    before = await env.mailbox_count(env.pending)
    code, text = await submit(env, [env.patient, env.pending], message(env.pro, env.patient))
    assert code == 250, text
    assert await env.mailbox_count(env.pending) == before + 1


async def test_p5_pending_patient_rcpt_reply_says_kept(env: SmtpEnv) -> None:
    def run() -> tuple[int, bytes]:
        c = env.login()
        c.mail(env.pro)
        reply = c.rcpt(env.pending)
        c.close()
        return reply

    code, text = await asyncio.to_thread(run)
    assert code == 250 and text.startswith(b"2.1.5") and b"kept" in text


@pytest.mark.parametrize(("which", "expected"), [
    ("wrong_key", (550, "5.1.1 Recipient address rejected: the patient's INS has a wrong key "
                        "(check the number)")),
    ("malformed", (550, "5.1.1 Recipient address rejected: malformed patient INS "
                        "(15 characters expected)")),
    ("unknown", (550, "5.1.1 Recipient address rejected: unknown patient")),
    ("opposed", (550, "5.2.1 Recipient mailbox is not accepting messages")),
    ("closed", (550, "5.2.1 Recipient mailbox is not accepting messages")),
])
async def test_p5_refused_patient_addresses(env: SmtpEnv, which: str,
                                            expected: tuple[int, str]) -> None:
    from smtp_harness import ins_number

    pd = env.settings.patient_domain
    good = env.patient_ins
    wrong_key = good[:13] + f"{(int(good[13:]) % 97) + 1:02d}"
    address = {
        "wrong_key": f"{wrong_key}@{pd}",
        "malformed": f"12345@{pd}",
        "unknown": f"{ins_number(500)}@{pd}",
        "opposed": env.opposed,
        "closed": env.closed,
    }[which]
    assert await submit(env, [address], message(env.pro, address)) == expected


# --- P6 ------------------------------------------------------------------------------------------

async def _patient_submit(env: SmtpEnv, to: str, data: bytes) -> tuple[int, str]:
    return await submit(env, [to], data, login=env.patient, password=PATIENT_PASSWORD)


def _reply_to(env: SmtpEnv, pro: str, parent: str, subject: str = "Re: résultats") -> bytes:
    return message(env.patient, pro, subject=subject,
                   extra=f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n")


async def test_p6_patient_replies_to_professional_who_wrote(env: SmtpEnv) -> None:
    parent = email.utils.make_msgid(domain="client.test")
    code, _ = await submit(env, [env.patient], message(env.pro, env.patient, message_id=parent))
    assert code == 250
    code, text = await _patient_submit(env, env.pro, _reply_to(env, env.pro, parent))
    assert code == 250, text


async def test_p6_patient_to_patient_refused(env: SmtpEnv) -> None:
    code, text = await _patient_submit(env, env.pending, message(env.patient, env.pending))
    assert (code, text) == (550, "5.7.1 Patients may not write to other patients")


async def test_p6_patient_without_relation_refused(env: SmtpEnv) -> None:
    code, text = await _patient_submit(env, env.pro2, message(env.patient, env.pro2))
    assert code == 550 and text.startswith("5.7.1 Patients may only reply"), text


@pytest.mark.parametrize("closing", ["subject", "header"])
async def test_p6_fin_closes_the_conversation(env: SmtpEnv, closing: str) -> None:
    parent = email.utils.make_msgid(domain="client.test")
    data = (message(env.pro, env.patient, subject="[FIN]", message_id=parent)
            if closing == "subject" else
            message(env.pro, env.patient, extra="X-MSS-MES: FIN\r\n", message_id=parent))
    code, _ = await submit(env, [env.patient], data)
    assert code == 250
    assert await env.admin.store.conversation_closed(parent.lower())
    code, text = await _patient_submit(env, env.pro, _reply_to(env, env.pro, parent))
    assert (code, text) == (550, "5.7.1 The professional has closed replies to this "
                                 "conversation")


# --- P8 ------------------------------------------------------------------------------------------

async def test_p8_size_advertised_and_declared_size_refused(env: SmtpEnv) -> None:
    def run() -> tuple[str, tuple[int, bytes]]:
        c = env.login()
        size = c.esmtp_features["size"]
        reply = c.mail(env.pro, [f"SIZE={LIMIT + 1}"])
        c.close()
        return size, reply

    size, reply = await asyncio.to_thread(run)
    assert size == str(LIMIT)
    assert reply == (552, b"5.3.4 Message size exceeds fixed maximum message size")


async def test_p8_message_over_limit_refused_under_limit_accepted(env: SmtpEnv) -> None:
    small = message(env.pro, env.pro2, body="x" * 900 + "\r\n")
    assert (await submit(env, [env.pro2], small))[0] == 250
    big = message(env.pro, env.pro2, body=("y" * 998 + "\r\n") * (LIMIT // 1000 + 2))
    assert await submit(env, [env.pro2], big) == (
        552, "5.3.4 Message size exceeds fixed maximum message size")


# --- P9 ------------------------------------------------------------------------------------------

def _with_attachment(env: SmtpEnv, filename: str, ctype: str, payload: bytes) -> bytes:
    b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (f"From: <{env.pro}>\r\nTo: <{env.pro2}>\r\nSubject: pj\r\n"
            f"Message-ID: {email.utils.make_msgid()}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: text/plain\r\n\r\nVoir PJ.\r\n"
            f'--b1\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; '
            f'filename="{filename}"\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}'
            "--b1--\r\n").encode()


async def test_p9_pdf_accepted(env: SmtpEnv) -> None:
    data = _with_attachment(env, "cr.pdf", "application/pdf", b"%PDF-1.4\n%test\n")
    assert (await submit(env, [env.pro2], data))[0] == 250


async def test_p9_executable_refused_naming_the_part(env: SmtpEnv) -> None:
    data = _with_attachment(env, "facture.exe", "application/octet-stream",
                            b"MZ\x90\x00" + b"\x00" * 60)
    code, text = await submit(env, [env.pro2], data)
    assert code == 550 and text.startswith('5.7.1 Attachment "facture.exe" refused'), text


# --- P10 (recipients per message) ----------------------------------------------------------------

async def test_p10_too_many_recipients_452(env: SmtpEnv) -> None:
    limit = env.settings.mta.max_recipients

    def run() -> list[tuple[int, bytes]]:
        c = env.login()
        c.mail(env.pro)
        replies = [c.rcpt(env.pro2) for _ in range(limit + 1)]
        c.close()
        return replies

    replies = await asyncio.to_thread(run)
    assert all(r[0] == 250 for r in replies[:limit])
    assert replies[limit] == (452, b"4.5.3 Too many recipients")


# --- P11 -----------------------------------------------------------------------------------------

async def test_p11_failed_commit_is_451_and_nothing_stored(
        env: SmtpEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from missive.mailbox.store import Delivery

    async def broken(self: Delivery, raw: bytes, **kwargs: object) -> None:
        raise OSError("disk full")

    before = await env.mailbox_count(env.pro2)
    monkeypatch.setattr(Delivery, "commit", broken)
    code, text = await submit(env, [env.pro2], message(env.pro, env.pro2))
    assert (code, text) == (451, "4.3.0 Temporary local problem, try again later")
    monkeypatch.undo()
    assert await env.mailbox_count(env.pro2) == before
    code, _ = await submit(env, [env.pro2], message(env.pro, env.pro2))
    assert code == 250
    assert await env.mailbox_count(env.pro2) == before + 1


# --- DSN parameters and trace ---------------------------------------------------------------------

async def test_dsn_parameters_recorded_for_relay(env: SmtpEnv) -> None:
    remote = "dr.dsn@other.test"

    def run() -> tuple[int, str]:
        c = env.login()
        try:
            return send(c, env.pro, [remote], message(env.pro, remote),
                        mail_options=("RET=HDRS", "ENVID=Q+2Bid42"),
                        rcpt_options=("NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{remote}"))
        finally:
            c.close()

    code, text = await asyncio.to_thread(run)
    assert code == 250, text
    from sqlalchemy import select

    from missive.mailbox.models import RelayQueue

    session = await env.admin.store.relay_open_session()
    async with env.admin.db.read() as s:
        rows = (await s.execute(select(RelayQueue).where(RelayQueue.domain == "other.test"))
                ).scalars().all()
    envelope, _ = session.open_relay_item(rows[-1])
    assert envelope["ret"] == "HDRS" and envelope["envid"] == "Q+2Bid42"
    recipients = envelope["recipients"]
    assert isinstance(recipients, list)
    assert recipients[0]["notify"] == ["SUCCESS", "FAILURE"]
    assert recipients[0]["orcpt"] == f"rfc822;{remote}"


async def test_bad_dsn_parameter_501(env: SmtpEnv) -> None:
    def run() -> tuple[int, bytes]:
        c = env.login()
        reply = c.mail(env.pro, ["RET=MAYBE"])
        c.close()
        return reply

    assert await asyncio.to_thread(run) == (501, b"5.5.4 RET must be FULL or HDRS")


async def test_received_header_with_tls_and_mss_headers_kept(env: SmtpEnv) -> None:
    marker = email.utils.make_msgid(domain="trace.test")
    data = message(env.pro, env.pro2, message_id=marker,
                   extra="X-MSS-CODECDA: 11488-4\r\nX-MSS-INS: O\r\n")
    assert (await submit(env, [env.pro2], data))[0] == 250
    stored = [m for m in await env.fetch_all(env.pro2) if marker.encode() in m]
    assert len(stored) == 1
    head = stored[0].split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"Received: from client.test ([127.0.0.1])")
    assert b"with ESMTPSA" in head and b"tls TLS_" in head and b"(TLSv1." in head
    assert b"X-MSS-CODECDA: 11488-4" in head and b"X-MSS-INS: O" in head


async def test_notify_success_local_delivery_sends_delivered_dsn(env: SmtpEnv) -> None:
    marker = email.utils.make_msgid(domain="dsn.test")

    def run() -> tuple[int, str]:
        c = env.login()
        try:
            return send(c, env.pro, [env.pro2], message(env.pro, env.pro2, message_id=marker),
                        mail_options=("ENVID=env42",), rcpt_options=("NOTIFY=SUCCESS",))
        finally:
            c.close()

    before = await env.mailbox_count(env.pro)
    assert (await asyncio.to_thread(run))[0] == 250
    for _ in range(100):
        if await env.mailbox_count(env.pro) > before:
            break
        await asyncio.sleep(0.05)
    reports = [m for m in await env.fetch_all(env.pro) if b"Original-Envelope-Id: env42" in m]
    assert len(reports) == 1
    assert b"Action: delivered" in reports[0] and b"Status: 2.0.0" in reports[0]
    assert b"Final-Recipient: rfc822;" in reports[0] and env.pro2.encode() in reports[0]


async def test_encoded_display_name_spoofing_550(env: SmtpEnv) -> None:
    import email.header

    name = email.header.Header(f"{env.pro2}", "utf-8").encode()
    data = message(env.pro, env.pro2).replace(b"From: Dr Test", f"From: {name}".encode(), 1)
    code, text = await submit(env, [env.pro2], data)
    # decoded, the name shows another address: refused (as spoofing or as a foreign From)
    assert code == 550 and text.startswith("5.7.1 The "), text


async def test_p6_patient_may_write_first_to_care_team(env: SmtpEnv) -> None:
    from missive.directory.delegates import add_to_care_team, remove_from_care_team

    async with env.admin.db.write() as s:
        await add_to_care_team(s, env.patient_ins, env.pro2, actor="test")
    try:
        code, text = await _patient_submit(env, env.pro2, message(env.patient, env.pro2))
        assert code == 250, text
    finally:
        async with env.admin.db.write() as s:
            await remove_from_care_team(s, env.patient_ins, env.pro2, actor="test")
