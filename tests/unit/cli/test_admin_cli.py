"""``missive admin`` as operators and harnesses use it, on an initialised data directory (SQLite):
readable errors with a non-zero exit, ``--json`` output, passwords on stdin.

The contract itself (exit codes, stderr, stdin) is checked through a real ``missive`` subprocess;
the other tests call ``missive.cli.main`` in-process with the same arguments, which avoids paying
the interpreter start-up for every command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

MISSIVE = str(Path(sys.executable).with_name("missive"))
DOMAIN = "cli.missive.localhost"
INS = "279035121518989"
RPPS = "10001234565"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory initialised once; each test works on its own copy."""
    data = tmp_path_factory.mktemp("admin-cli") / "template"
    env = {**os.environ, "MISSIVE_ENVIRONMENT": "test"}
    env.pop("MISSIVE_DATABASE_URL", None)
    done = subprocess.run(
        [MISSIVE, "--data-dir", str(data), "init", "--test-mode", "--domain", DOMAIN, "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return data


@pytest.fixture
def data_dir(initialised: Path, tmp_path: Path) -> Path:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(initialised, data)
    return data


@pytest.fixture
def run_process(data_dir: Path) -> Run:
    """``missive --data-dir DIR admin …`` as a subprocess."""
    env = {**os.environ, "MISSIVE_ENVIRONMENT": "test"}
    env.pop("MISSIVE_DATABASE_URL", None)

    def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MISSIVE, "--data-dir", str(data_dir), "admin", *args], input=stdin,
            capture_output=True, text=True, env=env, timeout=120, check=False)

    return _run


