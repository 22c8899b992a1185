"""Pinned partial schemas of the raw FHIR R4 resources, one per resource type.

Every input (Bundle, Bulk ndjson, Synthea CSV) is first turned into frames of this shape, so one flattener
serves all three. Only the elements the canonical tables need are listed; JSON readers ignore the rest.
Choice types arrive as separate keys (``effectiveDateTime``, ``effectivePeriod``, ...). Time values stay
strings here; :mod:`datasets.fhir.timing` parses them with their precision and offset.
"""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

S = pl.String()
B, I64, F64 = pl.Boolean(), pl.Int64(), pl.Float64()
CODING = pl.Struct({"system": S, "code": S, "display": S})
CC = pl.Struct({"coding": pl.List(CODING), "text": S})
CCS = pl.List(CC)
REF = pl.Struct({"reference": S, "display": S})
REFS = pl.List(REF)
PERIOD = pl.Struct({"start": S, "end": S})
QUANTITY = pl.Struct({"value": F64, "comparator": S, "unit": S, "system": S, "code": S})
RANGE = pl.Struct({"low": QUANTITY, "high": QUANTITY})
META = pl.Struct({"lastUpdated": S, "profile": pl.List(S)})
_SUB_EXT = pl.Struct(
    {
        "url": S,
        "valueCoding": CODING,
        "valueString": S,
        "valueCodeableConcept": CC,
        "valueReference": REF,
        "valuePositiveInt": I64,
    }
)
EXT = pl.List(
    pl.Struct(
        {
            "url": S,
            "valueBoolean": B,
            "valueCode": S,
            "valueString": S,
            "valueCanonical": S,
            "valueUri": S,
            "valueDateTime": S,
            "valueCoding": CODING,
            "valueCodeableConcept": CC,
            "valueReference": REF,
            "extension": pl.List(_SUB_EXT),
        }
    )
)
TIMING = pl.Struct(
    {
        "repeat": pl.Struct(
            {
                "frequency": I64,
                "frequencyMax": I64,
                "period": F64,
                "periodUnit": S,
                "timeOfDay": pl.List(S),
                "boundsPeriod": PERIOD,
            }
        )
    }
)
DOSAGE = pl.Struct(
    {"timing": TIMING, "doseAndRate": pl.List(pl.Struct({"doseQuantity": QUANTITY})), "route": CC}
)
_VALUE = {
    "valueQuantity": QUANTITY,
    "valueCodeableConcept": CC,
    "valueString": S,
    "valueBoolean": B,
    "valueInteger": I64,
    "valueRange": RANGE,
    "valueDateTime": S,
    "valuePeriod": PERIOD,
    "valueTime": S,
    "valueRatio": pl.Struct({"numerator": QUANTITY, "denominator": QUANTITY}),
    "dataAbsentReason": CC,
}
CONTAINED = pl.List(pl.Struct({"resourceType": S, "id": S, "code": CC}))


def _resource(**fields: pl.DataType) -> pl.Schema:
    # ``_source`` is not FHIR: readers that merge several inputs (a folder of Bundles) set it per resource.
    base: dict[str, pl.DataType] = {
        "resourceType": S,
        "id": S,
        "_source": S,
        "meta": META,
        "extension": EXT,
        "modifierExtension": EXT,
    }
    return pl.Schema({**base, **fields})


