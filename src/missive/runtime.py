"""Wiring: build the core services from settings, and run the fronts and workers.

``build_core`` is the one place that opens the database and loads keys. Fronts are started by
``serve`` through :data:`FRONTS`, a table of ``name -> "module:function"``; each start function
has the signature ``async def start(core: Core) -> Front`` and returns an object with
``ports: dict[str, int]`` and ``async def stop()``. A front whose module does not exist yet is
reported as unavailable, not silently skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry

from missive.config import Settings
from missive.db.engine import Database
from missive.mailbox import crypto
from missive.mailbox.events import ChangeBus
from missive.mailbox.keys import MasterWrapped
from missive.mailbox.keystore import KeyStore
from missive.mailbox.store import MailboxStore

log = logging.getLogger(__name__)


@dataclass
class Core:
    """The services every front and worker shares in one process."""

    settings: Settings
    db: Database
    keys: crypto.KeyRing
    store: MailboxStore
    events: ChangeBus
    keystore: KeyStore | None = None
    extras: dict[str, object] = field(default_factory=dict)

    async def close(self) -> None:
        await self.store.drain()
        await self.events.stop()
        await self.db.dispose()
        if self.keystore is not None:
            await self.keystore.close()


async def build_core(settings: Settings, *, with_master_key: bool = True) -> Core:
    """Open the database and load the keys. ``with_master_key=False`` is the SMTP-only process
    of C2: it can deliver (seal) but never open a mailbox."""
    master_env = (settings.store.master_key.get_secret_value()
                  if settings.store.master_key is not None else None)
    keys = crypto.load_keyring(settings.master_key_path, settings.index_key_path,
                               with_master=with_master_key, master_env=master_env)
    keystore: KeyStore | None = None
    if with_master_key:
        if settings.store.keystore_url:
            keystore = KeyStore(settings.store.keystore_url, keys)
        else:
            keystore = KeyStore.for_path(settings.keystore_path, keys)
        await keystore.setup()
    db = Database(settings.sqlalchemy_url)
    events = ChangeBus()
    store = MailboxStore(db, keys, keystore=keystore, suite=settings.store.suite,
                         default_quota=settings.store.default_quota, events=events)
    core = Core(settings=settings, db=db, keys=keys, store=store, events=events,
                keystore=keystore)
    # One Prometheus registry per process, shared by every front (exposed by the ops front).
    core.extras["metrics_registry"] = CollectorRegistry()
    return core


class Front(Protocol):
    ports: dict[str, int]

    async def stop(self) -> None: ...


#: Fronts and workers that ``missive serve`` can run, in start order.
FRONTS: dict[str, str] = {
    "smtp": "missive.mta.server:start",
    "relay": "missive.mta.relay:start",
    "imap": "missive.imap.server:start",
    "notify": "missive.notify.worker:start",
    "web": "missive.webmail.server:start",
    "ops": "missive.ops:start",
}


#: Secrets of the fronts that the master key wraps directly (outside the key store): each a
#: ``mailbox.keys.MasterWrapped`` holder that a master-key rotation must re-wrap (C4).
MASTER_WRAPPED: tuple[str, ...] = (
    "missive.webmail.totp:SECRETS",
)


def master_wrapped() -> list[MasterWrapped]:
    """The holders of :data:`MASTER_WRAPPED` whose front is installed."""
    found: list[MasterWrapped] = []
    for target in MASTER_WRAPPED:
        holder = _resolve(target)
        if holder is not None:
            found.append(holder)  # type: ignore[arg-type]
    return found


def _resolve(target: str) -> Callable[[Core], object] | None:
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise
    func: Callable[[Core], object] = getattr(module, func_name)
    return func


async def serve(core: Core, only: Sequence[str] | None = None,
                ready: Callable[[dict[str, int]], None] | None = None,
                stop_event: asyncio.Event | None = None) -> None:
    """Start the chosen fronts, write ``run/ports.json``, run until SIGTERM/SIGINT."""
    names = list(only) if only else list(FRONTS)
    unknown = [n for n in names if n not in FRONTS]
    if unknown:
        raise ValueError(f"unknown front(s): {', '.join(unknown)}; choose from {', '.join(FRONTS)}")
    await core.events.start(core.settings.sqlalchemy_url)
    started: list[tuple[str, Front]] = []
    ports: dict[str, int] = {}
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for name in names:
            start = _resolve(FRONTS[name])
            if start is None:
                if only:
                    raise ValueError(f"front {name!r} is not available in this build")
                log.warning("front %s not available in this build", name)
                continue
            front = await start(core)  # type: ignore[misc]
            started.append((name, front))
            ports.update(front.ports)
        write_ports(core.settings, ports)
        # Everything built so far lives as long as the process: move it out of the cyclic
        # collector's reach, which otherwise rescans it on every collection (measured here:
        # 0.29 -> 0.06 ms of GC per SMTP message).
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready(ports)
        await stop.wait()
    finally:
        for _name, front in reversed(started):
            with contextlib.suppress(Exception):
                await front.stop()
        with contextlib.suppress(FileNotFoundError):
            (core.settings.run_dir / "ports.json").unlink()


def write_ports(settings: Settings, ports: dict[str, int]) -> None:
    """Write ``run/ports.json`` atomically: harnesses poll for it to know the server is ready."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = settings.run_dir / "ports.json.tmp"
    tmp.write_text(json.dumps({"pid": os.getpid(), **ports}, indent=2) + "\n")
    tmp.replace(settings.run_dir / "ports.json")
