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
