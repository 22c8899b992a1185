"""evaluate(plans, source, config): the only place that collects.

Two phases, following the measured lessons of DESIGN.md section 8:
1. *Bind and tag*, shared by every plan: each table is scanned once for the union of the columns all plans need;
   its codings are exploded once and joined against one (key, system, code) membership table holding every value
   set of every plan; only rows some retrieve can match are kept. All tables are collected together.
2. *Measure logic* over those small in-memory frames: each plan is lowered and all are collected together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from datasets import views
from datasets.source import DataSource
from engine.errors import EvaluationError
from engine.lower import PKEY, Bound, Lowerer, component_columns, first_components, lower
from engine.plan import AttrTest, EventsIR, MeasurePlan, NamedEventsIR, RetrieveIR, UnionIR, walk
from engine.supply import supply_columns
from engine.timeexpr import Period

if TYPE_CHECKING:
    from engine.results import Results


@dataclass(frozen=True)
class EvaluationConfig:
    """What a run depends on besides data and definitions; nothing is read from the clock or environment.

    ``period_*`` override each measure's default measurement period; ``tz_offset_min`` is the evaluation time
    zone's offset (period boundaries are local midnights there); ``evaluated_at`` is recorded, never used as
    "now"; ``stage="eligibility"`` answers only who is eligible (initial population, denominator, exclusions,
    exceptions: the cheapest question a point-of-care app asks; the performance populations come back null);
    ``streaming`` selects polars' streaming engine for the scan phase (batch) or the in-memory one (a single
    patient, where start-up cost dominates).
    """

    period_start: date | None = None
    period_end: date | None = None
    tz_offset_min: int = 0
    evaluated_at: datetime | None = None
    streaming: bool = True
    materialize_events: bool = True
    stage: Literal["all", "eligibility"] = "all"

    def period_for(self, plan: MeasurePlan) -> Period:
        return Period(
            self.period_start or plan.period_start, self.period_end or plan.period_end, self.tz_offset_min
        )


@dataclass
class EvaluationResult:
    """One row per subject x measure x group (``subjects``), and the plans and config that produced it.

    In a notebook it answers the usual questions directly: ``.summary()``, ``.gaps()``,
    ``.attrition(measure)``, ``.explain(patient_id, measure)``, ``.measure_reports(kind)``, ``.html(path)``.
    """

    subjects: pl.DataFrame
    plans: tuple[MeasurePlan, ...]
    config: EvaluationConfig
    counts: dict[str, int] = field(default_factory=dict)
    source: DataSource | None = None

    def _results(self) -> Results:
        from engine.results import Results

        return Results(self, self.source)

    def summary(self) -> pl.DataFrame:
        """Counts and score per measure x group (and stratum)."""
        return self._results().summary()

    def gaps(self) -> pl.DataFrame:
        """Care gaps: denominator members not (or, for inverse measures, still) in the numerator."""
        return self._results().gaps()

    def attrition(self, measure: str, *, supplemental: bool = False) -> pl.DataFrame:
        """How many subjects each population step kept and dropped, per group and stratum."""
        return self._results().attrition(measure, supplemental=supplemental)

    def explain(self, patient_id: str, measure: str) -> pl.DataFrame:
        """Which named definitions were true for the patient, with the evidence behind them."""
        return self._results().explain(patient_id, measure)

    def measure_reports(
        self,
        kind: Literal["summary", "individual", "subject-list"] = "summary",
        *,
        measure: str | None = None,
        patient_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """FHIR MeasureReports (summary, subject-list, or individual for one patient)."""
        return self._results().measure_reports(kind, measure=measure, patient_id=patient_id)

    def html(self, path: str | None = None) -> str:
        """The self-contained HTML report (written to ``path`` when given)."""
        return self._results().html(path)


@dataclass
class Requirements:
    columns: dict[str, set[str]] = field(default_factory=dict)
    tags: set[tuple[str, str]] = field(default_factory=set)
    attr_tags: set[tuple[str, str]] = field(default_factory=set)
    supply: set[str] = field(default_factory=set)
    full: set[str] = field(default_factory=set)
    membership: set[tuple[str, str, str]] = field(default_factory=set)

    @classmethod
    def of(cls, plans: Iterable[MeasurePlan]) -> Requirements:
        req = cls()
        for plan in plans:
            for table, cols in plan.columns:
                req.columns.setdefault(table, set()).update(cols)
            req.tags.update(plan.tag_columns)
            req.attr_tags.update(plan.attr_tag_columns)
            req.supply.update(plan.supply_tables)
            req.membership.update(plan.membership)
            req.full.update(_full_tables(plan))
            if "payer" in plan.supplemental:
                req.columns.setdefault("coverage", set()).update({"patient_id", "type"})
                req.full.add("coverage")
        if "observation_component" in req.columns:
            req.full.add("observation_component")
        for table in req.columns:
            req.columns[table].add("patient_id")
        return req

    def lake_columns(self) -> dict[str, list[str]]:
        """What to read of each lake table (not the patient table): its own columns, and those of the views
        derived from it (``encounter_location``), which are built from the same scan, not a second one."""
        stored: dict[str, set[str]] = {}
        for table, columns in self.columns.items():
            view = views.VIEWS.get(table)
            if view is not None:
                stored.setdefault(view.base, set()).update(view.base_columns)
            elif table != "patient":
                stored.setdefault(table, set()).update(columns)
        return {t: sorted(cols) for t, cols in sorted(stored.items())}

    def membership_frame(self) -> pl.LazyFrame:
        """Every (key, system, code) the plans match on: one table for all value sets of all measures."""
        schema = {"_key": pl.String, "system": pl.String, "code": pl.String}
        return pl.DataFrame(sorted(self.membership), schema=schema, orient="row").lazy()


def _full_tables(plan: MeasurePlan) -> set[str]:
    """Tables some retrieve reads without a code restriction (all their rows must be bound)."""
    roots = [node for _, node in plan.defines]
    roots += [cond for group in plan.groups for _, cond in (*group.populations, *group.stratifiers)]
    return {n.table for root in roots for n in walk(root) if isinstance(n, RetrieveIR) and n.all_rows}


def _tag_frame(base: pl.LazyFrame, column: str, membership: pl.LazyFrame) -> pl.LazyFrame:
    """(_row, _key) for every row whose codings (or profiles) are in a membership key."""
    if column == "profiles":
        return (
            base.select("_row", pl.col("profiles").alias("_p"))
            .explode("_p")
            .drop_nulls("_p")
            .join(membership.filter(pl.col("system") == "profile"), left_on="_p", right_on="code")
            .select("_row", "_key")
            .unique()
        )
    schema = base.collect_schema()
    if schema[column] == pl.String:
        # a single code column (encounter.class_code) paired with its system column when the table has one
        system_column = column.removesuffix("_code") + "_system"
        system = pl.col(system_column) if system_column in schema else pl.lit(None, pl.String)
        coded = base.select("_row", system.alias("system"), pl.col(column).alias("code")).drop_nulls("code")
        if system_column not in schema:
            return coded.join(membership.drop("system"), on="code").select("_row", "_key").unique()
        return coded.join(membership, on=["system", "code"]).select("_row", "_key").unique()
    return (
        base.select("_row", pl.col(column).alias("_c"))
        .explode("_c")
        .drop_nulls("_c")
        .select("_row", pl.col("_c").struct.field("system"), pl.col("_c").struct.field("code"))
        .join(membership, on=["system", "code"], how="inner")
        .select("_row", "_key")
        .unique()
    )


def supplemental_columns(present: Sequence[str]) -> list[pl.Expr]:
    """The supplemental data elements per patient, computed once per run (not once per measure)."""
    out = [pl.col("gender").alias("sde_sex")]
    for name in ("race", "ethnicity"):
        if f"{name}_omb" in present:
            codes = pl.concat_list(
                pl.col(f"{name}_omb").fill_null([]), pl.col(f"{name}_detailed").fill_null([])
            )
            out.append(codes.list.unique(maintain_order=True).alias(f"sde_{name}"))
        else:
            out.append(pl.lit(None, pl.List(pl.String)).alias(f"sde_{name}"))
    payer = pl.col("_payer") if "_payer" in present else pl.lit(None, pl.List(pl.String))
    out.append(payer.alias("sde_payer"))
    return out


def bind(plans: Sequence[MeasurePlan], source: DataSource, *, streaming: bool = True) -> Bound:
    """Scan, tag and materialise what every plan needs (phase 1).

    Each table is read once (its needed columns, one scan); coding lists are then exploded and matched against
    one membership table in memory, and only rows some retrieve can match are kept. Tag frames are split by
    membership key, so a retrieve reads just its own value sets' rows.
    """
    req = Requirements.of(plans)
    membership = req.membership_frame()
    tables = [t for t in sorted(req.columns) if t != "patient"]
    stored = req.lake_columns()
    scans = [source.scan(t, cols) for t, cols in stored.items()]
    try:
        read = pl.collect_all(
            [*scans, _patients(source, req)], engine="streaming" if streaming else "in-memory"
        )
    except pl.exceptions.PolarsError as exc:
        raise EvaluationError(f"binding the data failed: {exc.__class__.__name__}: {exc}") from exc
    lake_frames = dict(zip(stored, read[:-1], strict=True))
    # the row index is added in memory after the scan: on the streaming scan it costs as much as the scan
    bases = {
        t: views.frame(t, lake_frames).select(sorted(req.columns[t])).with_row_index("_row") for t in tables
    }
    patients_lf = read[-1].lazy()
    patient_keys = patients_lf.select("patient_id", PKEY)
    names: list[tuple[str, object]] = []
    frames: list[pl.LazyFrame] = []
    for table in tables:
        base = bases[table].lazy()
        table_tags = [(t, c) for t, c in sorted(req.tags) if t == table]
        tagged: list[pl.LazyFrame] = []
        for _, column in table_tags:
            tag = _tag_frame(base, column, membership)
            names.append(("tag", (table, column)))
            frames.append(tag)
            tagged.append(tag.select("_row"))
        if table in req.full or not tagged:
            rows = base
        else:
            keep = pl.concat(tagged)
            if "not_done_valueset" in req.columns[table]:
                keep = pl.concat(
                    [keep, base.filter(pl.col("not_done_valueset").is_not_null()).select("_row")]
                )
            rows = base.join(keep.unique(), on="_row", how="semi")
        attr_columns = sorted(c for t, c in req.attr_tags - req.tags if t == table)
        for column in attr_columns:
            names.append(("tag", (table, column)))
            frames.append(_tag_frame(rows, column, membership))
        # coding lists are answered by the tags from here on; carrying them through joins costs the most
        tagged_columns = {c for _, c in table_tags} | set(attr_columns)
        rows = rows.drop([c for c in tagged_columns if c != "profiles"])
        if table in req.supply:
            rows = rows.with_columns(supply_columns(table))
        rows = rows.join(patient_keys, on="patient_id", how="left", maintain_order="left")
        names.append(("rows", table))
        frames.append(rows)
    try:
        collected = pl.collect_all(frames, engine="in-memory")
    except pl.exceptions.PolarsError as exc:
        raise EvaluationError(f"binding the data failed: {exc.__class__.__name__}: {exc}") from exc
    rows_dfs = _orphan_keys(
        {str(key): df for (kind, key), df in zip(names, collected, strict=True) if kind == "rows"},
        read[-1].height,
    )
    rows_map: dict[str, pl.LazyFrame] = {}
    tags_map: dict[tuple[str, str], pl.LazyFrame] = {}
    tag_parts: dict[tuple[str, str], dict[str, pl.LazyFrame]] = {}
    for (kind, key), df in zip(names, collected, strict=True):
        if kind == "tag":
            assert isinstance(key, tuple)
            tags_map[key] = df.lazy()
            tag_parts[key] = {
                str(k[0]): part.drop("_key").lazy()
                for k, part in df.partition_by("_key", as_dict=True).items()
            }
        else:
            assert isinstance(key, str)
            rows_map[key] = rows_dfs[key].lazy()
    attr_bits = _attr_bits(plans, tag_parts) if streaming else {}  # one patient: the semi-joins cost less
    for table in {t for t, _, _ in attr_bits}:
        rows_dfs[table] = _with_attr_bits(rows_dfs[table], table, attr_bits, tag_parts)
        rows_map[table] = rows_dfs[table].lazy()
    code_keys: dict[str, set[str]] = {}
    for key, system, code in req.membership:
        code_keys.setdefault(key, set()).add(f"{system}|{code}")
    components = _components(req, rows_map, tags_map)
    if components and "observation" in rows_map:
        rows_map["observation"] = _with_component_columns(rows_dfs["observation"], components).lazy()
    return Bound(
        rows_map,
        tags_map,
        patients_lf,
        {k: frozenset(v) for k, v in code_keys.items()},
        tag_parts=tag_parts,
        components=components,
        attr_bits=attr_bits,
        batch=streaming,
    )


def _attr_bits(
    plans: Sequence[MeasurePlan], tag_parts: Mapping[tuple[str, str], Mapping[str, pl.LazyFrame]]
) -> dict[tuple[str, str, str], tuple[str, int]]:
    """A bit per (table, column, key) that the plans' attribute tests answer from the tags: 64 to a UInt64
    column ``_attr:<table>:<n>`` of the table's rows."""
    used = sorted(
        {
            (n.table, n.column, n.tag_key)
            for plan in plans
            for root in [node for _, node in plan.defines]
            + [c for g in plan.groups for _, c in (*g.populations, *g.stratifiers)]
            for n in walk(root)
            if isinstance(n, AttrTest) and n.tag_key and (n.table, n.column) in tag_parts
        }
    )
    out: dict[tuple[str, str, str], tuple[str, int]] = {}
    counts: dict[str, int] = {}
    for table, column, key in used:
        i = counts.get(table, 0)
        counts[table] = i + 1
        out[(table, column, key)] = (f"_attr:{table}:{i // 64}", i % 64)
    return out


