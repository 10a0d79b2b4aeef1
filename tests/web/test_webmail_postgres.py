"""The webmail's own tables and flows on PostgreSQL (one private schema per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from webmail_support import (  # type: ignore[import-not-found]
    FakeOtp,
    csrf_of,
    deliver,
    ins_number,
    login,
    make_core,
    make_patient,
    make_pro,
    message,
    web_settings,
)

from missive.runtime import Core
from missive.webmail import codes


@pytest.fixture
async def pg_core(tmp_path: Path, pg_url: str) -> AsyncIterator[Core]:
    core = await make_core(web_settings(tmp_path / "data", database_url=pg_url))
    try:
        yield core
    finally:
        await core.close()


@pytest.mark.postgres
async def test_activation_login_read_sort_and_lockout_on_postgres(
        pg_core: Core, otp: FakeOtp) -> None:
    from missive.webmail.app import create_app

    patient = await make_patient(pg_core, 70, status="pending", password=None)
    pro = await make_pro(pg_core, 70)
    uid = await deliver(pg_core, pro.address, patient, message(pro.address, "p@x", "Sur PG"))
    async with pg_core.db.write() as s:
        issued = await codes.issue_code(s, pg_core.settings, patient.id, "activation")
    app = create_app(pg_core.settings, pg_core, otp_sender=otp)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://testserver") as c:
        page = await c.get("/activation")
        r = await c.post("/activation", data={"csrf": csrf_of(page.text),
                                              "ins": ins_number(70), "code": issued.code})
        assert r.status_code == 303
        form = await c.get("/mot-de-passe")
        r = await c.post("/mot-de-passe", data={
            "csrf": csrf_of(form.text), "password": "tulipe velo orage mardi",
            "confirmation": "tulipe velo orage mardi"})
        assert r.status_code == 303
        await login(c, otp, ins_number(70))
        view = await c.get(f"/boite/reception/{uid}")
        assert "Sur PG" in view.text
        r = await c.post(f"/boite/reception/{uid}/archiver", data={"csrf": csrf_of(view.text)})
        assert r.status_code == 303 and "Sur PG" in (await c.get("/boite/archives")).text
        form = await c.get("/parametres")
        await c.post("/deconnexion", data={"csrf": csrf_of(form.text)})
        page = await c.get("/connexion")
        for _ in range(pg_core.settings.webmail.login_max_failures):
            r = await c.post("/connexion", data={"csrf": csrf_of(page.text),
                                                 "identifier": ins_number(70),
                                                 "password": "faux"})
            assert r.status_code == 401
        r = await c.post("/connexion", data={"csrf": csrf_of(page.text),
                                             "identifier": ins_number(70),
                                             "password": "tulipe velo orage mardi"})
        assert r.status_code == 429
