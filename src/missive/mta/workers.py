"""SMTP worker processes (``mta.processes`` > 1): the SMTP front on more than one core.

Why: one Python process runs its event loop and its whole delivery pipeline (TLS, policy, MIME
analysis, HPKE sealing, the group commit) on one core at a time, behind the GIL: a busy SMTP
front saturates one core of the host and leaves the others idle. Postfix's answer is a master
process handing its listening sockets to a pool of ``smtpd`` processes; this module does the
same, with the ordinary SMTP front (:func:`missive.mta.server.start`) in each worker.

How:

- The main process binds the three listeners (without accepting on them) and starts N workers,
  ``python -m missive.mta.workers``. Each gets the listening sockets (``pass_fds``), and on its
  stdin one JSON line with the settings **without the master key** (C2: a worker's core is
  built with public keys only, as ``missive serve --only smtp`` is). All workers accept on the
  same sockets: the kernel gives each connection to one of them.
- Each worker has its own core, database connections and group commit. On SQLite their
  commits queue on the database's writer lock (``Database._writer_lock``); on PostgreSQL they
  are independent transactions. A ``250`` still follows the commit of that message (P11).
- Wake-ups: a worker writes ``ready`` once listening, then the ids of the mailboxes it changed,
  one per line, on a pipe to the main process, which publishes them on its own
  :class:`~missive.mailbox.events.ChangeBus` (IMAP IDLE and the webmail of the main process
  see new mail at once on SQLite; on PostgreSQL ``NOTIFY`` carries them as well).
- Lifetime: a worker stops accepting and finishes its sessions (what SIGTERM does to
  ``missive serve``) when its stdin reaches end of file, that is when the main process stops it
  or dies, even by SIGKILL (the kernel closes the pipe); SIGTERM and SIGINT do the same. The main
  process restarts a worker that exits on its own, after 1 s, doubling up to 60 s while it
  keeps failing.
- Rate limits, connection counts and the authentication lockout (``mta.limits``) count for
  the node: a worker reports each change to its limits on the same pipe (``L`` and a JSON
  event), and the main process writes it to the other workers' stdin, where they apply it
  (:meth:`~missive.mta.limits.Limits.apply`). The main process remembers which connections
  each worker holds, so that a worker's death releases them in the others and a restarted
  worker starts with them; it starts with empty token buckets and lockout counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from missive.config import Settings
    from missive.mta.limits import Limits
    from missive.runtime import Core

log = logging.getLogger(__name__)

#: How long a worker may take to start listening, and to finish its sessions when stopped.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
RESTART_MAX = 60.0
#: Not passed on to a worker's environment (C2: the SMTP processes never hold it).
MASTER_KEY_VARIABLE = "MISSIVE_STORE__MASTER_KEY"


def settings_for_worker(settings: Settings) -> str:
    """The settings a worker needs, as one JSON line: everything but the master key (C2)."""
    data = settings.model_dump(mode="python", exclude={"store": {"master_key"}})

    def plain(value: object) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return str(value)

    return json.dumps(data, default=plain, separators=(",", ":"))


def settings_from_worker_line(line: bytes | str) -> Settings:
    """The inverse of :func:`settings_for_worker`. Every value comes from the line, which wins
    over the environment; the master key is set to none explicitly (C2)."""
    from missive.config import Settings

    data = json.loads(line)
    data.setdefault("store", {})["master_key"] = None
    return Settings.model_validate(data)


class _Worker:
    """One worker process and the pipe it reports on."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        #: Connections this worker counted and has not released, per client address.
        self.connections: Counter[str] = Counter()


