"""The command-line contract of SPEC §7 for init, serve, demo, deliver, audit verify and keys
rotate, run as an operator or a harness would: the installed ``missive`` script, subprocesses."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

MISSIVE = [sys.executable, "-m", "missive"]
PATIENT = "279035121518989"
PRO = "marie.curie@cli.localhost"


def run(data: Path, *args: str, stdin: bytes | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*MISSIVE, "--data-dir", str(data), *args], input=stdin,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})},
                          check=False)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    r = run(d, "init", "--test-mode", "--domain", "cli.localhost", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["patient_domain"] == "patient.cli.localhost"
    assert report["schema_revision"]
    return d


def _add_people(data: Path) -> None:
    r = run(data, "admin", "pro", "add", "--rpps", "10001234565", "--name", "Marie Curie",
            "--profession", "Médecin", "--address", PRO, "--password-stdin",
            stdin=b"a-long-enough-password\n")
    assert r.returncode == 0, r.stderr
    r = run(data, "admin", "patient", "add", "--ins", PATIENT, "--oid", "1.2.250.1.213.1.4.10",
            "--family-name", "DUPONT", "--given-names", "Marie Louise", "--birth-date",
            "1979-03-05", "--sex", "F", "--birth-place", "51215", "--status", "active")
    assert r.returncode == 0, r.stderr


def test_init_is_idempotent_and_keeps_keys(data: Path) -> None:
    master = (data / "keys" / "master.key").read_bytes()
    assert (data / "keys" / "master.key").stat().st_mode & 0o077 == 0
    r = run(data, "init")
    assert r.returncode == 0, r.stderr
    assert (data / "keys" / "master.key").read_bytes() == master
    conflict = run(data, "init", "--domain", "other.localhost")
    assert conflict.returncode != 0
    assert b"already initialised with domain" in conflict.stderr


def test_commands_on_a_missing_data_dir_say_what_to_do(tmp_path: Path) -> None:
    r = run(tmp_path / "nowhere", "audit", "verify")
    assert r.returncode != 0
    assert b"missive --data-dir" in r.stderr and b"init" in r.stderr


def test_deliver_reports_each_recipient(data: Path) -> None:
    _add_people(data)
    msg = (f"From: Marie Curie <{PRO}>\nTo: {PATIENT}@patient.cli.localhost\n"
           "Subject: Résultats\n\nBonjour\n").encode()
    r = run(data, "deliver", "--from", PRO, "--to", f"{PATIENT}@patient.cli.localhost",
            "--to", "279035121518988@patient.cli.localhost", "--to", "someone@gmail.com",
            "--json", stdin=msg)
    assert r.returncode == 1  # some recipients refused
    outcomes = {o["recipient"]: o for o in json.loads(r.stdout)["outcomes"]}
    assert outcomes[f"{PATIENT}@patient.cli.localhost"]["code"] == 250
    wrong_key = outcomes["279035121518988@patient.cli.localhost"]
    assert (wrong_key["code"], wrong_key["enhanced"]) == (550, "5.1.1")
    relay = outcomes["someone@gmail.com"]
    assert (relay["code"], relay["enhanced"]) == (550, "5.7.1")
    ok = run(data, "deliver", "--from", PRO, "--to", f"{PATIENT}@patient.cli.localhost",
             stdin=msg)
    assert ok.returncode == 0, ok.stderr
    exe = msg.replace(b"\nBonjour\n", b"") + (
        b"MIME-Version: 1.0\nContent-Type: application/x-msdownload; name=x.exe\n"
        b"Content-Disposition: attachment; filename=x.exe\nContent-Transfer-Encoding: base64\n"
        b"\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n")
    refused = run(data, "deliver", "--from", PRO, "--to", f"{PATIENT}@patient.cli.localhost",
                  stdin=exe)
    assert refused.returncode == 1
    assert b"550 5.7.1" in refused.stderr


def test_audit_verify_names_the_tampered_entry(data: Path) -> None:
    _add_people(data)
    ok = run(data, "audit", "verify", "--json")
    assert ok.returncode == 0, ok.stderr
    total = json.loads(ok.stdout)["entries"]
    assert total >= 4
    db = sqlite3.connect(data / "missive.db")
    db.execute("UPDATE audit_log SET reason = 'edited' WHERE seq = 3")
    db.commit()
    bad = run(data, "audit", "verify")
    assert bad.returncode == 3
    assert b"entry 3 was altered" in bad.stderr
    db.execute("UPDATE audit_log SET reason = NULL WHERE seq = 3")
    db.commit()
    assert run(data, "audit", "verify").returncode == 0
    db.execute("DELETE FROM audit_log WHERE seq = 2")
    db.commit()
    gone = run(data, "audit", "verify", "--json")
    assert gone.returncode == 3
    assert json.loads(gone.stdout)["first_bad_seq"] == 2
    db.close()


def test_audit_verify_detects_reordering_and_truncation(data: Path) -> None:
    _add_people(data)
    db = sqlite3.connect(data / "missive.db")
    rows = db.execute("SELECT id, seq FROM audit_log ORDER BY id").fetchall()
    (id2, _), (id3, _) = rows[1], rows[2]
    db.execute("UPDATE audit_log SET id = -1 WHERE id = ?", (id2,))
    db.execute("UPDATE audit_log SET id = ? WHERE id = ?", (id2, id3))
    db.execute("UPDATE audit_log SET id = ? WHERE id = -1", (id3,))
    db.commit()
    swapped = run(data, "audit", "verify")
    assert swapped.returncode == 3 and b"entry 2" in swapped.stderr
    db.execute("UPDATE audit_log SET id = -1 WHERE id = ?", (id2,))
    db.execute("UPDATE audit_log SET id = ? WHERE id = ?", (id2, id3))
    db.execute("UPDATE audit_log SET id = ? WHERE id = -1", (id3,))
    last = db.execute("SELECT MAX(seq) FROM audit_log").fetchone()[0]
    db.execute("DELETE FROM audit_log WHERE seq = ?", (last,))
    db.commit()
    db.close()
    cut = run(data, "audit", "verify")
    assert cut.returncode == 3 and b"removed" in cut.stderr


def test_keys_rotate_via_cli(data: Path) -> None:
    _add_people(data)
    before = (data / "keys" / "master.key").read_bytes()
    r = run(data, "admin", "keys", "rotate", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rewrapped"] >= 3
    assert (data / "keys" / "master.key").read_bytes() != before
    assert run(data, "audit", "verify").returncode == 0


def _wait_ports(data: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, int]:
    path = data / "run" / "ports.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read() if proc.stderr else b"exited")
        time.sleep(0.2)
    raise AssertionError("ports.json never appeared")


ZERO_PORTS = {"MISSIVE_OPS__PORT": "0",
              "MISSIVE_MTA__SUBMISSION_PORT": "0", "MISSIVE_MTA__SUBMISSION_TLS_PORT": "0",
              "MISSIVE_MTA__MX_PORT": "0", "MISSIVE_IMAP__PORT": "0",
              "MISSIVE_IMAP__TLS_PORT": "0", "MISSIVE_WEBMAIL__PORT": "0"}


@pytest.mark.parametrize("command,sig", [("serve", signal.SIGTERM), ("demo", signal.SIGINT)])
def test_serve_and_demo_listen_report_ports_and_stop(tmp_path: Path, command: str,
                                                     sig: signal.Signals) -> None:
    data = tmp_path / "data"
    if command == "serve":
        assert run(data, "init", "--test-mode").returncode == 0
    proc = subprocess.Popen([*MISSIVE, "--data-dir", str(data), command],
                            env={**os.environ, **ZERO_PORTS}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        ports = _wait_ports(data, proc)
        assert ports["pid"] == proc.pid
        for name in ("smtp_submission", "imap", "web"):
            assert ports[name] > 0
        import socket

        with socket.create_connection(("127.0.0.1", ports["smtp_submission"]), timeout=10) as s:
            assert s.recv(100).startswith(b"220 ")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert b"Listening on" in out
    if command == "demo":
        assert b"marie.curie@demo.localhost" in out and b"password" in out
    assert not (data / "run" / "ports.json").exists()


async def test_ops_endpoint_serves_health_and_metrics(core: object) -> None:
    import asyncio

    from missive.notify.worker import start as start_notify
    from missive.ops import start

    core.settings.ops.port = 0  # type: ignore[attr-defined]
    worker = await start_notify(core)  # type: ignore[arg-type]
    front = await start(core)  # type: ignore[arg-type]
    try:
        async def get(path: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", front.ports["ops"])
            writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
            return data

        assert (await get("/healthz")).startswith(b"HTTP/1.0 200")
        assert (await get("/readyz")).startswith(b"HTTP/1.0 200")
        metrics = await get("/metrics")
        assert b"missive_queue_pending" in metrics
        assert b"missive_notify_sent_total" in metrics  # fronts share one registry
        assert (await get("/nothing")).startswith(b"HTTP/1.0 404")
    finally:
        await front.stop()
        await worker.stop()


def test_deliver_applies_p6_to_a_patient_sender(data: Path) -> None:
    _add_people(data)
    patient = f"{PATIENT}@patient.cli.localhost"
    msg = (f"From: Marie DUPONT <{patient}>\nTo: {PRO}\nSubject: Question\n\nBonjour\n").encode()
    refused = run(data, "deliver", "--from", patient, "--to", PRO, "--json", stdin=msg)
    assert refused.returncode == 1  # never wrote to her, not in her care team
    (outcome,) = json.loads(refused.stdout)["outcomes"]
    assert (outcome["code"], outcome["enhanced"]) == (550, "5.7.1")
    assert run(data, "admin", "patient", "care-team", "add", PATIENT, PRO).returncode == 0
    accepted = run(data, "deliver", "--from", patient, "--to", PRO, stdin=msg)
    assert accepted.returncode == 0, accepted.stderr
