"""Mail the webmail sends: replies to professionals (P6) and read receipts (RFC 8098 MDN).

Replies: the recipient is the sender of the message replied to. The decision is policy P6
(:func:`missive.policy.check_patient_reply`) over facts from the directory (is it a patient?
in the care team?) and from the store's keyed hashes (did this professional write this message
to this patient? was the conversation closed?), exactly as the SMTP front decides; the message
then goes through the store's delivery transaction (local professional) or the relay queue
(another operator of the trust space), and a copy is filed in the patient's ``Sent`` folder.
A caregiver with ``read_reply`` writes from the patient's address, and the text says who wrote.

Read receipts (RFC 8098): when the patient (never a caregiver) first displays a message whose
``Disposition-Notification-To`` asks for one, and only if the patient's setting allows it, an
MDN ``manual-action/MDN-sent-automatically; displayed`` (§3.2.6) is sent to that address, if it
is the message's own sender (§2.1: no automatic MDN to a third address).
"""

from __future__ import annotations

import email.utils
import uuid
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.policy import SMTP

from sqlalchemy.ext.asyncio import AsyncSession

from missive.directory.models import Patient
from missive.directory.recipients import patient_reply_facts, resolve_recipient
from missive.errors import PolicyRefusal
from missive.mime.summary import MessageSummary
from missive.policy import check_patient_reply, closes_conversation
from missive.runtime import Core

#: French texts for the P6 refusals (the policy's public texts are English, for SMTP clients).
REFUSAL_FR = {
    "patient to patient": "Il n'est pas possible d'écrire à un autre patient.",
    "reply to a closed conversation": (
        "Le professionnel a clos cette conversation : il n'est plus possible d'y répondre. "
        "Pour une nouvelle question, contactez directement son cabinet ou son service."),
}
DEFAULT_REFUSAL_FR = ("Vous pouvez seulement répondre à un professionnel qui vous a écrit, ou "
                      "écrire à votre équipe de soins.")
OUTSIDE_FR = "Cette adresse n'appartient pas à l'espace de confiance de la messagerie santé."


@dataclass(frozen=True)
class ReplyTarget:
    address: str
    mailbox_id: int | None  # local professional, else relayed to the trust space


class ReplyRefused(Exception):
    def __init__(self, text: str, cause: str) -> None:
        super().__init__(cause)
        self.text = text
        self.cause = cause


def patient_address(core: Core, patient: Patient) -> str:
    return f"{patient.matricule.lower()}@{core.settings.patient_domain}"


async def reply_target(core: Core, s: AsyncSession, patient: Patient,
                       original: MessageSummary) -> ReplyTarget:
    """Where a reply to ``original`` goes, or :class:`ReplyRefused` with a French reason."""
    if not original.from_addr:
        raise ReplyRefused(DEFAULT_REFUSAL_FR, "no sender")
    info = await resolve_recipient(s, original.from_addr, core.settings)
    if info.kind in ("invalid", "outside") or (info.kind == "professional" and not info.known):
        raise ReplyRefused(OUTSIDE_FR, f"recipient {info.kind}")
    refs = [*original.references, original.message_id] if original.message_id else \
        list(original.references)
    facts = await patient_reply_facts(s, core.store, patient_id=patient.id,
                                      patient_mailbox_id=patient.mailbox_id, recipient=info,
                                      references=refs, thread_root=original.thread_root or None)
    # The message replied to may itself close the conversation ([FIN], X-MSS-MES: FIN).
    if closes_conversation(original.subject, original.mss.get("X-MSS-MES")):
        facts = replace(facts, conversation_closed=True)
    try:
        check_patient_reply(facts)
    except PolicyRefusal as exc:
        raise ReplyRefused(REFUSAL_FR.get(exc.cause, DEFAULT_REFUSAL_FR), exc.cause) from None
    if info.kind == "professional" and info.status != "active":
        raise ReplyRefused("Ce professionnel ne peut pas recevoir de messages pour le moment.",
                           "professional suspended")
    return ReplyTarget(info.address, info.mailbox_id if info.kind == "professional" else None)


def reply_subject(subject: str) -> str:
    subject = subject.strip() or "(sans objet)"
    return subject if subject.lower().startswith(("re:", "re :")) else f"Re: {subject}"


def build_reply(core: Core, patient: Patient, original: MessageSummary, target: ReplyTarget,
                text: str, *, written_by: str | None) -> bytes:
    msg = EmailMessage(policy=SMTP)
    name = f"{patient.given_names.split()[0]} {patient.family_name}".title()
    msg["From"] = email.utils.formataddr((name, patient_address(core, patient)))
    msg["To"] = target.address
    msg["Subject"] = reply_subject(original.subject)
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{core.settings.patient_domain}>"
    if original.message_id:
        msg["In-Reply-To"] = original.message_id
        msg["References"] = " ".join([*original.references[-20:], original.message_id])
    msg["X-Mailer"] = "Missive webmail"
    body = text.replace("\r\n", "\n").strip() + "\n"
    if written_by:
        body = f"[Message écrit par {written_by}, proche autorisé(e) de {name}]\n\n" + body
    msg.set_content(body, charset="utf-8", cte="quoted-printable")
    return msg.as_bytes()


async def send(core: Core, sender: str, target: ReplyTarget, raw: bytes,
               actor: str) -> None:
    delivery = core.store.delivery(sender=sender, source="webmail", actor=actor)
    if target.mailbox_id is not None:
        delivery.add_local(target.mailbox_id)
    else:
        delivery.add_remote(target.address)
    await delivery.commit(raw)


def build_mdn(core: Core, patient: Patient, original: MessageSummary) -> tuple[str, bytes] | None:
    """An RFC 8098 ``displayed`` MDN for ``original``, or None when none may be sent."""
    wanted = email.utils.getaddresses([original.disposition_notification_to])
    if not wanted or not wanted[0][1] or not original.from_addr:
        return None
    to = wanted[0][1].lower()
    if to != original.from_addr.lower():  # RFC 8098 §2.1
        return None
    me = patient_address(core, patient)
    msg = EmailMessage(policy=SMTP)
    msg["From"] = me
    msg["To"] = to
    msg["Subject"] = "Accusé de lecture : " + (original.subject or "(sans objet)")
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{core.settings.patient_domain}>"
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834 §5
    if original.message_id:
        msg["In-Reply-To"] = original.message_id
        msg["References"] = original.message_id
    msg.set_content("Le message a été affiché par son destinataire. Cela ne garantit pas qu'il "
                    "a été lu ou compris.\n", charset="utf-8")
    report = EmailMessage(policy=SMTP)
    fields = [f"Reporting-UA: {core.settings.mta.hostname}; Missive webmail",
              f"Final-Recipient: rfc822;{me}"]
    if original.message_id:
        fields.append(f"Original-Message-ID: {original.message_id}")
    fields.append("Disposition: manual-action/MDN-sent-automatically; displayed")
    report.set_content(("\r\n".join(fields) + "\r\n").encode(), maintype="message",
                       subtype="disposition-notification", cte="7bit")
    msg.make_mixed()
    msg.attach(report)
    msg.replace_header("Content-Type", msg.get("Content-Type", "").replace(
        "multipart/mixed", "multipart/report"))
    msg.set_param("report-type", "disposition-notification")
    return to, msg.as_bytes()
