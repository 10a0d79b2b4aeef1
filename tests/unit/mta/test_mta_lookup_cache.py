"""cached_lookup: the SMTP front's directory cache shares one lookup between concurrent misses."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from missive.mta.handlers import cached_lookup
from missive.mta.limits import TtlCache


def _ctx(ttl: float) -> Any:
    # Only the parts cached_lookup uses: limits.directory and the in-flight map.
    return SimpleNamespace(limits=SimpleNamespace(directory=TtlCache(ttl)), inflight={})


class Loader:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.release = asyncio.Event()

    async def __call__(self) -> object:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError("directory down")
        return f"answer {self.calls}"


async def test_concurrent_misses_share_one_lookup_then_the_answer_is_cached() -> None:
    ctx, load = _ctx(5.0), Loader()
    waiting = [asyncio.create_task(cached_lookup(ctx, "k", load)) for _ in range(5)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*waiting) == ["answer 1"] * 5
    assert load.calls == 1
    assert await cached_lookup(ctx, "k", load) == "answer 1"
    assert load.calls == 1
    assert ctx.inflight == {}


async def test_without_cache_every_caller_asks_the_directory() -> None:
    ctx, load = _ctx(0.0), Loader()
    waiting = [asyncio.create_task(cached_lookup(ctx, "k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    load.release.set()
    assert await asyncio.gather(*waiting) == ["answer 3"] * 3
    assert load.calls == 3


async def test_an_error_reaches_every_caller_and_is_not_cached() -> None:
    ctx, load = _ctx(5.0), Loader(fail=True)
    waiting = [asyncio.create_task(cached_lookup(ctx, "k", load)) for _ in range(3)]
    await asyncio.sleep(0)
    load.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert load.calls == 1
    load.fail = False
    assert await cached_lookup(ctx, "k", load) == "answer 2"


async def test_a_caller_going_away_does_not_cancel_the_others() -> None:
    ctx, load = _ctx(5.0), Loader()
    first = asyncio.create_task(cached_lookup(ctx, "k", load))
    second = asyncio.create_task(cached_lookup(ctx, "k", load))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    load.release.set()
    assert await second == "answer 1"
