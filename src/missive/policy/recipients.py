"""Recipients: P4 (local or trust space, never an open relay), P5 (patient addresses), P6
(patients only reply, conversations closed with FIN), P7 (MX: local recipients only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from missive.identity.address import (
    AddressError,
    normalize_address,
    normalize_domain,
    split_address,
)
from missive.identity.ins import InsError, Matricule, parse_matricule
from missive.policy.codes import (
    BAD_MAILBOX,
    BAD_RECIPIENT_SYNTAX,
    LOCAL_ERROR,
    MAILBOX_DISABLED,
    NOT_AUTHORISED,
)
from missive.policy.codes import refuse as _refuse

# --- P4 / P5 / P7 recipients --------------------------------------------------------------------


class RecipientKind(StrEnum):
    LOCAL_PROFESSIONAL = "local_professional"  # a mailbox in one of our operator domains
    LOCAL_PATIENT = "local_patient"  # an address in our patient domain
    TRUST_SPACE = "trust_space"  # a domain of another operator of the trust space
    OUTSIDE = "outside"  # anything else


class SenderKind(StrEnum):
    PROFESSIONAL = "professional"
    PATIENT = "patient"  # a patient (or delegate) writing from the webmail
    OPERATOR = "operator"  # an MTA of another trust-space operator (MX port)
    SYSTEM = "system"  # DSNs, MDNs, notifications generated here


class Port(StrEnum):
    SUBMISSION = "submission"  # 587/465-style, authenticated professionals
    MX = "mx"  # inbound from trust-space operators (P7)
    LOCAL = "local"  # webmail, `missive deliver`, system messages


@dataclass(frozen=True)
class AddressClass:
    """Where an address points (see :func:`classify_address`)."""

    kind: RecipientKind
    address: str  # normal form (lookup key)
    domain: str  # normalised domain
    matricule: Matricule | None = None  # LOCAL_PATIENT with a valid matricule
    ins_error: InsError | None = None  # LOCAL_PATIENT with a malformed matricule


def _domains(domains: Iterable[str]) -> frozenset[str]:
    out = set()
    for d in domains:
        try:
            out.add(normalize_domain(d))
        except AddressError:
            continue
    return frozenset(out)


def classify_address(
    addr: str,
    *,
    local_domains: Iterable[str],
    patient_domain: str,
    trust_domains: Iterable[str] = (),
) -> AddressClass:
    """Classify a RCPT TO address for :class:`RecipientFacts` (a helper for the fronts).

    The patient domain wins over everything (an address there is ``LOCAL_PATIENT`` even when
    its local part is not a valid matricule: P5 then refuses it with ``550 5.1.1``); then our
    operator domains (``LOCAL_PROFESSIONAL``), then trust-space domains (``TRUST_SPACE``, exact
    domain match: a subdomain of a trusted domain is not trusted), else ``OUTSIDE``. Domains are
    compared in IDNA-normalised lowercase form.

    Bad syntax raises :class:`PolicyRefusal` ``501 5.1.3`` (RFC 3463: bad destination mailbox
    address syntax) with the reason, which contains no patient data.
    """
    try:
        local, domain = split_address(addr)
        normal = normalize_address(addr)
        domain_n = normalize_domain(domain)
    except AddressError as exc:
        raise _refuse(
            BAD_RECIPIENT_SYNTAX, f"Bad recipient address syntax: {exc}", "P4", "syntax"
        ) from None
    if domain_n == normalize_domain(patient_domain):
        try:
            matricule = parse_matricule(local)
        except InsError as exc:
            return AddressClass(RecipientKind.LOCAL_PATIENT, normal, domain_n, ins_error=exc)
        return AddressClass(RecipientKind.LOCAL_PATIENT, normal, domain_n, matricule=matricule)
    if domain_n in _domains(local_domains):
        return AddressClass(RecipientKind.LOCAL_PROFESSIONAL, normal, domain_n)
    if domain_n in _domains(trust_domains):
        return AddressClass(RecipientKind.TRUST_SPACE, normal, domain_n)
    return AddressClass(RecipientKind.OUTSIDE, normal, domain_n)


@dataclass(frozen=True)
class RecipientFacts:
    """What the front knows about one RCPT TO.

    - ``kind``: where the address points (the front decides with the directory and the trust
      space; an address in the patient domain is always ``LOCAL_PATIENT``, even if malformed);
    - ``ins_error``: for ``LOCAL_PATIENT``, the error parsing the local part as a matricule;
    - ``patient_status``: for a well-formed ``LOCAL_PATIENT``, the directory status
      (``pending``/``active``/``opposed``/``closed``) or None when the INS is unknown;
    - ``mailbox_exists``: for ``LOCAL_PROFESSIONAL``, whether the mailbox exists.
    """

    kind: RecipientKind
    port: Port = Port.SUBMISSION
    sender_kind: SenderKind = SenderKind.PROFESSIONAL
    ins_error: InsError | None = None
    patient_status: str | None = None
    mailbox_exists: bool = True


@dataclass(frozen=True)
class RecipientDecision:
    """An accepted recipient: ``hold_until_activation`` for a pending patient (P5), ``relay``
    when the message must be relayed to another operator (P4)."""

    hold_until_activation: bool = False
    relay: bool = False


def _ins_text(err: InsError) -> str:
    if err.reason == "key":
        return "Recipient address rejected: the patient's INS has a wrong key (check the number)"
    if err.reason == "length":
        return "Recipient address rejected: malformed patient INS (15 characters expected)"
    return "Recipient address rejected: malformed patient INS"


def check_recipient(facts: RecipientFacts) -> RecipientDecision:
    """P4, P5, P6 (patient → patient) and P7 (MX: local recipients only) for one recipient."""
    local = facts.kind in (RecipientKind.LOCAL_PROFESSIONAL, RecipientKind.LOCAL_PATIENT)
    if facts.port is Port.MX and not local:
        raise _refuse(
            NOT_AUTHORISED,
            "Relay denied: this server only accepts mail for its own recipients",
            "P7",
            f"MX recipient of kind {facts.kind.value}",
        )
    if facts.kind is RecipientKind.OUTSIDE:
        raise _refuse(
            NOT_AUTHORISED,
            "Relay denied: recipient domain is not in the health trust space",
            "P4",
            "recipient outside the trust space",
        )
    if facts.kind is RecipientKind.TRUST_SPACE:
        return RecipientDecision(relay=True)
    if facts.kind is RecipientKind.LOCAL_PROFESSIONAL:
        if not facts.mailbox_exists:
            raise _refuse(BAD_MAILBOX, "No such mailbox", "P4", "unknown local mailbox")
        return RecipientDecision()
    # LOCAL_PATIENT
    if facts.sender_kind is SenderKind.PATIENT:
        raise _refuse(
            NOT_AUTHORISED,
            "Patients may not write to other patients",
            "P6",
            "patient to patient",
        )
    if facts.ins_error is not None:
        raise _refuse(
            BAD_MAILBOX, _ins_text(facts.ins_error), "P5", f"INS {facts.ins_error.reason} error"
        )
    status = facts.patient_status
    if status is None:
        raise _refuse(
            BAD_MAILBOX, "Recipient address rejected: unknown patient", "P5", "unknown INS"
        )
    if status == "active":
        return RecipientDecision()
    if status == "pending":
        return RecipientDecision(hold_until_activation=True)
    if status in ("opposed", "closed"):
        raise _refuse(
            MAILBOX_DISABLED,
            "Recipient mailbox is not accepting messages",
            "P5",
            f"patient status {status}",
        )
    raise _refuse(
        LOCAL_ERROR,
        "Temporary local problem, try again later",
        "P5",
        f"unknown patient status {status[:20]!r}",
    )


# --- P6 patient replies --------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientReplyFacts:
    """What is known when a patient (or delegate) writes to someone.

    - ``recipient_is_patient``: the recipient is a patient address (never allowed);
    - ``references_known_message``: the message replies to (``In-Reply-To``/``References``) a
      message this patient received *from that professional*;
    - ``professional_in_care_team``: the professional is in the patient's care team;
    - ``conversation_closed``: the conversation replied to was closed by a professional with
      ``X-MSS-MES: FIN`` or a ``[FIN]`` subject (see :func:`closes_conversation`).
    """

    recipient_is_patient: bool = False
    references_known_message: bool = False
    professional_in_care_team: bool = False
    conversation_closed: bool = False


def check_patient_reply(facts: PatientReplyFacts) -> None:
    """P6: patients may only reply to a professional who wrote to them, or write to their care
    team; never to another patient; never into a conversation a professional closed.

    All refusals are ``550 5.7.1`` with a sentence the webmail can also show (translated).
    """
    if facts.recipient_is_patient:
        raise _refuse(
            NOT_AUTHORISED, "Patients may not write to other patients", "P6", "patient to patient"
        )
    if facts.conversation_closed:
        raise _refuse(
            NOT_AUTHORISED,
            "The professional has closed replies to this conversation",
            "P6",
            "reply to a closed conversation",
        )
    if facts.references_known_message or facts.professional_in_care_team:
        return
    raise _refuse(
        NOT_AUTHORISED,
        "Patients may only reply to a professional who wrote to them, or to their care team",
        "P6",
        "patient message without a known conversation or care-team relation",
    )


_FIN_SUBJECT = "[FIN]"


def closes_conversation(subject: str | None, x_mss_mes: str | None) -> bool:
    """True when a professional's message closes replies (SPEC §2 P6).

    Definitions: ``X-MSS-MES`` whose value is ``FIN`` after trimming whitespace (header values
    may be folded or padded), compared case-insensitively; or a subject (already decoded from
    RFC 2047) that is exactly ``[FIN]`` after trimming surrounding whitespace, also
    case-insensitively (``[fin]`` typed by hand means the same). ``Re: [FIN]`` or ``[FIN] merci``
    do not close: "exactly" is about the whole subject, not a prefix.
    """
    if x_mss_mes is not None and x_mss_mes.strip().upper() == "FIN":
        return True
    return subject is not None and subject.strip().upper() == _FIN_SUBJECT
