"""Time references and relations as polars expressions (docs/definition-language.md, section 4).

A data row's side is named by a column suffix ("" for this row, "_o" for the other row of a ``with``). Null
boundaries follow CQL: a closed null start is the beginning of time, a closed null end the end of time; both
null is unknown. With day precision every value becomes its own local date first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from definitions.calendar import shift_date
from definitions.model import Duration, Target, TimeRef, Timing, Window

MIN_TS = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TS = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
ACTIVE_STATUSES = ("active", "recurrence", "relapse")

POLARS_UNIT = {"year": "y", "month": "mo", "week": "w", "day": "d", "hour": "h", "minute": "m"}


@dataclass(frozen=True)
class Period:
    """The measurement period in the evaluation time zone (local dates, both included)."""

    start: date
    end: date
    tz_offset_min: int = 0

    def local_start(self) -> datetime:
        return datetime.combine(self.start, time(0, 0))

    def local_end(self) -> datetime:
        return datetime.combine(self.end, time(23, 59, 59, 999999))

    def to_instant(self, local: datetime) -> datetime:
        return (local - timedelta(minutes=self.tz_offset_min)).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Point:
    expr: pl.Expr


@dataclass(frozen=True)
class Span:
    lo: pl.Expr
    hi: pl.Expr
    closed: str = "[]"


def _offset(expr: pl.Expr, durations: tuple[Duration, ...]) -> pl.Expr:
    """Shift by each calendar duration in order (polars offsets clamp month ends as CQL does)."""
    for duration in durations:
        expr = expr.dt.offset_by(f"{duration.amount}{POLARS_UNIT[duration.unit]}")
    return expr


def conv_point(expr: pl.Expr, suffix: str, precision: str) -> pl.Expr:
    return _local_date(expr, suffix) if precision == "day" else expr


# a stored ``end`` is the high boundary of the value as written (08:00:00 is kept as 08:00:00.999999)
_WRITTEN_TO = {4: "1h", 5: "1m", 6: "1s"}  # end_prec (hour, minute, second) -> truncation back to the value


def end_as_written(end: pl.Expr, end_prec: pl.Expr | None) -> pl.Expr:
    """The end value as written, at millisecond precision: CQL compares two DateTimes written to the second
    at that precision, so an ED visit ending at 08:00:00 ends "on or before" an admission at 08:00:00."""
    out = end.dt.truncate("1ms")
    if end_prec is None:
        return out
    for prec, unit in _WRITTEN_TO.items():
        out = pl.when(end_prec == prec).then(end.dt.truncate(unit)).otherwise(out)
    return out


def length_days() -> pl.Expr:
    """CQL ``difference in days between start and end`` of the row (each on its own local date)."""
    return (_local_date(pl.col("end"), "") - _local_date(pl.col("start"), "")).dt.total_days()


def _local_date(expr: pl.Expr, suffix: str) -> pl.Expr:
    offset = pl.col(f"tz_offset_min{suffix}").fill_null(0).cast(pl.Int64)
    return (expr + pl.duration(minutes=offset)).dt.date()


def data_value(ref: TimeRef, precision: str) -> Point | Span:
    """A ``this.*`` / ``other.*`` reference over the row's columns.

    Offsets shift the recorded values; the beginning and end of time that stand for closed null boundaries
    do not move (they are substituted after shifting).
    """
    side = "" if ref.ref.startswith("this") else "_o"
    part = ref.ref.split(".", 1)[1] if "." in ref.ref else "interval"
    if ref.month is not None or ref.day is not None:
        raise ValueError(f"{ref.ref}: month/day can only be set on period points")
    raw_start, raw_end = pl.col(f"start{side}"), pl.col(f"end{side}")
    start, end = _offset(raw_start, ref.offset), _offset(raw_end, ref.offset)
    unknown = raw_start.is_null() & raw_end.is_null()
    lo = pl.when(unknown).then(None).otherwise(start.fill_null(MIN_TS))
    hi = pl.when(unknown).then(None).otherwise(end.fill_null(MAX_TS))

    def conv(expr: pl.Expr) -> pl.Expr:
        return _local_date(expr, side) if precision == "day" else expr

    if part == "interval":
        return Span(conv(lo), conv(hi))
    if part in ("extended", "extended_start"):
        ext = _offset(pl.col(f"_ext_start{side}"), ref.offset)
        ext_lo = pl.when(unknown).then(None).otherwise(ext.fill_null(MIN_TS))
        if part == "extended_start":
            return Point(conv(ext_lo))
        return Span(conv(ext_lo), conv(hi))
    if part in ("supply_start", "supply_end"):
        day = pl.col(f"_{part}{side}")
        if precision == "day":
            return Point(_offset(day, ref.offset))
        instant = day.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        if part == "supply_end":
            instant = instant.dt.offset_by("1d") - pl.duration(microseconds=1)
        return Point(_offset(instant, ref.offset))
    if part == "supply":
        first, last = pl.col(f"_supply_start{side}"), pl.col(f"_supply_end{side}")
        if precision == "day":
            return Span(_offset(first, ref.offset), _offset(last, ref.offset))
        start_ts = first.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        end_ts = last.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").dt.offset_by("1d") - pl.duration(
            microseconds=1
        )
        return Span(_offset(start_ts, ref.offset), _offset(end_ts, ref.offset))
    if part not in ("prevalence", "start", "end", "latest", "earliest"):
        # one of the row's own instant columns (authored_on, issued, recorded_date...): null is unknown
        return Point(conv(_offset(pl.col(f"{part}{side}"), ref.offset)))
    if part == "prevalence":
        active = pl.col(f"clinical_status{side}").is_in(list(ACTIVE_STATUSES))
        prev_hi = pl.when(active).then(end.fill_null(MAX_TS)).otherwise(end)
        return Span(conv(start.fill_null(MIN_TS)), conv(prev_hi))
    chosen = {"start": lo, "end": hi, "latest": pl.coalesce(end, start), "earliest": pl.coalesce(start, end)}[
        part
    ]
    return Point(conv(chosen))


def period_point(ref: TimeRef, period: Period, precision: str) -> Point:
    local = period.local_start() if ref.ref == "period.start" else period.local_end()
    shifted = shift_date(local, ref)
    if precision == "day":
        return Point(pl.lit(shifted.date()))
    return Point(pl.lit(period.to_instant(shifted), dtype=pl.Datetime("us", "UTC")))


def resolve(ref: TimeRef, period: Period, precision: str) -> Point | Span:
    if ref.ref == "period":
        return Span(
            period_point(TimeRef(ref="period.start"), period, precision).expr,
            period_point(TimeRef(ref="period.end"), period, precision).expr,
        )
    if ref.ref.startswith("period."):
        return period_point(ref, period, precision)
    if ref.ref == "death":
        return Point(conv_point(_offset(pl.col("deceased_datetime"), ref.offset), "", precision))
    if ref.ref == "birth_date":
        birth = pl.col("birth_date")
        if precision == "day":
            return Point(_offset(birth, ref.offset))
        return Point(_offset(birth.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"), ref.offset))
    return data_value(ref, precision)


def resolve_target(target: Target, period: Period, precision: str) -> Point | Span:
    if isinstance(target, Window):
        lo = resolve(target.start, period, precision)
        hi = resolve(target.end, period, precision)
        if not isinstance(lo, Point) or not isinstance(hi, Point):
            raise ValueError("window ends must be points")
        return Span(lo.expr, hi.expr, target.closed)
    return resolve(target, period, precision)


def _le(a: pl.Expr, b: pl.Expr, strict: bool) -> pl.Expr:
    return a < b if strict else a <= b


def _to_ms(value: Point | Span, precision: str) -> Point | Span:
    """Instants compare at millisecond precision, as CQL DateTimes do: a high boundary stored as
    ``.000999`` equals the ``.000`` it stands for (an observation stay ending when the admission starts)."""
    if precision != "instant":
        return value
    if isinstance(value, Point):
        return Point(value.expr.dt.truncate("1ms"))
    return Span(value.lo.dt.truncate("1ms"), value.hi.dt.truncate("1ms"), value.closed)


@functools.lru_cache(maxsize=4096)
def relation(timing: Timing, period: Period) -> pl.Expr:
    """The boolean (Kleene) expression of a timing relation over the row's columns."""
    precision = "day" if timing.rel == "same_day" else timing.precision
    left = _to_ms(resolve(timing.left, period, precision), precision)
    right = _to_ms(resolve_target(timing.right, period, precision), precision)
    rel = timing.rel
    if rel in ("before", "after", "on_or_before", "on_or_after", "same_day"):
        if not isinstance(left, Point) or not isinstance(right, Point):
            raise ValueError(f"{rel} relates two points")
        a, b = left.expr, right.expr
        return {"before": a < b, "after": a > b, "on_or_before": a <= b, "on_or_after": a >= b,
                "same_day": a == b}[rel]  # fmt: skip
    if rel == "includes":
        if not isinstance(left, Span):
            raise ValueError("includes needs an interval on the left")
        inner = right if isinstance(right, Span) else Span(right.expr, right.expr)
        return _le(left.lo, inner.lo, left.closed[0] == "(") & _le(inner.hi, left.hi, left.closed[1] == ")")
    if not isinstance(right, Span):
        raise ValueError(f"{rel} needs an interval on the right")
    open_lo, open_hi = right.closed[0] == "(", right.closed[1] == ")"
    lspan = left if isinstance(left, Span) else Span(left.expr, left.expr)
    if rel == "during":
        return _le(right.lo, lspan.lo, open_lo) & _le(lspan.hi, right.hi, open_hi)
    if rel == "overlaps":
        return _le(lspan.lo, right.hi, open_hi) & _le(right.lo, lspan.hi, open_lo)
    raise ValueError(f"unknown relation {rel}")


def point_date(ref: TimeRef, period: Period) -> date:
    """A period-relative point as a local date (ages, windows of covered days)."""
    expr_point = shift_date(period.local_start() if ref.ref == "period.start" else period.local_end(), ref)
    return expr_point.date()
