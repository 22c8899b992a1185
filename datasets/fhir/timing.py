"""FHIR date / dateTime / instant strings to closed UTC intervals, vectorized.

A value becomes its SQL-on-FHIR ``lowBoundary`` and ``highBoundary`` at its own precision: ``2024-03`` is
``[2024-03-01T00:00:00, 2024-03-31T23:59:59.999999]``. Values that carry an offset (``Z`` or ``+hh:mm``) are
converted to UTC and keep the offset in ``tz``. Values without one (dates, partial dates) are read in the
evaluation default zone, UTC, and get ``tz = null`` so the engine knows the offset was not written and may
re-anchor them to another evaluation offset (pitfall P1/P3). The parse never raises: a string that is not a
FHIR date(-time) gives ``bad = true`` and the caller quarantines the record.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

# year, month, day, hour, minute, second, fraction, zone. ``Z`` is matched here, never left to ``%:z`` (P1).
_RX = (
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_PARTS = ("y", "mo", "d", "h", "mi", "s", "f", "z")
_STEP = {1: "1y", 2: "1mo", 3: "1d", 4: "1h", 5: "1m", 6: "1s"}
TIME_FIELDS = ("low", "high", "prec", "tz", "bad")

Part = Callable[[str], pl.Expr]


def _local(part: Part) -> pl.Expr:
    """The wall-clock instant the parts write (missing parts at their low end), with its fraction."""
    text = pl.concat_str(
        part("y"), pl.lit("-"), part("mo").fill_null("01"), pl.lit("-"), part("d").fill_null("01"),
        pl.lit("T"), part("h").fill_null("00"), pl.lit(":"), part("mi").fill_null("00"), pl.lit(":"),
        part("s").fill_null("00"),
    )  # fmt: skip
    micros = (part("f") + "00000").str.slice(0, 6).cast(pl.Int64).fill_null(0)
    return text.str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us") + pl.duration(
        microseconds=micros
    )


def _offset_minutes(part: Part) -> pl.Expr:
    """The written offset in minutes (``Z`` is 0); null when none was written."""
    zone = part("z")
    sign = pl.when(zone.str.starts_with("-")).then(-1).otherwise(1)
    minutes = sign * (zone.str.slice(1, 2).cast(pl.Int32) * 60 + zone.str.slice(4, 2).cast(pl.Int32))
    return pl.when(zone == "Z").then(0).otherwise(minutes).cast(pl.Int16)


def _precision(part: Part) -> pl.Expr:
    return pl.sum_horizontal(*(part(p).is_not_null() for p in _PARTS[:7])).cast(pl.Int8)


def _fraction_step(part: Part) -> pl.Expr:
    """One unit of the written fraction's last digit, in microseconds (``.123`` -> 1000)."""
    digits = part("f").str.len_chars().cast(pl.Int64).clip(upper_bound=6)
    return pl.lit(10, dtype=pl.Int64).pow(pl.lit(6, dtype=pl.Int64) - digits)


def _bounds(local: pl.Expr, tz: pl.Expr, prec: pl.Expr, frac_step: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(low, high) UTC boundaries of a wall-clock value written at ``prec`` in offset ``tz``."""
    step = prec.replace_strict(list(_STEP), list(_STEP.values()), default=None, return_dtype=pl.String)
    step = pl.coalesce(step, frac_step.cast(pl.String) + "us")
    shift = pl.duration(minutes=tz.cast(pl.Int64).fill_null(0))
    low = (local - shift).dt.replace_time_zone("UTC")
    high = (local.dt.offset_by(step) - pl.duration(microseconds=1) - shift).dt.replace_time_zone("UTC")
    return low, high


def parse_stages(raw: dict[str, pl.Expr]) -> list[list[pl.Expr]]:
    """``with_columns`` stages that leave, for each ``name: raw`` pair, a struct column ``name`` holding
    ``{low, high, prec, tz, bad}``. Staged so that the regex runs once per value and each stage's expression
    stays small (one large expression per value cost ~6 ms of planning on a one-row frame)."""
    groups = [
        expr.str.strip_chars().str.extract_groups(_RX).struct.rename_fields(list(_PARTS)).alias(name)
        for name, expr in raw.items()
    ] + [
        (expr.is_not_null() & (expr.str.strip_chars() != "")).alias(f"{name}__present")
        for name, expr in raw.items()
    ]
    local, finals = [], []
    for name in raw:
        part = pl.col(name).struct.field
        local.append(
            pl.struct(
                local=_local(part),
                tz=_offset_minutes(part),
                prec=_precision(part),
                frac_step=_fraction_step(part),
            ).alias(name)
        )
        field = pl.col(name).struct.field
        low, high = _bounds(field("local"), field("tz"), field("prec"), field("frac_step"))
        valid = field("local").is_not_null()
        finals.append(
            pl.struct(
                low=low,
                high=high,
                prec=pl.when(valid).then(field("prec")),
                tz=pl.when(valid).then(field("tz")),
                bad=~valid & pl.col(f"{name}__present"),
            ).alias(name)
        )
    return [groups, local, finals]


def parse_time(raw: pl.Expr) -> pl.Expr:
    """:func:`parse_stages` as one expression, for nested values (``list.eval``), where stages cannot go."""
    text = raw.str.strip_chars()
    part = text.str.extract_groups(_RX).struct.rename_fields(list(_PARTS)).struct.field
    local, tz, prec = _local(part), _offset_minutes(part), _precision(part)
    low, high = _bounds(local, tz, prec, _fraction_step(part))
    return pl.struct(
        low=low,
        high=high,
        prec=pl.when(local.is_not_null()).then(prec),
        tz=pl.when(local.is_not_null()).then(tz),
        bad=text.is_not_null() & (text != "") & local.is_null(),
    )
