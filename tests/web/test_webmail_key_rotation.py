"""C4 and the webmail: a master-key rotation re-wraps the authenticator-app (TOTP) secrets.

The rotation runs as an operator runs it, ``missive admin keys rotate`` in its own process, on
a data directory made by ``missive init``; the webmail before and after is a fresh app over a
fresh core (new key ring read from the key files), as after a restart.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from webmail_support import PASSWORD, FakeOtp, csrf_of, ins_number, make_patient

from missive.config import load_settings
from missive.mailbox import crypto
from missive.runtime import Core, build_core
from missive.webmail import totp
from missive.webmail.models import WebTotp

MISSIVE = [sys.executable, "-m", "missive"]


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MISSIVE, "--data-dir", str(data), *args], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "MISSIVE_ENVIRONMENT": "test"})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    r = _cli(d, "init", "--test-mode", "--domain", "rot.missive.localhost", "--json")
    assert r.returncode == 0, r.stderr
    return d


async def _core(data: Path) -> Core:
    return await build_core(load_settings(data, environment="test"), with_master_key=True)


def _client(core: Core, otp: FakeOtp) -> httpx.AsyncClient:
    from missive.webmail.app import create_app

    app = create_app(core.settings, core, otp_sender=otp)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="https://testserver")


async def _password_step(c: httpx.AsyncClient, ins: str) -> httpx.Response:
    page = await c.get("/connexion")
    r = await c.post("/connexion", data={"csrf": csrf_of(page.text), "identifier": ins,
                                         "password": PASSWORD})
    assert r.status_code == 303, r.text
    return await c.get("/connexion/code")


async def test_totp_login_works_after_rotation_in_another_process(data: Path) -> None:
    otp = FakeOtp()
    core = await _core(data)
    try:
        await make_patient(core, 31)
        async with _client(core, otp) as c:
            code_page = await _password_step(c, ins_number(31))
            r = await c.post("/connexion/code", data={"csrf": csrf_of(code_page.text),
                                                      "code": otp.last_code})
            assert r.status_code == 303
            page = await c.get("/parametres/application")
            await c.post("/parametres/application", data={"csrf": csrf_of(page.text)})
            page = await c.get("/parametres/application")
            found = re.search(r'<p class="target"><code>([A-Z2-7 ]+)</code>', page.text)
            assert found
            text = found.group(1).replace(" ", "")
            secret = base64.b32decode(text + "=" * (-len(text) % 8))
            step = totp.step_of(time.time())
            r = await c.post("/parametres/application/confirmer",
                             data={"csrf": csrf_of(page.text), "code": totp.hotp(secret, step)})
            assert r.status_code == 303
        async with core.db.read() as s:
            before = (await s.execute(select(WebTotp))).scalar_one()
        old_key = core.keys.master()
        assert before.master_key_id == old_key.key_id
    finally:
        await core.close()

    done = _cli(data, "admin", "keys", "rotate", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["others"] == {"web_totp": 1}
    assert report["new_key_id"] != old_key.key_id

    fresh = await _core(data)
    try:
        assert fresh.keys.master().key_id == report["new_key_id"]
        assert set(fresh.keys.masters) == {report["new_key_id"]}  # the old key is gone
        async with fresh.db.read() as s:
            row = (await s.execute(select(WebTotp))).scalar_one()
        assert row.master_key_id == report["new_key_id"]
        with pytest.raises(crypto.CryptoError):
            crypto.unwrap_secret(old_key, row.wrapped_secret, b"web-totp/patient/1")
        sent_before = len(otp.sent)
        async with _client(fresh, otp) as c:
            code_page = await _password_step(c, ins_number(31))
            assert "application" in code_page.text
            assert len(otp.sent) == sent_before  # the app, not an SMS
            r = await c.post("/connexion/code", data={
                "csrf": csrf_of(code_page.text),
                "code": totp.hotp(secret, totp.step_of(time.time()) + 1)})
            assert r.status_code == 303 and r.headers["location"] == "/boite/reception"
    finally:
        await fresh.close()


async def test_rotation_interrupted_after_the_key_store_completes_totp(wcore: Core) -> None:
    """A crash between the key-store re-wrap and the TOTP re-wrap: the next rotation finishes
    the interrupted one (TOTP secrets included) before starting its own."""
    from missive.mailbox.keys import rotate_master_key
    from missive.runtime import master_wrapped

    patient = await make_patient(wcore, 32)
    async with wcore.db.write() as s:
        secret = await totp.begin(s, wcore.keys, "patient", patient.id)
    assert wcore.keystore is not None
    path = wcore.settings.master_key_path
    spare = crypto.MasterKey.generate()
    crypto.write_key_file(path.with_name(path.name + ".new"), spare.encode())
    wcore.keys.masters[spare.key_id] = spare  # as load_keyring does after a crash
    await wcore.keystore.rewrap_all(spare)  # step 2 done, then the crash

    result = await rotate_master_key(wcore.db, wcore.keystore, wcore.keys, path,
                                     holders=master_wrapped())
    assert result.old_key_id == spare.key_id and result.others == {"web_totp": 1}
    async with wcore.db.read() as s:
        row = await totp.find(s, "patient", patient.id)
    assert row is not None and row.master_key_id == result.new_key_id
    ring = crypto.load_keyring(path, wcore.settings.index_key_path, with_master=True)
    assert set(ring.masters) == {result.new_key_id}
    assert totp.secret_of(ring, row) == secret
