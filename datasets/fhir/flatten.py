"""The one flattener: frames of raw FHIR resources (pinned schema, :mod:`datasets.fhir.raw`) -> the tables.

Bundles, Bulk ndjson and Synthea CSV all arrive here as one raw frame per resource type; everything is
polars expressions, so a Bulk file is flattened in a few vectorized passes and a one-patient Bundle goes
through exactly the same code. Records that cannot be mapped are returned in ``rejected`` with a reason
(ids only, no PHI); ``entered-in-error`` records are the only ones dropped on purpose, and they are counted.

On a one-patient Bundle, planning polars expressions costs far more than evaluating them, so a call makes
few passes whatever the number of resource types: one ``collect_all`` for the raw time strings of every type,
one parse of all of them, one ``collect_all`` for the mappings of every type (and of the parts mapped as rows
of their own: observation components, encounter stays). Each type's mapping is built for the shape of its
input (absent elements and extensions become typed nulls, see :class:`_Ctx`) and cached per shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import polars as pl
from polars._typing import PolarsDataType

from datasets.fhir import exprs as E
from datasets.fhir.exprs import col
from datasets.fhir.raw import EXT, RAW, TABLE_OF, conform_raw
from datasets.fhir.systems import canonical_system_expr, is_absolute_system
from datasets.fhir.timing import parse_stages
from datasets.hashing import bucket_of
from datasets.schema import CODES, STATUS_CODES, TABLES, UTC_INSTANT, conform, empty_frame

log = logging.getLogger(__name__)

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
RECORDED = ("qicore-recorded",)
ENCOUNTER_PROCEDURE = ("encounter-procedure",)  # qicore-encounter-procedure
# Every extension suffix the mappings read: an extension none of whose urls is present in a frame is not
# planned at all (a typed null column stands for it), see _Ctx.ext.
EXT_SUFFIXES = frozenset(
    (
        *NOT_DONE,
        *NOT_DONE_REASON,
        *NOT_DONE_VS,
        *DNP_REASON,
        *DNP,
        *RECORDED,
        *ENCOUNTER_PROCEDURE,
        "us-core-race",
        "us-core-ethnicity",
        "us-core-sex",
        "us-core-birthsex",
    )
)


_TIME_STRUCT = pl.Struct(
    {"low": UTC_INSTANT, "high": UTC_INSTANT, "prec": pl.Int8, "tz": pl.Int16, "bad": pl.Boolean}
)


UNKNOWN_SYSTEMS_SCHEMA = pl.Schema({"table": pl.String, "system": pl.String, "codings": pl.Int64})


@dataclass
class FlattenResult:
    """Canonical tables, the quarantined records with their reason, the deliberate drops per table, and the
    codings kept whose system cannot match any value set (counts per table and system string; null system:
    none written)."""

    tables: dict[str, pl.DataFrame]
    rejected: pl.DataFrame
    dropped_counts: dict[str, int] = field(default_factory=dict)
    unknown_systems: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=UNKNOWN_SYSTEMS_SCHEMA))


class _Times:
    """Registers the time strings a mapping parses; each becomes one struct column and one validity check.
    A value whose raw string reads only absent elements is dead at once (see :class:`_Ctx`)."""

    def __init__(self, c: _Ctx) -> None:
        self.c = c
        self.raw: dict[str, pl.Expr] = {}

    def __call__(self, key: str, raw: pl.Expr) -> _Parsed:
        self.raw[key] = raw
        if self.c.is_dead(raw):
            self.c.dead.add(f"__t_{key}")
        return _Parsed(f"__t_{key}")


_ABSENT = "__absent_"  # prefix of the typed null columns that stand for extensions absent from a frame
_ABSENT_TYPES: dict[str, PolarsDataType] = {
    **{f"{_ABSENT}{f.name}": f.dtype for f in cast(pl.Struct, EXT.inner).fields},
    f"{_ABSENT}list": EXT,
}


@dataclass
class _Ctx:
    """What a mapping is built for: the reference aliases, the extension suffixes that occur in the frame
    (``None``: unknown, every extension is planned) and the columns that hold nothing there (``dead``).

    Planning a polars expression costs far more than evaluating it on a one-patient Bundle, so a mapping
    is built per shape of input: what reads only absent elements becomes a typed null, ``coalesce`` drops
    its dead arguments, and sub-expressions used several times are computed once in a ``with_columns``
    stage before the final select (:meth:`stage`)."""

    a: Mapping[str, str]
    present: frozenset[str] | None = None
    dead: set[str] = field(default_factory=set)
    stages: list[dict[str, pl.Expr]] = field(default_factory=list)
    _levels: dict[str, int] = field(default_factory=dict)

    def is_dead(self, expr: pl.Expr) -> bool:
        """Whether ``expr`` reads only dead columns (it is then null on every row: checks and mappings are
        written so that null input gives null / false)."""
        roots = [r for r in expr.meta.root_names() if r]  # "" is pl.element() inside list.eval
        return bool(roots) and all(r in self.dead for r in roots)

    def coalesce(self, *exprs: pl.Expr) -> pl.Expr:
        """``pl.coalesce`` of the live arguments (the first argument when all are dead: it is pruned)."""
        live = [e for e in exprs if not self.is_dead(e)]
        if len(live) <= 1:
            return live[0] if live else exprs[0]
        return pl.coalesce(live)

    def stage(self, name: str, expr: pl.Expr) -> pl.Expr:
        """``expr`` computed once, as column ``name``, in a stage before the select (dead: left as is)."""
        if self.is_dead(expr):
            return expr
        level = max((self._levels[r] + 1 for r in expr.meta.root_names() if r in self._levels), default=0)
        while len(self.stages) <= level:
            self.stages.append({})
        self.stages[level][name] = expr
        self._levels[name] = level
        return pl.col(name)

    def _absent(self, suffixes: tuple[str, ...]) -> bool:
        return self.present is not None and all(s in EXT_SUFFIXES and s not in self.present for s in suffixes)

    def ext(self, column: str, suffixes: tuple[str, ...], value: str) -> pl.Expr:
        """:func:`exprs.extension`, or a typed null column when no url of the frame ends with a suffix."""
        if self._absent(suffixes):
            return pl.col(f"{_ABSENT}{value}")
        return E.extension(pl.col(column), suffixes, value)

    def ext_all(self, column: str, suffixes: tuple[str, ...]) -> pl.Expr:
        """:func:`exprs.extensions` (every matching extension), or a typed null column as in :meth:`ext`."""
        if self._absent(suffixes):
            return pl.col(f"{_ABSENT}list")
        return E.extensions(pl.col(column), suffixes)


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
                    t.c.coalesce(s.tz, e.tz),
                )
            )
        label = k[0].lower() + k[1:] if k in ("DateTime", "Instant") else k
        kind = pl.when(pl.col(column).is_not_null()).then(pl.lit(label)).otherwise(kind)
    for label, (raw, p) in fallback.items():
        parts.append((p.low, p.high, p.prec, p.prec, p.tz))
        kind = pl.when(kind.is_null() & raw.is_not_null()).then(pl.lit(label)).otherwise(kind)
    names = ("start", "end", "start_prec", "end_prec", "tz_offset_min")
    out = {name: t.c.coalesce(*(part[i] for part in parts)) for i, name in enumerate(names)}
    return {**out, f"{prefix}_type": kind}


def _period_time(t: _Times, column: str) -> dict[str, pl.Expr]:
    s, e = t(f"{column}.start", col(column, "start")), t(f"{column}.end", col(column, "end"))
    return {
        "start": s.low,
        "end": e.high,
        "start_prec": s.prec,
        "end_prec": e.prec,
        "tz_offset_min": t.c.coalesce(s.tz, e.tz),
    }


def _point_time(p: _Parsed) -> dict[str, pl.Expr]:
    return {"start": p.low, "end": p.high, "start_prec": p.prec, "end_prec": p.prec, "tz_offset_min": p.tz}


def _negation(c: _Ctx) -> dict[str, pl.Expr]:
    return {
        "not_done_valueset": c.coalesce(
            c.ext("extension", NOT_DONE_VS, "valueCanonical"), c.ext("extension", NOT_DONE_VS, "valueUri")
        )
    }


def _status(name: str = "status") -> pl.Expr:
    return pl.col(name).str.strip_chars().str.to_lowercase()


def _medication(c: _Ctx) -> dict[str, pl.Expr]:
    return {
        "medication": c.coalesce(E.codes(pl.col("medicationCodeableConcept")), E.codes(pl.col("__med_code"))),
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


def _patient(c: _Ctx) -> _Spec:
    t = _Times(c)
    birth = t("birthDate", pl.col("birthDate"))
    deceased_at = t("deceasedDateTime", pl.col("deceasedDateTime"))
    race = c.stage("__s_race", c.ext("extension", ("us-core-race",), "extension"))
    eth = c.stage("__s_eth", c.ext("extension", ("us-core-ethnicity",), "extension"))

    def values(name: str, subs: pl.Expr, url: str, value: str, field: str | None = None) -> pl.Expr:
        return c.stage(f"__s_{name}", E.sub_values(subs, url, value, field))

    addresses = pl.col("address")
    home = addresses.list.filter(pl.element().struct.field("use") == "home").list.first()
    address = c.stage("__s_address", c.coalesce(home, addresses.list.first()))
    sex = c.ext("extension", ("us-core-sex",), "valueCoding")
    return _Spec(
        {
            "patient_id": pl.col("id"),
            "birth_date": birth.low.dt.date(),
            "birth_date_prec": birth.prec,
            "gender": _status("gender"),
            "sex": E.codings(pl.concat_list(sex)),
            "birth_sex": c.ext("extension", ("us-core-birthsex",), "valueCode"),
            "deceased": pl.when(pl.col("deceasedDateTime").is_not_null())
            .then(True)
            .otherwise(pl.col("deceasedBoolean")),
            "deceased_datetime": deceased_at.low,
            "race_omb": E.nonempty(values("race_omb", race, "ombCategory", "valueCoding", "code")),
            "race_detailed": E.nonempty(values("race_detailed", race, "detailed", "valueCoding", "code")),
            "race_text": E.sub_values(race, "text", "valueString").list.first(),
            "ethnicity_omb": E.nonempty(values("eth_omb", eth, "ombCategory", "valueCoding", "code")),
            "ethnicity_detailed": E.nonempty(values("eth_detailed", eth, "detailed", "valueCoding", "code")),
            "ethnicity_text": E.sub_values(eth, "text", "valueString").list.first(),
            "address_state": address.struct.field("state"),
            "address_postal_code": address.struct.field("postalCode"),
            "address_country": address.struct.field("country"),
            "managing_organization_id": E.ref_id(col("managingOrganization", "reference"), c.a),
            "general_practitioner_ids": E.ref_ids(pl.col("generalPractitioner"), c.a),
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


def _coverage(c: _Ctx) -> _Spec:
    t = _Times(c)
    return _Spec(
        {
            "patient_id": E.ref_id(col("beneficiary", "reference"), c.a),
            **_period_time(t, "period"),
            "status": _status(),
            "type": E.codes(pl.col("type")),
            "payor_ids": E.ref_ids(pl.col("payor"), c.a),
            "payor_names": E.nonempty(
                pl.col("payor").list.eval(pl.element().struct.field("display")).list.drop_nulls()
            ),
            "subscriber_id": pl.col("subscriberId"),
            "plan_class": E.codes_many(pl.col("class").list.eval(pl.element().struct.field("type"))),
        },
        t,
    )


def _encounter(c: _Ctx) -> _Spec:
    t = _Times(c)
    element = pl.element()
    # QI-Core encounter-procedure: one extension per procedure, sub-extensions ``procedure`` and ``rank``.
    procedures = c.ext_all("extension", ENCOUNTER_PROCEDURE).list.eval(
        pl.struct(
            procedure_id=E.ref_id(
                E.sub_value(element, "procedure", "valueReference").struct.field("reference"), c.a
            ),
            rank=E.sub_value(element, "rank", "valuePositiveInt").cast(pl.Int32, strict=False),
        )
    )
    diagnoses = pl.col("diagnosis").list.eval(
        pl.struct(
            condition_id=E.ref_id(element.struct.field("condition").struct.field("reference"), c.a),
            use=element.struct.field("use").struct.field("coding").list.first().struct.field("code"),
            rank=element.struct.field("rank").cast(pl.Int32),
            present_on_admission=pl.lit(None, dtype=pl.String),
        )
    )
    hosp = pl.col("hospitalization")
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **_period_time(t, "period"),
            "status": _status(),
            "class_system": canonical_system_expr(col("class", "system")),
            "class_code": col("class", "code"),
            "type": E.codes_many(pl.col("type")),
            "service_type": E.codes(pl.col("serviceType")),
            "priority": E.codes(pl.col("priority")),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "reason_reference_ids": E.ref_ids(pl.col("reasonReference"), c.a),
            "admit_source": E.codes(hosp.struct.field("admitSource")),
            "discharge_disposition": E.codes(hosp.struct.field("dischargeDisposition")),
            "diagnoses": E.nonempty(diagnoses),
            "procedures": procedures,
            # "locations": one row per stay in the same pass (_stay), then re-assembled (_attach_locations)
            "participant_ids": E.nonempty(
                pl.col("participant")
                .list.eval(E.ref_id(element.struct.field("individual").struct.field("reference"), c.a))
                .list.drop_nulls()
            ),
            "service_provider_id": E.ref_id(col("serviceProvider", "reference"), c.a),
            "part_of_id": E.ref_id(col("partOf", "reference"), c.a),
        },
        t,
    )


def _stay(c: _Ctx) -> _Spec:
    """One ``Encounter.location`` (a stay), exploded so that its period is parsed with every other time value
    (one parse per value inside ``list.eval`` cost ~30 ms of planning on a one-patient Bundle). Unparseable
    times give a null, as they always did here: a stay never quarantines its encounter."""
    t = _Times(c)
    return _Spec(
        {
            "location_id": E.ref_id(col("location", "reference"), c.a),
            "status": pl.col("status"),
            "start": t("location.period.start", col("period", "start")).low,
            "end": t("location.period.end", col("period", "end")).high,
        },
        t,
    )


def _condition(c: _Ctx) -> _Spec:
    t = _Times(c)
    onset = _choice_time(t, "onset", ("DateTime", "Period", "String", "Age", "Range"))
    abatement = _choice_time(t, "abatement", ("DateTime", "Period", "String", "Age", "Range", "Boolean"))
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            # start = onset low boundary, end = abatement high boundary; a null abatement stays null (P2).
            "start": onset["start"],
            "end": abatement["end"],
            "start_prec": onset["start_prec"],
            "end_prec": abatement["end_prec"],
            "tz_offset_min": c.coalesce(onset["tz_offset_min"], abatement["tz_offset_min"]),
            "clinical_status": E.first_code(pl.col("clinicalStatus")),
            "verification_status": E.first_code(pl.col("verificationStatus")),
            "category": E.codes_many(pl.col("category")),
            "code": E.codes(pl.col("code")),
            "body_site": E.codes_many(pl.col("bodySite")),
            "severity": E.codes(pl.col("severity")),
            "onset_type": onset["onset_type"],
            "abatement_type": abatement["abatement_type"],
            "recorded_date": t("recordedDate", pl.col("recordedDate")).low,
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


def _procedure(c: _Ctx) -> _Spec:
    t = _Times(c)
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **_choice_time(t, "performed", ("DateTime", "Period", "String", "Age", "Range")),
            "status": _status(),
            "status_reason": c.coalesce(
                E.codes(pl.col("statusReason")),
                E.codes(c.ext("extension", NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            "code": E.codes(pl.col("code")),
            "category": E.codes(pl.col("category")),
            "body_site": E.codes_many(pl.col("bodySite")),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "reason_reference_ids": E.ref_ids(pl.col("reasonReference"), c.a),
            **_negation(c),
            "recorded_date": t("recorded", c.ext("extension", RECORDED, "valueDateTime")).low,
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


def _observation(c: _Ctx) -> _Spec:
    t = _Times(c)
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **_choice_time(t, "effective", ("DateTime", "Period", "Instant", "Timing")),
            "status": _status(),
            "status_reason": E.codes(c.ext("extension", NOT_DONE_REASON, "valueCodeableConcept")),
            "category": E.codes_many(pl.col("category")),
            "code": E.codes(pl.col("code")),
            "profiles": E.nonempty(col("meta", "profile")),
            "issued": t("issued", pl.col("issued")).low,
            **E.value_columns(c.coalesce),
            "value_datetime": t("valueDateTime", pl.col("valueDateTime")).low,
            "interpretation": E.codes_many(pl.col("interpretation")),
            "has_member_ids": E.ref_ids(pl.col("hasMember"), c.a),
            "derived_from_ids": E.ref_ids(pl.col("derivedFrom"), c.a),
            **_negation(c),
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


def _component(c: _Ctx) -> _Spec:
    t = _Times(c)
    return _Spec(
        {
            "code": E.codes(pl.col("code")),
            **E.value_columns(c.coalesce),
            "value_datetime": t("valueDateTime", pl.col("valueDateTime")).low,
        },
        t,
    )


def _request_negation(c: _Ctx) -> dict[str, pl.Expr]:
    return {
        "reason_refused": E.codes(c.ext("extension", DNP_REASON, "valueCodeableConcept")),
        "do_not_perform": c.ext("modifierExtension", DNP, "valueBoolean"),
    }


def _medication_request(c: _Ctx) -> _Spec:
    t = _Times(c)
    authored = t("authoredOn", pl.col("authoredOn"))
    dosage = pl.col("dosageInstruction").list.first()
    bounds = dosage.struct.field("timing").struct.field("repeat").struct.field("boundsPeriod")
    disp = pl.col("dispenseRequest")
    validity = disp.struct.field("validityPeriod")
    neg = _request_negation(c)
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **_point_time(authored),
            "status": _status(),
            "intent": _status("intent"),
            "do_not_perform": c.coalesce(pl.col("doNotPerform"), neg["do_not_perform"]),
            "status_reason": c.coalesce(
                E.codes(pl.col("statusReason")),
                E.codes(c.ext("extension", NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            "reason_refused": neg["reason_refused"],
            "category": E.codes_many(pl.col("category")),
            **_medication(c),
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
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


def _medication_dispense(c: _Ctx) -> _Spec:
    t = _Times(c)
    handed, prepared = (
        t("whenHandedOver", pl.col("whenHandedOver")),
        t("whenPrepared", pl.col("whenPrepared")),
    )
    dosage = pl.col("dosageInstruction").list.first()
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            "start": c.coalesce(handed.low, prepared.low),
            "end": c.coalesce(handed.high, prepared.high),
            "start_prec": c.coalesce(handed.prec, prepared.prec),
            "end_prec": c.coalesce(handed.prec, prepared.prec),
            "tz_offset_min": c.coalesce(handed.tz, prepared.tz),
            "status": _status(),
            "status_reason": E.codes(pl.col("statusReason")),
            **_medication(c),
            "when_prepared": prepared.low,
            "when_handed_over": handed.low,
            "quantity": col("quantity", "value"),
            "quantity_unit": E.unit(pl.col("quantity")),
            "days_supply": col("daysSupply", "value"),
            **_dosage_timing(dosage),
            "authorizing_prescription_ids": E.ref_ids(pl.col("authorizingPrescription"), c.a),
            "encounter_id": E.ref_id(col("context", "reference"), c.a),
        },
        t,
    )


def _medication_administration(c: _Ctx) -> _Spec:
    t = _Times(c)
    dose = col("dosage", "dose")
    time = _choice_time(t, "effective", ("DateTime", "Period"))
    time.pop("effective_type")
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **time,
            "status": _status(),
            "status_reason": c.coalesce(
                E.codes_many(pl.col("statusReason")),
                E.codes(c.ext("extension", NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            **_medication(c),
            "dose_value": dose.struct.field("value"),
            "dose_unit": E.unit(dose),
            "route": E.codes(col("dosage", "route")),
            **_negation(c),
            "recorded": t("recorded", c.ext("extension", RECORDED, "valueDateTime")).low,
            "request_id": E.ref_id(col("request", "reference"), c.a),
            "encounter_id": E.ref_id(col("context", "reference"), c.a),
        },
        t,
    )


def _immunization(c: _Ctx) -> _Spec:
    t = _Times(c)
    time = _choice_time(t, "occurrence", ("DateTime", "String"))
    time.pop("occurrence_type")
    return _Spec(
        {
            "patient_id": E.ref_id(col("patient", "reference"), c.a),
            **time,
            "status": _status(),
            "status_reason": c.coalesce(
                E.codes(pl.col("statusReason")),
                E.codes(c.ext("extension", NOT_DONE_REASON, "valueCodeableConcept")),
            ),
            "vaccine_code": E.codes(pl.col("vaccineCode")),
            "recorded": t("recorded", pl.col("recorded")).low,
            "primary_source": pl.col("primarySource"),
            **_negation(c),
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


def _allergy(c: _Ctx) -> _Spec:
    t = _Times(c)
    time = _choice_time(t, "onset", ("DateTime", "Period", "String", "Age", "Range"))
    return _Spec(
        {
            "patient_id": E.ref_id(col("patient", "reference"), c.a),
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
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


def _request(code: str) -> Callable[[_Ctx], _Spec]:
    def spec(c: _Ctx) -> _Spec:
        t = _Times(c)
        authored = t("authoredOn", pl.col("authoredOn"))
        # T is occurrence[x]; without one, authoredOn supplies it and occurrence_type says so (P4).
        time = _choice_time(
            t, "occurrence", ("DateTime", "Period", "Timing"), authoredOn=(pl.col("authoredOn"), authored)
        )
        neg = _request_negation(c)
        dnp = (
            c.coalesce(pl.col("doNotPerform"), neg["do_not_perform"])
            if code == "code"
            else neg["do_not_perform"]
        )
        columns = {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **time,
            "status": _status(),
            "intent": _status("intent"),
            "do_not_perform": dnp,
            "reason_refused": neg["reason_refused"],
            "code": E.codes(pl.col(code)),
            "reason_code": E.codes_many(pl.col("reasonCode")),
            "authored_on": authored.low,
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        }
        if code == "code":
            columns["category"] = E.codes_many(pl.col("category"))
        return _Spec(columns, t)

    return spec


def _diagnostic_report(c: _Ctx) -> _Spec:
    t = _Times(c)
    return _Spec(
        {
            "patient_id": E.ref_id(col("subject", "reference"), c.a),
            **_choice_time(t, "effective", ("DateTime", "Period")),
            "status": _status(),
            "category": E.codes_many(pl.col("category")),
            "code": E.codes(pl.col("code")),
            "issued": t("issued", pl.col("issued")).low,
            "result_ids": E.ref_ids(pl.col("result"), c.a),
            "conclusion_code": E.codes_many(pl.col("conclusionCode")),
            "encounter_id": E.ref_id(col("encounter", "reference"), c.a),
        },
        t,
    )


SPECS: dict[str, Callable[[_Ctx], _Spec]] = {
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
# Parts of a resource mapped as rows of their own (exploded lists), keyed by a pseudo resource type.
_STAY_TYPE = cast(pl.Struct, cast(pl.List, TABLES["encounter"]["locations"]).inner)
PARTS: dict[str, tuple[str, pl.Schema, Callable[[_Ctx], _Spec]]] = {
    "Component": ("observation_component", TABLES["observation_component"], _component),
    "Encounter.location": ("encounter", pl.Schema({f.name: f.dtype for f in _STAY_TYPE.fields}), _stay),
}
_EMPTY = {table: empty_frame(table) for table in TABLES}  # frames are immutable: safe to share
_MEDICATION_USERS = ("MedicationRequest", "MedicationDispense", "MedicationAdministration")
_UNRESOLVED_MEDICATION = (
    pl.col("medicationReference").is_not_null()
    & pl.col("__med_code").is_null()
    & pl.col("medicationCodeableConcept").is_null(),
    "unresolved medicationReference",
)
_HELPERS = ("__raw_reason", "__reason", "__drop", "__row", "__rid")
# One parse for every time string of a flatten call (all resource types): see _parse_times.
_PARSE_STAGES = parse_stages({"__p": pl.col("__v")})


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


@dataclass(frozen=True)
class _Plan:
    """One resource type's mapping for one shape of input (which raw columns hold anything, which extension
    suffixes occur): built once and cached, because building and planning the expressions costs far more than
    evaluating them on a one-patient Bundle."""

    table: str
    part: bool  # a part of a resource (see PARTS): no table checks, no drops, only the spec's columns
    time_keys: tuple[str, ...]  # the time values present, parsed into ``__t_<key>`` (see _parse_times)
    time_raw: tuple[pl.Expr, ...]  # their raw strings
    fill: tuple[pl.Expr, ...]  # typed null columns standing for absent extensions and time values
    stages: tuple[tuple[pl.Expr, ...], ...]  # sub-expressions computed once before the select
    raw_reason: pl.Expr
    verdict: tuple[pl.Expr, ...]  # ``__reason`` (raw reasons, then the table's key checks) and ``__drop``
    select: tuple[pl.Expr, ...]  # see _template
    source_live: bool


def _dead_columns(frame: pl.DataFrame) -> frozenset[str]:
    return frozenset(c for c in frame.columns if frame[c].null_count() == frame.height)


def _present_suffixes(frame: pl.DataFrame, dead: frozenset[str]) -> frozenset[str]:
    """The suffixes of :data:`EXT_SUFFIXES` that some extension url of the frame ends with."""
    urls: set[str] = set()
    for column in ("extension", "modifierExtension"):
        if column in frame.columns and column not in dead:
            found = frame[column].explode().drop_nulls().struct.field("url").drop_nulls().unique()
            urls.update(found.to_list())
    return frozenset(s for s in EXT_SUFFIXES if any(u.endswith(s) for u in urls))


def _build_plan(
    rtype: str,
    columns: tuple[str, ...],
    dead_columns: frozenset[str],
    present: frozenset[str],
    a: Mapping[str, str],
    extra_checks: tuple[tuple[pl.Expr, str], ...],
) -> _Plan:
    """The mapping of ``rtype`` for one shape of input (see :class:`_Ctx`). Raw checks must be false on null
    input for the pruning to hold (they all test ``is_not_null() & ...``)."""
    part = rtype in PARTS
    table, schema, build = PARTS[rtype] if part else (TABLE_OF[rtype], TABLES[TABLE_OF[rtype]], SPECS[rtype])
    c = _Ctx(a, present, set(dead_columns) | set(_ABSENT_TYPES))
    spec = build(c)
    times = spec.times
    meta = times("meta.lastUpdated", col("meta", "lastUpdated")) if "meta" in columns else None
    live_times = {k: e for k, e in times.raw.items() if f"__t_{k}" not in c.dead}
    absent_times = [k for k in times.raw if k not in live_times]
    time_checks = [(col(f"__t_{k}", "bad"), f"unparseable date in {k}") for k in live_times]
    raw_checks = [x for x in (*extra_checks, *spec.checks, *time_checks) if not c.is_dead(x[0])]
    mapped = {
        name: pl.lit(None, dtype=schema[name]) if c.is_dead(expr) else expr.cast(schema[name])
        for name, expr in spec.columns.items()
    }
    if not part and table != "patient":
        mapped["id"] = pl.col("id")
    mapped["meta_last_updated"] = (
        pl.lit(None, dtype=UTC_INSTANT) if meta is None or c.is_dead(meta.low) else meta.low
    )
    reads = (*mapped.values(), *live_times.values(), *(x for x, _ in raw_checks))
    reads += tuple(e for stage in c.stages for e in stage.values())
    used = {r for e in reads for r in e.meta.root_names()}
    fill = [pl.lit(None, dtype=t).alias(n) for n, t in _ABSENT_TYPES.items() if n in used]
    fill += [pl.lit(None, dtype=_TIME_STRUCT).alias(f"__t_{key}") for key in absent_times]
    return _Plan(
        table=table,
        part=part,
        time_keys=tuple(live_times),
        time_raw=tuple(live_times.values()),
        fill=tuple(fill),
        stages=tuple(tuple(e.alias(n) for n, e in stage.items()) for stage in c.stages),
        raw_reason=_reason(raw_checks),
        verdict=_verdict(table, part),
        select=_template(mapped, table, part, "id" in columns),
        source_live="_source" in columns and "_source" not in c.dead,
    )


def _verdict(table: str, part: bool) -> tuple[pl.Expr, ...]:
    keys = [] if part else _table_checks(table)
    reason = pl.concat_str([pl.col("__raw_reason"), _reason(keys)], separator="; ", ignore_nulls=True)
    return (
        pl.when(reason != "").then(reason).alias("__reason"),
        (pl.lit(False) if part else _dropped(table)).alias("__drop"),
    )


_PLANS: dict[tuple[object, ...], _Plan] = {}
_MAX_PLANS = 512


def _plan(
    rtype: str, frame: pl.DataFrame, a: Mapping[str, str], extra_checks: tuple[tuple[pl.Expr, str], ...]
) -> _Plan:
    """The cached plan for this frame's shape (plans with reference aliases are not cached)."""
    dead = _dead_columns(frame)
    present = _present_suffixes(frame, dead)
    if a:
        return _build_plan(rtype, tuple(frame.columns), dead, present, a, extra_checks)
    key = (rtype, tuple(frame.columns), dead, present, tuple(m for _, m in extra_checks))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        plan = _PLANS[key] = _build_plan(rtype, tuple(frame.columns), dead, present, a, extra_checks)
    return plan


