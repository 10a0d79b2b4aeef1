"""Rate limits, connection counts and the authentication lockout of the SMTP fronts (P10).

Implementation notes:

- Everything here is in the memory of one process, with an injected monotonic clock (tests
  move time by hand). With several nodes behind a load balancer each node counts on its own: a
  client gets up to N times the configured rates, and an attacker spreading guesses over the
  nodes gets N times the attempts before a lockout. That is the accepted trade-off (the limits
  exist to slow abuse, not to meter it exactly); a shared counter would put a database write on
  every connection. Documented in ``docs/smtp.md``.
- The SMTP worker processes of one node (``mta.processes``, :mod:`missive.mta.workers`) count
  together: every change a worker makes (tokens taken, a failed or successful login, a
  connection opened or closed) is also handed to :attr:`Limits.share` as a small event, which
  the main process passes to the other workers, who apply it with :meth:`Limits.apply` (without
  passing it on). Each worker thus holds the node's counts, a pipe's latency behind.
- **Lockout cannot lock a victim out forever.** Failures are counted per ``(login, client
  address)``: an attacker guessing a professional's password from elsewhere locks only the
  pair (its own address, that login), never the professional's own address. The lock lasts
  ``base · 2^(n-1)`` seconds for the n-th lock in a row, capped at ``max_seconds``, and the
  history is forgotten after a quiet period (``forget_seconds``). A client address that fails
  for many different logins is locked as a whole (password spraying), again only that address.
- Memory is bounded: each table keeps at most ``max_keys`` entries, oldest first out.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from missive.config import MtaSettings

Clock = Callable[[], float]


class _Bounded(OrderedDict[object, object]):
    def __init__(self, max_keys: int) -> None:
        super().__init__()
        self.max_keys = max_keys

    def touch(self, key: object) -> None:
        self.move_to_end(key)
        while len(self) > self.max_keys:
            self.popitem(last=False)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBucket:
    """Token buckets keyed by a string: ``rate_per_minute`` tokens a minute, ``burst`` at most."""

    def __init__(self, rate_per_minute: float, burst: float, *, clock: Clock = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.rate = rate_per_minute / 60.0
        self.burst = max(1.0, burst)
        self.clock = clock
        self._buckets: _Bounded = _Bounded(max_keys)
        #: Told of every successful take (see :attr:`Limits.share`).
        self.observer: Callable[[str, float], None] | None = None

    def _refill(self, key: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(key)
        if not isinstance(bucket, _Bucket):
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self._buckets.touch(key)
        return bucket

    def take(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens for ``key``; False (nothing taken) when there are not enough."""
        if self.rate <= 0:
            return True
        bucket = self._refill(key)
        if bucket.tokens < cost:
            return False
        bucket.tokens -= cost
        if self.observer is not None:
            self.observer(key, cost)
        return True

    def taken_elsewhere(self, key: str, cost: float) -> None:
        """Tokens another process of the node took: spent here too (down to empty)."""
        if self.rate > 0:
            bucket = self._refill(key)
            bucket.tokens = max(0.0, bucket.tokens - cost)


