"""The one flattener: frames of raw FHIR resources (pinned schema, :mod:`datasets.fhir.raw`) -> the tables.

Bundles, Bulk ndjson and Synthea CSV all arrive here as one raw frame per resource type; everything is
polars expressions, so a Bulk file is flattened in a few vectorized passes and a one-patient Bundle goes
through exactly the same code. Records that cannot be mapped are returned in ``rejected`` with a reason
(ids only, no PHI); ``entered-in-error`` records are the only ones dropped on purpose, and they are counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl

from datasets.fhir import exprs as E
from datasets.fhir.exprs import col
from datasets.fhir.raw import RAW, TABLE_OF, conform_raw
from datasets.fhir.systems import canonical_system_expr
from datasets.fhir.timing import parse_stages, parse_time
from datasets.hashing import bucket_of
from datasets.schema import STATUS_CODES, TABLES, UTC_INSTANT, conform, empty_frame

REJECTED_SCHEMA = pl.Schema(
    {
        "source": pl.String,
        "resource_type": pl.String,
        "id": pl.String,
        "patient_id": pl.String,
        "reason": pl.String,
    }
)

# Status lists for tables the schema does not list (FHIR R4 value sets); unknown values are quarantined.
EXTRA_CODES: dict[str, dict[str, frozenset[str]]] = {
    "coverage": {"status": frozenset({"active", "cancelled", "draft", "entered-in-error"})},
    "condition": {
        "clinical_status": frozenset(
            {"active", "recurrence", "relapse", "inactive", "remission", "resolved"}
        ),
        "verification_status": frozenset(
            {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
        ),
    },
    "medication_dispense": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "cancelled",
                "on-hold",
                "completed",
                "entered-in-error",
                "stopped",
                "declined",
                "unknown",
            }
        )
    },
    "medication_administration": {
        "status": frozenset(
            {"in-progress", "not-done", "on-hold", "completed", "entered-in-error", "stopped", "unknown"}
        )
    },
    "allergy_intolerance": {
        "clinical_status": frozenset({"active", "inactive", "resolved"}),
        "verification_status": frozenset({"unconfirmed", "confirmed", "refuted", "entered-in-error"}),
    },
    "diagnostic_report": {
        "status": frozenset(
            {
                "registered",
                "partial",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "appended",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
}
_REQUEST = {
    "status": frozenset(
        {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
    ),
    "intent": frozenset(
        {
            "proposal",
            "plan",
            "directive",
            "order",
            "original-order",
            "reflex-order",
            "filler-order",
            "instance-order",
            "option",
        }
    ),
}
EXTRA_CODES["service_request"] = EXTRA_CODES["device_request"] = _REQUEST
CODE_LISTS: dict[str, dict[str, frozenset[str]]] = {
    t: {**EXTRA_CODES.get(t, {}), **STATUS_CODES.get(t, {})} for t in TABLES
}
# Tables whose FHIR resource requires ``status`` (1..1): a missing one is quarantined.
_STATUS_REQUIRED = frozenset(t for t, lists in CODE_LISTS.items() if "status" in lists)

NOT_DONE = ("qicore-notDone",)
NOT_DONE_REASON = ("qicore-notDoneReason",)
NOT_DONE_VS = ("qicore-notDoneValueSet",)
DNP_REASON = ("doNotPerformReason", "qicore-reasonRefused")
DNP = ("qicore-doNotPerform", "qicore-doNotPeform")


_TIME_STRUCT = pl.Struct(
    {"low": UTC_INSTANT, "high": UTC_INSTANT, "prec": pl.Int8, "tz": pl.Int16, "bad": pl.Boolean}
)


@dataclass
class FlattenResult:
    """Canonical tables, the quarantined records with their reason, and the deliberate drops per table."""

    tables: dict[str, pl.DataFrame]
    rejected: pl.DataFrame
    dropped_counts: dict[str, int] = field(default_factory=dict)


class _Times:
    """Registers the time strings a mapping parses; each becomes one struct column and one validity check."""

    def __init__(self) -> None:
        self.raw: dict[str, pl.Expr] = {}
        self.absent: list[str] = []

    def __call__(self, key: str, raw: pl.Expr) -> _Parsed:
        self.raw[key] = raw
        return _Parsed(f"__t_{key}")

    def stages(self) -> list[list[pl.Expr]]:
        stages = parse_stages({f"__t_{key}": expr for key, expr in self.raw.items()})
        stages[0] += [pl.lit(None, dtype=_TIME_STRUCT).alias(f"__t_{key}") for key in self.absent]
        return stages

    def checks(self) -> list[tuple[pl.Expr, str]]:
        return [(col(f"__t_{k}", "bad"), f"unparseable date in {k}") for k in self.raw]


@dataclass(frozen=True)
class _Parsed:
    name: str

    @property
    def low(self) -> pl.Expr:
        return col(self.name, "low")

    @property
    def high(self) -> pl.Expr:
        return col(self.name, "high")

    @property
    def prec(self) -> pl.Expr:
        return col(self.name, "prec")

    @property
    def tz(self) -> pl.Expr:
        return col(self.name, "tz")


@dataclass
class _Spec:
    """What one resource type maps to: canonical column expressions plus the reasons to refuse a row."""

    columns: dict[str, pl.Expr]
    times: _Times
    checks: list[tuple[pl.Expr, str]] = field(default_factory=list)


def _choice_time(
    t: _Times, prefix: str, kinds: tuple[str, ...], **fallback: tuple[pl.Expr, _Parsed]
) -> dict[str, pl.Expr]:
    """T columns (start, end, precisions, offset) and ``<x>_type`` from a ``prefix[x]`` choice (P4)."""
    parts: list[tuple[pl.Expr, pl.Expr, pl.Expr, pl.Expr, pl.Expr]] = []  # start, end, sprec, eprec, tz
    kind = pl.lit(None, dtype=pl.String)
    for k in kinds:
        column = f"{prefix}{k}"
        if k in ("DateTime", "Instant"):
            p = t(column, pl.col(column))
            parts.append((p.low, p.high, p.prec, p.prec, p.tz))
        elif k == "Period":
            s, e = t(f"{column}.start", col(column, "start")), t(f"{column}.end", col(column, "end"))
            # A Period fixes both ends: a missing end stays null (P2) instead of falling through.
            present = pl.col(column).is_not_null()
            parts.append(
                (
                    pl.when(present).then(s.low),
                    pl.when(present).then(e.high),
                    s.prec,
                    e.prec,
                    pl.coalesce(s.tz, e.tz),
                )
            )
        label = k[0].lower() + k[1:] if k in ("DateTime", "Instant") else k
        kind = pl.when(pl.col(column).is_not_null()).then(pl.lit(label)).otherwise(kind)
    for label, (raw, p) in fallback.items():
        parts.append((p.low, p.high, p.prec, p.prec, p.tz))
        kind = pl.when(kind.is_null() & raw.is_not_null()).then(pl.lit(label)).otherwise(kind)
    names = ("start", "end", "start_prec", "end_prec", "tz_offset_min")
    out = {name: pl.coalesce([part[i] for part in parts]) for i, name in enumerate(names)}
    return {**out, f"{prefix}_type": kind}


def _period_time(t: _Times, column: str) -> dict[str, pl.Expr]:
    s, e = t(f"{column}.start", col(column, "start")), t(f"{column}.end", col(column, "end"))
    return {
        "start": s.low,
        "end": e.high,
        "start_prec": s.prec,
        "end_prec": e.prec,
        "tz_offset_min": pl.coalesce(s.tz, e.tz),
    }


def _point_time(p: _Parsed) -> dict[str, pl.Expr]:
    return {"start": p.low, "end": p.high, "start_prec": p.prec, "end_prec": p.prec, "tz_offset_min": p.tz}


def _negation() -> dict[str, pl.Expr]:
    ext = pl.col("extension")
    return {
        "not_done_valueset": pl.coalesce(
            E.extension(ext, NOT_DONE_VS, "valueCanonical"), E.extension(ext, NOT_DONE_VS, "valueUri")
        )
    }


def _status(name: str = "status") -> pl.Expr:
    return pl.col(name).str.strip_chars().str.to_lowercase()


def _medication(a: Mapping[str, str]) -> dict[str, pl.Expr]:
    return {
        "medication": pl.coalesce(
            E.codes(pl.col("medicationCodeableConcept")), E.codes(pl.col("__med_code"))
        ),
        "medication_id": pl.col("__med_id"),
    }


def _dosage_timing(dosage: pl.Expr) -> dict[str, pl.Expr]:
    repeat = dosage.struct.field("timing").struct.field("repeat")
    dose = dosage.struct.field("doseAndRate").list.first().struct.field("doseQuantity")
    return {
        "dose_value": dose.struct.field("value"),
        "dose_unit": E.unit(dose),
        "timing_frequency": repeat.struct.field("frequency").cast(pl.Int32),
        "timing_frequency_max": repeat.struct.field("frequencyMax").cast(pl.Int32),
        "timing_period": repeat.struct.field("period"),
        "timing_period_unit": repeat.struct.field("periodUnit"),
        "timing_times_of_day": E.nonempty(repeat.struct.field("timeOfDay")),
    }


def _patient(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    ext = pl.col("extension")
    birth = t("birthDate", pl.col("birthDate"))
    deceased_at = t("deceasedDateTime", pl.col("deceasedDateTime"))
    race, eth = E.sub_extension(ext, "us-core-race"), E.sub_extension(ext, "us-core-ethnicity")
    addresses = pl.col("address")
    home = addresses.list.filter(pl.element().struct.field("use") == "home").list.first()
    address = pl.coalesce(home, addresses.list.first())
    sex = E.extension(ext, ("us-core-sex",), "valueCoding")
    return _Spec(
        {
            "patient_id": pl.col("id"),
            "birth_date": birth.low.dt.date(),
            "birth_date_prec": birth.prec,
            "gender": _status("gender"),
            "sex": pl.when(sex.is_not_null()).then(E.codes(pl.struct(coding=pl.concat_list(sex)))),
            "birth_sex": E.extension(ext, ("us-core-birthsex",), "valueCode"),
            "deceased": pl.when(pl.col("deceasedDateTime").is_not_null())
            .then(True)
            .otherwise(pl.col("deceasedBoolean")),
            "deceased_datetime": deceased_at.low,
            "race_omb": E.sub_values(race, "ombCategory", "valueCoding", "code"),
            "race_detailed": E.sub_values(race, "detailed", "valueCoding", "code"),
            "race_text": E.sub_values(race, "text", "valueString").list.first(),
            "ethnicity_omb": E.sub_values(eth, "ombCategory", "valueCoding", "code"),
            "ethnicity_detailed": E.sub_values(eth, "detailed", "valueCoding", "code"),
            "ethnicity_text": E.sub_values(eth, "text", "valueString").list.first(),
            "address_state": address.struct.field("state"),
            "address_postal_code": address.struct.field("postalCode"),
            "address_country": address.struct.field("country"),
            "managing_organization_id": E.ref_id(col("managingOrganization", "reference"), a),
            "general_practitioner_ids": E.ref_ids(pl.col("generalPractitioner"), a),
        },
        t,
        [
            (
                ~pl.col("gender").is_in(["male", "female", "other", "unknown"])
                & pl.col("gender").is_not_null(),
                "unknown gender",
            )
        ],
    )


def _coverage(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    return _Spec(
        {
            "patient_id": E.ref_id(col("beneficiary", "reference"), a),
            **_period_time(t, "period"),
            "status": _status(),
            "type": E.codes(pl.col("type")),
            "payor_ids": E.ref_ids(pl.col("payor"), a),
            "payor_names": E.nonempty(
                pl.col("payor").list.eval(pl.element().struct.field("display")).list.drop_nulls()
            ),
            "subscriber_id": pl.col("subscriberId"),
            "plan_class": E.codes_many(pl.col("class").list.eval(pl.element().struct.field("type"))),
        },
        t,
    )


def _encounter(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    element = pl.element()
    loc_period = element.struct.field("period")
    locations = pl.col("location").list.eval(
        pl.struct(
            location_id=E.ref_id(element.struct.field("location").struct.field("reference"), a),
            status=element.struct.field("status"),
            start=parse_time(loc_period.struct.field("start")).struct.field("low"),
            end=parse_time(loc_period.struct.field("end")).struct.field("high"),
        )
    )
    diagnoses = pl.col("diagnosis").list.eval(
        pl.struct(
            condition_id=E.ref_id(element.struct.field("condition").struct.field("reference"), a),
            use=element.struct.field("use").struct.field("coding").list.first().struct.field("code"),
            rank=element.struct.field("rank").cast(pl.Int32),
            present_on_admission=pl.lit(None, dtype=pl.String),
        )
    )
    hosp = pl.col("hospitalization")
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **_period_time(t, "period"),
            "status": _status(),
            "class_system": canonical_system_expr(col("class", "system")),
            "class_code": col("class", "code"),
            "type": E.codes_many(pl.col("type")),
            "service_type": E.codes(pl.col("serviceType")),
            "priority": E.codes(pl.col("priority")),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "reason_reference_ids": E.ref_ids(pl.col("reasonReference"), a),
            "admit_source": E.codes(hosp.struct.field("admitSource")),
            "discharge_disposition": E.codes(hosp.struct.field("dischargeDisposition")),
            "diagnoses": E.nonempty(diagnoses),
            "locations": E.nonempty(locations),
            "participant_ids": E.nonempty(
                pl.col("participant")
                .list.eval(E.ref_id(element.struct.field("individual").struct.field("reference"), a))
                .list.drop_nulls()
            ),
            "service_provider_id": E.ref_id(col("serviceProvider", "reference"), a),
            "part_of_id": E.ref_id(col("partOf", "reference"), a),
        },
        t,
    )


def _condition(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    onset = _choice_time(t, "onset", ("DateTime", "Period", "String", "Age", "Range"))
    abatement = _choice_time(t, "abatement", ("DateTime", "Period", "String", "Age", "Range", "Boolean"))
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            # start = onset low boundary, end = abatement high boundary; a null abatement stays null (P2).
            "start": onset["start"],
            "end": abatement["end"],
            "start_prec": onset["start_prec"],
            "end_prec": abatement["end_prec"],
            "tz_offset_min": pl.coalesce(onset["tz_offset_min"], abatement["tz_offset_min"]),
            "clinical_status": E.first_code(pl.col("clinicalStatus")),
            "verification_status": E.first_code(pl.col("verificationStatus")),
            "category": E.codes_many(pl.col("category")),
            "code": E.codes(pl.col("code")),
            "body_site": E.codes_many(pl.col("bodySite")),
            "severity": E.codes(pl.col("severity")),
            "onset_type": onset["onset_type"],
            "abatement_type": abatement["abatement_type"],
            "recorded_date": t("recordedDate", pl.col("recordedDate")).low,
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


def _procedure(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    ext = pl.col("extension")
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **_choice_time(t, "performed", ("DateTime", "Period", "String", "Age", "Range")),
            "status": _status(),
            "status_reason": pl.coalesce(
                E.codes(pl.col("statusReason")),
                E.codes(E.extension(ext, NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            "code": E.codes(pl.col("code")),
            "category": E.codes(pl.col("category")),
            "body_site": E.codes_many(pl.col("bodySite")),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "reason_reference_ids": E.ref_ids(pl.col("reasonReference"), a),
            **_negation(),
            "recorded_date": t("recorded", E.extension(ext, ("qicore-recorded",), "valueDateTime")).low,
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


def _observation(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    ext = pl.col("extension")
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **_choice_time(t, "effective", ("DateTime", "Period", "Instant", "Timing")),
            "status": _status(),
            "status_reason": E.codes(E.extension(ext, NOT_DONE_REASON, "valueCodeableConcept")),
            "category": E.codes_many(pl.col("category")),
            "code": E.codes(pl.col("code")),
            "profiles": E.nonempty(col("meta", "profile")),
            "issued": t("issued", pl.col("issued")).low,
            **E.value_columns(),
            "value_datetime": t("valueDateTime", pl.col("valueDateTime")).low,
            "interpretation": E.codes_many(pl.col("interpretation")),
            "has_member_ids": E.ref_ids(pl.col("hasMember"), a),
            "derived_from_ids": E.ref_ids(pl.col("derivedFrom"), a),
            **_negation(),
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


def _component(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    return _Spec(
        {
            "code": E.codes(pl.col("code")),
            **E.value_columns(),
            "value_datetime": t("valueDateTime", pl.col("valueDateTime")).low,
        },
        t,
    )


def _request_negation(a: Mapping[str, str]) -> dict[str, pl.Expr]:
    ext, mod = pl.col("extension"), pl.col("modifierExtension")
    return {
        "reason_refused": E.codes(E.extension(ext, DNP_REASON, "valueCodeableConcept")),
        "do_not_perform": E.extension(mod, DNP, "valueBoolean"),
    }


def _medication_request(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    ext = pl.col("extension")
    authored = t("authoredOn", pl.col("authoredOn"))
    dosage = pl.col("dosageInstruction").list.first()
    bounds = dosage.struct.field("timing").struct.field("repeat").struct.field("boundsPeriod")
    disp = pl.col("dispenseRequest")
    validity = disp.struct.field("validityPeriod")
    neg = _request_negation(a)
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **_point_time(authored),
            "status": _status(),
            "intent": _status("intent"),
            "do_not_perform": pl.coalesce(pl.col("doNotPerform"), neg["do_not_perform"]),
            "status_reason": pl.coalesce(
                E.codes(pl.col("statusReason")),
                E.codes(E.extension(ext, NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            "reason_refused": neg["reason_refused"],
            "category": E.codes_many(pl.col("category")),
            **_medication(a),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "authored_on": authored.low,
            **_dosage_timing(dosage),
            "bounds_start": t("boundsPeriod.start", bounds.struct.field("start")).low,
            "bounds_end": t("boundsPeriod.end", bounds.struct.field("end")).high,
            "expected_supply_days": disp.struct.field("expectedSupplyDuration").struct.field("value"),
            "dispense_quantity": disp.struct.field("quantity").struct.field("value"),
            "dispense_quantity_unit": E.unit(disp.struct.field("quantity")),
            "refills": disp.struct.field("numberOfRepeatsAllowed").cast(pl.Int32),
            "validity_start": t("validityPeriod.start", validity.struct.field("start")).low,
            "validity_end": t("validityPeriod.end", validity.struct.field("end")).high,
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


def _medication_dispense(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    handed, prepared = (
        t("whenHandedOver", pl.col("whenHandedOver")),
        t("whenPrepared", pl.col("whenPrepared")),
    )
    dosage = pl.col("dosageInstruction").list.first()
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            "start": pl.coalesce(handed.low, prepared.low),
            "end": pl.coalesce(handed.high, prepared.high),
            "start_prec": pl.coalesce(handed.prec, prepared.prec),
            "end_prec": pl.coalesce(handed.prec, prepared.prec),
            "tz_offset_min": pl.coalesce(handed.tz, prepared.tz),
            "status": _status(),
            "status_reason": E.codes(pl.col("statusReason")),
            **_medication(a),
            "when_prepared": prepared.low,
            "when_handed_over": handed.low,
            "quantity": col("quantity", "value"),
            "quantity_unit": E.unit(pl.col("quantity")),
            "days_supply": col("daysSupply", "value"),
            **_dosage_timing(dosage),
            "authorizing_prescription_ids": E.ref_ids(pl.col("authorizingPrescription"), a),
            "encounter_id": E.ref_id(col("context", "reference"), a),
        },
        t,
    )


def _medication_administration(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    ext = pl.col("extension")
    dose = col("dosage", "dose")
    time = _choice_time(t, "effective", ("DateTime", "Period"))
    time.pop("effective_type")
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **time,
            "status": _status(),
            "status_reason": pl.coalesce(
                E.codes_many(pl.col("statusReason")),
                E.codes(E.extension(ext, NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            **_medication(a),
            "dose_value": dose.struct.field("value"),
            "dose_unit": E.unit(dose),
            "route": E.codes(col("dosage", "route")),
            **_negation(),
            "request_id": E.ref_id(col("request", "reference"), a),
            "encounter_id": E.ref_id(col("context", "reference"), a),
        },
        t,
    )


def _immunization(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    ext = pl.col("extension")
    time = _choice_time(t, "occurrence", ("DateTime", "String"))
    time.pop("occurrence_type")
    return _Spec(
        {
            "patient_id": E.ref_id(col("patient", "reference"), a),
            **time,
            "status": _status(),
            "status_reason": pl.coalesce(
                E.codes(pl.col("statusReason")),
                E.codes(E.extension(ext, NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            "vaccine_code": E.codes(pl.col("vaccineCode")),
            "recorded": t("recorded", pl.col("recorded")).low,
            "primary_source": pl.col("primarySource"),
            **_negation(),
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


def _allergy(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    time = _choice_time(t, "onset", ("DateTime", "Period", "String", "Age", "Range"))
    return _Spec(
        {
            "patient_id": E.ref_id(col("patient", "reference"), a),
            **time,
            "clinical_status": E.first_code(pl.col("clinicalStatus")),
            "verification_status": E.first_code(pl.col("verificationStatus")),
            "type": pl.col("type"),
            "category": E.nonempty(pl.col("category")),
            "criticality": pl.col("criticality"),
            "code": E.codes(pl.col("code")),
            "recorded_date": t("recordedDate", pl.col("recordedDate")).low,
            "reaction_manifestation": E.codes_many(
                pl.col("reaction").list.eval(pl.element().struct.field("manifestation").explode())
            ),
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


def _request(code: str) -> Callable[[Mapping[str, str]], _Spec]:
    def spec(a: Mapping[str, str]) -> _Spec:
        t = _Times()
        authored = t("authoredOn", pl.col("authoredOn"))
        # T is occurrence[x]; without one, authoredOn supplies it and occurrence_type says so (P4).
        time = _choice_time(
            t, "occurrence", ("DateTime", "Period", "Timing"), authoredOn=(pl.col("authoredOn"), authored)
        )
        neg = _request_negation(a)
        dnp = (
            pl.coalesce(pl.col("doNotPerform"), neg["do_not_perform"])
            if code == "code"
            else neg["do_not_perform"]
        )
        columns = {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **time,
            "status": _status(),
            "intent": _status("intent"),
            "do_not_perform": dnp,
            "reason_refused": neg["reason_refused"],
            "code": E.codes(pl.col(code)),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "authored_on": authored.low,
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        }
        if code == "code":
            columns["category"] = E.codes_many(pl.col("category"))
        return _Spec(columns, t)

    return spec


def _diagnostic_report(a: Mapping[str, str]) -> _Spec:
    t = _Times()
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), a),
            **_choice_time(t, "effective", ("DateTime", "Period")),
            "status": _status(),
            "category": E.codes_many(pl.col("category")),
            "code": E.codes(pl.col("code")),
            "issued": t("issued", pl.col("issued")).low,
            "result_ids": E.ref_ids(pl.col("result"), a),
            "conclusion_code": E.codes_many(pl.col("conclusionCode")),
            "encounter_id": E.ref_id(col("encounter", "reference"), a),
        },
        t,
    )


SPECS: dict[str, Callable[[Mapping[str, str]], _Spec]] = {
    "Patient": _patient,
    "Coverage": _coverage,
    "Encounter": _encounter,
    "Condition": _condition,
    "Procedure": _procedure,
    "Observation": _observation,
    "MedicationRequest": _medication_request,
    "MedicationDispense": _medication_dispense,
    "MedicationAdministration": _medication_administration,
    "Immunization": _immunization,
    "AllergyIntolerance": _allergy,
    "ServiceRequest": _request("code"),
    "DeviceRequest": _request("codeCodeableConcept"),
    "DiagnosticReport": _diagnostic_report,
}
_EMPTY = {table: empty_frame(table) for table in TABLES}  # frames are immutable: safe to share
_MEDICATION_USERS = ("MedicationRequest", "MedicationDispense", "MedicationAdministration")


def _resolve_medication(frame: pl.DataFrame, medications: pl.DataFrame, a: Mapping[str, str]) -> pl.DataFrame:
    """Add ``__med_code`` / ``__med_id`` from medicationReference: contained ``#id`` or a Medication (P4)."""
    ref = col("medicationReference", "reference")
    frame = frame.with_columns(
        pl.when(~ref.str.starts_with("#")).then(E.ref_id(ref, a)).alias("__med_id"),
        pl.lit(None, dtype=RAW["Medication"]["code"]).alias("__med_code"),
    )
    if frame["medicationReference"].null_count() == frame.height:
        return frame
    frame = frame.with_row_index("__mrow")
    contained = (
        frame.select("__mrow", "contained")
        .explode("contained")
        .unnest("contained")
        .filter(pl.col("resourceType") == "Medication")
        .select("__mrow", ("#" + pl.col("id")).alias("__mref"), pl.col("code").alias("__c_code"))
    )
    standalone = medications.select(pl.col("id").alias("__med_id"), pl.col("code").alias("__s_code")).unique(
        "__med_id", keep="last"
    )
    return (
        frame.with_columns(ref.alias("__mref"))
        .join(contained, on=["__mrow", "__mref"], how="left")
        .join(standalone, on="__med_id", how="left")
        .with_columns(pl.coalesce("__c_code", "__s_code").alias("__med_code"))
        .drop("__mrow", "__mref", "__c_code", "__s_code")
    )


