"""The reference interpreter: the definition language evaluated one patient at a time, in plain Python.

It is the test oracle of the vectorized compiler, so it is written from ``docs/definition-language.md`` and
the models alone, as directly as the spec reads: an event set is a list of row dicts, a condition is
``True``/``False``/``None`` (unknown, Kleene logic), and a population is true only when its condition is
``True``. Slow and obvious on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from datasets.views import primary_code_of, view_rows
from definitions.calendar import add_duration
from definitions.model import (
    Age,
    All,
    Any_,
    AttrFilter,
    Count,
    CoveredDays,
    Duration,
    EventRef,
    Exists,
    Gender,
    Group,
    Measure,
    Not,
    Pick,
    Ref,
    RelatedPick,
    Retrieve,
    TimeRef,
    TimingFilter,
    Union_,
    ValueFilter,
    WithFilter,
    WithoutFilter,
)
from definitions.resolved import MEASURE_SCOPE, ResolvedMeasure, definition_kind
from definitions.valuesets import ValueSetLibrary
from engine.reference_rows import (
    cell_matches,
    code_refs,
    compare_number,
    convert,
    not_done_matches,
    profile_matches,
    quantity,
)
from engine.reference_time import (
    BOT,
    Interval,
    Point,
    TimeContext,
    k_and,
    k_not,
    k_or,
    local_date,
    resolve,
    row_interval,
    row_offset,
    supply_interval,
    timing_holds,
    utc,
    window,
)

# link -> (list column, id field, rank 1 only, use code): the rule of engine/links.py, restated per row
REFERENCE_LISTS: dict[str, tuple[str, str, bool, str | None]] = {
    "encounter_diagnosis": ("diagnoses", "condition_id", False, None),
    "principal_diagnosis": ("diagnoses", "condition_id", True, "billing"),
    "principal_procedure": ("procedures", "procedure_id", True, None),
}

PROPORTION = (
    "initial_population", "denominator", "denominator_exclusion", "denominator_exception", "numerator",
    "numerator_exclusion",
)  # fmt: skip
CONTINUOUS = ("measure_population", "measure_population_exclusion")


@dataclass(frozen=True)
class ReferenceConfig:
    period_start: date
    period_end: date
    tz_offset_min: int = 0  # evaluation time zone for period boundaries


@dataclass(frozen=True)
class PatientResult:
    """Populations per group after the cascade, strata per group, every define evaluated (explanations)."""

    patient_id: str
    groups: dict[str, dict[str, bool]]
    strata: dict[str, dict[str, bool]] = field(default_factory=dict)
    defines: dict[str, bool | int | None] = field(default_factory=dict)


class MissingExpansionError(KeyError):
    """A value set the measure uses has no expansion loaded: naming the URL beats a silent empty match."""

    def __str__(self) -> str:
        return f"no expansion loaded for value set {self.args[0]}"


@dataclass(frozen=True)
class EventSetValue:
    table: str
    rows: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class _Picked:
    """The pick's chosen row and its value (what a component-less value test in ``test`` sees)."""

    row: dict[str, Any]
    value: float | None
    unit: str | None