def _with_attr_bits(
    rows: pl.DataFrame,
    table: str,
    attr_bits: Mapping[tuple[str, str, str], tuple[str, int]],
    tag_parts: Mapping[tuple[str, str], Mapping[str, pl.LazyFrame]],
) -> pl.DataFrame:
    """The table's rows with their attribute bits (``_attr_bits``) set from the tags."""
    words: dict[str, list[pl.Expr]] = {}
    for (t, column, key), (name, bit) in attr_bits.items():
        if t != table:
            continue
        part = tag_parts[(table, column)].get(key)
        hit = pl.lit(False) if part is None else pl.col("_row").is_in(part.collect()["_row"].implode())
        words.setdefault(name, []).append(
            pl.when(hit).then(pl.lit(1 << bit, dtype=pl.UInt64)).otherwise(pl.lit(0, dtype=pl.UInt64))
        )
    return rows.with_columns(
        pl.sum_horizontal(bits).cast(pl.UInt64).alias(name) for name, bits in sorted(words.items())
    )


def _with_component_columns(rows: pl.DataFrame, components: Mapping[str, pl.LazyFrame]) -> pl.DataFrame:
    """Each observation row with the value and unit of its first component of every code the plans test
    (``component_columns``), so a component value test is a filter, not a join per test."""
    lf = rows.lazy()
    for key, matched in components.items():
        value, unit = component_columns(key)
        lf = lf.join(
            matched.rename({"_cv": value, "_cu": unit}), on=[PKEY, "id"], how="left", maintain_order="left"
        )
    try:
        return lf.collect(engine="in-memory")
    except pl.exceptions.PolarsError as exc:
        raise EvaluationError(f"binding the data failed: {exc.__class__.__name__}: {exc}") from exc


