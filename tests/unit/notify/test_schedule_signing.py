"""Quiet hours (local time, across midnight and DST), backoff bounds, webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import pytest

from missive.notify import signing
from missive.notify.schedule import QuietHours, backoff

PARIS = "Europe/Paris"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("moment", "quiet"), [
    (utc(2026, 1, 15, 19, 59), False),  # 20:59 Paris (UTC+1)
    (utc(2026, 1, 15, 20, 0), True),    # 21:00 Paris
    (utc(2026, 1, 15, 23, 30), True),   # 00:30 Paris, next day
    (utc(2026, 1, 16, 6, 59), True),    # 07:59 Paris
    (utc(2026, 1, 16, 7, 0), False),    # 08:00 Paris
    (utc(2026, 7, 15, 19, 30), True),   # 21:30 Paris in summer (UTC+2)
    (utc(2026, 7, 15, 6, 30), False),   # 08:30 Paris in summer
])
def test_quiet_hours_span_midnight_in_local_time(moment: datetime, quiet: bool) -> None:
    rule = QuietHours.parse("21:00-08:00", PARIS)
    assert rule is not None
    assert rule.contains(moment) is quiet
    released = rule.release(moment)
    assert not rule.contains(released)
    assert (released == moment) is (not quiet)


def test_release_is_the_end_of_the_range() -> None:
    rule = QuietHours.parse("21:00-08:00", PARIS)
    assert rule is not None
    assert rule.release(utc(2026, 1, 15, 22, 0)) == utc(2026, 1, 16, 7, 0)   # 23:00 → 08:00
    assert rule.release(utc(2026, 1, 16, 1, 0)) == utc(2026, 1, 16, 7, 0)    # 02:00 → 08:00
    # The night the clocks go forward (29 March 2026): 08:00 local is 06:00 UTC.
    assert rule.release(utc(2026, 3, 28, 22, 0)) == utc(2026, 3, 29, 6, 0)


def test_daytime_range_and_empty() -> None:
    rule = QuietHours.parse("12:00-14:00", "UTC")
    assert rule is not None
    assert rule.contains(utc(2026, 1, 1, 13, 0)) and not rule.contains(utc(2026, 1, 1, 14, 0))
    assert QuietHours.parse("", PARIS) is None
    assert QuietHours.parse("08:00-08:00", PARIS) is None


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(300.0, 10 * 2 ** (attempt - 1))
        for _ in range(20):
            delay = backoff(attempt, base=10, maximum=300, rng=rng).total_seconds()
            assert ceiling / 2 <= delay <= ceiling
    delays = {backoff(3, base=10, maximum=300, rng=rng) for _ in range(20)}
    assert len(delays) > 1  # jitter: not all equal


def test_signature_verifies_with_the_shared_secret_only() -> None:
    body = b'{"event":"message.delivered"}'
    header = signing.sign(b"s3cret", body, 1_700_000_000)
    # Computed here independently of the module: HMAC-SHA256 over "<t>.<body>".
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert signing.verify(b"s3cret", header, body, now=1_700_000_010)
    assert not signing.verify(b"other", header, body, now=1_700_000_010)
    assert not signing.verify(b"s3cret", header, body + b" ", now=1_700_000_010)
    assert not signing.verify(b"s3cret", header, body, now=1_700_000_000 + 3600)  # replayed
    assert not signing.verify(b"s3cret", "v1=" + expected, body, now=1_700_000_000)
    assert not signing.verify(b"s3cret", "t=abc,v1=00", body, now=1_700_000_000)


def test_backoff_first_delay_bounds() -> None:
    delay = backoff(1, base=30, maximum=3600, rng=random.Random(1))
    assert timedelta(seconds=15) <= delay <= timedelta(seconds=30)
