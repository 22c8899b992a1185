"""Codings whose code system is missing or not an absolute URI: the row is kept, the codings are counted per
table and system string (ingestion report, ``_quarantine/unknown_systems.parquet``) and named in a warning,
which carries system strings only (never a code, a display text or a value)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from datasets.fhir import flatten_bundle
from datasets.fhir.systems import is_absolute_system
from handlers.commands.ingest import ingest

from .helpers import bundle, obs, patient

SECRET_DISPLAY = "Walter Whitmore diabetes note"  # a display text: must never reach the report or a log


def _coding(system: str | None, code: str) -> dict[str, Any]:
    coding = {"code": code, "display": SECRET_DISPLAY}
    return coding if system is None else {"system": system, **coding}


def _bundle() -> dict[str, Any]:
    observation = obs(
        "o1",
        code={
            "coding": [
                _coding(None, "c-missing"),  # no system at all
                _coding("", "c-empty"),
                _coding("loinc.org", "c-no-scheme"),  # a host name, not a URI
                _coding("urn:oid", "c-oid-without-oid"),
                _coding("LOINC", "c-alias"),  # a known name: read as http://loinc.org, fine
                _coding("http://loinc.org", "c-fine"),
                _coding("http://example.org/fhir/local-codes", "c-local"),  # unfamiliar but a URI: fine
            ]
        },
        valueCodeableConcept={"coding": [_coding("urn:oid", "v1"), _coding("urn:oid:1.2.3", "v2")]},
    )
    condition = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [_coding("2.16.840.1.113883.6.90", "E11.9")]},  # a bare OID
        "onsetDateTime": "2024-01-01",
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "class": {"system": "ActEncounterCode", "code": "AMB"},
        "period": {"start": "2024-01-01"},
    }
    return bundle(patient(), observation, condition, encounter)


EXPECTED = [
    ("condition", "2.16.840.1.113883.6.90", 1),
    ("encounter", "ActEncounterCode", 1),
    ("observation", "", 1),
    ("observation", "loinc.org", 1),
    ("observation", "urn:oid", 2),
    ("observation", None, 1),
]


def test_policy_absolute_uris_only() -> None:
    for bad in (None, "", "LOINC", "loinc.org", "urn:oid", "urn:oid:", "2.16.840.1", "http://", "a b:c"):
        assert not is_absolute_system(bad), bad
    for good in (
        "http://loinc.org",
        "urn:oid:2.16.840.1.113883.6.1",
        "http://example.org/x",
        "urn:ietf:bcp:47",
    ):
        assert is_absolute_system(good), good


def test_rows_kept_codings_counted_and_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="datasets.fhir.flatten"):
        result = flatten_bundle(_bundle(), "b1")
    assert result.rejected.height == 0
    for table in ("observation", "condition", "encounter"):
        assert result.tables[table].height == 1, table  # kept, not quarantined
    # the codings themselves are kept as written (canonicalised): they simply cannot meet a value set
    systems = result.tables["observation"]["code"].explode().struct.field("system").to_list()
    assert systems == [None, "", "loinc.org", "urn:oid", "http://loinc.org", "http://loinc.org",
                       "http://example.org/fhir/local-codes"]  # fmt: skip
    assert result.unknown_systems.rows() == EXPECTED
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0]
    assert "7 codings" in message
    for text in ("'loinc.org' x1", "'urn:oid' x2", "<missing> x1", "'2.16.840.1.113883.6.90' x1"):
        assert text in message, text
    for secret in (SECRET_DISPLAY, "c-missing", "c-no-scheme", "E11.9", "v1"):
        assert secret not in message


def test_clean_bundle_has_an_empty_report(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="datasets.fhir.flatten"):
        result = flatten_bundle(bundle(patient(), obs("o1")), "b1")
    assert result.unknown_systems.height == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_ingest_writes_the_counts_beside_the_quarantine(tmp_path: Path) -> None:
    src = tmp_path / "bundles"
    src.mkdir()
    (src / "one.json").write_text(json.dumps(_bundle()))
    (src / "two.json").write_text(
        json.dumps(bundle(patient("p2"), obs("o2", subject={"reference": "Patient/p2"})))
    )
    lake = tmp_path / "lake"
    result = ingest(src, lake, 2)
    assert result.rejected.height == 0
    report = pl.read_parquet(lake / "_quarantine" / "unknown_systems.parquet")
    assert report.columns == ["table", "system", "codings"]
    assert report.sort("table", "system", nulls_last=True).rows() == EXPECTED
    assert SECRET_DISPLAY not in str(report.to_dicts())
    assert pl.read_parquet(lake / "observation", hive_partitioning=True).height == 2  # all rows kept