def _reason(checks: list[tuple[pl.Expr, str]]) -> pl.Expr:
    parts = [pl.when(cond.fill_null(False)).then(pl.lit(msg)) for cond, msg in checks]
    if not parts:
        return pl.lit(None, dtype=pl.String)
    joined = pl.concat_str(parts, separator="; ", ignore_nulls=True)
    return pl.when(joined != "").then(joined)


def _table_checks(table: str) -> list[tuple[pl.Expr, str]]:
    checks: list[tuple[pl.Expr, str]] = []
    if table == "patient":
        return [(pl.col("patient_id").is_null(), "missing id")]
    checks += [(pl.col("id").is_null(), "missing id"), (pl.col("patient_id").is_null(), "missing subject")]
    for column, allowed in CODE_LISTS.get(table, {}).items():
        checks.append(
            (pl.col(column).is_not_null() & ~pl.col(column).is_in(sorted(allowed)), f"unknown {column}")
        )
    if table in _STATUS_REQUIRED:
        checks.append((pl.col("status").is_null(), "missing status"))
    return checks


def _dropped(table: str) -> pl.Expr:
    cond = pl.lit(False)
    for column in ("status", "verification_status"):
        if column in TABLES[table]:
            cond = cond | (pl.col(column) == "entered-in-error").fill_null(False)
    return cond


