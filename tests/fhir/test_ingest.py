"""``measures ingest``: detection, the lake and its manifest, the quarantine file."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from datasets.fhir.detect import InputKind, detect
from handlers.cli import main

from .conftest import FIXTURES
from .helpers import obs, patient


def _bulk(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "Patient.ndjson").write_text(json.dumps(patient()) + "\n")
    lines = [obs("a"), obs("b", status="weird"), obs("c", code="not-a-codeable-concept")]
    (root / "Observation.ndjson").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


def test_detects_the_three_inputs(tmp_path: Path, ecqm_dir: Path) -> None:
    assert detect(_bulk(tmp_path / "bulk")) is InputKind.BULK
    assert detect(FIXTURES / "synthea_v3") is InputKind.SYNTHEA
    assert detect(ecqm_dir / "CMS122" / "tests") is InputKind.BUNDLE
    with pytest.raises(ValueError, match="not a Bundle"):
        detect(tmp_path / "bulk" / "Patient.ndjson")


def test_ingest_bulk_writes_lake_and_quarantine(tmp_path: Path) -> None:
    out = tmp_path / "lake"
    assert main(["ingest", str(_bulk(tmp_path / "bulk")), "--out", str(out), "--buckets", "4"]) == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["n_buckets"] == 4 and manifest["tables"]["observation"]["rows"] == 1
    rejected = pl.read_parquet(out / "_quarantine" / "rejected.parquet").sort("id")
    assert rejected.select("id", "reason").rows() == [
        ("b", "unknown status"),
        ("c", "element of an unexpected FHIR type (shape does not match the R4 datatype)"),
    ]
    got = pl.read_parquet(out / "observation", hive_partitioning=True)
    assert got["id"].to_list() == ["a"]


def test_ingest_official_bundles_and_synthea(tmp_path: Path, ecqm_dir: Path) -> None:
    out = tmp_path / "lake"
    assert main(["ingest", str(ecqm_dir / "CMS122" / "tests"), "--out", str(out), "--buckets", "2"]) == 0
    assert pl.read_parquet(out / "_quarantine" / "rejected.parquet").height == 0
    assert json.loads((out / "_manifest.json").read_text())["tables"]["patient"]["rows"] > 10
    out2 = tmp_path / "lake2"
    assert main(["ingest", str(FIXTURES / "synthea_v3"), "--out", str(out2)]) == 0
    assert json.loads((out2 / "_manifest.json").read_text())["tables"]["observation_component"]["rows"] == 2
