"""The API and the batch agree: synthetic lake patients evaluated over the whole lake (ParquetSource, the
batch path) have the same populations as ``GET /Patient/{id}/$evaluate-measures`` (one bucket, one
patient), and as ``POST /Measure/$evaluate-measures`` with the patient's exported Bundle."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from datasets.fhir.export import export_patient_bundles
from datasets.source import ParquetSource
from engine import EvaluationConfig, evaluate
from engine.populations import FHIR_CODES

from .helpers import counts, reports_of


@pytest.fixture(scope="module")
def batch(plans: list[Any], lake: str) -> pl.DataFrame:
    return evaluate(plans, ParquetSource(lake), EvaluationConfig()).subjects


def _chosen(batch: pl.DataFrame) -> list[str]:
    """A few patients covering numerator, denominator-only and initial-population-less cases."""
    picks: list[str] = []
    for condition in (
        pl.col("numerator"),
        pl.col("denominator") & ~pl.col("numerator"),
        pl.col("denominator_exclusion"),
        ~pl.col("initial_population"),
    ):
        ids = batch.filter(condition.fill_null(False))["patient_id"].unique().sort().to_list()
        picks += [i for i in ids if i not in picks][:2]
    return picks


def _expected(batch: pl.DataFrame, pid: str) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in batch.filter(pl.col("patient_id") == pid).iter_rows(named=True):
        out.setdefault(row["measure_id"], {})[row["group_id"]] = {
            code: int(bool(row[name])) for name, code in FHIR_CODES.items() if name in row
        }
    return out


def _same(report: dict[str, Any], expected: dict[str, dict[str, int]]) -> None:
    got = counts(report)
    assert set(got) == set(expected)
    for group, pops in got.items():
        for code, count in pops.items():
            assert count == expected[group][code], (group, code)


def test_lake_patient_route_agrees_with_batch(client: TestClient, batch: pl.DataFrame) -> None:
    chosen = _chosen(batch)
    assert len(chosen) >= 4
    for pid in chosen:
        r = client.get(f"/Patient/{pid}/$evaluate-measures")
        assert r.status_code == 200, r.text
        expected = _expected(batch, pid)
        reports = reports_of(r.json())
        assert set(reports) == set(expected)
        for measure_id, report in reports.items():
            _same(report, expected[measure_id])


def test_exported_bundle_agrees_with_batch(
    client: TestClient, batch: pl.DataFrame, lake_tables: dict[str, pl.DataFrame]
) -> None:
    chosen = set(_chosen(batch)[:4])
    subset = {t: f.filter(pl.col("patient_id").is_in(list(chosen))) for t, f in lake_tables.items()}
    for bundle in export_patient_bundles(subset):
        pid = bundle["entry"][0]["resource"]["id"]
        r = client.post("/Measure/$evaluate-measures", json=bundle)
        assert r.status_code == 200, r.text
        expected = _expected(batch, pid)
        for measure_id, report in reports_of(r.json()).items():
            _same(report, expected[measure_id])