def _orphan_keys(rows: dict[str, pl.DataFrame], n_patients: int) -> dict[str, pl.DataFrame]:
    """Rows of patients missing from the patient table get keys after the patients' (numbered by id), so
    per-patient joins still group them by patient."""
    if all(df[PKEY].null_count() == df["patient_id"].null_count() for df in rows.values()):
        return rows  # every row's patient is in the patient table (null counts are free; no scan)
    missing = [df.filter(pl.col(PKEY).is_null()).select("patient_id").drop_nulls() for df in rows.values()]
    orphans = pl.concat(missing).unique().sort("patient_id") if missing else None
    if orphans is None or orphans.height == 0:
        return rows
    dtype = next(iter(rows.values())).schema[PKEY]
    extra = orphans.with_row_index("_orphan", offset=n_patients).with_columns(pl.col("_orphan").cast(dtype))
    return {
        table: df.join(extra, on="patient_id", how="left", maintain_order="left")
        .with_columns(pl.coalesce(PKEY, "_orphan").alias(PKEY))
        .drop("_orphan")
        for table, df in rows.items()
    }


def _components(
    req: Requirements, rows: Mapping[str, pl.LazyFrame], tags: Mapping[tuple[str, str], pl.LazyFrame]
) -> dict[str, pl.LazyFrame]:
    """Per component code the plans test: each observation's first component with it (one sort for all codes,
    instead of one per value test)."""
    keys = sorted({k for k, _, _ in req.membership if k.startswith("component:")})
    tagged = tags.get(("observation_component", "code"))
    if not keys or tagged is None or "observation_component" not in rows:
        return {}
    hits = tagged.filter(pl.col("_key").is_in(keys))
    comps = rows["observation_component"].join(hits, on="_row", how="inner")
    try:
        found = first_components(comps, by=["_key"]).collect(engine="in-memory")
    except pl.exceptions.PolarsError as exc:
        raise EvaluationError(f"binding the data failed: {exc.__class__.__name__}: {exc}") from exc
    parts = {
        str(k[0]): part.drop("_key").lazy() for k, part in found.partition_by("_key", as_dict=True).items()
    }
    empty = found.clear().drop("_key").lazy()
    return {k: parts.get(k, empty) for k in keys}


