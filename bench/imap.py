"""IMAP benchmark: Missive's IMAP front beside Debian's Dovecot, same messages, same client.

Run: ``.venv/bin/python bench/imap.py [--messages 1000] [--bodies 1000] [--seconds 20]
[--clients 10] [--no-dovecot]``; ``--compare`` instead sends the same FETCH and SEARCH commands
to both servers over tricky messages and prints the responses that differ (Debian does not
package Dovecot's imaptest). Prints one line per measure and the Missive/Dovecot ratio
(target ≥ 0.7 while decrypting: every body Missive serves is opened with the mailbox key).

Workloads, both servers over TLS on 127.0.0.1 with Python's imaplib as the client, in this
order, each measure for both servers the same way:

1. log in, SELECT, ``FETCH 1:* (ENVELOPE)`` on ``--messages`` messages, three times:
   *cold*, the first FETCH after the messages were stored (Missive opens each message's data
   key with HPKE, ML-KEM-768 + X25519, then keeps it re-wrapped in the key cache and the
   computed ENVELOPE sealed in ``content.derived``; Dovecot builds its index and cache files);
   *warm*, a new connection after the previous one logged out, over :data:`WARM_RUNS` logins
   (Missive: the sealed items of ``content.derived``, one AES-GCM open per message; Dovecot:
   its cache file);
   *beside*, a new connection while another connection of the same user, which already
   fetched the envelopes, stays logged in (Missive's shared per-mailbox cache, see
   ``missive.imap.cache``; only the new connection's work is counted);
2. ``FETCH n (BODY.PEEK[])`` one message at a time over ``--bodies`` messages of 10 KB (cold:
   one HPKE open per message for Missive);
3. a mixed workload for ``--seconds`` with ``--clients`` concurrent clients (SELECT, FETCH FLAGS
   of the folder, ENVELOPE of a window, BODY.PEEK[] of one message, STORE +/- a flag, SEARCH
   by header, NOOP, chosen at random), counting commands per second; run in two halves that
   alternate between the servers (Missive, Dovecot, Missive, Dovecot), so that a change in the
   shared host's load weighs on both.

Every measure is printed per wall-clock second (``/s``) and per second of the server's CPU
time (``/cpu-s``: Missive's process with its threads; Dovecot's master with its reaped
``imap`` processes). The host is shared: wall-clock rates of one build vary 2–3× between runs,
CPU rates much less (they are read from ``/proc`` in 10 ms ticks, so a short measure such as
*beside* is coarse).

Dovecot runs from a private configuration in a temporary directory (Maildir, static password,
our test certificate); messages are written into its Maildir directly. It is skipped, and said
so, when ``/usr/sbin/dovecot`` is absent. Missive runs in its own process (``--serve``) on
SQLite in a temporary data directory, its messages stored through the store's APPEND path;
like ``missive serve`` it moves its long-lived objects out of the cyclic GC once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import imaplib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

LOGIN, PASSWORD = "bench@bench.missive.localhost", "bench-password"
#: Logins over which *envelopes warm* is measured (summed): CPU time is read in 10 ms ticks.
WARM_RUNS = 5


def make_message(i: int, size: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {i} <sender{i}@example.org>"
    msg["To"] = LOGIN
    msg["Subject"] = f"Bench message {i}"
    msg["Message-ID"] = f"<bench{i}@example.org>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    text = f"Body of bench message {i}.\n"
    if size:
        line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n"
        text += line * max(1, size // len(line))
    msg.set_content(text)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Target:
    name: str
    port: int
    ctx: ssl.SSLContext
    pid: int = 0  # the server's process, for its CPU time (see server_cpu)

    def connect(self) -> imaplib.IMAP4_SSL:
        c = imaplib.IMAP4_SSL("localhost", self.port, ssl_context=self.ctx, timeout=60)
        c.login(LOGIN, PASSWORD)
        return c


def server_cpu(pid: int) -> float:
    """CPU seconds used so far by process ``pid``, its live descendants and its reaped children
    (Dovecot's per-connection ``imap`` processes exit at logout and are reaped by the master).

    The host is shared and noisy: commands per second vary by 2-3x from run to run, CPU per
    command much less, so both are printed. Linux ``/proc`` only; 0 elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
        todo = [pid]
        while todo:
            p = todo.pop()
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                # utime, stime, cutime, cstime (proc(5) fields 14-17)
                total += sum(int(v) for v in fields[11:15]) / tick
            todo.extend(children.get(p, []))
    except OSError:
        return 0.0
    return total


# --- servers -----------------------------------------------------------------------------------


class _Auth:
    def __init__(self, mailbox_id: int) -> None:
        self.mailbox_id = mailbox_id

    async def password(self, login: str, password: str) -> Any:
        from missive.imap.auth import Principal

        return Principal(login, self.mailbox_id) if password == PASSWORD else None

    async def certificate(self, cert: Any, authzid: str | None) -> Any:
        return None


@contextlib.asynccontextmanager
async def missive(tmp: Path, messages: list[bytes], bodies: list[bytes]) -> AsyncIterator[
        tuple[Target, Any]]:
    from missive.certs import ca
    from missive.certs.files import CertsLayout
    from missive.certs.tls import server_context
    from missive.db.schema import create_schema
    from missive.imap.server import start
    from missive.mailbox import crypto
    from missive.runtime import build_core

    settings = _settings(tmp)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    ca.init_ca(settings)
    ca.issue_server(settings, ["localhost"], ["127.0.0.1"])
    core = await build_core(settings, with_master_key=True)
    await create_schema(core.db)
    async with core.db.write() as s:
        mailbox_id = await core.store.create_mailbox(s, kind="professional")
    mbox = await core.store.open(mailbox_id)
    await mbox.create_folder("Bodies")
    t = time.perf_counter()
    for raw in messages:
        await mbox.append("INBOX", raw)
    for raw in bodies:
        await mbox.append("Bodies", raw)
    print(f"  missive: stored {len(messages) + len(bodies)} messages in "
          f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    front = await start(core, authenticator=_Auth(mailbox_id),
                        ssl_context=server_context(settings))
    ctx = ssl.create_default_context(cafile=str(CertsLayout.of(settings).ca_cert))
    try:
        yield Target("missive", front.ports["imaps"], ctx), settings
    finally:
        await front.stop()
        await core.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dovecot(tmp: Path, settings: Any, messages: list[bytes], bodies: list[bytes]) -> Any:
    from missive.certs.ca import active_server_files
    from missive.certs.files import CertsLayout

    base = tmp / "dovecot"
    home = base / "mail" / "bench"
    for folder, raws in (("", messages), (".Bodies", bodies)):
        d = home / "Maildir" / folder if folder else home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for i, raw in enumerate(raws):
            (d / "cur" / f"{1700000000 + i}.M{i}P1.bench:2,").write_bytes(raw)
    cert, key = active_server_files(settings)
    port = _free_port()
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # dovecot refuses to serve mail as root: hand the Maildir to its own user
        import pwd

        entry = pwd.getpwnam("dovecot")
        uid, gid = entry.pw_uid, entry.pw_gid
        for path in (tmp, base, base / "mail"):
            path.chmod(0o755)
        for root, dirs, files in os.walk(base / "mail"):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), uid, gid)
        os.chown(base / "mail", uid, gid)
    conf = base / "dovecot.conf"
    conf.write_text(f"""
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
first_valid_uid = 0
mail_location = maildir:~/Maildir
mail_uid = {uid}
mail_gid = {gid}
auth_mechanisms = plain
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
""")
    proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ctx = ssl.create_default_context(cafile=str(CertsLayout.of(settings).ca_cert))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"dovecot did not start: {err[-2000:]}")
            time.sleep(0.1)
        yield Target("dovecot", port, ctx, proc.pid)
    except Exception:
        log = base / "dovecot.log"
        if log.exists():
            print("dovecot log:\n" + log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()


# --- workloads ---------------------------------------------------------------------------------


def measured(t: Target, run: Callable[[], object]) -> tuple[float, float]:
    """(wall-clock seconds, server CPU seconds) of ``run()``. The CPU is read a moment after:
    Dovecot's per-connection processes are counted once its master has reaped them."""
    before = server_cpu(t.pid)
    start = time.perf_counter()
    result = run()
    elapsed = result if isinstance(result, float) else time.perf_counter() - start
    time.sleep(0.3)
    return elapsed, max(server_cpu(t.pid) - before, 1e-3)


def _count_mixed(counted: list[int], t: Target, clients: int, seconds: float,
                 total: int) -> None:
    counted.append(mixed(t, clients, seconds, total)[1])


def envelopes(t: Target) -> float:
    start = time.perf_counter()
    c = t.connect()
    c.select("INBOX")
    typ, data = c.fetch("1:*", "(ENVELOPE)")
    assert typ == "OK" and data, data
    elapsed = time.perf_counter() - start
    c.logout()
    return elapsed


def bodies(t: Target, count: int) -> float:
    c = t.connect()
    c.select("Bodies", readonly=True)
    start = time.perf_counter()
    for n in range(1, count + 1):
        typ, data = c.fetch(str(n), "(BODY.PEEK[])")
        assert typ == "OK" and isinstance(data[0], tuple), data
    elapsed = time.perf_counter() - start
    c.logout()
    return elapsed


def mixed(t: Target, clients: int, seconds: float, total: int) -> tuple[float, int]:
    counts = [0] * clients
    stop = time.perf_counter() + seconds
    errors: list[str] = []

    def worker(k: int) -> None:
        rnd = random.Random(k)
        try:
            c = t.connect()
            c.select("INBOX")
            ops: list[Callable[[], Any]] = [
                lambda: c.fetch("1:*", "(FLAGS)"),
                lambda: c.fetch(f"{rnd.randint(1, max(1, total - 20))}:*", "(ENVELOPE)"),
                lambda: c.fetch(str(rnd.randint(1, total)), "(BODY.PEEK[])"),
                lambda: c.store(str(rnd.randint(1, total)), "+FLAGS", "(\\Flagged)"),
                lambda: c.store(str(rnd.randint(1, total)), "-FLAGS", "(\\Flagged)"),
                lambda: c.search(None, "HEADER", "Message-ID", f"bench{rnd.randint(0, total)}"),
                lambda: c.noop(),
            ]
            while time.perf_counter() < stop:
                typ, _ = rnd.choice(ops)()
                if typ != "OK":
                    errors.append(typ)
                counts[k] += 1
            c.logout()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        print(f"  {t.name}: {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    return sum(counts) / seconds, sum(counts)


# --- compliance: the same commands against both servers (Debian packages no imaptest) ---------

M1 = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
      b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
      b"Subject: afternoon meeting\r\n"
      b"To: mooch@owatagu.siam.edu.example\r\n"
      b"Cc: Undisclosed recipients:;\r\n"
      b"Reply-To: \"Fred (work)\" <fred@work.example>, ops@x.example\r\n"
      b"In-Reply-To: <a@b>\r\n"
      b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
      b"MIME-Version: 1.0\r\n"
      b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
      b"\r\n"
      b"This is a multi-part message in MIME format.\r\n"
      b"--outer\r\n"
      b"Content-Type: multipart/alternative; boundary=alt\r\n"
      b"\r\n"
      b"--alt\r\n"
      b"Content-Type: text/plain; charset=utf-8\r\n"
      b"Content-Transfer-Encoding: quoted-printable\r\n"
      b"\r\n"
      b"Caf=C3=A9 at 3:30?\r\n"
      b"Second line\r\n"
      b"--alt\r\n"
      b"Content-Type: text/html; charset=\"utf-8\"\r\n"
      b"Content-ID: <html1@x>\r\n"
      b"Content-Description: HTML version\r\n"
      b"Content-Language: fr\r\n"
      b"\r\n"
      b"<p>Caf&eacute; at 3:30?</p>\r\n"
      b"--alt--\r\n"
      b"\r\n"
      b"--outer\r\n"
      b"Content-Type: application/pdf; name=\"report 1.pdf\"\r\n"
      b"Content-Transfer-Encoding: base64\r\n"
      b"Content-Disposition: attachment; filename=\"report 1.pdf\"; size=12\r\n"
      b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
      b"\r\n"
      b"JVBERi0xLjQK\r\n"
      b"--outer\r\n"
      b"Content-Type: message/rfc822\r\n"
      b"Content-Disposition: inline\r\n"
      b"\r\n"
      b"From: Bob <bob@example.org>\r\n"
      b"Sender: secretary@example.org\r\n"
      b"To: alice@example.org, \"Carol Q.\" <carol@example.org>\r\n"
      b"Subject: =?iso-8859-1?q?r=E9sum=E9?=\r\n"
      b"Date: Tue, 8 Feb 1994 10:00:00 +0100\r\n"
      b"Content-Type: multipart/mixed; boundary=inner\r\n"
      b"\r\n"
      b"--inner\r\n"
      b"\r\n"
      b"implicit text/plain\r\n"
      b"--inner\r\n"
      b"Content-Type: image/png\r\n"
      b"Content-Transfer-Encoding: base64\r\n"
      b"\r\n"
      b"iVBORw0KGgo=\r\n"
      b"--inner--\r\n"
      b"--outer--\r\n"
      b"epilogue\r\n")
M2 = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: plain\r\n\r\nline 1\r\nline 2\r\n"
M3 = (b"From: \"Last, First\" <lf@example.org>\r\n"
      b"To: grp: x@example.org, y@example.org;, z@example.org\r\n"
      b"Subject:\r\nDate: bogus\r\nMessage-ID: <m3@x>\r\n"
      b"Content-Type: text/plain; charset=us-ascii; format=flowed\r\n"
      b"Content-Transfer-Encoding: 8bit\r\n\r\nno trailing newline")
M4 = (b"From: a@example.org\r\nSubject: digest\r\n"
      b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
      b"--d\r\n\r\nFrom: x@example.org\r\nSubject: one\r\n\r\nfirst\r\n"
      b"--d\r\nContent-Type: text/plain\r\n\r\nnot a message\r\n--d--\r\n")
M5 = (b"From: a@example.org\r\nSubject: empty multipart\r\n"
      b"Content-Type: multipart/mixed; boundary=e\r\n\r\nno parts here\r\n")
COMPARE_MESSAGES = [M1, M2, M3, M4, M5]
_ITEMS = ("ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.SIZE",
          "BODY.PEEK[HEADER.FIELDS (From Subject)]", "BODY.PEEK[HEADER.FIELDS.NOT (From Subject)]",
          "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "BODY.PEEK[1.MIME]", "BODY.PEEK[2]",
          "BODY.PEEK[1.1]", "BODY.PEEK[3.HEADER]", "BODY.PEEK[3.TEXT]", "BODY.PEEK[3.1]",
          "BODY.PEEK[3.2.MIME]", "BODY.PEEK[3.2]", "BODY.PEEK[]<5.20>", "BODY.PEEK[1]<0.4>",
          "BODY.PEEK[4]", "BINARY.PEEK[1.1]", "BINARY.SIZE[1.1]", "BINARY.PEEK[2]",
          "BODY.PEEK[1.HEADER]")
_SEARCHES = ("SUBJECT meeting", "FROM bob", "TEXT implicit", "BODY caf",
             "HEADER Content-Type digest", "LARGER 500", "SMALLER 200", "NOT SUBJECT plain",
             "OR SUBJECT plain SUBJECT digest", "2:4 NOT 3", "UID 1:3", "SENTBEFORE 1-Jan-2000",
             'HEADER Subject ""', "TO carol", "CC undisclosed", "ALL", "9", "SUBJECT résumé",
             'CHARSET UTF-8 SUBJECT "résumé"', "NEW", "RECENT", "UNKEYWORD foo", "*", "5:*",
             "6:*", 'TEXT ""')
COMPARE_COMMANDS = [f"FETCH {n} ({item})" for n in range(1, len(COMPARE_MESSAGES) + 1)
                    for item in _ITEMS] + [f"SEARCH {key}" for key in _SEARCHES]


def transcript(t: Target) -> dict[str, list[bytes]]:
    """Each of :data:`COMPARE_COMMANDS`' responses (literals inlined, tagged line reduced to
    its status) from a read-only session."""
    c = t.connect()
    c.select("INBOX", readonly=True)
    out: dict[str, list[bytes]] = {}
    for cmd in COMPARE_COMMANDS:
        tag = c._new_tag()
        c.send(tag + b" " + cmd.encode() + b"\r\n")
        lines: list[bytes] = []
        while True:
            line = c._get_line()
            lines.append(line.split(b" ", 2)[1] if line.startswith(tag) else line)
            m = re.search(rb"\{(\d+)\}$", line)
            if m:
                lines.append(c.read(int(m.group(1))))
            if line.startswith(tag):
                break
        out[cmd] = lines
    c.logout()
    return out


def compare(tmp: Path) -> int:
    """Print the commands whose responses differ between Missive and Dovecot."""
    import queue

    found: queue.Queue[tuple[Target, Any]] = queue.Queue()
    stop = threading.Event()

    async def serve_messages() -> None:
        async with missive(tmp, COMPARE_MESSAGES, []) as (target, settings):
            found.put((target, settings))
            await asyncio.to_thread(stop.wait)

    th = threading.Thread(target=lambda: asyncio.run(serve_messages()))
    th.start()
    try:
        target, settings = found.get(timeout=120)
        ours = transcript(target)
        with dovecot(tmp, settings, COMPARE_MESSAGES, []) as theirs_target:
            theirs = transcript(theirs_target)
    finally:
        stop.set()
        th.join()
    differences = 0
    for cmd in COMPARE_COMMANDS:
        if ours[cmd] != theirs[cmd]:
            differences += 1
            print(f"== {cmd}\n  missive: {ours[cmd]!r}\n  dovecot: {theirs[cmd]!r}")
    print(f"{differences} of {len(COMPARE_COMMANDS)} commands answered differently "
          "(docs/imap.md, Compliance, says which differences the RFCs allow)")
    return differences


def _settings(tmp: Path) -> Any:
    from missive.config import load_settings

    return load_settings(tmp / "missive", environment="test", domain="bench.missive.localhost",
                         test_mode=True, imap={"port": 0, "tls_port": 0, "auth_failure_delay": 0,
                                               "max_connections_per_user": 100})


async def serve(tmp: Path, count: int, body_count: int) -> None:
    """The Missive side, in its own process (as in production, and so that the benchmark's
    client threads do not share its interpreter lock): print the port, serve until stdin ends."""
    messages = [make_message(i) for i in range(count)]
    body_msgs = [make_message(i, size=10 * 1024) for i in range(body_count)]
    async with missive(tmp, messages, body_msgs) as (target, _):
        # As `missive serve` does once its fronts are up (missive.runtime.serve): long-lived
        # objects out of the cyclic collector's reach.
        gc.collect()
        gc.freeze()
        print(f"PORT {target.port}", flush=True)
        await asyncio.to_thread(sys.stdin.read)


@contextlib.contextmanager
def missive_process(tmp: Path, count: int, body_count: int) -> Any:
    from missive.certs.files import CertsLayout

    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(tmp), "--messages",
                             str(count), "--bodies", str(body_count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError("the Missive server did not start")
        ctx = ssl.create_default_context(cafile=str(CertsLayout.of(_settings(tmp)).ca_cert))
        yield Target("missive", int(line.split()[1]), ctx, proc.pid)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--bodies", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--compare", action="store_true",
                    help="compare FETCH/SEARCH responses with Dovecot's instead of timing")
    ap.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve), args.messages, args.bodies))
        return
    if args.compare:
        with tempfile.TemporaryDirectory(prefix="missive-compare-") as d:
            compare(Path(d))
        return
    messages = [make_message(i) for i in range(args.messages)]
    body_msgs = [make_message(i, size=10 * 1024) for i in range(args.bodies)]
    with tempfile.TemporaryDirectory(prefix="missive-bench-") as d, \
            contextlib.ExitStack() as stack:
        tmp = Path(d)
        targets = [stack.enter_context(missive_process(tmp, args.messages, args.bodies))]
        if args.no_dovecot or not shutil.which("/usr/sbin/dovecot"):
            print("dovecot: not installed (apt-get install dovecot-imapd) or disabled; "
                  "no ratios", file=sys.stderr)
        else:
            targets.append(stack.enter_context(
                dovecot(tmp, _settings(tmp), messages, body_msgs)))
        results: dict[str, dict[str, float]] = {}
        for t in targets:
            r = results.setdefault(t.name, {})
            # Cold: the first FETCH after the messages were stored (Missive opens each data key
            # with HPKE, then keeps it in the key cache; Dovecot builds its index and cache).
            # Warm: a new connection after the first one logged out (key cache, index cache).
            # Warm is measured over WARM_RUNS logins: one costs Dovecot about 4 ticks of CPU
            # time (10 ms each), too coarse for a ratio.
            for label, runs in (("envelopes cold", 1), ("envelopes warm", WARM_RUNS)):
                total_wall = total_cpu = 0.0
                for _run in range(runs):
                    elapsed, cpu = measured(t, functools.partial(envelopes, t))
                    total_wall += elapsed
                    total_cpu += cpu
                    time.sleep(1)  # let background writes (Missive's key cache) finish
                r[f"{label}/s"] = runs * args.messages / total_wall
                r[f"{label}/cpu-s"] = runs * args.messages / total_cpu
            # Beside: a new connection while another one of the same user, which already
            # fetched the envelopes, stays logged in (a desktop client's second connection, a
            # phone's push connection). Only the new connection's work is counted.
            holder = t.connect()
            holder.select("INBOX", readonly=True)
            holder.fetch("1:*", "(ENVELOPE)")
            time.sleep(0.5)
            elapsed, cpu = measured(t, functools.partial(envelopes, t))
            r["envelopes beside/s"] = args.messages / elapsed
            r["envelopes beside/cpu-s"] = args.messages / cpu
            holder.logout()
            elapsed, cpu = measured(t, functools.partial(bodies, t, args.bodies))
            r["bodies/s"] = args.bodies / elapsed
            r["bodies/cpu-s"] = args.bodies / cpu
        # The mixed workload in halves, alternating between the servers, so that a change in
        # the shared host's load between two runs weighs on both.
        commands = {t.name: 0 for t in targets}
        cpu_time = {t.name: 0.0 for t in targets}
        for _half in range(2):
            for t in targets:
                counted: list[int] = []
                _elapsed, cpu = measured(t, functools.partial(
                    _count_mixed, counted, t, args.clients, args.seconds / 2, args.messages))
                commands[t.name] += counted[0]
                cpu_time[t.name] += cpu
        for name in commands:
            results[name]["mixed cmds/s"] = commands[name] / args.seconds
            results[name]["mixed/cpu-s"] = commands[name] / cpu_time[name]
        # "/s": per second of wall-clock time; "/cpu-s": per second of the server's CPU time.
        for measure in ("envelopes cold/s", "envelopes cold/cpu-s", "envelopes warm/s",
                        "envelopes warm/cpu-s", "envelopes beside/s", "envelopes beside/cpu-s",
                        "bodies/s", "bodies/cpu-s", "mixed cmds/s", "mixed/cpu-s"):
            line = "  ".join(f"{name} {results[name][measure]:10.1f}" for name in results)
            ratio = ""
            if "dovecot" in results and results["dovecot"][measure]:
                value = results["missive"][measure] / results["dovecot"][measure]
                ratio = f"  ratio {value:.2f}"
            print(f"{measure:23s} {line}{ratio}")


if __name__ == "__main__":
    main()