def _parse_times(jobs: list[tuple[pl.DataFrame, _Plan]]) -> list[pl.DataFrame]:
    """Add the ``__t_<key>`` time structs to every frame, parsing all the time strings of all frames in one
    pass (the parse is a few dozen expression nodes: planning them once instead of once per value and type
    is most of the cost on a small input)."""
    timed = [i for i, (_, plan) in enumerate(jobs) if plan.time_keys]
    frames = [frame for frame, _ in jobs]
    if not timed:
        return frames
    raws = pl.collect_all(
        [
            jobs[i][0]
            .lazy()
            .with_columns(jobs[i][1].fill)
            .select([e.cast(pl.String).alias(f"__v{n}") for n, e in enumerate(jobs[i][1].time_raw)])
            for i in timed
        ]
    )
    # each job's values key after key, the jobs one after the other (sliced back below in that order)
    pieces = [raw.get_column(c).alias("__v") for raw in raws for c in raw.columns]
    lf = (pl.concat(pieces) if len(pieces) > 1 else pieces[0]).to_frame().lazy()
    for stage in _PARSE_STAGES:
        lf = lf.with_columns(stage)
    parsed = lf.select("__p").collect().to_series()
    offset = 0
    for i in timed:
        frame, plan = jobs[i]
        h = frame.height
        columns = []
        for key in plan.time_keys:
            columns.append(parsed.slice(offset, h).alias(f"__t_{key}"))
            offset += h
        frames[i] = frame.hstack(columns)
    return frames