class WorkerPool:
    """The main process's side: start, watch, restart and stop the workers."""

    def __init__(self, core: Core, fds: dict[str, list[int]], count: int) -> None:
        self.core = core
        self.fds = fds
        self.count = count
        self.workers = [_Worker(i) for i in range(count)]
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._metrics(core.extras.get("metrics_registry"))

    def _metrics(self, registry: object) -> None:
        """``missive_smtp_workers_ready`` and ``missive_smtp_worker_restarts_total`` on the
        process's registry (``/metrics`` of the ops front), when there is one."""
        from prometheus_client import CollectorRegistry, Counter, Gauge

        if not isinstance(registry, CollectorRegistry):
            registry = CollectorRegistry()  # not exposed: tests and embedders without one
        self.ready_gauge = Gauge("missive_smtp_workers_ready",
                                 "SMTP worker processes listening", registry=registry)
        self.ready_gauge.set_function(
            lambda: sum(1 for w in self.workers if w.ready.is_set() and w.proc is not None
                        and w.proc.returncode is None))
        self.restarts = Counter("missive_smtp_worker_restarts",
                                "SMTP worker processes restarted after an exit",
                                registry=registry)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]

    async def start(self) -> None:
        """Start every worker and wait until each listens (or raise why one could not)."""
        for worker in self.workers:
            await self._spawn(worker)
        for worker in self.workers:
            await self._await_ready(worker)
        self._watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]

    async def _spawn(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        listening = [fd for fds in self.fds.values() for fd in fds]
        spec = {"fds": self.fds, "events_fd": write_fd, "index": worker.index,
                "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel())}
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "missive.mta.workers",
                stdin=asyncio.subprocess.PIPE, pass_fds=[*listening, write_fd],
                env={k: v for k, v in os.environ.items() if k != MASTER_KEY_VARIABLE})
        finally:
            os.close(write_fd)
        assert worker.proc.stdin is not None  # noqa: S101 - stdin=PIPE above
        worker.proc.stdin.write(json.dumps(spec).encode() + b"\n"
                                + settings_for_worker(self.core.settings).encode() + b"\n")
        # A new (or restarted) worker learns the connections the others hold; token buckets
        # and lockouts it learns from the next events only.
        for other in self.workers:
            if other is not worker:
                for address, count in other.connections.items():
                    worker.proc.stdin.write(
                        (json.dumps(["open", address]).encode() + b"\n") * count)
        await worker.proc.stdin.drain()
        worker.ready = asyncio.Event()
        worker.reader = asyncio.create_task(self._read_events(worker, read_fd))

    async def _read_events(self, worker: _Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
        rest = b""
        try:
            while chunk := await reader.read(65536):
                complete, _, rest = (rest + chunk).rpartition(b"\n")
                shared: list[bytes] = []
                for line in complete.split(b"\n"):
                    if line.startswith(b"L"):
                        shared.append(line[1:])
                    elif line == b"ready":
                        worker.ready.set()
                    elif line.isdigit():
                        self.core.events.publish(int(line))
                if shared:
                    self._share(worker, shared)
        finally:
            transport.close()

    def _share(self, origin: _Worker, events: list[bytes]) -> None:
        """Pass changes to ``origin``'s limits on to the other workers."""
        for event in events:
            if event.startswith((b'["open"', b'["close"')):
                with contextlib.suppress(ValueError, IndexError):
                    kind, address = json.loads(event)[:2]
                    origin.connections[address] += 1 if kind == "open" else -1
                    if origin.connections[address] <= 0:
                        del origin.connections[address]
        data = b"\n".join(events) + b"\n"
        for worker in self.workers:
            if worker is not origin:
                self._tell(worker, data)

    @staticmethod
    def _tell(worker: _Worker, data: bytes) -> None:
        stdin = worker.proc.stdin if worker.proc is not None else None
        if stdin is not None and not stdin.is_closing():
            stdin.write(data)

    def _release(self, dead: _Worker) -> None:
        """The connections a dead worker held are gone: tell the others."""
        for address, count in dead.connections.items():
            line = json.dumps(["close", address]).encode() + b"\n"
            for worker in self.workers:
                if worker is not dead:
                    for _ in range(count):
                        self._tell(worker, line)
        dead.connections.clear()

    async def _await_ready(self, worker: _Worker) -> None:
        assert worker.proc is not None  # noqa: S101 - spawned
        ready = asyncio.create_task(worker.ready.wait())
        died = asyncio.create_task(worker.proc.wait())
        try:
            done, _ = await asyncio.wait({ready, died}, timeout=START_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (ready, died):
                task.cancel()
        if ready not in done or not worker.ready.is_set():
            code = worker.proc.returncode
            raise OSError(f"SMTP worker {worker.index} did not start "
                          f"({'exit status ' + str(code) if code is not None else 'timeout'}); "
                          "its log says why")

    async def _watch(self, worker: _Worker) -> None:
        delay = 1.0
        while True:
            assert worker.proc is not None  # noqa: S101 - spawned
            code = await worker.proc.wait()
            if self._stopping:
                return
            self._release(worker)
            # Ctrl-C or a SIGTERM to the process group stops the workers a moment before this
            # process begins to stop them: wait first, and say nothing if it was that.
            await asyncio.sleep(delay)
            if self._stopping:
                return
            log.error("smtp: worker %d exited with status %s; restarting it", worker.index,
                      code)
            self.restarts.inc()
            try:
                await self._spawn(worker)
                await self._await_ready(worker)
                delay = 1.0
            except OSError as exc:
                log.error("smtp: %s", exc)
                delay = min(delay * 2, RESTART_MAX)

    async def stop(self) -> None:
        """Ask every worker to finish (end of file on its stdin); kill what outlives the wait."""
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.error("smtp: worker %d did not stop in time; killed", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for worker in self.workers:
            if worker.reader is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker.reader, 5)


# --- the worker process ----------------------------------------------------------------------

class _Lines:
    """Lines from a file descriptor with ``os.read``. Not ``sys.stdin``: a thread blocked in a
    buffered read holds the buffer's lock, and the interpreter then aborts at exit ("could not
    acquire lock for <stdin> at interpreter shutdown") when a signal stops the worker."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def _fill(self) -> bool:
        """Read until the buffer holds a complete line; False at end of file."""
        while b"\n" not in self.buffer:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return False
            self.buffer += chunk
        return True

    def readline(self) -> bytes | None:
        """The next line with its newline, or None at end of file."""
        if not self._fill():
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def readlines(self) -> list[bytes] | None:
        """The complete lines one read brings (at least one), or None at end of file."""
        if not self._fill():
            return None
        complete, _, self.buffer = self.buffer.rpartition(b"\n")
        return complete.split(b"\n")


async def _serve(spec: dict[str, Any], settings: Settings, stdin: _Lines) -> None:
    from missive.mta.server import start
    from missive.runtime import build_core

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    limits: list[Limits] = []
    early: list[bytes] = []  # events that came before the front (and its limits) existed

    def apply(lines: list[bytes]) -> None:
        if not limits:
            early.extend(lines)
            return
        for line in lines:
            with contextlib.suppress(ValueError):
                limits[0].apply(json.loads(line))

    def read_stdin() -> None:
        # The other workers' limit events, one a line, until end of file, which means stop:
        # the main process holds the other end (closed by the kernel even after SIGKILL).
        # The lines of one read go to the loop together: one wake-up, not one per event.
        with contextlib.suppress(Exception):
            while (lines := stdin.readlines()) is not None:
                loop.call_soon_threadsafe(apply, lines)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=read_stdin, name="smtp-worker-stdin", daemon=True).start()
    report = _Report(int(spec["events_fd"]), loop)
    core = await build_core(settings, with_master_key=False)
    try:
        if core.db.is_sqlite:
            core.events.relay = lambda mailbox_id: report.line(b"%d\n" % mailbox_id)
        inherited = {name: [socket.socket(fileno=fd) for fd in fds]
                     for name, fds in spec["fds"].items()}
        front = await start(core, inherited=inherited)
        front.ctx.limits.share(
            lambda event: report.line(b"L" + json.dumps(event).encode() + b"\n"))
        limits.append(front.ctx.limits)
        apply(early)
        early.clear()
        try:
            gc.collect()
            gc.freeze()  # as runtime.serve does: long-lived objects out of the collector's way
            report.line(b"ready\n")
            await stop.wait()
        finally:
            await front.stop()
    finally:
        await core.close()


class _Report:
    """Lines to the main process, written together once per turn of the event loop (one
    system call for all the events of that turn). The writes block when the pipe is full:
    wake-ups must not be lost, and the main process reads all the time. A main process gone
    is not an error here (the worker is about to see end of file on its stdin)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = fd
        self.loop = loop
        self.pending: list[bytes] = []

    def line(self, line: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(line)

    def flush(self) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        with contextlib.suppress(OSError):
            while data:
                data = data[os.write(self.fd, data):]


def main() -> None:
    """Entry point of a worker process (started by :class:`WorkerPool` only)."""
    from missive.logs import setup

    stdin = _Lines(sys.stdin.fileno())
    spec = json.loads(stdin.readline() or b"{}")
    settings = settings_from_worker_line(stdin.readline() or b"{}")
    setup(spec.get("log_level", "INFO"))
    asyncio.run(_serve(spec, settings, stdin))


if __name__ == "__main__":
    main()
