"""FHIR R4 MeasureReports from evaluated subjects (or from merged counts), and the tally they are built from.

The tally is the one mergeable reduction of a run: per measure x group, the number of subjects and of each
population, for the whole group (``kind="group"``), for each stratifier stratum
(``kind="stratifier"``, key = the
stratifier id, value ``"true"``) and for each supplemental-data value (``kind="sde"``, key = sex, race,
ethnicity or payer, value = the code; ``"unknown"`` when the subject has none). Shards' tallies add up exactly
(:func:`merge_tallies`), so a report built from merged shard tallies equals one built from the whole
population.

Choices, per the FHIR R4 MeasureReport resource and the Quality Measure IG conventions:

* ``measure`` is the canonical ``{CANONICAL_BASE}/Measure/{id}|{version}``; population codes come from
  http://terminology.hl7.org/CodeSystem/measure-population; ``improvementNotation`` from
  http://terminology.hl7.org/CodeSystem/measure-improvement-notation.
* Boolean stratifiers become ``group.stratifier`` entries with two strata, ``true`` and ``false``.
* Supplemental data (summary reports) are written as group-level, stratifier-like breakdowns: one extra
  ``group.stratifier`` per SDE (code text ``sde-sex``, ``sde-race``...), each flagged with the extension
  ``{EXT}/supplemental-data`` = true, strata values coded in the SDE's code system. This is simpler to read
  than the DEQM contained-Observation form and keeps the counts per population, not just
  per initial population.
* Subject-list reports hold, per population, ``subjectResults`` referencing a contained ``List`` of
  ``Patient/{id}`` (``Encounter/{id}`` for episode-based measures) references.
* Individual reports carry per-criterion reasons as ``{EXT}/criterion-result`` extensions (complex: ``name``,
  ``kind``, ``result``; in plan order) and care gaps as contained ``DetectedIssue`` resources (code CAREGAP,
  the DEQM ``gapStatus`` extension ``open-gap``, ``detail`` naming the unmet criteria, and the due date in the
  ``{EXT}/care-gap-due-date`` extension), referenced from the report's ``{EXT}/care-gap`` extensions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import polars as pl

from engine.library import POPULATIONS, score
from engine.plan import MeasurePlan, NamedEventsIR, RetrieveIR, UnionIR
from engine.populations import CV_POPULATIONS, FHIR_CODES, PROPORTION_POPULATIONS
from engine.timeexpr import Period

CANONICAL_BASE = "https://measures-engine.dev/fhir"
EXT = f"{CANONICAL_BASE}/StructureDefinition"
POPULATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-population"
IMPROVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
GAP_STATUS_EXT = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
GAP_STATUS_SYSTEM = "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status"

TALLY_KEYS = ("measure_id", "group_id", "kind", "key", "value")
SDE_COLUMNS = {"sex": "sde_sex", "race": "sde_race", "ethnicity": "sde_ethnicity", "payer": "sde_payer"}
SDE_SYSTEMS = {
    "sex": "http://hl7.org/fhir/administrative-gender",
    "race": "urn:oid:2.16.840.1.113883.6.238",
    "ethnicity": "urn:oid:2.16.840.1.113883.6.238",
    "payer": "urn:oid:2.16.840.1.113883.3.221.5",
}
UNKNOWN = "unknown"

# ------------------------------------------------------------------------------------------------- tally


def _tally_schema() -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {k: pl.String() for k in TALLY_KEYS}
    schema["subjects"] = pl.Int64()
    return schema | {p: pl.Int64() for p in POPULATIONS}


def empty_tally() -> pl.DataFrame:
    return pl.DataFrame(schema=_tally_schema())


def tally(subjects: pl.DataFrame) -> pl.DataFrame:
    """Subjects and population counts per measure x group x (whole group | stratum | SDE value)."""
    if subjects.height == 0 or "measure_id" not in subjects.columns:
        return empty_tally()
    pops = [p for p in POPULATIONS if p in subjects.columns]
    base = subjects.with_columns(pl.col(p).fill_null(False) for p in pops)
    aggs = [
        pl.len().cast(pl.Int64).alias("subjects"),
        *[pl.col(p).cast(pl.Int64).sum().alias(p) for p in pops],
    ]
    frames = [
        base.group_by("measure_id", "group_id")
        .agg(aggs)
        .with_columns(pl.lit("group").alias("kind"), pl.lit("").alias("key"), pl.lit("").alias("value"))
    ]
    if "strata" in base.columns:
        exploded = base.explode("strata").filter(pl.col("strata").is_not_null())
        frames.append(
            exploded.group_by("measure_id", "group_id", pl.col("strata").alias("key"))
            .agg(aggs)
            .with_columns(pl.lit("stratifier").alias("kind"), pl.lit("true").alias("value"))
        )
    for name, column in SDE_COLUMNS.items():
        if column not in base.columns:
            continue
        values = base
        if isinstance(base.schema[column], pl.List):
            values = base.with_columns(pl.col(column).list.unique()).explode(column)
        values = values.with_columns(pl.col(column).cast(pl.String).fill_null(UNKNOWN).alias("value"))
        frames.append(
            values.group_by("measure_id", "group_id", "value")
            .agg(aggs)
            .with_columns(pl.lit("sde").alias("kind"), pl.lit(name).alias("key"))
        )
    return _normalise(pl.concat(frames, how="diagonal_relaxed"))


def _normalise(frame: pl.DataFrame) -> pl.DataFrame:
    schema = _tally_schema()
    missing = [
        pl.lit(None if c == "subjects" else 0, dtype=t).alias(c)
        for c, t in schema.items()
        if c not in frame.columns
    ]
    frame = frame.with_columns(missing).with_columns(pl.col(p).fill_null(0) for p in POPULATIONS)
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()]).sort(list(TALLY_KEYS))


def merge_tallies(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """Exact sum of shard tallies (the reduce step)."""
    parts = [f for f in frames if f.height]
    if not parts:
        return empty_tally()
    merged = pl.concat([_normalise(f) for f in parts], how="vertical")
    sums = [pl.col("subjects").sum().alias("subjects"), *[pl.col(p).sum().alias(p) for p in POPULATIONS]]
    return _normalise(merged.group_by(list(TALLY_KEYS)).agg(sums))


def tally_from_counts(counts: pl.DataFrame) -> pl.DataFrame:
    """A tally from a ``count_frame``/``summarize`` frame (no SDEs, no subject totals)."""
    frame = counts.with_columns(
        pl.when(pl.col("stratum").is_null())
        .then(pl.lit("group"))
        .otherwise(pl.lit("stratifier"))
        .alias("kind"),
        pl.col("stratum").fill_null("").alias("key"),
        pl.when(pl.col("stratum").is_null()).then(pl.lit("")).otherwise(pl.lit("true")).alias("value"),
    ).drop("stratum", "score", strict=False)
    return _normalise(frame)


def tally_from_summary(document: Mapping[str, Any]) -> pl.DataFrame:
    """A tally from a batch ``summary.json`` (populations keyed by FHIR code; no SDEs, no subject totals)."""
    by_code = {code: name for name, code in FHIR_CODES.items()}
    rows: list[dict[str, Any]] = []
    for measure_id, measure in document.get("measures", {}).items():
        for group_id, group in measure.get("groups", {}).items():
            entries = [
                ("group", "", "", group),
                *(("stratifier", s, "true", e) for s, e in group.get("strata", {}).items()),
            ]
            for kind, key, value, entry in entries:
                row: dict[str, Any] = {
                    "measure_id": measure_id,
                    "group_id": group_id,
                    "kind": kind,
                    "key": key,
                    "value": value,
                    "subjects": None,
                }
                for code, count in entry.get("populations", {}).items():
                    if code in by_code:
                        row[by_code[code]] = int(count)
                rows.append(row)
    if not rows:
        return empty_tally()
    return _normalise(pl.DataFrame(rows, infer_schema_length=None))


def as_tally(data: pl.DataFrame | Mapping[str, Any]) -> pl.DataFrame:
    """Accept subjects, a tally, a count frame or a summary.json document."""
    if isinstance(data, Mapping):
        return tally_from_summary(data)
    if "kind" in data.columns and "key" in data.columns:
        return _normalise(data)
    if "stratum" in data.columns:
        return tally_from_counts(data)
    return tally(data)


# ------------------------------------------------------------------------------------------------ scores


def measure_score(scoring: str, counts: Mapping[str, int]) -> float | None:
    """The group's score: proportion (exclusions/exceptions removed), ratio; None for cohort and continuous
    variable (whose score is an aggregate of observations, not a count) and on a zero denominator."""
    if scoring == "proportion":
        return score(dict(counts))
    if scoring == "ratio":
        den = counts.get("denominator", 0) - counts.get("denominator_exclusion", 0)
        num = counts.get("numerator", 0) - counts.get("numerator_exclusion", 0)
        return None if den <= 0 else num / den
    return None


def group_populations(plan: MeasurePlan, group_id: str) -> list[str]:
    """The populations the group reports, in cascade order (those of the scoring type, plus any defined)."""
    group = next((g for g in plan.groups if g.id == group_id), None)
    defined = {name for name, _ in group.populations} if group else set()
    wanted: tuple[str, ...]
    if plan.scoring == "cohort":
        wanted = ("initial_population",)
    elif plan.scoring == "continuous_variable":
        wanted = CV_POPULATIONS
    elif plan.scoring == "ratio":  # a ratio has no denominator exception
        wanted = tuple(p for p in PROPORTION_POPULATIONS if p != "denominator_exception")
    else:
        wanted = PROPORTION_POPULATIONS
    core = {"initial_population", "denominator", "numerator", "measure_population"}
    return [p for p in wanted if p in core or p in defined]


# ------------------------------------------------------------------------------------------ FHIR helpers


def _concept(code: str, system: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _population_code(population: str) -> dict[str, Any]:
    return _concept(FHIR_CODES[population], POPULATION_SYSTEM)


def _period(plan: MeasurePlan, period: Period | tuple[date, date] | None) -> dict[str, str]:
    if period is None:
        start, end = plan.period_start, plan.period_end
    elif isinstance(period, Period):
        start, end = period.start, period.end
    else:
        start, end = period
    return {"start": start.isoformat(), "end": end.isoformat()}


def canonical(plan: MeasurePlan) -> str:
    return f"{CANONICAL_BASE}/Measure/{plan.measure_id}|{plan.version}"


def _base(
    plan: MeasurePlan, kind: str, period: Period | tuple[date, date] | None, when: datetime | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": kind,
        "measure": canonical(plan),
        "period": _period(plan, period),
        "improvementNotation": _concept(plan.improvement, IMPROVEMENT_SYSTEM),
    }
    if when is not None:
        doc["date"] = when.isoformat()
    return doc


def _score_entry(value: float | None) -> dict[str, Any]:
    return {} if value is None else {"measureScore": {"value": round(value, 10)}}


def _counts(row: Mapping[str, Any] | None, pops: Sequence[str]) -> dict[str, int]:
    return {p: int((row or {}).get(p) or 0) for p in pops}


def _populations(counts: Mapping[str, int], pops: Sequence[str]) -> list[dict[str, Any]]:
    return [{"code": _population_code(p), "count": counts[p]} for p in pops]


def _sde_value(name: str, value: str) -> dict[str, Any]:
    if value == UNKNOWN:
        return {"text": UNKNOWN}
    return _concept(value, SDE_SYSTEMS[name])


# ------------------------------------------------------------------------------------------------ summary


def summary_report(
    subjects_or_counts: pl.DataFrame | Mapping[str, Any],
    plan: MeasurePlan,
    period: Period | tuple[date, date] | None = None,
    *,
    when: datetime | None = None,
    supplemental: bool = True,
) -> dict[str, Any]:
    """A ``summary`` MeasureReport for one measure (``subjects_or_counts``: subjects, a tally, a
    count frame or
    a summary.json document; rows of other measures are ignored)."""
    frame = as_tally(subjects_or_counts).filter(pl.col("measure_id") == plan.measure_id)
    rows = {(r["group_id"], r["kind"], r["key"], r["value"]): r for r in frame.iter_rows(named=True)}
    doc = _base(plan, "summary", period, when)
    groups = []
    for group in plan.groups:
        pops = group_populations(plan, group.id)
        whole = _counts(rows.get((group.id, "group", "", "")), pops)
        entry: dict[str, Any] = {"id": group.id, "code": {"text": group.id}}
        entry["population"] = _populations(whole, pops)
        entry |= _score_entry(measure_score(plan.scoring, whole))
        stratifiers = []
        for sid, _ in group.stratifiers:
            yes = _counts(rows.get((group.id, "stratifier", sid, "true")), pops)
            no = {p: whole[p] - yes[p] for p in pops}
            strata = [
                {
                    "value": {"text": label},
                    "population": _populations(c, pops),
                    **_score_entry(measure_score(plan.scoring, c)),
                }
                for label, c in (("true", yes), ("false", no))
            ]
            stratifiers.append({"code": [{"text": sid}], "stratum": strata})
        if supplemental:
            for name in plan.supplemental:
                values = sorted(
                    (k[3], r) for k, r in rows.items() if k[0] == group.id and k[1] == "sde" and k[2] == name
                )
                if not values:
                    continue
                strata = []
                for value, row in values:
                    c = _counts(row, pops)
                    strata.append(
                        {
                            "value": _sde_value(name, value),
                            "population": _populations(c, pops),
                            **_score_entry(measure_score(plan.scoring, c)),
                        }
                    )
                stratifiers.append(
                    {
                        "extension": [{"url": f"{EXT}/supplemental-data", "valueBoolean": True}],
                        "code": [{"text": f"sde-{name}"}],
                        "stratum": strata,
                    }
                )
        if stratifiers:
            entry["stratifier"] = stratifiers
        groups.append(entry)
    doc["group"] = groups
    return doc


# ------------------------------------------------------------------------------------------- subject list


def _subject_reference(row: Mapping[str, Any]) -> str:
    episode = row.get("episode_id")
    return f"Encounter/{episode}" if episode else f"Patient/{row['patient_id']}"


def subject_list_report(
    subjects: pl.DataFrame,
    plan: MeasurePlan,
    period: Period | tuple[date, date] | None = None,
    *,
    when: datetime | None = None,
) -> dict[str, Any]:
    """A ``subject-list`` MeasureReport: the summary counts, and per population a contained ``List`` of the
    subjects in it, referenced from ``population.subjectResults``."""
    doc = summary_report(subjects, plan, period, when=when, supplemental=False)
    doc["type"] = "subject-list"
    mine = subjects.filter(pl.col("measure_id") == plan.measure_id) if subjects.height else subjects
    contained: list[dict[str, Any]] = []
    for entry in doc["group"]:
        rows = mine.filter(pl.col("group_id") == entry["id"]) if mine.height else mine
        for population in entry["population"]:
            name = _population_name(population)
            if name not in rows.columns:
                continue
            members = rows.filter(pl.col(name).fill_null(False))
            list_id = f"{entry['id']}-{FHIR_CODES[name]}"
            cols = [c for c in ("patient_id", "episode_id") if c in members.columns]
            refs = sorted({_subject_reference(r) for r in members.select(cols).iter_rows(named=True)})
            resource: dict[str, Any] = {
                "resourceType": "List",
                "id": list_id,
                "status": "current",
                "mode": "snapshot",
                "title": f"{entry['id']} {FHIR_CODES[name]}",
            }
            if refs:
                resource["entry"] = [{"item": {"reference": ref}} for ref in refs]
            contained.append(resource)
            population["subjectResults"] = {"reference": f"#{list_id}"}
    if contained:
        doc["contained"] = contained
    return doc


def _population_name(population: Mapping[str, Any]) -> str:
    code = population["code"]["coding"][0]["code"]
    return {v: k for k, v in FHIR_CODES.items()}[code]


# ------------------------------------------------------------------------------------------- individual


def define_kind(node: object) -> str:
    return "event set" if isinstance(node, (RetrieveIR, UnionIR, NamedEventsIR)) else "condition"


def individual_report(
    rows: pl.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]],
    plan: MeasurePlan,
    period: Period | tuple[date, date] | None = None,
    patient_id: str | None = None,
    *,
    when: datetime | None = None,
    gaps: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """An ``individual`` MeasureReport for one patient of one measure.

    ``rows``: that patient's subject rows (one per group, or per episode), as a frame or dicts; rows of other
    patients or measures are ignored. Per-criterion reasons come from ``true_defines`` and ``plan.defines``;
    care gaps from ``gaps`` (a :func:`engine.gaps.care_gaps` frame) or computed from the rows.
    """
    frame = (
        rows
        if isinstance(rows, pl.DataFrame)
        else pl.DataFrame([rows] if isinstance(rows, Mapping) else list(rows), infer_schema_length=None)
    )
    if frame.height and "measure_id" in frame.columns:
        frame = frame.filter(pl.col("measure_id") == plan.measure_id)
    if patient_id is None:
        if not frame.height:
            raise ValueError("individual_report needs a patient_id or at least one subject row")
        patient_id = str(frame["patient_id"][0])
    frame = frame.filter(pl.col("patient_id") == patient_id) if frame.height else frame
    doc = _base(plan, "individual", period, when)
    doc["subject"] = {"reference": f"Patient/{patient_id}"}
    groups = []
    for group in plan.groups:
        pops = group_populations(plan, group.id)
        mine = frame.filter(pl.col("group_id") == group.id) if frame.height else frame
        counts = {p: int(mine[p].fill_null(False).sum()) if p in mine.columns else 0 for p in pops}
        entry: dict[str, Any] = {
            "id": group.id,
            "code": {"text": group.id},
            "population": _populations(counts, pops),
        }
        if plan.basis == "patient":
            entry |= _score_entry(measure_score(plan.scoring, counts))
        groups.append(entry)
    doc["group"] = groups
    true_defines: set[str] = set()
    if frame.height and "true_defines" in frame.columns:
        for values in frame["true_defines"].to_list():
            true_defines.update(values or [])
    extensions: list[dict[str, Any]] = [
        {
            "url": f"{EXT}/criterion-result",
            "extension": [
                {"url": "name", "valueString": name},
                {"url": "kind", "valueString": define_kind(node)},
                {"url": "result", "valueBoolean": name in true_defines},
            ],
        }
        for name, node in plan.defines
    ]
    from engine.gaps import gaps_for_rows  # local: gaps imports this module's helpers

    gap_frame = gaps if gaps is not None else gaps_for_rows(frame, plan, period)
    if gap_frame.height:
        gap_frame = gap_frame.filter(
            (pl.col("measure_id") == plan.measure_id) & (pl.col("patient_id") == patient_id)
        )
    contained = []
    for i, gap in enumerate(gap_frame.iter_rows(named=True)):
        issue_id = f"gap-{gap['group_id']}-{i}"
        criteria = list(gap.get("criteria") or [])
        verb = "in the numerator by" if gap.get("improvement") == "decrease" else "not met"
        contained.append(
            {
                "resourceType": "DetectedIssue",
                "id": issue_id,
                "extension": [
                    {"url": GAP_STATUS_EXT, "valueCodeableConcept": _concept("open-gap", GAP_STATUS_SYSTEM)},
                    {"url": f"{EXT}/care-gap-due-date", "valueDate": gap["due_date"].isoformat()},
                ],
                "status": "final",
                "code": _concept("CAREGAP", "http://terminology.hl7.org/CodeSystem/v3-ActCode", "Care Gaps"),
                "patient": {"reference": f"Patient/{patient_id}"},
                "identifiedPeriod": doc["period"],
                "detail": f"{plan.measure_id} {gap['group_id']}: {verb}: "
                + (", ".join(criteria) or "numerator"),
            }
        )
        extensions.append({"url": f"{EXT}/care-gap", "valueReference": {"reference": f"#{issue_id}"}})
    doc["extension"] = extensions
    if contained:
        doc["contained"] = contained
    return doc
