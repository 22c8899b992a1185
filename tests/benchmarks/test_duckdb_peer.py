"""The DuckDB SQL peer (benchmarks/sql/*.sql) computes what the engine computes: per patient and population,
for CMS125, CMS122 and CMS165, on a small synthetic lake and on a copy of it rewritten with hard cases (times at
the period's boundaries in several offsets, null and unknown boundaries, clinical statuses, units, readings in
acute encounters, supply periods, ages on birthdays), under the default period and a shifted one."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

pytest.importorskip("duckdb")

from benchmarks import duckdb_peer
from datasets.source import ParquetSource
from datasets.synthetic import SynthConfig, generate
from engine import EvaluationConfig, evaluate
from engine.library import load_library

MEASURES = duckdb_peer.MEASURES
POPULATIONS = duckdb_peer.POPULATIONS
DEFAULT = (date(2025, 1, 1), date(2025, 12, 31))
SHIFTED = (date(2025, 3, 1), date(2026, 2, 28))


@pytest.fixture(scope="session")
def plans() -> list[Any]:
    return load_library(list(MEASURES))


@pytest.fixture(scope="session")
def synthetic_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("duckdb_peer") / "lake"
    generate(str(root), SynthConfig(n_patients=3000, n_buckets=4, seed=0))
    return root


@pytest.fixture(scope="session")
def hard_lake(synthetic_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("duckdb_peer_hard") / "lake"
    rewrite_with_hard_cases(synthetic_lake, root, seed=1)
    return root


def both(root: Path, plans: list[Any], period: tuple[date, date] | None) -> dict[str, Any]:
    """{measure: (engine frame, SQL frame)} over the lake at ``root``."""
    config = (
        EvaluationConfig()
        if period is None
        else EvaluationConfig(period_start=period[0], period_end=period[1])
    )
    subjects = evaluate(plans, ParquetSource(str(root)), config).subjects
    con = duckdb_peer.prepare(root, threads=2)
    out = {}
    for plan in plans:
        p = config.period_for(plan)
        out[plan.measure_id] = (
            duckdb_peer.per_measure(subjects, plan.measure_id),
            duckdb_peer.run_sql(con, plan.measure_id, (p.start, p.end)),
        )
    con.close()
    return out


def assert_agree(results: dict[str, Any], *, at_least: int) -> None:
    problems = {
        m: a for m, (ours, sql) in results.items() if (a := duckdb_peer.compare(ours, sql))["mismatches"]
    }
    assert not problems, problems
    for measure, (ours, sql) in results.items():
        assert ours.height == sql.height
        # the comparison is not vacuous: every population has members
        for population, n in duckdb_peer.counts(sql).items():
            assert n >= at_least, f"{measure} {population}: only {n} patients"
        # populations the SQL does not write are empty on the engine's side
        for extra in ("denominator_exception", "numerator_exclusion"):
            if extra in ours.columns:
                assert not ours[extra].fill_null(False).any(), (measure, extra)


def test_sql_equals_engine_on_the_synthetic_lake(synthetic_lake: Path, plans: list[Any]) -> None:
    assert_agree(both(synthetic_lake, plans, None), at_least=5)


@pytest.mark.parametrize("period", [DEFAULT, SHIFTED], ids=["default_period", "shifted_period"])
def test_sql_equals_engine_on_hard_cases(
    hard_lake: Path, plans: list[Any], period: tuple[date, date]
) -> None:
    assert_agree(both(hard_lake, plans, period), at_least=1)


# --------------------------------------------------------------------------------------------- hard cases
US = 1_000_000
DAY = 86_400 * US


def _us(d: date | datetime) -> int:
    moment = d if isinstance(d, datetime) else datetime(d.year, d.month, d.day, tzinfo=UTC)
    return int(moment.timestamp() * US)


def _anchors() -> np.ndarray:
    """Instants (epoch us) at and around every boundary the three measures compare with, for both periods."""
    points: list[int] = []
    for start, end in (DEFAULT, SHIFTED):
        after = end + timedelta(days=1)
        six = date(start.year + (start.month + 5) // 12, (start.month + 5) % 12 + 1, 1)
        points += [_us(start), _us(after), _us(six), _us(date(start.year - 1, start.month, start.day))]
        points += [_us(date(start.year - 2, 10, 1)), _us(end)]
    jitter = np.array([-3 * 3600 * US, -30 * 60 * US, -1, 0, 1, 500, 30 * 60 * US, 3 * 3600 * US])
    return (np.array(points)[:, None] + jitter[None, :]).ravel()


def _choice(rng: np.random.Generator, n: int, values: list[Any], dtype: pl.DataType) -> pl.Series:
    picked = [values[i] for i in rng.integers(0, len(values), n)]
    return pl.Series(picked, dtype=dtype)


def _some(
    frame: pl.DataFrame, rng: np.random.Generator, column: str, values: pl.Series, rate: float
) -> pl.DataFrame:
    mask = pl.Series(rng.random(frame.height) < rate)
    return frame.with_columns(pl.when(mask).then(values).otherwise(pl.col(column)).alias(column))


def _times(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Starts at boundaries, ends after them (or null), offsets that move local dates across midnight."""
    n = frame.height
    ts = pl.Datetime("us", "UTC")
    anchors = _anchors()
    start = anchors[rng.integers(0, len(anchors), n)]
    length = np.array([0, 1, 3 * 3600 * US, 40 * DAY, 200 * DAY])[rng.integers(0, 5, n)]
    frame = frame.with_columns(
        pl.when(pl.Series(rng.random(n) < 0.4))
        .then(pl.struct(start=pl.Series(start).cast(ts), end=pl.Series(start + length).cast(ts)))
        .otherwise(pl.struct("start", "end"))
        .struct.unnest()
    )
    frame = _some(frame, rng, "end", pl.Series([None] * n, dtype=ts), 0.08)
    frame = _some(frame, rng, "start", pl.Series([None] * n, dtype=ts), 0.05)
    offsets = [None, 0, -720, -300, 60, 330, 600, 840]
    return _some(frame, rng, "tz_offset_min", _choice(rng, n, offsets, pl.Int16), 0.3)


