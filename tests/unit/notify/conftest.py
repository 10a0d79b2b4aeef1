"""Fixtures for notify tests; the helpers themselves are in ``notify_helpers``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from notify_helpers import Clock


@pytest.fixture
def clock(core: Any) -> Clock:
    """A frozen clock 30 s ahead, so that rows the test delivers (in real time) are in its past
    but a 60 s coalescing window opened by them is not over yet."""
    return Clock(datetime.now(UTC) + timedelta(seconds=30))