def _pruner(frame: pl.DataFrame, times: _Times) -> tuple[Callable[[pl.Expr], bool], dict[str, pl.Expr]]:
    """Which expressions can be skipped: those whose input columns are all null in this frame.

    Planning a polars expression costs far more than evaluating it on a one-patient Bundle, so expressions
    (and time parses) that read only absent elements are replaced by typed nulls. Raw checks must be false
    on null input for this to hold (they all test ``is_not_null() & ...``).
    """
    dead = {c for c in frame.columns if frame[c].null_count() == frame.height}

    def is_dead(expr: pl.Expr) -> bool:
        roots = expr.meta.root_names()
        return bool(roots) and all(r in dead for r in roots)

    live_times = {}
    for key, expr in times.raw.items():
        if is_dead(expr):
            dead.add(f"__t_{key}")
            times.absent.append(key)
        else:
            live_times[key] = expr
    return is_dead, live_times


def _map(
    rtype: str,
    frame: pl.DataFrame,
    source: str,
    a: Mapping[str, str],
    extra_checks: list[tuple[pl.Expr, str]] | None = None,
) -> pl.DataFrame:
    """Raw frame -> canonical columns plus ``__reason`` (null when fine), ``__drop`` and ``__row``."""
    table = TABLE_OF.get(rtype, "observation_component")
    spec = SPECS.get(rtype, _component)(a)
    meta = spec.times("meta.lastUpdated", col("meta", "lastUpdated")) if "meta" in frame.columns else None
    is_dead, live_times = _pruner(frame, spec.times)
    spec.times.raw = live_times
    raw_checks = [c for c in (*(extra_checks or []), *spec.checks, *spec.times.checks()) if not is_dead(c[0])]
    schema = TABLES[table]
    columns = {
        name: pl.lit(None, dtype=schema[name]) if is_dead(expr) else expr.cast(schema[name])
        for name, expr in spec.columns.items()
    }
    if table != "patient" and table != "observation_component":
        columns["id"] = pl.col("id")
    columns["meta_last_updated"] = (
        pl.lit(None, dtype=UTC_INSTANT) if meta is None or is_dead(meta.low) else meta.low
    )
    columns["source"] = (
        pl.coalesce(pl.col("_source"), pl.lit(source, dtype=pl.String))
        if "_source" in frame.columns and not is_dead(pl.col("_source"))
        else pl.lit(source, dtype=pl.String)
    )
    staged = frame.lazy()
    for stage in spec.times.stages():
        staged = staged.with_columns(stage) if stage else staged
    mapped = staged.select(
        **columns,
        __raw_reason=_reason(raw_checks),
        __row=pl.col("__row"),
        __rid=pl.col("id") if "id" in frame.columns else pl.lit(None, dtype=pl.String),
    )
    keys = [] if table == "observation_component" else _table_checks(table)
    reason = pl.concat_str([pl.col("__raw_reason"), _reason(keys)], separator="; ", ignore_nulls=True)
    return mapped.with_columns(
        __reason=pl.when(reason != "").then(reason),
        __drop=_dropped(table) if table != "observation_component" else pl.lit(False),
    ).collect()


