"""SMTP benchmark: Missive's submission pipeline beside a bare aiosmtpd sink and Postfix.

Run: ``.venv/bin/python bench/smtp.py [--messages 2000] [--size 10240] [--sessions 10]
[--no-postfix] [--database-url URL]``. Prints, for each server, messages/s and the CPU time
per message of the server and of the client, then the ratios.

Workloads, each in the same run on 127.0.0.1, servers and clients in their own processes:

1. **Missive**: ``missive serve --only smtp`` (no master key, C2) on a fresh data directory
   (``missive init``, SQLite unless ``--database-url``); ``--sessions`` concurrent client
   sessions, each authenticated with AUTH PLAIN over implicit TLS as a professional, send
   ``--messages`` messages of ``--size`` bytes in total to patient mailboxes. Every message goes
   through the full pipeline: P1–P12 checks, directory lookups, MIME parsing, HPKE sealing,
   one durable database transaction with audit entries and notification outbox, then 250.
2. **aiosmtpd sink**: a bare aiosmtpd server with the same TLS and AUTH, whose handler writes
   each message to a file and fsyncs it before answering 250; same client.
3. **Postfix** (Debian's, when ``/usr/sbin/postfix`` and ``smtp-source`` exist): a private
   instance (own configuration and queue in a temporary directory, ``smtpd`` on a free port,
   mail discarded after queueing) driven by its own ``smtp-source`` with ``--sessions``
   parallel sessions, plain SMTP (smtp-source has neither TLS nor AUTH, nor PIPELINING; without
   ``-d`` it opens a new connection for every message). Postfix answers 250 once the queue
   file is fsynced, which is the same guarantee as Missive's commit.

The client of Missive and of the sink is one and the same, and lean, as ``smtp-source`` is
for Postfix: a separate process (``--client``; its CPU neither competes with the measured
server's GIL nor is charged to it), messages built and dot-stuffed before the clock starts,
raw ESMTP over one asyncio TLS stream per session, ``MAIL``/``RCPT``/``DATA`` sent in one
write (PIPELINING, RFC 2920; the sink is told to advertise it, aiosmtpd reads pipelined
commands in order anyway), the data after ``354``. Both servers see the same bytes, so the
comparison between them is fair; an earlier version used aiosmtplib in the bench process,
which cost about as much CPU as a server and took it from the servers on a 2-core host.

The target is Missive ≥ 1.0× Postfix. Throughput is wall-clock messages/s from the first
connection to the last 250. Server CPU is user + system time of the server process (Missive,
the sink) or of Postfix's master and all its daemons; the host being shared, compare ratios
within one run and run more than once.

Figures (2 cores shared with other jobs, load average 4–8; three runs each, November 2026;
details and what was changed in docs/smtp.md, "Performance"):

==================  ======================  =======================
server              msg/s                   server CPU per message
==================  ======================  =======================
Missive             146 / 201 / 235         3.8–4.7 ms (was 6.2–7.5)
aiosmtpd sink       380–493                 1.7–2.3 ms
Postfix 3.7         350–455                 1.8–2.1 ms
==================  ======================  =======================

Missive/Postfix 0.42–0.61× (0.27–0.45× for the server before that work, same client): the
≥ 1.0× target is not reached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
#
# The load generator runs in its own process (``--client``), so that its CPU time is neither
# charged to nor competing with the GIL of whichever server is measured, and it is the same
# client for Missive and the sink. It is deliberately lean, as ``smtp-source`` is for Postfix:
# messages are built (and dot-stuffed) before the clock starts, each session speaks raw ESMTP
# over one asyncio TLS stream, and sends ``MAIL``, ``RCPT`` and ``DATA`` in one write
# (PIPELINING, RFC 2920: DATA may end a command group), then the data once ``354`` came.


def stuffed(data: bytes) -> bytes:
    """``data`` as sent after DATA: dot-stuffed (RFC 5321 §4.5.2), ending with CRLF.CRLF."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One (possibly multi-line) SMTP reply; returns its last line."""
    while True:
        line = await reader.readuntil(b"\r\n")
        if line[3:4] != b"-":
            return line


async def _expect(reader: asyncio.StreamReader, code: bytes, what: str) -> None:
    line = await _reply(reader)
    if not line.startswith(code):
        raise RuntimeError(f"{what}: {line!r}")


