"""Test decks: patients with expected population results, run through a compiled measure.

A deck is either a folder of hand-written YAML cases or an official eCQM test folder (``<M>/tests/*.json``
Bundles, each with its expected ``MeasureReport``). :func:`load_deck` reads both into :class:`Case` objects;
:func:`run_deck` evaluates them and returns expected vs actual per case, group and population. It backs the
``measures test`` command and the conformance tests.

Hand-written case format (one patient per file; the file stem is the case id and the patient id)::

    description: woman 60 with a mammogram in Nov two years before the period -> numerator
    period: {start: 2025-01-01, end: 2025-12-31}    # optional: the measure's default period
    patient: {birth_date: 1965-03-01, gender: female}  # a row of the patient table
    tables:                                            # canonical tables (datasets/schema.py), rows as maps
      encounter:
        - {status: finished, type: [{system: "http://www.ama-assn.org/go/cpt", code: "99213"}],
           start: 2025-03-01T10:00:00Z, end: 2025-03-01T10:30:00Z}
      observation:
        - id: bp1
          status: final
          code: [{system: "http://loinc.org", code: 85354-9}]
          start: 2025-06-01T09:00:00Z
          components:                                  # sugar: rows of observation_component
            - {code: [{system: "http://loinc.org", code: 8480-6}], value_quantity: 120, value_unit: "mm[Hg]"}
    expect: {initial_population: true, denominator: true, denominator_exclusion: false, numerator: true}
    group: group-1                                     # optional: the group ``expect`` is about (the first)
    observations: [1, 0]                               # optional: the group's measure-observation values

Rows are converted to canonical frames: missing columns are nulls, ``patient_id`` is the case id, ``id``
defaults to ``<table>-<n>`` (ids and references are scoped to the case as ``<case>/<id>``); timestamps are
parsed as UTC instants (``tz_offset_min`` is taken from the written offset of ``start``/``end`` unless
given); a date-only ``end`` is the last instant of that day; codes are lists of ``{system, code, display}``.
``expect`` values are booleans (patient basis) or counts (episodes). ``observations`` are the values of the group's
measure observations over its subjects (compared as a sorted list: episodes have no order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from datasets.schema import CODES, IDS, TABLES, conform, schema_of

POPULATIONS = (
    "initial_population", "denominator", "denominator_exclusion", "denominator_exception", "numerator",
    "numerator_exclusion", "measure_population", "measure_population_exclusion",
)  # fmt: skip

# FHIR measure-population codes (MeasureReport.group.population.code) -> population column names.
FHIR_POPULATION = {name.replace("_", "-"): name for name in POPULATIONS}


class DeckError(ValueError):
    """A case file that cannot be read: names the file and what is wrong."""


@dataclass(frozen=True)
class Case:
    """One test patient: its canonical tables, the period to evaluate, and the expected population counts.

    ``expect`` maps a group (its index in the measure's groups) to population -> expected count.
    """

    id: str
    description: str
    period: tuple[date, date] | None
    tables: Mapping[str, pl.DataFrame]
    expect: Mapping[int | str, Mapping[str, int]]
    patient_ids: tuple[str, ...]
    origin: str = ""
    notes: str = ""  # e.g. records the flattener quarantined
    # group -> the values of its measure observations (one per observed subject), where the source states them
    observations: Mapping[int | str, tuple[float, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One expected number: a population count, or (population ``observations``) the sorted observation values."""

    group_id: str
    population: str
    expected: int | tuple[float, ...]
    actual: int | tuple[float, ...]

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class CaseResult:
    case: Case
    checks: tuple[Check, ...]
    error: str | None = None  # the case could not be evaluated (e.g. a rejected record)

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    @property
    def mismatches(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def describe(self) -> str:
        if self.error:
            return f"{self.case.id}: {self.error}"
        wrong = ", ".join(
            f"{c.group_id}.{c.population} expected {c.expected} got {c.actual}" for c in self.mismatches
        )
        return f"{self.case.id} ({self.case.description}): {wrong or 'ok'}"


# ----------------------------------------------------------------------------------------- hand-written cases


def _instant(value: Any, *, end: bool) -> tuple[datetime | None, int | None, bool]:
    """(UTC instant, written offset in minutes, date-only?) of a YAML scalar."""
    if value is None:
        return None, None, False
    if isinstance(value, str):
        text = value.strip()
        try:
            if "T" in text:
                value = datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                value = date.fromisoformat(text)
        except ValueError as exc:
            raise DeckError(f"not a date or date-time: {value!r}") from exc
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC), None, False
        offset = value.utcoffset()
        minutes = int(offset.total_seconds() // 60) if offset is not None else None
        return value.astimezone(UTC), minutes, False
    if isinstance(value, date):
        instant = datetime.combine(value, time.min, UTC)
        if end:
            instant += timedelta(days=1) - timedelta(microseconds=1)
        return instant, None, True
    raise DeckError(f"not a date or date-time: {value!r}")


def _codes(value: Any) -> list[dict[str, str | None]] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, Mapping) or "code" not in item:
            raise DeckError(f"a coding needs system and code: {item!r}")
        system = item.get("system")
        out.append(
            {
                "system": None if system is None else str(system),
                "code": str(item["code"]),
                "display": item.get("display"),
            }
        )
    return out


def _cell(dtype: pl.DataType, value: Any, column: str) -> Any:
    if value is None:
        return None
    if dtype == CODES:
        return _codes(value)
    if dtype == IDS:
        return [str(v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(dtype, pl.Datetime):
        return _instant(value, end=column.endswith("end"))[0]
    if isinstance(dtype, pl.Date):
        return value if isinstance(value, date) else date.fromisoformat(str(value))
    if dtype == pl.String:
        return str(value)
    if dtype.is_float():
        return float(value)
    if dtype.is_integer():
        return int(value)
    return value


def _frame(table: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    schema = schema_of(table)
    records = []
    for row in rows:
        unknown = sorted(set(row) - set(schema))
        if unknown:
            raise DeckError(f"table {table}: unknown column(s) {', '.join(unknown)}")
        records.append({column: _cell(dtype, row.get(column), column) for column, dtype in schema.items()})
    return conform(table, pl.DataFrame(records, schema=schema))


_ID_COLUMNS = frozenset(
    {
        "id",
        "encounter_id",
        "observation_id",
        "request_id",
        "part_of_id",
        "medication_id",
        "has_member_ids",
        "derived_from_ids",
        "reason_reference_ids",
    }
)
# list columns whose entries reference rows by id: (column, the id field of an entry)
_LISTED_IDS = {"diagnoses": "condition_id", "procedures": "procedure_id", "locations": "location_id"}


def _rows(table: str, rows: Any, patient_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Canonical rows of ``table`` and, for observations, the component rows their ``components`` imply."""
    if not isinstance(rows, list):
        raise DeckError(f"table {table}: expected a list of rows")
    out: list[dict[str, Any]] = []
    components: list[dict[str, Any]] = []
    for n, raw in enumerate(rows, 1):
        if not isinstance(raw, Mapping):
            raise DeckError(f"table {table} row {n}: expected a mapping")
        row = dict(raw)
        row.setdefault("id", f"{table}-{n}")
        # ids are global in FHIR (the engine links rows by id alone): scope the case's ids to the case
        for key in _ID_COLUMNS & set(row):
            value = row[key]
            if isinstance(value, list):
                row[key] = [f"{patient_id}/{v}" for v in value]
            elif value is not None:
                row[key] = f"{patient_id}/{value}"
        for (
            key,
            id_field,
        ) in _LISTED_IDS.items():  # references inside an encounter's lists, e.g. its diagnoses
            if isinstance(row.get(key), list):
                row[key] = [
                    {**entry, id_field: f"{patient_id}/{entry[id_field]}"}
                    if isinstance(entry, Mapping) and entry.get(id_field) is not None
                    else entry
                    for entry in row[key]
                ]
        row["patient_id"] = patient_id
        row.setdefault("source", "testdeck")
        row.setdefault("bucket", 0)
        if "start" in TABLES[table] and "tz_offset_min" not in row:
            for key in ("start", "end"):
                _, offset, _ = _instant(row.get(key), end=key == "end")
                if offset is not None:
                    row["tz_offset_min"] = offset
                    break
        for key in ("start", "end"):
            if key in row and f"{key}_prec" not in row and _instant(row[key], end=key == "end")[2]:
                row[f"{key}_prec"] = 3  # a date-only value has day precision
        for ix, comp in enumerate(row.pop("components", None) or []):
            if table != "observation":
                raise DeckError(f"table {table} row {n}: components belong to observations")
            comp = dict(comp)
            comp.update(
                patient_id=patient_id,
                observation_id=row["id"],
                component_ix=ix,
                source=row["source"],
                bucket=0,
                start=row.get("start"),
            )
            components.append(comp)
        out.append(row)
    return out, components


def load_case(path: Path) -> Case:
    """One hand-written YAML case (format: the module docstring)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DeckError(f"{path}: YAML syntax: {exc}") from None
    if not isinstance(data, Mapping):
        raise DeckError(f"{path}: expected a mapping")
    unknown = sorted(
        set(data) - {"description", "period", "patient", "tables", "expect", "group", "observations"}
    )
    if unknown:
        raise DeckError(f"{path}: unknown key(s) {', '.join(unknown)}")
    case_id = path.stem
    try:
        patient = dict(data.get("patient") or {})
        patient["patient_id"] = case_id
        patient.setdefault("source", "testdeck")
        patient.setdefault("bucket", 0)
        tables: dict[str, pl.DataFrame] = {"patient": _frame("patient", [patient])}
        components: list[dict[str, Any]] = []
        for table, rows in (data.get("tables") or {}).items():
            if table not in TABLES or table == "patient":
                raise DeckError(f"unknown table {table!r}")
            canonical, comps = _rows(table, rows, case_id)
            components += comps
            tables[table] = _frame(table, canonical)
        if components:
            tables["observation_component"] = pl.concat(
                [
                    tables.get("observation_component", _frame("observation_component", [])),
                    _frame("observation_component", components),
                ]
            )
        expect = {}
        for name, value in (data.get("expect") or {}).items():
            if name not in POPULATIONS:
                raise DeckError(f"expect: unknown population {name!r}")
            expect[name] = int(value)
        observations = data.get("observations")
        if observations is not None and not isinstance(observations, list):
            raise DeckError("observations: expected a list of numbers")
        period = data.get("period")
        span = None
        if period is not None:
            span = (_cell(pl.Date(), period["start"], "start"), _cell(pl.Date(), period["end"], "end"))
    except DeckError as exc:
        raise DeckError(f"{path}: {exc}") from None
    return Case(
        case_id,
        str(data.get("description", "")),
        span,
        tables,
        {data.get("group", 0): expect},
        (case_id,),
        str(path),
        observations=(
            {} if observations is None else {data.get("group", 0): _observed(float(v) for v in observations)}
        ),
    )


# ------------------------------------------------------------------------------------------ official cases


def _titles(folder: Path) -> dict[str, str]:
    names = folder / "testcase-names.txt"
    if not names.is_file():
        return {}
    out = {}
    for line in names.read_text(encoding="utf-8").splitlines():
        uuid, sep, title = line.partition(" = ")
        if sep:
            out[uuid.strip()] = title.strip()
    return out


def load_official_case(path: Path, title: str = "") -> Case:
    """One official test Bundle: flattened canonical tables and the expected MeasureReport counts."""
    from datasets.fhir import flatten_bundle

    bundle = json.loads(path.read_text(encoding="utf-8"))
    resources = [e.get("resource", {}) for e in bundle.get("entry", [])]
    reports = [r for r in resources if r.get("resourceType") == "MeasureReport"]
    if len(reports) != 1:
        raise DeckError(f"{path}: expected one MeasureReport, found {len(reports)}")
    report = reports[0]
    expect: dict[int | str, dict[str, int]] = {}
    observations: dict[int | str, tuple[float, ...]] = {}
    for gi, group in enumerate(report.get("group", [])):
        counts = {}
        values = []
        for pop in group.get("population", []):
            code = pop["code"]["coding"][0]["code"]
            if code in FHIR_POPULATION:
                counts[FHIR_POPULATION[code]] = int(pop.get("count", 0))
            elif code.endswith("-observation"):
                # MADiE test cases state each observed episode's value as the `count` of one
                # measure-population-observation (numerator-/denominator-observation) entry
                values.append(float(pop.get("count", 0)))
        expect[gi] = counts
        if values:
            observations[gi] = _observed(values)
    period = report.get("period", {})
    span = (date.fromisoformat(period["start"][:10]), date.fromisoformat(period["end"][:10]))
    bundle = {
        **bundle,
        "entry": [
            e for e in bundle.get("entry", []) if e.get("resource", {}).get("resourceType") != "MeasureReport"
        ],
    }
    flat = flatten_bundle(bundle, path.stem)
    tables = {t: f for t, f in flat.tables.items() if f.height}
    patients = tuple(tables["patient"]["patient_id"].to_list()) if "patient" in tables else ()
    description = title or next(
        (
            e.get("valueMarkdown", "")
            for e in report.get("extension", [])
            if e.get("url", "").endswith("cqfm-testCaseDescription")
        ),
        "",
    )
    notes = "; ".join(
        f"rejected {r['resource_type']}/{r['id']}: {r['reason']}" for r in flat.rejected.iter_rows(named=True)
    )
    return Case(path.stem, description, span, tables, expect, patients, str(path), notes, observations)


def _observed(values: Iterable[float]) -> tuple[float, ...]:
    """Observation values as compared: rounded (decimal results), sorted (episodes have no order)."""
    return tuple(sorted(round(v, 6) for v in values))


def load_official(folder: Path) -> list[Case]:
    """Every official test case of a measure folder (``<M>/tests/*.json``), titled from testcase-names.txt."""
    titles = _titles(folder)
    return [load_official_case(p, titles.get(p.stem, "")) for p in sorted((folder / "tests").glob("*.json"))]


def official_valuesets(folder: Path) -> tuple[Any, list[str]]:
    """The measure bundle's value sets as a ValueSetLibrary, and the problems found loading them."""
    from definitions import ValueSetLibrary, load_fhir_valuesets

    sets, problems = load_fhir_valuesets(folder / "measure-bundle.json")
    return ValueSetLibrary().overlay(sets), problems


def load_deck(path: Path) -> list[Case]:
    """A deck: an official measure folder (``tests/``, ``measure-bundle.json``) or a folder of YAML cases."""
    path = Path(path)
    if (path / "measure-bundle.json").is_file():
        return load_official(path)
    if path.is_file():
        return [load_case(path)]
    return [load_case(p) for p in sorted(path.glob("*.yaml"))]


# ------------------------------------------------------------------------------------------ running


@dataclass
class _Batch:
    period: tuple[date, date]
    cases: list[Case] = field(default_factory=list)


def _concat(frames: Iterable[pl.DataFrame], table: str) -> pl.DataFrame:
    return pl.concat([conform(table, f) for f in frames], how="vertical")


def run_deck(plan: Any, cases: Sequence[Case], *, tz_offset_min: int = 0) -> list[CaseResult]:
    """Evaluate every case (cases with the same period together) and compare with the expected counts.

    A population count is the number of subjects of the case's patients for which the population is true
    (0/1 for patient-based measures, episodes for encounter-based ones).
    """
    from datasets.source import FrameSource
    from engine import EvaluationConfig, evaluate

    default = (plan.period_start, plan.period_end)
    batches: dict[tuple[date, date], _Batch] = {}
    for case in cases:
        span = case.period or default
        batches.setdefault(span, _Batch(span)).cases.append(case)
    results: dict[str, CaseResult] = {}
    group_ids = [g.id for g in plan.groups]
    for span, batch in batches.items():
        names = sorted({t for c in batch.cases for t in c.tables})
        source = FrameSource(
            {t: _concat((c.tables[t] for c in batch.cases if t in c.tables), t) for t in names}
        )
        config = EvaluationConfig(period_start=span[0], period_end=span[1], tz_offset_min=tz_offset_min)
        subjects = evaluate([plan], source, config).subjects
        for case in batch.cases:
            mine = subjects.filter(pl.col("patient_id").is_in(list(case.patient_ids)))
            checks = []
            for key, expected in case.expect.items():
                group_id = group_ids[key] if isinstance(key, int) and key < len(group_ids) else str(key)
                rows = mine.filter(pl.col("group_id") == group_id) if "group_id" in mine.columns else mine
                for population, count in expected.items():
                    actual = int(rows[population].fill_null(False).sum()) if population in rows.columns else 0
                    checks.append(Check(group_id, population, count, actual))
            for key, values in case.observations.items():
                group_id = group_ids[key] if isinstance(key, int) and key < len(group_ids) else str(key)
                rows = mine.filter(pl.col("group_id") == group_id) if "group_id" in mine.columns else mine
                got = [
                    v
                    for c in rows.columns
                    if c.startswith("obs:")
                    for v in rows[c].to_list()
                    if v is not None
                ]
                checks.append(Check(group_id, "observations", values, _observed(got)))
            results[case.id] = CaseResult(case, tuple(checks))
    return [results[c.id] for c in cases]
