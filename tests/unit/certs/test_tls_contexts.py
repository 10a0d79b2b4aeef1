"""TLS context builders (missive.certs.tls): policy, trust, CRL mode, expiry, reload."""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from missive.certs import ca, tls
from missive.certs.errors import CertError, CertificateExpired
from missive.certs.files import CertsLayout
from missive.config import Settings


def _install_server_cert(settings: Settings, *, not_after: datetime) -> None:
    """Write a server certificate signed by our CA with the given end of validity."""
    ca_cert, ca_key = ca.load_ca(settings)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - timedelta(days=30)).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    layout = CertsLayout.of(settings)
    layout.server_key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    layout.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_server_context_policy(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    ctx = tls.server_context(settings, client_auth="required")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n)
                         for n in names)
    assert tls.server_context(settings).verify_mode == ssl.CERT_NONE
    assert tls.server_context(settings, client_auth="optional").verify_mode == ssl.CERT_OPTIONAL
    with pytest.raises(CertError, match="client_auth"):
        tls.server_context(settings, client_auth="always")  # type: ignore[arg-type]


def test_missing_server_certificate_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(CertError, match="missive init"):
        tls.server_context(settings)


def test_expired_server_certificate_refused(settings: Settings) -> None:
    ca.init_ca(settings)
    _install_server_cert(settings, not_after=datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(CertificateExpired, match="expired"):
        tls.server_context(settings)


def test_certificate_close_to_expiry_warns(settings: Settings,
                                           caplog: pytest.LogCaptureFixture) -> None:
    ca.init_ca(settings)
    _install_server_cert(settings, not_after=datetime.now(UTC) + timedelta(days=3))
    with caplog.at_level(logging.WARNING, logger="missive.certs.tls"):
        tls.server_context(settings)
    assert any("expires on" in r.getMessage() for r in caplog.records)


def test_expired_replacement_keeps_previous_context(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    server = tls.server_tls(settings, reload_seconds=0)
    _install_server_cert(settings, not_after=datetime.now(UTC) - timedelta(minutes=1))
    assert server.reload() is False  # refused, logged; still serving the valid one
    assert server.current is server.context


def test_extra_ca_without_crl_moves_revocation_after_handshake(
    settings: Settings, tmp_path: Path
) -> None:
    ca.ensure_initialised(settings)
    other = Settings(**{**settings.model_dump(), "data_dir": tmp_path / "other"})
    ca.init_ca(other, cn="Peer operator CA")
    (tmp_path / "other" / "certs" / "crl.pem").unlink()
    peer_ca = CertsLayout.of(other).ca_cert.read_bytes()
    server = tls.server_tls(settings, client_auth="required", extra_ca_pem=[peer_ca])
    assert not server.crl_in_handshake
    assert not server.context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    # With a CRL for that CA configured, checking moves back into the handshake.
    settings.certs.crl_files = [tmp_path / "peer-crl.pem"]
    ca.generate_crl(other)
    (tmp_path / "peer-crl.pem").write_bytes(CertsLayout.of(other).crl.read_bytes())
    server.set_extra_ca_pem([peer_ca])
    assert server.crl_in_handshake
    assert server.current.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


def test_extra_ca_files_setting(settings: Settings, tmp_path: Path) -> None:
    ca.ensure_initialised(settings)
    settings.certs.extra_ca_files = [tmp_path / "missing.pem"]
    with pytest.raises(CertError, match="extra_ca_files"):
        tls.server_context(settings, client_auth="optional")
    other = Settings(**{**settings.model_dump(), "data_dir": tmp_path / "other"})
    ca.init_ca(other)
    bundle = tmp_path / "igc-sante.pem"
    bundle.write_bytes(CertsLayout.of(other).ca_cert.read_bytes())
    settings.certs.extra_ca_files = [bundle]
    trust = tls.load_trust(settings)
    assert len(trust.cas) == 2


def test_client_context(settings: Settings) -> None:
    with pytest.raises(CertError, match="init-ca"):
        tls.client_context(settings)
    ca.ensure_initialised(settings)
    ctx = tls.client_context(settings)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert not tls.client_context(settings, check_hostname=False).check_hostname


def test_reload_detects_changed_files(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    server = tls.server_tls(settings, reload_seconds=0)
    assert server.reload() is False
    ca.issue_server(settings, ["localhost"])
    assert server.reload() is True
    assert server.current is not server.context
    assert server.reloads == 1


def test_corrupt_crl_keeps_previous_context(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    server = tls.server_tls(settings, client_auth="required", reload_seconds=0)
    CertsLayout.of(settings).crl.write_bytes(b"-----BEGIN X509 CRL-----\ngarbage\n")
    assert server.reload() is False
    assert server.current is server.context


def test_crl_refresh_skips_when_locked(settings: Settings) -> None:
    from missive.certs import files

    ca.init_ca(settings)
    layout = CertsLayout.of(settings)
    layout.crl.unlink()
    with files.locked(layout):
        # Another holder (here: us, through another file description) has the lock.
        assert ca.refresh_crl_if_due(settings) is False
    assert ca.refresh_crl_if_due(settings) is True
