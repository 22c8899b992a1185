"""Semantic checks a schema cannot express: names resolve, no cycles, nothing unused, windows possible,
populations complete for the scoring type. Every problem becomes a positioned Diagnostic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

from pydantic import BaseModel

from definitions.diagnostics import Diagnostic
from definitions.model import (
    AttrFilter,
    EventRef,
    Library,
    Measure,
    Ref,
    Retrieve,
    TimeRef,
    Timing,
    Window,
)
from definitions.resolved import MEASURE_SCOPE, ResolvedMeasure, definition_kind

Path = tuple[str | int, ...]

# Populations each scoring type needs, and those it may have (FHIR measure-population codes, CQL names).
REQUIRED_POPULATIONS: dict[str, frozenset[str]] = {
    "proportion": frozenset({"initial_population", "numerator"}),
    "ratio": frozenset({"initial_population", "denominator", "numerator"}),
    "continuous_variable": frozenset({"initial_population", "measure_population"}),
    "cohort": frozenset({"initial_population"}),
}
ALLOWED_POPULATIONS: dict[str, frozenset[str]] = {
    "proportion": frozenset({"initial_population", "denominator", "denominator_exclusion",
                             "denominator_exception", "numerator", "numerator_exclusion"}),
    "ratio": frozenset({"initial_population", "denominator", "denominator_exclusion", "numerator",
                        "numerator_exclusion"}),
    "continuous_variable": frozenset({"initial_population", "measure_population", "measure_population_exclusion"}),
    "cohort": frozenset({"initial_population"}),
}  # fmt: skip

POINT_RELATIONS = frozenset({"before", "after", "on_or_before", "on_or_after", "same_day"})


def walk(node: Any, path: Path) -> Iterator[tuple[Path, Any]]:
    """Every model node under ``node`` with its path, keys spelled as the author writes them (aliases)."""
    yield path, node
    if isinstance(node, BaseModel):
        for name, info in type(node).model_fields.items():
            value = getattr(node, name)
            if value is None:
                continue
            yield from walk(value, (*path, info.alias or name))
    elif isinstance(node, tuple):
        for i, item in enumerate(node):
            yield from walk(item, (*path, i))
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from walk(item, (*path, key))


def _period_point(ref: TimeRef, start: date, end: date) -> date | None:
    """The date a period-relative point denotes (for the impossible-window check); None if not period-only."""
    from definitions.calendar import shift_date

    if ref.ref not in ("period.start", "period.end"):
        return None
    if any(d.unit in ("hour", "minute") for d in ref.offset):
        return None
    base = start if ref.ref == "period.start" else end
    return shift_date(base, ref)


class _Checker:
    def __init__(self, resolved: ResolvedMeasure) -> None:
        self.r = resolved
        self.problems: list[Diagnostic] = []
        self.used_defines: set[tuple[str, str]] = set()
        self.used_valuesets: set[tuple[str, str]] = set()
        self.edges: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def err(self, scope: str, path: Path, message: str) -> None:
        self.problems.append(self.r.diagnostic(scope, path, message))

    def unit_nodes(
        self, scope: str, unit: Measure | Library
    ) -> Iterator[tuple[Path, Any, tuple[str, str] | None]]:
        for name, value in unit.define.items():
            for path, node in walk(value, ("define", name)):
                yield path, node, (scope, name)
        for name, rule in unit.status_rules.items():
            for path, node in walk(rule, ("status_rules", name)):
                yield path, node, None
        if isinstance(unit, Measure):
            for gi, group in enumerate(unit.groups):
                for path, node in walk(group, ("groups", gi)):
                    yield path, node, None

    def run(self) -> list[Diagnostic]:
        for scope, unit in self.r.units():
            for path, node, owner in self.unit_nodes(scope, unit):
                self.node(scope, path, node, owner)
            if isinstance(unit, Measure):
                self.populations(unit)
        self.cycles()
        self.unused()
        return self.problems

    def node(self, scope: str, path: Path, node: Any, owner: tuple[str, str] | None) -> None:
        if isinstance(node, (Ref, EventRef)):
            name = node.ref if isinstance(node, Ref) else node.events
            found = self.r.define(name, scope)
            key = "ref" if isinstance(node, Ref) else "events"
            if found is None:
                self.err(scope, (*path, key), f"unknown definition {name!r}")
                return
            if isinstance(node, EventRef) and definition_kind(found.value) != "events":
                self.err(scope, (*path, key), f"{name!r} is a condition, not an event set")
            self.used_defines.add((found.scope, found.name))
            if owner is not None:
                self.edges.setdefault(owner, set()).add((found.scope, found.name))
        elif isinstance(node, Retrieve):
            for vs in node.valuesets:
                self.valueset(scope, (*path, "valueset"), vs)
            if node.status is not None:
                rule = self.r.status_rule(node.status, scope)
                if rule is None:
                    self.err(scope, (*path, "status"), f"unknown status rule {node.status!r}")
                elif rule.value.table != node.from_:
                    self.err(
                        scope,
                        (*path, "status"),
                        f"status rule {node.status!r} is for table {rule.value.table}, not {node.from_}",
                    )
        elif isinstance(node, AttrFilter) and node.valueset is not None:
            self.valueset(scope, (*path, "valueset"), node.valueset)
        elif isinstance(node, Timing):
            self.timing(scope, path, node)
        elif isinstance(node, Window):
            self.window(scope, path, node)

    def valueset(self, scope: str, path: Path, name: str) -> None:
        found = self.r.valueset(name, scope)
        if found is None:
            self.err(scope, path, f"unknown value set {name!r} (declare it under valuesets:)")
        else:
            self.used_valuesets.add((found.scope, found.name))

    def timing(self, scope: str, path: Path, timing: Timing) -> None:
        left_is_interval = timing.left.is_interval
        right = timing.right
        right_is_interval = isinstance(right, Window) or right.is_interval
        if timing.rel in POINT_RELATIONS and (left_is_interval or right_is_interval):
            self.err(
                scope, (*path, "rel"), f"{timing.rel} relates two points; use e.g. this.end or period.start"
            )
        if timing.rel == "during" and not right_is_interval:
            self.err(
                scope, (*path, "right"), "during needs an interval on the right (a window, period, other)"
            )
        if timing.rel == "includes" and not left_is_interval:
            self.err(scope, (*path, "left"), "includes needs an interval on the left")

    def window(self, scope: str, path: Path, window: Window) -> None:
        period = self.r.measure.period
        try:
            lo = _period_point(window.start, period.start, period.end)
            hi = _period_point(window.end, period.start, period.end)
        except (ValueError, OverflowError):  # an offset of millions of years: no date can hold it
            self.err(scope, path, "window point out of the calendar range (years 1 to 9999)")
            return
        if lo is not None and hi is not None and lo > hi:
            self.err(
                scope, path, f"impossible window: starts {lo} after it ends {hi} (for the default period)"
            )

    def populations(self, measure: Measure) -> None:
        required = REQUIRED_POPULATIONS[measure.scoring]
        allowed = ALLOWED_POPULATIONS[measure.scoring]
        for gi, group in enumerate(measure.groups):
            for name in sorted(required - set(group.populations)):
                self.err(
                    MEASURE_SCOPE, ("groups", gi, "populations"), f"{measure.scoring} scoring needs {name}"
                )
            for name in sorted(set(group.populations) - allowed):
                self.err(
                    MEASURE_SCOPE,
                    ("groups", gi, "populations", name),
                    f"{name} is not a population of {measure.scoring} scoring",
                )

    def cycles(self) -> None:
        state: dict[tuple[str, str], int] = {}

        def visit(node: tuple[str, str], stack: list[tuple[str, str]]) -> None:
            state[node] = 1
            for nxt in sorted(self.edges.get(node, ())):
                if state.get(nxt) == 1:
                    loop = (
                        " -> ".join(n for _, n in [*stack[stack.index(nxt) :], nxt])
                        if nxt in stack
                        else nxt[1]
                    )
                    self.err(
                        nxt[0], ("define", nxt[1]), f"definitions refer to each other in a cycle: {loop}"
                    )
                elif state.get(nxt) is None:
                    visit(nxt, [*stack, nxt])
            state[node] = 2

        for node in sorted(self.edges):
            if node not in state:
                visit(node, [node])

    def unused(self) -> None:
        measure = self.r.measure
        for name in measure.define:
            if (MEASURE_SCOPE, name) not in self.used_defines:
                self.err(MEASURE_SCOPE, ("define", name), f"definition {name!r} is never used")
        for name in measure.valuesets:
            if (MEASURE_SCOPE, name) not in self.used_valuesets:
                self.err(MEASURE_SCOPE, ("valuesets", name), f"value set {name!r} is never used")


def check_measure(resolved: ResolvedMeasure) -> list[Diagnostic]:
    """All semantic problems of a measure and the libraries it includes."""
    return _Checker(resolved).run()