def _bucket(frame: pl.DataFrame, n_buckets: int) -> pl.DataFrame:
    """The stable bucket of each row's patient (datasets.hashing, never ``pl.Expr.hash``: P14)."""
    ids = frame["patient_id"].unique()
    buckets = bucket_of(ids.to_list(), n_buckets)
    lookup = pl.DataFrame({"patient_id": ids, "bucket": pl.Series(buckets, dtype=pl.UInt16)})
    return frame.drop("bucket", strict=False).join(lookup, on="patient_id", how="left")


def _rejects(rtype: str, mapped: pl.DataFrame, source: str) -> pl.DataFrame:
    bad = mapped.filter(pl.col("__reason").is_not_null())
    pid = pl.col("patient_id") if "patient_id" in bad.columns else pl.lit(None, dtype=pl.String)
    return bad.select(
        source=pl.col("source") if "source" in bad.columns else pl.lit(source),
        resource_type=pl.lit(rtype),
        id=pl.col("__rid"),
        patient_id=pid,
        reason=pl.col("__reason"),
    )


def _components(raw: pl.DataFrame, kept: pl.DataFrame, source: str, a: Mapping[str, str]) -> pl.DataFrame:
    """One row per Observation.component of the kept observations, keyed (observation_id, component_ix)."""
    exploded = (
        raw.select("__row", "component")
        .filter(pl.col("component").list.len() > 0)
        .with_columns(component_ix=pl.int_ranges(pl.col("component").list.len(), dtype=pl.Int16))
        .explode("component", "component_ix")
        .unnest("component")
    )
    if exploded.height == 0:
        return _EMPTY["observation_component"]
    mapped = _map("Component", exploded, source, a)
    mapped = mapped.with_columns(exploded["component_ix"]).join(
        kept.select("__row", pl.col("id").alias("observation_id"), "patient_id", "bucket", "start"),
        on="__row",
        how="inner",
    )
    return conform("observation_component", mapped)


