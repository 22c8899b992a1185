"""Flattened official tests -> export -> flatten again: the core columns of every table agree."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from datasets.fhir import flatten_bundles
from datasets.fhir.export import export_patient_bundles, write_bundles

CORE = ["patient_id", "id", "start", "end", "start_prec", "end_prec", "tz_offset_min"]
CODE = {
    "encounter": "type",
    "condition": "code",
    "procedure": "code",
    "observation": "code",
    "medication_request": "medication",
    "medication_dispense": "medication",
    "medication_administration": "medication",
    "immunization": "vaccine_code",
    "coverage": "type",
    "service_request": "code",
    "device_request": "code",
}


def test_official_tables_survive_export(ecqm_dir: Path, tmp_path: Path) -> None:
    files = sorted(ecqm_dir.glob("CMS1[0-3]*/tests/*.json"))
    first = flatten_bundles([(json.loads(f.read_bytes()), f.stem) for f in files])
    # Patient ids repeat across measures' test cases: keep one of each so patients are exported once.
    tables = {
        t: f.unique(subset=[c for c in ("patient_id", "id") if c in f.columns], keep="first")
        for t, f in first.tables.items()
    }
    assert write_bundles(tables, tmp_path) == tables["patient"].height
    again = flatten_bundles([(b, "x") for b in export_patient_bundles(tables)])
    assert again.rejected.height == 0
    for table, column in CODE.items():
        cols = [*CORE, column, "clinical_status" if table == "condition" else "status"]
        want = tables[table].select(cols).sort("patient_id", "id")
        got = again.tables[table].select(cols).sort("patient_id", "id")
        assert got.equals(want), table
    assert again.tables["observation_component"].height == tables["observation_component"].height
    assert (
        again.tables["patient"]
        .drop("source")
        .sort("patient_id")
        .equals(tables["patient"].drop("source").sort("patient_id").with_columns(pl.col("meta_last_updated")))
    )