@dataclass
class _Failures:
    count: int = 0
    locks: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class AuthLockout:
    """Failed authentications per ``(login, address)`` and per address, with capped backoff."""

    def __init__(self, *, threshold: int = 5, base_seconds: float = 30.0,
                 max_seconds: float = 900.0, address_threshold: int = 30,
                 forget_seconds: float = 86_400.0, clock: Clock = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.threshold = max(1, threshold)
        self.address_threshold = max(self.threshold, address_threshold)
        self.base = base_seconds
        self.max = max(base_seconds, max_seconds)
        self.forget = forget_seconds
        self.clock = clock
        self._pairs: _Bounded = _Bounded(max_keys)
        self._addresses: _Bounded = _Bounded(max_keys)
        #: Told of every failure and success, ``(outcome, login, address)``.
        self.observer: Callable[[str, str, str], None] | None = None

    @staticmethod
    def _pair(login: str, address: str) -> str:
        return f"{login.strip().lower()}\x00{address}"

    def _get(self, table: _Bounded, key: str) -> _Failures:
        now = self.clock()
        entry = table.get(key)
        if not isinstance(entry, _Failures) or (
            now - entry.last > self.forget and now >= entry.locked_until
        ):
            entry = _Failures(last=now)
            table[key] = entry
        table.touch(key)
        return entry

    def retry_after(self, login: str | None, address: str) -> float:
        """Seconds until ``login`` may try again from ``address`` (0 when not locked)."""
        now = self.clock()
        waits = [self._get(self._addresses, address).locked_until - now]
        if login is not None:
            waits.append(self._get(self._pairs, self._pair(login, address)).locked_until - now)
        return max(0.0, *waits)

    def _lock(self, entry: _Failures, threshold: int) -> None:
        now = self.clock()
        entry.count += 1
        entry.last = now
        if entry.count >= threshold:
            entry.locks += 1
            entry.count = 0
            entry.locked_until = now + min(self.max, self.base * 2 ** (entry.locks - 1))

    def failure(self, login: str, address: str, *, shared: bool = True) -> None:
        self._lock(self._get(self._pairs, self._pair(login, address)), self.threshold)
        self._lock(self._get(self._addresses, address), self.address_threshold)
        if shared and self.observer is not None:
            self.observer("failure", login, address)

    def success(self, login: str, address: str, *, shared: bool = True) -> None:
        """A successful login clears the history of that pair."""
        self._pairs.pop(self._pair(login, address), None)
        if shared and self.observer is not None:
            self.observer("success", login, address)


class ConnectionCounter:
    """Open connections per client address and in total."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self._open: dict[str, int] = {}
        self._all = 0
        #: Told of every connection counted or released, ``(event, address)``.
        self.observer: Callable[[str, str], None] | None = None

    def open(self, address: str) -> str | None:
        """Count a new connection; returns why it must be refused (``"address"``/``"total"``)."""
        if self.total > 0 and self._all >= self.total:
            return "total"
        current = self._open.get(address, 0)
        if self.per_address > 0 and current >= self.per_address:
            return "address"
        self.opened_elsewhere(address)
        if self.observer is not None:
            self.observer("open", address)
        return None

    def opened_elsewhere(self, address: str) -> None:
        """Count a connection without checking the limits (also another process's)."""
        self._open[address] = self._open.get(address, 0) + 1
        self._all += 1

    def close(self, address: str, *, shared: bool = True) -> None:
        current = self._open.get(address, 0)
        if current <= 1:
            self._open.pop(address, None)
        else:
            self._open[address] = current - 1
        if current > 0:
            self._all = max(0, self._all - 1)
        if shared and self.observer is not None:
            self.observer("close", address)

    def count(self, address: str) -> int:
        return self._open.get(address, 0)


@dataclass
class Limits:
    """The limiter objects one SMTP front shares between its listeners."""

    senders: TokenBucket
    addresses: TokenBucket
    lockout: AuthLockout
    connections: ConnectionCounter
    directory: TtlCache

    @classmethod
    def from_settings(cls, mta: MtaSettings, *, clock: Clock = time.monotonic) -> Limits:
        return cls(
            senders=TokenBucket(mta.rate_per_sender, mta.rate_burst, clock=clock),
            addresses=TokenBucket(mta.rate_per_address, mta.rate_burst * 5, clock=clock),
            lockout=AuthLockout(threshold=mta.auth_lockout_threshold,
                                base_seconds=mta.auth_lockout_seconds,
                                max_seconds=mta.auth_lockout_max_seconds,
                                address_threshold=mta.auth_lockout_address_threshold,
                                clock=clock),
            connections=ConnectionCounter(mta.max_connections_per_address,
                                          mta.max_connections),
            directory=TtlCache(mta.directory_cache_seconds, clock=clock),
        )

    def share(self, send: Callable[[list[object]], None]) -> None:
        """Hand every change to ``send`` as a JSON-able event, for :meth:`apply` elsewhere."""
        self.senders.observer = lambda key, cost: send(["sender", key, cost])
        self.addresses.observer = lambda key, cost: send(["address", key, cost])
        self.lockout.observer = lambda outcome, login, address: send([outcome, login, address])
        self.connections.observer = lambda event, address: send([event, address])

    def apply(self, event: list[object]) -> None:
        """Apply a change another process made (never passed on again). Unknown or malformed
        events are ignored: they come from our own processes, and a limit is not worth a crash."""
        match event:
            case ["sender", str(key), int(cost) | float(cost)]:
                self.senders.taken_elsewhere(key, float(cost))
            case ["address", str(key), int(cost) | float(cost)]:
                self.addresses.taken_elsewhere(key, float(cost))
            case ["failure", str(login), str(address)]:
                self.lockout.failure(login, address, shared=False)
            case ["success", str(login), str(address)]:
                self.lockout.success(login, address, shared=False)
            case ["open", str(address)]:
                self.connections.opened_elsewhere(address)
            case ["close", str(address)]:
                self.connections.close(address, shared=False)


class TtlCache:
    """A small cache of directory facts for the hot path (MAIL status, RCPT lookups).

    Entries live ``ttl`` seconds (0 disables the cache): a suspension, a patient's opposition or
    a new trust domain takes effect within that delay on an open front. Bounded in size.
    """

    def __init__(self, ttl: float, *, clock: Clock = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.ttl = ttl
        self.clock = clock
        self._items: _Bounded = _Bounded(max_keys)

    def get(self, key: str) -> object | None:
        if self.ttl <= 0:
            return None
        entry = self._items.get(key)
        if not isinstance(entry, tuple):
            return None
        expires, value = entry
        if self.clock() >= expires:
            self._items.pop(key, None)
            return None
        return value

    def put(self, key: str, value: object) -> None:
        if self.ttl > 0:
            self._items[key] = (self.clock() + self.ttl, value)
            self._items.touch(key)