class _Evaluator:
    def __init__(
        self,
        resolved: ResolvedMeasure,
        valuesets: ValueSetLibrary,
        patient: dict[str, Any],
        tables: dict[str, list[dict[str, Any]]],
        config: ReferenceConfig,
    ) -> None:
        self.r = resolved
        self.valuesets = valuesets
        self.patient = patient
        self.pid = patient["patient_id"]
        self.tables = {
            name: [row for row in rows if row.get("patient_id") == self.pid] for name, rows in tables.items()
        }
        self.tables["encounter_location"] = view_rows("encounter_location", self.tables.get("encounter", []))
        self.components: dict[str, list[dict[str, Any]]] = {}
        for comp in self.tables.get("observation_component", []):
            self.components.setdefault(str(comp.get("observation_id")), []).append(comp)
        self.ctx = TimeContext(
            config.period_start,
            config.period_end,
            config.tz_offset_min,
            patient.get("birth_date"),
            death=utc(patient.get("deceased_datetime")),
        )
        self.cache: dict[tuple[str, str], EventSetValue | bool | None] = {}

    # ----------------------------------------------------------------------------------- names

    def qualified(self, scope: str, name: str) -> str:
        return name if scope == MEASURE_SCOPE else f"{scope}.{name}"

    def define(self, name: str, scope: str) -> EventSetValue | bool | None:
        found = self.r.define(name, scope)
        if found is None:
            raise KeyError(f"unknown definition {name!r} in scope {scope or '<measure>'}")
        key = (found.scope, found.name)
        if key not in self.cache:
            if definition_kind(found.value) == "events":
                self.cache[key] = self.events(found.value, found.scope)
            else:
                self.cache[key] = self.cond(found.value, found.scope)
        return self.cache[key]

    def valueset_codes(self, name: str, scope: str) -> tuple[str, frozenset[tuple[str, str]]]:
        found = self.r.valueset(name, scope)
        if found is None:
            raise KeyError(f"unknown value set {name!r} in scope {scope or '<measure>'}")
        url = str(found.value)
        if url not in self.valuesets:
            raise MissingExpansionError(url)
        return url, self.valuesets[url].codes

    # ----------------------------------------------------------------------------------- event sets

    def events(self, node: Any, scope: str) -> EventSetValue:
        if isinstance(node, Retrieve):
            return self.retrieve(node, scope)
        if isinstance(node, Union_):
            parts = [self.events(part, scope) for part in node.union]
            tables = {p.table for p in parts}
            table = parts[0].table if len(tables) == 1 else "mixed"  # several tables: only time remains
            seen: set[int] = set()
            rows: list[dict[str, Any]] = []
            for part in parts:
                for row in part.rows:
                    if id(row) not in seen:
                        seen.add(id(row))
                        rows.append(row)
            return self.narrow(EventSetValue(table, tuple(rows)), node.where, scope)
        if isinstance(node, EventRef):
            value = self.define(node.events, scope)
            if not isinstance(value, EventSetValue):
                raise ValueError(f"{node.events!r} is a condition, not an event set")
            return self.narrow(self.extend(value, node.extend_start, scope), node.where, scope)
        raise TypeError(f"not an event set: {node!r}")

    def retrieve(self, node: Retrieve, scope: str) -> EventSetValue:
        table = node.from_
        column = node.code_path or primary_code_of(table)
        vs = [self.valueset_codes(name, scope) for name in node.valuesets]
        vs_codes = set().union(*(codes for _, codes in vs)) if vs else set()
        rows: list[dict[str, Any]] = []
        restricted = bool(vs) or node.codes is not None or node.profile is not None
        for row in self.tables.get(table, []):
            # a row matches when any of the retrieve's value sets, codes or profile does (spec section 3)
            if restricted and not (
                (vs and cell_matches(row.get(column), vs_codes))
                or (vs and node.negated and not_done_matches(row, [url for url, _ in vs]))
                or (node.codes is not None and cell_matches(row.get(column), code_refs(node.codes)))
                or (node.profile is not None and profile_matches(row, column, node.profile))
            ):
                continue
            rows.append(row)
        result = EventSetValue(table, tuple(rows))
        if node.status is not None:
            rule = self.r.status_rule(node.status, scope)
            if rule is None:
                raise KeyError(f"unknown status rule {node.status!r}")
            result = self.narrow(result, rule.value.where, rule.scope)
        return self.narrow(self.extend(result, node.extend_start, scope), node.where, scope)

    def extend(self, value: EventSetValue, steps: tuple[Any, ...], scope: str) -> EventSetValue:
        """Rows with ``_ext_start``: each step moves the start back to the start of the latest row of its
        event set ending on or before it, at most ``within`` earlier (hospitalization with observation)."""
        if not steps:
            return value
        extended = []
        for row in value.rows:
            current = utc(row.get("start"))
            for step in steps:
                if current is None:
                    break
                earliest = add_duration(current, Duration(amount=-step.within.amount, unit=step.within.unit))
                candidates = [
                    (end, utc(other.get("start")))
                    for other in self.events(step.events, scope).rows
                    if (end := utc(other.get("end"))) is not None
                    and _ms(earliest) <= _as_written(end, other.get("end_prec")) <= _ms(current)
                ]
                if candidates:
                    # the latest end wins; on a tie, a known and later start (as the engine's sort)
                    _end, start = max(candidates, key=lambda c: (c[0], c[1] is not None, c[1] or BOT))
                    current = start if start is not None else current
            extended.append({**row, "_ext_start": current})
        return EventSetValue(value.table, tuple(extended))

    def narrow(self, value: EventSetValue, filters: tuple[Any, ...], scope: str) -> EventSetValue:
        rows = [row for row in value.rows if all(self.keeps(f, row, value.table, scope) for f in filters)]
        return EventSetValue(value.table, tuple(rows))

    # ----------------------------------------------------------------------------------- filters

    def keeps(
        self, node: Any, row: dict[str, Any], table: str, scope: str, picked: _Picked | None = None
    ) -> bool:
        """Whether a filter keeps the row: only a ``True`` predicate does (unknown drops it)."""
        if isinstance(node, AttrFilter):
            return self.attr(node, row, scope)
        if isinstance(node, ValueFilter):
            if picked is not None and node.component is None:
                value = (
                    convert(picked.value, picked.unit, node.value.unit) if node.value.unit else picked.value
                )
            else:
                comps = self.components.get(str(row.get("id")), []) if table == "observation" else []
                value = quantity(row, comps, node.component, node.value.unit)
            return compare_number(value, node.value)
        if isinstance(node, TimingFilter):
            return timing_holds(node.timing, self.with_rows(row)) is True
        if isinstance(node, (WithFilter, WithoutFilter)):
            other = self.events(node.with_ if isinstance(node, WithFilter) else node.without, scope)
            rows = [o for o in other.rows if self.relates(node, row, o)]
            related = bool(rows) if node.pick is None else self.picked(node.pick, rows, other.table, scope)
            return related if isinstance(node, WithFilter) else not related
        raise TypeError(f"not a filter: {node!r}")

    def with_rows(self, this: dict[str, Any], other: dict[str, Any] | None = None) -> TimeContext:
        c = self.ctx
        return TimeContext(c.period_start, c.period_end, c.tz_offset_min, c.birth_date, this, other, c.death)

    def relates(self, node: WithFilter | WithoutFilter, this: dict[str, Any], other: dict[str, Any]) -> bool:
        if node.link == "encounter" and (
            this.get("encounter_id") is None or other.get("id") != this.get("encounter_id")
        ):
            return False
        if node.link == "reverse_encounter" and (
            this.get("id") is None or other.get("encounter_id") != this.get("id")
        ):
            return False
        if node.link in REFERENCE_LISTS and not self.listed(node.link, this, other):
            return False
        return all(timing_holds(t, self.with_rows(this, other)) is True for t in node.timing)

    @staticmethod
    def length_days(row: dict[str, Any]) -> int | None:
        """Calendar days from the row's start to its end, each on its own local date (lengthInDays())."""
        start, end = utc(row.get("start")), utc(row.get("end"))
        if start is None or end is None:
            return None
        offset = row.get("tz_offset_min") or 0
        return (local_date(end, offset) - local_date(start, offset)).days

    @staticmethod
    def listed(link: str, this: dict[str, Any], other: dict[str, Any]) -> bool:
        """Whether ``this`` encounter's list names ``other`` (CQMCommon encounterDiagnosis/principalDiagnosis,
        the QI-Core encounter-procedure with rank 1)."""
        column, field_name, rank_one, use = REFERENCE_LISTS[link]
        for entry in this.get(column) or []:
            if entry is None or entry.get(field_name) is None or entry.get(field_name) != other.get("id"):
                continue
            if rank_one and entry.get("rank") != 1:
                continue
            if use is not None and entry.get("use") != use:
                continue
            return True
        return False

    def attr(self, node: AttrFilter, row: dict[str, Any], scope: str) -> bool:
        value = self.length_days(row) if node.attr == "length_days" else row.get(node.attr)
        if node.is_null is not None:
            return (value is None) == node.is_null
        if node.is_true is not None:
            return value is True if node.is_true else value is not True
        if node.not_in is not None:
            if value is None:
                return True
            return not _member(value, node.not_in)
        if value is None:
            return False
        if node.in_ is not None:
            return _member(value, node.in_)
        if node.codes is not None:
            return cell_matches(value, code_refs(node.codes))
        if node.valueset is not None:
            return cell_matches(value, self.valueset_codes(node.valueset, scope)[1])
        if node.compare is not None:
            return compare_number(float(value), node.compare)
        raise ValueError("empty attr filter")

    # ----------------------------------------------------------------------------------- conditions

    def cond(self, node: Any, scope: str) -> bool | None:
        if isinstance(node, All):
            return k_and(*(self.cond(c, scope) for c in node.all))
        if isinstance(node, Any_):
            return k_or(*(self.cond(c, scope) for c in node.any))
        if isinstance(node, Not):
            return k_not(self.cond(node.not_, scope))
        if isinstance(node, Ref):
            value = self.define(node.ref, scope)
            return bool(value.rows) if isinstance(value, EventSetValue) else value
        if isinstance(node, (Retrieve, Union_, EventRef)):
            return bool(self.events(node, scope).rows)
        if isinstance(node, Exists):
            return bool(self.events(node.exists, scope).rows)
        if isinstance(node, Count):
            return self.count(node, scope)
        if isinstance(node, Age):
            return self.age(node.age)
        if isinstance(node, Gender):
            gender = self.patient.get("gender")
            return None if gender is None else gender == node.gender
        if isinstance(node, Pick):
            return self.pick(node.pick, scope)
        if isinstance(node, CoveredDays):
            return self.covered_days(node.covered_days, scope)
        raise TypeError(f"not a condition: {node!r}")

    def count(self, node: Count, scope: str) -> bool:
        rows = self.events(node.count, scope).rows
        if node.distinct == "rows":
            n = len(rows)
        else:  # distinct local dates of start; a row without a start has no date
            n = len({local_date(s, row_offset(r)) for r in rows if (s := utc(r.get("start"))) is not None})
        return compare_number(float(n), node.compare)

    def age(self, spec: Age.Spec) -> bool:
        birth: date | None = self.patient.get("birth_date")
        point = resolve(spec.at, self.ctx)
        if birth is None:
            return False
        if isinstance(point, Interval):
            raise ValueError("age is measured at a point, not an interval")
        at = point.reduce("day")
        if at is None or not isinstance(at, date):
            return False
        if spec.unit == "days":
            age = (at - birth).days
        else:
            months = (at.year - birth.year) * 12 + (at.month - birth.month) - (1 if at.day < birth.day else 0)
            age = months if spec.unit == "months" else _completed_years(birth, at)
        return (spec.min is None or age >= spec.min) and (spec.max is None or age <= spec.max)

    def pick(self, spec: Pick.Spec, scope: str) -> bool:
        table_rows = self.events(spec.from_, scope)
        rows = list(table_rows.rows)
        if spec.day is not None:
            dated = [(r, self.row_time(r, spec.time)) for r in rows]
            days = [p.reduce("day") for _, p in dated]
            known = [d for d in days if d is not None]
            if known:
                target = max(known) if spec.day == "latest" else min(known)
                rows = [r for (r, _), d in zip(dated, days, strict=True) if d == target]
            else:
                rows = []
        if not rows:
            return spec.missing

        def value_of(row: dict[str, Any]) -> float | None:
            comps = self.components.get(str(row.get("id")), []) if table_rows.table == "observation" else []
            return quantity(row, comps, spec.component, spec.unit)

        ordered: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for row in rows:
            key: Any
            if spec.by in ("latest", "earliest"):
                key = self.row_time(row, spec.time).reduce("instant")
            else:
                key = value_of(row)
            # one ascending order, unknown first (CQL sorts nulls low), ties by row id
            ordered.append(((key is not None, key if key is not None else 0, str(row.get("id"))), row))
        ordered.sort(key=lambda item: item[0])
        chosen = ordered[0][1] if spec.by in ("earliest", "lowest") else ordered[-1][1]
        # the tests are ordinary filters on the chosen row
        return all(self.keeps(f, chosen, table_rows.table, scope) for f in spec.test)

    def picked(self, pick: RelatedPick, rows: list[dict[str, Any]], table: str, scope: str) -> bool:
        """Whether the picked related row (the last/first by time, ties by id, unknown times first; or every
        related row on that row's local day) is a row of ``in`` that passes ``test``."""
        if pick.day:
            days = [self.row_time(r, pick.time).reduce("day") for r in rows]
            known = [d for d in days if d is not None]
            if not known:
                return False
            target = max(known) if pick.by == "latest" else min(known)
            chosen = [r for r, d in zip(rows, days, strict=True) if d == target]
        elif rows:

            def order(r: dict[str, Any]) -> tuple[Any, ...]:
                t = self.row_time(r, pick.time).reduce("instant")
                return (t is not None, t if t is not None else 0, str(r.get("id")))

            ordered = sorted(rows, key=order)
            chosen = [ordered[-1] if pick.by == "latest" else ordered[0]]
        else:
            return False
        members = None if pick.in_ is None else {str(r.get("id")) for r in self.events(pick.in_, scope).rows}
        return any(
            (members is None or str(r.get("id")) in members)
            and all(self.keeps(f, r, table, scope) for f in pick.test)
            for r in chosen
        )

    def row_time(self, row: dict[str, Any], which: str) -> Point:
        return resolve_point(f"this.{which}", self.with_rows(row))

    def covered_days(self, spec: CoveredDays.Spec, scope: str) -> bool:
        """Days of the window (local dates) covered by the rows' intervals: the supply interval for
        medication requests and dispenses, the row's ``[start, end]`` otherwise (closed null ends). With
        ``relative_to``, true when some row of that set (``other`` in the window) gives a count that holds."""
        value = self.events(spec.from_, scope)
        if spec.relative_to is None:
            return self._covered(value, spec, self.ctx) is True
        anchors = self.events(spec.relative_to, scope).rows
        return any(self._covered(value, spec, self.with_rows({}, row)) is True for row in anchors)

    def _covered(self, value: EventSetValue, spec: CoveredDays.Spec, ctx: TimeContext) -> bool | None:
        win = window(spec.window, ctx)
        lo, hi = win.lo.reduce("day"), win.hi.reduce("day")
        if not isinstance(lo, date) or not isinstance(hi, date):
            return compare_number(None, spec.compare)
        first = lo.toordinal() + (0 if win.lo_closed else 1)
        last = hi.toordinal() - (0 if win.hi_closed else 1)
        covered: set[int] = set()
        for row in value.rows:
            medication = value.table in ("medication_request", "medication_dispense")
            interval = supply_interval(row) if medication else row_interval(row)
            start, end = interval.lo.reduce("day"), interval.hi.reduce("day")
            if not isinstance(start, date) or not isinstance(end, date):
                continue
            covered.update(range(max(start.toordinal(), first), min(end.toordinal(), last) + 1))
        return compare_number(float(len(covered)), spec.compare)


