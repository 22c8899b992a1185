"""The days a medication request or dispense covers, as CQL CumulativeMedicationDuration 4.1 computes them
(``medicationRequestPeriod`` / ``medicationDispensePeriod``), as polars expressions over one table's columns.

Bound as two Date columns ``_supply_start`` / ``_supply_end`` on the rows of the tables that need them, so
timing relations (``this.supply``) and cumulative covered days read them like any other interval.
"""

from __future__ import annotations

import polars as pl

# Timing.repeat.periodUnit (UCUM) in days: the ToDaily conversion.
PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}

REQUEST_COLUMNS = (
    "tz_offset_min", "bounds_start", "bounds_end", "authored_on", "validity_start", "timing_frequency",
    "timing_frequency_max", "timing_period", "timing_period_unit", "timing_times_of_day", "dose_value",
    "expected_supply_days", "dispense_quantity", "refills",
)  # fmt: skip
DISPENSE_COLUMNS = (
    "tz_offset_min", "when_handed_over", "when_prepared", "days_supply", "quantity", "dose_value", "timing_frequency",
    "timing_frequency_max", "timing_period", "timing_period_unit", "timing_times_of_day",
)  # fmt: skip
SUPPLY_COLUMNS = {"medication_request": REQUEST_COLUMNS, "medication_dispense": DISPENSE_COLUMNS}


def _doses_per_day() -> pl.Expr:
    frequency = pl.coalesce(pl.col("timing_frequency_max"), pl.col("timing_frequency")).cast(pl.Float64)
    unit_days = pl.col("timing_period_unit").replace_strict(
        PERIOD_DAYS, default=None, return_dtype=pl.Float64
    )
    daily = frequency / (pl.col("timing_period") * unit_days)
    times = pl.col("timing_times_of_day").list.len().cast(pl.Float64)
    return pl.coalesce(daily, pl.when(times > 0).then(times), pl.lit(1.0))


def _local_date(instant: pl.Expr) -> pl.Expr:
    """CQL ``date from`` a value: its calendar date in the offset it was recorded with (UTC when none)."""
    return (instant + pl.duration(minutes=pl.col("tz_offset_min").fill_null(0).cast(pl.Int64))).dt.date()


def _end(start: pl.Expr, days: pl.Expr) -> pl.Expr:
    """start + (days - 1) days, whole days (a partial day covers the day it starts)."""
    return start + pl.duration(days=(days.ceil() - 1).cast(pl.Int64))


def supply_columns(table: str) -> list[pl.Expr]:
    """``_supply_start`` and ``_supply_end`` (Date) for a medication_request or medication_dispense frame."""
    if table == "medication_request":
        start = _local_date(
            pl.coalesce(pl.col("bounds_start"), pl.col("authored_on"), pl.col("validity_start"))
        )
        by_quantity = pl.col("dispense_quantity") / (pl.col("dose_value") * _doses_per_day())
        total = pl.coalesce(pl.col("expected_supply_days"), by_quantity) * (
            1 + pl.col("refills").fill_null(0).cast(pl.Float64)
        )
        end: pl.Expr = (
            pl.when(start.is_not_null() & total.is_not_null() & (total > 0))
            .then(_end(start, total))
            .when(start.is_not_null() & pl.col("bounds_end").is_not_null())
            .then(_local_date(pl.col("bounds_end")))
        )
        return [pl.when(end.is_not_null()).then(start).alias("_supply_start"), end.alias("_supply_end")]
    start = _local_date(pl.coalesce(pl.col("when_handed_over"), pl.col("when_prepared")))
    days = pl.coalesce(pl.col("days_supply"), pl.col("quantity") / (pl.col("dose_value") * _doses_per_day()))
    end = pl.when(start.is_not_null() & days.is_not_null() & (days > 0)).then(_end(start, days))
    return [pl.when(end.is_not_null()).then(start).alias("_supply_start"), end.alias("_supply_end")]
