"""Who may send what to whom: pure decisions for SPEC §2 (P1–P9).

The fronts (SMTP submission and MX, webmail, ``missive deliver``) gather *facts* — who is
authenticated, what the directory says about a recipient, which MIME parts a message has — and
call these functions. Each function either returns (accept, possibly with a decision object) or
raises :class:`missive.errors.PolicyRefusal` carrying the exact SMTP reply code, the RFC 3463
enhanced status, an English ``public_text`` for the client, the SPEC rule and an
operator-facing ``cause`` for the audit log. No I/O, no database, no clock.

Implementation notes:

- Public texts never contain patient data: an INS is described as "malformed", "wrong key" or
  "unknown", never echoed; whether a patient opposed or closed the service is not revealed (both
  are "not accepting messages"). ``cause`` may name the rule's detail but no content either.
- Addresses are compared in the normal form of :func:`missive.identity.normalize_address`
  (case-insensitive local parts, IDNA domains): callers may pass addresses as written.
- Codes (RFC 5321 §4.2.2/§4.2.3, RFC 3463 §3, RFC 4954 §6, RFC 1870 §6): ``553 5.7.1`` sender
  address not allowed, ``550 5.7.1`` delivery not authorised, ``550 5.1.1`` bad destination
  mailbox, ``550 5.2.1`` mailbox disabled, ``552 5.3.4`` message too big, ``530 5.7.0``
  authentication/encryption required, ``535 5.7.8`` credentials refused.
- Layout: ``codes`` (named replies), ``senders`` (P1, P2, P3, P7 peer), ``recipients`` (P4,
  P5, P6, P7 recipients), ``content`` (P8, P9). P10 (rate limits), P11 (durable 250) and P12
  (framing) are properties of the fronts and the store, not decisions over facts.
- Unknown facts fail closed: an unknown patient or professional status refuses (temporarily,
  ``451 4.3.0``, since it is a data problem the operator can fix without losing the message).
"""

from missive.policy.codes import (
    AUTH_REQUIRED,
    BAD_MAILBOX,
    BAD_RECIPIENT_SYNTAX,
    CREDENTIALS_REFUSED,
    LOCAL_ERROR,
    MAILBOX_DISABLED,
    NOT_AUTHORISED,
    SENDER_NOT_ALLOWED,
    TOO_BIG,
)
from missive.policy.content import (
    DEFAULT_ATTACHMENT_TYPES,
    FORBIDDEN_EXTENSIONS,
    FORBIDDEN_MAGIC,
    check_attachments,
    check_declared_size,
    check_size,
)
from missive.policy.recipients import (
    AddressClass,
    PatientReplyFacts,
    Port,
    RecipientDecision,
    RecipientFacts,
    RecipientKind,
    SenderKind,
    check_patient_reply,
    check_recipient,
    classify_address,
    closes_conversation,
)
from missive.policy.senders import (
    Mailbox,
    check_mx_peer,
    check_professional_can_send,
    check_sender_headers,
    check_sender_identity,
    check_submission_ready,
    parse_address_header,
)

__all__ = [
    "AUTH_REQUIRED",
    "BAD_MAILBOX",
    "BAD_RECIPIENT_SYNTAX",
    "CREDENTIALS_REFUSED",
    "DEFAULT_ATTACHMENT_TYPES",
    "FORBIDDEN_EXTENSIONS",
    "FORBIDDEN_MAGIC",
    "LOCAL_ERROR",
    "MAILBOX_DISABLED",
    "NOT_AUTHORISED",
    "SENDER_NOT_ALLOWED",
    "TOO_BIG",
    "AddressClass",
    "Mailbox",
    "PatientReplyFacts",
    "Port",
    "RecipientDecision",
    "RecipientFacts",
    "RecipientKind",
    "SenderKind",
    "check_attachments",
    "check_declared_size",
    "check_mx_peer",
    "check_patient_reply",
    "check_professional_can_send",
    "check_recipient",
    "check_sender_headers",
    "check_sender_identity",
    "check_size",
    "check_submission_ready",
    "classify_address",
    "closes_conversation",
    "parse_address_header",
]
