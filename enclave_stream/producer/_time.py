"""Wall-clock timestamps the way JavaScript's ``Date.prototype.toISOString`` writes them."""

from __future__ import annotations

__all__ = ["Now", "iso_timestamp", "utc_now"]

from collections.abc import Callable
from datetime import datetime, timezone

Now = Callable[[], datetime]
"""A wall clock: returns the current time (timezone-aware; naive means UTC)."""


def utc_now() -> datetime:
    """The current UTC time."""
    return datetime.now(timezone.utc)


def iso_timestamp(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (milliseconds, truncated).

    >>> iso_timestamp(datetime(2024, 5, 1, 12, 30, 5, 123999, tzinfo=timezone.utc))
    '2024-05-01T12:30:05.123Z'
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}."
        f"{moment.microsecond // 1000:03d}Z"
    )
