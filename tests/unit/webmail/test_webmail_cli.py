"""``missive admin patient activation-code`` on an initialised data directory (SQLite)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from missive.cli import main

MISSIVE = str(Path(sys.executable).with_name("missive"))
INS = "279035121518989"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MISSIVE_ENVIRONMENT", "test")
    monkeypatch.delenv("MISSIVE_DATABASE_URL", raising=False)
    data = tmp_path / "data"
    done = subprocess.run(
        [MISSIVE, "--data-dir", str(data), "init", "--test-mode", "--domain",
         "cli.missive.localhost", "--json"],
        capture_output=True, text=True, env={**os.environ}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert main(["--data-dir", str(data), "admin", "patient", "add", "--ins", INS,
                 "--oid", "1.2.250.1.213.1.4.10", "--family-name", "DUPONT",
                 "--given-names", "Marie", "--birth-date", "1979-03-05", "--sex", "F",
                 "--birth-place", "51215", "--phone", "+33612345678"]) == 0
    return data


def test_activation_code_is_printed_and_usable(data_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--data-dir", str(data_dir), "admin", "patient", "activation-code", INS,
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["purpose"] == "activation" and out["ins"] == INS
    assert len(out["code"].replace("-", "")) == 12 and out["expires_at"]

    async def check() -> bool:
        from missive.config import load_settings
        from missive.directory.patients import get_patient
        from missive.runtime import build_core
        from missive.webmail import codes
        from missive.webmail.sessions import SessionSigner

        settings = load_settings(data_dir)
        core = await build_core(settings, with_master_key=False)
        try:
            async with core.db.write() as s:
                patient = await get_patient(s, INS)
                signer = SessionSigner(settings.webmail.secret_key.get_secret_value())
                return await codes.consume_code(s, signer, patient.id, "activation",
                                                out["code"])
        finally:
            await core.close()

    assert asyncio.run(check())


def test_activation_code_errors_say_what_to_do(data_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["--data-dir", str(data_dir), "admin", "patient", "activation-code", INS,
                 "--reset"]) == 1
    assert "pending" in capsys.readouterr().err
    assert main(["--data-dir", str(data_dir), "admin", "patient", "activation-code",
                 "279035121518988"]) == 1
    assert capsys.readouterr().err.startswith("missive: error:")


GUARDIAN = "tuteur.martin@example.org"


def _admin(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str,
           stdin: str | None = None) -> tuple[int, str, str]:
    import io

    capsys.readouterr()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        code = main(["--data-dir", str(data_dir), "admin", *args])
    finally:
        sys.stdin = old
    out = capsys.readouterr()
    return code, out.out, out.err


def test_guardian_contact_for_login_codes(data_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """An operator sets up a guardian with a phone; codes go there, then by e-mail once the
    phone is removed; invalid numbers are refused like the patients' ones."""
    code, _out, err = _admin(data_dir, capsys, "delegates", "add", "--patient", INS, "--email",
                             GUARDIAN, "--name", "Paul Martin", "--phone", "06 12 34",
                             "--password-stdin", stdin="tulipe velo orage mardi\n")
    assert code == 1 and err.startswith("missive: error: phone:")
    code, _out, err = _admin(data_dir, capsys, "delegates", "add", "--patient", INS, "--pro",
                             "10001234565", "--phone", "0611111111")
    assert code == 1 and "--phone" in err
    code, out, err = _admin(data_dir, capsys, "delegates", "add", "--patient", INS, "--email",
                            GUARDIAN, "--name", "Paul Martin", "--phone", "07 11 22 33 44",
                            "--rights", "read_reply", "--password-stdin", "--json",
                            stdin="tulipe velo orage mardi\n")
    assert code == 0, err
    granted = json.loads(out)
    assert granted["phone"] == "+33711223344" and granted["login"] == GUARDIAN
    code, out, _err = _admin(data_dir, capsys, "delegates", "list", "--patient", INS)
    assert code == 0 and "+33711223344" in out
    sent = asyncio.run(_guardian_login(data_dir))
    assert sent == ("sms", "+33711223344")

    code, _out, err = _admin(data_dir, capsys, "delegates", "update", str(granted["id"]),
                             "--phone", "123")
    assert code == 1 and err.startswith("missive: error: phone:")
    code, out, err = _admin(data_dir, capsys, "delegates", "update", str(granted["id"]),
                            "--phone", "")
    assert code == 0 and f"by e-mail to {GUARDIAN}" in out, err
    assert asyncio.run(_guardian_login(data_dir)) == ("email", GUARDIAN)
    code, out, err = _admin(data_dir, capsys, "delegates", "update", str(granted["id"]),
                            "--phone", "+33 6 99 88 77 66", "--json")
    assert code == 0 and json.loads(out)["phone"] == "+33699887766", err
    assert asyncio.run(_guardian_login(data_dir)) == ("sms", "+33699887766")
    code, _out, err = _admin(data_dir, capsys, "delegates", "update", str(granted["id"]))
    assert code == 1 and "nothing to change" in err


async def _guardian_login(data_dir: Path) -> tuple[str, str]:
    """Log the guardian in to the webmail (a fresh core and app) up to the one-time code;
    where the code went."""
    import re

    import httpx

    from missive.config import load_settings
    from missive.runtime import build_core
    from missive.webmail.app import create_app

    sent: list[tuple[str, str]] = []

    class Recorder:
        async def send(self, *, channel: str, to: str, code: str, minutes: int) -> None:
            sent.append((channel, to))

    core = await build_core(load_settings(data_dir), with_master_key=True)
    try:
        app = create_app(core.settings, core, otp_sender=Recorder())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="https://testserver") as c:
            page = await c.get("/connexion")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf
            r = await c.post("/connexion", data={"csrf": csrf.group(1), "identifier": GUARDIAN,
                                                 "password": "tulipe velo orage mardi"})
            assert r.status_code == 303 and r.headers["location"] == "/connexion/code", r.text
    finally:
        await core.close()
    [found] = sent
    return found