@pytest.fixture
def run(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The same command through ``missive.cli.main`` in this process."""
    import contextlib
    import io

    from missive.cli import main

    monkeypatch.setenv("MISSIVE_ENVIRONMENT", "test")
    monkeypatch.delenv("MISSIVE_DATABASE_URL", raising=False)

    def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["--data-dir", str(data_dir), "admin", *args]
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    return _run


def _json(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _add_pro(run: Run, *extra: str, stdin: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    return run("pro", "add", "--rpps", RPPS, "--name", "Marie Curie", "--profession", "Médecin",
               "--address", f"marie.curie@{DOMAIN}", *extra, stdin=stdin)


def _add_patient(run: Run, ins: str = INS, *extra: str) -> subprocess.CompletedProcess[str]:
    return run("patient", "add", "--ins", ins, "--oid", "1.2.250.1.213.1.4.10",
               "--family-name", "DUPONT", "--given-names", "Marie Louise",
               "--birth-date", "1979-03-05", "--sex", "F", "--birth-place", "51215", *extra)


def test_pro_add_show_list_status_passwd(run: Run) -> None:
    done = _add_pro(run, "--password-stdin", "--json", stdin="first-password\n")
    pro = _json(done)
    assert isinstance(pro, dict)
    assert (pro["national_id"], pro["has_password"]) == ("8" + RPPS, True)
    shown = _json(run("pro", "show", f"Marie.Curie@{DOMAIN}", "--json"))
    assert isinstance(shown, dict) and shown["id"] == pro["id"]
    human = run("pro", "list")
    assert human.returncode == 0 and f"marie.curie@{DOMAIN}" in human.stdout
    assert "STATUS" in human.stdout
    assert _json(run("pro", "set-status", RPPS, "suspended", "--json"))["status"] == "suspended"  # type: ignore[index]
    assert _json(run("pro", "list", "--status", "active", "--json")) == []
    assert run("pro", "passwd", RPPS, "--password-stdin", stdin="second\n").returncode == 0
    again = _add_pro(run)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_contract_through_a_real_process(run_process: Run) -> None:
    run = run_process
    added = _add_pro(run, "--password-stdin", "--json", stdin="pw-from-stdin\n")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["has_password"] is True
    bad_key = _add_patient(run, "279035121518988")
    assert bad_key.returncode == 1
    assert bad_key.stderr == "missive: error: ins: INS key should be 89, got 88\n"
    missing = run("patient", "show", "180012A00100161", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stderr)["error"].startswith("no patient")
    usage = run("patient", "set-status", INS, "asleep")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_readable_errors(run: Run) -> None:
    bad_key = _add_patient(run, "279035121518988")
    assert bad_key.returncode == 1
    assert "INS key should be 89, got 88" in bad_key.stderr
    assert "Traceback" not in bad_key.stderr
    bad_rpps = run("pro", "add", "--rpps", "10001234566", "--name", "X", "--profession", "Y",
                   "--address", f"x@{DOMAIN}")
    assert bad_rpps.returncode == 1 and "check digit" in bad_rpps.stderr
    missing = run("patient", "show", "180012A00100161", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stderr)["error"].startswith("no patient")
    usage = run("patient", "set-status", INS, "asleep")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    no_pw = _add_pro(run, "--password-stdin", stdin="")
    assert no_pw.returncode == 1 and "no password" in no_pw.stderr


def test_patient_life_cycle(run: Run) -> None:
    created = _json(_add_patient(run, INS, "--phone", "0612345678", "--status", "active",
                                 "--json"))
    assert isinstance(created, dict)
    assert created["address"] == f"{INS}@patient.{DOMAIN}"
    assert created["notify_channel"] == "sms"
    assert created["warnings"] == []
    male = run("patient", "add", "--ins", "180012A00100161", "--family-name", "MARTIN",
               "--given-names", "Jean", "--birth-date", "1980-01-01", "--sex", "F",
               "--birth-place", "2A001")
    assert male.returncode == 0
    assert "warning: sex F differs from the matricule" in male.stderr
    shown = run("patient", "show", INS)
    assert shown.returncode == 0 and "+33612345678" in shown.stdout
    refused = run("patient", "delete", INS)
    assert refused.returncode == 1 and "close the account first" in refused.stderr
    closed = run("patient", "set-status", INS, "closed")
    assert closed.returncode == 0 and "keys destroyed" in closed.stdout
    assert run("patient", "delete", INS).returncode == 0
    remaining = _json(run("patient", "list", "--json"))
    assert isinstance(remaining, list) and [p["ins"] for p in remaining] == ["180012A00100161"]


def test_csv_import_all_or_nothing(run: Run, tmp_path: Path) -> None:
    csv_file = tmp_path / "patients.csv"
    csv_file.write_text(
        "ins;family_name;given_names;birth_date;sex;birth_place\n"
        f"{INS};DUPONT;Marie;1979-03-05;F;51215\n"
        "279035121518988;DURAND;Paul;1979-03-05;M;51215\n"
        "180012A00100161;MARTIN;Jean;1980-01-01;X;2A001\n",
        encoding="utf-8")
    done = run("patient", "import", str(csv_file))
    assert done.returncode == 1
    assert "line 3: ins: INS key should be 89, got 88" in done.stderr
    assert "line 4: sex: must be M or F" in done.stderr
    assert "nothing imported" in done.stderr
    assert _json(run("patient", "list", "--json")) == []
    checked = _json(run("patient", "import", str(csv_file), "--skip-invalid", "--dry-run",
                        "--json"))
    assert isinstance(checked, dict) and checked["imported"] == 0
    assert "1 valid entry would be imported" in checked["notes"][0]
    assert _json(run("patient", "list", "--json")) == []
    report = _json(run("patient", "import", str(csv_file), "--skip-invalid", "--json"))
    assert isinstance(report, dict)
    assert (report["imported"], report["invalid"]) == (1, 2)


def test_trust_add_import_list_delete(run: Run, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Operator B CA")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(cert.public_bytes(Encoding.PEM))
    added = _json(run("trust", "add", "mss.operator-b.example", "--ca", str(ca_file),
                      "--operator-dn", "CN=mta.operator-b.example", "--json"))
    assert isinstance(added, dict) and len(added["cas_added"]) == 1
    xml = tmp_path / "listeblanchemssante.xml"
    xml.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema" '
        'DateDeGeneration="2026-11-01">'
        "<Domaine><Nom>mss.operator-c.example</Nom><Description>C</Description>"
        "<DNCertificatOperateur>CN=c</DNCertificatOperateur><DateMAJ>2026-01-01</DateMAJ>"
        "</Domaine></ListeBlanche>", encoding="utf-8")
    imported = run("trust", "import", str(xml))
    assert imported.returncode == 0 and "1 domain(s) imported" in imported.stdout
    domains = _json(run("trust", "list", "--json"))
    assert isinstance(domains, list)
    assert sorted(d["domain"] for d in domains) == ["mss.operator-b.example",
                                                    "mss.operator-c.example"]
    shown = run("trust", "show", "mss.operator-b.example")
    assert "Operator B CA" in shown.stdout
    assert run("trust", "delete", "mss.operator-b.example").returncode == 0
    gone = run("trust", "show", "mss.operator-b.example")
    assert gone.returncode == 1 and "not in the trust space" in gone.stderr


def test_delegates(run: Run) -> None:
    assert _add_patient(run).returncode == 0
    granted = _json(run("delegates", "add", "--patient", INS, "--email", "aidant@example.fr",
                        "--name", "Julie", "--rights", "read_reply", "--expires", "2999-01-31",
                        "--json"))
    assert isinstance(granted, dict) and granted["in_force"] is True
    listed = _json(run("delegates", "list", "--patient", INS, "--json"))
    assert isinstance(listed, list) and [d["id"] for d in listed] == [granted["id"]]
    assert run("delegates", "revoke", str(granted["id"])).returncode == 0
    assert _json(run("delegates", "list", "--json")) == []


def test_unreachable_database_is_a_readable_error(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 1 on the loopback: nothing listens there, the connection is refused at once.
    monkeypatch.setenv("MISSIVE_DATABASE_URL",
                       "postgresql+asyncpg://postgres:not-shown@127.0.0.1:1/test")
    done = run("pro", "list")
    assert done.returncode == 1
    assert "database error, nothing changed" in done.stderr
    assert "127.0.0.1:1/test" in done.stderr and "not-shown" not in done.stderr