_BUCKET_0 = pl.lit(0, dtype=pl.UInt16).alias("bucket")  # one bucket: bucket_of(x, 1) == 0, no hashing
_BUCKET_LATER = pl.lit(None, dtype=pl.UInt16).alias("bucket")  # several: set after the pass (_bucket)
_SOURCE, _BUCKET = pl.lit("source"), pl.lit("bucket")  # placeholders in a plan's select, found by identity


def _template(plan_columns: dict[str, pl.Expr], table: str, part: bool, has_id: bool) -> tuple[pl.Expr, ...]:
    """The select of a plan, with placeholders for ``source`` and ``bucket`` (set per call, see _select)."""
    rid = pl.col("id") if has_id else pl.lit(None, dtype=pl.String)
    helpers = (pl.col("__row"), rid.alias("__rid"))
    if part:
        return (*(e.alias(n) for n, e in plan_columns.items()), _SOURCE, *helpers)
    out = []
    for name, dtype in TABLES[table].items():
        if name == "source":
            out.append(_SOURCE)
        elif name == "bucket":
            out.append(_BUCKET)
        else:
            out.append(plan_columns.get(name, pl.lit(None, dtype=dtype)).alias(name))
    return (*out, *helpers)


def _select(plan: _Plan, source: str, n_buckets: int) -> list[pl.Expr]:
    """The mapped columns, in the canonical order (parts: the spec's columns only), and the helpers."""
    src = (
        pl.coalesce(pl.col("_source"), pl.lit(source, dtype=pl.String))
        if plan.source_live
        else pl.lit(source, dtype=pl.String)
    ).alias("source")
    bucket = _BUCKET_0 if n_buckets == 1 else _BUCKET_LATER
    out = [src if e is _SOURCE else bucket if e is _BUCKET else e for e in plan.select]
    return [*out, plan.raw_reason.alias("__raw_reason")]


