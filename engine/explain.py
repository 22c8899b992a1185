"""Why a subject is where it is: definitions true/false with evidence, and the population attrition cascade.

``explain`` reads the evaluated subject row (``true_defines``) for the truth of every named definition, in
plan order. Evidence (the resource ids and times that matched an event set) needs the data again: when a
``source`` is given (or the result carries one), the one patient's rows are bound and the plan's named event
sets are lowered with :class:`engine.lower.Lowerer` over them, in memory. That is the same lowering the batch
run used, so the evidence and the true/false column cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from engine.gaps import referenced_names
from engine.plan import CountIR, EventsIR, ExistsIR, MeasurePlan, NamedEventsIR, PickIR, RetrieveIR, UnionIR
from engine.report import as_tally, define_kind, group_populations

if TYPE_CHECKING:
    from datasets.source import DataSource
    from engine.evaluate import EvaluationConfig, EvaluationResult

EVIDENCE = pl.Struct(
    {"table": pl.String, "id": pl.String, "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}
)


class PatientSource:
    """A data source restricted to one patient (a filter pushed into every scan)."""

    def __init__(self, inner: DataSource, patient_id: str) -> None:
        self.inner = inner
        self.patient_id = patient_id

    def scan(self, table: str, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        cols = None if columns is None else list(dict.fromkeys(["patient_id", *columns]))
        frame = self.inner.scan(table, cols).filter(pl.col("patient_id") == self.patient_id)
        return frame if columns is None else frame.select(list(columns))

    def has_table(self, table: str) -> bool:
        return self.inner.has_table(table)


def find_plan(plans: Sequence[MeasurePlan], measure_id: str) -> MeasurePlan:
    for plan in plans:
        if plan.measure_id.lower() == measure_id.lower():
            return plan
    raise KeyError(f"measure {measure_id!r} was not evaluated; have {[p.measure_id for p in plans]}")


def _table_of(node: EventsIR, defines: dict[str, Any]) -> str:
    if isinstance(node, RetrieveIR):
        return node.table
    if isinstance(node, UnionIR):
        return _table_of(node.parts[0], defines)
    return _table_of(defines[node.name], defines)


def _evidence_nodes(plan: MeasurePlan) -> dict[str, EventsIR]:
    """Per named definition, the event set whose rows are its evidence (if it has one)."""
    out: dict[str, EventsIR] = {}
    for name, node in plan.defines:
        if isinstance(node, (RetrieveIR, UnionIR, NamedEventsIR)):
            out[name] = NamedEventsIR(name, ())
        elif isinstance(node, (ExistsIR, CountIR, PickIR)):
            out[name] = node.events
    return out


def evidence(
    plan: MeasurePlan, source: DataSource, patient_id: str, config: EvaluationConfig | None = None
) -> dict[str, pl.DataFrame]:
    """Per named definition with an event set: that patient's matching rows (table, id, start, end)."""
    from engine.evaluate import EvaluationConfig, bind
    from engine.lower import Lowerer

    config = config or EvaluationConfig()
    bound = bind([plan], PatientSource(source, patient_id), streaming=False)
    lowerer = Lowerer(plan, bound, config.period_for(plan))
    defines = dict(plan.defines)
    nodes = _evidence_nodes(plan)
    names = list(nodes)
    lazies = [
        lowerer.events(nodes[n])
        .select(
            pl.lit(_table_of(nodes[n], defines)).alias("table"),
            pl.col("id").cast(pl.String),
            pl.col("start"),
            pl.col("end"),
        )
        .unique(subset="id")
        .sort("start", "id", nulls_last=True)
        for n in names
    ]
    frames = pl.collect_all(lazies, engine="in-memory") if lazies else []
    return dict(zip(names, frames, strict=True))


def explain(
    result: EvaluationResult, patient_id: str, measure_id: str, source: DataSource | None = None
) -> pl.DataFrame:
    """One row per named definition (plan order), then per group population: ``kind`` (event set, condition,
    population), ``result``, ``used_by`` (the populations that refer to it directly) and ``evidence`` (the
    matching rows: table, id, start, end; empty without a source)."""
    plan = find_plan(result.plans, measure_id)
    rows = result.subjects.filter(
        (pl.col("measure_id") == plan.measure_id) & (pl.col("patient_id") == patient_id)
    )
    if not rows.height:
        raise KeyError(f"patient {patient_id!r} has no result for {plan.measure_id}")
    true_defines: set[str] = set()
    if "true_defines" in rows.columns:
        for values in rows["true_defines"].to_list():
            true_defines.update(values or [])
    used_by: dict[str, list[str]] = {}
    for group in plan.groups:
        for pop, cond in group.populations:
            for name in referenced_names(cond):
                used_by.setdefault(name, []).append(f"{group.id}.{pop}")
    source = source if source is not None else getattr(result, "source", None)
    found = evidence(plan, source, patient_id, result.config) if source is not None else {}
    records: list[dict[str, Any]] = []
    for name, node in plan.defines:
        ev = found.get(name)
        records.append(
            {
                "name": name,
                "kind": define_kind(node),
                "result": name in true_defines,
                "used_by": used_by.get(name, []),
                "evidence": [] if ev is None else ev.to_dicts(),
            }
        )
    for group in plan.groups:
        mine = rows.filter(pl.col("group_id") == group.id)
        for pop in group_populations(plan, group.id):
            value = bool(mine[pop].fill_null(False).any()) if pop in mine.columns and mine.height else False
            records.append(
                {
                    "name": f"{group.id}.{pop}",
                    "kind": "population",
                    "result": value,
                    "used_by": [],
                    "evidence": [],
                }
            )
    schema: dict[str, pl.DataType] = {
        "name": pl.String(),
        "kind": pl.String(),
        "result": pl.Boolean(),
        "used_by": pl.List(pl.String),
        "evidence": pl.List(EVIDENCE),
    }
    frame = pl.DataFrame(records, schema=schema)
    return frame.with_row_index("order").with_columns(pl.col("evidence").list.len().alias("n_evidence"))


