"""P11 durability: ``missive serve --only smtp`` is killed with SIGKILL at random moments while
a client submits messages, and restarted; every message the client saw ``250`` for is in the
recipient's mailbox afterwards (duplicates tolerated, losses not). With ``mta.processes=2`` the
SIGKILL hits the SMTP worker processes, which do the deliveries, and the main process at once.

The server runs as a real subprocess on a data directory made by ``missive init``; the front
holds no master key (C2). The mailbox is read back with the master key at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import random
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from smtp_harness import PASSWORD, ins_number, make_settings_for, message, rpps_number

from missive.certs.files import CertsLayout
from missive.directory.patients import add_patient
from missive.directory.professionals import add_professional
from missive.directory.recipients import resolve_recipient
from missive.runtime import build_core

DOMAIN = "test.missive.localhost"
MESSAGES = 40
KILLS = 3


def _env(processes: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MISSIVE_MTA__PROCESSES": str(processes),
        "MISSIVE_ENVIRONMENT": "test",
        "MISSIVE_MTA__SUBMISSION_PORT": "0",
        "MISSIVE_MTA__SUBMISSION_TLS_PORT": "0",
        "MISSIVE_MTA__MX_PORT": "0",
        "MISSIVE_MTA__RATE_PER_SENDER": "0",
        "MISSIVE_MTA__RATE_PER_ADDRESS": "0",
    })
    env.pop("MISSIVE_DATA_DIR", None)
    return env


def _missive(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "missive", "--data-dir", str(data), *args]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


class Server:
    def __init__(self, data: Path, processes: int) -> None:
        self.data = data
        self.processes = processes
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(_missive(self.data, "serve", "--only", "smtp",
                                              "--log-level", "WARNING"),
                                     env=_env(self.processes), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        ports = self.data / "run" / "ports.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "missive serve exited"
            try:
                info = json.loads(ports.read_text())
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == self.proc.pid:
                self.port = int(info["smtp_submission_tls"])
                return
            time.sleep(0.05)
        raise AssertionError("missive serve did not write run/ports.json")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            workers = _children(self.proc.pid)
            if self.processes > 1:
                assert len(workers) == self.processes, workers
            for pid in [*workers, self.proc.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(10)


def _submit_until_killed(server: Server, ctx: ssl.SSLContext, pro: str, rcpt: str,
                         pending: list[str], acked: list[str], stop_at: float) -> None:
    """Send messages until the server dies or ``stop_at``; records Message-IDs acked 250."""
    try:
        client = smtplib.SMTP_SSL("127.0.0.1", server.port, context=ctx, timeout=10)
        client.login(pro, PASSWORD)
        while pending and time.monotonic() < stop_at:
            mid = pending[0]
            client.mail(pro)
            client.rcpt(rcpt)
            code, _ = client.data(message(pro, rcpt, message_id=mid))
            if code == 250:
                acked.append(mid)
                pending.pop(0)
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass  # killed mid-dialogue: the message is re-sent after the restart


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
async def test_acknowledged_messages_survive_sigkill(tmp_path: Path, processes: int) -> None:
    data = tmp_path / "data"
    init = subprocess.run(_missive(data, "init", "--domain", DOMAIN, "--test-mode"),
                          env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert init.returncode == 0, init.stderr
    settings = make_settings_for(data, domain=DOMAIN)
    admin = await build_core(settings, with_master_key=True)
    pro = f"marie.curie@{DOMAIN}"
    rcpt = f"{ins_number(7)}@{settings.patient_domain}"
    async with admin.db.write() as s:
        await add_professional(s, admin.store, settings, actor="test", password=PASSWORD,
                               rpps=rpps_number(1), name="Marie Curie", profession="Médecin",
                               address=pro)
        await add_patient(s, admin.store, settings, actor="test", ins=ins_number(7),
                          oid="1.2.250.1.213.1.4.10", family_name="DUPONT", given_names="Marie",
                          birth_date_text="1979-03-05", sex_text="F", birth_place_text="51215",
                          status="active")
    ctx = ssl.create_default_context(cafile=str(CertsLayout.of(settings).ca_cert))
    ctx.check_hostname = False
    pending = [email.utils.make_msgid(domain="durability.test") for _ in range(MESSAGES)]
    acked: list[str] = []
    server = Server(data, processes)
    rng = random.Random(4)  # reproducible kill moments

    def run() -> None:
        for cycle in range(KILLS + 1):
            server.start()
            last = cycle == KILLS
            stop_at = time.monotonic() + (60 if last else rng.uniform(0.3, 1.2))
            if last:
                _submit_until_killed(server, ctx, pro, rcpt, pending, acked, stop_at)
            else:
                import threading

                worker = threading.Thread(target=_submit_until_killed, args=(
                    server, ctx, pro, rcpt, pending, acked, stop_at + 30))
                worker.start()
                time.sleep(max(0.0, stop_at - time.monotonic()))
                server.kill()
                worker.join(30)
        server.kill()

    try:
        await asyncio.to_thread(run)
        assert not pending, f"{len(pending)} messages never acknowledged"
        async with admin.db.read() as s:
            info = await resolve_recipient(s, rcpt, settings)
        assert info.mailbox_id is not None
        box = await admin.store.open(info.mailbox_id)
        stored = set()
        for m in await box.messages("INBOX"):
            raw = await box.fetch("INBOX", m.uid)
            for line in raw.split(b"\r\n"):
                if line.lower().startswith(b"message-id:"):
                    stored.add(line.split(b":", 1)[1].strip().decode())
        missing = [mid for mid in acked if mid not in stored]
        assert not missing, f"acknowledged but lost: {missing}"
        assert len(acked) == MESSAGES
    finally:
        server.kill()
        await admin.close()