def _run(jobs: list[tuple[pl.DataFrame, _Plan]], source: str, n_buckets: int) -> list[pl.DataFrame]:
    """Map every (raw frame, plan): one time parse for all, then one ``collect_all`` of all the mappings.

    Each result has the mapped columns plus ``__reason`` (null when fine), ``__drop``, ``__row``, ``__rid``.
    """
    frames = _parse_times(jobs)
    queries = []
    for frame, (_, plan) in zip(frames, jobs, strict=True):
        staged = frame.lazy().with_columns(plan.fill)
        for stage in plan.stages:
            staged = staged.with_columns(stage)
        queries.append(staged.select(_select(plan, source, n_buckets)).with_columns(plan.verdict))
    return pl.collect_all(queries)


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


def _component_frame(observations: pl.DataFrame) -> pl.DataFrame | None:
    """One row per Observation.component (``__row`` of its observation, ``component_ix``), or None."""
    has = observations.get_column("component").list.len() > 0
    if not has.any():
        return None
    return (
        observations.select("__row", "component")
        .filter(has)
        .with_columns(component_ix=pl.int_ranges(pl.col("component").list.len(), dtype=pl.Int16))
        .explode("component", "component_ix")
        .unnest("component")
    )


def _components(mapped: pl.DataFrame, exploded: pl.DataFrame, kept: pl.DataFrame) -> pl.DataFrame:
    """The mapped components of the kept observations, keyed (observation_id, component_ix)."""
    joined = mapped.hstack([exploded.get_column("component_ix")]).join(
        kept.select("__row", pl.col("id").alias("observation_id"), "patient_id", "bucket", "start"),
        on="__row",
        how="inner",
    )
    return conform("observation_component", joined)


