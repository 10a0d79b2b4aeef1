"""SMTP worker processes (``mta.processes`` > 1, ``missive.mta.workers``), over real sockets.

The test process is the main process: it binds the listeners and starts two workers, which
serve every connection. Checked: the workers deliver (also on PostgreSQL) while the main process
does not run its event loop; their wake-ups reach the main process's watchers on
SQLite; they never see the master key (C2); a worker that dies is replaced; a main process
killed with SIGKILL leaves no worker behind; the limits (lockout, connections per address) count
for the node, whichever worker a connection lands on (which one does is read from ``/proc``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from smtp_harness import PASSWORD, message, send, smtp_env, stop_env
from test_smtp_durability import _children

from missive.mta.workers import settings_for_worker, settings_from_worker_line


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


async def test_workers_deliver_without_the_main_process(tmp_path: Path) -> None:
    await _deliver_without_the_main_process(tmp_path, None)


async def test_workers_deliver_without_the_main_process_on_postgres(tmp_path: Path,
                                                                   pg_url: str) -> None:
    await _deliver_without_the_main_process(tmp_path, pg_url)


async def _deliver_without_the_main_process(tmp_path: Path, url: str | None) -> None:
    env = await smtp_env(tmp_path, database_url=url, processes=2)
    try:
        assert env.front.pool is not None
        assert len(env.front.pool.pids) == 2

        def submit(n: int) -> list[tuple[int, str]]:
            c = env.login(listener="submission_tls" if n % 2 else "submission")
            try:
                return [send(c, env.pro, [env.patient], message(env.pro, env.patient,
                                                                 subject=f"n{n}.{i}"))
                        for i in range(5)]
            finally:
                c.close()

        # While the clients (another process) send, this thread blocks without running the
        # event loop: the main process accepts and delivers nothing meanwhile, so every 250
        # comes from a worker (a connection accepted here would hang until the timeout).
        script = ("import sys; sys.path.insert(0, sys.argv[1])\n"
                  "from test_smtp_workers import _submit_from_child\n"
                  "_submit_from_child(sys.argv[2])\n")
        spec = tmp_path / "spec.txt"
        spec.write_text("\n".join([str(env.ports["smtp_submission"]),
                                   str(env.ports["smtp_submission_tls"]), str(env.ca_file),
                                   env.pro, env.patient]))
        proc = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent),
                                 str(spec)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err.decode()[-2000:]
        codes = out.decode().split()
        assert codes == ["250"] * 20, codes
        assert await env.mailbox_count(env.patient) == 20
        # And again with the loop running: still the workers only.
        replies = await asyncio.to_thread(submit, 1)
        assert [code for code, _ in replies] == [250] * 5
        assert await env.mailbox_count(env.patient) == 25
    finally:
        await stop_env(env)


def _submit_from_child(spec_path: str) -> None:
    """Runs in a child process: 4 sessions x 5 messages; prints each final reply code."""
    import smtplib
    import ssl
    from concurrent.futures import ThreadPoolExecutor

    port, tls_port, ca_file, pro, patient = Path(spec_path).read_text().split("\n")
    from smtp_harness import PASSWORD
    from smtp_harness import message as build

    def session(n: int) -> list[int]:
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.check_hostname = False
        if n % 2:
            client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", int(tls_port), context=ctx,
                                                    timeout=60)
            client.ehlo("child.test")
        else:
            client = smtplib.SMTP("127.0.0.1", int(port), timeout=60)
            client.starttls(context=ctx)
        client.login(pro, PASSWORD)
        try:
            codes = []
            for i in range(5):
                client.sendmail(pro, [patient], build(pro, patient, subject=f"c{n}.{i}"))
                codes.append(250)
            return codes
        finally:
            client.quit()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(session, range(4)))
    print(" ".join(str(c) for codes in results for c in codes))


async def test_a_worker_delivery_wakes_a_watcher_of_the_main_process(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, processes=2)
    try:
        from missive.directory.recipients import resolve_recipient

        async with env.admin.db.read() as s:
            info = await resolve_recipient(s, env.patient, env.settings)
        assert info.mailbox_id is not None
        # The watcher is on the main process's bus (where IMAP IDLE and the webmail watch);
        # the delivery is committed by a worker, another process, on SQLite.
        async with env.core.events.watch(info.mailbox_id) as changed:
            def submit() -> tuple[int, str]:
                c = env.login()
                try:
                    return send(c, env.pro, [env.patient], message(env.pro, env.patient))
                finally:
                    c.close()

            assert (await asyncio.to_thread(submit))[0] == 250
            await asyncio.wait_for(changed.wait(), 1.0)
    finally:
        await stop_env(env)


async def test_workers_never_hold_the_master_key(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "c2VjcmV0LW1hc3Rlci1rZXktZm9yLXRoZS10ZXN0ISE="
    monkeypatch.setenv("MISSIVE_STORE__MASTER_KEY", secret)
    env = await smtp_env(tmp_path, processes=2)
    try:
        assert env.settings.store.master_key is not None  # the main process has it
        assert env.front.pool is not None
        for pid in env.front.pool.pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"MISSIVE_STORE__MASTER_KEY" not in environ
            assert secret.encode() not in environ
    finally:
        await stop_env(env)
    line = settings_for_worker(env.settings)
    assert secret not in line
    assert settings_from_worker_line(line).store.master_key is None


async def test_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, processes=2)
    try:
        assert env.front.pool is not None
        victim = env.front.pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pids = env.front.pool.pids
            if victim not in pids and len(pids) == 2 and all(_alive(p) for p in pids):
                if all(w.ready.is_set() for w in env.front.pool.workers):
                    break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"worker {victim} was not replaced: {env.front.pool.pids}")
        registry = env.core.extras["metrics_registry"]
        assert registry.get_sample_value("missive_smtp_worker_restarts_total") == 1
        assert registry.get_sample_value("missive_smtp_workers_ready") == 2

        def submit() -> list[tuple[int, str]]:
            replies = []
            for _ in range(4):  # several connections: both workers get some
                c = env.login()
                try:
                    replies.append(send(c, env.pro, [env.patient],
                                        message(env.pro, env.patient)))
                finally:
                    c.close()
            return replies

        assert [code for code, _ in await asyncio.to_thread(submit)] == [250] * 4
    finally:
        await stop_env(env)


MAIN = """
import asyncio, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from smtp_harness import smtp_env

