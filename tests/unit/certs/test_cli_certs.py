"""``missive certs …`` in-process: JSON output, exit codes, and error messages."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from missive.certs import ca
from missive.certs.metrics import register_metrics
from missive.cli import certs as certs_cli
from missive.cli import common
from missive.config import Settings, load_settings


def main(argv: list[str]) -> int:
    """``missive.cli.main`` restricted to the certs family (other families are not under
    test here, and one being edited must not break these tests)."""
    parser = argparse.ArgumentParser(prog="missive")
    parser.add_argument("--data-dir", default="./data")
    certs_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except common.CommandError as exc:
        common.fail(str(exc), as_json=getattr(args, "json", False))
        return exc.exit_code


def run(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), "certs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_full_cycle_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    code, out, _ = run(capsys, data, "init-ca", "--json")
    assert code == 0 and json.loads(out)["kind"] == "ca"
    code, out, _ = run(capsys, data, "issue-server", "--name", "mail.example.fr",
                       "--ip", "127.0.0.1", "--json")
    assert code == 0
    server = json.loads(out)
    assert server["names"] == ["mail.example.fr"] and server["ips"] == ["127.0.0.1"]
    code, out, _ = run(capsys, data, "issue-operator", "example.fr", "--unit", "123",
                       "--json")
    assert code == 0 and json.loads(out)["subject"].startswith("CN=example.fr,OU=123,")
    code, out, _ = run(capsys, data, "issue-pro", "--rpps", "10001234565", "--name",
                       "Marie Curie", "--email", "marie@example.fr", "--json")
    assert code == 0
    pro = json.loads(out)
    assert pro["national_id"] == "810001234565" and pro["emails"] == ["marie@example.fr"]

    code, out, _ = run(capsys, data, "revoke", pro["serial"], "--reason", "superseded",
                       "--json")
    assert code == 0 and json.loads(out)["status"] == "revoked"
    code, out, _ = run(capsys, data, "crl", "--json")
    assert code == 0 and json.loads(out)["revoked"] == [pro["serial"]]

    code, out, _ = run(capsys, data, "list", "--json")
    listed = {c["serial"]: c["state"] for c in json.loads(out)}
    assert listed[pro["serial"]] == "revoked" and listed[server["serial"]] == "valid"
    code, out, _ = run(capsys, data, "list", "--kind", "server")
    assert code == 0 and server["serial"] in out and pro["serial"] not in out

    code, out, _ = run(capsys, data, "check", "--json")
    report = json.loads(out)
    assert code == 0 and report["state"] == "ok"
    code, out, _ = run(capsys, data, "check", "--warn-days", "400", "--json")
    assert code == 1 and json.loads(out)["state"] == "warning"

    p12 = tmp_path / "server.p12"
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    code, out, _ = run(capsys, data, "export", server["serial"], "--format", "p12",
                       "--out", str(p12), "--password-stdin", "--json")
    assert code == 0 and p12.stat().st_size == json.loads(out)["bytes"]
    code, out, _ = run(capsys, data, "export", "ca", "--out", "-")
    assert code == 0 and out.startswith("-----BEGIN CERTIFICATE-----")

    # Import it back as the operator certificate; a wrong password says so.
    pw = tmp_path / "pw.txt"
    pw.write_text("wrong password\n")
    code, _, err = run(capsys, data, "import", str(p12), "--role", "operator",
                       "--password-file", str(pw))
    assert code == 1 and "password" in err
    pw.write_text("a long password\n")
    code, out, _ = run(capsys, data, "import", str(p12), "--role", "operator",
                       "--password-file", str(pw), "--json")
    assert code == 0 and json.loads(out)["serial"] == server["serial"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list"], "init-ca"),
        (["check"], "init-ca"),
        (["issue-pro", "--rpps", "10001234565", "--name", "X"], "init-ca"),
        (["revoke", "ABCDEF"], "init-ca"),
        (["export", "ABCDEF", "--out", "x.pem"], "init-ca"),
    ],
)
def test_missing_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                    message: str) -> None:
    code, _, err = run(capsys, tmp_path / "data", *args)
    assert code == 1 and message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue-server", "--name", "bad name.fr"], "invalid DNS name"),
        (["issue-server", "--ip", "1.2.3"], "invalid IP address"),
        (["issue-pro", "--rpps", "10001234566", "--name", "X"], "check digit"),
        (["issue-pro", "--rpps", "10001234565", "--name", "X", "--email", "no-at"],
         "e-mail"),
        (["revoke", "ABCDEF0123"], "no certificate with serial"),
        (["revoke", "zz"], "not a serial"),
        (["export", "ABCDEF0123", "--out", "x.pem"], "no certificate with serial"),
        (["init-ca"], "already exists"),
        (["issue-server", "--name", "a.fr", "--days", "0"], "between 1 and"),
    ],
)
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                   message: str) -> None:
    data = tmp_path / "data"
    assert run(capsys, data, "init-ca")[0] == 0
    code, out, err = run(capsys, data, *args, "--json")
    assert code == 1 and out == ""
    assert message in json.loads(err)["error"]


def test_export_p12_needs_a_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    run(capsys, data, "init-ca")
    code, out, _ = run(capsys, data, "issue-server", "--name", "a.fr", "--json")
    serial = json.loads(out)["serial"]
    code, _, err = run(capsys, data, "export", serial, "--format", "p12",
                       "--out", str(tmp_path / "x.p12"))
    assert code == 1 and "--password-stdin" in err


def test_expiry_metrics(settings: Settings) -> None:
    ca.ensure_initialised(settings)
    ca.issue_professional(settings, "10001234565", "Marie Curie")
    registry = CollectorRegistry()
    register_metrics(registry, settings)
    server = ca.list_certs(settings, kind="server")[0]
    value = registry.get_sample_value("missive_certificate_expiry_timestamp_seconds",
                                      {"role": "server", "serial": server.serial})
    assert value == pytest.approx(server.not_after.timestamp())
    assert registry.get_sample_value("missive_certificate_expiring",
                                     {"role": "server", "serial": server.serial}) == 0
    roles = {s.labels["role"] for m in registry.collect() for s in m.samples}
    assert roles == {"ca", "server", "crl"}


def test_expiry_metrics_without_ca(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    register_metrics(registry, load_settings(tmp_path / "empty"))
    assert list(registry.collect()) == [] or all(
        not m.samples for m in registry.collect())