def _hard(
    table: str, frame: pl.DataFrame, rng: np.random.Generator, encounters: pl.DataFrame
) -> pl.DataFrame:
    n = frame.height
    if n == 0:
        return frame
    s = pl.String
    if table == "patient":
        births = []
        for _, end in (DEFAULT, SHIFTED):
            for age in (18, 52, 66, 74, 75, 80, 81, 85, 86):
                birthday = date(end.year - age, end.month, 28 if end.month == 2 else end.day)
                births += [birthday, birthday + timedelta(days=1), birthday - timedelta(days=1)]
        births += [date(1960, 2, 29), date(1944, 2, 29), None]
        frame = _some(frame, rng, "birth_date", _choice(rng, n, births, pl.Date), 0.5)
        return _some(frame, rng, "gender", _choice(rng, n, ["female", "male", "other", None], s), 0.1)
    if table == "observation_component":
        units = [None, "mm[Hg]", "mmHg", "kPa", "%"]
        frame = _some(frame, rng, "value_unit", _choice(rng, n, units, s), 0.2)
        values = [None, 70.0, 89.0, 89.99, 90.0, 120.0, 139.0, 139.99, 140.0, 160.0]
        frame = _some(frame, rng, "value_quantity", _choice(rng, n, values, pl.Float64), 0.4)
        # a second component with the same code after the first: only the first counts
        extra = frame.filter(pl.Series(rng.random(n) < 0.1)).with_columns(
            pl.col("component_ix") + 10, pl.lit(75.0).alias("value_quantity")
        )
        return pl.concat([frame, extra]).sort("patient_id", "start", "observation_id", "component_ix")
    frame = _times(frame, rng)
    if table == "condition":
        statuses = ["active", "recurrence", "relapse", "inactive", "remission", "resolved", None]
        return _some(frame, rng, "clinical_status", _choice(rng, n, statuses, s), 0.4)
    statuses = {
        "encounter": ["finished", "in-progress", "onleave", "cancelled", "planned", None],
        "observation": ["final", "amended", "corrected", "preliminary", "cancelled", None],
        "procedure": ["completed", "not-done", "in-progress", None],
        "medication_request": ["active", "completed", "stopped", None],
        "service_request": ["active", "completed", "revoked", None],
    }.get(table)
    if statuses is not None:
        frame = _some(frame, rng, "status", _choice(rng, n, statuses, s), 0.2)
    if table == "encounter":
        classes = ["AMB", "EMER", "IMP", "ACUTE", "NONAC", "PRENC", "SS", "VR", None]
        frame = _some(frame, rng, "class_code", _choice(rng, n, classes, s), 0.5)
    if table in ("medication_request", "service_request"):
        frame = _some(frame, rng, "intent", _choice(rng, n, ["order", "plan", None], s), 0.2)
        frame = _some(frame, rng, "do_not_perform", _choice(rng, n, [True, False, None], pl.Boolean), 0.2)
    if table == "observation":
        frame = _some(frame, rng, "value_unit", _choice(rng, n, [None, "%", "mmol/mol", "kg"], s), 0.3)
        values = [None, 5.0, 8.99, 9.0, 9.01, 12.0, 70.0]
        frame = _some(frame, rng, "value_quantity", _choice(rng, n, values, pl.Float64), 0.4)
        frame = _some(
            frame, rng, "value_type", _choice(rng, n, [None, "Quantity", "CodeableConcept"], s), 0.2
        )
        frame = _some(frame, rng, "profiles", pl.Series([None] * n, dtype=pl.List(s)), 0.1)
        frame = _some(frame, rng, "category", pl.Series([None] * n, dtype=frame.schema["category"]), 0.05)
        # readings recorded in one of the patient's encounters (acute or not), or in an unknown one
        first = encounters.group_by("patient_id").agg(pl.col("id").first().alias("_enc"))
        frame = frame.join(first, on="patient_id", how="left", maintain_order="left")
        linked = pl.Series(rng.random(n))
        frame = frame.with_columns(
            pl.when(linked < 0.5)
            .then(pl.col("_enc"))
            .when(linked < 0.55)
            .then(pl.lit("no-such-encounter"))
            .otherwise(pl.col("encounter_id"))
            .alias("encounter_id")
        ).drop("_enc")
    if table == "medication_request":
        ts = pl.Datetime("us", "UTC")
        anchors = _anchors()
        instants = pl.Series(anchors[rng.integers(0, len(anchors), n)]).cast(ts)
        frame = _some(frame, rng, "medication_id", _choice(rng, n, ["med-1"], s), 0.2)
        frame = _some(
            frame, rng, "expected_supply_days", _choice(rng, n, [None, 0.0, 0.5, 45.0], pl.Float64), 0.4
        )
        frame = _some(frame, rng, "refills", _choice(rng, n, [None, 0, 3], pl.Int32), 0.3)
        frame = _some(
            frame, rng, "dispense_quantity", _choice(rng, n, [None, 0.0, 10.0, 60.0], pl.Float64), 0.3
        )
        frame = _some(frame, rng, "dose_value", _choice(rng, n, [None, 0.5, 2.0], pl.Float64), 0.2)
        frame = _some(
            frame, rng, "timing_period_unit", _choice(rng, n, ["d", "wk", "h", "mo", "xx", None], s), 0.3
        )
        frame = _some(frame, rng, "timing_frequency_max", _choice(rng, n, [None, 2, 3], pl.Int32), 0.2)
        frame = _some(frame, rng, "bounds_start", instants, 0.2)
        frame = _some(frame, rng, "bounds_end", instants.shuffle(seed=int(rng.integers(1 << 30))), 0.3)
        frame = _some(frame, rng, "authored_on", pl.Series([None] * n, dtype=ts), 0.2)
        frame = _some(frame, rng, "validity_start", instants.shuffle(seed=int(rng.integers(1 << 30))), 0.2)
    return frame


def rewrite_with_hard_cases(src: Path, dst: Path, seed: int) -> None:
    """A copy of the lake at ``src`` (same buckets, no manifest) with hard cases written over random rows."""
    rng = np.random.default_rng(seed)
    for table_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        for part in sorted(table_dir.glob("bucket=*/*.parquet")):
            frame = pl.read_parquet(part, hive_partitioning=False)
            encounters = (
                pl.read_parquet(src / "encounter" / part.parent.name / part.name, hive_partitioning=False)
                if table_dir.name == "observation"
                else pl.DataFrame()
            )
            out = dst / table_dir.name / part.parent.name / part.name
            out.parent.mkdir(parents=True, exist_ok=True)
            _hard(table_dir.name, frame, rng, encounters).write_parquet(out)