def _stay_frame(encounters: pl.DataFrame) -> pl.DataFrame | None:
    """One row per Encounter.location (``__row`` of its encounter, ``__ix`` its position), or None."""
    has = encounters.get_column("location").list.len() > 0
    if not has.any():
        return None
    keep = ["__row", "location", *(["_source"] if "_source" in encounters.columns else [])]
    return (
        encounters.select(keep)
        .filter(has)
        .with_columns(__ix=pl.int_ranges(pl.col("location").list.len(), dtype=pl.Int32))
        .explode("location", "__ix")
        .unnest("location")
    )


def _attach_locations(
    encounters: pl.DataFrame,
    stays: pl.DataFrame,
    exploded: pl.DataFrame,
    locations: pl.DataFrame | None,
    source: str,
) -> pl.DataFrame:
    """``encounter.locations`` from the mapped stays, in their order, each with the ``type`` codings of the
    Location it references, looked up among the Locations of the same input (same source: the same Bundle,
    or the same Bulk export); ``type`` is null when that Location is not there."""
    rows = stays.hstack([exploded.get_column("__ix")]).lazy()
    if locations is not None and locations.height:
        src = pl.col("_source") if "_source" in locations.columns else pl.lit(None, dtype=pl.String)
        types = (
            conform_raw("Location", locations)
            .lazy()
            .select(
                pl.coalesce(src, pl.lit(source)).alias("source"),
                pl.col("id").alias("location_id"),
                E.codes_many(pl.col("type")).alias("__type"),
            )
            .filter(pl.col("location_id").is_not_null())
            .unique(["source", "location_id"], keep="last", maintain_order=True)
        )
        rows = rows.join(types, on=["source", "location_id"], how="left", maintain_order="left")
    else:
        rows = rows.with_columns(__type=pl.lit(None, dtype=CODES))
    stay = pl.struct(
        location_id="location_id", status="status", start="start", end="end", type="__type"
    ).cast(_STAY_TYPE)
    assembled = rows.group_by("__row", maintain_order=True).agg(stay.alias("__locations")).collect()
    return (
        encounters.join(assembled, on="__row", how="left", maintain_order="left")
        .with_columns(locations=pl.col("__locations"))
        .drop("__locations")
    )


