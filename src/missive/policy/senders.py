"""Senders: P1 (submission needs TLS and AUTH), P2 (own the addresses you send as), P3 (only
active professionals send), P7 (MX peers are trust-space operators with a verified certificate).
"""

from __future__ import annotations

import email.utils
import functools
import re
from collections.abc import Iterable, Sequence

from missive.identity.address import AddressError, normalize_address
from missive.policy.codes import (
    AUTH_REQUIRED,
    CREDENTIALS_REFUSED,
    LOCAL_ERROR,
    NOT_AUTHORISED,
    SENDER_NOT_ALLOWED,
)
from missive.policy.codes import refuse as _refuse

# --- P1 ----------------------------------------------------------------------------------------


def check_submission_ready(*, tls: bool, authenticated: bool) -> None:
    """P1: MAIL on a submission port needs TLS and authentication (``530 5.7.0``)."""
    if not tls:
        raise _refuse(AUTH_REQUIRED, "Must issue a STARTTLS command first", "P1", "no TLS")
    if not authenticated:
        raise _refuse(AUTH_REQUIRED, "Authentication required", "P1", "MAIL before AUTH")


# --- P2 ----------------------------------------------------------------------------------------

Mailbox = tuple[str, str]  # (display name, address) as from email.utils.getaddresses

# Something that looks like an address inside a display name ("x@y.z", possibly with spaces
# around the "@" or a fullwidth at sign): RFC 5322 display names may contain "@" only quoted,
# and a name that shows an address is how spoofing works in clients that hide the real one.
_ADDRESS_LIKE = re.compile(
    r"[^\s<>\"'(),;:@＠﹫]+\s*[@＠﹫]\s*[^\s<>\"'(),;:@＠﹫]+\.[^\s<>\"'(),;:]+"
)
_AT_SIGNS = str.maketrans({"＠": "@", "﹫": "@"})


def parse_address_header(values: Sequence[str]) -> list[Mailbox]:
    """``(display name, address)`` pairs from raw ``From:``/``Sender:`` header values.

    A helper for the fronts (RFC 5322 §3.4 address lists, via ``email.utils.getaddresses``
    in strict mode). Unparsable entries come back as ``("", "")`` and are refused by
    :func:`check_sender_identity`.
    """
    return [(name, addr) for name, addr in email.utils.getaddresses(list(values))]


@functools.lru_cache(maxsize=4096)
def _normal(addr: str) -> str | None:
    """The normal form of an address, or None if it is not one. Memoised (a pure function):
    P2 normalises the same owned addresses at every MAIL and every DATA, and IDNA mapping
    (UTS #46) of the domain is the costly part."""
    try:
        return normalize_address(addr)
    except AddressError:
        return None


def _owned_set(owned: Iterable[str]) -> frozenset[str]:
    return frozenset(n for n in (_normal(a) for a in owned) if n is not None)


def _check_display_name(name: str, real: str, field: str) -> None:
    for match in _ADDRESS_LIKE.finditer(name.translate(_AT_SIGNS)):
        shown = re.sub(r"\s+", "", match.group(0))
        if _normal(shown) != real:
            raise _refuse(
                NOT_AUTHORISED,
                f"The display name of the {field} header shows another address than the "
                "sender's own",
                "P2",
                f"display name spoofing in {field}",
            )


def _check_header_mailboxes(
    owned: frozenset[str], mailboxes: Sequence[Mailbox], field: str
) -> None:
    for name, addr in mailboxes:
        real = _normal(addr) if addr else None
        if real is None:
            raise _refuse(
                NOT_AUTHORISED, f"The {field} header is malformed", "P2", f"bad {field} address"
            )
        if real not in owned:
            raise _refuse(
                NOT_AUTHORISED,
                f"The {field} header address is not one you are allowed to send as",
                "P2",
                f"{field} not owned by the authenticated identity",
            )
        _check_display_name(name, real, field)


