"""The "export everything" ZIP over a real HTTP connection: streamed, complete, in the layout
of ``routes/compose.py``, for a mailbox of a few hundred messages in several folders."""

from __future__ import annotations

import asyncio
import io
import zipfile
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import httpx
from webmail_support import (
    PASSWORD,
    PDF,
    FakeOtp,
    csrf_of,
    deliver,
    ins_number,
    make_core,
    make_patient,
    make_pro,
    message,
    web_settings,
)

from missive.runtime import serve
from missive.webmail.routes.compose import EXPORT_BATCH

COUNT = 320


async def test_export_streams_a_mailbox_of_hundreds_of_messages(tmp_path: Path) -> None:
    core = await make_core(web_settings(tmp_path / "data",
                                        webmail={"port": 0, "secure_cookies": False}))
    otp = FakeOtp()
    core.extras["webmail.otp_sender"] = otp
    patient = await make_patient(core, 61)
    pro = await make_pro(core, 61)
    expected: dict[str, bytes] = {}
    for i in range(COUNT):
        atts = [(f"bilan-{i}.pdf", "application/pdf", PDF + str(i).encode())] if i % 10 == 0 \
            else []
        raw = message(pro.address, "p@x", f"Message numéro {i}", f"Texte {i}\n" * 50,
                      attachments=atts)
        uid = await deliver(core, pro.address, patient, raw)
        expected[f"reception/{uid:06d}.eml"] = raw
    box = await core.store.open(patient.mailbox_id)
    moved = sorted(expected)[:40]
    _validity, pairs = await box.move("INBOX", [int(n[10:16]) for n in moved], "Archive")
    for old_uid, new_uid in pairs:
        expected[f"archives/{new_uid:06d}.eml"] = expected.pop(f"reception/{old_uid:06d}.eml")

    stop = asyncio.Event()
    ready: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(core, only=["web"], ready=ready.set_result,
                                     stop_event=stop))
    try:
        port = (await asyncio.wait_for(ready, 30))["web"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     timeout=120) as c:
            page = await c.get("/connexion")
            await c.post("/connexion", data={"csrf": csrf_of(page.text),
                                             "identifier": ins_number(61),
                                             "password": PASSWORD})
            page = await c.get("/connexion/code")
            r = await c.post("/connexion/code", data={"csrf": csrf_of(page.text),
                                                      "code": otp.last_code})
            assert r.headers["location"] == "/boite/reception"
            form = await c.get("/export")
            chunks: list[bytes] = []
            async with c.stream("POST", "/export", data={"csrf": csrf_of(form.text)}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"] == "application/zip"
                assert r.headers["content-disposition"].startswith("attachment;")
                # Streamed: no length known in advance, sent in chunks as batches are done.
                assert "content-length" not in r.headers
                assert r.headers["transfer-encoding"] == "chunked"
                assert "no-store" in r.headers["cache-control"]
                async for chunk in r.aiter_raw():
                    chunks.append(chunk)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await core.close()
    assert len(chunks) >= COUNT // EXPORT_BATCH
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None  # every member's CRC checks
        names = zf.namelist()
        emls = {n for n in names if n.endswith(".eml")}
        assert emls == set(expected)
        for name, raw in expected.items():
            assert zf.read(name) == raw
        pdfs = [n for n in names if n.endswith(".pdf")]
        assert len(pdfs) == COUNT // 10
        for name in pdfs:
            eml = name.split("-pieces-jointes/")[0] + ".eml"
            msg = message_from_bytes(zf.read(eml), policy=default)
            [att] = list(msg.iter_attachments())
            assert name.endswith(f"/{att.get_filename()}")
            assert zf.read(name) == att.get_content()
