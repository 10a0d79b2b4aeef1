"""P1, P2, P3, P7 (peer): accepted and refused cases with exact codes."""

from __future__ import annotations

import pytest

from missive.errors import PolicyRefusal
from missive.policy import (
    check_mx_peer,
    check_professional_can_send,
    check_sender_headers,
    check_sender_identity,
    check_submission_ready,
    parse_address_header,
)

OWNED = frozenset({"marie.curie@example.org", "cardio@example.org"})


def _refused(fn, *args, **kwargs) -> PolicyRefusal:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyRefusal) as info:
        fn(*args, **kwargs)
    return info.value


# --- P1 ----------------------------------------------------------------------------------------


def test_p1_ready() -> None:
    check_submission_ready(tls=True, authenticated=True)


@pytest.mark.parametrize(("tls", "auth"), [(False, False), (False, True), (True, False)])
def test_p1_refused(tls: bool, auth: bool) -> None:
    err = _refused(check_submission_ready, tls=tls, authenticated=auth)
    assert (err.code, err.enhanced, err.rule) == (530, "5.7.0", "P1")


# --- P2 ----------------------------------------------------------------------------------------

ACCEPTED = [
    ("marie.curie@example.org", [("Marie Curie", "marie.curie@example.org")], None, False),
    ("Marie.Curie@EXAMPLE.org", [("", "MARIE.CURIE@example.org")], None, False),
    (
        "marie.curie@example.org",
        [("Cardiologie", "cardio@example.org")],
        [("Marie Curie", "marie.curie@example.org")],
        False,
    ),
    # Display name that shows the sender's own address is fine.
    ("marie.curie@example.org", [("marie.curie@example.org", "marie.curie@example.org")], None,
     False),
    # Null reverse-path for a system DSN.
    ("", [("Mail Delivery System", "cardio@example.org")], None, True),
]  # fmt: skip


@pytest.mark.parametrize(("env", "from_", "sender", "allow_null"), ACCEPTED)
def test_p2_accepted(
    env: str,
    from_: list[tuple[str, str]],
    sender: list[tuple[str, str]] | None,
    allow_null: bool,
) -> None:
    check_sender_identity(OWNED, env, from_, sender, allow_null=allow_null)


REFUSED = [
    # envelope not owned: 553 at MAIL
    ("other@example.org", [("", "marie.curie@example.org")], None, 553, "not owned"),
    ("not an address", [("", "marie.curie@example.org")], None, 553, "not owned"),
    ("", [("", "marie.curie@example.org")], None, 553, "null sender"),
    # headers: 550
    ("marie.curie@example.org", [], None, 550, "no From header"),
    ("marie.curie@example.org", [("", "boss@example.org")], None, 550, "From header address"),
    (
        "marie.curie@example.org",
        [("", "marie.curie@example.org"), ("", "boss@example.org")],
        None,
        550,
        "From header address",
    ),
    ("marie.curie@example.org", [("", "")], None, 550, "From header is malformed"),
    (
        "marie.curie@example.org",
        [("", "marie.curie@example.org")],
        [("", "boss@example.org")],
        550,
        "Sender header address",
    ),
    # display-name spoofing
    (
        "marie.curie@example.org",
        [("boss@bank.example", "marie.curie@example.org")],
        None,
        550,
        "display name",
    ),
    (
        "marie.curie@example.org",
        [("Dr House <house @ hopital.example>", "marie.curie@example.org")],
        None,
        550,
        "display name",
    ),
    (
        "marie.curie@example.org",
        [("cardio＠example.org (via)", "marie.curie@example.org")],  # fullwidth at sign
        None,
        550,
        "display name",
    ),
]


@pytest.mark.parametrize(("env", "from_", "sender", "code", "text"), REFUSED)
def test_p2_refused(
    env: str,
    from_: list[tuple[str, str]],
    sender: list[tuple[str, str]] | None,
    code: int,
    text: str,
) -> None:
    err = _refused(check_sender_identity, OWNED, env, from_, sender)
    assert (err.code, err.enhanced, err.rule) == (code, "5.7.1", "P2")
    assert text in err.public_text


def test_p2_fullwidth_at_showing_own_address_is_fine() -> None:
    check_sender_identity(
        OWNED, "marie.curie@example.org", [("cardio＠example.org", "cardio@example.org")]
    )


def test_p2_headers_only() -> None:
    check_sender_headers(OWNED, [("", "cardio@example.org")])
    err = _refused(check_sender_headers, OWNED, [("", "x@example.org")])
    assert (err.code, err.enhanced) == (550, "5.7.1")


def test_parse_address_header() -> None:
    pairs = parse_address_header(['"Curie, Marie" <marie.curie@example.org>, cardio@example.org'])
    assert pairs == [("Curie, Marie", "marie.curie@example.org"), ("", "cardio@example.org")]
    check_sender_identity(OWNED, "marie.curie@example.org", pairs)


def test_parse_address_header_garbage_is_refused() -> None:
    pairs = parse_address_header(["<<<@@@>>>"])
    err = _refused(check_sender_identity, OWNED, "marie.curie@example.org", pairs)
    assert err.code == 550


# --- P3 ----------------------------------------------------------------------------------------


def test_p3_active() -> None:
    check_professional_can_send("active")
    check_professional_can_send("active", at_auth=True)


@pytest.mark.parametrize(
    ("status", "at_auth", "code", "enhanced"),
    [
        ("suspended", True, 535, "5.7.8"),
        ("suspended", False, 550, "5.7.1"),
        ("weird", False, 451, "4.3.0"),
        ("", True, 451, "4.3.0"),
    ],
)
def test_p3_refused(status: str, at_auth: bool, code: int, enhanced: str) -> None:
    err = _refused(check_professional_can_send, status, at_auth=at_auth)
    assert (err.code, err.enhanced, err.rule) == (code, enhanced, "P3")


# --- P7 peer -----------------------------------------------------------------------------------


def test_p7_peer_ok() -> None:
    check_mx_peer(
        tls=True, client_cert_verified=True, sender_domain_trusted=True, cert_matches_domain=True
    )


@pytest.mark.parametrize(
    ("facts", "code", "enhanced"),
    [
        ((False, True, True, True), 530, "5.7.0"),
        ((True, False, True, True), 550, "5.7.1"),
        ((True, True, False, True), 550, "5.7.1"),
        ((True, True, True, False), 550, "5.7.1"),
    ],
)
def test_p7_peer_refused(facts: tuple[bool, bool, bool, bool], code: int, enhanced: str) -> None:
    tls, cert, trusted, match = facts
    err = _refused(
        check_mx_peer,
        tls=tls,
        client_cert_verified=cert,
        sender_domain_trusted=trusted,
        cert_matches_domain=match,
    )
    assert (err.code, err.enhanced, err.rule) == (code, enhanced, "P7")
