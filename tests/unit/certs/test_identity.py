"""Reading peer certificates: national id, operator DN, chain to one CA (missive.certs.identity)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from missive.certs import ca, identity
from missive.certs.errors import CertificateRevoked, ChainError
from missive.certs.files import CertsLayout
from missive.config import Settings


def _pem(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _self_signed(subject: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))


def test_national_id_from_igc_sante_shaped_subject(settings: Settings) -> None:
    ca.init_ca(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie", profession="Médecin")
    der = x509.load_pem_x509_certificate(_pem(pro.cert_file)).public_bytes(
        serialization.Encoding.DER)
    assert identity.national_id_of(der) == "810001234565"
    assert identity.rpps_of(der) == "10001234565"
    peer = identity.describe(der)
    assert peer.subject == "SN=Curie+GN=Marie+CN=810001234565,T=Médecin,C=FR"
    assert peer.serial == pro.serial


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ([(NameOID.COMMON_NAME, "899700367917")], "899700367917"),
        ([(NameOID.COMMON_NAME, "Dr X"), (NameOID.SERIAL_NUMBER, "810001234565")],
         "810001234565"),
        ([(NameOID.COMMON_NAME, "0123456789")], "0123456789"),  # ADELI national id
        ([(NameOID.COMMON_NAME, "810001234566")], None),  # bad Luhn digit
        ([(NameOID.COMMON_NAME, "mail.example.fr")], None),
    ],
)
def test_national_id_variants(attrs: list[tuple[x509.ObjectIdentifier, str]],
                              expected: str | None) -> None:
    cert = _self_signed(x509.Name([x509.NameAttribute(o, v) for o, v in attrs]))
    assert identity.national_id_of(cert) == expected


def test_rpps_of_adeli_is_none() -> None:
    cert = _self_signed(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "0123456789")]))
    assert identity.rpps_of(cert) is None


@pytest.mark.parametrize(
    "written",
    [
        "CN=mx.hopital.fr,OU=26750045200011,O=Hôpital,ST=Paris (75),C=FR",
        "CN=mx.hopital.fr, OU=26750045200011, O=hôpital, ST=Paris  (75), C=FR",
        "C=FR,ST=Paris (75),O=Hôpital,OU=26750045200011,CN=mx.hopital.fr",
        "/C=FR/ST=Paris (75)/O=Hôpital/OU=26750045200011/CN=mx.hopital.fr",
        "cn=MX.hopital.fr,ou=26750045200011,o=Hôpital,st=Paris (75),c=FR",
    ],
)
def test_dn_matches_forms_in_the_wild(written: str) -> None:
    actual = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Paris (75)"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hôpital"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "26750045200011"),
        x509.NameAttribute(NameOID.COMMON_NAME, "mx.hopital.fr"),
    ])
    assert identity.dn_matches(actual, written)
    assert identity.dn_matches(identity.format_dn(actual), written)


@pytest.mark.parametrize(
    "written",
    ["CN=mx.other.fr,O=Hôpital,C=FR", "CN=mx.hopital.fr,C=FR", "not a dn", ""],
)
def test_dn_mismatch(written: str) -> None:
    actual = "CN=mx.hopital.fr,O=Hôpital,C=FR"
    assert not identity.dn_matches(actual, written)


def test_verify_chain_to_the_right_ca_only(settings: Settings, tmp_path: Path) -> None:
    ca.init_ca(settings)
    op = ca.issue_operator(settings, "hopital.example.fr")
    ours = _pem(CertsLayout.of(settings).ca_cert)
    chain = identity.verify_chain(_pem(op.cert_file), ours)
    assert len(chain) == 2

    other = Settings(**{**settings.model_dump(), "data_dir": tmp_path / "other"})
    ca.init_ca(other)
    theirs = _pem(CertsLayout.of(other).ca_cert)
    with pytest.raises(ChainError, match="not issued by the expected CA"):
        identity.verify_chain(_pem(op.cert_file), theirs)
    with pytest.raises(ChainError, match="expired"):
        identity.verify_chain(_pem(op.cert_file), ours,
                              at=datetime.now(UTC) + timedelta(days=5000))
    with pytest.raises(ChainError, match="no CA"):
        identity.verify_chain(_pem(op.cert_file), b"")


def test_verify_chain_with_crl(settings: Settings) -> None:
    ca.init_ca(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    ours = _pem(CertsLayout.of(settings).ca_cert)
    ca.revoke(settings, pro.serial)
    crl = x509.load_pem_x509_crl(CertsLayout.of(settings).crl.read_bytes())
    with pytest.raises(CertificateRevoked):
        identity.verify_chain(_pem(pro.cert_file), ours, crls=[crl])
    anchors = x509.load_pem_x509_certificates(ours)
    assert identity.is_revoked(_pem(pro.cert_file), anchors, [crl])
    fresh = ca.issue_professional(settings, "99700367917", "Jean Test")
    assert not identity.is_revoked(_pem(fresh.cert_file), anchors, [crl])


def test_load_certificate_rejects_garbage() -> None:
    with pytest.raises(ChainError, match="not a certificate"):
        identity.load_certificate(b"garbage")
