"""The synthetic generator: deterministic bytes, valid tables, the hard cases, and realistic measure rates."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from datasets.hashing import bucket_of
from datasets.lake import read_manifest, validate_lake
from datasets.source import ParquetSource
from datasets.synthetic import SynthConfig, generate
from datasets.synthetic_codes import load_valuesets

PATIENTS = 2000


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "lake"
    generate(str(root), SynthConfig(n_patients=PATIENTS, n_buckets=8, seed=7))
    return root


@pytest.fixture(scope="module")
def source(lake: Path) -> ParquetSource:
    return ParquetSource.from_manifest(str(lake))


def test_same_seed_same_bytes_any_process_count(lake: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(str(again), SynthConfig(n_patients=PATIENTS, n_buckets=8, seed=7, processes=2))
    assert _digests(again) == _digests(lake)


def test_different_seed_different_bytes(lake: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate(str(other), SynthConfig(n_patients=PATIENTS, n_buckets=8, seed=8))
    mine, theirs = _digests(lake), _digests(other)
    assert mine.keys() - {"_manifest.json"} and all(
        mine[k] != theirs.get(k) for k in mine if k.startswith(("encounter", "observation"))
    )


def test_every_table_validates_and_counts_match(lake: Path, source: ParquetSource) -> None:
    manifest = validate_lake(str(lake))
    assert manifest.tables["patient"].rows == PATIENTS
    for table, info in manifest.tables.items():
        frame = source.scan(table).collect()
        assert frame.height == info.rows, table
        for bucket, rows in enumerate(info.bucket_rows):
            assert frame.filter(pl.col("bucket") == bucket).height == rows
    patients = source.scan("patient", ["patient_id", "bucket"]).collect()
    assert bucket_of(patients["patient_id"].to_list(), 8).tolist() == patients["bucket"].to_list()
    for table in manifest.tables:
        if "id" in source.scan(table).collect_schema():
            assert source.scan(table, ["id"]).collect()["id"].is_unique().all(), table


def test_hard_cases_are_present(source: ParquetSource) -> None:
    condition = source.scan("condition").collect()
    procedure = source.scan("procedure").collect()
    observation = source.scan("observation").collect()
    assert condition.filter(pl.col("start_prec").is_in([1, 2])).height > 0  # partial dates
    partial = (
        procedure.filter(pl.col("start_prec") == 1).row(0, named=True)
        if procedure.filter(pl.col("start_prec") == 1).height
        else condition.filter(pl.col("start_prec") == 1).row(0, named=True)
    )
    assert partial["start"].month == 1 and partial["end"].month == 12 and partial["tz_offset_min"] is None
    multi = condition.filter(pl.col("code").list.len() > 1)
    assert multi.height > 0
    assert (
        multi.select(
            pl.col("code").list.eval(pl.element().struct.field("system")).list.n_unique().min()
        ).item()
        == 2
    )
    assert (
        procedure.filter((pl.col("status") == "not-done") & pl.col("status_reason").is_not_null()).height > 0
    )
    assert (
        source.scan("medication_request")
        .filter(pl.col("do_not_perform") & pl.col("reason_refused").is_not_null())
        .collect()
        .height
        > 0
    )
    assert observation.filter(pl.col("status") == "preliminary").height > 0
    assert observation.filter(pl.col("tz_offset_min").is_in([-300, -360, -420, -480, -240, 60])).height > 0
    content = [c for c in observation.columns if c not in ("id",)]
    assert observation.select(content).is_duplicated().any()  # same resource, another id


def test_blood_pressure_panels(source: ParquetSource) -> None:
    panels = (
        source.scan("observation")
        .filter(pl.col("code").list.eval(pl.element().struct.field("code") == "85354-9").list.any())
        .collect()
    )
    components = source.scan("observation_component").collect()
    assert panels.height > 0 and components.height == 2 * panels.height
    assert panels["profiles"].list.first().unique().to_list() == [
        "http://hl7.org/fhir/StructureDefinition/bp"
    ]
    codes = components["code"].list.first().struct.field("code")
    assert set(codes.unique().to_list()) == {"8480-6", "8462-4"}
    assert components["value_unit"].unique().to_list() == ["mm[Hg]"]
    assert set(components["observation_id"].to_list()) == set(panels["id"].to_list())


def test_codes_come_from_the_synthetic_valuesets(source: ParquetSource) -> None:
    members = {(s, c) for vs in load_valuesets().values() for s, c, _ in vs.codes}
    for table, column in (("condition", "code"), ("procedure", "code"), ("encounter", "type")):
        pairs = (
            source.scan(table, [column])
            .explode(column)
            .select(pl.col(column).struct.field("system"), pl.col(column).struct.field("code"))
            .unique()
            .collect()
        )
        assert set(pairs.iter_rows()) <= members, table


def _has(frame: pl.LazyFrame, column: str, codes: set[str]) -> pl.LazyFrame:
    return frame.filter(
        pl.col(column).list.eval(pl.element().struct.field("code").is_in(list(codes))).list.any()
    )


def test_measure_rates_are_realistic(tmp_path: Path) -> None:
    """Rough, measure-like rates on 6,000 patients (no exclusions): the world table is tuned for these."""
    root = str(tmp_path / "rates")
    generate(root, SynthConfig(n_patients=6000, n_buckets=4, seed=3))
    src = ParquetSource.from_manifest(root)
    vs = load_valuesets()
    code_set = lambda name: {c for _, c, _ in vs[name].codes}  # noqa: E731
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    patients = src.scan("patient").with_columns((2025 - pl.col("birth_date").dt.year()).alias("age"))
    diabetics = _has(src.scan("condition"), "code", code_set("Diabetes")).select("patient_id").unique()
    a1c = (
        _has(src.scan("observation"), "code", code_set("HbA1c Laboratory Test"))
        .filter((pl.col("status") == "final") & (pl.col("start") >= start) & (pl.col("start") < end))
        .sort("start")
        .group_by("patient_id")
        .agg(pl.col("value_quantity").last())
    )
    den = patients.filter(pl.col("age").is_between(18, 75)).join(diabetics, on="patient_id", how="semi")
    poor = (
        den.join(a1c, on="patient_id", how="left")
        .select(((pl.col("value_quantity") > 9) | pl.col("value_quantity").is_null()).mean())
        .collect()
        .item()
    )
    assert 0.15 <= poor <= 0.40, poor
    women = patients.filter((pl.col("gender") == "female") & pl.col("age").is_between(52, 74))
    mammo = _has(src.scan("observation"), "code", code_set("Mammography")).filter(pl.col("status") == "final")
    screened = women.select(
        pl.col("patient_id").is_in(mammo.select("patient_id").collect()["patient_id"].implode()).mean()
    )
    assert 0.5 <= screened.collect().item() <= 0.85
    manifest = read_manifest(root)
    assert manifest.sources[0]["seed"] == 3
