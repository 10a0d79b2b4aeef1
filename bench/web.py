"""Webmail benchmark: inbox and message pages on a mailbox of 100,000 messages.

Run: ``.venv/bin/python bench/web.py [--messages 100000] [--clients 10] [--requests 300]
[--data-dir DIR]``. Prints p50/p95/max latencies (ms) of:

- the first inbox page (``GET /boite/reception``),
- a deep inbox page (``GET /boite/reception?avant=<random uid>``),
- a message view (``GET /boite/reception/<random uid>``: decrypts the message, renders it,
  marks it read and appends an audit entry, as a patient's click does),

each with ``--clients`` concurrent HTTP clients (each its own logged-in session, httpx over
real sockets) against the web front started as ``missive serve`` starts it (uvicorn on the
loop, SQLite in a temporary data directory, default store suite). Target (issue #7): inbox p95
< 50 ms. Filling the mailbox goes through the store's delivery path (sealed per message, group
commit) and takes a few minutes for 100,000 messages; ``--data-dir`` keeps it for re-runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from missive.config import load_settings
from missive.db.base import utcnow
from missive.directory.models import Patient
from missive.directory.passwords import hash_password
from missive.directory.patients import add_patient
from missive.directory.professionals import add_professional
from missive.identity.ins import compute_key
from missive.identity.rpps import luhn_check_digit
from missive.mailbox import crypto
from missive.runtime import build_core

PASSWORD = "banc essai lanterne orage"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Otp:
    codes: list[str] = field(default_factory=list)

    async def send(self, *, channel: str, to: str, code: str, minutes: int) -> None:
        self.codes.append(code)


def raw_message(i: int, sender: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr Banc <{sender}>"
    msg["To"] = "patient@example.org"
    msg["Subject"] = f"Compte rendu numéro {i}"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    msg["Message-ID"] = f"<bench-{i}@bench>"
    msg.set_content("Bonjour,\n\n" + "Texte du compte rendu. " * 40 + "\n")
    return msg.as_bytes()


async def fill(core: Any, mailbox_id: int, sender: str, count: int) -> None:
    async with core.db.read() as s:
        from sqlalchemy import func, select

        from missive.mailbox.models import Message
        have = (await s.execute(select(func.count(Message.id)).where(
            Message.mailbox_id == mailbox_id))).scalar_one()
    started = time.perf_counter()
    batch = 256
    for start in range(have, count, batch):
        async def one(i: int) -> None:
            d = core.store.delivery(sender=sender, source="bench")
            d.add_local(mailbox_id)
            d.notify = False
            await d.commit(raw_message(i, sender))
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + batch))))
        done = min(count, start + batch)
        if done % 10_000 < batch:
            rate = (done - have) / (time.perf_counter() - started)
            print(f"  filled {done}/{count} ({rate:.0f} msg/s)", file=sys.stderr)


async def login(client: httpx.AsyncClient, otp: Otp, ins: str) -> None:
    page = await client.get("/connexion")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await client.post("/connexion", data={"csrf": token, "identifier": ins,
                                              "password": PASSWORD})
    assert r.status_code == 303, r.status_code
    page = await client.get("/connexion/code")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await client.post("/connexion/code", data={"csrf": token, "code": otp.codes[-1]})
    assert r.status_code == 303, r.status_code


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return (f"{name:<28} n={len(samples):<5} p50={statistics.median(ordered) * 1000:7.1f} ms  "
            f"p95={p95 * 1000:7.1f} ms  max={ordered[-1] * 1000:7.1f} ms")


async def measure(clients: list[httpx.AsyncClient], requests: int,
                  url_for: Any) -> list[float]:
    samples: list[float] = []

    async def worker(c: httpx.AsyncClient) -> None:
        for _ in range(requests // len(clients)):
            url = url_for()
            t0 = time.perf_counter()
            r = await c.get(url)
            samples.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"{url} answered {r.status_code}")

    await asyncio.gather(*(worker(c) for c in clients))
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="missive-bench-web-"))
    settings = load_settings(data_dir, environment="test", domain="bench.localhost",
                             test_mode=True, webmail={"port": 0, "secure_cookies": False})
    if not settings.master_key_path.exists():
        crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    from missive.db.schema import create_schema

    data_dir.mkdir(parents=True, exist_ok=True)
    core = await build_core(settings, with_master_key=True)
    await create_schema(core.db)
    await core.store.ensure_system_mailbox()
    nir = "2790351215001"
    ins = nir + compute_key(nir)
    sender = f"bench@{settings.domain}"
    async with core.db.write() as s:
        from sqlalchemy import select

        patient = (await s.execute(select(Patient).where(Patient.matricule == ins))
                   ).scalar_one_or_none()
        if patient is None:
            patient = await add_patient(
                s, core.store, settings, actor="bench", ins=ins, oid="1.2.250.1.213.1.4.10",
                family_name="BANC", given_names="Essai", birth_date_text="1950-01-01",
                sex_text="F", birth_place_text="51215", phone_text="+33600000000")
            patient.password_hash = await hash_password(settings, PASSWORD)
            patient.status = "active"
            patient.updated_at = utcnow()
            payload = "1000000001"
            await add_professional(s, core.store, settings, actor="bench", password=None,
                                   rpps=payload + luhn_check_digit(payload), name="Dr Banc",
                                   profession="Médecin", address=sender)
        mailbox_id = patient.mailbox_id
    print(f"filling the mailbox to {args.messages} messages in {data_dir}", file=sys.stderr)
    await fill(core, mailbox_id, sender, args.messages)

    from missive.webmail.server import start

    otp = Otp()
    core.extras["webmail.otp_sender"] = otp
    front = await start(core)
    base = f"http://127.0.0.1:{front.ports['web']}"
    clients = [httpx.AsyncClient(base_url=base, timeout=60) for _ in range(args.clients)]
    try:
        for c in clients:
            await login(c, otp, ins)
        for c in clients:  # warm: first request of a session opens the mailbox key (C6)
            await c.get("/boite/reception")
        top = args.messages
        print(f"mailbox: {args.messages} messages; {args.clients} clients; "
              f"{args.requests} requests per measure")
        print(summary("inbox, first page", await measure(
            clients, args.requests, lambda: "/boite/reception")))
        print(summary("inbox, deep page", await measure(
            clients, args.requests,
            lambda: f"/boite/reception?avant={random.randint(2, top)}")))
        print(summary("message view", await measure(
            clients, args.requests,
            lambda: f"/boite/reception/{random.randint(1, top)}")))
    finally:
        for c in clients:
            await c.aclose()
        await front.stop()
        await core.close()


if __name__ == "__main__":
    asyncio.run(main())