async def main() -> None:
    env = await smtp_env(Path(sys.argv[1]), processes=2)
    print(" ".join(str(p) for p in env.front.pool.pids), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_workers_leave_with_a_killed_main_process(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", MAIN, str(tmp_path), str(Path(__file__).parent),
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 120)
    pids = [int(p) for p in line.split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.kill()  # SIGKILL: no chance to stop the workers itself
    await proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not any(_alive(p) for p in pids), "a worker outlived its main process"


def _serving_pid(client: socket.socket, pids: list[int]) -> int:
    """The worker holding the server side of ``client``'s connection (from ``/proc``)."""
    port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port:  # remote end = the client's port
            inodes.add(fields[9])
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return pid
    raise AssertionError(f"no worker serves the connection from port {port}")


def _greet(port: int) -> str:
    """The greeting a new connection gets (then closed)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        return sock.recv(512).decode()


def plain(login: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def _on_each_worker(env: Any, pids: list[int]
                    ) -> tuple[list[smtplib.SMTP], dict[int, smtplib.SMTP]]:
    """Connect until each worker serves one connection; returns (all, one per worker)."""
    opened: list[smtplib.SMTP] = []
    per_worker: dict[int, smtplib.SMTP] = {}
    for _ in range(60):
        client = env.smtp()
        opened.append(client)
        assert client.sock is not None
        pid = _serving_pid(client.sock, pids)
        per_worker.setdefault(pid, client)
        if len(per_worker) == len(pids):
            return opened, per_worker
    raise AssertionError("60 connections, all to the same worker")


async def test_the_lockout_counts_failures_of_every_worker(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, processes=2, auth_lockout_threshold=2)
    try:
        assert env.front.pool is not None
        pids = env.front.pool.pids

        def scenario() -> list[tuple[int, bytes]]:
            opened, per_worker = _on_each_worker(env, pids)
            try:
                # One failure in each worker: two for the node, the threshold. (One AUTH
                # command each: smtplib's login() would try PLAIN, then LOGIN.)
                for client in per_worker.values():
                    code, _ = client.docmd("AUTH", plain(env.pro, "wrong password"))
                    assert code == 535
                time.sleep(0.5)  # the events cross the main process
                return [client.docmd("AUTH", plain(env.pro, PASSWORD))
                        for client in per_worker.values()]
            finally:
                for client in opened:
                    with contextlib.suppress(Exception):
                        client.close()

        replies = await asyncio.to_thread(scenario)
        assert replies == [(454, b"4.7.0 Too many authentication failures, try again later")] * 2
    finally:
        await stop_env(env)


async def test_connections_per_address_count_for_the_node(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, processes=2, max_connections_per_address=3)
    try:
        assert env.front.pool is not None
        pool = env.front.pool

        def scenario() -> tuple[list[str], list[int]]:
            held: list[socket.socket] = []
            try:
                for _ in range(3):
                    sock = socket.create_connection(("127.0.0.1", env.ports["smtp_submission"]))
                    held.append(sock)
                    assert sock.recv(512).startswith(b"220")
                time.sleep(0.5)
                greetings = []
                for _ in range(4):  # whichever worker takes them: the node has 3 already
                    with socket.create_connection(
                            ("127.0.0.1", env.ports["smtp_submission"])) as extra:
                        greetings.append(extra.recv(512).decode().strip())
                owners = [_serving_pid(sock, pool.pids) for sock in held]
                return greetings, owners
            finally:
                for sock in held:
                    sock.close()

        greetings, owners = await asyncio.to_thread(scenario)
        assert greetings == ["421 4.7.0 Too many connections from your address, try later"] * 4
        # Closed connections are released in every worker.
        await asyncio.sleep(0.5)

        port = env.ports["smtp_submission"]
        greetings = [await asyncio.to_thread(_greet, port) for _ in range(4)]
        assert all(g.startswith("220") for g in greetings), greetings
        assert owners  # (which workers held them does not matter)
    finally:
        await stop_env(env)


async def test_a_dead_workers_connections_are_released(tmp_path: Path) -> None:
    env = await smtp_env(tmp_path, processes=2, max_connections_per_address=2)
    try:
        assert env.front.pool is not None
        pool = env.front.pool
        held = []
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", env.ports["smtp_submission"]))
            assert (await asyncio.to_thread(sock.recv, 512)).startswith(b"220")
            held.append(sock)
        owners = {_serving_pid(sock, pool.pids) for sock in held}
        for pid in owners:
            os.kill(pid, signal.SIGKILL)
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                len(pool.pids) == 2 and all(w.ready.is_set() for w in pool.workers)
                and not owners & set(pool.pids)):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)

        # Neither the surviving nor the new worker still counts the dead one's connections.
        port = env.ports["smtp_submission"]
        greetings = [await asyncio.to_thread(_greet, port) for _ in range(6)]
        assert all(g.startswith("220") for g in greetings), greetings
    finally:
        await stop_env(env)


async def test_ctrl_c_to_the_process_group_stops_everything_cleanly(tmp_path: Path) -> None:
    """``missive serve`` with workers, SIGINT to its whole process group (a terminal's Ctrl-C):
    every process exits with status 0, and no worker aborts or is restarted."""
    from test_smtp_durability import _env, _missive

    data = tmp_path / "data"
    init = await asyncio.create_subprocess_exec(
        *_missive(data, "init", "--domain", "test.missive.localhost", "--test-mode"),
        env=_env(), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(init.communicate(), 120)
    assert init.returncode == 0, err.decode()
    proc = await asyncio.create_subprocess_exec(
        *_missive(data, "serve", "--only", "smtp", "--log-level", "INFO"),
        env=_env(processes=2), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        while b"Stop with Ctrl-C" not in await asyncio.wait_for(proc.stdout.readline(), 120):
            pass
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        log = (await proc.stderr.read()).decode()
        assert "Fatal Python error" not in log
        assert "restarting" not in log
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(_alive(p) for p in workers)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
