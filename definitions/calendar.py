"""CQL calendar arithmetic on dates and instants: adding months clamps to the end of the target month."""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from typing import TypeVar

from definitions.model import Duration, TimeRef

D = TypeVar("D", date, datetime)


def add_months(value: D, months: int) -> D:
    total = value.year * 12 + (value.month - 1) + months
    year, month = divmod(total, 12)
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def add_duration(value: D, duration: Duration) -> D:
    """``value + duration`` as CQL computes it (years and months calendar-wise, the rest exactly)."""
    n = duration.amount
    if duration.unit == "year":
        return add_months(value, 12 * n)
    if duration.unit == "month":
        return add_months(value, n)
    if duration.unit == "week":
        return value + timedelta(days=7 * n)
    if duration.unit == "day":
        return value + timedelta(days=n)
    if not isinstance(value, datetime):
        raise ValueError(f"cannot add {duration.unit}s to a date")
    return value + (timedelta(hours=n) if duration.unit == "hour" else timedelta(minutes=n))


def shift_date(value: D, ref: TimeRef) -> D:
    """Apply a TimeRef's offset, then its month/day (clamped), to an anchor value."""
    for duration in ref.offset:
        value = add_duration(value, duration)
    if ref.month is not None or ref.day is not None:
        month = ref.month or value.month
        day = min(ref.day or value.day, calendar.monthrange(value.year, month)[1])
        value = value.replace(month=month, day=day)
        if isinstance(value, datetime) and (ref.month is not None or ref.day is not None):
            value = value.replace(hour=0, minute=0, second=0, microsecond=0)
    return value
