"""The same synthetic patients as Parquet and as FHIR Bundles: ingesting the Bundles gives the same measure
results as evaluating the lake directly (the path a FHIR-based peer engine would take)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from datasets.source import ParquetSource
from engine import EvaluationConfig, evaluate
from engine.library import load_library
from handlers.cli import main

POPULATIONS = ["initial_population", "denominator", "denominator_exclusion", "numerator"]


def _results(lake: Path) -> pl.DataFrame:
    """Every library measure, per subject (episode-based measures: per encounter, named by its id)."""
    subjects = evaluate(load_library(), ParquetSource(str(lake)), EvaluationConfig()).subjects
    keys = ["measure_id", "group_id", "patient_id", "episode_id"]
    return subjects.select(*keys, *POPULATIONS).sort(keys)


def test_fhir_export_of_synthetic_patients_ingests_to_the_same_results(tmp_path: Path) -> None:
    args = ["--patients", "600", "--buckets", "4", "--seed", "7", "--processes", "1"]
    assert main(["synth", *args, "--out", str(tmp_path / "lake")]) == 0
    assert main(["synth", *args, "--out", str(tmp_path / "bundles"), "--format", "fhir"]) == 0
    assert len(list((tmp_path / "bundles").glob("*.json"))) == 600
    assert (
        main(["ingest", str(tmp_path / "bundles"), "--out", str(tmp_path / "ingested"), "--buckets", "4"])
        == 0
    )
    direct, via_fhir = _results(tmp_path / "lake"), _results(tmp_path / "ingested")
    per_measure = direct.group_by("measure_id").agg(pl.col("initial_population").sum())
    assert per_measure.filter(pl.col("initial_population") == 0).is_empty(), per_measure
    assert direct.equals(via_fhir)