def flatten(
    raw: Mapping[str, pl.DataFrame],
    source: str,
    *,
    aliases: Mapping[str, str] | None = None,
    n_buckets: int = 1,
    rejected: pl.DataFrame | None = None,
) -> FlattenResult:
    """Canonical tables from raw frames keyed by resource type (Medication frames resolve references only,
    Location frames the type of encounter locations).

    ``aliases`` maps reference strings (fullUrls, ``Type/<fullUrl id>``) to logical ids; ``rejected`` carries
    records an input reader already refused (shape errors), so one quarantine holds everything.
    """
    a = aliases or {}
    medications = raw.get("Medication", pl.DataFrame(schema=RAW["Medication"]))
    jobs: list[tuple[str, pl.DataFrame, _Plan]] = []
    for rtype, frame in raw.items():
        if rtype not in SPECS or frame.height == 0:
            continue
        if frame.columns != list(RAW[rtype]):  # readers give the pinned schema; others are conformed
            frame = conform_raw(rtype, frame)
        frame = frame.with_row_index("__row")
        checks: tuple[tuple[pl.Expr, str], ...] = ()
        if rtype in _MEDICATION_USERS:
            frame = _resolve_medication(frame, medications, a)
            checks = (_UNRESOLVED_MEDICATION,)
        jobs.append((rtype, frame, _plan(rtype, frame, a, checks)))
    # Parts (observation components, encounter stays) are mapped in the same pass, as rows of their own.
    first = {rtype: frame for rtype, frame, _ in jobs}
    parts = {
        name: exploded
        for name, owner, explode in (
            ("Component", "Observation", _component_frame),
            ("Encounter.location", "Encounter", _stay_frame),
        )
        if owner in first and (exploded := explode(first[owner])) is not None
    }
    runs = [(frame, plan) for _, frame, plan in jobs]
    runs += [(frame, _plan(name, frame, a, ())) for name, frame in parts.items()]
    mapped_all = _run(runs, source, n_buckets) if runs else []
    mapped_parts = dict(zip(parts, mapped_all[len(jobs) :], strict=True))
    tables: dict[str, pl.DataFrame] = {}
    rejects = [rejected] if rejected is not None else []
    dropped: dict[str, int] = {}
    for (rtype, _, plan), mapped in zip(jobs, mapped_all[: len(jobs)], strict=True):
        table = plan.table
        ok = mapped
        if mapped.get_column("__reason").null_count() < mapped.height:
            rejects.append(_rejects(rtype, mapped, source))
            ok = mapped.filter(pl.col("__reason").is_null())
        n_drop = int(ok.get_column("__drop").sum())
        if n_drop:
            dropped[table] = dropped.get(table, 0) + n_drop
            ok = ok.filter(~pl.col("__drop"))
        if n_buckets != 1:
            ok = _bucket(ok, n_buckets)
        if rtype == "Encounter" and "Encounter.location" in parts:
            stays = mapped_parts["Encounter.location"]
            ok = _attach_locations(ok, stays, parts["Encounter.location"], raw.get("Location"), source)
        if rtype == "Observation" and "Component" in parts:
            tables["observation_component"] = _components(mapped_parts["Component"], parts["Component"], ok)
        if n_buckets != 1:
            ok = conform(table, ok)
        else:
            for helper in _HELPERS:  # in place: every frame here is this call's own
                ok.drop_in_place(helper)
        tables[table] = ok
    for table in TABLES:
        tables.setdefault(table, _EMPTY[table])
    rejected_all = (
        pl.concat([r.cast(REJECTED_SCHEMA) for r in rejects])
        if rejects
        else pl.DataFrame(schema=REJECTED_SCHEMA)
    )
    unknown = unknown_systems(tables)
    if unknown.height:
        _warn_unknown_systems(unknown, source)
    return FlattenResult(tables, rejected_all, dropped, unknown)


