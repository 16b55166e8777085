"""Fixed calendar windows in UTC. Every replica computes the same bounds from the clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Window = Literal["minute", "hour", "day", "month"]
WINDOWS: tuple[Window, ...] = ("minute", "hour", "day", "month")
_FIXED_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# Counters outlive their window a little so a late charge or refund still finds them.
EXPIRY_SLACK_SECONDS = 3600


def bounds(window: Window, now: float) -> tuple[int, int]:
    """(start, end) of the window containing ``now``, in Unix seconds."""
    if window != "month":
        size = _FIXED_SECONDS[window]
        start = int(now) // size * size
        return start, start + size
    moment = datetime.fromtimestamp(now, UTC)
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if first.month == 12:
        following = first.replace(year=first.year + 1, month=1)
    else:
        following = first.replace(month=first.month + 1)
    return int(first.timestamp()), int(following.timestamp())
