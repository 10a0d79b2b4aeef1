"""Webmail benchmark: inbox and message pages on a mailbox of 100,000 messages.

Run: ``.venv/bin/python bench/web.py [--messages 100000] [--clients 10] [--requests 300]
[--data-dir DIR]``. Prints p50/p95/max latencies (ms) of:

- the first inbox page (``GET /boite/reception``),
- a deep inbox page (``GET /boite/reception?avant=<random uid>``),
- a message view (``GET /boite/reception/<random uid>``: decrypts the message, renders it,
  marks it read and appends an audit entry, as a patient's click does),

each with ``--clients`` concurrent HTTP clients (each its own logged-in session, httpx over
real sockets) against the web front started as ``missive serve`` starts it (uvicorn on the
loop, SQLite, default store suite), **in its own process** so that the clients' CPU is not
counted in the server's latencies. Target (issue #7): inbox p95 < 50 ms.

Reference, in the same run: the *framework floor*, a bare FastAPI + uvicorn process answering
the same URLs with the same bytes (a copy of Missive's inbox and message pages taken before
measuring) after one dictionary lookup of the session cookie: what any page of this stack costs
before it reads a database or decrypts anything. The ratio printed is floor p95 / Missive p95
(1.0 would mean Missive's pages cost nothing beyond the HTTP stack).

Filling the mailbox goes through the store's delivery path (sealed per message, group commit)
and takes a few minutes for 100,000 messages; ``--data-dir`` keeps it for re-runs. The first
page views of a fresh mailbox open each shown message's data key with HPKE and fill the key
cache (see ``mailbox.crypto``); the measures start after one warm-up pass. What each measure
exercises: the first page does not change during its measure, so after each session's first
request it is served from that session's rendered-page cache (``webmail.keys``: kept while the
mailbox's modseq is unchanged); deep pages are random among 100,000 messages, so nearly all are
rendered from the store and most of their messages were never opened (one HPKE decapsulation
each); message views are random too, and a first view also writes the Seen flag and the
journal entry.

Figures (2026-11-23, quiet 2-core host): inbox first page p50/p95 33.8/44.3 ms (3.3 ms server
CPU per request; floor 23.1/26.1 ms), deep page 148.8/217.1 ms (15.0 ms), message view
144.3/198.5 ms (14.3 ms). See docs/webmail.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import Response

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
    """The server's one-time-code sender: prints each code for the driving process."""

    codes: list[str] = field(default_factory=list)

    async def send(self, *, channel: str, to: str, code: str, minutes: int) -> None:
        print(f"CODE {code}", flush=True)


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


class Codes:
    """The driving side: codes printed by the server process, read in a thread."""

    def __init__(self, stream: Any) -> None:
        self._codes: list[str] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            if line.startswith("CODE "):
                with self._ready:
                    self._codes.append(line.split()[1])
                    self._ready.notify_all()

    def take(self) -> str:
        with self._ready:
            self._ready.wait_for(lambda: bool(self._codes), timeout=30)
            return self._codes.pop(0)


async def login(client: httpx.AsyncClient, codes: Codes, ins: str) -> None:
    page = await client.get("/connexion")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = await client.post("/connexion", data={"csrf": token, "identifier": ins,
                                              "password": PASSWORD})
    assert r.status_code == 303, r.status_code
    page = await client.get("/connexion/code")
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    code = await asyncio.to_thread(codes.take)
    r = await client.post("/connexion/code", data={"csrf": token, "code": code})
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


async def serve(data_dir: Path, messages: int) -> None:
    """The server process: seed, fill, start the web front, print ``READY``, serve until stdin
    ends."""
    settings = load_settings(data_dir, environment="test", domain="bench.localhost",
                             test_mode=True, webmail={"port": 0, "secure_cookies": False})
    if not settings.master_key_path.exists():
        crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    from missive.db.schema import create_schema

    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
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
    print(f"filling the mailbox to {messages} messages in {data_dir}", file=sys.stderr)
    await fill(core, mailbox_id, sender, messages)

    from missive.webmail.server import start

    core.extras["webmail.otp_sender"] = Otp()
    front = await start(core)
    print("READY " + json.dumps({"port": front.ports["web"], "ins": ins}), flush=True)
    try:
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await front.stop()
        await core.close()