def _coded(frame: pl.DataFrame, table: str) -> tuple[list[pl.Series], list[pl.Series]]:
    """The CODES columns of one table (with ``locations[].type``) and its plain system columns (the
    encounter class), leaving out the all-null ones."""
    lists: list[pl.Series] = []
    plain: list[pl.Series] = []
    for name, dtype in TABLES[table].items():
        if name not in frame.columns:
            continue
        column = frame.get_column(name)
        if column.null_count() == column.len():
            continue
        if dtype == CODES:
            lists.append(column)
        elif name == "locations":
            lists.append(column.explode().struct.unnest().get_column("type"))
        elif name == "class_system":
            plain.append(column.filter(frame.get_column("class_code").is_not_null()))
    return lists, plain


def _systems(lists: list[pl.Series], plain: list[pl.Series]) -> pl.Series:
    """The system of every coding: the lists are exploded once (a null list explodes to a row with a null
    code, which no kept coding has: exprs._canonical_codings keeps coded ones only)."""
    parts = list(plain)
    if lists:
        codings = (pl.concat(lists) if len(lists) > 1 else lists[0]).explode().struct.unnest()
        parts.append(codings.get_column("system").filter(codings.get_column("code").is_not_null()))
    return pl.concat(parts) if len(parts) > 1 else parts[0]


