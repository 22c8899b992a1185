"""Observation aggregates from value counts are exact and do not depend on how the values were split."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from engine.observations import aggregate, merge_counts

values = st.lists(st.integers(0, 50).map(float), min_size=1, max_size=60)


@given(values, st.integers(1, 5))
def test_aggregates_from_split_counts_equal_the_direct_ones(observed: list[float], parts: int) -> None:
    shards = [observed[i::parts] for i in range(parts)]
    records = [
        [
            {"measure_id": "M", "group_id": "g", "observation": "o", "value": v, "count": s.count(v)}
            for v in set(s)
        ]
        for s in shards
    ]
    counts = merge_counts(records)[("M", "g", "o")]
    assert aggregate("median", counts) == statistics.median(observed)
    assert aggregate("sum", counts) == sum(observed)
    assert aggregate("count", counts) == len(observed)
    assert aggregate("min", counts) == min(observed) and aggregate("max", counts) == max(observed)
    mean = aggregate("mean", counts)
    assert mean is not None and abs(mean - statistics.fmean(observed)) < 1e-9


def test_nothing_observed() -> None:
    assert aggregate("median", {}) is None and aggregate("count", {}) == 0.0