def serve_floor(pages: dict[str, bytes], cookies: set[str]) -> None:
    """The reference process: FastAPI + uvicorn answering with stored pages (see docstring)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    inbox, message = pages["inbox"], pages["message"]

    def answer(request: Request, body: bytes) -> Response:
        if request.cookies.get("missive_session") not in cookies:
            return Response(status_code=403)
        return Response(body, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    @app.get("/boite/reception")
    async def folder(request: Request) -> Response:
        return answer(request, inbox)

    @app.get("/boite/reception/{uid}")
    async def view(request: Request, uid: int) -> Response:
        return answer(request, message)

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", access_log=False)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no "started" event
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        print("READY " + json.dumps({"port": port}), flush=True)
        await asyncio.to_thread(sys.stdin.read)
        server.should_exit = True
        await task

    asyncio.run(run())


def start_process(args: list[str], stdin: bytes | None = None) -> tuple[
        subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    if stdin is not None:
        proc.stdin.write(stdin.decode() + "\n")
        proc.stdin.flush()
    for line in proc.stdout:
        if line.startswith("READY "):
            return proc, json.loads(line[6:])
    raise SystemExit(f"{args[0]} did not start")


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` so far (Linux /proc; 0 elsewhere). Latency
    on a shared 2-core host varies with the load; server CPU per request much less."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_measures(base: str, clients_n: int, requests: int, top: int,
                       login_with: Any, pid: int) -> dict[str, tuple[list[float], float]]:
    """{measure: (latencies, server CPU ms per request)}."""
    clients = [httpx.AsyncClient(base_url=base, timeout=60) for _ in range(clients_n)]
    try:
        for c in clients:
            await login_with(c)
        for c in clients:  # warm: first request of a session opens the mailbox key (C6)
            await c.get("/boite/reception")
        urls = {
            "inbox, first page": lambda: "/boite/reception",
            "inbox, deep page": lambda: f"/boite/reception?avant={random.randint(2, top)}",
            "message view": lambda: f"/boite/reception/{random.randint(1, top)}",
        }
        out: dict[str, tuple[list[float], float]] = {}
        for name, url_for in urls.items():
            before = cpu_seconds(pid)
            samples = await measure(clients, requests, url_for)
            out[name] = (samples, (cpu_seconds(pid) - before) * 1000 / len(samples))
        return out
    finally:
        for c in clients:
            await c.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve, args.messages)
        return
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="missive-bench-web-"))
    proc, info = start_process(["--serve", str(data_dir), "--messages", str(args.messages)])
    codes = Codes(proc.stdout)
    base = f"http://127.0.0.1:{info['port']}"
    top = args.messages
    try:
        async def login_missive(c: httpx.AsyncClient) -> None:
            await login(c, codes, info["ins"])

        # One warm-up pass (fills the key cache of the pages about to be read, as a patient's
        # first visits do), not counted.
        await run_measures(base, args.clients, min(args.requests, 100), top, login_missive,
                           proc.pid)
        ours = await run_measures(base, args.clients, args.requests, top, login_missive,
                                  proc.pid)
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            await login_missive(c)
            pages = {"inbox": (await c.get("/boite/reception")).content,
                     "message": (await c.get(f"/boite/reception/{top // 2}")).content}
    finally:
        stop_process(proc)
    cookies = [f"floor-{i}" for i in range(args.clients)]
    floor_input = json.dumps({"inbox": pages["inbox"].decode(),
                              "message": pages["message"].decode(), "cookies": cookies})
    fproc, finfo = start_process(["--floor"], floor_input.encode())
    try:
        pool = iter(cookies)

        async def login_floor(c: httpx.AsyncClient) -> None:
            c.cookies.set("missive_session", next(pool))

        floor = await run_measures(f"http://127.0.0.1:{finfo['port']}", args.clients,
                                   args.requests, top, login_floor, fproc.pid)
    finally:
        stop_process(fproc)
    print(f"mailbox: {args.messages} messages; {args.clients} clients; "
          f"{args.requests} requests per measure; inbox page {len(pages['inbox'])} bytes")
    for name, (samples, cpu) in ours.items():
        floor_samples, floor_cpu = floor[name]
        print(summary(f"missive {name}", samples) + f"  server CPU {cpu:5.2f} ms/request")
        print(summary(f"floor   {name}", floor_samples)
              + f"  server CPU {floor_cpu:5.2f} ms/request")
        print(f"{'':<28} floor/missive ratios: p95 {_p95(floor_samples) / _p95(samples):.2f}, "
              f"server CPU {floor_cpu / max(cpu, 1e-6):.2f}")


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(len(ordered) * 0.95) - 1)]


if __name__ == "__main__":
    if "--floor" in sys.argv:
        given = json.loads(sys.stdin.readline())
        serve_floor({"inbox": given["inbox"].encode(), "message": given["message"].encode()},
                    set(given["cookies"]))
    else:
        asyncio.run(main())
