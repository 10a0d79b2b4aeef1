"""Notifications over real sockets (SPEC §6, issue #6 acceptance).

A local HTTP server (``asyncio.start_server``, minimal HTTP/1.1) stands for the SMS gateway and
the notification relay; a local aiosmtpd server stands for the e-mail relay; the worker sends
to them with its real channels (httpx, aiosmtplib). Every delivered message carries markers in
its subject, body, attachment name and sender specialty; no request may contain one. The clock
is injected: no test waits for a coalescing window or a retry delay.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from pydantic import SecretStr
from sqlalchemy import select

from missive.directory import patients
from missive.identity.ins import compute_key
from missive.notify.models import NotificationDelivery
from missive.notify.worker import NotifyWorker

MARKERS = ("SUBJ-MARKER-7f3a", "BODY-MARKER-91c2", "ATTACH-MARKER-5d0e", "Cardiologue-MARKER")
SMS_SECRET = "sms-shared-secret-for-tests-0123"
RELAY_SECRET = "relay-shared-secret-for-tests-456"
PHONE = "+33612345678"


# --- fixtures and helpers --------------------------------------------------------------------

@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")


@dataclass
class WebhookSink:
    """A receiver as a gateway would write it: it answers the scripted statuses (then 200)
    and keeps the first accepted body of each idempotency key (later ones are duplicates)."""

    statuses: list[int] = field(default_factory=list)
    always: int = 200
    requests: list[Request] = field(default_factory=list)
    accepted: dict[str, list[bytes]] = field(default_factory=dict)
    on_request: Callable[[Request], Awaitable[None]] | None = None
    url: str = ""
    server: asyncio.Server | None = None

    async def start(self) -> WebhookSink:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Request(method, path, headers, body)
            self.requests.append(request)
            if self.on_request is not None:
                await self.on_request(request)
            status = self.statuses.pop(0) if self.statuses else self.always
            if 200 <= status < 300:
                self.accepted.setdefault(request.key, []).append(body)
            writer.write(f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class SmtpSink:
    """aiosmtpd handler keeping every message received."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos),
                              envelope.content))
        return "250 2.0.0 queued"


@pytest.fixture
async def sink() -> Any:
    s = await WebhookSink().start()
    yield s
    await s.close()


@pytest.fixture
async def relay_sink() -> Any:
    s = await WebhookSink().start()
    yield s
    await s.close()


@pytest.fixture
async def smtp_sink() -> Any:
    handler = SmtpSink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTPServer(handler, hostname="relay.test"),
                                      "127.0.0.1", 0)
    handler.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield handler
    server.close()


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(core: Any) -> Clock:
    return Clock(datetime.now(UTC) + timedelta(seconds=30))


def configure(core: Any, **notify: Any) -> None:
    values = {"coalesce_seconds": 60, "quiet_hours": "", "retry_base_seconds": 10,
              "sms_webhook_secret": SecretStr(SMS_SECRET),
              "relay_webhook_secret": SecretStr(RELAY_SECRET), **notify}
    core.settings.notify = core.settings.notify.model_copy(update=values)
    core.settings.webmail = core.settings.webmail.model_copy(
        update={"base_url": "https://messagerie.test.missive.localhost"})


def ins_number(n: int) -> str:
    nir = f"279035121{n:04d}"
    return nir + compute_key(nir)


async def make_patient(core: Any, n: int = 1, *, notify: str = "sms",
                       status: str = "active") -> int:
    async with core.db.write() as s:
        p = await patients.add_patient(
            s, core.store, core.settings, actor="test", ins=ins_number(n),
            oid="1.2.250.1.213.1.4.10", family_name="DUPONT", given_names="Marie",
            birth_date_text="1979-03-05", sex_text="F", birth_place_text="51215",
            phone_text=PHONE, email_text=f"patient{n}@example.org", notify=notify,
            status=status)
        return int(p.mailbox_id)


