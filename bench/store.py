"""Store throughput: deliver and fetch, 10 KB and 1 MB messages, sealed vs. not sealed.

Run: ``.venv/bin/python bench/store.py [--messages N] [--postgres]``.

"Sealed" is the real store (HPKE data key per message, AES-256-GCM body and metadata, the
delivery transaction with audit entries and outbox rows, group commit). The reference, in the
same run and on the same database, is the same pipeline with sealing replaced by identity
functions, so the ratio isolates what the encryption costs. Deliveries run with 10 concurrent
submitters (like 10 SMTP sessions); fetches open the mailbox once and fetch every message.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from missive.config import load_settings
from missive.db.schema import create_schema
from missive.mailbox import crypto
from missive.runtime import build_core

CONCURRENCY = 10


@contextlib.contextmanager
def sealing_disabled() -> Iterator[None]:
    """Replace the crypto primitives the store calls with identity functions."""
    saved = (crypto.seal_data_key, crypto.encrypt, crypto.open_data_key, crypto.decrypt)
    crypto.seal_data_key = lambda public, key: crypto.SealedKey(public.suite, key)  # type: ignore[assignment]
    crypto.encrypt = lambda key, data, label: data  # type: ignore[assignment]
    crypto.open_data_key = lambda private, sealed: sealed.blob  # type: ignore[assignment]
    crypto.decrypt = lambda key, blob, label: blob  # type: ignore[assignment]
    try:
        yield
    finally:
        (crypto.seal_data_key, crypto.encrypt, crypto.open_data_key, crypto.decrypt) = saved


def message(size: int, n: int) -> bytes:
    head = (f"From: Dr Bench <bench@bench.localhost>\r\nTo: patient@bench\r\n"
            f"Subject: bench {n}\r\nMessage-ID: <{n}.{os.getpid()}@bench>\r\n\r\n").encode()
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    return head + line * (max(0, size - len(head)) // len(line) + 1)


async def run_case(data_dir: Path, db_url: str, size: int, count: int) -> dict[str, float]:
    settings = load_settings(data_dir, environment="test", database_url=db_url)
    crypto.create_key_files(settings.master_key_path, settings.index_key_path)
    core = await build_core(settings, with_master_key=True)
    try:
        await create_schema(core.db)
        async with core.db.write() as s:
            mid = await core.store.create_mailbox(s, kind="patient", quota=1 << 40)
        bodies = [message(size, i) for i in range(count)]
        queue = list(range(count))

        async def submitter() -> None:
            while queue:
                i = queue.pop()
                d = core.store.delivery(sender="bench@bench.localhost", source="bench")
                d.add_local(mid)
                await d.commit(bodies[i])

        t0 = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(CONCURRENCY)))
        deliver_s = time.perf_counter() - t0
        session = await core.store.open(mid)
        uids = [m.uid for m in await session.messages("INBOX")]
        t0 = time.perf_counter()
        for start in range(0, len(uids), 100):
            await session.fetch_many("INBOX", uids[start:start + 100])
        fetch_s = time.perf_counter() - t0
        return {"deliver": count / deliver_s, "fetch": count / fetch_s}
    finally:
        await core.close()


def pg_schema_url(base: str) -> tuple[str, Any]:
    import uuid

    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    dsn = base.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def sql(text: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(text)
        finally:
            await conn.close()

    asyncio.run(sql(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        asyncio.run(sql(f'DROP SCHEMA "{schema}" CASCADE'))

    return f"{base}?search_path={schema}", drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="10 KB messages per case")
    parser.add_argument("--large", type=int, default=50, help="1 MB messages per case")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    backends = [("sqlite", "")] + ([("postgres", args.pg_url)] if args.postgres else [])
    print(f"# store bench: {CONCURRENCY} concurrent deliverers, cpu={os.cpu_count()}")
    print(f"{'backend':<9}{'size':>7}{'n':>6}  {'deliver msg/s':>26}  {'fetch msg/s':>26}")
    print(f"{'':<9}{'':>7}{'':>6}  {'sealed  plain  ratio':>26}  {'sealed  plain  ratio':>26}")
    for backend, url in backends:
        for size, count in ((10 * 1024, args.messages), (1024 * 1024, args.large)):
            results = {}
            for mode in ("sealed", "plain"):
                with tempfile.TemporaryDirectory() as tmp:
                    db_url, drop = (pg_schema_url(url) if backend == "postgres"
                                    else ("", lambda: None))
                    try:
                        ctx = sealing_disabled() if mode == "plain" else contextlib.nullcontext()
                        with ctx:
                            results[mode] = asyncio.run(
                                run_case(Path(tmp) / "data", db_url, size, count))
                    finally:
                        drop()
            d_s, d_p = results["sealed"]["deliver"], results["plain"]["deliver"]
            f_s, f_p = results["sealed"]["fetch"], results["plain"]["fetch"]
            label = "10KB" if size < 1 << 20 else "1MB"
            print(f"{backend:<9}{label:>7}{count:>6}  {d_s:8.1f} {d_p:7.1f} {d_s / d_p:6.2f}x"
                  f"  {f_s:8.1f} {f_p:7.1f} {f_s / f_p:6.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