async def _client_session(port: int, ctx: ssl.SSLContext, login: str, auth: bool,
                          jobs: list[tuple[bytes, bytes]]) -> int:
    import base64

    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   limit=1 << 20)
    try:
        await _expect(reader, b"220", "greeting")
        writer.write(b"EHLO client.bench.test\r\n")
        await _expect(reader, b"250", "EHLO")
        if auth:
            token = base64.b64encode(f"\0{login}\0{PASSWORD}".encode()).decode()
            writer.write(f"AUTH PLAIN {token}\r\n".encode())
            await _expect(reader, b"235", "AUTH")
        sent = 0
        for envelope, data in jobs:
            writer.write(envelope)
            await _expect(reader, b"250", "MAIL")
            await _expect(reader, b"250", "RCPT")
            await _expect(reader, b"354", "DATA")
            writer.write(data)
            await _expect(reader, b"250", "end of data")
            sent += 1
        writer.write(b"QUIT\r\n")
        await _reply(reader)
        return sent
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def run_client(spec_path: str) -> None:
    """The client process (``--client SPEC.json``): prints ``{"rate": …, "cpu": …}``."""
    spec = json.loads(Path(spec_path).read_text())
    sessions, total, size = spec["sessions"], spec["messages"], spec["size"]
    logins, rcpts = spec["logins"], spec["rcpts"]
    per = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    work: list[list[tuple[bytes, bytes]]] = []
    for k in range(sessions):
        sender = logins[k % len(logins)]
        jobs = []
        for n in range(per[k]):
            rcpt = rcpts[(k + n) % len(rcpts)]
            envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()
            jobs.append((envelope, stuffed(message(k * 100000 + n, sender, rcpt, size))))
        work.append(jobs)
    ctx = ssl.create_default_context(cafile=spec["cafile"])
    ctx.check_hostname = False

    async def main() -> tuple[float, int]:
        start = time.perf_counter()
        counts = await asyncio.gather(*(
            _client_session(spec["port"], ctx, logins[k % len(logins)], spec["auth"], work[k])
            for k in range(sessions)))
        return time.perf_counter() - start, sum(counts)

    cpu = time.process_time()
    elapsed, sent = asyncio.run(main())
    cpu = time.process_time() - cpu
    print(json.dumps({"rate": sent / elapsed, "sent": sent, "cpu": cpu}), flush=True)


async def drive(port: int, cafile: Path, sessions: int, total: int, size: int,
                logins: list[str], rcpts: list[str], auth: bool = True) -> tuple[float, float]:
    """Send ``total`` messages over ``sessions`` sessions with the client process; returns
    (messages/s, client CPU seconds)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"port": port, "cafile": str(cafile), "sessions": sessions,
                   "messages": total, "size": size, "logins": logins, "rcpts": rcpts,
                   "auth": auth}, fh)
    try:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, __file__, "--client", fh.name],
            capture_output=True, text=True, check=False)
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise SystemExit(f"client failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["sent"] != total:
        raise SystemExit(f"only {result['sent']} of {total} messages were accepted")
    return float(result["rate"]), float(result["cpu"])


# --- Missive --------------------------------------------------------------------------------

def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MISSIVE_DATA_DIR", None)
    env.update({"MISSIVE_ENVIRONMENT": "test", "MISSIVE_MTA__SUBMISSION_PORT": "0",
                "MISSIVE_MTA__SUBMISSION_TLS_PORT": "0", "MISSIVE_MTA__MX_PORT": "0",
                # Limits far above the load, not off: their bookkeeping is part of the cost
                # (and of the events the SMTP workers exchange).
                "MISSIVE_MTA__RATE_PER_SENDER": "100000000",
                "MISSIVE_MTA__RATE_PER_ADDRESS": "100000000",
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


def _children_cpu() -> float:
    """User + system CPU time of this process's reaped children (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Figures:
    """One server's run: wall-clock rate and the CPU seconds of server and client."""

    rate: float
    server_cpu: float
    client_cpu: float
    messages: int

    def line(self, name: str, what: str) -> str:
        return (f"{name:<11} {self.rate:8.1f} messages/s  server CPU "
                f"{self.server_cpu * 1000 / self.messages:5.2f} ms/msg, client CPU "
                f"{self.client_cpu * 1000 / self.messages:5.2f} ms/msg  ({what})")


def _missive(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "missive", "--data-dir", str(data), *args]


def _start_missive(data: Path, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    command = _missive(data, "serve", "--only", "smtp", "--log-level", "WARNING")
    if os.environ.get("BENCH_PROFILE"):
        command[1:1] = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]]
    proc = subprocess.Popen(command, env=_env(extra), stdout=subprocess.DEVNULL)
    ports = data / "run" / "ports.json"
    for _ in range(1200):
        if ports.exists():
            break
        time.sleep(0.05)
    return proc, int(json.loads(ports.read_text())["smtp_submission_tls"])


