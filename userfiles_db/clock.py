"""Time: always timezone-aware UTC, with millisecond precision where it goes to BSON."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]
"""A callable returning the current time as an aware datetime; tests pass one they can move."""

UTC = dt.timezone.utc


def utc_now() -> dt.datetime:
    """The default clock: now, in UTC."""
    return dt.datetime.now(UTC)


def to_bson_time(value: dt.datetime) -> dt.datetime:
    """``value`` as aware UTC truncated to milliseconds, the precision of a BSON date.

    A naive datetime is taken to be UTC, as PyMongo does when it stores one.
    """
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        value = value.replace(tzinfo=UTC)
    else:
        value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def read_clock(clock: Clock) -> dt.datetime:
    """Call ``clock`` and return its time as BSON-precision UTC.

    Raises ``TypeError`` when the clock returns anything but an aware datetime: a naive "now" is
    exactly the bug this package exists to remove.
    """
    if clock is utc_now:
        # The default clock is aware UTC by construction: no checks, and truncated to BSON's
        # milliseconds by subtraction (cheaper than replace(): this runs on every store call).
        now = dt.datetime.now(UTC)
        return now - dt.timedelta(0, 0, now.microsecond % 1000)
    now = clock()
    if not isinstance(now, dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise TypeError(f"clock() must return an aware datetime, got {now!r}")
    return to_bson_time(now)
