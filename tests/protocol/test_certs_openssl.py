"""What ``missive certs`` writes, read back by OpenSSL (issue #3 acceptance): the PKCS#12 export
opens with its password and not with another, the CRL revokes in ``openssl verify``, and the
command line works end to end as a separate process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from missive.certs import ca
from missive.certs.files import CertsLayout
from missive.config import Settings, load_settings

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl is not installed (scripts/test-deps.sh)")

PASSWORD = "correct horse battery"


def missive(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MISSIVE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "missive", "--data-dir", str(data_dir), *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False,
    )


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_pkcs12_export_opens_with_its_password_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings(data)
    ca.init_ca(settings)
    serial = ca.issue_professional(settings, "10001234565", "Marie Curie",
                                   profession="Médecin").serial
    p12 = tmp_path / "marie.p12"
    exported = missive(data, "certs", "export", serial, "--format", "p12", "--out", str(p12),
                       "--password-stdin", "--json", stdin=PASSWORD + "\n")
    assert exported.returncode == 0, exported.stderr
    assert oct(p12.stat().st_mode & 0o777) == "0o600"

    opened = openssl("pkcs12", "-in", str(p12), "-passin", f"pass:{PASSWORD}", "-nodes")
    assert opened.returncode == 0, opened.stderr
    assert "BEGIN PRIVATE KEY" in opened.stdout
    assert "CN=810001234565" in opened.stdout.replace(" = ", "=")

    wrong = openssl("pkcs12", "-in", str(p12), "-passin", "pass:not the password", "-nodes")
    assert wrong.returncode != 0
    assert "BEGIN PRIVATE KEY" not in wrong.stdout


def test_openssl_verify_honours_the_crl(settings: Settings, tmp_path: Path) -> None:
    ca.ensure_initialised(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    layout = CertsLayout.of(settings)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(Path(pro.cert_file).read_bytes())
    args = ["verify", "-crl_check", "-CAfile", str(layout.ca_cert),
            "-CRLfile", str(layout.crl), "-purpose", "sslclient", str(leaf)]
    ok = openssl(*args)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ca.revoke(settings, pro.serial, "key-compromise")
    refused = openssl(*args)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    crl_text = openssl("crl", "-in", str(layout.crl), "-noout", "-text").stdout
    assert pro.serial in crl_text.replace(":", "")
    assert "Key Compromise" in crl_text


def test_rsa_ca_chain_verifies_in_openssl(settings: Settings, tmp_path: Path) -> None:
    ca.init_ca(settings, algorithm="rsa")
    server = ca.issue_server(settings, ["mail.test.missive.localhost"], ["127.0.0.1"])
    layout = CertsLayout.of(settings)
    result = openssl("verify", "-CAfile", str(layout.ca_cert), "-purpose", "sslserver",
                     str(layout.server_cert))
    assert result.returncode == 0, result.stdout + result.stderr
    text = openssl("x509", "-in", server.cert_file, "-noout", "-text").stdout
    assert "3072 bit" in text
    assert "DNS:mail.test.missive.localhost" in text and "IP Address:127.0.0.1" in text


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    # The full matrix of bad inputs is in tests/unit/certs/test_cli_certs.py (in-process);
    # here the console entry point itself, as a separate process, with its exit codes.
    data = tmp_path / "data"
    missing = missive(data, "certs", "issue-server", "--name", "mail.example.fr")
    assert missing.returncode == 1
    assert "init-ca" in missing.stderr
    ca.init_ca(load_settings(data))
    bad_san = missive(data, "certs", "issue-server", "--name", "mail_server!.fr", "--json")
    assert bad_san.returncode == 1
    assert "invalid DNS name" in json.loads(bad_san.stderr)["error"]