async def deliver(core: Any, mailbox_id: int, n: int = 0) -> None:
    raw = (
        "From: Dr Marie Curie (Cardiologue-MARKER) <marie.curie@test.missive.localhost>\r\n"
        "To: patient@patient.test.missive.localhost\r\n"
        f"Subject: SUBJ-MARKER-7f3a resultats {n}\r\n"
        f"Message-ID: <m{n}-{time.monotonic_ns()}@test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "BODY-MARKER-91c2 Bonjour, voici vos resultats.\r\n"
        "--b\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="ATTACH-MARKER-5d0e.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    ).encode()
    d = core.store.delivery(sender="marie.curie@test.missive.localhost", source="test")
    d.add_local(mailbox_id)
    await d.commit(raw)


def no_markers(*texts: str | bytes) -> None:
    for text in texts:
        value = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        found = [m for m in MARKERS if m.lower() in value.lower()]
        assert not found, f"content marker(s) {found} leaked into a notification"


def check_signature(request: Request, secret: str) -> None:
    """What the gateway does, written here without the module under test."""
    header = request.headers["x-missive-signature"]
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    assert abs(time.time() - timestamp) < 300
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    wrong = hmac.new(b"not-the-secret", f"{timestamp}.".encode() + request.body,
                     hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(parts["v1"], wrong)


async def notices(core: Any) -> list[NotificationDelivery]:
    async with core.db.read() as s:
        return list((await s.execute(select(NotificationDelivery)
                                     .order_by(NotificationDelivery.id))).scalars())


# --- tests -----------------------------------------------------------------------------------

async def test_sms_webhook_signed_coalesced_and_content_free(
        core: Any, clock: Clock, sink: WebhookSink) -> None:
    configure(core, sms_webhook_url=sink.url)
    mid = await make_patient(core, notify="sms")
    for n in range(5):
        await deliver(core, mid, n)
    worker = NotifyWorker(core, clock=clock)
    try:
        await worker.run_once()
        assert sink.requests == []  # the window is open
        clock.advance(61)
        report = await worker.run_once()
        assert report.sent == 1
    finally:
        await worker.aclose()
    (request,) = sink.requests
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    check_signature(request, SMS_SECRET)
    payload = json.loads(request.body)
    assert set(payload) == {"type", "to", "text", "idempotency_key"}
    assert payload["to"] == PHONE and payload["idempotency_key"] == request.key
    assert "5 nouveaux messages" in payload["text"]
    assert "https://messagerie.test.missive.localhost" in payload["text"]
    no_markers(request.body, json.dumps(request.headers))


async def test_relay_event_is_minimal_and_signed(
        core: Any, clock: Clock, relay_sink: WebhookSink) -> None:
    configure(core, coalesce_seconds=0, relay_webhook_url=relay_sink.url)
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    await deliver(core, mid, 1)
    worker = NotifyWorker(core, clock=clock)
    try:
        assert (await worker.run_once()).sent == 1
    finally:
        await worker.aclose()
    (request,) = relay_sink.requests
    check_signature(request, RELAY_SECRET)
    assert request.headers["x-missive-event"] == "message.delivered"
    payload = json.loads(request.body)
    assert set(payload) == {"event", "mailbox", "count", "time"}
    assert payload["event"] == "message.delivered" and payload["count"] == 2
    assert payload["mailbox"].startswith("mbx_") and str(mid) != payload["mailbox"][4:]
    assert ins_number(1) not in request.body.decode()
    assert datetime.fromisoformat(payload["time"]).tzinfo is not None
    no_markers(request.body)


async def test_email_notice_through_smtp_relay(
        core: Any, clock: Clock, smtp_sink: SmtpSink) -> None:
    configure(core, coalesce_seconds=0, smtp_relay=f"127.0.0.1:{smtp_sink.port}",
              smtp_tls="none", sender="no-reply@test.missive.localhost")
    mid = await make_patient(core, notify="email", status="pending")
    await deliver(core, mid)
    worker = NotifyWorker(core, clock=clock)
    assert (await worker.run_once()).sent == 1
    (mail_from, rcpts, raw) = smtp_sink.messages[0]
    assert mail_from == "no-reply@test.missive.localhost"
    assert rcpts == ["patient1@example.org"]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"] == "no-reply@test.missive.localhost"
    assert msg["To"] == "patient1@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Date"] is not None and msg["Date"].datetime is not None
    (row,) = await notices(core)
    assert msg["Message-ID"] == f"<{row.idempotency_key}@test.missive.localhost>"
    body = msg.get_content()
    assert "activez" in body and "https://messagerie.test.missive.localhost" in body
    assert "activez" in str(msg["Subject"])
    no_markers(raw, body, str(msg["Subject"]))
    assert len(smtp_sink.messages) == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throw-away server certificate for 127.0.0.1 (the relay's), as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay.test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "relay.pem", tmp_path / "relay.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


# aiosmtpd cannot see that the socket itself is TLS (implicit TLS) and warns about AUTH.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_email_over_tls_with_authentication(
        core: Any, clock: Clock, tmp_path: Path, mode: str) -> None:
    """The production modes: the relay's certificate is verified (here against its own
    self-signed certificate, ``smtp_ca_file``) and the worker authenticates after TLS."""
    import ssl

    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert_file, key_file = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"relay-pass")

    handler = SmtpSink()
    loop = asyncio.get_running_loop()
    if mode == "starttls":
        server = await loop.create_server(
            lambda: SMTPServer(handler, hostname="relay.test", tls_context=server_ctx,
                               require_starttls=True, authenticator=authenticator,
                               auth_required=True), "127.0.0.1", 0)
    else:
        server = await loop.create_server(
            lambda: SMTPServer(handler, hostname="relay.test", authenticator=authenticator,
                               auth_required=True, auth_require_tls=False),
            "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        configure(core, coalesce_seconds=0, smtp_relay=f"127.0.0.1:{port}", smtp_tls=mode,
                  smtp_ca_file=cert_file, smtp_username="notifier",
                  smtp_password=SecretStr("relay-pass"))
        mid = await make_patient(core, notify="email")
        await deliver(core, mid)
        assert (await NotifyWorker(core, clock=clock).run_once()).sent == 1
    finally:
        server.close()
    assert logins == [(b"notifier", b"relay-pass")]
    assert len(handler.messages) == 1
    no_markers(handler.messages[0][2])