# ------------------------------------------------------------------------------------------------ attrition


# (population, parent step it narrows, how many it keeps from the counts)
def _steps(plan: MeasurePlan, group_id: str) -> list[tuple[str, str, Any]]:
    pops = set(group_populations(plan, group_id))

    def c(name: str) -> Any:
        return lambda k: k.get(name, 0)

    if plan.scoring == "continuous_variable":
        steps = [
            ("initial_population", "subjects", c("initial_population")),
            ("measure_population", "initial_population", c("measure_population")),
            (
                "measure_population_exclusion",
                "measure_population",
                lambda k: k.get("measure_population", 0) - k.get("measure_population_exclusion", 0),
            ),
        ]
    elif plan.scoring == "cohort":
        steps = [("initial_population", "subjects", c("initial_population"))]
    else:
        after_excl = "denominator_exclusion" if "denominator_exclusion" in pops else "denominator"
        steps = [
            ("initial_population", "subjects", c("initial_population")),
            ("denominator", "initial_population", c("denominator")),
            (
                "denominator_exclusion",
                "denominator",
                lambda k: k.get("denominator", 0) - k.get("denominator_exclusion", 0),
            ),
        ]
        if plan.scoring == "ratio":
            steps.append(("numerator", "initial_population", c("numerator")))
        else:
            steps.append(
                (
                    "denominator_exception",
                    after_excl,
                    lambda k: (
                        k.get("denominator", 0)
                        - k.get("denominator_exclusion", 0)
                        - k.get("denominator_exception", 0)
                    ),
                )
            )
            last = "denominator_exception" if "denominator_exception" in pops else after_excl
            steps.append(("numerator", last, c("numerator")))
        steps.append(
            (
                "numerator_exclusion",
                "numerator",
                lambda k: k.get("numerator", 0) - k.get("numerator_exclusion", 0),
            )
        )
    return [s for s in steps if s[0] in pops]


ATTRITION_SCHEMA: dict[str, pl.DataType] = {
    "measure_id": pl.String(),
    "group_id": pl.String(),
    "stratum": pl.String(),
    "step": pl.UInt32(),
    "population": pl.String(),
    "count": pl.Int64(),
    "kept": pl.Int64(),
    "dropped": pl.Int64(),
}


def attrition_frame(
    data: pl.DataFrame | dict[str, Any],
    plan: MeasurePlan,
    *,
    total: int | None = None,
    supplemental: bool = False,
) -> pl.DataFrame:
    """The cascade of one measure from subjects, a tally or a summary.json document: per group and stratum
    (null = the whole group; ``key=value`` for SDE breakdowns when ``supplemental``), each population step
    with its raw ``count``, how many subjects are ``kept`` after it and how many it ``dropped`` from its
    parent
    step. The first step's parent is ``subjects`` (all evaluated; ``total`` when the data do not say)."""
    frame = as_tally(data).filter(pl.col("measure_id") == plan.measure_id)
    kinds = ["group", "stratifier", *(["sde"] if supplemental else [])]
    records: list[dict[str, Any]] = []
    for row in frame.filter(pl.col("kind").is_in(kinds)).iter_rows(named=True):
        stratum = (
            None
            if row["kind"] == "group"
            else (row["key"] if row["kind"] == "stratifier" else f"{row['key']}={row['value']}")
        )
        n = row["subjects"] if row["subjects"] is not None else (total if row["kind"] == "group" else None)
        kept: dict[str, int | None] = {"subjects": n}
        for i, (pop, parent, keep) in enumerate(_steps(plan, row["group_id"]), start=1):
            value = int(keep(row))
            before = kept.get(parent)
            kept[pop] = value
            records.append(
                {
                    "measure_id": plan.measure_id,
                    "group_id": row["group_id"],
                    "stratum": stratum,
                    "step": i,
                    "population": pop,
                    "count": int(row[pop]),
                    "kept": value,
                    "dropped": None if before is None else before - value,
                }
            )
    out = pl.DataFrame(records, schema=ATTRITION_SCHEMA)
    return out.sort("measure_id", "group_id", "stratum", "step", nulls_last=False)


def attrition(result: EvaluationResult, measure_id: str, *, supplemental: bool = False) -> pl.DataFrame:
    """Per group (and stratum) of one evaluated measure: how many subjects each population step kept and
    dropped, in cascade order."""
    plan = find_plan(result.plans, measure_id)
    return attrition_frame(result.subjects, plan, supplemental=supplemental)