def _tree_cpu(pid: int) -> float:
    """:func:`_cpu_seconds` of ``pid`` and of its descendants (the SMTP worker processes)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    tree, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.extend(children)
        todo.extend(children)
    return sum(_cpu_seconds(p) for p in tree)


async def bench_missive(args: argparse.Namespace, tmp: Path, processes: int) -> Figures:
    data = tmp / f"missive-{processes}"
    extra = {"MISSIVE_MTA__PROCESSES": str(processes)}
    if args.database_url:
        extra["MISSIVE_DATABASE_URL"] = args.database_url
    await asyncio.to_thread(
        subprocess.run, _missive(data, "init", "--domain", DOMAIN, "--test-mode"),
        env=_env(extra), check=True, capture_output=True)
    logins, rcpts = await _populate(data, args.database_url, args.sessions)
    proc, port = await asyncio.to_thread(_start_missive, data, extra)
    try:
        before = _tree_cpu(proc.pid)
        rate, client = await drive(port, data / "certs" / "ca" / "ca.pem", args.sessions,
                                   args.messages, args.size, logins, rcpts)
        return Figures(rate, _tree_cpu(proc.pid) - before, client, args.messages)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)


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

        async def handle_EHLO(self, server: object, session: object, envelope: object,
                              hostname: str, responses: list[str]) -> list[str]:
            # aiosmtpd reads pipelined commands in order but does not advertise PIPELINING
            # (RFC 2920), which the bench client uses.
            session.host_name = hostname  # type: ignore[attr-defined]
            *rest, last = responses
            return [*rest, "250-PIPELINING", "250 " + last[4:]]

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


async def bench_sink(args: argparse.Namespace, tmp: Path) -> Figures:
    data = tmp / "missive-1"  # its certificates (the first Missive run made them)
    out = tmp / "sink"
    out.mkdir()
    port = free_port()
    proc = await asyncio.to_thread(_start_sink, port, out, data / "certs" / "server" / "cert.pem",
                                   data / "certs" / "server" / "key.pem")
    try:
        before = _cpu_seconds(proc.pid)
        rate, client = await drive(port, data / "certs" / "ca" / "ca.pem", args.sessions,
                                   args.messages, args.size, ["a@sink.test"], ["b@sink.test"])
        return Figures(rate, _cpu_seconds(proc.pid) - before, client, args.messages)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)


# --- Postfix ---------------------------------------------------------------------------------

def bench_postfix(args: argparse.Namespace, tmp: Path) -> Figures | None:
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
    master_cf = Path("/etc/postfix/master.cf").read_text().splitlines()
    lines = []
    for line in master_cf:
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
    # Postfix's CPU: the master and its daemons (smtpd, cleanup, qmgr…) once all are reaped.
    children_before = _children_cpu()
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
        source_before = _children_cpu()
        done = subprocess.run([source, "-s", str(args.sessions), "-m", str(args.messages),
                               "-l", str(args.size), "-f", "a@bench.test", "-t", "b@bench.test",
                               f"127.0.0.1:{port}"], check=False, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        client = _children_cpu() - source_before
        if done.returncode != 0:
            log = tmp / "postfix.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            print(f"postfix     failed: {done.stderr.strip()[:500]}\n{tail}")
            return None
    finally:
        subprocess.run([postfix, "-c", str(conf), "stop"], env=env, check=False,
                       capture_output=True)
        try:
            master.wait(20)
        except subprocess.TimeoutExpired:
            master.kill()
        log_file.close()
    server = _children_cpu() - children_before - client
    return Figures(args.messages / elapsed, server, client, args.messages)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="mta.processes of the second Missive run (default: one per core; "
                        "the first run always has one process)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="missive-bench-smtp-") as name:
        tmp = Path(name)
        runs: list[tuple[int, Figures]] = []
        for processes in sorted({1, max(1, args.processes)}):
            if args.database_url and runs:
                # One database for both runs: the second would find the first's rows.
                print("missive     second run skipped: --database-url is used by the first")
                break
            figures = await bench_missive(args, tmp, processes)
            runs.append((processes, figures))
            print(figures.line(f"missive/{processes}",
                               f"full pipeline, TLS + AUTH, mta.processes={processes}, "
                               f"{args.messages} x {args.size} B, {args.sessions} sessions"),
                  flush=True)
        sink = await bench_sink(args, tmp)
        print(sink.line("aiosmtpd", "bare sink, TLS + AUTH, fsync each"), flush=True)
        postfix = None if args.no_postfix else await asyncio.to_thread(bench_postfix, args, tmp)
        if postfix is not None:
            print(postfix.line("postfix", "smtp-source, plain SMTP, queue fsync, discard"),
                  flush=True)
        for processes, missive in runs:
            print(f"ratio missive/{processes} / aiosmtpd-sink: {missive.rate / sink.rate:.2f}x")
            if postfix is not None:
                print(f"ratio missive/{processes} / postfix:       "
                      f"{missive.rate / postfix.rate:.2f}x (target >= 1.0x)")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--sink":
        run_sink(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "--client":
        run_client(sys.argv[2])
    else:
        asyncio.run(main())
