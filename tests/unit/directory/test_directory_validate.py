"""Field rules shared by the CLI, the CSV importer and the webmail (pure functions)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from missive.config import load_settings
from missive.directory import validate
from missive.directory.errors import InvalidField


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("06 12 34 56 78", "+33612345678"),
        ("06.12.34.56.78", "+33612345678"),
        ("0033612345678", "+33612345678"),
        ("+44 7700 900123", "+447700900123"),
        ("", None),
    ],
)
def test_phone_normalised(raw: str, expected: str | None) -> None:
    assert validate.phone(raw) == expected


@pytest.mark.parametrize("raw", ["12", "+0612345678", "06 12 34", "abc"])
def test_phone_refused(raw: str) -> None:
    with pytest.raises(InvalidField, match="phone"):
        validate.phone(raw)


def test_domain_and_birth_place() -> None:
    assert validate.domain(" MSS.Example.FR. ") == "mss.example.fr"
    a_label = "xn--" + "hôpital".encode("punycode").decode("ascii")  # RFC 3492
    assert validate.domain("Hôpital.example") == f"{a_label}.example"
    with pytest.raises(InvalidField, match="fully qualified"):
        validate.domain("localhost")
    assert validate.birth_place("2a004") == "2A004"
    assert validate.birth_place("99134") == "99134"
    with pytest.raises(InvalidField):
        validate.birth_place("2C004")


def test_pro_address_must_be_local(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, domain="ops.example", environment="test")
    assert validate.pro_address("Dr.X@Ops.Example", settings) == "dr.x@ops.example"
    assert validate.pro_address("a@chu.ops.example", settings) == "a@chu.ops.example"
    for bad in ("a@patient.ops.example", "a@other.example", "a@evilops.example"):
        with pytest.raises(InvalidField, match="address"):
            validate.pro_address(bad, settings)


def test_trait_warnings_compare_with_the_matricule() -> None:
    ins = "279035121518989"  # woman, born March 1979 in 51215
    assert validate.trait_warnings(ins, date(1979, 3, 5), "F", "51215") == []
    found = validate.trait_warnings(ins, date(1980, 4, 5), "M", "75056")
    assert [w.split(" ")[0] + " " + w.split(" ")[1] for w in found] == [
        "sex M", "birth year", "birth month", "birth place"]
    # Fictitious month (20-42): month and place are not compared.
    nir = "1792551215189"
    from missive.identity.ins import compute_key

    assert validate.trait_warnings(nir + compute_key(nir), date(1979, 6, 1), "M", "75056") == []


def test_notify_channel_defaults_from_contacts() -> None:
    assert validate.notify_channel("", "+33612345678", "a@b.fr") == "both"
    assert validate.notify_channel(None, None, "a@b.fr") == "email"
    assert validate.notify_channel(None, None, None) == "none"
    with pytest.raises(InvalidField, match="needs a phone"):
        validate.notify_channel("both", None, "a@b.fr")
