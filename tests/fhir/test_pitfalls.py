"""One test per pitfall of data-model.md section 3 (P1-P15)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import xxhash

from datasets.fhir import canonical_system, flatten_bundle
from datasets.fhir.bulk import flatten_export
from datasets.fhir.synthea import flatten_synthea
from datasets.hashing import bucket_of

from .conftest import FIXTURES
from .helpers import bundle, cc, obs, patient


def _dt(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


def test_p1_offsets_and_z() -> None:
    r = flatten_bundle(
        bundle(
            patient(),
            obs("a", effectiveDateTime="2024-03-05T10:11:12Z"),
            obs("b", effectiveDateTime="2024-03-05T10:11:12.5-05:00"),
            obs("c", effectiveDateTime="2024-03-05"),
        )
    )
    o = r.tables["observation"].sort("id")
    assert o["start"].to_list() == [
        _dt(2024, 3, 5, 10, 11, 12),
        _dt(2024, 3, 5, 15, 11, 12, 500000),
        _dt(2024, 3, 5),
    ]
    assert o["tz_offset_min"].to_list() == [0, -300, None]  # date-only: no offset written


def test_p2_null_ends_stay_null() -> None:
    r = flatten_bundle(
        bundle(
            patient(),
            {
                "resourceType": "Encounter",
                "id": "e",
                "status": "in-progress",
                "subject": {"reference": "Patient/p1"},
                "period": {"start": "2024-01-01T00:00:00+00:00"},
            },
            {
                "resourceType": "Condition",
                "id": "c",
                "subject": {"reference": "Patient/p1"},
                "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            },
        )
    )
    assert r.tables["encounter"]["end"].to_list() == [None]
    c = r.tables["condition"].row(0, named=True)
    assert c["start"] is None and c["end"] is None and c["clinical_status"] == "active"


def test_p3_partial_dates_are_boundaries() -> None:
    r = flatten_bundle(
        bundle(
            patient(),
            {
                "resourceType": "Condition",
                "id": "c",
                "subject": {"reference": "Patient/p1"},
                "code": cc("x", "1"),
                "onsetDateTime": "2024-02",
                "abatementDateTime": "2025",
            },
        )
    )
    c = r.tables["condition"].row(0, named=True)
    assert c["start"] == _dt(2024, 2, 1) and c["start_prec"] == 2
    assert c["end"] == _dt(2025, 12, 31, 23, 59, 59, 999999) and c["end_prec"] == 1
    assert c["onset_type"] == "dateTime" and c["abatement_type"] == "dateTime"


def test_p4_choice_types_and_medication_reference() -> None:
    rx = "http://www.nlm.nih.gov/research/umls/rxnorm"
    contained = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2024-05-01",
        "contained": [{"resourceType": "Medication", "id": "med", "code": cc(rx, "111")}],
        "medicationReference": {"reference": "#med"},
    }
    standalone = {
        **contained,
        "id": "m2",
        "contained": [],
        "medicationReference": {"reference": "Medication/s"},
    }
    med = {"resourceType": "Medication", "id": "s", "code": cc("RxNorm", "222")}
    proc = {
        "resourceType": "Procedure",
        "id": "pr",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": cc("http://snomed.info/sct", "1"),
        "performedPeriod": {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T11:00:00Z"},
    }
    dead = patient(deceasedDateTime="2024-06-01")
    r = flatten_bundle(
        bundle(
            dead,
            contained,
            standalone,
            med,
            proc,
            obs("v", valueCodeableConcept=cc("http://snomed.info/sct", "9")),
        )
    )
    mr = r.tables["medication_request"].sort("id")
    assert [m[0]["code"] for m in mr["medication"].to_list()] == ["111", "222"]
    assert mr["medication"].to_list()[1][0]["system"] == rx
    assert mr["medication_id"].to_list() == [None, "s"]
    p = r.tables["procedure"].row(0, named=True)
    assert p["performed_type"] == "Period" and p["end"] == _dt(2024, 1, 1, 11, 0, 0, 999999)
    o = r.tables["observation"].row(0, named=True)
    assert o["value_type"] == "CodeableConcept" and o["value_concept"][0]["code"] == "9"
    assert r.tables["patient"].row(0, named=True)["deceased"] is True


def test_p5_codings_icd_dots_and_aliases() -> None:
    code = {
        "coding": [
            {"system": "ICD10CM", "code": "E6601"},
            {"system": "urn:oid:2.16.840.1.113883.6.96", "code": "414916001"},
        ]
    }
    r = flatten_bundle(
        bundle(
            patient(),
            {"resourceType": "Condition", "id": "c", "code": code, "subject": {"reference": "Patient/p1"}},
        )
    )
    codes = r.tables["condition"]["code"].to_list()[0]
    assert [(c["system"], c["code"]) for c in codes] == [
        ("http://hl7.org/fhir/sid/icd-10-cm", "E66.01"),
        ("http://snomed.info/sct", "414916001"),
    ]
    assert canonical_system("http://terminology.hl7.org/CodeSystem/CD2") == canonical_system(
        "http://www.ada.org/cdt"
    )
    assert canonical_system("https://nahdo.org/sopt") == "urn:oid:2.16.840.1.113883.3.221.5"
    assert canonical_system("http://www.nlm.nih.gov/research/umls/hcpcs") == canonical_system("HCPCS")


def test_p6_units_and_comparator() -> None:
    bp = obs(
        "bp",
        code=cc("http://loinc.org", "85354-9"),
        component=[
            {"code": cc("http://loinc.org", "8480-6"), "valueQuantity": {"value": 120, "unit": "mmHg"}},
            {
                "code": cc("http://loinc.org", "8462-4"),
                "valueQuantity": {
                    "value": 80,
                    "unit": "mmHg",
                    "system": "http://unitsofmeasure.org",
                    "code": "mm[Hg]",
                },
            },
        ],
    )
    lab = obs("lab", valueQuantity={"value": 5, "comparator": "<", "unit": "%"})
    r = flatten_bundle(bundle(patient(), bp, lab))
    comp = r.tables["observation_component"].sort("component_ix")
    assert comp["value_unit"].to_list() == ["mm[Hg]", "mm[Hg]"] and comp["value_quantity"].to_list() == [
        120,
        80,
    ]
    assert comp["observation_id"].to_list() == ["bp", "bp"]
    row = r.tables["observation"].filter(pl.col("id") == "lab").row(0, named=True)
    assert row["value_comparator"] == "<" and row["value_quantity"] == 5


def _ndjson(path: Path, resources: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in resources) + "\n")


def test_p7_bulk_versions_and_deletes(tmp_path: Path) -> None:
    def o(oid: str, stamp: str, value: float) -> dict[str, object]:
        return obs(oid, meta={"lastUpdated": stamp}, valueQuantity={"value": value})

    _ndjson(tmp_path / "pull1" / "Patient.ndjson", [patient()])
    _ndjson(
        tmp_path / "pull1" / "Observation.ndjson",
        [o("a", "2024-01-01T00:00:00Z", 1), o("b", "2024-01-01T00:00:00Z", 1)],
    )
    _ndjson(tmp_path / "pull2" / "Observation.000.ndjson", [o("a", "2024-02-01T00:00:00Z", 2)])
    _ndjson(tmp_path / "pull2" / "Observation.001.ndjson", [o("c", "2024-02-01T00:00:00Z", 3)])
    delete = {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"lastUpdated": "2024-03-01T00:00:00Z"},
        "entry": [{"request": {"method": "DELETE", "url": "Observation/b"}}],
    }
    _ndjson(tmp_path / "pull2" / "deleted" / "Bundle.ndjson", [delete])
    r = flatten_export(tmp_path)
    o_ = r.tables["observation"].sort("id")
    assert o_["id"].to_list() == ["a", "c"] and o_["value_quantity"].to_list() == [2, 3]
    assert r.dropped_counts["deleted"] == 1


def test_p8_statuses_raw_and_entered_in_error_dropped() -> None:
    r = flatten_bundle(
        bundle(
            patient(),
            obs("a", status="amended"),
            obs("b", status="entered-in-error"),
            obs("c", status="Cancelled"),
        )
    )
    assert sorted(r.tables["observation"]["status"].to_list()) == ["amended", "cancelled"]
    assert r.dropped_counts == {"observation": 1} and r.rejected.height == 0


def test_p9_reference_forms() -> None:
    forms = [
        "Patient/p1",
        "Patient/p1/_history/2",
        "http://other.org/fhir/Patient/p1",
        "urn:uuid:abc",
        "Patient/fullurl-id",
    ]
    res = [obs(f"o{i}", subject={"reference": ref}) for i, ref in enumerate(forms)]
    urls = ["urn:uuid:abc", *[f"urn:uuid:o{i}" for i in range(len(forms))]]
    b = bundle(patient(), *res, full_urls=urls)
    b["entry"].append(
        {
            "fullUrl": "http://x/Encounter/fullurl-enc",
            "resource": {
                "resourceType": "Encounter",
                "id": "e1",
                "status": "finished",
                "subject": {"reference": "Patient/p1"},
            },
        }
    )
    b["entry"][1]["resource"]["encounter"] = {"reference": "Encounter/fullurl-enc"}
    r = flatten_bundle(b)
    assert set(r.tables["observation"]["patient_id"]) == {"p1"}
    assert r.tables["observation"].filter(pl.col("id") == "o0")["encounter_id"].to_list() == ["e1"]


def test_p10_synthea_header_versions() -> None:
    new = flatten_synthea(FIXTURES / "synthea_v3")
    old = flatten_synthea(FIXTURES / "synthea_v2")
    assert new.rejected.height == 0 and old.rejected.height == 0
    assert old.tables["coverage"]["start"].to_list() == [_dt(2023, 1, 1)]
    assert old.tables["coverage"]["end"].to_list() == [_dt(2024, 12, 31, 23, 59, 59, 999999)]
    assert old.tables["condition"]["code"].to_list()[0][0]["system"] == "http://snomed.info/sct"
    panel = new.tables["observation"].filter(pl.col("code").list.first().struct.field("code") == "85354-9")
    assert panel.height == 1 and new.tables["observation_component"].height == 2
    assert new.tables["immunization"]["id"].n_unique() == 2  # identical rows keep distinct ids
    assert "QALY" not in str(new.tables["observation"]["code"].to_list())


def test_p11_partial_birth_date_precision() -> None:
    r = flatten_bundle(bundle(patient(birthDate="1970-06")))
    p = r.tables["patient"].row(0, named=True)
    assert p["birth_date"] == date(1970, 6, 1) and p["birth_date_prec"] == 2


def test_p12_period_boundaries_closed() -> None:
    r = flatten_bundle(
        bundle(
            patient(),
            {
                "resourceType": "Coverage",
                "id": "cov",
                "status": "active",
                "beneficiary": {"reference": "Patient/p1"},
                "period": {"start": "2026-01-01", "end": "2026-12-31"},
            },
        )
    )
    c = r.tables["coverage"].row(0, named=True)
    assert c["start"] == _dt(2026, 1, 1) and c["end"] == _dt(2026, 12, 31, 23, 59, 59, 999999)


def test_p13_profiles_kept() -> None:
    prof = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"
    r = flatten_bundle(bundle(patient(), obs("bp", meta={"profile": [prof]})))
    assert r.tables["observation"]["profiles"].to_list() == [[prof]]


def test_p14_buckets_from_stable_hash() -> None:
    r = flatten_bundle(bundle(patient("abc"), obs("o", subject={"reference": "Patient/abc"})), n_buckets=16)
    expected = xxhash.xxh64_intdigest(b"abc") % 16  # the fixed algorithm, not pl.Expr.hash
    assert expected == int(bucket_of(["abc"], 16)[0])
    assert r.tables["patient"]["bucket"].to_list() == [expected]
    assert r.tables["observation"]["bucket"].to_list() == [expected]
    assert r.tables["patient"]["bucket"].dtype == pl.UInt16


def test_p15_unknown_status_quarantined() -> None:
    r = flatten_bundle(
        bundle(
            patient(),
            obs("ok"),
            obs("bad", status="done-ish"),
            obs("nosubj", subject=None),
            obs("baddate", effectiveDateTime="2024-13-45"),
        )
    )
    assert r.tables["observation"]["id"].to_list() == ["ok"]
    reasons = dict(zip(r.rejected["id"], r.rejected["reason"], strict=True))
    assert reasons == {
        "bad": "unknown status",
        "nosubj": "missing subject",
        "baddate": "unparseable date in effectiveDateTime",
    }


def test_reader_keeps_escaped_text_exact() -> None:
    """The fast ndjson path must not change strings polars re-serialises loosely (backslashes, tabs)."""
    code = {"coding": [{"system": "http://loinc.org", "code": "1", "display": 'C:\\new\tx "q"'}]}
    r = flatten_bundle(bundle(patient(), obs("o", code=code)))
    assert r.tables["observation"]["code"].to_list()[0][0]["display"] == 'C:\\new\tx "q"'
