"""What an address is, as facts for the policy (P4, P5, P7): :func:`resolve_recipient`.

The SMTP front calls this for every RCPT TO (and the MX front for every sender domain) and
hands the :class:`RecipientInfo` to :mod:`missive.policy`, which decides; this module never
decides, it only looks up. Order of the checks:

1. not an address at all → ``invalid`` (``error`` says why);
2. the patient domain → ``patient``: the local part must be a matricule INS (otherwise
   ``matricule_error``, P5 "malformed matricule or wrong key"); ``known`` and ``status`` come
   from the directory;
3. the operator domain or a sub-domain → ``professional`` (``known`` when the address or an
   alias belongs to a professional);
4. a trust-space domain → ``remote`` (our own domain may appear in the national whitelist:
   local always wins);
5. anything else → ``outside`` (P4: refused, never relayed).

For :class:`missive.policy.recipients.RecipientFacts`: ``patient`` → ``LOCAL_PATIENT``
(``ins_error``, ``status``), ``professional`` → ``LOCAL_PROFESSIONAL`` (``mailbox_exists``),
``remote`` → ``TRUST_SPACE``, ``outside`` → ``OUTSIDE``; ``invalid`` is a syntax error (501).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from missive.config import Settings
from missive.directory.delegates import in_care_team
from missive.directory.patients import find_patient
from missive.directory.professionals import professional_by_address
from missive.directory.trust import trust_domain_for
from missive.directory.validate import is_local_domain
from missive.identity.address import AddressError, normalize_address, normalize_domain
from missive.identity.ins import InsError, parse_matricule
from missive.policy import PatientReplyFacts, Port, RecipientFacts, SenderKind
from missive.policy import RecipientKind as PolicyKind

if TYPE_CHECKING:
    from missive.mailbox.store import MailboxStore

RecipientKind = Literal["invalid", "patient", "professional", "remote", "outside"]


@dataclass(frozen=True)
class RecipientInfo:
    """Directory facts about one address (no decision)."""

    address: str
    kind: RecipientKind
    known: bool = False
    status: str | None = None
    mailbox_id: int | None = None
    patient_id: int | None = None
    professional_id: int | None = None
    matricule: str | None = None
    trust_domain: str | None = None
    #: Why the address (``invalid``) or the matricule (``patient``) is malformed, in English.
    error: str | None = None
    #: The same reason in plain French, for a matricule error (shown to patients).
    error_french: str | None = None
    #: The matricule error itself (``missive.policy`` reads its ``reason``).
    ins_error: InsError | None = None

    @property
    def matricule_error(self) -> str | None:
        return self.error if self.kind == "patient" else None

    @property
    def mailbox_exists(self) -> bool:
        """For a local address: whether a directory entry (hence a mailbox) exists."""
        return self.known and self.mailbox_id is not None

    @property
    def local(self) -> bool:
        return self.kind in ("patient", "professional")


async def resolve_recipient(
    session: AsyncSession, address: str, settings: Settings
) -> RecipientInfo:
    """Look ``address`` up (see the module docstring for the order of the checks)."""
    try:
        normal = normalize_address(address)
    except AddressError as exc:
        return RecipientInfo(address=address, kind="invalid", error=str(exc))
    local_part, _, domain = normal.rpartition("@")
    if domain == normalize_domain(settings.patient_domain):
        try:
            # The local part of the address as written (normal form only lowercased it).
            matricule = parse_matricule(local_part.upper())
        except InsError as exc:
            return RecipientInfo(address=normal, kind="patient", error=str(exc),
                                 error_french=exc.french, ins_error=exc)
        patient = await find_patient(session, matricule.value)
        if patient is None:
            return RecipientInfo(address=normal, kind="patient", matricule=matricule.value)
        return RecipientInfo(
            address=normal,
            kind="patient",
            known=True,
            status=patient.status,
            mailbox_id=patient.mailbox_id,
            patient_id=patient.id,
            matricule=patient.matricule,
        )
    if is_local_domain(domain, settings):
        pro = await professional_by_address(session, normal)
        if pro is None:
            return RecipientInfo(address=normal, kind="professional")
        return RecipientInfo(
            address=normal,
            kind="professional",
            known=True,
            status=pro.status,
            mailbox_id=pro.mailbox_id,
            professional_id=pro.id,
        )
    entry = await trust_domain_for(session, domain)
    if entry is not None:
        return RecipientInfo(address=normal, kind="remote", known=True,
                             trust_domain=entry.domain)
    return RecipientInfo(address=normal, kind="outside")


_POLICY_KINDS = {
    "patient": PolicyKind.LOCAL_PATIENT,
    "professional": PolicyKind.LOCAL_PROFESSIONAL,
    "remote": PolicyKind.TRUST_SPACE,
}


def recipient_facts(info: RecipientInfo, *, port: Port, sender_kind: SenderKind) -> RecipientFacts:
    """The facts :func:`missive.policy.check_recipient` decides on, from a lookup.

    The one mapping every front uses (SMTP submission and MX, ``missive deliver``, webmail
    replies), so that they cannot disagree. ``invalid`` addresses are a syntax error the caller
    reports before (501 5.1.3): they map to ``OUTSIDE`` here, which refuses.
    """
    return RecipientFacts(
        kind=_POLICY_KINDS.get(info.kind, PolicyKind.OUTSIDE), port=port,
        sender_kind=sender_kind, ins_error=info.ins_error,
        patient_status=info.status if info.kind == "patient" and info.known else None,
        mailbox_exists=info.mailbox_exists)


async def patient_reply_facts(
    session: AsyncSession,
    store: MailboxStore,
    *,
    patient_id: int,
    patient_mailbox_id: int,
    recipient: RecipientInfo,
    references: Sequence[str],
    thread_root: str | None,
) -> PatientReplyFacts:
    """The facts of P6 for a patient writing to ``recipient``, gathered in one place.

    Every front that lets a patient send (SMTP submission, the webmail's reply, ``missive
    deliver``) calls this, then :func:`missive.policy.check_patient_reply`: whether the
    reply references a message that professional sent this patient and whether the
    conversation was closed come from the store's keyed hashes (C7); care-team membership from
    the directory.
    """
    if recipient.kind == "patient":
        return PatientReplyFacts(recipient_is_patient=True)
    relation = await store.relation_facts(patient_mailbox_id, recipient.address, references,
                                          thread_root)
    team = (recipient.professional_id is not None
            and await in_care_team(session, patient_id, recipient.professional_id))
    return PatientReplyFacts(references_known_message=relation.references_known,
                             professional_in_care_team=team,
                             conversation_closed=relation.conversation_closed)
