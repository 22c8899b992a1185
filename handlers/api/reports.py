"""FHIR resources the API returns: Measure metadata and individual MeasureReports from evaluated subjects.

Measure metadata is built here. Reports come from ``engine/report.py`` (``individual_report``) when it is
importable (see handlers/api/service.py); otherwise this module builds a minimal individual MeasureReport
itself: one group per measure group with every population of the measure's scoring type (``count`` 0/1, or the
number of episodes), the strata the patient falls in, ``evaluatedResource`` (every resource of the patient
that was read), per-definition results (``true_defines``) as extensions, and a care-gap flag. The extension
URLs are this project's, under :data:`EXT`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from engine.plan import MeasurePlan
from engine.populations import CV_POPULATIONS, FHIR_CODES, PROPORTION_POPULATIONS

EXT = "https://measures-engine.dev/fhir/StructureDefinition"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
SCORING_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-scoring"
IMPROVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
SCORING_CODES = {
    "proportion": "proportion",
    "ratio": "ratio",
    "cohort": "cohort",
    "continuous_variable": "continuous-variable",
}

# canonical table -> FHIR resource type, for evaluatedResource
RESOURCE_TYPES = {
    "encounter": "Encounter",
    "condition": "Condition",
    "procedure": "Procedure",
    "observation": "Observation",
    "medication_request": "MedicationRequest",
    "medication_dispense": "MedicationDispense",
    "medication_administration": "MedicationAdministration",
    "immunization": "Immunization",
    "allergy_intolerance": "AllergyIntolerance",
    "service_request": "ServiceRequest",
    "device_request": "DeviceRequest",
    "diagnostic_report": "DiagnosticReport",
    "coverage": "Coverage",
}


def populations_of(plan: MeasurePlan) -> tuple[str, ...]:
    """The populations a report of ``plan`` lists (those of its scoring type)."""
    if plan.scoring == "cohort":
        return ("initial_population",)
    if plan.scoring == "continuous_variable":
        return CV_POPULATIONS
    return PROPORTION_POPULATIONS


def _code(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _population_code(name: str) -> dict[str, Any]:
    return _code(POPULATION_SYSTEM, FHIR_CODES[name])


def measure_resource(plan: MeasurePlan) -> dict[str, Any]:
    """Measure-shaped metadata of a compiled plan (no logic: the criteria name their definitions)."""
    return {
        "resourceType": "Measure",
        "id": plan.measure_id,
        "url": canonical(plan),
        "version": plan.version,
        "name": plan.measure_id,
        "title": plan.title,
        "status": "active",
        "description": plan.spec,
        "scoring": _code(SCORING_SYSTEM, SCORING_CODES.get(plan.scoring, plan.scoring)),
        "improvementNotation": _code(IMPROVEMENT_SYSTEM, plan.improvement),
        "effectivePeriod": {"start": plan.period_start.isoformat(), "end": plan.period_end.isoformat()},
        "extension": [
            {"url": f"{EXT}/population-basis", "valueCode": plan.basis},
            {"url": f"{EXT}/plan-hash", "valueString": plan.content_hash},
        ],
        "group": [
            {
                "id": group.id,
                "population": [
                    {
                        "code": _population_code(name),
                        "criteria": {"language": "text/x-measures-engine", "expression": name},
                    }
                    for name, _ in group.populations
                    if name in FHIR_CODES
                ],
                "stratifier": [
                    {
                        "code": {"text": name},
                        "criteria": {"language": "text/x-measures-engine", "expression": name},
                    }
                    for name, _ in group.stratifiers
                ],
            }
            for group in plan.groups
        ],
        "supplementalData": [{"code": {"text": name}} for name in plan.supplemental],
    }


def canonical(plan: MeasurePlan) -> str:
    return f"{EXT.rsplit('/', 1)[0]}/Measure/{plan.measure_id}"


def evaluated_resources(tables: Mapping[str, pl.DataFrame], patient_id: str) -> list[dict[str, str]]:
    """References to every resource of the patient in the evaluated frames (Patient first, then by type)."""
    refs = [{"reference": f"Patient/{patient_id}"}]
    for table, rtype in sorted(RESOURCE_TYPES.items(), key=lambda kv: kv[1]):
        frame = tables.get(table)
        if frame is None or not frame.height or "id" not in frame.columns:
            continue
        ids = frame.filter(pl.col("patient_id") == patient_id)["id"].drop_nulls().unique().sort()
        refs.extend({"reference": f"{rtype}/{i}"} for i in ids.to_list())
    return refs


def _count(rows: Sequence[Mapping[str, Any]], name: str) -> int:
    return sum(1 for r in rows if r.get(name))


def care_gap(plan: MeasurePlan, counts: Mapping[str, int]) -> bool | None:
    """Whether the patient has an open care gap: in the denominator, not excluded or excepted, and on the
    wrong side of the numerator for the improvement notation. None for scorings without a numerator."""
    if plan.scoring not in ("proportion", "ratio"):
        return None
    eligible = (
        counts.get("denominator", 0) > 0
        and not counts.get("denominator_exclusion", 0)
        and not counts.get("denominator_exception", 0)
    )
    if not eligible:
        return False
    met = counts.get("numerator", 0) > 0 and not counts.get("numerator_exclusion", 0)
    return met if plan.improvement == "decrease" else not met


def individual_report(
    plan: MeasurePlan,
    subjects: pl.DataFrame,
    patient_id: str,
    period: tuple[date, date],
    evaluated: Iterable[dict[str, str]] = (),
    *,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """The individual MeasureReport of ``patient_id`` for ``plan`` from ``evaluate(...).subjects``."""
    mine = subjects.filter((pl.col("measure_id") == plan.measure_id) & (pl.col("patient_id") == patient_id))
    rows = mine.to_dicts()
    pops = populations_of(plan)
    groups = []
    true_defines: set[str] = set()
    for group in plan.groups:
        group_rows = [r for r in rows if r.get("group_id") == group.id]
        for r in group_rows:
            true_defines.update(r.get("true_defines") or ())
        counts = {name: _count(group_rows, name) for name in pops}
        entry: dict[str, Any] = {
            "id": group.id,
            "population": [{"code": _population_code(n), "count": counts[n]} for n in pops],
        }
        strata = sorted({s for r in group_rows for s in (r.get("strata") or ())})
        if group.stratifiers:
            entry["stratifier"] = [
                {
                    "code": [{"text": name}],
                    "stratum": [
                        {
                            "value": {"text": "true"},
                            "population": [{"code": _population_code(n), "count": counts[n]} for n in pops],
                        }
                    ],
                }
                for name, _ in group.stratifiers
                if name in strata
            ]
        gap = care_gap(plan, counts)
        if gap is not None:
            entry["extension"] = [{"url": f"{EXT}/care-gap", "valueBoolean": gap}]
        groups.append(entry)
    reasons = [
        {
            "url": f"{EXT}/define-result",
            "extension": [
                {"url": "define", "valueString": name},
                {"url": "result", "valueBoolean": name in true_defines},
            ],
        }
        for name, _ in plan.defines
    ]
    when = (generated_at or datetime.now(UTC)).isoformat(timespec="seconds")
    return {
        "resourceType": "MeasureReport",
        "id": f"{plan.measure_id}-{patient_id}",
        "status": "complete",
        "type": "individual",
        "measure": f"{canonical(plan)}|{plan.version}",
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": when,
        "period": {"start": period[0].isoformat(), "end": period[1].isoformat()},
        "improvementNotation": _code(IMPROVEMENT_SYSTEM, plan.improvement),
        "group": groups,
        "evaluatedResource": list(evaluated),
        "extension": reasons,
    }


def report_bundle(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "total": len(reports),
        "entry": [{"fullUrl": f"MeasureReport/{r['id']}", "resource": r} for r in reports],
    }


def population_counts(report: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """group id -> population code -> count, read back from a MeasureReport (tests, clients)."""
    return {
        g["id"]: {p["code"]["coding"][0]["code"]: p["count"] for p in g.get("population", [])}
        for g in report.get("group", [])
    }
