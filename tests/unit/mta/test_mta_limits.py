"""P10 limiters with an injected clock: token buckets, connection counts, and the lockout that
backs off, is capped, and never locks a login out from another client address."""

from __future__ import annotations

from collections.abc import Callable

from missive.mta.limits import AuthLockout, ConnectionCounter, Limits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(60, 3, clock=clock)  # one a second, three at once
    assert [bucket.take("a") for _ in range(4)] == [True, True, True, False]
    assert bucket.take("b")  # keys are independent
    clock.now += 1.0
    assert bucket.take("a")
    assert not bucket.take("a")


def test_token_bucket_zero_rate_means_unlimited() -> None:
    bucket = TokenBucket(0, 1, clock=Clock())
    assert all(bucket.take("a") for _ in range(100))


def test_lockout_after_threshold_with_capped_exponential_backoff() -> None:
    clock = Clock()
    lock = AuthLockout(threshold=3, base_seconds=10, max_seconds=25, clock=clock)
    for _ in range(2):
        lock.failure("dr@x.test", "192.0.2.1")
    assert lock.retry_after("dr@x.test", "192.0.2.1") == 0
    lock.failure("dr@x.test", "192.0.2.1")
    assert lock.retry_after("dr@x.test", "192.0.2.1") == 10
    # another address is never locked by the attacker's failures
    assert lock.retry_after("dr@x.test", "198.51.100.7") == 0
    clock.now += 10
    assert lock.retry_after("dr@x.test", "192.0.2.1") == 0
    for _ in range(3):
        lock.failure("dr@x.test", "192.0.2.1")
    assert lock.retry_after("dr@x.test", "192.0.2.1") == 20
    clock.now += 20
    for _ in range(3):
        lock.failure("dr@x.test", "192.0.2.1")
    assert lock.retry_after("dr@x.test", "192.0.2.1") == 25  # capped, not 40
    clock.now += 25
    for _ in range(3):
        lock.failure("DR@X.TEST", "192.0.2.1")  # logins compare case-insensitively
    assert lock.retry_after("dr@x.test", "192.0.2.1") == 25


def test_success_clears_and_history_is_forgotten() -> None:
    clock = Clock()
    lock = AuthLockout(threshold=2, base_seconds=10, forget_seconds=100, clock=clock)
    lock.failure("a", "ip")
    lock.success("a", "ip")
    lock.failure("a", "ip")
    assert lock.retry_after("a", "ip") == 0
    lock.failure("a", "ip")
    assert lock.retry_after("a", "ip") == 10
    clock.now += 1000
    lock.failure("a", "ip")
    assert lock.retry_after("a", "ip") == 0  # first lock again after a quiet period


def test_password_spraying_locks_the_address_only() -> None:
    clock = Clock()
    lock = AuthLockout(threshold=5, address_threshold=6, base_seconds=30, clock=clock)
    for i in range(6):
        lock.failure(f"user{i}", "203.0.113.9")
    assert lock.retry_after("someone-else", "203.0.113.9") == 30
    assert lock.retry_after("someone-else", "203.0.113.10") == 0


def test_connection_counter() -> None:
    counter = ConnectionCounter(per_address=2, total=3)
    assert counter.open("a") is None and counter.open("a") is None
    assert counter.open("a") == "address"
    assert counter.open("b") is None
    assert counter.open("c") == "total"
    counter.close("a")
    assert counter.count("a") == 1
    assert counter.open("c") is None


def test_directory_cache_expires_and_can_be_disabled() -> None:
    from missive.mta.limits import TtlCache

    clock = Clock()
    cache = TtlCache(5.0, clock=clock)
    cache.put("k", "active")
    assert cache.get("k") == "active"
    clock.now += 5.0
    assert cache.get("k") is None
    off = TtlCache(0.0, clock=clock)
    off.put("k", "active")
    assert off.get("k") is None


def _pair(mta_overrides: dict[str, object]) -> tuple[Limits, Limits, list[list[object]]]:
    """Two workers' limits wired as the main process wires them (events through JSON)."""
    import json

    from missive.config import MtaSettings

    mta = MtaSettings(**mta_overrides)  # type: ignore[arg-type]
    clock = Clock()
    a, b = Limits.from_settings(mta, clock=clock), Limits.from_settings(mta, clock=clock)
    seen: list[list[object]] = []

    def to(other: Limits) -> Callable[[list[object]], None]:
        def send(event: list[object]) -> None:
            seen.append(event)
            other.apply(json.loads(json.dumps(event)))
        return send

    a.share(to(b))
    b.share(to(a))
    return a, b, seen


def test_shared_limits_count_for_the_node() -> None:
    a, b, seen = _pair({"rate_per_sender": 60, "rate_burst": 4, "auth_lockout_threshold": 2,
                        "max_connections_per_address": 3})
    # Tokens: 4 at once for the sender, whichever worker takes them.
    assert [a.senders.take("pro"), b.senders.take("pro"), a.senders.take("pro"),
            b.senders.take("pro")] == [True] * 4
    assert not a.senders.take("pro") and not b.senders.take("pro")
    # Lockout: one failure in each worker is two for the node.
    a.lockout.failure("pro", "192.0.2.1")
    assert b.lockout.retry_after("pro", "192.0.2.1") == 0
    b.lockout.failure("pro", "192.0.2.1")
    assert a.lockout.retry_after("pro", "192.0.2.1") > 0
    assert b.lockout.retry_after("pro", "192.0.2.1") > 0
    b.lockout.success("pro", "192.0.2.1")
    assert a.lockout.retry_after("pro", "192.0.2.1") == 0
    # Connections per address: 3 for the node.
    assert a.connections.open("192.0.2.9") is None
    assert b.connections.open("192.0.2.9") is None
    assert a.connections.open("192.0.2.9") is None
    assert b.connections.open("192.0.2.9") == "address"
    a.connections.close("192.0.2.9")
    assert b.connections.open("192.0.2.9") is None
    # Applied events are not passed on again (no echo between the workers).
    kinds = [event[0] for event in seen]
    assert kinds.count("sender") == 4 and kinds.count("failure") == 2
    assert kinds.count("open") == 4 and kinds.count("close") == 1


def test_malformed_shared_events_are_ignored() -> None:
    a, _b, _seen = _pair({})
    for event in (["sender"], ["open", 1], ["nonsense", "x"], [], ["failure", "a", None]):
        a.apply(event)
    assert a.connections.count("1") == 0
