"""Canonical frames -> FHIR R4 collection Bundles, one per patient (the inverse of the flattener).

Enough of each resource is written that ``flatten(export(x)) == x`` on the fields the canonical schema holds
for the elements listed in ``EXPORTED`` (tested by a round-trip property test). Times are written at their
stored precision, in their stored offset (a value with no offset is written without one, as read); the
precision ``hour`` has no FHIR spelling and is written to the minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from datasets.fhir.raw import TABLE_OF

RESOURCE_OF = {table: rtype for rtype, table in TABLE_OF.items()}
Row = Mapping[str, Any]
Json = dict[str, Any]
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
QICORE = "http://hl7.org/fhir/us/qicore/StructureDefinition/"


def fhir_time(
    value: datetime | None,
    prec: int | None,
    tz: int | None,
    *,
    high: bool = False,
    point_end: datetime | None = None,
) -> str | None:
    """A UTC instant written at ``prec`` in offset ``tz`` (no offset when ``tz`` is null).

    ``high`` says the value is a high boundary: a fraction is then written with as few digits as give that
    boundary back (``.000999`` is the high boundary of ``.000``), so the round trip is exact.
    """
    if value is None:
        return None
    prec = prec or 7
    if prec <= 3:  # dates carry no offset: they were read in the default zone (UTC)
        return value.strftime(("%Y", "%Y-%m", "%Y-%m-%d")[prec - 1])
    local = value.replace(tzinfo=None) + timedelta(minutes=tz or 0)
    text = local.strftime("%Y-%m-%dT%H:%M" if prec <= 5 else "%Y-%m-%dT%H:%M:%S")
    if prec >= 7:
        micro = local.microsecond
        # a point value (effectiveDateTime...) is read back as [low, high] of the text: three digits give a
        # high boundary 999 us later, six give the instant itself; choose what reproduces the row's end
        exact_point = point_end is not None and point_end == value
        if micro % 1000 == (999 if high else 0) and not exact_point:
            text += f".{micro // 1000:03d}"
        else:
            text += f".{micro:06d}"
    if tz is not None:
        sign = "-" if tz < 0 else "+"
        text += f"{sign}{abs(tz) // 60:02d}:{abs(tz) % 60:02d}"
    return text


def _start(row: Row) -> str | None:
    return fhir_time(row["start"], row["start_prec"], row["tz_offset_min"])


def _end(row: Row) -> str | None:
    return fhir_time(row["end"], row["end_prec"], row["tz_offset_min"], high=True)


def _period(row: Row) -> Json | None:
    period = {k: v for k, v in (("start", _start(row)), ("end", _end(row))) if v is not None}
    return period or None


def _cc(codes: list[Row] | None) -> Json | None:
    if not codes:
        return None
    return {"coding": [{k: v for k, v in c.items() if v is not None} for c in codes]}


def _ccs(codes: list[Row] | None) -> list[Json] | None:
    return [c for c in (_cc([code]) for code in codes or ()) if c] or None


def _ref(rtype: str, rid: str | None) -> Json | None:
    return {"reference": f"{rtype}/{rid}"} if rid else None


def _instant(value: datetime | None) -> str | None:
    return fhir_time(value, 7, 0)


def _status_cc(system: str, code: str | None) -> Json | None:
    return {"coding": [{"system": system, "code": code}]} if code else None


def _choice(prefix: str, kind: str | None, row: Row) -> Json:
    if kind in ("dateTime", "instant"):
        text = fhir_time(row["start"], row["start_prec"], row["tz_offset_min"], point_end=row["end"])
        return {f"{prefix}{kind[0].upper()}{kind[1:]}": text}
    if kind == "Period":
        return {f"{prefix}Period": _period(row) or {}}
    return {}


def _value(row: Row) -> Json:
    kind = row.get("value_type")
    if kind == "Quantity":
        q = {
            "value": row["value_quantity"],
            "comparator": row["value_comparator"],
            "unit": row["value_unit"],
            "system": "http://unitsofmeasure.org" if row["value_unit"] else None,
            "code": row["value_unit"],
        }
        return {"valueQuantity": {k: v for k, v in q.items() if v is not None}}
    if kind == "integer":
        return {"valueInteger": int(row["value_quantity"])}
    if kind == "CodeableConcept":
        return {"valueCodeableConcept": _cc(row["value_concept"])}
    if kind == "string":
        return {"valueString": row["value_string"]}
    if kind == "boolean":
        return {"valueBoolean": row["value_boolean"]}
    if kind == "dateTime":
        return {"valueDateTime": _instant(row["value_datetime"])}
    return {}


def _patient(row: Row) -> Json:
    def ethnic(url: str, omb: list[str] | None, detailed: list[str] | None, text: str | None) -> Json | None:
        subs = [
            {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": c}}
            for c in omb or ()
        ]
        subs += [
            {"url": "detailed", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": c}}
            for c in detailed or ()
        ]
        subs += [{"url": "text", "valueString": text}] if text else []
        return {"url": US_CORE + url, "extension": subs} if subs else None

    ext = [
        e
        for e in (
            ethnic("us-core-race", row["race_omb"], row["race_detailed"], row["race_text"]),
            ethnic(
                "us-core-ethnicity", row["ethnicity_omb"], row["ethnicity_detailed"], row["ethnicity_text"]
            ),
        )
        if e
    ]
    if row["birth_sex"]:
        ext.append({"url": US_CORE + "us-core-birthsex", "valueCode": row["birth_sex"]})
    for coding in row["sex"] or ():
        sex = {k: v for k, v in coding.items() if v is not None}
        ext.append({"url": US_CORE + "us-core-sex", "valueCoding": sex})
    birth = row["birth_date"]
    address = {
        "use": "home",
        "state": row["address_state"],
        "postalCode": row["address_postal_code"],
        "country": row["address_country"],
    }
    out: Json = {
        "resourceType": "Patient",
        "id": row["patient_id"],
        "extension": ext,
        "gender": row["gender"],
        "birthDate": fhir_time(datetime(birth.year, birth.month, birth.day), row["birth_date_prec"], None)
        if birth
        else None,
        "address": [address] if any(v for k, v in address.items() if k != "use") else None,
        "managingOrganization": _ref("Organization", row["managing_organization_id"]),
        "generalPractitioner": [_ref("Practitioner", p) for p in row["general_practitioner_ids"] or ()]
        or None,
    }
    if row["deceased_datetime"] is not None:
        out["deceasedDateTime"] = _instant(row["deceased_datetime"])
    elif row["deceased"] is not None:
        out["deceasedBoolean"] = row["deceased"]
    return out


def _encounter_procedures(row: Row) -> list[Json] | None:
    """QI-Core encounter-procedure extensions, one per ``procedures`` entry."""
    out = []
    for p in row.get("procedures") or ():
        subs: list[Json] = []
        if p["procedure_id"] is not None:
            subs.append({"url": "procedure", "valueReference": _ref("Procedure", p["procedure_id"])})
        if p["rank"] is not None:
            subs.append({"url": "rank", "valuePositiveInt": p["rank"]})
        out.append({"url": QICORE + "qicore-encounter-procedure", "extension": subs})
    return out or None


def _stays(row: Row) -> list[Json] | None:
    """``location[]``: the stays (the Location resources with their type are written beside, see
    :func:`_locations`). ``start``/``end`` are UTC instants, ``end`` a high boundary."""
    out = []
    for stay in row.get("locations") or ():
        period = {
            k: v
            for k, v in (
                ("start", _instant(stay["start"])),
                ("end", fhir_time(stay["end"], 7, 0, high=True)),
            )
            if v is not None
        }
        body = {
            "location": _ref("Location", stay["location_id"]),
            "status": stay["status"],
            "period": period or None,
        }
        out.append({k: v for k, v in body.items() if v is not None})
    return out or None


def _locations(rows: list[Row]) -> list[Json]:
    """One Location per referenced location id that has a ``type`` (the first one seen wins)."""
    seen: dict[str, Json] = {}
    for row in rows:
        for stay in row.get("locations") or ():
            lid, types = stay["location_id"], stay["type"]
            if lid and types and lid not in seen:
                seen[lid] = {"resourceType": "Location", "id": lid, "type": _ccs(types)}
    return list(seen.values())


DIAGNOSIS_ROLE = "http://terminology.hl7.org/CodeSystem/diagnosis-role"


def _diagnoses(row: Row) -> list[Json] | None:
    """``diagnosis[]``: the referenced condition, its role (``use``) and ``rank``."""
    out = []
    for dx in row.get("diagnoses") or ():
        use = dx.get("use")
        body = {
            "condition": _ref("Condition", dx.get("condition_id")),
            "use": {"coding": [{"system": DIAGNOSIS_ROLE, "code": use}]} if use else None,
            "rank": dx.get("rank"),
        }
        out.append({k: v for k, v in body.items() if v is not None})
    return out or None


def _encounter(row: Row) -> Json:
    klass = {"system": row["class_system"], "code": row["class_code"]} if row["class_code"] else None
    return {
        "extension": _encounter_procedures(row),
        "status": row["status"],
        "class": klass,
        "type": _ccs(row["type"]),
        "reasonCode": _ccs(row["reason_code"]),
        "subject": _ref("Patient", row["patient_id"]),
        "period": _period(row),
        "diagnosis": _diagnoses(row),
        "location": _stays(row),
    }


def _condition(row: Row) -> Json:
    onset = {"start": row["start"], "start_prec": row["start_prec"], "tz_offset_min": row["tz_offset_min"]}
    abate = {"start": row["end"], "start_prec": row["end_prec"], "tz_offset_min": row["tz_offset_min"]}
    return {
        "clinicalStatus": _status_cc(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", row["clinical_status"]
        ),
        "verificationStatus": _status_cc(
            "http://terminology.hl7.org/CodeSystem/condition-ver-status", row["verification_status"]
        ),
        "category": _ccs(row["category"]),
        "code": _cc(row["code"]),
        "subject": _ref("Patient", row["patient_id"]),
        "encounter": _ref("Encounter", row["encounter_id"]),
        "onsetDateTime": _start(onset) if row["onset_type"] == "dateTime" else None,
        "abatementDateTime": _start(abate) if row["abatement_type"] == "dateTime" else None,
        # The table keeps the onset's low and the abatement's high boundary only (start, end).
        "onsetPeriod": {"start": _start(row)} if row["onset_type"] == "Period" and row["start"] else None,
        "abatementPeriod": {"end": _end(row)} if row["abatement_type"] == "Period" and row["end"] else None,
        "recordedDate": _instant(row["recorded_date"]),
    }


def _recorded(value: datetime | None) -> list[Json] | None:
    """The qicore-recorded extension (``procedure.recorded_date``, ``medication_administration.recorded``)."""
    return [{"url": QICORE + "qicore-recorded", "valueDateTime": _instant(value)}] if value else None


def _procedure(row: Row) -> Json:
    return {
        "extension": _recorded(row.get("recorded_date")),
        "status": row["status"],
        "code": _cc(row["code"]),
        "subject": _ref("Patient", row["patient_id"]),
        "encounter": _ref("Encounter", row["encounter_id"]),
        **_choice("performed", row["performed_type"], row),
    }


def _observation(row: Row, components: list[Row]) -> Json:
    return {
        "meta": {"profile": row["profiles"]} if row["profiles"] else None,
        "status": row["status"],
        "category": _ccs(row["category"]),
        "code": _cc(row["code"]),
        "subject": _ref("Patient", row["patient_id"]),
        "encounter": _ref("Encounter", row["encounter_id"]),
        **_choice("effective", row["effective_type"], row),
        "issued": _instant(row["issued"]),
        **_value(row),
        "component": [{"code": _cc(c["code"]), **_value(c)} for c in components] or None,
    }


def _quantity(value: float | None, unit: str | None) -> Json | None:
    if value is None:
        return None
    return {k: v for k, v in (("value", value), ("unit", unit), ("code", unit)) if v is not None} | (
        {"system": "http://unitsofmeasure.org"} if unit else {}
    )


def _dosage(row: Row) -> list[Json] | None:
    """``dosageInstruction[0]``: dose and timing, the inputs of CumulativeMedicationDuration."""
    repeat = {
        "frequency": row.get("timing_frequency"),
        "frequencyMax": row.get("timing_frequency_max"),
        "period": row.get("timing_period"),
        "periodUnit": row.get("timing_period_unit"),
        "timeOfDay": row.get("timing_times_of_day") or None,
    }
    if row.get("bounds_start") is not None or row.get("bounds_end") is not None:
        repeat["boundsPeriod"] = {
            k: v
            for k, v in (
                ("start", _instant(row.get("bounds_start"))),
                ("end", _instant(row.get("bounds_end"))),
            )
            if v is not None
        }
    repeat = {k: v for k, v in repeat.items() if v is not None}
    dose = _quantity(row.get("dose_value"), row.get("dose_unit"))
    dosage: Json = {}
    if repeat:
        dosage["timing"] = {"repeat": repeat}
    if dose:
        dosage["doseAndRate"] = [{"doseQuantity": dose}]
    return [dosage] if dosage else None


def _dispense_request(row: Row) -> Json | None:
    request = {
        "numberOfRepeatsAllowed": row.get("refills"),
        "quantity": _quantity(row.get("dispense_quantity"), row.get("dispense_quantity_unit")),
        "expectedSupplyDuration": _quantity(row.get("expected_supply_days"), "d"),
    }
    if row.get("validity_start") is not None or row.get("validity_end") is not None:
        request["validityPeriod"] = {
            k: v
            for k, v in (
                ("start", _instant(row.get("validity_start"))),
                ("end", _instant(row.get("validity_end"))),
            )
            if v is not None
        }
    request = {k: v for k, v in request.items() if v is not None}
    return request or None


def _medication_request(row: Row) -> Json:
    return {
        "status": row["status"],
        "intent": row["intent"],
        "doNotPerform": row["do_not_perform"],
        "medicationCodeableConcept": _cc(row["medication"]),
        "subject": _ref("Patient", row["patient_id"]),
        "encounter": _ref("Encounter", row.get("encounter_id")),
        "authoredOn": fhir_time(row["start"], row["start_prec"], row["tz_offset_min"], point_end=row["end"]),
        "dosageInstruction": _dosage(row),
        "dispenseRequest": _dispense_request(row),
    }


def _immunization(row: Row) -> Json:
    return {
        "status": row["status"],
        "vaccineCode": _cc(row["vaccine_code"]),
        "patient": _ref("Patient", row["patient_id"]),
        "occurrenceDateTime": _start(row),
    }


def _padded(names: list[str] | None, ids: list[str] | None) -> list[str | None]:
    """Payor display names beside their ids (names may be missing)."""
    wanted = len(ids or ())
    have: list[str | None] = [*(names or ())][:wanted]
    return have + [None] * (wanted - len(have))


def _coverage(row: Row) -> Json:
    return {
        "status": row["status"],
        "type": _cc(row["type"]),
        "beneficiary": _ref("Patient", row["patient_id"]),
        "payor": [
            {k: v for k, v in (("reference", f"Organization/{p}"), ("display", name)) if v is not None}
            for p, name in zip(
                row["payor_ids"] or (), _padded(row["payor_names"], row["payor_ids"]), strict=True
            )
        ]
        or None,
        "subscriberId": row["subscriber_id"],
        "period": _period(row),
    }


def _medication_dispense(row: Row) -> Json:
    return {
        "status": row["status"],
        "medicationCodeableConcept": _cc(row["medication"]),
        "subject": _ref("Patient", row["patient_id"]),
        "context": _ref("Encounter", row["encounter_id"]),
        "whenHandedOver": _start(row) if row["when_handed_over"] is not None else None,
        "whenPrepared": fhir_time(row["when_prepared"], row["start_prec"], row["tz_offset_min"])
        if row["when_handed_over"] is None
        else None,
        "quantity": {"value": row["quantity"]} if row["quantity"] is not None else None,
        "daysSupply": {"value": row["days_supply"]} if row["days_supply"] is not None else None,
    }


def _medication_administration(row: Row) -> Json:
    ext = (
        [
            {
                "url": "http://hl7.org/fhir/us/qicore/StructureDefinition/qicore-notDoneValueSet",
                "valueCanonical": row["not_done_valueset"],
            }
        ]
        if row["not_done_valueset"]
        else []
    )
    ext += _recorded(row.get("recorded")) or []
    return {
        "extension": ext or None,
        "status": row["status"],
        "statusReason": _ccs(row["status_reason"]),
        "medicationCodeableConcept": _cc(row["medication"]),
        "subject": _ref("Patient", row["patient_id"]),
        "context": _ref("Encounter", row["encounter_id"]),
        "effectivePeriod": _period(row),
        "dosage": _clean(
            {"route": _cc(row.get("route")), "dose": _quantity(row.get("dose_value"), row.get("dose_unit"))}
        )
        or None,
    }


def _allergy(row: Row) -> Json:
    return {
        "clinicalStatus": _status_cc(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", row["clinical_status"]
        ),
        "verificationStatus": _status_cc(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            row["verification_status"],
        ),
        "type": row["type"],
        "category": row["category"],
        "criticality": row["criticality"],
        "code": _cc(row["code"]),
        "patient": _ref("Patient", row["patient_id"]),
        **_choice("onset", row["onset_type"], row),
    }


def _request(code: str) -> Any:
    def write(row: Row) -> Json:
        ext = (
            [
                {
                    "url": "http://hl7.org/fhir/us/qicore/StructureDefinition/qicore-doNotPerformReason",
                    "valueCodeableConcept": _cc(row["reason_refused"]),
                }
            ]
            if row["reason_refused"]
            else None
        )
        kind = row["occurrence_type"]
        body: Json = {
            "extension": ext,
            "status": row["status"],
            "intent": row["intent"],
            code: _cc(row["code"]),
            "reasonCode": _ccs(row["reason_code"]),
            "subject": _ref("Patient", row["patient_id"]),
            "authoredOn": _instant(row["authored_on"]) if kind != "authoredOn" else _start(row),
            **(_choice("occurrence", kind, row) if kind != "authoredOn" else {}),
        }
        if code == "code":
            body["doNotPerform"] = row["do_not_perform"]
        elif row["do_not_perform"] is not None:
            body["modifierExtension"] = [
                {
                    "url": "http://hl7.org/fhir/us/qicore/StructureDefinition/qicore-doNotPerform",
                    "valueBoolean": row["do_not_perform"],
                }
            ]
        return body

    return write


def _diagnostic_report(row: Row) -> Json:
    return {
        "status": row["status"],
        "category": _ccs(row["category"]),
        "code": _cc(row["code"]),
        "subject": _ref("Patient", row["patient_id"]),
        **_choice("effective", row["effective_type"], row),
        "issued": _instant(row["issued"]),
        "result": [{"reference": f"Observation/{r}"} for r in row["result_ids"] or ()] or None,
    }


WRITERS = {
    "encounter": _encounter,
    "condition": _condition,
    "procedure": _procedure,
    "medication_request": _medication_request,
    "immunization": _immunization,
    "coverage": _coverage,
    "medication_dispense": _medication_dispense,
    "medication_administration": _medication_administration,
    "allergy_intolerance": _allergy,
    "service_request": _request("code"),
    "device_request": _request("codeCodeableConcept"),
    "diagnostic_report": _diagnostic_report,
}
EXPORTED = ("patient", "observation", "observation_component", *WRITERS)


def _clean(resource: Json) -> Json:
    return {k: v for k, v in resource.items() if v is not None and v != [] and v != {}}


def _resource(table: str, row: Row, components: list[Row]) -> Json:
    body = _observation(row, components) if table == "observation" else WRITERS[table](row)
    meta = dict(body.pop("meta", None) or {})
    if row.get("meta_last_updated") is not None:
        meta["lastUpdated"] = _instant(row["meta_last_updated"])
    return _clean({"resourceType": RESOURCE_OF[table], "id": row["id"], "meta": meta or None, **body})


def _by_patient(frame: pl.DataFrame) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in frame.iter_rows(named=True):
        out.setdefault(row["patient_id"], []).append(row)
    return out


def export_patient_bundles(tables: Mapping[str, pl.DataFrame]) -> Iterator[Json]:
    """One collection Bundle per patient row, with the patient's resources of the exported tables."""
    grouped = {t: _by_patient(tables[t]) for t in (*WRITERS, "observation") if t in tables}
    components: dict[tuple[str, str], list[Row]] = {}
    if "observation_component" in tables:
        for row in tables["observation_component"].sort("component_ix").iter_rows(named=True):
            components.setdefault((row["patient_id"], row["observation_id"]), []).append(row)
    for patient in tables["patient"].iter_rows(named=True):
        pid = patient["patient_id"]
        patient_res = _clean(_patient(patient))
        if patient.get("meta_last_updated") is not None:
            patient_res["meta"] = {"lastUpdated": _instant(patient["meta_last_updated"])}
        resources = [patient_res]
        for table, rows in grouped.items():
            resources += [
                _resource(table, row, components.get((pid, row["id"]), [])) for row in rows.get(pid, [])
            ]
        resources += _locations(grouped.get("encounter", {}).get(pid, []))
        yield {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": f"urn:uuid:{r['resourceType']}-{r['id']}", "resource": r} for r in resources
            ],
        }


def write_bundles(tables: Mapping[str, pl.DataFrame], out_dir: Path | str) -> int:
    """Write ``<out_dir>/<patient_id>.json`` per patient; returns the number written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for bundle in export_patient_bundles(tables):
        pid = bundle["entry"][0]["resource"]["id"]
        (out / f"{pid}.json").write_text(json.dumps(bundle, separators=(",", ":")))
        n += 1
    return n
