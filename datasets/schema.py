"""The canonical tables: one row per FHIR resource, QI-Core flavoured, snake_case FHIR element names.

This module is the data contract between ingestion (FHIR, Synthea, the synthetic generator) and the engine.
Every table but ``patient`` carries ``patient_id, bucket, id, source, meta_last_updated`` and the time interval
``start, end, start_prec, end_prec, tz_offset_min`` (closed interval of UTC instants: ``start`` is the low
boundary of the start value, ``end`` the high boundary of the end value; precision 1=year .. 7=fraction;
the offset as written in the source). Codes are lists of codings so that a record is in a value set when any
of its codings is. Statuses stay raw FHIR codes; measures apply their own status rules.

Version 1.1.0 (additive, for CMS108): ``encounter.procedures`` (the QI-Core encounter-procedure extension:
procedure id and rank), ``encounter.locations[].type`` (the referenced Location's type codings, resolved within
the same Bundle / Bulk export) and ``medication_administration.recorded`` (the qicore-recorded extension).

Departure from the reference note: statuses are plain ``String`` rather than ``pl.Enum``. An Enum cast fails a
whole batch on one unknown value (pitfall P15); ingestion checks status values against
:data:`STATUS_CODES` instead and quarantines the record that carries an unknown one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

SCHEMA_VERSION = "1.1.0"

UTC_INSTANT = pl.Datetime("us", "UTC")
CODING = pl.Struct({"system": pl.String, "code": pl.String, "display": pl.String})
CODES = pl.List(CODING)
IDS = pl.List(pl.String)

# Precision of a time value as written: the CQL/FHIR precisions.
PREC_YEAR, PREC_MONTH, PREC_DAY, PREC_HOUR, PREC_MINUTE, PREC_SECOND, PREC_FRACTION = 1, 2, 3, 4, 5, 6, 7

_KEYS: dict[str, pl.DataType] = {
    "patient_id": pl.String(),
    "bucket": pl.UInt16(),
    "id": pl.String(),
    "source": pl.String(),
    "meta_last_updated": UTC_INSTANT,
}
_TIME: dict[str, pl.DataType] = {
    "start": UTC_INSTANT,
    "end": UTC_INSTANT,
    "start_prec": pl.Int8(),
    "end_prec": pl.Int8(),
    "tz_offset_min": pl.Int16(),
}
_VALUE: dict[str, pl.DataType] = {
    "value_type": pl.String(),
    "value_quantity": pl.Float64(),
    "value_comparator": pl.String(),
    "value_unit": pl.String(),
    "value_concept": CODES,
    "value_string": pl.String(),
    "value_boolean": pl.Boolean(),
    "value_datetime": UTC_INSTANT,
    "value_low": pl.Float64(),
    "value_high": pl.Float64(),
}
_TIMING: dict[str, pl.DataType] = {
    "dose_value": pl.Float64(),
    "dose_unit": pl.String(),
    "timing_frequency": pl.Int32(),
    "timing_frequency_max": pl.Int32(),
    "timing_period": pl.Float64(),
    "timing_period_unit": pl.String(),
    "timing_times_of_day": IDS,
}


def _event(**columns: pl.DataType) -> pl.Schema:
    return pl.Schema({**_KEYS, **_TIME, **columns})


TABLES: dict[str, pl.Schema] = {
    "patient": pl.Schema(
        {
            "patient_id": pl.String(),
            "bucket": pl.UInt16(),
            "source": pl.String(),
            "meta_last_updated": UTC_INSTANT,
            "birth_date": pl.Date(),
            "birth_date_prec": pl.Int8(),
            "gender": pl.String(),
            "sex": CODES,
            "birth_sex": pl.String(),
            "deceased": pl.Boolean(),
            "deceased_datetime": UTC_INSTANT,
            "race_omb": IDS,
            "race_detailed": IDS,
            "race_text": pl.String(),
            "ethnicity_omb": IDS,
            "ethnicity_detailed": IDS,
            "ethnicity_text": pl.String(),
            "address_state": pl.String(),
            "address_postal_code": pl.String(),
            "address_country": pl.String(),
            "managing_organization_id": pl.String(),
            "general_practitioner_ids": IDS,
        }
    ),
    "coverage": _event(
        status=pl.String(),
        type=CODES,
        payor_ids=IDS,
        payor_names=IDS,
        subscriber_id=pl.String(),
        plan_class=CODES,
    ),
    "encounter": _event(
        status=pl.String(),
        class_system=pl.String(),
        class_code=pl.String(),
        type=CODES,
        service_type=CODES,
        priority=CODES,
        reason_code=CODES,
        reason_reference_ids=IDS,
        admit_source=CODES,
        discharge_disposition=CODES,
        diagnoses=pl.List(
            pl.Struct(
                {
                    "condition_id": pl.String,
                    "use": pl.String,
                    "rank": pl.Int32,
                    "present_on_admission": pl.String,
                }
            )
        ),
        # 1.1.0: the QI-Core encounter-procedure extension (CMS108 "principal procedure": rank 1).
        procedures=pl.List(pl.Struct({"procedure_id": pl.String, "rank": pl.Int32})),
        # 1.1.0: ``type`` is the referenced Location's ``type`` codings (null when it is not in the input).
        locations=pl.List(
            pl.Struct(
                {
                    "location_id": pl.String,
                    "status": pl.String,
                    "start": UTC_INSTANT,
                    "end": UTC_INSTANT,
                    "type": CODES,
                }
            )
        ),
        place_of_service=CODES,
        participant_ids=IDS,
        service_provider_id=pl.String(),
        part_of_id=pl.String(),
    ),
    "condition": _event(
        clinical_status=pl.String(),
        verification_status=pl.String(),
        category=CODES,
        code=CODES,
        body_site=CODES,
        severity=CODES,
        onset_type=pl.String(),
        abatement_type=pl.String(),
        recorded_date=UTC_INSTANT,
        encounter_id=pl.String(),
    ),
    "procedure": _event(
        status=pl.String(),
        status_reason=CODES,
        code=CODES,
        category=CODES,
        body_site=CODES,
        reason_code=CODES,
        reason_reference_ids=IDS,
        performed_type=pl.String(),
        not_done_valueset=pl.String(),
        recorded_date=UTC_INSTANT,
        encounter_id=pl.String(),
    ),
    "observation": _event(
        status=pl.String(),
        status_reason=CODES,
        category=CODES,
        code=CODES,
        profiles=IDS,
        effective_type=pl.String(),
        issued=UTC_INSTANT,
        **_VALUE,
        data_absent_reason=CODES,
        interpretation=CODES,
        has_member_ids=IDS,
        derived_from_ids=IDS,
        not_done_valueset=pl.String(),
        encounter_id=pl.String(),
    ),
    "observation_component": pl.Schema(
        {
            "patient_id": pl.String(),
            "bucket": pl.UInt16(),
            "observation_id": pl.String(),
            "component_ix": pl.Int16(),
            "source": pl.String(),
            "start": UTC_INSTANT,
            "code": CODES,
            **_VALUE,
            "data_absent_reason": CODES,
        }
    ),
    "medication_request": _event(
        status=pl.String(),
        intent=pl.String(),
        do_not_perform=pl.Boolean(),
        status_reason=CODES,
        reason_refused=CODES,
        category=CODES,
        medication=CODES,
        medication_id=pl.String(),
        reason_code=CODES,
        authored_on=UTC_INSTANT,
        **_TIMING,
        bounds_start=UTC_INSTANT,
        bounds_end=UTC_INSTANT,
        expected_supply_days=pl.Float64(),
        dispense_quantity=pl.Float64(),
        dispense_quantity_unit=pl.String(),
        refills=pl.Int32(),
        validity_start=UTC_INSTANT,
        validity_end=UTC_INSTANT,
        encounter_id=pl.String(),
    ),
    "medication_dispense": _event(
        status=pl.String(),
        status_reason=CODES,
        medication=CODES,
        medication_id=pl.String(),
        when_prepared=UTC_INSTANT,
        when_handed_over=UTC_INSTANT,
        quantity=pl.Float64(),
        quantity_unit=pl.String(),
        days_supply=pl.Float64(),
        **_TIMING,
        authorizing_prescription_ids=IDS,
        encounter_id=pl.String(),
    ),
    "medication_administration": _event(
        status=pl.String(),
        status_reason=CODES,
        medication=CODES,
        medication_id=pl.String(),
        dose_value=pl.Float64(),
        dose_unit=pl.String(),
        route=CODES,
        not_done_valueset=pl.String(),
        recorded=UTC_INSTANT,  # 1.1.0: the qicore-recorded extension
        request_id=pl.String(),
        encounter_id=pl.String(),
    ),
    "immunization": _event(
        status=pl.String(),
        status_reason=CODES,
        vaccine_code=CODES,
        recorded=UTC_INSTANT,
        primary_source=pl.Boolean(),
        not_done_valueset=pl.String(),
        encounter_id=pl.String(),
    ),
    "allergy_intolerance": _event(
        clinical_status=pl.String(),
        verification_status=pl.String(),
        type=pl.String(),
        category=IDS,
        criticality=pl.String(),
        code=CODES,
        onset_type=pl.String(),
        recorded_date=UTC_INSTANT,
        reaction_manifestation=CODES,
        encounter_id=pl.String(),
    ),
    "service_request": _event(
        status=pl.String(),
        intent=pl.String(),
        do_not_perform=pl.Boolean(),
        reason_refused=CODES,
        code=CODES,
        category=CODES,
        reason_code=CODES,
        authored_on=UTC_INSTANT,
        occurrence_type=pl.String(),
        encounter_id=pl.String(),
    ),
    "device_request": _event(
        status=pl.String(),
        intent=pl.String(),
        do_not_perform=pl.Boolean(),
        reason_refused=CODES,
        code=CODES,
        reason_code=CODES,
        authored_on=UTC_INSTANT,
        occurrence_type=pl.String(),
        encounter_id=pl.String(),
    ),
    "diagnostic_report": _event(
        status=pl.String(),
        category=CODES,
        code=CODES,
        effective_type=pl.String(),
        issued=UTC_INSTANT,
        result_ids=IDS,
        conclusion_code=CODES,
        encounter_id=pl.String(),
    ),
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

# The column a value-set retrieval matches by default, per table (the QI-Core primary code path).
PRIMARY_CODE: dict[str, str] = {
    "coverage": "type",
    "encounter": "type",
    "condition": "code",
    "procedure": "code",
    "observation": "code",
    "observation_component": "code",
    "medication_request": "medication",
    "medication_dispense": "medication",
    "medication_administration": "medication",
    "immunization": "vaccine_code",
    "allergy_intolerance": "code",
    "service_request": "code",
    "device_request": "code",
    "diagnostic_report": "code",
}

# Sort order inside every file: the patient's rows together, in time order.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    name: ("patient_id",) if name == "patient" else ("patient_id", "start") for name in TABLES
}

# FHIR R4 status code lists, used by ingestion to refuse unknown values (quarantine, never a failed cast).
STATUS_CODES: dict[str, dict[str, frozenset[str]]] = {
    "encounter": {
        "status": frozenset(
            {
                "planned",
                "arrived",
                "triaged",
                "in-progress",
                "onleave",
                "finished",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "procedure": {
        "status": frozenset(
            {
                "preparation",
                "in-progress",
                "not-done",
                "on-hold",
                "stopped",
                "completed",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "observation": {
        "status": frozenset(
            {
                "registered",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "cancelled",
                "entered-in-error",
                "unknown",
            }
        )
    },
    "medication_request": {
        "status": frozenset(
            {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}
        ),
        "intent": frozenset(
            {
                "proposal",
                "plan",
                "order",
                "original-order",
                "reflex-order",
                "filler-order",
                "instance-order",
                "option",
            }
        ),
    },
    "immunization": {"status": frozenset({"completed", "entered-in-error", "not-done"})},
}


@dataclass(frozen=True)
class Mismatch:
    """One difference between a frame's schema and the canonical one."""

    table: str
    column: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}: expected {self.expected}, found {self.found}"