def _ms(value: datetime) -> datetime:
    """An instant at millisecond precision (how CQL compares DateTimes)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _as_written(end: datetime, precision: Any) -> datetime:
    """A stored end (the high boundary of the value as written) back to the value: to the hour, minute or
    second it was written to (precisions 4, 5, 6), else at milliseconds."""
    if precision == 6:
        return end.replace(microsecond=0)
    if precision == 5:
        return end.replace(second=0, microsecond=0)
    if precision == 4:
        return end.replace(minute=0, second=0, microsecond=0)
    return _ms(end)


def resolve_point(anchor: str, ctx: TimeContext) -> Point:
    value = resolve(TimeRef.model_validate({"ref": anchor}), ctx)
    if isinstance(value, Interval):
        raise ValueError(f"{anchor} is an interval")
    return value


def _member(value: Any, allowed: tuple[str, ...]) -> bool:
    if isinstance(value, (list, tuple)):
        return any(str(v) in allowed for v in value if v is not None)
    return str(value) in allowed


def _completed_years(birth: date, at: date) -> int:
    years = at.year - birth.year
    if (at.month, at.day) < (birth.month, birth.day):
        years -= 1
    return years


def _population(crit: bool | None) -> bool:
    return crit is True


def cascade(measure: Measure, group: Group, crit: Mapping[str, bool | None]) -> dict[str, bool]:
    """Spec section 7: each population from its criterion and the populations above it."""
    out = {name: False for name in PROPORTION}
    if measure.scoring == "continuous_variable":
        out.update({name: False for name in CONTINUOUS})
    ip = _population(crit.get("initial_population"))
    out["initial_population"] = ip
    present = group.populations
    if measure.scoring in ("proportion", "ratio"):
        denom = ip and (_population(crit["denominator"]) if "denominator" in present else True)
        denex = denom and _population(crit.get("denominator_exclusion"))
        out["denominator"], out["denominator_exclusion"] = denom, denex
        if measure.scoring == "proportion":
            numer = denom and not denex and _population(crit.get("numerator"))
            out["denominator_exception"] = (
                denom and not denex and not numer and _population(crit.get("denominator_exception"))
            )
        else:  # ratio: the numerator is drawn from the initial population (FHIR ratio scoring)
            numer = ip and _population(crit.get("numerator"))
        out["numerator"] = numer
        out["numerator_exclusion"] = numer and _population(crit.get("numerator_exclusion"))
    elif measure.scoring == "continuous_variable":
        mp = ip and _population(crit.get("measure_population"))
        out["measure_population"] = mp
        out["measure_population_exclusion"] = mp and _population(crit.get("measure_population_exclusion"))
    return out


def evaluate_patient(
    resolved: ResolvedMeasure,
    valuesets: ValueSetLibrary,
    patient: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    config: ReferenceConfig,
) -> PatientResult:
    """Every group's populations (and strata) for one patient, plus the value of each define evaluated."""
    ev = _Evaluator(resolved, valuesets, patient, tables, config)
    measure = resolved.measure
    groups: dict[str, dict[str, bool]] = {}
    strata: dict[str, dict[str, bool]] = {}
    for group in measure.groups:
        crit: dict[str, bool | None] = {n: ev.cond(c, MEASURE_SCOPE) for n, c in group.populations.items()}
        groups[group.id] = cascade(measure, group, crit)
        strata[group.id] = {s.id: ev.cond(s.criterion, MEASURE_SCOPE) is True for s in group.stratifiers}
    for name in measure.define:
        ev.define(name, MEASURE_SCOPE)
    defines: dict[str, bool | int | None] = {}
    for (scope, name), value in sorted(ev.cache.items()):
        defines[ev.qualified(scope, name)] = len(value.rows) if isinstance(value, EventSetValue) else value
    return PatientResult(str(ev.pid), groups, strata, defines)


__all__ = ["MissingExpansionError", "PatientResult", "ReferenceConfig", "cascade", "evaluate_patient"]
