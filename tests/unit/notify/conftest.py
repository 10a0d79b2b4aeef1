"""Fixtures for notify tests; the helpers themselves are in ``notify_helpers``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from notify_helpers import Clock


@pytest.fixture
def clock(core: Any) -> Clock:
    """A clock a little after now, so that rows written by deliveries are in its past."""
    return Clock(datetime.now(UTC) + timedelta(seconds=1))