def unknown_systems(tables: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Codings per (table, system) whose system is missing or not an absolute URI after canonicalisation
    (``LOINC`` is read as ``http://loinc.org``; ``loinc.org``, ``urn:oid:`` without an OID, a bare OID or an
    empty string are not): such a coding cannot match any value set. The rows are kept; this only counts.

    Series operations only, all tables at once (a query per table cost more than the whole count on a
    one-patient Bundle); counted per table only when some system is bad."""
    coded = {
        table: found
        for table, frame in tables.items()
        if table in TABLES and frame.height and any(found := _coded(frame, table))
    }
    rows: list[tuple[str, str | None, int]] = []
    if not coded:
        return pl.DataFrame(schema=UNKNOWN_SYSTEMS_SCHEMA)
    every = _systems(
        [s for lists, _ in coded.values() for s in lists], [s for _, p in coded.values() for s in p]
    )
    if all(map(is_absolute_system, every.unique().to_list())):
        return pl.DataFrame(schema=UNKNOWN_SYSTEMS_SCHEMA)
    for table, (lists, plain) in coded.items():
        counts = _systems(lists, plain).alias("system").value_counts(name="codings")
        rows += [(table, s, int(n)) for s, n in counts.iter_rows() if not is_absolute_system(s)]
    return pl.DataFrame(rows, schema=UNKNOWN_SYSTEMS_SCHEMA, orient="row").sort(
        "table", "system", nulls_last=True
    )


def _warn_unknown_systems(unknown: pl.DataFrame, source: str) -> None:
    """One warning naming them (table, system string, count; never a code, a display text or a value)."""
    shown = [
        f"{t}: {'<missing>' if s is None else repr(s[:80] + ('...' if len(s) > 80 else ''))} x{n}"
        for t, s, n in unknown.head(10).iter_rows()
    ]
    more = f"; and {unknown.height - 10} more" if unknown.height > 10 else ""
    log.warning(
        "%s: %d codings kept whose code system is missing or not an absolute URI (they cannot match any "
        "value set): %s%s",
        source,
        int(unknown["codings"].sum()),
        "; ".join(shown),
        more,
    )


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
    unknown = (
        pl.concat([r.unknown_systems for r in results])
        .group_by("table", "system")
        .agg(pl.col("codings").sum())
        .sort("table", "system", nulls_last=True)
        if results
        else pl.DataFrame(schema=UNKNOWN_SYSTEMS_SCHEMA)
    )
    return FlattenResult(tables, rejected, dropped, unknown)
