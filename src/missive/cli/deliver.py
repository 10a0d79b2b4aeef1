"""``missive deliver``: the local delivery agent (like Postfix's ``sendmail`` or Dovecot's LDA).

``missive deliver --from ADDR --to ADDR [--to ADDR …] < message.eml``. The caller is a trusted
local submitter (a program on the server: practice software, a test harness), so there is no
authentication; every other rule applies as on the submission port: recipients (P4, P5, P6
for a patient sender), size (P8), attachments (P9). One outcome line per recipient; the message
is committed once for every accepted recipient (P11) and the exit status is non-zero if any
recipient was refused or the message could not be stored.

Runs with public keys only (C2): it never needs the master key.
"""

from __future__ import annotations

import argparse
import socket
import sys
from email.utils import formatdate
from typing import Any

from missive.cli import common
from missive.errors import MissiveError, PolicyRefusal

EX_OK = 0
EX_REFUSED = 1  # at least one recipient refused (others may have been delivered)
EX_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: nothing delivered, try again later


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("deliver", help="deliver a message read on stdin (local delivery agent)")
    p.add_argument("--from", dest="sender", required=True, help="envelope sender")
    p.add_argument("--to", dest="recipients", action="append", required=True,
                   help="recipient (repeat for several)")
    common.add_json(p)
    p.set_defaults(func=run)


def normalise_line_endings(raw: bytes) -> bytes:
    """Local programs write LF; stored mail is CRLF (RFC 5322 §2.1, what IMAP clients expect)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def run(args: argparse.Namespace) -> int:
    raw = sys.stdin.buffer.read()
    import asyncio

    return asyncio.run(_deliver(args, raw))


def _refusal(address: str, err: PolicyRefusal) -> dict[str, Any]:
    return {"recipient": address, "status": "refused", "code": err.code,
            "enhanced": err.enhanced, "text": err.public_text}


async def _deliver(args: argparse.Namespace, raw: bytes) -> int:
    from missive.directory.recipients import (
        patient_reply_facts,
        recipient_facts,
        resolve_recipient,
    )
    from missive.mime.parts import list_parts
    from missive.mime.summary import summarize
    from missive.policy import (
        Port,
        SenderKind,
        check_attachments,
        check_patient_reply,
        check_recipient,
        check_size,
        closes_conversation,
    )
    from missive.runtime import build_core

    settings = common.settings_from(args)
    common.require_initialised(settings)
    raw = normalise_line_endings(raw)
    outcomes: list[dict[str, Any]] = []
    try:
        check_size(len(raw), settings.mta.max_message_size)
        check_attachments(list_parts(raw), frozenset(settings.mta.attachment_allowlist))
    except PolicyRefusal as err:
        outcomes = [_refusal(r, err) for r in args.recipients]
        return _report(args, outcomes, EX_REFUSED)
    try:
        core = await build_core(settings, with_master_key=False)
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    try:
        summary = summarize(raw)
        async with core.db.read() as s:
            sender_info = await resolve_recipient(s, args.sender, settings)
        sender_kind = (SenderKind.PATIENT if sender_info.kind == "patient"
                       else SenderKind.PROFESSIONAL)
        references = [*summary.references]
        if summary.in_reply_to and summary.in_reply_to not in references:
            references.append(summary.in_reply_to)
        delivery = core.store.delivery(sender=args.sender, source="deliver", actor="local")
        accepted: list[str] = []
        for address in args.recipients:
            async with core.db.read() as s:
                info = await resolve_recipient(s, address, settings)
            facts = recipient_facts(info, port=Port.SUBMISSION, sender_kind=sender_kind)
            try:
                if info.kind == "invalid":
                    raise PolicyRefusal(501, "5.1.3", f"Bad recipient address syntax: "
                                        f"{info.error or 'invalid'}", "P4")
                check_recipient(facts)
                if (sender_kind is SenderKind.PATIENT and sender_info.mailbox_id is not None
                        and sender_info.patient_id is not None):
                    async with core.db.read() as s:
                        reply = await patient_reply_facts(
                            s, core.store, patient_id=sender_info.patient_id,
                            patient_mailbox_id=sender_info.mailbox_id, recipient=info,
                            references=references, thread_root=summary.thread_root or None)
                    check_patient_reply(reply)
            except PolicyRefusal as err:
                outcomes.append(_refusal(address, err))
                continue
            if info.kind == "remote":
                delivery.add_remote(info.address)
            elif info.mailbox_id is not None:
                delivery.add_local(info.mailbox_id)
            accepted.append(address)
        if not accepted:
            return _report(args, outcomes, EX_REFUSED)
        delivery.close_conversation = (sender_kind is SenderKind.PROFESSIONAL and
                                       closes_conversation(summary.subject,
                                                           summary.mss.get("X-MSS-MES")))
        trace = (f"Received: from localhost by {settings.mta.hostname} (missive deliver) "
                 f"for <{accepted[0]}>; {formatdate(localtime=False)}\r\n").encode()
        try:
            await delivery.commit(trace + raw)
        except MissiveError as exc:
            outcomes += [{"recipient": a, "status": "deferred", "code": 451,
                          "enhanced": "4.3.0", "text": f"not stored: {exc}"} for a in accepted]
            return _report(args, outcomes, EX_TEMPFAIL)
        for address in accepted:
            outcomes.append({"recipient": address, "status": "delivered", "code": 250,
                             "enhanced": "2.0.0", "text": "delivered"})
        refused = any(o["status"] != "delivered" for o in outcomes)
        return _report(args, outcomes, EX_REFUSED if refused else EX_OK)
    finally:
        await core.close()


def _report(args: argparse.Namespace, outcomes: list[dict[str, Any]], code: int) -> int:
    if args.json:
        common.emit({"host": socket.gethostname(), "outcomes": outcomes}, as_json=True)
    else:
        for o in outcomes:
            stream = sys.stdout if o["status"] == "delivered" else sys.stderr
            stream.write(f"{o['recipient']}: {o['status']} ({o['code']} {o['enhanced']} "
                         f"{o['text']})\n")
    return code
