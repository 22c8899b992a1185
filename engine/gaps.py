"""Care gaps: subjects who count against a proportion measure and could still be helped.

A gap is a subject in the denominator, not excluded and not excepted, who is not in the numerator (for an
``improvement: increase`` measure) or who is in it (``decrease``: inverse measures such as CMS122, where the
numerator is the poor outcome). ``criteria`` lists the named definitions the numerator refers to that explain
the gap: the false ones for an increase measure (what must happen), the true ones for a decrease measure (what
put the subject in the numerator). ``due_date`` is the end of the measurement period.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

import polars as pl

from engine.lower import names_where_true
from engine.plan import (
    AllIR,
    AnyIR,
    CondIR,
    CountIR,
    DefineIR,
    ExistsIR,
    MeasurePlan,
    NamedEventsIR,
    NotIR,
    PickIR,
)
from engine.timeexpr import Period

if TYPE_CHECKING:
    from engine.evaluate import EvaluationResult

GAP_SCHEMA: dict[str, pl.DataType] = {
    "measure_id": pl.String(),
    "group_id": pl.String(),
    "patient_id": pl.String(),
    "improvement": pl.String(),
    "criteria": pl.List(pl.String()),
    "due_date": pl.Date(),
}


def referenced_names(cond: object) -> list[str]:
    """Named definitions a condition refers to directly (not through other definitions), in order."""
    out: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, DefineIR):
            out.append(node.name)
        elif isinstance(node, (AllIR, AnyIR)):
            for item in node.items:
                visit(item)
        elif isinstance(node, NotIR):
            visit(node.item)
        elif isinstance(node, (ExistsIR, CountIR, PickIR)):
            visit(node.events)
        elif isinstance(node, NamedEventsIR):
            out.append(node.name)

    visit(cond)
    return list(dict.fromkeys(out))


def numerator_criteria(plan: MeasurePlan, group_id: str) -> list[str]:
    group = next(g for g in plan.groups if g.id == group_id)
    numerator: CondIR | None = dict(group.populations).get("numerator")
    return [] if numerator is None else referenced_names(numerator)


def empty_gaps() -> pl.DataFrame:
    return pl.DataFrame(schema=GAP_SCHEMA)


def _end(plan: MeasurePlan, period: Period | tuple[date, date] | None) -> date:
    if period is None:
        return plan.period_end
    if isinstance(period, Period):
        return period.end
    return period[1]


def _flag(frame: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).fill_null(False) if name in frame.columns else pl.lit(False)


def gaps_for_rows(
    subjects: pl.DataFrame, plan: MeasurePlan, period: Period | tuple[date, date] | None = None
) -> pl.DataFrame:
    """The care gaps among ``subjects`` rows of one measure (proportion measures only)."""
    if plan.scoring != "proportion" or subjects.height == 0 or "denominator" not in subjects.columns:
        return empty_gaps()
    rows = (
        subjects.filter(pl.col("measure_id") == plan.measure_id)
        if "measure_id" in subjects.columns
        else subjects
    )
    decrease = plan.improvement == "decrease"
    met = _flag(rows, "numerator") & _flag(rows, "numerator_exclusion").not_()
    eligible = (
        _flag(rows, "denominator")
        & _flag(rows, "denominator_exclusion").not_()
        & _flag(rows, "denominator_exception").not_()
    )
    parts = []
    keep = [c for c in ("measure_id", "group_id", "patient_id", "episode_id") if c in rows.columns]
    has_defines = "true_defines" in rows.columns
    for group in plan.groups:
        names = numerator_criteria(plan, group.id)
        chosen = rows.filter((pl.col("group_id") == group.id) & eligible & (met if decrease else met.not_()))
        if not chosen.height:
            continue
        if has_defines and names:
            contains = [(n, pl.col("true_defines").fill_null([]).list.contains(n)) for n in names]
            tests = [(n, c if decrease else c.not_()) for n, c in contains]
            criteria = names_where_true(tests)
        else:
            criteria = pl.lit(["numerator"], dtype=pl.List(pl.String))
        parts.append(
            chosen.select(
                *keep,
                pl.lit(plan.improvement).alias("improvement"),
                criteria.alias("criteria"),
                pl.lit(_end(plan, period)).alias("due_date"),
            )
        )
    if not parts:
        return empty_gaps()
    out = pl.concat(parts, how="diagonal_relaxed")
    ordered = [
        "measure_id",
        "group_id",
        "patient_id",
        *(["episode_id"] if "episode_id" in out.columns else []),
        "improvement",
        "criteria",
        "due_date",
    ]
    return out.select(ordered).sort(ordered[:3])


def care_gaps(result: EvaluationResult) -> pl.DataFrame:
    """Care gaps of every proportion measure of an evaluation (see the module doc)."""
    parts = [gaps_for_rows(result.subjects, plan, result.config.period_for(plan)) for plan in result.plans]
    parts = [p for p in parts if p.height]
    if not parts:
        return empty_gaps()
    return pl.concat(parts, how="diagonal_relaxed").sort("measure_id", "group_id", "patient_id")