def flatten(
    raw: Mapping[str, pl.DataFrame],
    source: str,
    *,
    aliases: Mapping[str, str] | None = None,
    n_buckets: int = 1,
    rejected: pl.DataFrame | None = None,
) -> FlattenResult:
    """Canonical tables from raw frames keyed by resource type (Medication frames resolve references only).

    ``aliases`` maps reference strings (fullUrls, ``Type/<fullUrl id>``) to logical ids; ``rejected`` carries
    records an input reader already refused (shape errors), so one quarantine holds everything.
    """
    a = aliases or {}
    medications = raw.get("Medication", pl.DataFrame(schema=RAW["Medication"]))
    tables: dict[str, pl.DataFrame] = {}
    rejects = [rejected] if rejected is not None else []
    dropped: dict[str, int] = {}
    for rtype, frame in raw.items():
        if rtype not in SPECS or frame.height == 0:
            continue
        table = TABLE_OF[rtype]
        frame = conform_raw(rtype, frame).with_row_index("__row")
        checks: list[tuple[pl.Expr, str]] = []
        if rtype in _MEDICATION_USERS:
            frame = _resolve_medication(frame, medications, a)
            checks.append(
                (
                    pl.col("medicationReference").is_not_null()
                    & pl.col("__med_code").is_null()
                    & pl.col("medicationCodeableConcept").is_null(),
                    "unresolved medicationReference",
                )
            )
        mapped = _map(rtype, frame, source, a, checks)
        rejects.append(_rejects(rtype, mapped, source))
        ok = mapped.filter(pl.col("__reason").is_null())
        n_drop = int(ok["__drop"].sum())
        if n_drop:
            dropped[table] = dropped.get(table, 0) + n_drop
            ok = ok.filter(~pl.col("__drop"))
        ok = _bucket(ok, n_buckets)
        if rtype == "Observation":
            tables["observation_component"] = _components(frame, ok, source, a)
        tables[table] = conform(table, ok)
    for table in TABLES:
        tables.setdefault(table, _EMPTY[table])
    rejected_all = (
        pl.concat([r.cast(REJECTED_SCHEMA) for r in rejects])
        if rejects
        else pl.DataFrame(schema=REJECTED_SCHEMA)
    )
    return FlattenResult(tables, rejected_all, dropped)


def merge_results(results: list[FlattenResult]) -> FlattenResult:
    """Concatenate the results of several passes (chunks of one input)."""
    if len(results) == 1:
        return results[0]
    tables = {t: pl.concat([r.tables[t] for r in results]) for t in TABLES}
    dropped: dict[str, int] = {}
    for r in results:
        for k, v in r.dropped_counts.items():
            dropped[k] = dropped.get(k, 0) + v
    rejected = pl.concat([r.rejected for r in results]) if results else pl.DataFrame(schema=REJECTED_SCHEMA)
    return FlattenResult(tables, rejected, dropped)