def _patients(source: DataSource, req: Requirements) -> pl.LazyFrame:
    """One row per patient with the supplemental data, and ``_pidx``: the patient's rank by id, a cheap key
    for ordering results deterministically."""
    patient_cols = sorted(req.columns.get("patient", {"patient_id"}) | {"patient_id", "gender", "birth_date"})
    patients = source.scan("patient", patient_cols)
    if "coverage" in req.full:
        payer = (
            source.scan("coverage", ["patient_id", "type"])
            .explode("type")
            .select("patient_id", pl.col("type").struct.field("code").alias("_c"))
            .drop_nulls("_c")
            .group_by("patient_id")
            .agg(pl.col("_c").unique().sort().alias("_payer"))
        )
        patients = patients.join(payer, on="patient_id", how="left")
    patients = patients.with_columns(supplemental_columns(patients.collect_schema().names()))
    return patients.sort("patient_id").with_row_index("_pidx").with_columns(pl.col("_pidx").alias(PKEY))


def _named_depth(node: object, plan_defines: Mapping[str, object], memo: dict[str, int]) -> int:
    """How many named event sets are nested under ``node`` (0: none), so they materialise inner first."""
    depth = 0
    for item in walk(node):
        if isinstance(item, NamedEventsIR):
            if item.name not in memo:
                memo[item.name] = 1 + _named_depth(plan_defines[item.name], plan_defines, memo)
            depth = max(depth, memo[item.name])
    return depth


