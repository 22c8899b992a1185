"""Synthea CSV folders -> raw FHIR-shaped frames -> the shared flattener.

Columns are looked up by header name, never by position, because Synthea versions differ (P10): for example
``payer_transitions`` has ``START_YEAR/END_YEAR`` in old exports and ``START_DATE/END_DATE`` in new ones, and
``conditions``/``procedures`` gained ``SYSTEM``. Event rows have no ids: they get a deterministic xxh64 of
their key columns (P7). Blood-pressure rows (8480-6, 8462-4) are regrouped per patient, encounter, date into
a 85354-9 panel with components and the US Core profile (P13), as the FHIR exporter would have written them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import xxhash

from datasets.fhir import systems as sy
from datasets.fhir.flatten import FlattenResult, flatten
from datasets.fhir.raw import conform_raw

BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
BP_PROFILE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-blood-pressure"
CLASS = {
    "ambulatory": "AMB",
    "wellness": "AMB",
    "outpatient": "AMB",
    "urgentcare": "AMB",
    "emergency": "EMER",
    "inpatient": "IMP",
    "home": "HH",
    "virtual": "VR",
    "snf": "NONAC",
    "hospice": "HH",
}
RACE = {
    "white": "2106-3",
    "black": "2054-5",
    "asian": "2028-9",
    "native": "1002-5",
    "hawaiian": "2076-8",
    "other": "2131-1",
}
ETHNICITY = {"hispanic": "2135-2", "nonhispanic": "2186-5"}
SOP_BY_OWNERSHIP = {
    "government": "2",
    "private": "5",
    "self-pay": "81",
    "no_insurance": "81",
    "medicare": "1",
    "medicaid": "2",
}
_SYSTEM_NAMES = {"snomed-ct": sy.SNOMED, "loinc": sy.LOINC, "rxnorm": sy.RXNORM, "cvx": sy.CVX}


def _read(folder: Path, name: str) -> pl.DataFrame | None:
    path = folder / f"{name}.csv"
    return pl.read_csv(path, infer_schema=False) if path.exists() else None


def _c(frame: pl.DataFrame, name: str) -> pl.Expr:
    """A column if the header has it, else null (P10)."""
    return pl.col(name) if name in frame.columns else pl.lit(None, dtype=pl.String)


def _blank(expr: pl.Expr) -> pl.Expr:
    return pl.when(expr.str.strip_chars() != "").then(expr.str.strip_chars())


def _ref(rtype: str, expr: pl.Expr) -> pl.Expr:
    return pl.when(_blank(expr).is_not_null()).then(pl.struct(reference=pl.lit(f"{rtype}/") + expr))


def _cc(system: pl.Expr, code: pl.Expr, display: pl.Expr | None = None) -> pl.Expr:
    coding = pl.struct(
        system=system, code=code, display=display if display is not None else pl.lit(None, pl.String)
    )
    return pl.when(_blank(code).is_not_null()).then(pl.struct(coding=pl.concat_list(coding)))


def _system(frame: pl.DataFrame, default: str) -> pl.Expr:
    raw = _c(frame, "SYSTEM")
    named = raw.str.to_lowercase().replace_strict(
        list(_SYSTEM_NAMES), list(_SYSTEM_NAMES.values()), default=raw, return_dtype=pl.String
    )
    return pl.coalesce(_blank(named), pl.lit(default))


def synth_id(frame: pl.DataFrame, *keys: str) -> pl.Series:
    """Deterministic ids from key columns (xxh64 of the joined values; stable across polars versions)."""
    joined = frame.select(pl.concat_str([_c(frame, k).fill_null("") for k in keys], separator="|"))
    return pl.Series("id", [xxhash.xxh64_hexdigest(v.encode()) for v in joined.to_series()], dtype=pl.String)


def _with_id(frame: pl.DataFrame, *keys: str) -> pl.DataFrame:
    """Synthesise ids; identical rows (same keys) get ``-2``, ``-3``... so none is lost (P7)."""
    frame = frame.with_columns(synth_id(frame, *keys).alias("__id"))
    n = pl.int_range(pl.len()).over("__id")
    return frame.with_columns(
        __id=pl.when(n == 0).then(pl.col("__id")).otherwise(pl.col("__id") + "-" + (n + 1).cast(pl.String))
    )


def _patients(f: pl.DataFrame) -> pl.DataFrame:
    race, eth = _c(f, "RACE").str.to_lowercase(), _c(f, "ETHNICITY").str.to_lowercase()

    def omb(url: str, code: pl.Expr, text: pl.Expr) -> pl.Expr:
        sub = [
            pl.struct(url=pl.lit("ombCategory"), valueCoding=pl.struct(system=pl.lit(sy.CDCREC), code=code)),
            pl.struct(url=pl.lit("text"), valueString=text),
        ]
        return pl.when(code.is_not_null()).then(pl.struct(url=pl.lit(url), extension=pl.concat_list(sub)))

    race_code = race.replace_strict(list(RACE), list(RACE.values()), default=None, return_dtype=pl.String)
    eth_code = eth.replace_strict(
        list(ETHNICITY), list(ETHNICITY.values()), default=None, return_dtype=pl.String
    )
    gender = (
        _c(f, "GENDER").str.to_uppercase().replace_strict({"M": "male", "F": "female"}, default="unknown")
    )
    base = "http://hl7.org/fhir/us/core/StructureDefinition/"
    return f.select(
        id=pl.col("Id"),
        gender=gender,
        birthDate=_blank(_c(f, "BIRTHDATE")),
        deceasedDateTime=_blank(_c(f, "DEATHDATE")),
        extension=pl.concat_list(
            omb(base + "us-core-race", race_code, race), omb(base + "us-core-ethnicity", eth_code, eth)
        ).list.drop_nulls(),
        address=pl.concat_list(pl.struct(use=pl.lit("home"), state=_c(f, "STATE"), postalCode=_c(f, "ZIP"))),
    )


def _encounters(f: pl.DataFrame) -> pl.DataFrame:
    klass = (
        _c(f, "ENCOUNTERCLASS").str.to_lowercase().replace_strict(CLASS, default=None, return_dtype=pl.String)
    )
    return f.select(
        id=pl.col("Id"),
        status=pl.lit("finished"),
        subject=_ref("Patient", pl.col("PATIENT")),
        period=pl.struct(start=_blank(_c(f, "START")), end=_blank(_c(f, "STOP"))),
        **{"class": pl.struct(system=pl.lit(sy.ACTCODE), code=klass)},
        type=pl.concat_list(_cc(pl.lit(sy.SNOMED), _c(f, "CODE"), _c(f, "DESCRIPTION"))).list.drop_nulls(),
        reasonCode=pl.concat_list(
            _cc(pl.lit(sy.SNOMED), _blank(_c(f, "REASONCODE")), _c(f, "REASONDESCRIPTION"))
        ).list.drop_nulls(),
        serviceProvider=_ref("Organization", _c(f, "ORGANIZATION")),
        participant=pl.concat_list(pl.struct(individual=_ref("Practitioner", _c(f, "PROVIDER")))),
    )


def _conditions(f: pl.DataFrame) -> pl.DataFrame:
    f = _with_id(f, "PATIENT", "ENCOUNTER", "CODE", "START")
    stop = _blank(_c(f, "STOP"))
    status = pl.when(stop.is_null()).then(pl.lit("active")).otherwise(pl.lit("resolved"))
    category = _cc(
        pl.lit("http://terminology.hl7.org/CodeSystem/condition-category"), pl.lit("encounter-diagnosis")
    )
    return f.select(
        id=pl.col("__id"),
        subject=_ref("Patient", pl.col("PATIENT")),
        encounter=_ref("Encounter", _c(f, "ENCOUNTER")),
        code=_cc(_system(f, sy.SNOMED), pl.col("CODE"), _c(f, "DESCRIPTION")),
        clinicalStatus=_cc(pl.lit("http://terminology.hl7.org/CodeSystem/condition-clinical"), status),
        verificationStatus=_cc(
            pl.lit("http://terminology.hl7.org/CodeSystem/condition-ver-status"), pl.lit("confirmed")
        ),
        category=pl.concat_list(category),
        onsetDateTime=_blank(_c(f, "START")),
        abatementDateTime=stop,
    )


def _procedures(f: pl.DataFrame) -> pl.DataFrame:
    start = _blank(pl.coalesce(_c(f, "START"), _c(f, "DATE")))
    f = _with_id(f, "PATIENT", "ENCOUNTER", "CODE", "START", "DATE")
    return f.select(
        id=pl.col("__id"),
        status=pl.lit("completed"),
        subject=_ref("Patient", pl.col("PATIENT")),
        encounter=_ref("Encounter", _c(f, "ENCOUNTER")),
        code=_cc(_system(f, sy.SNOMED), pl.col("CODE"), _c(f, "DESCRIPTION")),
        reasonCode=pl.concat_list(_cc(pl.lit(sy.SNOMED), _blank(_c(f, "REASONCODE")))).list.drop_nulls(),
        performedPeriod=pl.when(_blank(_c(f, "STOP")).is_not_null()).then(
            pl.struct(start=start, end=_c(f, "STOP"))
        ),
        performedDateTime=pl.when(_blank(_c(f, "STOP")).is_null()).then(start),
    )


def _quantity(value: pl.Expr, units: pl.Expr) -> pl.Expr:
    return pl.struct(
        value=value.cast(pl.Float64, strict=False),
        unit=units,
        system=pl.lit(sy.UCUM),
        code=sy.ucum_unit_expr(units),
    )


def _observations(f: pl.DataFrame) -> pl.DataFrame:
    # QALY/DALY/QOLS pseudo-observations have no encounter and are not observations (P7).
    f = f.filter(~pl.col("CODE").is_in(["QALY", "DALY", "QOLS"]))
    f = _with_id(f, "PATIENT", "ENCOUNTER", "CODE", "DATE")
    numeric = _c(f, "TYPE").str.to_lowercase() == "numeric"
    value = pl.when(numeric).then(_quantity(_c(f, "VALUE"), _c(f, "UNITS")))
    category = _cc(
        pl.lit("http://terminology.hl7.org/CodeSystem/observation-category"),
        _blank(_c(f, "CATEGORY")).str.to_lowercase(),
    )
    common = {
        "status": pl.lit("final"),
        "subject": _ref("Patient", pl.col("PATIENT")),
        "encounter": _ref("Encounter", _c(f, "ENCOUNTER")),
        "effectiveDateTime": _blank(pl.col("DATE")),
    }
    is_bp = pl.col("CODE").is_in([SYSTOLIC, DIASTOLIC])
    single = f.filter(~is_bp).select(
        id=pl.col("__id"),
        **common,
        category=pl.concat_list(category).list.drop_nulls(),
        code=_cc(pl.lit(sy.LOINC), pl.col("CODE"), _c(f, "DESCRIPTION")),
        valueQuantity=value,
        valueString=pl.when(~numeric).then(_c(f, "VALUE")),
    )
    bp = f.filter(is_bp)
    keys = ["PATIENT", "ENCOUNTER", "DATE"]
    component = pl.struct(
        code=_cc(pl.lit(sy.LOINC), pl.col("CODE"), _c(bp, "DESCRIPTION")),
        valueQuantity=_quantity(_c(bp, "VALUE"), _c(bp, "UNITS")),
    )
    panels = (
        bp.sort("CODE", descending=True)
        .group_by([k for k in keys if k in bp.columns], maintain_order=True)
        .agg(component=component)
    )
    panels = panels.with_columns(synth_id(panels, *keys, "BP").alias("__id")).select(
        id=pl.col("__id"),
        **{k: v for k, v in common.items()},
        category=pl.concat_list(
            _cc(pl.lit("http://terminology.hl7.org/CodeSystem/observation-category"), pl.lit("vital-signs"))
        ),
        code=_cc(pl.lit(sy.LOINC), pl.lit(BP_PANEL), pl.lit("Blood pressure panel")),
        meta=pl.struct(profile=pl.concat_list(pl.lit(BP_PROFILE))),
        component=pl.col("component"),
    )
    return pl.concat([conform_raw("Observation", single), conform_raw("Observation", panels)])


def _medications(f: pl.DataFrame) -> pl.DataFrame:
    f = _with_id(f, "PATIENT", "ENCOUNTER", "CODE", "START")
    stop = _blank(_c(f, "STOP"))
    dispenses = _c(f, "DISPENSES").cast(pl.Int64, strict=False)
    return f.select(
        id=pl.col("__id"),
        status=pl.when(stop.is_null()).then(pl.lit("active")).otherwise(pl.lit("stopped")),
        intent=pl.lit("order"),
        subject=_ref("Patient", pl.col("PATIENT")),
        encounter=_ref("Encounter", _c(f, "ENCOUNTER")),
        medicationCodeableConcept=_cc(pl.lit(sy.RXNORM), pl.col("CODE"), _c(f, "DESCRIPTION")),
        reasonCode=pl.concat_list(_cc(pl.lit(sy.SNOMED), _blank(_c(f, "REASONCODE")))).list.drop_nulls(),
        authoredOn=_blank(pl.col("START")),
        dosageInstruction=pl.concat_list(
            pl.struct(
                timing=pl.struct(
                    repeat=pl.struct(boundsPeriod=pl.struct(start=_blank(pl.col("START")), end=stop))
                )
            )
        ),
        dispenseRequest=pl.struct(numberOfRepeatsAllowed=(dispenses - 1).clip(lower_bound=0)),
    )


def _immunizations(f: pl.DataFrame) -> pl.DataFrame:
    f = _with_id(f, "PATIENT", "ENCOUNTER", "CODE", "DATE")
    return f.select(
        id=pl.col("__id"),
        status=pl.lit("completed"),
        patient=_ref("Patient", pl.col("PATIENT")),
        encounter=_ref("Encounter", _c(f, "ENCOUNTER")),
        vaccineCode=_cc(pl.lit(sy.CVX), pl.col("CODE"), _c(f, "DESCRIPTION")),
        occurrenceDateTime=_blank(pl.col("DATE")),
        primarySource=pl.lit(True),
    )


def _allergies(f: pl.DataFrame) -> pl.DataFrame:
    f = _with_id(f, "PATIENT", "ENCOUNTER", "CODE", "START")
    stop = _blank(_c(f, "STOP"))
    status = pl.when(stop.is_null()).then(pl.lit("active")).otherwise(pl.lit("resolved"))
    return f.select(
        id=pl.col("__id"),
        patient=_ref("Patient", pl.col("PATIENT")),
        encounter=_ref("Encounter", _c(f, "ENCOUNTER")),
        code=_cc(_system(f, sy.SNOMED), pl.col("CODE"), _c(f, "DESCRIPTION")),
        clinicalStatus=_cc(
            pl.lit("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"), status
        ),
        type=_blank(_c(f, "TYPE")),
        category=pl.concat_list(_blank(_c(f, "CATEGORY"))).list.drop_nulls(),
        onsetDateTime=_blank(pl.col("START")),
    )


def _coverage(f: pl.DataFrame, payers: pl.DataFrame | None) -> pl.DataFrame:
    """payer_transitions -> Coverage; both header versions (START_YEAR/END_YEAR and START_DATE/END_DATE)."""
    start = pl.coalesce(_blank(_c(f, "START_DATE")), _blank(_c(f, "START_YEAR")) + "-01-01")
    end = pl.coalesce(_blank(_c(f, "END_DATE")), _blank(_c(f, "END_YEAR")) + "-12-31")
    if payers is not None:
        f = f.join(
            payers.select(
                pl.col("Id").alias("PAYER"),
                pl.col("NAME").alias("__payer_name"),
                _c(payers, "OWNERSHIP").alias("__payer_ownership"),
            ),
            on="PAYER",
            how="left",
        )
    ownership = pl.coalesce(_c(f, "__payer_ownership"), _c(f, "OWNERSHIP"), _c(f, "PLAN_OWNERSHIP"))
    name = _c(f, "__payer_name").str.to_lowercase()
    sop = (
        pl.when(name.str.contains("medicare"))
        .then(pl.lit("1"))
        .when(name.str.contains("medicaid"))
        .then(pl.lit("2"))
        .when(name.str.contains("no_insurance|no insurance"))
        .then(pl.lit("81"))
        .otherwise(
            ownership.str.to_lowercase().replace_strict(
                SOP_BY_OWNERSHIP, default=None, return_dtype=pl.String
            )
        )
    )
    f = _with_id(f, "PATIENT", "PAYER", "START_DATE", "START_YEAR")
    return f.select(
        id=pl.col("__id"),
        status=pl.lit("active"),
        beneficiary=_ref("Patient", pl.col("PATIENT")),
        payor=pl.concat_list(
            pl.struct(reference=pl.lit("Organization/") + pl.col("PAYER"), display=_c(f, "__payer_name"))
        ),
        type=_cc(pl.lit(sy.SOP), sop),
        subscriberId=_c(f, "MEMBERID"),
        period=pl.struct(start=start, end=end),
    )


def read_synthea(folder: Path) -> dict[str, pl.DataFrame]:
    """Raw frames per resource type from a Synthea ``csv`` folder (missing files are simply absent)."""
    folder = folder / "csv" if (folder / "csv" / "patients.csv").exists() else folder
    builders = {
        "patients": ("Patient", _patients),
        "encounters": ("Encounter", _encounters),
        "conditions": ("Condition", _conditions),
        "procedures": ("Procedure", _procedures),
        "observations": ("Observation", _observations),
        "medications": ("MedicationRequest", _medications),
        "immunizations": ("Immunization", _immunizations),
        "allergies": ("AllergyIntolerance", _allergies),
    }
    frames: dict[str, pl.DataFrame] = {}
    for name, (rtype, build) in builders.items():
        csv = _read(folder, name)
        if csv is not None and csv.height:
            frames[rtype] = conform_raw(rtype, build(csv))
    transitions = _read(folder, "payer_transitions")
    if transitions is not None and transitions.height:
        frames["Coverage"] = conform_raw("Coverage", _coverage(transitions, _read(folder, "payers")))
    return frames


def flatten_synthea(folder: Path, source: str | None = None, *, n_buckets: int = 1) -> FlattenResult:
    """A Synthea CSV folder -> canonical tables, through the same flattener as FHIR."""
    return flatten(read_synthea(folder), source or folder.name, n_buckets=n_buckets)