RAW: dict[str, pl.Schema] = {
    "Patient": _resource(
        gender=S,
        birthDate=S,
        deceasedBoolean=B,
        deceasedDateTime=S,
        address=pl.List(pl.Struct({"use": S, "state": S, "postalCode": S, "country": S})),
        managingOrganization=REF,
        generalPractitioner=REFS,
    ),
    "Coverage": _resource(
        status=S,
        type=CC,
        beneficiary=REF,
        payor=REFS,
        subscriberId=S,
        period=PERIOD,
        **{"class": pl.List(pl.Struct({"type": CC, "value": S, "name": S}))},
    ),
    "Encounter": _resource(
        status=S,
        type=CCS,
        serviceType=CC,
        priority=CC,
        reasonCode=CCS,
        reasonReference=REFS,
        subject=REF,
        period=PERIOD,
        participant=pl.List(pl.Struct({"individual": REF})),
        serviceProvider=REF,
        partOf=REF,
        hospitalization=pl.Struct({"admitSource": CC, "dischargeDisposition": CC}),
        diagnosis=pl.List(pl.Struct({"condition": REF, "use": CC, "rank": I64})),
        location=pl.List(pl.Struct({"location": REF, "status": S, "period": PERIOD})),
        **{"class": CODING},
    ),
    "Condition": _resource(
        clinicalStatus=CC,
        verificationStatus=CC,
        category=CCS,
        code=CC,
        bodySite=CCS,
        severity=CC,
        subject=REF,
        encounter=REF,
        onsetDateTime=S,
        onsetPeriod=PERIOD,
        onsetString=S,
        onsetAge=QUANTITY,
        onsetRange=RANGE,
        abatementDateTime=S,
        abatementPeriod=PERIOD,
        abatementString=S,
        abatementBoolean=B,
        abatementAge=QUANTITY,
        abatementRange=RANGE,
        recordedDate=S,
    ),
    "Procedure": _resource(
        status=S,
        statusReason=CC,
        code=CC,
        category=CC,
        bodySite=CCS,
        reasonCode=CCS,
        reasonReference=REFS,
        subject=REF,
        encounter=REF,
        performedDateTime=S,
        performedPeriod=PERIOD,
        performedString=S,
        performedAge=QUANTITY,
        performedRange=RANGE,
    ),
    "Observation": _resource(
        status=S,
        category=CCS,
        code=CC,
        subject=REF,
        encounter=REF,
        effectiveDateTime=S,
        effectivePeriod=PERIOD,
        effectiveInstant=S,
        effectiveTiming=TIMING,
        issued=S,
        interpretation=CCS,
        hasMember=REFS,
        derivedFrom=REFS,
        component=pl.List(pl.Struct({"code": CC, **_VALUE})),
        **_VALUE,
    ),
    "MedicationRequest": _resource(
        status=S,
        intent=S,
        doNotPerform=B,
        statusReason=CC,
        category=CCS,
        medicationCodeableConcept=CC,
        medicationReference=REF,
        contained=CONTAINED,
        subject=REF,
        encounter=REF,
        reasonCode=CCS,
        authoredOn=S,
        dosageInstruction=pl.List(DOSAGE),
        dispenseRequest=pl.Struct(
            {
                "validityPeriod": PERIOD,
                "numberOfRepeatsAllowed": I64,
                "quantity": QUANTITY,
                "expectedSupplyDuration": QUANTITY,
            }
        ),
    ),
    "MedicationDispense": _resource(
        status=S,
        statusReason=CC,
        medicationCodeableConcept=CC,
        medicationReference=REF,
        contained=CONTAINED,
        subject=REF,
        context=REF,
        whenPrepared=S,
        whenHandedOver=S,
        quantity=QUANTITY,
        daysSupply=QUANTITY,
        dosageInstruction=pl.List(DOSAGE),
        authorizingPrescription=REFS,
    ),
    "MedicationAdministration": _resource(
        status=S,
        statusReason=CCS,
        medicationCodeableConcept=CC,
        medicationReference=REF,
        contained=CONTAINED,
        subject=REF,
        context=REF,
        effectiveDateTime=S,
        effectivePeriod=PERIOD,
        request=REF,
        dosage=pl.Struct({"dose": QUANTITY, "route": CC}),
    ),
    "Immunization": _resource(
        status=S,
        statusReason=CC,
        vaccineCode=CC,
        patient=REF,
        encounter=REF,
        occurrenceDateTime=S,
        occurrenceString=S,
        recorded=S,
        primarySource=B,
    ),
    "AllergyIntolerance": _resource(
        clinicalStatus=CC,
        verificationStatus=CC,
        type=S,
        category=pl.List(S),
        criticality=S,
        code=CC,
        patient=REF,
        encounter=REF,
        onsetDateTime=S,
        onsetPeriod=PERIOD,
        onsetString=S,
        onsetAge=QUANTITY,
        onsetRange=RANGE,
        recordedDate=S,
        reaction=pl.List(pl.Struct({"manifestation": CCS})),
    ),
    "ServiceRequest": _resource(
        status=S,
        intent=S,
        doNotPerform=B,
        code=CC,
        category=CCS,
        reasonCode=CCS,
        subject=REF,
        encounter=REF,
        authoredOn=S,
        occurrenceDateTime=S,
        occurrencePeriod=PERIOD,
        occurrenceTiming=TIMING,
    ),
    "DeviceRequest": _resource(
        status=S,
        intent=S,
        codeCodeableConcept=CC,
        codeReference=REF,
        reasonCode=CCS,
        subject=REF,
        encounter=REF,
        authoredOn=S,
        occurrenceDateTime=S,
        occurrencePeriod=PERIOD,
        occurrenceTiming=TIMING,
    ),
    "DiagnosticReport": _resource(
        status=S,
        category=CCS,
        code=CC,
        subject=REF,
        encounter=REF,
        effectiveDateTime=S,
        effectivePeriod=PERIOD,
        issued=S,
        result=REFS,
        conclusionCode=CCS,
    ),
    "Medication": _resource(code=CC),
    # Not patient-scoped: read only to give ``encounter.locations[].type`` (same Bundle / same Bulk export).
    "Location": _resource(type=CCS),
}

