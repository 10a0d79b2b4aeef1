"""Matricule INS: known-good and known-bad values, key round-trips, OIDs (SPEC §1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from missive.identity import (
    OID_DEMO,
    OID_NIA,
    OID_NIR,
    OID_TEST,
    InsError,
    Matricule,
    check_oid,
    compute_key,
    ins_type,
    parse_matricule,
    validate_nir,
)

GOOD = [
    # SPEC §1 example.
    ("279035121518989", "2790351215189", "89"),
    # python-stdnum doc examples, including Corsica.
    ("295109912611193", "2951099126111", "93"),
    ("253072B07300470", "253072B073004", "70"),
    ("253072A07300443", "253072A073004", "43"),
    # lowercase Corsican department accepted, stored uppercase.
    ("253072b07300470", "253072B073004", "70"),
    ("253072a07300443", "253072A073004", "43"),
]


@pytest.mark.parametrize(("text", "nir", "key"), GOOD)
def test_known_good(text: str, nir: str, key: str) -> None:
    m = parse_matricule(text)
    assert m == Matricule(nir=nir, key=key)
    assert m.value == nir + key
    assert len(m.value) == 15


def test_corsica_key_uses_19_and_18() -> None:
    # 2A is read as 19, 2B as 18 (SPEC §1): computing by hand.
    assert compute_key("253072A073004") == f"{97 - int('2530719073004') % 97:02d}"
    assert compute_key("253072B073004") == f"{97 - int('2530718073004') % 97:02d}"
    assert parse_matricule("253072A07300443").is_corsican
    assert not parse_matricule("279035121518989").is_corsican


BAD = [
    ("27903512151898", "matricule INS must have 15 characters, got 14"),
    ("2790351215189890", "matricule INS must have 15 characters, got 16"),
    ("", "matricule INS must have 15 characters, got 0"),
    ("279035121518988", "INS key should be 89, got 88"),
    ("253072A07300470", "INS key should be 43, got 70"),  # 2A/2B swapped
    ("253072C07300443", "department 2C is not valid"),
    ("2530720A7300443", "NIR must contain only digits"),
    ("A79035121518989", "NIR must contain only digits"),
    ("27903512151898a", "INS key must be 2 digits"),
    ("2790351215189 9", "INS key must be 2 digits"),
    (" 79035121518989", "NIR must contain only digits"),
    ("579035121518989", "sex digit should be 1, 2, 3, 4, 7 or 8, got 5"),
    ("279135121518989", "month of birth 13 is not valid"),
    ("279005121518989", "month of birth 00 is not valid"),
    ("279455121518989", "month of birth 45 is not valid"),
    ("279030021518989", "department 00 is not valid"),
    ("279035121500089", "order number 000 is not valid"),
    ("２79035121518989", "NIR must contain only digits"),  # full-width digit
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_known_bad(text: str, message: str) -> None:
    with pytest.raises(InsError) as info:
        parse_matricule(text)
    assert str(info.value).startswith(message)
    assert info.value.french  # a French sentence for patients
    assert info.value.french != str(info.value)


def test_error_does_not_echo_whole_matricule() -> None:
    with pytest.raises(InsError) as info:
        parse_matricule("279035121518988")
    assert "2790351215189" not in str(info.value)
    assert "2790351215189" not in info.value.french


@pytest.mark.parametrize("month", ["01", "12", "20", "30", "42", "50", "99"])
def test_lenient_months_accepted(month: str) -> None:
    nir = f"279{month}51215189"
    assert validate_nir(nir) == nir
    parse_matricule(nir + compute_key(nir))


@pytest.mark.parametrize("sex", list("123478"))
def test_sex_digits(sex: str) -> None:
    nir = f"{sex}79035121518"
    # pad order number to 13 characters
    nir = (nir + "9")[:13]
    parse_matricule(nir + compute_key(nir))


@pytest.mark.parametrize("dept", ["01", "20", "75", "95", "96", "97", "98", "99", "2A", "2B"])
def test_departments(dept: str) -> None:
    nir = f"27903{dept}215189"
    parse_matricule(nir + compute_key(nir))


def test_key_97_when_divisible() -> None:
    # N ≡ 0 (mod 97) gives key 97, never 00.
    n = (2790351215189 // 97) * 97
    assert compute_key(str(n)) == "97"


def test_compute_key_rejects_wrong_length() -> None:
    with pytest.raises(InsError, match="13 characters, got 12"):
        compute_key("279035121518")


# --- property tests -------------------------------------------------------------------------

_digit = st.sampled_from("0123456789")


@st.composite
def valid_nirs(draw: st.DrawFn) -> str:
    sex = draw(st.sampled_from("123478"))
    year = draw(st.integers(0, 99))
    month = draw(st.one_of(st.integers(1, 12), st.integers(20, 42), st.integers(50, 99)))
    dept = draw(
        st.one_of(st.integers(1, 99).map(lambda d: f"{d:02d}"), st.sampled_from(["2A", "2B"]))
    )
    commune = draw(st.integers(0, 999))
    order = draw(st.integers(1, 999))
    return f"{sex}{year:02d}{month:02d}{dept}{commune:03d}{order:03d}"


@given(valid_nirs())
def test_computed_key_round_trip(nir: str) -> None:
    key = compute_key(nir)
    assert len(key) == 2 and 1 <= int(key) <= 97
    m = parse_matricule(nir + key)
    assert m.nir == nir and m.key == key
    # The key makes N·100 + key ≡ 0 ... equivalently (N + key) ≡ 0 (mod 97).
    n = int(nir.replace("2A", "19").replace("2B", "18"))
    assert (n + int(key)) % 97 == 0
    # Lowercase Corsican letters are equivalent.
    assert parse_matricule((nir + key).lower()) == m


@given(valid_nirs(), st.integers(0, 99))
def test_any_other_key_fails_with_message(nir: str, other: int) -> None:
    key = compute_key(nir)
    wrong = f"{other:02d}"
    if wrong == key:
        return
    with pytest.raises(InsError) as info:
        parse_matricule(nir + wrong)
    assert str(info.value) == f"INS key should be {key}, got {wrong}"


@given(st.text(max_size=20))
def test_parse_matricule_fuzz(text: str) -> None:
    try:
        m = parse_matricule(text)
    except InsError:
        return
    assert len(m.value) == 15


# --- OIDs -----------------------------------------------------------------------------------


def test_ins_types() -> None:
    assert ins_type(OID_NIR) == "NIR"
    assert ins_type(OID_NIA) == "NIA"
    assert ins_type(OID_TEST) == "TEST"
    assert ins_type(OID_DEMO) == "DEMO"
    with pytest.raises(InsError, match="not an INS OID"):
        ins_type("1.2.3")


@pytest.mark.parametrize(
    ("oid", "test_mode", "ok"),
    [
        (OID_TEST, True, True),
        (OID_DEMO, True, True),
        (OID_NIR, True, False),
        (OID_NIA, True, False),
        (OID_NIR, False, True),
        (OID_NIA, False, True),
        (OID_TEST, False, False),
        (OID_DEMO, False, False),
        ("1.2.250.1.213.1.4.2", False, False),
        ("1.2.250.1.213.1.4.2", True, False),
    ],
)
def test_check_oid(oid: str, test_mode: bool, ok: bool) -> None:
    if ok:
        check_oid(oid, test_mode=test_mode)
    else:
        with pytest.raises(InsError):
            check_oid(oid, test_mode=test_mode)


def test_check_oid_messages() -> None:
    with pytest.raises(InsError, match="refused in test mode"):
        check_oid(OID_NIR, test_mode=True)
    with pytest.raises(InsError, match="refused in production"):
        check_oid(OID_TEST, test_mode=False)