async def test_email_relay_with_an_unknown_certificate_is_not_used(
        core: Any, clock: Clock, tmp_path: Path) -> None:
    """Without the CA that signed the relay's certificate, nothing is sent (retried later)."""
    import ssl

    cert_file, key_file = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    handler = SmtpSink()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTPServer(handler, hostname="relay.test", tls_context=server_ctx),
        "127.0.0.1", 0)
    try:
        configure(core, coalesce_seconds=0, smtp_tls="starttls",
                  smtp_relay=f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        mid = await make_patient(core, notify="email")
        await deliver(core, mid)
        report = await NotifyWorker(core, clock=clock).run_once()
    finally:
        server.close()
    assert report.retried == 1 and handler.messages == []


async def test_500_then_200_is_retried_and_received_once_per_key(
        core: Any, clock: Clock, sink: WebhookSink) -> None:
    configure(core, coalesce_seconds=0, sms_webhook_url=sink.url)
    sink.statuses = [500, 200]
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    worker = NotifyWorker(core, clock=clock)
    try:
        assert (await worker.run_once()).retried == 1
        (row,) = await notices(core)
        assert row.state == "pending" and "500" in (row.last_error or "")
        clock.now = row.next_attempt_at
        assert (await worker.run_once()).sent == 1
        clock.advance(3600)
        assert (await worker.run_once()).outcomes == {}  # sent means done
    finally:
        await worker.aclose()
    assert len(sink.requests) == 2
    assert {r.key for r in sink.requests} == {row.idempotency_key}
    assert sink.requests[0].body == sink.requests[1].body
    assert {k: len(v) for k, v in sink.accepted.items()} == {row.idempotency_key: 1}


async def run_cli(core: Any, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """``missive --data-dir DIR ARGS…`` (the real entry point, in a thread: it runs its own
    event loop), its JSON output parsed."""
    from missive.cli import main

    toml = ['environment = "test"', f'domain = "{core.settings.domain}"', "test_mode = true"]
    if core.settings.database_url:
        toml.append(f'database_url = "{core.settings.database_url}"')
    core.settings.config_file.write_text("\n".join(toml) + "\n")
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["--data-dir", str(core.settings.data_dir), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


async def test_permanent_failure_is_a_dead_letter_listed_and_retried_by_cli(
        core: Any, clock: Clock, sink: WebhookSink, capsys: pytest.CaptureFixture[str]) -> None:
    configure(core, coalesce_seconds=0, sms_webhook_url=sink.url, max_attempts=3)
    sink.always = 503
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    worker = NotifyWorker(core, clock=clock)
    try:
        for _ in range(3):
            await worker.run_once()
            clock.advance(3600)
        (row,) = await notices(core)
        assert (row.state, row.attempts) == ("dead", 3)
        listed = await run_cli(core, capsys, "admin", "notify", "list", "--state", "dead", "--json")
        assert [n["idempotency_key"] for n in listed["notices"]] == [row.idempotency_key]
        assert listed["notices"][0]["channel"] == "sms"
        assert "503" in listed["notices"][0]["last_error"]
        assert listed["counts"]["deliveries"] == {"dead": 1}
        shown = await run_cli(core, capsys, "admin", "notify", "show", str(row.id), "--json")
        assert shown["state"] == "dead" and shown["attempts"] == 3
        # The gateway is fixed; the operator sends the dead letter again, same key.
        sink.always = 200
        assert (await run_cli(core, capsys, "admin", "notify", "retry", row.idempotency_key,
                              "--json"))["retried"] == 1
        assert (await worker.run_once()).sent == 1
    finally:
        await worker.aclose()
    assert {r.key for r in sink.requests} == {row.idempotency_key}
    assert len(sink.requests) == 4 and len(sink.accepted[row.idempotency_key]) == 1


async def test_quiet_hours_defer_the_sms(core: Any, clock: Clock, sink: WebhookSink) -> None:
    local = clock.now.astimezone(ZoneInfo("Europe/Paris"))
    quiet = f"{(local - timedelta(hours=1)):%H:%M}-{(local + timedelta(hours=1)):%H:%M}"
    configure(core, coalesce_seconds=0, sms_webhook_url=sink.url, quiet_hours=quiet,
              timezone="Europe/Paris")
    mid = await make_patient(core, notify="sms")
    await deliver(core, mid)
    worker = NotifyWorker(core, clock=clock)
    try:
        assert (await worker.run_once()).deferred == 1
        assert sink.requests == []
        clock.advance(2 * 3600)
        assert (await worker.run_once()).sent == 1
    finally:
        await worker.aclose()
    assert len(sink.requests) == 1


async def test_kill_and_restart_mid_batch(core: Any, clock: Clock, sink: WebhookSink) -> None:
    """The worker is killed while requests are in flight (answered or not): after a restart
    every notice arrives, and each under exactly one idempotency key."""
    configure(core, coalesce_seconds=0, sms_webhook_url=sink.url, poll_seconds=0.05)
    boxes = [await make_patient(core, n, notify="sms") for n in range(1, 5)]
    for mid in boxes:
        await deliver(core, mid)
    in_flight = asyncio.Event()
    release = asyncio.Event()

    async def hang_after_first(request: Request) -> None:
        if len(sink.requests) >= 2:
            in_flight.set()
            await release.wait()  # never answered before the kill

    sink.on_request = hang_after_first
    first = NotifyWorker(core, clock=clock)
    first.start()
    await asyncio.wait_for(in_flight.wait(), 30)
    await first.kill()
    release.set()
    sink.on_request = None
    rows = await notices(core)
    expected = {r.idempotency_key for r in rows}
    assert len(expected) == len(boxes)
    before = {r.key for r in sink.requests}
    assert before <= expected
    # A new worker: the dead worker's leases run out, then everything left is sent.
    second = NotifyWorker(core, clock=clock)
    try:
        assert (await second.run_once()).outcomes == {}  # still leased
        clock.advance(second.lease.total_seconds() + 1)
        await second.run_once()
    finally:
        await second.aclose()
    rows = await notices(core)
    assert [r.state for r in rows] == ["sent"] * len(boxes)
    assert {r.key for r in sink.requests} == expected  # no key outside the stored ones
    assert set(sink.accepted) == expected  # every notice received
    by_key: dict[str, set[bytes]] = {}
    for r in sink.requests:
        by_key.setdefault(r.key, set()).add(json.loads(r.body)["to"].encode()
                                             + json.loads(r.body)["text"].encode())
    assert all(len(v) == 1 for v in by_key.values())  # a resend is the same notice
    no_markers(*(r.body for r in sink.requests))


# --- the real process: `missive serve --only notify`, killed with SIGKILL ----------------------

def _env(**notify: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSIVE_")}
    env.update({f"MISSIVE_NOTIFY__{k.upper()}": v for k, v in notify.items()})
    env["MISSIVE_LOG_LEVEL"] = "WARNING"
    return env


async def _missive(data_dir: Path, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "missive", "--data-dir", str(data_dir), *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _until(predicate: Callable[[], bool], what: str, limit: float = 60) -> None:
    """Poll a condition (not a timing assertion: the limit only bounds a broken run)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def _until_async(predicate: Callable[[], Awaitable[bool]], what: str,
                       limit: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_sigkill_of_serve_only_notify_mid_batch(tmp_path: Path, sink: WebhookSink) -> None:
    """``missive serve --only notify`` is killed (SIGKILL) while notices are in flight; a new
    process sends what is left, under the keys stored before the first attempt."""
    from missive.config import load_settings
    from missive.db.engine import Database
    from missive.runtime import build_core

    data_dir = tmp_path / "data"
    env = _env()
    init = await _missive(data_dir, "init", "--test-mode", env=env)
    assert await init.wait() == 0
    core = await build_core(load_settings(data_dir), with_master_key=True)
    try:
        boxes = [await make_patient(core, n, notify="sms") for n in range(1, 4)]
        for mid in boxes:
            await deliver(core, mid)
    finally:
        await core.close()

    release = asyncio.Event()

    async def hang_after_first(request: Request) -> None:
        if len(sink.requests) >= 2:
            await release.wait()

    sink.on_request = hang_after_first
    env = _env(sms_webhook_url=sink.url, sms_webhook_secret=SMS_SECRET, coalesce_seconds="0",
               quiet_hours="", poll_seconds="0.2", timeout_seconds="60", lease_seconds="2")
    first = await _missive(data_dir, "serve", "--only", "notify", env=env)
    try:
        await _until(lambda: len(sink.requests) >= 2, "requests in flight")
    finally:
        first.kill()  # SIGKILL: no cleanup of any kind
        await first.wait()
    release.set()
    sink.on_request = None
    # The gateway may well have accepted the hung requests after the client died; it cannot
    # tell. What matters is that any resend carries the same key.

    second = await _missive(data_dir, "serve", "--only", "notify", env=env)
    db = Database(load_settings(data_dir).sqlalchemy_url)
    try:
        states: list[str] = []

        async def all_sent() -> bool:
            async with db.read() as s:
                states[:] = (await s.execute(select(NotificationDelivery.state))).scalars()
            return states == ["sent"] * len(boxes)

        await _until_async(all_sent, "every notice recorded as sent")
        async with db.read() as s:
            rows = list((await s.execute(select(NotificationDelivery))).scalars())
    finally:
        await db.dispose()
        second.terminate()
        await second.wait()
    expected = {r.idempotency_key for r in rows}
    assert len(expected) == len(boxes) and [r.state for r in rows] == ["sent"] * len(boxes)
    assert {r.key for r in sink.requests} == expected  # never a key that was not stored
    assert set(sink.accepted) == expected
    assert len(sink.requests) > len(expected)  # the hung notices were indeed sent again
    bodies: dict[str, set[str]] = {}
    for request in sink.requests:
        check_signature(request, SMS_SECRET)
        bodies.setdefault(request.key, set()).add(json.loads(request.body)["text"])
    assert all(len(texts) == 1 for texts in bodies.values())
    no_markers(*(r.body for r in sink.requests))
