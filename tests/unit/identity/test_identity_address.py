"""Addresses: RFC 5321 §4.1.2 syntax, lengths (§4.5.3.1), normal form, patient addresses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.identity import (
    AddressError,
    InsError,
    Matricule,
    normalize_address,
    parse_matricule,
    parse_patient_address,
    patient_address,
    split_address,
)

PATIENTS = "patient.example.org"

GOOD = [
    ("marie.curie@example.org", ("marie.curie", "example.org")),
    ("a+tag@sub.example.org", ("a+tag", "sub.example.org")),
    ('"john doe"@example.org', ('"john doe"', "example.org")),
    ('"a\\"b"@example.org', ('"a\\"b"', "example.org")),
    ('"a@b"@example.org', ('"a@b"', "example.org")),
    ("josé@exemple.fr", ("josé", "exemple.fr")),  # SMTPUTF8 local part (RFC 6531)
    ("info@bücher.example", ("info", "bücher.example")),
    ("x@a-b.c0", ("x", "a-b.c0")),
    ("!#$%&'*+-/=?^_`{|}~@example.org", ("!#$%&'*+-/=?^_`{|}~", "example.org")),
    ("a" * 64 + "@example.org", ("a" * 64, "example.org")),
]


@pytest.mark.parametrize(("addr", "parts"), GOOD)
def test_split_good(addr: str, parts: tuple[str, str]) -> None:
    assert split_address(addr) == parts


BAD = [
    ("", "address is empty"),
    ("example.org", "address has no @"),
    ("@example.org", "local part (before @) is empty"),
    ("user@", "domain (after @) is empty"),
    ("a..b@example.org", "local part is not a valid"),
    (".a@example.org", "local part is not a valid"),
    ("a.@example.org", "local part is not a valid"),
    ("a b@example.org", "local part is not a valid"),
    ('"unterminated@example.org', "local part is not a valid"),
    ("a@b@example.org", "local part is not a valid"),
    ("user@exa mple.org", "domain label must be"),
    ("user@-example.org", "domain label must be"),
    ("user@example-.org", "domain label must be"),
    ("user@example..org", "domain has an empty label"),
    ("user@example.org.", "domain has an empty label"),
    ("user@[192.0.2.1]", "address literals"),
    ("a" * 65 + "@example.org", "local part is 65 octets long, more than 64"),
    ("é" * 33 + "@example.org", "local part is 66 octets long, more than 64"),
    ("a@" + ".".join(["b" * 60] * 5), "address is 306 octets long, more than 254"),
    ("user@" + "a" * 64 + ".org", "domain label must be"),
    ("user\udc80@example.org", "address contains invalid Unicode"),
]


@pytest.mark.parametrize(("addr", "message"), BAD)
def test_split_bad(addr: str, message: str) -> None:
    with pytest.raises(AddressError) as info:
        split_address(addr)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("addr", "normal"),
    [
        ("Marie.Curie@Example.ORG", "marie.curie@example.org"),
        ('"marie.curie"@example.org', "marie.curie@example.org"),
        ('"Marie Curie"@example.org', '"marie curie"@example.org'),
        ("info@BÜCHER.example", "info@xn--bcher-kva.example"),
        ("info@xn--bcher-kva.example", "info@xn--bcher-kva.example"),
        ("JOSE\u0301@exemple.fr", "josé@exemple.fr"),  # NFC + lowercase
        ("253072a07300443@Patient.Example.org", "253072a07300443@patient.example.org"),
    ],
)
def test_normalize(addr: str, normal: str) -> None:
    assert normalize_address(addr) == normal
    assert normalize_address(normal) == normal  # idempotent


def test_patient_address_round_trip() -> None:
    m = parse_matricule("253072A07300443")
    addr = patient_address(m, "Patient.Example.ORG")
    assert addr == "253072a07300443@patient.example.org"
    assert parse_patient_address(addr, PATIENTS) == m
    assert parse_patient_address(addr.upper(), PATIENTS) == m


def test_parse_patient_address_other_domain_is_none() -> None:
    assert parse_patient_address("marie.curie@example.org", PATIENTS) is None
    assert parse_patient_address("279035121518989@example.org", PATIENTS) is None


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("279035121518988@patient.example.org", "INS key should be 89, got 88"),
        ("27903512151898@patient.example.org", "matricule INS must have 15 characters, got 14"),
        ("marie.curie@patient.example.org", "matricule INS must have 15 characters"),
        ('"279035121518989"@patient.example.org', "matricule INS must have 15 characters"),
    ],
)
def test_parse_patient_address_bad_matricule(addr: str, message: str) -> None:
    with pytest.raises(InsError) as info:
        parse_patient_address(addr, PATIENTS)
    assert str(info.value).startswith(message)


def test_parse_patient_address_not_an_address() -> None:
    with pytest.raises(AddressError):
        parse_patient_address("no-at-sign", PATIENTS)


@given(st.text(max_size=80))
def test_split_fuzz(text: str) -> None:
    try:
        local, domain = split_address(text)
    except AddressError:
        return
    assert f"{local}@{domain}" == text
    try:
        normal = normalize_address(text)
    except AddressError:
        return  # e.g. a U-label IDNA refuses in context
    assert normalize_address(normal) == normal


@given(st.text(max_size=40), st.sampled_from([PATIENTS, "example.org"]))
def test_parse_patient_address_fuzz(local: str, domain: str) -> None:
    try:
        result = parse_patient_address(f"{local}@{domain}", PATIENTS)
    except (AddressError, InsError):
        return
    assert result is None or isinstance(result, Matricule)
