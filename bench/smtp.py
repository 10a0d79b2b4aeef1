"""SMTP benchmark: Missive's submission pipeline beside a bare aiosmtpd sink and Postfix.

Run: ``.venv/bin/python bench/smtp.py [--messages 2000] [--size 10240] [--sessions 10]
[--no-postfix] [--database-url URL]``. Prints messages/s for each server and the ratios.

Workloads, each in the same run on 127.0.0.1, servers in their own processes:

1. **Missive**: ``missive serve --only smtp`` (no master key, C2) on a fresh data directory
   (``missive init``, SQLite unless ``--database-url``); ``--sessions`` concurrent aiosmtplib
   clients, each authenticated with AUTH PLAIN over implicit TLS as a professional, send
   ``--messages`` messages of ``--size`` bytes in total to patient mailboxes. Every message goes
   through the full pipeline: P1–P12 checks, directory lookups, MIME parsing, HPKE sealing,
   one durable database transaction with audit entries and notification outbox, then 250.
2. **aiosmtpd sink**: a bare aiosmtpd server with the same TLS and AUTH, whose handler writes
   each message to a file and fsyncs it before answering 250; same client.
3. **Postfix** (Debian's, when ``/usr/sbin/postfix`` and ``smtp-source`` exist): a private
   instance (own configuration and queue in a temporary directory, ``smtpd`` on a free port,
   mail discarded after queueing) driven by its own ``smtp-source`` with ``--sessions``
   parallel sessions, plain SMTP (smtp-source has neither TLS nor AUTH). Postfix answers 250
   once the queue file is fsynced, which is the same guarantee as Missive's commit.

The target is Missive ≥ 1.0× Postfix. Throughput is wall-clock messages/s from the first
connection to the last 250.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOMAIN = "bench.missive.localhost"
PASSWORD = "bench-password-123"


def message(i: int, sender: str, rcpt: str, size: int) -> bytes:
    head = (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: Bench {i}\r\n"
            f"Message-ID: <bench{i}.{os.getpid()}@bench.test>\r\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n")
    line = "Compte rendu de consultation, résultats normaux, à revoir dans six mois.\r\n"
    body = line * max(1, (size - len(head)) // len(line.encode()))
    return (head + body).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- client ---------------------------------------------------------------------------------

async def drive(port: int, ctx: ssl.SSLContext, sessions: int, total: int, size: int,
                logins: list[str], rcpts: list[str], auth: bool = True) -> float:
    """Send ``total`` messages over ``sessions`` sessions; returns messages/s."""
    import aiosmtplib

    per = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    bodies = [message(i, logins[0], rcpts[0], size) for i in range(16)]

    async def one(k: int) -> int:
        sender = logins[k % len(logins)]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, use_tls=True,
                                   tls_context=ctx, timeout=60) as client:
            if auth:
                await client.login(sender, PASSWORD)
            sent = 0
            for n in range(per[k]):
                rcpt = rcpts[(k + n) % len(rcpts)]
                data = bodies[n % len(bodies)].replace(logins[0].encode(), sender.encode(), 1)
                data = data.replace(rcpts[0].encode(), rcpt.encode(), 1)
                errors, _ = await client.sendmail(sender, [rcpt], data)
                if not errors:
                    sent += 1
            return sent

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(k) for k in range(sessions)))
    elapsed = time.perf_counter() - start
    if sum(counts) != total:
        raise SystemExit(f"only {sum(counts)} of {total} messages were accepted")
    return total / elapsed


# --- Missive --------------------------------------------------------------------------------

def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MISSIVE_DATA_DIR", None)
    env.update({"MISSIVE_ENVIRONMENT": "test", "MISSIVE_MTA__SUBMISSION_PORT": "0",
                "MISSIVE_MTA__SUBMISSION_TLS_PORT": "0", "MISSIVE_MTA__MX_PORT": "0",
                "MISSIVE_MTA__RATE_PER_SENDER": "0", "MISSIVE_MTA__RATE_PER_ADDRESS": "0",
                "MISSIVE_MTA__MAX_CONNECTIONS_PER_ADDRESS": "1000"})
    env.update(extra)
    return env


async def _populate(data: Path, database_url: str, sessions: int) -> tuple[list[str], list[str]]:
    from missive.config import load_settings
    from missive.directory.patients import add_patient
    from missive.directory.professionals import add_professional
    from missive.identity.ins import compute_key
    from missive.identity.rpps import luhn_check_digit
    from missive.runtime import build_core

    extra = {"database_url": database_url} if database_url else {}
    settings = load_settings(data, environment="test", domain=DOMAIN, test_mode=True, **extra)
    core = await build_core(settings, with_master_key=True)
    logins, rcpts = [], []
    try:
        async with core.db.write() as s:
            for i in range(sessions):
                payload = f"1{i + 1:09d}"
                address = f"pro{i}@{DOMAIN}"
                await add_professional(s, core.store, settings, actor="bench", password=PASSWORD,
                                       rpps=payload + luhn_check_digit(payload),
                                       name=f"Pro {i}", profession="Médecin", address=address)
                logins.append(address)
            for i in range(20):
                nir = f"27903512{15:02d}{i + 1:03d}"
                ins = nir + compute_key(nir)
                await add_patient(s, core.store, settings, actor="bench", ins=ins,
                                  oid="1.2.250.1.213.1.4.10", family_name="DUPONT",
                                  given_names="Marie", birth_date_text="1979-03-05",
                                  sex_text="F", birth_place_text="51215", status="active")
                rcpts.append(f"{ins}@{settings.patient_domain}")
    finally:
        await core.close()
    return logins, rcpts


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _missive(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "missive", "--data-dir", str(data), *args]


def _start_missive(data: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    command = _missive(data, "serve", "--only", "smtp", "--log-level", "WARNING")
    if os.environ.get("BENCH_PROFILE"):
        command[1:1] = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
    proc = subprocess.Popen(command, env=_env(extra), stdout=subprocess.DEVNULL)
    ports = data / "run" / "ports.json"
    for _ in range(600):
        if ports.exists():
            break
        time.sleep(0.05)
    return proc, int(json.loads(ports.read_text())["smtp_submission_tls"])


async def bench_missive(args: argparse.Namespace, tmp: Path) -> float:
    data = tmp / "missive"
    extra = {"MISSIVE_DATABASE_URL": args.database_url} if args.database_url else {}
    await asyncio.to_thread(
        subprocess.run, _missive(data, "init", "--domain", DOMAIN, "--test-mode"),
        env=_env(extra), check=True, capture_output=True)
    logins, rcpts = await _populate(data, args.database_url, args.sessions)
    proc, port = await asyncio.to_thread(_start_missive, data, extra)
    try:
        ctx = ssl.create_default_context(cafile=str(data / "certs" / "ca" / "ca.pem"))
        ctx.check_hostname = False
        before = _cpu_seconds(proc.pid)
        rate = await drive(port, ctx, args.sessions, args.messages, args.size, logins, rcpts)
        used = _cpu_seconds(proc.pid) - before
        print(f"missive     server CPU {used * 1000 / args.messages:.2f} ms per message",
              flush=True)
        return rate
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


# --- bare aiosmtpd sink ----------------------------------------------------------------------

def run_sink(port: int, directory: str, cert: str, key: str) -> None:
    """The sink server (run in its own process with ``--sink``)."""
    from aiosmtpd.smtp import SMTP, AuthResult

    class Handler:
        def __init__(self) -> None:
            self.n = 0

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.n += 1
            path = os.path.join(directory, f"{os.getpid()}-{self.n}.eml")
            content = getattr(envelope, "original_content", b"") or b""

            def write() -> None:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, content)
                    os.fsync(fd)
                finally:
                    os.close(fd)

            await asyncio.to_thread(write)
            return "250 2.0.0 OK"

    def authenticator(*_: object) -> AuthResult:
        return AuthResult(success=True)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def main() -> None:
        handler = Handler()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, authenticator=authenticator, auth_require_tls=False,
                         hostname="sink"),
            "127.0.0.1", port, ssl=ctx)
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())


def _start_sink(port: int, out: Path, cert: Path, key: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, __file__, "--sink", str(port), str(out), str(cert),
                             str(key)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # "ready"
    return proc


async def bench_sink(args: argparse.Namespace, tmp: Path) -> float:
    data = tmp / "missive"
    out = tmp / "sink"
    out.mkdir()
    port = free_port()
    proc = await asyncio.to_thread(_start_sink, port, out, data / "certs" / "server" / "cert.pem",
                                   data / "certs" / "server" / "key.pem")
    try:
        ctx = ssl.create_default_context(cafile=str(data / "certs" / "ca" / "ca.pem"))
        ctx.check_hostname = False
        return await drive(port, ctx, args.sessions, args.messages, args.size,
                           ["a@sink.test"], ["b@sink.test"])
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


# --- Postfix ---------------------------------------------------------------------------------

def bench_postfix(args: argparse.Namespace, tmp: Path) -> float | None:
    postfix = shutil.which("postfix") or "/usr/sbin/postfix"
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not (os.path.exists(postfix) and os.path.exists(source)):
        print("postfix     skipped: /usr/sbin/postfix or smtp-source not installed")
        return None
    if os.geteuid() != 0:
        print("postfix     skipped: a private Postfix instance needs root")
        return None
    conf = tmp / "postfix"
    queue = tmp / "postfix-queue"
    data = tmp / "postfix-data"
    for d in (conf, queue, data):
        d.mkdir()
    port = free_port()
    master = Path("/etc/postfix/master.cf").read_text().splitlines()
    lines = []
    for line in master:
        if line.startswith("smtp ") and " inet " in line:
            line = f"127.0.0.1:{port}      inet  n       -       n       -       -       smtpd"
        lines.append(line)
    (conf / "master.cf").write_text("\n".join(lines) + "\n")
    (conf / "main.cf").write_text("\n".join([
        "compatibility_level = 3.6",
        f"queue_directory = {queue}",
        f"data_directory = {data}",
        "mail_owner = postfix",
        "setgid_group = postdrop",
        "inet_interfaces = 127.0.0.1",
        "inet_protocols = ipv4",
        "myhostname = postfix.bench.test",
        "mydestination = bench.test",
        "mynetworks = 127.0.0.0/8",
        "smtpd_recipient_restrictions = permit_mynetworks, reject",
        "default_transport = discard",
        "local_transport = discard",
        "relay_transport = discard",
        "maillog_file = /dev/stdout",
        "alias_maps =",
        "alias_database =",
        "local_recipient_maps =",
        "smtpd_client_connection_count_limit = 0",
        "smtpd_client_connection_rate_limit = 0",
        "default_process_limit = 100",
        "",
    ]))
    env = dict(os.environ, MAIL_CONFIG=str(conf))
    os.chmod(tmp, 0o755)  # noqa: S103 - the postfix user must reach its data directory
    shutil.chown(data, user="postfix")
    subprocess.run(["/usr/lib/postfix/sbin/post-install", f"config_directory={conf}",
                    f"queue_directory={queue}", f"data_directory={data}",
                    "command_directory=/usr/sbin", "daemon_directory=/usr/lib/postfix/sbin",
                    "mail_owner=postfix", "setgid_group=postdrop", "meta_directory=/etc/postfix",
                    "shlib_directory=/usr/lib/postfix", "create-missing"],
                   env=env, check=False, capture_output=True)
    log_file = open(tmp / "postfix.log", "wb")  # closed in the finally below
    master = subprocess.Popen([postfix, "-c", str(conf), "start-fg"], env=env, stdout=log_file,
                              stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        start = time.perf_counter()
        done = subprocess.run([source, "-s", str(args.sessions), "-m", str(args.messages),
                               "-l", str(args.size), "-f", "a@bench.test", "-t", "b@bench.test",
                               f"127.0.0.1:{port}"], check=False, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            log = tmp / "postfix.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            print(f"postfix     failed: {done.stderr.strip()[:500]}\n{tail}")
            return None
        return args.messages / elapsed
    finally:
        subprocess.run([postfix, "-c", str(conf), "stop"], env=env, check=False,
                       capture_output=True)
        try:
            master.wait(20)
        except subprocess.TimeoutExpired:
            master.kill()
        log_file.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="missive-bench-smtp-") as name:
        tmp = Path(name)
        missive = await bench_missive(args, tmp)
        print(f"missive     {missive:8.1f} messages/s  (full pipeline, TLS + AUTH, "
              f"{args.messages} x {args.size} B, {args.sessions} sessions)", flush=True)
        sink = await bench_sink(args, tmp)
        print(f"aiosmtpd    {sink:8.1f} messages/s  (bare sink, TLS + AUTH, fsync each)",
              flush=True)
        postfix = None if args.no_postfix else await asyncio.to_thread(bench_postfix, args, tmp)
        if postfix is not None:
            print(f"postfix     {postfix:8.1f} messages/s  (smtp-source, plain SMTP, queue "
                  "fsync, discard)", flush=True)
        print(f"ratio missive/aiosmtpd-sink: {missive / sink:.2f}x")
        if postfix is not None:
            print(f"ratio missive/postfix:       {missive / postfix:.2f}x (target >= 1.0x)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        asyncio.run(main())
