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
    plans = load_library(["CMS125", "CMS122", "CMS165"])
    subjects = evaluate(plans, ParquetSource(str(lake)), EvaluationConfig()).subjects
    return subjects.select("measure_id", "group_id", "patient_id", *POPULATIONS).sort(
        "measure_id", "group_id", "patient_id"
    )


def test_fhir_export_of_synthetic_patients_ingests_to_the_same_results(tmp_path: Path) -> None:
    args = ["--patients", "300", "--buckets", "4", "--seed", "7", "--processes", "1"]
    assert main(["synth", *args, "--out", str(tmp_path / "lake")]) == 0
    assert main(["synth", *args, "--out", str(tmp_path / "bundles"), "--format", "fhir"]) == 0
    assert len(list((tmp_path / "bundles").glob("*.json"))) == 300
    assert (
        main(["ingest", str(tmp_path / "bundles"), "--out", str(tmp_path / "ingested"), "--buckets", "4"])
        == 0
    )
    direct, via_fhir = _results(tmp_path / "lake"), _results(tmp_path / "ingested")
    assert direct["initial_population"].sum() > 0
    assert direct.equals(via_fhir)