def materialize_events(plans: Sequence[MeasurePlan], bound: Bound, config: EvaluationConfig) -> None:
    """Collect every named event set once, shared across plans (libraries are included by many measures),
    inner definitions first, so conditions read small in-memory frames instead of recomputing pipelines."""
    layers: dict[int, dict[tuple[EventsIR, Period], tuple[MeasurePlan, str]]] = {}
    for plan in plans:
        period = config.period_for(plan)
        defines = dict(plan.defines)
        memo: dict[str, int] = {}
        for name, node in plan.defines:
            if isinstance(node, (RetrieveIR, UnionIR, NamedEventsIR)):
                key = (node, period)
                if key not in bound.materialized:
                    layers.setdefault(_named_depth(node, defines, memo), {}).setdefault(key, (plan, name))
    for depth in sorted(layers):
        items = list(layers[depth].items())
        lazies = [Lowerer(plan, bound, config.period_for(plan)).events(key[0]) for key, (plan, _) in items]
        try:
            frames = pl.collect_all(lazies, engine="in-memory", optimizations=_optimizations(config))
        except pl.exceptions.PolarsError as exc:
            raise EvaluationError(f"evaluating event sets failed: {exc.__class__.__name__}: {exc}") from exc
        for (key, _), frame in zip(items, frames, strict=True):
            bound.materialized[key] = frame.lazy()


def _optimizations(config: EvaluationConfig) -> pl.QueryOptFlags:
    """The query optimiser pays off on large inputs; for one patient its fixed cost dominates (calibration:
    prebuilt plans run about twice as fast without it), so the in-memory single-patient path skips it."""
    return pl.QueryOptFlags() if config.streaming else pl.QueryOptFlags.none()


def evaluate(
    plans: Iterable[MeasurePlan], source: DataSource, config: EvaluationConfig | None = None
) -> EvaluationResult:
    """Evaluate every plan over the source: one row per subject x measure x group, populations as booleans."""
    config = config or EvaluationConfig()
    plan_list = tuple(plans)
    if not plan_list:
        raise EvaluationError("no measures to evaluate")
    bound = bind(plan_list, source, streaming=config.streaming)
    if config.materialize_events:
        materialize_events(plan_list, bound, config)
    lazies = [lower(plan, bound, config.period_for(plan), config.stage) for plan in plan_list]
    try:
        parts = pl.collect_all(lazies, engine="in-memory", optimizations=_optimizations(config))
    except pl.exceptions.PolarsError as exc:
        raise EvaluationError(f"evaluating measures failed: {exc.__class__.__name__}: {exc}") from exc
    # each part is ordered by patient (then episode) within its groups; plans keep the order they were given
    subjects = pl.concat(parts, how="diagonal_relaxed")
    return EvaluationResult(subjects, plan_list, config, source=source)
