"""Hostile FHIR and event input: ingestion refuses per resource (never crashes); S3 keys cannot traverse;
no patient data (names planted in the input) reaches logs, errors or published files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.errors import DatasetError
from datasets.fhir.bundle import MAX_DEPTH, MAX_STRING, flatten_bundle
from handlers import batch
from handlers.batch_local import run_local
from handlers.commands.ingest import ingest

PLANTED = "Zebulon Quaxworthington"

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
)
RESOURCE_TYPES = ["Patient", "Encounter", "Observation", "Condition", "MedicationRequest", "Bogus", 7, None]
FIELDS = ["id", "subject", "code", "status", "period", "effectiveDateTime", "valueQuantity", "birthDate"]


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"resourceType": draw(st.sampled_from(RESOURCE_TYPES))}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        doc[name] = draw(json_value)
    if draw(st.booleans()):
        doc["subject"] = {
            "reference": draw(st.sampled_from(["Patient/p1", "Patient/nowhere", "urn:uuid:x", ""]))
        }
    return doc


bundles = st.fixed_dictionaries(
    {
        "resourceType": st.just("Bundle"),
        "entry": st.lists(st.fixed_dictionaries({"resource": resources()}), max_size=6),
    }
) | json_value.map(lambda v: {"resourceType": "Bundle", "entry": v})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundles)
def test_fuzzed_bundles_never_raise_anything_but_dataset_errors(bundle: dict[str, Any]) -> None:
    try:
        result = flatten_bundle(bundle, "fuzz")
    except DatasetError:
        return
    assert result.rejected.columns[:2] == ["source", "resource_type"] or "reason" in result.rejected.columns


def _nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"a": [node]}
    return node


HOSTILE: dict[str, dict[str, Any]] = {
    "deep-nesting": {"resourceType": "Observation", "id": "o-deep", "code": _nested(50_000)},
    "just-over-depth": {"resourceType": "Observation", "id": "o-depth", "code": _nested(MAX_DEPTH)},
    "huge-string": {"resourceType": "Observation", "id": "o-huge", "status": "x" * (MAX_STRING + 1)},
    "id-not-a-string": {"resourceType": "Observation", "id": {"x": 1}},
    "wrong-shape": {"resourceType": "Observation", "id": "o-shape", "code": "not a CodeableConcept"},
}


REASONS = {
    "deep-nesting": "nested deeper",
    "just-over-depth": "nested deeper",
    "huge-string": "longer than",
    "id-not-a-string": "id is not a string",
    "wrong-shape": "unexpected FHIR type",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_resource_is_quarantined_and_the_rest_kept(case: str) -> None:
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": patient},
            {"resource": HOSTILE[case]},
            {"resource": [1, 2]},
            "junk",
            5,
        ],
    }
    result = flatten_bundle(bundle, "hostile")
    assert result.tables["patient"].height == 1  # nothing else lost
    assert result.rejected.height == 1
    row = result.rejected.row(0, named=True)
    assert row["resource_type"] == "Observation" and REASONS[case] in row["reason"]
    assert len(row["reason"]) < 200  # the reason, never the content


def test_not_a_bundle_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match="not a FHIR Bundle"):
        flatten_bundle([1, 2, 3], "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        {"detail": {"bucket": {"name": "lake"}, "object": {"key": "../../etc/_manifest.json"}}},
        {"detail": {"bucket": {"name": "lake"}, "object": {"key": "a//b/_manifest.json"}}},
        {"detail": {"bucket": {"name": "lake"}, "object": {"key": "a/%00/_manifest.json"}}},
        {"Records": [{"s3": {"bucket": {"name": "lake"}, "object": {"key": "a/../../b/_manifest.json"}}}]},
        {"data": "s3://lake/ok", "out": "s3://results/../other"},
        {"data": "/tmp/lake/../../etc"},
    ],
)
def test_traversal_in_event_keys_is_refused(event: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="refused location"):
        batch.plan_handler(event)


def test_run_uri_traversal_is_refused() -> None:
    with pytest.raises(ValueError, match="refused location"):
        batch.reduce_handler({"run_uri": "s3://results/../x/run.json"})


def _planted_bundle() -> dict[str, Any]:
    name = [{"family": PLANTED.split()[1], "given": [PLANTED.split()[0]], "text": PLANTED}]
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": "urn:uuid:p1",
            "resource": {
                "resourceType": "Patient",
                "id": "p1",
                "name": name,
                "gender": "male",
                "birthDate": "1960-02-03",
                "address": [{"line": [f"1 {PLANTED} Road"], "state": "MA"}],
            },
        },
        {
            "resource": {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "subject": {"reference": "Patient/p1", "display": PLANTED},
                "period": {"start": "2025-03-01T10:00:00Z", "end": "2025-03-01T11:00:00Z"},
            }
        },
        {  # a bad record carrying the name in a value: its quarantine entry must not
            "resource": {
                "resourceType": "Observation",
                "id": "o-bad",
                "subject": {"reference": "Patient/p1"},
                "code": PLANTED,
            }
        },
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c-orphan",
                "subject": {"reference": "Patient/nowhere"},
            }
        },
    ]
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def test_no_phi_in_logs_errors_or_outputs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bundles"
    src.mkdir()
    (src / "patient.json").write_text(json.dumps(_planted_bundle()))
    lake = tmp_path / "lake"
    with caplog.at_level(logging.DEBUG):
        ingest(src, lake, 2)
        run_local(str(lake), str(tmp_path / "out"), n_shards=2, workers=1)
        with pytest.raises(batch.ErrorRateExceededError) as failed:
            run_local(
                str(lake),
                str(tmp_path / "strict"),
                n_shards=1,
                workers=1,
                max_error_rate=0.0,
                as_of="2025-01-01",
            )
    captured = capsys.readouterr()
    texts = [caplog.text, captured.out, captured.err, str(failed.value)]
    texts += [r.getMessage() for r in caplog.records]
    import polars as pl

    outputs = [p for p in tmp_path.rglob("*") if p.is_file() and src not in p.parents]
    assert any(p.name == "summary.json" for p in outputs)
    for path in outputs:
        if path.suffix == ".parquet":  # compressed: compare the decoded values
            texts.append(str(pl.read_parquet(path, hive_partitioning=False).to_dicts()))
        else:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    for fragment in (PLANTED, *PLANTED.split()):
        assert not any(fragment in t for t in texts), fragment
