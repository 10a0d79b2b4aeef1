"""Async engine and session factory for SQLite (default) and PostgreSQL.

SQLite is opened in WAL mode with ``synchronous=FULL`` (a commit is on disk before it returns:
policy P11 answers 250 only after a durable commit), foreign keys on, and a busy timeout so that
the SMTP, IMAP and web fronts of one node can share the file. PostgreSQL is used through asyncpg.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``session.info`` key of the callables run after a successful ``Database.write`` commit.
AFTER_COMMIT = "missive_after_commit"
#: ``session.info`` key of the callables run just before a ``Database.write`` commit.
BEFORE_COMMIT = "missive_before_commit"
#: Set in ``session.info`` of sessions opened by ``Database.write`` (hooks above are honoured).
MANAGED = "missive_managed"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """Create the engine for ``url`` with the per-backend settings described above."""
    kwargs: dict[str, Any] = {"echo": echo}
    sa_url = make_url(url)
    if not is_sqlite(url) and "search_path" in sa_url.query:
        # A schema per deployment or per test run: ``…/db?search_path=run_42``. asyncpg takes it
        # as a server setting, not as a URL parameter.
        schema = str(sa_url.query["search_path"])
        sa_url = sa_url.difference_update_query(["search_path"])
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    if is_sqlite(url):
        kwargs["connect_args"] = {"timeout": 30}
        # A small pool: opening a SQLite connection (file, WAL index, pragmas) costs more than
        # a whole delivery transaction. Pooled connections hold no transaction between uses.
        kwargs["pool_size"] = 8
        kwargs["max_overflow"] = 16
    else:
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 20
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(sa_url, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # The driver's own transaction handling is turned off so that BEGIN IMMEDIATE below is ours.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # A write transaction (see Database.write) takes the write lock at BEGIN IMMEDIATE: a
    # read-then-write transaction (UID allocation, audit chain) can then never fail half-way with
    # SQLITE_BUSY on lock upgrade. Readers keep a plain deferred BEGIN and run beside writers.
    if conn.get_execution_options().get("missive_write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class Database:
    """The engine and two session factories: ``read()`` and ``write()``.

    Use ``async with db.write() as s:`` for anything that changes rows (it commits on success,
    rolls back on error) and ``async with db.read() as s:`` for queries.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        self.is_sqlite = is_sqlite(url)
        writer = self.engine.execution_options(missive_write=True)
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write = async_sessionmaker(writer, expire_on_commit=False)
        self._executor: ThreadPoolExecutor | None = None
        self._sync_engine: Engine | None = None
        self._read_engine: Engine | None = None
        self._lock_fd: int | None = None

    async def run_write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one write transaction, with a *synchronous* session.

        For hot paths that issue many statements (the delivery group commit). On SQLite the
        whole transaction runs in one worker thread on the plain ``sqlite3`` driver, instead of
        one thread hop per statement through aiosqlite (about 10x less overhead); on PostgreSQL
        it runs through ``AsyncSession.run_sync`` on asyncpg.
        """
        if self.is_sqlite:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._sync_executor(), self._sync_write, fn)
        async with self.write() as s:
            return await s.run_sync(fn)

    async def run_read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one read-only transaction, with a *synchronous* session.

        For the hot read paths of opened mailboxes (IMAP after every command, webmail pages).
        On SQLite ``fn`` runs inline on the calling thread with the plain ``sqlite3`` driver:
        a WAL reader never waits for a lock, and its indexed lookups take microseconds, less
        than one round trip to aiosqlite's thread (which every statement of an
        ``AsyncSession`` pays, measured at 4–12 ms per statement on a busy IMAP front). Keep
        such functions to indexed reads of a bounded number of rows. On PostgreSQL it runs
        through ``AsyncSession.run_sync`` on asyncpg.
        """
        if self.is_sqlite:
            # Closing (not rolling back) the session keeps the objects read usable, detached;
            # the pool rolls the connection's read transaction back when it is returned.
            with Session(self._sqlite_read_engine(), expire_on_commit=False) as s:
                return fn(s)
        async with self.read() as s:
            return await s.run_sync(fn)

    def _sqlite_read_engine(self) -> Engine:
        if self._read_engine is None:
            engine = create_engine(make_url(self.url).set(drivername="sqlite"),
                                   connect_args={"timeout": 30, "check_same_thread": False},
                                   pool_size=4, max_overflow=8)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
            self._read_engine = engine
        return self._read_engine

    def _sync_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-w")
            sync_url = make_url(self.url).set(drivername="sqlite")
            engine = create_engine(sync_url, connect_args={"timeout": 30,
                                                           "check_same_thread": False},
                                   pool_size=2, max_overflow=2)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin_immediate)
            self._sync_engine = engine.execution_options(missive_write=True)
        return self._executor

    def _sync_write(self, fn: Callable[[Session], T]) -> T:
        assert self._sync_engine is not None  # noqa: S101 - set with the executor
        with self._writer_lock(), Session(self._sync_engine, expire_on_commit=False) as s, \
                s.begin():
            return fn(s)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Queue this process's writer behind the other processes' writers (SQLite only).

        SQLite serialises writers with its file lock, but a writer that finds the lock taken
        waits in the busy handler, which *sleeps* (1, 2, 5 … 100 ms) and polls: with several
        SMTP worker processes (``mta.processes``) each group commit then waited for a sleep to
        end rather than for the other commit, and two processes delivered no more than one. An
        exclusive ``flock`` on a file beside the database, taken in this writer thread before
        ``BEGIN IMMEDIATE``, makes the waits a queue that wakes as soon as the holder commits.
        SQLite's own lock stays what guarantees correctness; the ``flock`` only orders the
        hot-path writers (the async ``write()`` sessions still rely on the busy handler).
        """
        if self._lock_fd is None:
            path = make_url(self.url).database
            if not path or path == ":memory:" or path.startswith("file:"):
                self._lock_fd = -1
            else:
                self._lock_fd = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        if self._lock_fd < 0:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def read(self) -> AsyncSession:
        """A session for queries; its transaction is rolled back when the block ends."""
        return self._read()

    def write(self) -> _WriteSession:
        """A session whose transaction commits when the block ends without error."""
        return _WriteSession(self._write())

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        if self._read_engine is not None:
            self._read_engine.dispose()
            self._read_engine = None
        if self._lock_fd is not None and self._lock_fd >= 0:
            os.close(self._lock_fd)
        self._lock_fd = None


class _WriteSession:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def __aenter__(self) -> AsyncSession:
        await self.session.__aenter__()
        await self.session.begin()
        self.session.info[MANAGED] = True
        return self.session

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        actions: list[Any] = []
        try:
            if exc_type is None:
                # Work that must be durable before this commit (e.g. keys in another store),
                # once for the whole transaction; if it fails, the transaction rolls back.
                try:
                    for before in self.session.info.pop(BEFORE_COMMIT, []):
                        await before(None)
                except BaseException:
                    await self.session.rollback()
                    raise
                await self.session.commit()
                actions = self.session.info.pop(AFTER_COMMIT, [])
            else:
                await self.session.rollback()
        finally:
            self.session.info.pop(AFTER_COMMIT, None)
            self.session.info.pop(BEFORE_COMMIT, None)
            await self.session.__aexit__(exc_type, exc, tb)
        for action in actions:
            # Work that must follow a durable commit (e.g. destroying a key in another store).
            # A failure is logged and retried by the owner's own collection at start-up.
            try:
                await action(None)
            except Exception:
                log.exception("after-commit action failed")