def check_sender_identity(
    owned_addresses: Iterable[str],
    envelope_from: str,
    header_from: Sequence[Mailbox],
    header_sender: Sequence[Mailbox] | None = None,
    *,
    allow_null: bool = False,
) -> None:
    """P2: the authenticated identity owns the envelope sender, ``From:`` and ``Sender:``.

    - ``owned_addresses``: every address the authenticated identity may send as (its mailbox,
      aliases, the organisational mailboxes it belongs to…);
    - ``envelope_from``: the MAIL FROM reverse-path without angle brackets, ``""`` for ``<>``;
      the null reverse-path (RFC 5321 §4.5.5) is only for DSNs/MDNs the system itself sends
      (``allow_null=True``), else ``553 5.7.1``;
    - ``header_from`` / ``header_sender``: parsed mailboxes (:func:`parse_address_header`).

    Envelope not owned: ``553 5.7.1`` (at MAIL). Missing ``From:``, or a ``From:``/``Sender:``
    address not owned, or a display name showing another address (``"boss@bank.example"
    <attacker@…>``): ``550 5.7.1`` (after DATA). Every ``From:`` mailbox must be owned (RFC 5322
    §3.6.2 allows several authors; each must be one of the sender's identities).
    """
    owned = _owned_set(owned_addresses)
    if envelope_from == "":
        if not allow_null:
            raise _refuse(
                SENDER_NOT_ALLOWED,
                "The null sender <> is reserved for delivery notifications",
                "P2",
                "null reverse-path from a user",
            )
    else:
        env = _normal(envelope_from)
        if env is None or env not in owned:
            raise _refuse(
                SENDER_NOT_ALLOWED,
                "Sender address rejected: not owned by the authenticated user",
                "P2",
                "envelope sender not owned",
            )
    if not header_from:
        raise _refuse(NOT_AUTHORISED, "The message has no From header", "P2", "no From header")
    _check_header_mailboxes(owned, header_from, "From")
    if header_sender:
        if len(header_sender) > 1:
            raise _refuse(
                NOT_AUTHORISED, "The Sender header must hold one address", "P2", "several Sender"
            )
        _check_header_mailboxes(owned, header_sender, "Sender")


def check_sender_headers(
    owned_addresses: Iterable[str],
    header_from: Sequence[Mailbox],
    header_sender: Sequence[Mailbox] | None = None,
) -> None:
    """P2 for the header part only (after DATA, when MAIL FROM was already checked)."""
    check_sender_identity(owned_addresses, "", header_from, header_sender, allow_null=True)


# --- P3 ----------------------------------------------------------------------------------------


def check_professional_can_send(status: str, *, at_auth: bool = False) -> None:
    """P3: only ``active`` professionals log in and send.

    At AUTH time (``at_auth=True``) a suspended account gets ``535 5.7.8`` — the credentials
    were right, so saying the account is suspended reveals nothing to a guesser, and tells the
    professional what to do. If the account is suspended during an authenticated session, the
    next MAIL gets ``550 5.7.1``. Any status other than ``active``/``suspended`` fails closed
    with ``451 4.3.0`` (a directory problem for the operator, not the user's fault).
    """
    if status == "active":
        return
    if status == "suspended":
        if at_auth:
            raise _refuse(
                CREDENTIALS_REFUSED,
                "Authentication refused: this account is suspended, contact your administrator",
                "P3",
                "suspended professional",
            )
        raise _refuse(
            NOT_AUTHORISED,
            "This account is suspended and may not send messages",
            "P3",
            "suspended professional",
        )
    raise _refuse(
        LOCAL_ERROR,
        "Temporary local problem, try again later",
        "P3",
        f"unknown professional status {status[:20]!r}",
    )


# --- P7 MX peer ----------------------------------------------------------------------------------


def check_mx_peer(
    *, tls: bool, client_cert_verified: bool, sender_domain_trusted: bool, cert_matches_domain: bool
) -> None:
    """P7: inbound MX only from trust-space operators over TLS with a client certificate that
    chains to the CA registered for the sender's domain.

    ``530 5.7.0`` without TLS (RFC 3207 §4); ``550 5.7.1`` without a verified client
    certificate, for a domain outside the trust space, or a certificate whose CA is not the one
    registered for that domain.
    """
    if not tls:
        raise _refuse(AUTH_REQUIRED, "Must issue a STARTTLS command first", "P7", "MX without TLS")
    if not client_cert_verified:
        raise _refuse(
            NOT_AUTHORISED,
            "A client certificate of a trust-space operator is required",
            "P7",
            "no verified client certificate",
        )
    if not sender_domain_trusted:
        raise _refuse(
            NOT_AUTHORISED,
            "Sender domain is not in the health trust space",
            "P7",
            "sender domain not trusted",
        )
    if not cert_matches_domain:
        raise _refuse(
            NOT_AUTHORISED,
            "Client certificate does not belong to the sender domain's operator",
            "P7",
            "client certificate CA does not match sender domain",
        )