def schema_of(table: str) -> pl.Schema:
    """The canonical schema of ``table``; an unknown table name is a ``KeyError`` naming the known ones."""
    try:
        return TABLES[table]
    except KeyError:
        raise KeyError(f"unknown table {table!r}; canonical tables: {', '.join(TABLE_NAMES)}") from None


# What each minor version added: (table, column) or (table, "list_column.struct_field"). A lake written at an
# older minor version is read as the current one with the additions null (``schema_as_of`` checks its files).
ADDITIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "1.1.0": (
        ("encounter", "procedures"),
        ("encounter", "locations.type"),
        ("medication_administration", "recorded"),
    ),
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def schema_as_of(table: str, version: str) -> pl.Schema:
    """The canonical schema of ``table`` as it was at ``version`` (same major): later additions removed."""
    columns = dict(schema_of(table))
    for added_in, items in ADDITIONS.items():
        if _version(added_in) <= _version(version):
            continue
        for where, path in items:
            if where != table:
                continue
            column, _, field = path.partition(".")
            if not field:
                columns.pop(column, None)
                continue
            inner = columns[column]
            assert isinstance(inner, pl.List) and isinstance(inner.inner, pl.Struct)
            kept = {f.name: f.dtype for f in inner.inner.fields if f.name != field}
            columns[column] = pl.List(pl.Struct(kept))
    return pl.Schema(columns)


