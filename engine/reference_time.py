"""Time for the reference interpreter (spec section 4), one value at a time, in plain ``datetime``.

A *point* is a UTC instant together with the offset it was recorded in (so that ``precision: day`` can take
each value's own local date). The instant may be the beginning or end of time (CQL closed null boundaries) or
``None``: unknown. Every comparison is Kleene: an unknown operand makes it unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from definitions.calendar import shift_date
from definitions.model import TimeRef, Timing, Window

BOT = datetime.min.replace(tzinfo=UTC)
EOT = datetime.max.replace(tzinfo=UTC)
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})

Comparable = datetime | date


@dataclass(frozen=True)
class Point:
    """An instant (UTC; ``BOT``/``EOT`` for the ends of time; ``None`` unknown) and its recorded offset."""

    at: datetime | None
    offset_min: int = 0

    def reduce(self, precision: str) -> Comparable | None:
        """The value compared: the instant, or with day precision its local calendar date."""
        if self.at is None:
            return None
        if precision == "instant":  # CQL DateTimes compare at millisecond precision
            return self.at.replace(microsecond=self.at.microsecond // 1000 * 1000)
        if self.at == BOT:
            return date.min
        if self.at == EOT:
            return date.max
        return (self.at + timedelta(minutes=self.offset_min)).date()


UNKNOWN = Point(None)


@dataclass(frozen=True)
class Interval:
    """``[lo, hi]`` (or open ends per ``closed``); a point is the degenerate interval ``[p, p]``."""

    lo: Point
    hi: Point
    lo_closed: bool = True
    hi_closed: bool = True


def utc(value: Any) -> datetime | None:
    """A table's datetime as an aware UTC datetime (naive values are UTC, as the canonical schema says)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {value!r}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def row_offset(row: dict[str, Any]) -> int:
    offset = row.get("tz_offset_min")
    return 0 if offset is None else int(offset)


def local_date(value: datetime, offset_min: int) -> date:
    return (value + timedelta(minutes=offset_min)).date()


@dataclass(frozen=True)
class TimeContext:
    """What anchors refer to: the period (evaluation time zone), the patient, and the current rows."""

    period_start: date
    period_end: date
    tz_offset_min: int
    birth_date: date | None
    this: dict[str, Any] | None = None
    other: dict[str, Any] | None = None
    death: datetime | None = None

    def local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), tzinfo=UTC) - timedelta(minutes=self.tz_offset_min)

    def period(self) -> Interval:
        end = datetime.combine(self.period_end, time(23, 59, 59, 999999), tzinfo=UTC)
        end -= timedelta(minutes=self.tz_offset_min)
        off = self.tz_offset_min
        return Interval(Point(self.local_midnight(self.period_start), off), Point(end, off))

    def row(self, which: str) -> dict[str, Any]:
        row = self.this if which == "this" else self.other
        if row is None:
            where = "a filter" if which == "this" else "with/without"
            raise ValueError(f"'{which}' is only available inside {where}")
        return row


def row_interval(row: dict[str, Any], prevalence: bool = False) -> Interval:
    """``this`` (closed null boundaries; both null: unknown) or ``this.prevalence`` (spec section 4)."""
    start, end, off = utc(row.get("start")), utc(row.get("end")), row_offset(row)
    if start is None and end is None and not prevalence:
        return Interval(UNKNOWN, UNKNOWN)
    lo = Point(BOT if start is None else start, off)
    if end is not None:
        hi = Point(end, off)
    elif not prevalence or row.get("clinical_status") in ACTIVE_CLINICAL:
        hi = Point(EOT, off)
    else:
        hi = UNKNOWN
    return Interval(lo, hi)


def anchor(ref: str, ctx: TimeContext) -> Point | Interval:
    """The unshifted value of a time anchor."""
    if ref == "period":
        return ctx.period()
    if ref == "period.start":
        return ctx.period().lo
    if ref == "period.end":
        return ctx.period().hi
    if ref == "death":
        return UNKNOWN if ctx.death is None else Point(ctx.death, 0)
    if ref == "birth_date":
        if ctx.birth_date is None:
            return UNKNOWN
        return Point(ctx.local_midnight(ctx.birth_date), ctx.tz_offset_min)
    which, _, part = ref.partition(".")
    row = ctx.row(which)
    if part == "":
        return row_interval(row)
    if part == "prevalence":
        return row_interval(row, prevalence=True)
    start, end, off = utc(row.get("start")), utc(row.get("end")), row_offset(row)
    if part == "latest":
        value = end if end is not None else start
        return UNKNOWN if value is None else Point(value, off)
    if part == "earliest":
        value = start if start is not None else end
        return UNKNOWN if value is None else Point(value, off)
    if part in ("extended", "extended_start"):
        whole = row_interval(row)
        if whole.lo is UNKNOWN and whole.hi is UNKNOWN:
            return whole if part == "extended" else UNKNOWN
        ext = row.get("_ext_start", row.get("start"))
        lo = Point(BOT if ext is None else utc(ext), off)
        return Interval(lo, whole.hi) if part == "extended" else lo
    if part == "supply":
        return supply_interval(row)
    if part in ("supply_start", "supply_end"):
        supply = supply_interval(row)
        return supply.lo if part == "supply_start" else supply.hi
    if part not in ("start", "end"):
        value = utc(row.get(part))  # one of the row's own instant columns
        return UNKNOWN if value is None else Point(value, off)
    whole = row_interval(row)
    return whole.lo if part == "start" else whole.hi


_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}


