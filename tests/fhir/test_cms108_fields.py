"""Schema 1.1.0 (CMS108): ``encounter.procedures``, ``encounter.locations[].type`` and
``medication_administration.recorded``, read from official CMS108 test Bundles, from a Bulk export, and
written back by the exporter."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from datasets.fhir import flatten_bundle, flatten_bundles
from datasets.fhir.bulk import flatten_export
from datasets.fhir.export import export_patient_bundles
from datasets.schema import SCHEMA_VERSION, TABLES, conform

from .helpers import bundle, patient

SNOMED = "http://snomed.info/sct"
HSLOC = "https://www.cdc.gov/nhsn/cdaportal/terminology/codesystem/hsloc.html"
REFUSAL = {"system": SNOMED, "code": "443390004", "display": "Refusal of treatment by patient (situation)"}


def _official(ecqm_dir: Path, stem: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ecqm_dir / "CMS108" / "tests" / f"{stem}.json").read_bytes())
    return doc


def _row(frame: pl.DataFrame, rid: str) -> dict[str, Any]:
    rows = frame.filter(pl.col("id") == rid).to_dicts()
    assert len(rows) == 1, rid
    return rows[0]


def test_schema_version_and_new_columns() -> None:
    assert SCHEMA_VERSION == "1.1.0"
    enc = TABLES["encounter"]
    assert enc["procedures"] == pl.List(pl.Struct({"procedure_id": pl.String, "rank": pl.Int32}))
    stay = enc["locations"]
    assert isinstance(stay, pl.List) and isinstance(stay.inner, pl.Struct)
    assert [f.name for f in stay.inner.fields] == ["location_id", "status", "start", "end", "type"]
    assert TABLES["medication_administration"]["recorded"] == pl.Datetime("us", "UTC")


def test_encounter_procedure_extension_of_an_official_bundle(ecqm_dir: Path) -> None:
    # SCIPNeuroRank2: the encounter names its procedure with rank 2 (not the principal procedure)
    result = flatten_bundle(_official(ecqm_dir, "3c35a3b2-736b-43e8-8514-43f5caa382ac"), "t")
    assert result.rejected.height == 0
    enc = _row(result.tables["encounter"], "d4c9d045-dbb9-4d0b-b558-87bd631b382c")
    assert enc["procedures"] == [{"procedure_id": "8c63a82f-f312-4e55-944e-7b96f0cba7a8", "rank": 2}]
    assert enc["locations"] is None
    proc = _row(result.tables["procedure"], "8c63a82f-f312-4e55-944e-7b96f0cba7a8")
    assert proc["recorded_date"] == datetime(2013, 12, 4, 13, 35, tzinfo=UTC)  # 09:35-04:00


def test_location_type_of_an_official_bundle(ecqm_dir: Path) -> None:
    # NUMERPass DAVFPDayOfICUWICULOSEQ0Day: one ICU stay; the Bundle holds the Location (and one unused)
    result = flatten_bundle(_official(ecqm_dir, "2899457d-5309-43e4-a7f0-a4ff34276b9d"), "t")
    assert result.rejected.height == 0
    enc = _row(result.tables["encounter"], "5b733130-2b58-4acd-a192-3c88927a40cb")
    assert enc["procedures"] is None
    assert enc["locations"] == [
        {
            "location_id": "24641f0d-f550-4314-bd59-7c99c23a815c",
            "status": None,
            "start": datetime(2026, 3, 22, 8, 15, tzinfo=UTC),
            "end": datetime(2026, 3, 22, 19, 0, 0, 999, tzinfo=UTC),  # high boundary of 19:00:00.000
            "type": [{"system": HSLOC, "code": "1025-6", "display": "Trauma Critical Care"}],
        }
    ]


def test_medication_administration_recorded_and_negation_reasons(ecqm_dir: Path) -> None:
    bundles = [
        (_official(ecqm_dir, stem), stem)
        for stem in (
            "0f3bb677-2879-45da-b93d-70efd50381e1",  # MedicationAdministration not-done, recorded
            "3dcb32cf-6ad1-4a44-89da-1125e19b5c8c",  # ServiceRequest with qicore-doNotPerformReason
            "1701c7fe-de21-4bb9-8404-92cb1ef4e638",  # MedicationRequest doNotPerform with reasonCode
        )
    ]
    result = flatten_bundles(bundles)
    assert result.rejected.height == 0
    ma = _row(result.tables["medication_administration"], "b876df5f-2805-46db-9341-536add387f74")
    assert ma["recorded"] == datetime(2026, 11, 2, 11, 0, tzinfo=UTC)
    assert (ma["status"], ma["status_reason"]) == ("not-done", [REFUSAL])
    sr = _row(result.tables["service_request"], "cad9a7f2-4234-4f62-945b-2f65f5ff6f90")
    assert (sr["do_not_perform"], sr["reason_refused"]) == (True, [REFUSAL])
    mr = _row(result.tables["medication_request"], "7cbcfef8-5daf-4208-a579-c2f499b14b88")
    assert (mr["do_not_perform"], mr["reason_code"]) == (True, [REFUSAL])


def test_official_cms108_new_fields_survive_export(ecqm_dir: Path) -> None:
    files = sorted((ecqm_dir / "CMS108" / "tests").glob("*.json"))
    first = flatten_bundles([(json.loads(f.read_bytes()), f.stem) for f in files])
    assert first.tables["encounter"]["procedures"].null_count() < first.tables["encounter"].height
    again = flatten_bundles([(b, "x") for b in export_patient_bundles(first.tables)])
    assert again.rejected.height == 0
    for table, columns in {
        "encounter": ["procedures", "locations"],
        "medication_administration": ["recorded", "status_reason"],
        "procedure": ["recorded_date"],
    }.items():
        want = first.tables[table].select("patient_id", "id", *columns).sort("patient_id", "id")
        got = again.tables[table].select("patient_id", "id", *columns).sort("patient_id", "id")
        assert got.equals(want), table
    typed = first.tables["encounter"].filter(pl.col("locations").is_not_null())
    assert typed.height == 5 and typed["locations"].list.first().struct.field("type").null_count() == 0


def _encounter(eid: str, *stays: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2025-03-01T10:00:00Z", "end": "2025-03-03T10:00:00Z"},
        "location": [{"location": {"reference": f"Location/{s}"}} for s in stays],
    }


def _location(lid: str, code: str) -> dict[str, Any]:
    return {"resourceType": "Location", "id": lid, "type": [{"coding": [{"system": HSLOC, "code": code}]}]}


def _types(result: Any, eid: str, source: str | None = None) -> list[Any]:
    frame = result.tables["encounter"]
    if source is not None:
        frame = frame.filter(pl.col("source") == source)
    return [s["type"] for s in _row(frame, eid)["locations"]]


def test_locations_resolve_within_their_own_bundle_only() -> None:
    b1 = bundle(patient(), _encounter("e1", "L1", "L9"), _location("L1", "1025-6"))
    b2 = bundle(patient(), _encounter("e1", "L1"), _location("L1", "1027-2"))
    result = flatten_bundles([(b1, "b1"), (b2, "b2")])
    icu = [{"system": HSLOC, "code": "1025-6", "display": None}]
    assert _types(result, "e1", "b1") == [icu, None]  # L9 is in no Bundle: unresolved, null
    assert _types(result, "e1", "b2") == [[{"system": HSLOC, "code": "1027-2", "display": None}]]


def test_locations_resolve_against_the_bulk_export(tmp_path: Path) -> None:
    def write(name: str, *resources: dict[str, Any]) -> None:
        (tmp_path / f"{name}.ndjson").write_text("".join(json.dumps(r) + "\n" for r in resources))

    write("Patient", patient())
    write("Encounter", _encounter("e1", "L1"), _encounter("e2", "L2"))
    write("Location", _location("L1", "1026-4"))
    result = flatten_export(tmp_path, "bulk")
    assert result.rejected.height == 0
    assert _types(result, "e1") == [[{"system": HSLOC, "code": "1026-4", "display": None}]]
    assert _types(result, "e2") == [None]


def _frame(table: str, row: dict[str, Any]) -> pl.DataFrame:
    return conform(table, pl.DataFrame([row], schema={k: TABLES[table][k] for k in row}))


@pytest.mark.parametrize("n_buckets", [1, 3])
def test_handwritten_rows_round_trip(n_buckets: int) -> None:
    stay = {
        "location_id": "L1",
        "status": "completed",
        "start": datetime(2025, 3, 1, 10, 0, tzinfo=UTC),
        "end": datetime(2025, 3, 1, 11, 59, 59, 999999, tzinfo=UTC),
        "type": [{"system": HSLOC, "code": "1025-6", "display": "Trauma Critical Care"}],
    }
    encounter = {
        "patient_id": "p1",
        "id": "e1",
        "source": "rt",
        "status": "finished",
        "procedures": [{"procedure_id": "pr1", "rank": 1}, {"procedure_id": "pr2", "rank": None}],
        "locations": [stay, {**stay, "location_id": "L2", "status": None, "type": None}],
    }
    administration = {
        "patient_id": "p1",
        "id": "ma1",
        "source": "rt",
        "status": "completed",
        "medication": [
            {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1", "display": None}
        ],
        "recorded": datetime(2025, 3, 1, 9, 30, 15, 123000, tzinfo=UTC),
    }
    tables = {
        "patient": _frame("patient", {"patient_id": "p1", "gender": "female"}),
        "encounter": _frame("encounter", encounter),
        "medication_administration": _frame("medication_administration", administration),
    }
    result = flatten_bundles([(b, "rt") for b in export_patient_bundles(tables)], n_buckets=n_buckets)
    assert result.rejected.height == 0
    got = result.tables["encounter"].row(0, named=True)
    assert (got["procedures"], got["locations"]) == (encounter["procedures"], encounter["locations"])
    assert result.tables["medication_administration"]["recorded"].to_list() == [administration["recorded"]]