# Resource type -> canonical table. Medication only resolves medicationReference, Location only
# encounter.location.
TABLE_OF: dict[str, str] = {
    "Patient": "patient",
    "Coverage": "coverage",
    "Encounter": "encounter",
    "Condition": "condition",
    "Procedure": "procedure",
    "Observation": "observation",
    "MedicationRequest": "medication_request",
    "MedicationDispense": "medication_dispense",
    "MedicationAdministration": "medication_administration",
    "Immunization": "immunization",
    "AllergyIntolerance": "allergy_intolerance",
    "ServiceRequest": "service_request",
    "DeviceRequest": "device_request",
    "DiagnosticReport": "diagnostic_report",
}
# Resource types that are read but produce no table (targets of references only, or expected outputs).
IGNORED: frozenset[str] = frozenset(
    {
        "MeasureReport",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "Location",
        "Medication",
        "Provenance",
        "Device",
        "Group",
        "Claim",
        "ExplanationOfBenefit",
        "CareTeam",
        "CarePlan",
        "Goal",
        "ImagingStudy",
        "DocumentReference",
        "SupplyDelivery",
        "Library",
        "Measure",
        "ValueSet",
        "RelatedPerson",
    }
)


def empty_raw(resource_type: str) -> pl.DataFrame:
    """A zero-row raw frame of ``resource_type``."""
    return pl.DataFrame(schema=RAW[resource_type])


def conform_raw(resource_type: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Add the raw columns a builder (Synthea) did not set, as nulls, in the pinned order."""
    schema = RAW[resource_type]
    if list(frame.schema.items()) == list(schema.items()):  # read with the pinned schema: nothing to do
        return frame
    missing = [pl.lit(None, dtype=t).alias(n) for n, t in schema.items() if n not in frame.columns]
    return frame.with_columns(missing).select([pl.col(n).cast(t) for n, t in schema.items()])


def read_ndjson(source: str | Path | bytes, resource_type: str) -> pl.DataFrame:
    """ndjson of one resource type -> raw frame with the pinned schema (polars error if a line does not fit).

    Fast path: nested elements are read as JSON text and decoded with ``str.json_decode``, because polars'
    ndjson reader is ~40x slower on deep structs with fields to skip (20k Patient extensions: 2.5 s vs
    0.05 s). polars re-serialises such text without re-escaping backslashes and control characters, so the
    fast path is used only when the input holds no escaped backslash (the one case that could decode to a
    different string silently); control characters make ``json_decode`` fail, and then the exact (slow)
    read is used.
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    schema = RAW[resource_type]
    if b"\\\\" not in data:
        nested = [n for n, t in schema.items() if isinstance(t, pl.Struct | pl.List)]
        text_schema = pl.Schema({n: pl.String if n in nested else t for n, t in schema.items()})
        try:
            frame = pl.read_ndjson(io.BytesIO(data), schema=text_schema)
            return frame.with_columns(pl.col(n).str.json_decode(schema[n]) for n in nested)
        except (pl.exceptions.PolarsError, ValueError):
            pass
    return pl.read_ndjson(io.BytesIO(data), schema=schema)
