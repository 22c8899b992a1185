"""Measure observations aggregated exactly, also across shards: each shard reports how many subjects had
each observed value, and the aggregate (median, mean, ...) is computed from the merged counts, so the answer
does not depend on how the population was split."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from engine.plan import MeasurePlan

OBS_PREFIX = "obs:"


def observation_counts(subjects: pl.DataFrame) -> list[dict[str, Any]]:
    """``{measure_id, group_id, observation, value, count}`` for every observed value (nulls are not observed)."""
    out: list[dict[str, Any]] = []
    for column in sorted(c for c in subjects.columns if c.startswith(OBS_PREFIX)):
        counted = (
            subjects.filter(pl.col(column).is_not_null())
            .group_by("measure_id", "group_id", pl.col(column).round(6).alias("value"))
            .len("count")
            .sort("measure_id", "group_id", "value")
        )
        for row in counted.iter_rows(named=True):
            out.append({**row, "observation": column.removeprefix(OBS_PREFIX), "count": int(row["count"])})
    return out


def merge_counts(
    parts: Iterable[Sequence[Mapping[str, Any]]],
) -> dict[tuple[str, str, str], dict[float, int]]:
    """Sum the per-value counts of several shards."""
    merged: dict[tuple[str, str, str], dict[float, int]] = {}
    for records in parts:
        for r in records:
            values = merged.setdefault((r["measure_id"], r["group_id"], r["observation"]), {})
            values[float(r["value"])] = values.get(float(r["value"]), 0) + int(r["count"])
    return merged


def aggregate(method: str, counts: Mapping[float, int]) -> float | None:
    """The aggregate of a multiset given as value -> count; None when nothing was observed."""
    n = sum(counts.values())
    if n == 0:
        return None if method != "count" else 0.0
    if method == "count":
        return float(n)
    if method == "sum":
        return float(sum(v * c for v, c in counts.items()))
    if method == "mean":
        return float(sum(v * c for v, c in counts.items()) / n)
    if method == "min":
        return float(min(counts))
    if method == "max":
        return float(max(counts))
    ordered = sorted(counts.items())  # median: the middle value (mean of the two middle ones when even)

    def nth(k: int) -> float:
        seen = 0
        for value, count in ordered:
            seen += count
            if k < seen:
                return value
        raise IndexError(k)

    return nth(n // 2) if n % 2 else (nth(n // 2 - 1) + nth(n // 2)) / 2


def group_observations(
    plan: MeasurePlan, merged: Mapping[tuple[str, str, str], Mapping[float, int]]
) -> dict[str, dict[str, Any]]:
    """Per group: each observation's aggregate, and the group's score where observations define it
    (continuous variable: the measure-population observation; ratio: numerator over denominator aggregate)."""
    out: dict[str, dict[str, Any]] = {}
    for group in plan.groups:
        entries: dict[str, Any] = {}
        by_population: dict[str, float | None] = {}
        for obs in group.observations:
            counts = merged.get((plan.measure_id, group.id, obs.id), {})
            value = aggregate(obs.aggregate, counts)
            entries[obs.id] = {"aggregate": obs.aggregate, "value": value, "subjects": sum(counts.values())}
            by_population.setdefault(obs.population, value)
        score: float | None = None
        if plan.scoring == "continuous_variable":
            score = by_population.get("measure_population")
        elif plan.scoring == "ratio" and "numerator" in by_population and "denominator" in by_population:
            num, den = by_population["numerator"], by_population["denominator"]
            score = None if num is None or not den else num / den
        out[group.id] = {"observations": entries, "score": score}
    return out
