"""Helpers for directory tests: valid identifiers built with the identity module's own rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from missive.identity.ins import compute_key
from missive.identity.rpps import luhn_check_digit


def ins_number(n: int, *, sex: str = "2", year: str = "79", month: str = "03") -> str:
    """A valid matricule INS whose order number is ``n`` (1-999)."""
    nir = f"{sex}{year}{month}51215{n:03d}"
    return nir + compute_key(nir)


def rpps_number(n: int) -> str:
    payload = f"1{n:09d}"
    return payload + luhn_check_digit(payload)


@pytest.fixture
def make_ins() -> Callable[..., str]:
    return ins_number


@pytest.fixture
def make_rpps() -> Callable[[int], str]:
    return rpps_number


def patient_fields(ins: str, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ins": ins,
        "oid": "1.2.250.1.213.1.4.10",
        "family_name": "DUPONT",
        "given_names": "Marie Louise",
        "birth_date_text": "1979-03-05",
        "sex_text": "F",
        "birth_place_text": "51215",
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def patient_data() -> Callable[..., dict[str, Any]]:
    return patient_fields


def self_signed_pem(common_name: str, *, ca: bool = True) -> bytes:
    """A throw-away self-signed certificate (EC P-256), a CA unless ``ca=False``."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


@pytest.fixture
def make_ca() -> Callable[..., bytes]:
    return self_signed_pem
