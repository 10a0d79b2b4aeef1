"""Time rules of notices: quiet hours for SMS, exponential backoff with jitter. Pure functions.

Quiet hours are a local wall-clock range in ``notify.timezone`` (``zoneinfo``), which may span
midnight (``21:00-08:00``); an SMS due inside it is deferred to the range's end, computed in
local time so that daylight-saving changes land on the right hour. Backoff is "equal jitter"
(half fixed, half random) on ``base * 2**(attempt-1)`` capped at ``maximum``, so that many
notices failing together do not come back in one burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    zone: ZoneInfo

    @classmethod
    def parse(cls, text: str, zone: str) -> QuietHours | None:
        """``"21:00-08:00"`` in ``zone``; ``None`` for an empty string or an empty range."""
        text = text.strip()
        if not text:
            return None
        first, _, second = text.partition("-")
        start, end = time.fromisoformat(first), time.fromisoformat(second)
        if start == end:
            return None
        return cls(start, end, ZoneInfo(zone))

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def release(self, moment: datetime) -> datetime:
        """When an SMS due at ``moment`` may go: ``moment`` itself outside quiet hours, else the
        end of the range (today's or tomorrow's, local time), in UTC."""
        if not self.contains(moment):
            return moment
        local = moment.astimezone(self.zone)
        end = datetime.combine(local.date(), self.end, tzinfo=self.zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=self.zone)
        return end.astimezone(UTC)


def backoff(attempt: int, *, base: float, maximum: float, rng: random.Random) -> timedelta:
    """Delay before attempt ``attempt + 1`` after ``attempt`` failures (attempt >= 1)."""
    ceiling = min(maximum, base * (2 ** max(0, attempt - 1)))
    return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))