def supply_interval(row: dict[str, Any]) -> Interval:
    """The days a medication request (or dispense) covers, per CQL CumulativeMedicationDuration 4.1
    medicationRequestPeriod / medicationDispensePeriod, written plainly; unknown when the record does not say."""
    frequency = row.get("timing_frequency_max") or row.get("timing_frequency")
    period, unit = row.get("timing_period"), row.get("timing_period_unit")
    per_day = None
    if frequency is not None and period and unit in _PERIOD_DAYS:
        per_day = frequency / (period * _PERIOD_DAYS[unit])
    times = len(row.get("timing_times_of_day") or [])
    doses = per_day if per_day is not None else (float(times) if times else 1.0)
    dose = row.get("dose_value")
    if "when_handed_over" in row or "when_prepared" in row:
        begin = utc(row.get("when_handed_over")) or utc(row.get("when_prepared"))
        days = row.get("days_supply")
        if days is None and row.get("quantity") is not None and dose:
            days = row["quantity"] / (dose * doses)
        last = None
    else:
        begin = utc(row.get("bounds_start")) or utc(row.get("authored_on")) or utc(row.get("validity_start"))
        days = row.get("expected_supply_days")
        if days is None and row.get("dispense_quantity") is not None and dose:
            days = row["dispense_quantity"] / (dose * doses)
        if days is not None:
            days = days * (1 + (row.get("refills") or 0))
        last = utc(row.get("bounds_end"))
    if begin is None:
        return Interval(UNKNOWN, UNKNOWN)
    offset = timedelta(minutes=row.get("tz_offset_min") or 0)
    first_day = (begin + offset).date()
    if days is not None and days > 0:
        last_day = first_day + timedelta(days=math.ceil(days) - 1)
    elif last is not None:
        last_day = (last + offset).date()
    else:
        return Interval(UNKNOWN, UNKNOWN)
    lo = datetime.combine(first_day, time.min, UTC)
    hi = datetime.combine(last_day, time.max, UTC)
    return Interval(Point(lo, 0), Point(hi, 0))


def shift(point: Point, ref: TimeRef) -> Point:
    """Offset then month/day, computed on the point's local wall clock (the ends of time do not move)."""
    if (
        point.at is None
        or point.at in (BOT, EOT)
        or (not ref.offset and ref.month is None and ref.day is None)
    ):
        return point
    wall = (point.at + timedelta(minutes=point.offset_min)).replace(tzinfo=None)
    wall = shift_date(wall, ref)
    return Point(wall.replace(tzinfo=UTC) - timedelta(minutes=point.offset_min), point.offset_min)


def resolve(ref: TimeRef, ctx: TimeContext) -> Point | Interval:
    value = anchor(ref.ref, ctx)
    if isinstance(value, Interval):
        if ref.offset or ref.month is not None or ref.day is not None:
            raise ValueError(f"{ref.ref} is an interval and cannot be shifted")
        return value
    return shift(value, ref)


def as_interval(value: Point | Interval) -> Interval:
    return value if isinstance(value, Interval) else Interval(value, value)


def window(target: Window | TimeRef, ctx: TimeContext) -> Interval:
    if isinstance(target, Window):
        lo, hi = resolve(target.start, ctx), resolve(target.end, ctx)
        if isinstance(lo, Interval) or isinstance(hi, Interval):
            raise ValueError("a window's start and end must be points")
        return Interval(lo, hi, target.closed[0] == "[", target.closed[1] == "]")
    return as_interval(resolve(target, ctx))


# --------------------------------------------------------------------------------------------- Kleene logic


def k_and(*values: bool | None) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def k_or(*values: bool | None) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def k_not(value: bool | None) -> bool | None:
    return None if value is None else not value


def le(a: Comparable | None, b: Comparable | None, strict: bool = False) -> bool | None:
    """``a <= b`` (``a < b`` when strict); unknown when either side is."""
    if a is None or b is None:
        return None
    return a < b if strict else a <= b


def timing_holds(timing: Timing, ctx: TimeContext) -> bool | None:
    """The truth of a timing relation (spec section 4 table), Kleene."""
    prec = "day" if timing.rel == "same_day" else timing.precision
    left = resolve(timing.left, ctx)
    right: Point | Interval = (
        window(timing.right, ctx) if isinstance(timing.right, Window) else resolve(timing.right, ctx)
    )
    rel = timing.rel
    if rel in ("before", "after", "on_or_before", "on_or_after", "same_day"):
        if isinstance(left, Interval) or isinstance(right, Interval):
            raise ValueError(f"{rel} relates two points")
        lv, rv = left.reduce(prec), right.reduce(prec)
        if rel == "before":
            return le(lv, rv, strict=True)
        if rel == "after":
            return le(rv, lv, strict=True)
        if rel == "on_or_before":
            return le(lv, rv)
        if rel == "on_or_after":
            return le(rv, lv)
        return None if lv is None or rv is None else lv == rv
    li, ri = as_interval(left), as_interval(right)
    l_lo, l_hi, r_lo, r_hi = li.lo.reduce(prec), li.hi.reduce(prec), ri.lo.reduce(prec), ri.hi.reduce(prec)
    if rel == "during":  # left within right: right's open ends are strict
        return k_and(le(r_lo, l_lo, not ri.lo_closed), le(l_hi, r_hi, not ri.hi_closed))
    if rel == "overlaps":
        return k_and(le(l_lo, r_hi, not ri.hi_closed), le(r_lo, l_hi, not ri.lo_closed))
    if rel == "includes":  # right within left: the container (left, always closed) decides strictness
        return k_and(le(l_lo, r_lo, not li.lo_closed), le(r_hi, l_hi, not li.hi_closed))
    raise ValueError(f"unknown relation {rel}")
