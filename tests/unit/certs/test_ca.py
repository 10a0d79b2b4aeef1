"""Issuance, revocation, CRL, PKCS#12 and expiry of the operator CA (missive.certs.ca)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from missive.certs import ca
from missive.certs.errors import (
    CAExists,
    CANotInitialised,
    InvalidRequest,
    UnknownCertificate,
    WrongPassword,
)
from missive.certs.files import CertsLayout
from missive.config import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _load(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())[0]


def test_init_ca_ec_by_default(settings: Settings) -> None:
    info = ca.init_ca(settings)
    layout = CertsLayout.of(settings)
    cert = _load(layout.ca_cert)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    assert info.kind == "ca" and info.serial == format(cert.serial_number, "X")
    assert _mode(layout.ca_key) == 0o600
    assert _mode(layout.index) == 0o600
    assert _mode(layout.root) == 0o700
    assert layout.crl.exists()  # an (empty) CRL from the start: CRL checking works at once


def test_init_ca_rsa_option(settings: Settings) -> None:
    ca.init_ca(settings, algorithm="rsa", cn="Test Root")
    cert = _load(CertsLayout.of(settings).ca_cert)
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test Root"


def test_init_ca_refuses_to_overwrite(settings: Settings) -> None:
    ca.init_ca(settings)
    before = CertsLayout.of(settings).ca_cert.read_bytes()
    with pytest.raises(CAExists, match="already exists"):
        ca.init_ca(settings)
    assert CertsLayout.of(settings).ca_cert.read_bytes() == before


def test_issue_without_ca_says_what_to_do(settings: Settings) -> None:
    with pytest.raises(CANotInitialised, match="init-ca"):
        ca.issue_server(settings, ["mail.example.fr"])


def test_server_certificate_sans_and_activation(settings: Settings) -> None:
    ca.init_ca(settings)
    info = ca.issue_server(settings, ["Mail.Example.FR.", "*.example.fr"],
                           ["127.0.0.1", "::1"])
    cert = _load(info.cert_file)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.fr", "*.example.fr"]
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    layout = CertsLayout.of(settings)
    chain = x509.load_pem_x509_certificates(layout.server_cert.read_bytes())
    assert chain[0] == cert and chain[1] == _load(layout.ca_cert)
    assert _mode(layout.server_key) == 0o600
    assert _mode(Path(info.key_file or "")) == 0o600
    cert.verify_directly_issued_by(_load(layout.ca_cert))
    # A second one becomes active, the first is kept but no longer active.
    second = ca.issue_server(settings, ["mail.example.fr"])
    actives = {e.serial: e.active for e in ca.list_certs(settings, kind="server")}
    assert actives == {info.serial: False, second.serial: True}


@pytest.mark.parametrize("name", ["bad_name.fr", "-lead.fr", "a..b", "*", "x" * 64 + ".fr",
                                  "mail example.fr"])
def test_bad_dns_san_refused(settings: Settings, name: str) -> None:
    ca.init_ca(settings)
    with pytest.raises(InvalidRequest, match=r"DNS name|wildcard"):
        ca.issue_server(settings, [name])


def test_bad_ip_san_refused(settings: Settings) -> None:
    ca.init_ca(settings)
    with pytest.raises(InvalidRequest, match="IP address"):
        ca.issue_server(settings, [], ["300.1.2.3"])
    with pytest.raises(InvalidRequest, match="at least one"):
        ca.issue_server(settings, [], [])


def test_operator_certificate_subject_is_recordable(settings: Settings) -> None:
    ca.init_ca(settings)
    info = ca.issue_operator(settings, "hopital.example.fr", organisation="Hôpital Exemple",
                             unit="26750045200011", state="Paris (75)",
                             names=["mx1.hopital.example.fr"])
    assert info.subject == (
        "CN=hopital.example.fr,OU=26750045200011,O=Hôpital Exemple,ST=Paris (75),C=FR")
    cert = _load(info.cert_file)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert CertsLayout.of(settings).operator_cert.exists()
    assert info.names == ["hopital.example.fr", "mx1.hopital.example.fr"]


def test_professional_certificate_carries_national_id(settings: Settings) -> None:
    ca.init_ca(settings)
    info = ca.issue_professional(settings, "10001234565", "Marie Curie",
                                 profession="Médecin", email="marie.curie@Example.FR")
    cert = _load(info.cert_file)
    assert info.national_id == "810001234565" and info.rpps == "10001234565"
    # IGC-Santé shape: C, title, then one multi-valued RDN SN + GN + CN=<8+RPPS>.
    last = cert.subject.rdns[-1]
    values = {a.oid: a.value for a in last}
    assert values == {NameOID.SURNAME: "Curie", NameOID.GIVEN_NAME: "Marie",
                      NameOID.COMMON_NAME: "810001234565"}
    assert cert.subject.get_attributes_for_oid(NameOID.TITLE)[0].value == "Médecin"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert info.emails == ["marie.curie@example.fr"]
    # The national id form is accepted as input too.
    again = ca.issue_professional(settings, "810001234565", "Marie Curie")
    assert again.national_id == "810001234565"


@pytest.mark.parametrize("rpps", ["10001234566", "1000123456", "abc", "010001234565"])
def test_bad_rpps_refused(settings: Settings, rpps: str) -> None:
    ca.init_ca(settings)
    with pytest.raises(InvalidRequest, match="RPPS"):
        ca.issue_professional(settings, rpps, "Marie Curie")


def test_revoke_records_reason_and_lists_in_crl(settings: Settings) -> None:
    ca.init_ca(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    keep = ca.issue_professional(settings, "99700367917", "Jean Test")
    revoked = ca.revoke(settings, pro.serial.lower(), "keyCompromise")
    assert revoked.status == "revoked" and revoked.revocation_reason == "key_compromise"
    crl = x509.load_pem_x509_crl(CertsLayout.of(settings).crl.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(int(pro.serial, 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(int(keep.serial, 16)) is None
    assert crl.is_signature_valid(_load(CertsLayout.of(settings).ca_cert).public_key())  # type: ignore[arg-type]
    index = json.loads(CertsLayout.of(settings).index.read_text())
    assert {c["serial"]: c["status"] for c in index["certificates"]}[pro.serial] == "revoked"


def test_revoke_errors(settings: Settings) -> None:
    info = ca.init_ca(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    with pytest.raises(UnknownCertificate, match="no certificate"):
        ca.revoke(settings, "ABCDEF0123")
    with pytest.raises(UnknownCertificate, match="not a serial"):
        ca.revoke(settings, "not-hex")
    with pytest.raises(InvalidRequest, match="reason"):
        ca.revoke(settings, pro.serial, "because")
    with pytest.raises(InvalidRequest, match="CA"):
        ca.revoke(settings, info.serial)
    # A unique prefix is enough.
    assert ca.revoke(settings, pro.serial[:10]).serial == pro.serial


def test_pkcs12_roundtrip_and_wrong_password(settings: Settings) -> None:
    ca.init_ca(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    blob = ca.export_pkcs12(settings, pro.serial, "s3cret-password")
    key, cert, extra = pkcs12.load_key_and_certificates(blob, b"s3cret-password")
    assert cert is not None and format(cert.serial_number, "X") == pro.serial
    assert key is not None and len(extra) == 1
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(blob, b"wrong")
    with pytest.raises(InvalidRequest, match="8 characters"):
        ca.export_pkcs12(settings, pro.serial, "short")


def test_import_pkcs12_installs_server_certificate(settings: Settings, tmp_path: Path) -> None:
    ca.init_ca(settings)
    issued = ca.issue_server(settings, ["imported.example.fr"], activate=False)
    blob = ca.export_pkcs12(settings, issued.serial, "import-password")
    with pytest.raises(WrongPassword, match="password"):
        ca.import_pkcs12(settings, blob, "nope", role="server")
    with pytest.raises(InvalidRequest, match="PKCS#12"):
        ca.import_pkcs12(settings, b"garbage", "x", role="server")
    info = ca.import_pkcs12(settings, blob, "import-password", role="server")
    assert info.serial == issued.serial
    served = _load(CertsLayout.of(settings).server_cert)
    assert format(served.serial_number, "X") == issued.serial


def test_export_pem(settings: Settings) -> None:
    ca.init_ca(settings)
    server = ca.issue_server(settings, ["mail.example.fr"])
    pem = ca.export_pem(settings, server.serial)
    assert pem.count(b"BEGIN CERTIFICATE") == 2 and b"PRIVATE KEY" not in pem
    assert b"PRIVATE KEY" in ca.export_pem(settings, server.serial, include_key=True)
    assert ca.export_pem(settings, "ca").count(b"BEGIN CERTIFICATE") == 1


def test_check_expiry_states(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    ca.issue_professional(settings, "10001234565", "Marie Curie", days=10)
    now = datetime.now(UTC)
    report = ca.check_expiry(settings, 30, now=now)
    roles = {i.role: i.state for i in report.items}
    assert roles["ca"] == "ok" and roles["server"] == "ok" and roles["crl"] == "ok"
    assert roles["professional"] == "warning"
    assert report.worst == "warning"
    later = ca.check_expiry(settings, 30, now=now + timedelta(days=380))
    assert {i.role: i.state for i in later.items}["server"] == "warning"
    expired = ca.check_expiry(settings, 30, now=now + timedelta(days=400))
    states = {i.role: i.state for i in expired.items}
    assert states["server"] == "expired" and states["crl"] == "expired"
    assert expired.worst == "expired"
    assert "professional" not in states  # already expired professionals are history


def test_ensure_initialised_is_idempotent(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    layout = CertsLayout.of(settings)
    first = (layout.ca_cert.read_bytes(), layout.server_cert.read_bytes())
    ca.ensure_initialised(settings)
    assert (layout.ca_cert.read_bytes(), layout.server_cert.read_bytes()) == first
    leaf = _load(layout.server_cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = san.get_values_for_type(x509.DNSName)
    assert settings.mta.hostname in names and settings.domain in names and "localhost" in names
    assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_refresh_crl_when_due(settings: Settings) -> None:
    ca.init_ca(settings)
    assert ca.refresh_crl_if_due(settings) is False
    ca.generate_crl(settings, days=1)
    before = CertsLayout.of(settings).crl.read_bytes()
    # A 1-day CRL signed 5 minutes in the past still has > 1/3 of its life: not due.
    assert ca.refresh_crl_if_due(settings) is False
    CertsLayout.of(settings).crl.unlink()
    assert ca.refresh_crl_if_due(settings) is True
    assert CertsLayout.of(settings).crl.read_bytes() != before


def test_new_ca_starts_a_fresh_index(settings: Settings) -> None:
    ca.init_ca(settings)
    ca.issue_professional(settings, "10001234565", "Marie Curie")
    layout = CertsLayout.of(settings)
    layout.ca_key.unlink()
    layout.ca_cert.unlink()
    ca.init_ca(settings)
    assert [e.kind for e in ca.list_certs(settings)] == ["ca"]
    assert list(layout.root.glob("index-*.json.old"))