def check_schema(
    table: str,
    found: Mapping[str, pl.DataType],
    *,
    allow_extra: bool = False,
    require: tuple[str, ...] = (),
    version: str = SCHEMA_VERSION,
) -> list[Mismatch]:
    """Every mismatch between ``found`` and the canonical schema of ``table`` (as of ``version``).

    ``require`` limits the check to those columns (a reader that projects only what it needs); without it
    every canonical column must be present with its exact type.
    """
    expected = schema_as_of(table, version)
    wanted = require or tuple(expected)
    problems: list[Mismatch] = []
    for column in wanted:
        want = expected.get(column)
        if want is None:
            problems.append(
                Mismatch(table, column, "a canonical column", "a column the schema does not have")
            )
            continue
        have = found.get(column)
        if have is None:
            problems.append(Mismatch(table, column, str(want), "missing"))
        elif have != want:
            problems.append(Mismatch(table, column, str(want), str(have)))
    if not allow_extra and not require:
        problems.extend(
            Mismatch(table, column, "no such column", str(dtype))
            for column, dtype in found.items()
            if column not in expected
        )
    return problems


def empty_frame(table: str) -> pl.DataFrame:
    """A zero-row frame with the canonical schema (a table a dataset does not have)."""
    return pl.DataFrame(schema=schema_of(table))


def conform(table: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Add missing canonical columns as nulls and order columns canonically; types must already match."""
    expected = schema_of(table)
    missing = [
        pl.lit(None, dtype=dtype).alias(name) for name, dtype in expected.items() if name not in frame.columns
    ]
    if missing:
        frame = frame.with_columns(missing)
    return frame.select(list(expected))
