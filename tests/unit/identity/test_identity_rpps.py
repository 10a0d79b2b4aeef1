"""RPPS (Luhn) and ADELI identifiers (SPEC §1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.identity import (
    RPPS_SYSTEM_OID,
    RppsError,
    luhn_check_digit,
    luhn_valid,
    national_id_from_adeli,
    national_id_from_rpps,
    parse_adeli,
    parse_national_id,
    parse_rpps,
)


def test_luhn_reference_values() -> None:
    # Classic Luhn examples (ISO/IEC 7812-1 Annex B).
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert luhn_valid("4111111111111111")


def test_spec_rpps_example() -> None:
    assert parse_rpps("10001234565") == "10001234565"
    assert national_id_from_rpps("10001234565") == "810001234565"
    assert RPPS_SYSTEM_OID == "1.2.250.1.71.4.2.1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10001234566", "RPPS check digit should be 5, got 6"),
        ("1000123456", "RPPS must have 11 digits, got 10"),
        ("100012345650", "RPPS must have 11 digits, got 12"),
        ("1000123456A", "RPPS must contain only digits"),
        (" 0001234565", "RPPS must contain only digits"),
    ],
)
def test_bad_rpps(text: str, message: str) -> None:
    with pytest.raises(RppsError) as info:
        parse_rpps(text)
    assert str(info.value).startswith(message)


def test_adeli() -> None:
    assert parse_adeli("751234567") == "751234567"
    assert national_id_from_adeli("751234567") == "0751234567"
    with pytest.raises(RppsError, match="9 digits, got 8"):
        parse_adeli("75123456")
    with pytest.raises(RppsError, match="only digits"):
        parse_adeli("7512345X7")


def test_parse_national_id() -> None:
    assert parse_national_id("810001234565") == ("rpps", "10001234565")
    assert parse_national_id("0751234567") == ("adeli", "751234567")
    for bad in ("810001234566", "10001234565", "751234567", "9751234567", ""):
        with pytest.raises(RppsError):
            parse_national_id(bad)


@given(st.text(alphabet="0123456789", min_size=10, max_size=10))
def test_generated_rpps_is_valid(payload: str) -> None:
    rpps = payload + luhn_check_digit(payload)
    assert parse_rpps(rpps) == rpps
    # Any other last digit fails.
    for d in "0123456789":
        if d != rpps[-1]:
            with pytest.raises(RppsError, match="check digit"):
                parse_rpps(payload + d)


@given(st.text(max_size=14))
def test_fuzz_no_unexpected_exception(text: str) -> None:
    for fn in (parse_rpps, parse_adeli, parse_national_id):
        try:
            fn(text)
        except RppsError:
            pass
