"""Lower a MeasurePlan to polars over bound frames: event sets become LazyFrames of rows, conditions become
expressions over one subject frame (one row per patient) to which per-patient aggregates are joined.

Nothing here collects; ``engine.evaluate`` decides when and how.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from definitions.model import Compare, TimeRef, Timing, Window
from engine import timeexpr
from engine.links import LIST_LINKS
from engine.plan import (
    AgeIR,
    AllIR,
    AnyIR,
    ArithObsIR,
    AttrTest,
    CondIR,
    CountIR,
    CoveredDaysIR,
    DefineIR,
    DurationObsIR,
    EpisodeIR,
    EventsIR,
    ExistsIR,
    ExtendIR,
    FilterIR,
    GenderIR,
    IfObsIR,
    MeasurePlan,
    NamedEventsIR,
    NotIR,
    NumberObsIR,
    ObsIR,
    PickIR,
    RelatedPickIR,
    RelatedTest,
    RetrieveIR,
    TimingTest,
    UnionIR,
    ValueTest,
    children,
    component_key,
)
from engine.populations import cascade
from engine.timeexpr import POLARS_UNIT as _POLARS_UNIT
from engine.units import CONVERSIONS, factor

# every bound row carries ``_pkey``: its patient as an integer (the patient's ``_pidx``; patients missing from
# the patient table numbered after them), so per-patient joins and group-bys work on integers, not strings
PKEY = "_pkey"
KEYS = (PKEY,)
# populations that decide who is eligible; the rest (numerator, numerator exclusion, observations) measure
# performance and are evaluated only for subjects in the initial population
ELIGIBILITY_POPULATIONS = frozenset(
    {"initial_population", "denominator", "denominator_exclusion", "denominator_exception",
     "measure_population", "measure_population_exclusion"}
)  # fmt: skip
EPISODE_KEYS = (PKEY, "episode_id")
EKEY = "_ekey"  # an episode's number in the subject frame of an episode-based measure


@dataclass
class Bound:
    """The frames a run binds: rows per table (with a ``_row`` id), tags per (table, code column), patients."""

    rows: Mapping[str, pl.LazyFrame]
    tags: Mapping[tuple[str, str], pl.LazyFrame]
    patients: pl.LazyFrame
    code_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)  # value-set URL -> "system|code"
    materialized: dict[tuple[EventsIR, timeexpr.Period], pl.LazyFrame] = field(default_factory=dict)
    tag_parts: dict[tuple[str, str], dict[str, pl.LazyFrame]] = field(default_factory=dict)
    # component key -> (patient_id, id, _cv, _cu): each observation's first component with that code, bound once
    components: dict[str, pl.LazyFrame] = field(default_factory=dict)
    # (table, column, membership key) of a tag-answered attribute test -> (column of the table's bound rows, bit):
    # the bit is set on the rows whose coding is in the key, so the test is a filter, not a semi-join on the tags
    attr_bits: dict[tuple[str, str, str], tuple[str, int]] = field(default_factory=dict)
    # bound for a batch (plans collected with the optimiser, shared subplans computed once); False for one
    # patient, where each extra plan node costs more than integer keys save
    batch: bool = True

    def tagged_rows(self, table: str, column: str, keys: list[str]) -> pl.LazyFrame | None:
        """``_row`` of the rows whose (table, column) codings are in one of ``keys``; None if not tagged."""
        parts = self.tag_parts.get((table, column))
        if parts is None:
            tags = self.tags.get((table, column))
            return None if tags is None else tags.filter(pl.col("_key").is_in(keys)).select("_row")
        found = [parts[k] for k in keys if k in parts]
        if not found:
            return pl.LazyFrame(schema={"_row": pl.UInt32})
        return found[0] if len(found) == 1 else pl.concat(found)


def compare(expr: pl.Expr, cmp: Compare) -> pl.Expr:
    if cmp.op == "is_null":
        return expr.is_null()
    if cmp.op == "not_null":
        return expr.is_not_null()
    value = pl.lit(cmp.value)
    return {"<": expr < value, "<=": expr <= value, ">": expr > value, ">=": expr >= value,
            "==": expr == value, "!=": expr != value}[cmp.op]  # fmt: skip


def converted(value: pl.Expr, unit: pl.Expr, target: str | None) -> pl.Expr:
    """``value`` expressed in ``target`` (UCUM); null when the row's unit does not convert."""
    if target is None:
        return value
    factors = {u: f for u in CONVERSIONS if (f := factor(u, target)) is not None}
    factors[target] = 1.0
    scale = (
        pl.when(unit.is_null())
        .then(pl.lit(1.0))
        .otherwise(unit.replace_strict(factors, default=None, return_dtype=pl.Float64))
    )
    return value * scale


def _coding_keys(column: str) -> pl.Expr:
    return pl.col(column).list.eval(
        pl.element().struct.field("system") + pl.lit("|") + pl.element().struct.field("code")
    )


class Lowerer:
    def __init__(self, plan: MeasurePlan, bound: Bound, period: timeexpr.Period, stage: str = "all") -> None:
        self.plan = plan
        self.stage = stage
        self.bound = bound
        self.period = period
        self.named: dict[str, pl.LazyFrame] = {}
        self.aggs: list[tuple[str, pl.LazyFrame, tuple[str, ...]]] = []
        self.episodic = plan.basis == "encounter"
        self.defines = dict(plan.defines)
        self._n = 0
        self._episodes: pl.LazyFrame | None = None

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"_{prefix}{self._n}"

    # ------------------------------------------------------------------------------------------ events
    def events(self, node: EventsIR) -> pl.LazyFrame:
        if isinstance(node, RetrieveIR):
            frame = self.bound.rows[node.table]
            if not node.all_rows:
                keys = list(node.keys)
                parts: list[pl.LazyFrame] = []
                code_rows = self.bound.tagged_rows(node.table, node.code_column, keys)
                if code_rows is not None:
                    parts.append(code_rows)
                if node.negated_urls:
                    negated = frame.filter(pl.col("not_done_valueset").is_in(list(node.negated_urls)))
                    parts.append(negated.select("_row"))
                profiled = self.bound.tagged_rows(node.table, "profiles", keys)
                if profiled is not None and any(k.startswith("profile:") for k in keys):
                    parts.append(profiled)
                matched = pl.concat(parts) if parts else frame.select("_row").clear()
                frame = frame.join(matched.unique(), on="_row", how="semi")
            return self.apply(self.extend(frame, node.extend), node.filters)
        if isinstance(node, UnionIR):
            parts = [self.events(p) for p in node.parts]
            if node.mixed:
                return self.apply(self.mixed_union(parts), node.filters)
            frame = pl.concat(parts, how="diagonal_relaxed").unique(subset="_row", keep="first")
            return self.apply(frame, node.filters)
        base = self.named.get(node.name)
        if base is None:
            target = self.defines[node.name]
            assert not isinstance(
                target,
                (
                    AllIR,
                    AnyIR,
                    NotIR,
                    DefineIR,
                    ExistsIR,
                    CountIR,
                    AgeIR,
                    GenderIR,
                    PickIR,
                    CoveredDaysIR,
                    EpisodeIR,
                ),
            )
            base = self.bound.materialized.get((target, self.period))
            if base is None:
                base = self.events(target)
            self.named[node.name] = base
        return self.apply(self.extend(base, node.extend), node.filters)

    def extend(self, frame: pl.LazyFrame, steps: tuple[ExtendIR, ...]) -> pl.LazyFrame:
        """``_ext_start``: the start moved back, step by step, to the start of the latest row of each step's
        event set that ends on or before it and at most ``within`` earlier (CQMCommon
        hospitalizationWithObservation)."""
        if not steps:
            return frame
        current = frame.with_columns(pl.col("start").alias("_ext_start"))
        for step in steps:
            events = self.events(step.events)
            prec = pl.col("end_prec") if "end_prec" in events.collect_schema().names() else None
            other = events.select(
                PKEY, pl.col("start").alias("_xs"), pl.col("end").alias("_xe"),
                timeexpr.end_as_written(pl.col("end"), prec).alias("_xw"),
            )  # fmt: skip
            earliest = pl.col("_ext_start").dt.offset_by(
                f"-{step.within.amount}{_POLARS_UNIT[step.within.unit]}"
            )
            hits = (
                current.select("_row", PKEY, "_ext_start")
                .join(other, on=PKEY, how="inner")
                .filter(
                    (pl.col("_xw") <= pl.col("_ext_start").dt.truncate("1ms"))
                    & (pl.col("_xw") >= earliest.dt.truncate("1ms"))
                )
                .sort("_row", "_xe", "_xs")
                .unique(subset="_row", keep="last", maintain_order=True)
                .select("_row", "_xs")
            )
            current = (
                current.join(hits, on="_row", how="left")
                .with_columns(pl.coalesce("_xs", "_ext_start").alias("_ext_start"))
                .drop("_xs")
            )
        return current

    def mixed_union(self, parts: list[pl.LazyFrame]) -> pl.LazyFrame:
        """Rows of several tables: their event columns, each row once; ``_row`` renumbered per part so rows of
        different tables stay distinct."""
        common = ["patient_id", PKEY, "id", "start", "end", "tz_offset_min", "_row"]
        tagged = [
            p.select(common).with_columns(
                (pl.lit(i, pl.UInt64) * (1 << 32) + pl.col("_row").cast(pl.UInt64)).alias("_row")
            )
            for i, p in enumerate(parts)
        ]
        return pl.concat(tagged).unique(subset="_row", keep="first")

    def apply(self, frame: pl.LazyFrame, filters: tuple[FilterIR, ...]) -> pl.LazyFrame:
        for f in filters:
            frame = self.filter(frame, f)
        return frame

    def filter(self, frame: pl.LazyFrame, node: FilterIR) -> pl.LazyFrame:
        if isinstance(node, AttrTest):
            return self.attr_frame(frame, node)
        if isinstance(node, ValueTest):
            if node.component is None:
                return frame.filter(
                    self.value_test(pl.col("value_quantity"), pl.col("value_unit"), node.compare)
                )
            value, unit = component_columns(component_key(*node.component))
            if value in frame.collect_schema():  # attached to the observation rows at bind
                return frame.filter(self.value_test(pl.col(value), pl.col(unit), node.compare))
            with_comp = self.with_component(frame, node.component)
            keep = with_comp.filter(self.value_test(pl.col("_cv"), pl.col("_cu"), node.compare))
            return frame.join(keep.select("_row"), on="_row", how="semi")
        if isinstance(node, TimingTest):
            return self.with_birth_date(frame, node.timing).filter(
                timeexpr.relation(node.timing, self.period)
            )
        return self.related(frame, node)

    def with_birth_date(self, frame: pl.LazyFrame, timing: Timing) -> pl.LazyFrame:
        """Timings relative to birth or death need those patient columns beside each row."""
        anchors = timing_anchors(timing)
        needed = [
            c for a, c in (("birth_date", "birth_date"), ("death", "deceased_datetime")) if a in anchors
        ]
        if not needed:
            return frame
        present = set(frame.collect_schema().names())
        wanted = [column for column in needed if column not in present]
        if not wanted:
            return frame
        return frame.join(self.bound.patients.select(PKEY, *wanted), on=PKEY, how="left")

    def value_test(self, value: pl.Expr, unit: pl.Expr, cmp: Compare) -> pl.Expr:
        if cmp.op in ("is_null", "not_null"):
            return compare(value, cmp)
        return compare(converted(value, unit, cmp.unit), cmp)

    def attr_frame(self, frame: pl.LazyFrame, node: AttrTest) -> pl.LazyFrame:
        """Answer a coding test from the bind-time tags when there are some (no per-row list work)."""
        slot = self.bound.attr_bits.get((node.table, node.column, node.tag_key)) if node.tag_key else None
        if slot is not None and slot[0] in frame.collect_schema():
            return frame.filter((pl.col(slot[0]) & pl.lit(1 << slot[1], dtype=pl.UInt64)) != 0)
        hits = self.bound.tagged_rows(node.table, node.column, [node.tag_key]) if node.tag_key else None
        if hits is None:
            return frame.filter(self.attr(node))
        return frame.join(hits, on="_row", how="semi")

    def attr(self, node: AttrTest) -> pl.Expr:
        if node.kind == "valueset":
            keys = sorted(self.bound.code_keys.get(node.values[0], frozenset()))
            return _coding_keys(node.column).list.eval(pl.element().is_in(keys)).list.any()
        return attr_expr(node)

    def with_component(self, frame: pl.LazyFrame, component: tuple[str, str]) -> pl.LazyFrame:
        """The frame's rows with ``_cv``/``_cu``: the value and unit of their first component with the code."""
        key = component_key(*component)
        value, unit = component_columns(key)
        if value in frame.collect_schema():  # attached to the observation rows at bind
            return frame.with_columns(pl.col(value).alias("_cv"), pl.col(unit).alias("_cu"))
        matched = self.bound.components.get(key)
        if matched is None:
            comps = self.bound.rows["observation_component"]
            hits = self.bound.tagged_rows("observation_component", "code", [key])
            if hits is not None:
                comps = comps.join(hits, on="_row", how="semi")
            else:
                comps = comps.filter(_coding_keys("code").list.contains(f"{component[0]}|{component[1]}"))
            matched = first_components(comps)
        return frame.join(matched, on=[PKEY, "id"], how="left")

    def related(self, frame: pl.LazyFrame, node: RelatedTest) -> pl.LazyFrame:
        other = self.events(node.events)
        other = suffixed(other)
        joined = frame.join(other, on=PKEY, how="inner")
        cond = pl.lit(True)
        if node.link == "encounter":
            cond = cond & (pl.col("encounter_id") == pl.col("id_o"))
        elif node.link == "reverse_encounter":
            cond = cond & (pl.col("encounter_id_o") == pl.col("id"))
        elif node.link in LIST_LINKS:
            cond = cond & pl.col("id_o").is_in(LIST_LINKS[node.link].ids()).fill_null(False)
        for timing in node.timing:
            joined = self.with_birth_date(joined, timing)
            cond = cond & timeexpr.relation(timing, self.period)
        related = joined.filter(cond)
        if node.pick is None:
            hits = related.select("_row").unique()
        else:
            hits = self.picked(related, node.pick, node.events)
        return frame.join(hits, on="_row", how="anti" if node.negate else "semi")

    def picked(self, related: pl.LazyFrame, pick: RelatedPickIR, events: EventsIR) -> pl.LazyFrame:
        """This side's rows (``_row``) whose picked related row (the last/first by time, or every related row
        on that row's local day) is a row of ``pick.members`` passing ``pick.test``."""
        ref = TimeRef(ref=f"other.{pick.time}")
        if pick.day:
            day = timeexpr.data_value(ref, "day")
            assert isinstance(day, timeexpr.Point)
            dated = related.select("_row", "_row_o", day.expr.alias("_d"))
            extreme = pl.col("_d").max() if pick.by == "latest" else pl.col("_d").min()
            chosen = dated.filter(pl.col("_d") == extreme.over("_row"))
        else:
            point = timeexpr.data_value(ref, "instant")
            assert isinstance(point, timeexpr.Point)
            keep: Literal["first", "last"] = "last" if pick.by == "latest" else "first"
            chosen = (
                related.select("_row", "_row_o", "id_o", point.expr.alias("_t"))
                .sort(["_row", "_t", "id_o"], nulls_last=False)
                .unique(subset="_row", keep=keep, maintain_order=True)
            )
        passing = self.apply(self.events(pick.members or events), pick.test)
        return (
            chosen.join(passing.select(pl.col("_row").alias("_row_o")), on="_row_o", how="semi")
            .select("_row")
            .unique()
        )

    # ------------------------------------------------------------------------------------------ aggregates
    def agg(
        self, frame: pl.LazyFrame, default: pl.Expr | None, keys: tuple[str, ...] = KEYS, *, name: str
    ) -> pl.Expr:
        """Join a per-subject frame (keys + the column ``name``) to the subject frame; its column's expression."""
        self.aggs.append((name, frame, keys))
        col = pl.col(name)
        return col if default is None else col.fill_null(default)

    def membership(self, events: EventsIR) -> pl.Expr:
        """The episode (subject row) is one of the event set's rows."""
        name = self.fresh("member")
        rows = self.events(events).select(PKEY, pl.col("id").alias("episode_id"))
        if not self.bound.batch:
            frame = rows.unique().with_columns(pl.lit(True).alias(name))
            return self.agg(frame, pl.lit(False), EPISODE_KEYS, name=name)
        keys = self.episodes().select(EKEY, *EPISODE_KEYS)
        frame = keys.join(rows, on=list(EPISODE_KEYS), how="semi").select(EKEY, pl.lit(True).alias(name))
        return self.agg(frame, pl.lit(False), (EKEY,), name=name)

    def has(self, events: EventsIR) -> pl.Expr:
        """An event set used as a criterion: the episode is in it (episode basis) or the patient has one."""
        return self.membership(events) if self.episodic else self.exists(events)

    def exists(self, events: EventsIR) -> pl.Expr:
        name = self.fresh("exists")
        frame = self.events(events).select(PKEY).unique().with_columns(pl.lit(True).alias(name))
        return self.agg(frame, pl.lit(False), name=name)

    # ------------------------------------------------------------------------------------------ conditions
    def cond(self, node: CondIR) -> pl.Expr:
        if isinstance(node, AllIR):
            out = self.cond(node.items[0])
            for item in node.items[1:]:
                out = out & self.cond(item)
            return out
        if isinstance(node, AnyIR):
            out = self.cond(node.items[0])
            for item in node.items[1:]:
                out = out | self.cond(item)
            return out
        if isinstance(node, NotIR):
            return self.cond(node.item).not_()
        if isinstance(node, DefineIR):  # a column of the subject frame (event sets: has one / is one)
            return pl.col(define_column(node.name))
        if isinstance(node, ExistsIR):
            return self.exists(node.events)
        if isinstance(node, CountIR):
            return self.count(node)
        if isinstance(node, AgeIR):
            return self.age(node)
        if isinstance(node, GenderIR):
            return pl.col("gender") == pl.lit(node.gender)
        if isinstance(node, PickIR):
            return self.pick(node)
        if isinstance(node, EpisodeIR):
            return self.has(node.events)
        return self.covered(node)

    # ------------------------------------------------------------------------------------------ observations
    def obs(self, node: ObsIR) -> pl.Expr:
        if isinstance(node, NumberObsIR):
            return pl.lit(node.value, dtype=pl.Float64)
        if isinstance(node, IfObsIR):
            return (
                pl.when(self.cond(node.cond).fill_null(False))
                .then(self.obs(node.then))
                .otherwise(self.obs(node.otherwise))
            )
        if isinstance(node, ArithObsIR):
            items = [self.obs(i) for i in node.items]
            if node.op == "sum":
                return pl.sum_horizontal(items)  # CQL Sum ignores nulls
            if node.op == "product":
                out = items[0]
                for item in items[1:]:
                    out = out * item
                return out
            return pl.when(items[1] == 0).then(None).otherwise(items[0] / items[1])
        if isinstance(node, DurationObsIR):
            start = timeexpr.resolve(node.start, self.period, "instant")
            end = timeexpr.resolve(node.end, self.period, "instant")
            if not isinstance(start, timeexpr.Point) or not isinstance(end, timeexpr.Point):
                raise ValueError("a duration is measured between two points")
            delta = end.expr - start.expr
            unit = {"minutes": delta.dt.total_minutes(), "hours": delta.dt.total_hours(),
                    "days": delta.dt.total_days()}[node.unit]  # fmt: skip
            return unit.cast(pl.Float64)
        name = self.fresh("count")
        frame = self.events(node.events).group_by(PKEY).agg(pl.col("_row").n_unique().alias(name))
        return self.agg(frame, pl.lit(0, dtype=pl.UInt32), name=name).cast(pl.Float64)

    def count(self, node: CountIR) -> pl.Expr:
        name = self.fresh("count")
        rows = self.events(node.events)
        if node.distinct == "days":
            day = pl.col("start") + pl.duration(minutes=pl.col("tz_offset_min").fill_null(0).cast(pl.Int64))
            rows = rows.select(PKEY, day.dt.date().alias("_d")).drop_nulls("_d")
            frame = rows.group_by(PKEY).agg(pl.col("_d").n_unique().alias(name))
        else:
            frame = rows.group_by(PKEY).agg(pl.col("_row").n_unique().alias(name))
        counted = self.agg(frame, pl.lit(0, dtype=pl.UInt32), name=name)
        return compare(counted, node.compare)

    def age(self, node: AgeIR) -> pl.Expr:
        at = timeexpr.point_date(node.at, self.period)
        birth = pl.col("birth_date")
        before_birthday = (birth.dt.month() > at.month) | (
            (birth.dt.month() == at.month) & (birth.dt.day() > at.day)
        )
        if node.unit == "years":
            age = pl.lit(at.year) - birth.dt.year() - before_birthday.cast(pl.Int32)
        elif node.unit == "months":
            age = (
                (pl.lit(at.year) - birth.dt.year()) * 12
                + pl.lit(at.month)
                - birth.dt.month()
                - (birth.dt.day() > at.day).cast(pl.Int32)
            )
        else:
            age = (pl.lit(at) - birth).dt.total_days()
        out = pl.lit(True)
        if node.min is not None:
            out = out & (age >= node.min)
        if node.max is not None:
            out = out & (age <= node.max)
        return pl.when(birth.is_null()).then(pl.lit(False)).otherwise(out)  # unknown birth date: false

    def pick(self, node: PickIR) -> pl.Expr:
        rows = self.events(node.events)
        point = timeexpr.data_value(TimeRef(ref=f"this.{node.time}"), "instant")
        assert isinstance(point, timeexpr.Point)
        rows = rows.with_columns(point.expr.alias("_t"))
        if node.day is not None:
            day = timeexpr.data_value(TimeRef(ref=f"this.{node.time}"), "day")
            assert isinstance(day, timeexpr.Point)
            rows = rows.with_columns(day.expr.alias("_d"))
            extreme = pl.col("_d").max() if node.day == "latest" else pl.col("_d").min()
            rows = rows.filter(pl.col("_d") == extreme.over(PKEY))
        if node.by in ("latest", "earliest"):
            key = pl.col("_t")
        else:
            if node.component is not None:
                rows = self.with_component(rows, node.component)
                key = converted(pl.col("_cv"), pl.col("_cu"), node.unit)
            else:
                key = converted(pl.col("value_quantity"), pl.col("value_unit"), node.unit)
        # one ascending order as CQL sorts (unknown first, then the key, ties by row id): earliest/lowest take
        # the first row, latest/highest the last
        ordered = rows.with_columns(key.alias("_k")).sort([PKEY, "_k", "id"], nulls_last=False)
        keep: Literal["first", "last"] = "first" if node.by in ("earliest", "lowest") else "last"
        picked = ordered.unique(subset=PKEY, keep=keep, maintain_order=True)
        passed = self.apply(picked, node.test)
        p_name, ok_name = self.fresh("picked"), self.fresh("passed")
        has = self.agg(
            picked.select(PKEY).with_columns(pl.lit(True).alias(p_name)), pl.lit(False), name=p_name
        )
        ok = self.agg(
            passed.select(PKEY).with_columns(pl.lit(True).alias(ok_name)), pl.lit(False), name=ok_name
        )
        return pl.when(has).then(ok).otherwise(pl.lit(node.missing))

    def covered(self, node: CoveredDaysIR) -> pl.Expr:
        """Days of the window covered by the union of the rows' intervals (supply days for medications); with
        a relative event set, per row of it (the window then names ``other.*``), true when any row satisfies."""
        name = self.fresh("covered")
        window = timeexpr.resolve_target(node.window, self.period, "day")
        assert isinstance(window, timeexpr.Span)
        interval = timeexpr.data_value(TimeRef(ref="this.supply" if node.use_supply else "this"), "day")
        assert isinstance(interval, timeexpr.Span)
        lo = window.lo + pl.duration(days=1) if window.closed[0] == "(" else window.lo
        hi = window.hi - pl.duration(days=1) if window.closed[1] == ")" else window.hi
        rows = self.events(node.events).filter(interval.lo.is_not_null() & interval.hi.is_not_null())
        keys = [PKEY]
        if node.relative is not None:
            other = self.events(node.relative)
            other = suffixed(other)
            rows = other.join(rows, on=PKEY, how="left")
            keys = [PKEY, "_row_o"]
        clipped = (
            rows.select(
                *keys,
                pl.max_horizontal(interval.lo, lo).alias("_lo"),
                pl.min_horizontal(interval.hi, hi).alias("_hi"),
                (interval.lo.is_not_null() & lo.is_not_null() & hi.is_not_null()).alias("_known"),
                (lo.is_not_null() & hi.is_not_null()).alias("_window_known"),
            )
            .with_columns(
                pl.when(pl.col("_known") & (pl.col("_lo") <= pl.col("_hi")))
                .then(pl.date_ranges("_lo", "_hi"))
                .otherwise(pl.lit([], dtype=pl.List(pl.Date)))
                .alias("_day")
            )
            .explode("_day")
        )
        counted = clipped.group_by(keys).agg(
            pl.when(pl.col("_window_known").all())  # an unknown window end: the count is unknown
            .then(pl.col("_day").drop_nulls().n_unique().cast(pl.UInt32))
            .alias("_n")
        )
        if node.relative is None:
            frame = counted.select(PKEY, pl.col("_n").alias(name))
            return compare(self.agg(frame, pl.lit(0, dtype=pl.UInt32), name=name), node.compare)
        satisfied = counted.filter(compare(pl.col("_n"), node.compare).fill_null(False))
        frame = satisfied.select(PKEY).unique().with_columns(pl.lit(True).alias(name))
        return self.agg(frame, pl.lit(False), name=name)

    # ------------------------------------------------------------------------------------------ subjects
    def define_expr(self, name: str, node: CondIR | EventsIR) -> pl.Expr:
        if isinstance(node, (RetrieveIR, UnionIR, NamedEventsIR)):
            return self.has(NamedEventsIR(name, ()))
        return self.cond(node)

    def reachable(self, roots: Sequence[object]) -> set[str]:
        """Named definitions the roots depend on, transitively."""
        found: set[str] = set()
        stack = list(roots)
        while stack:
            node = stack.pop()
            if isinstance(node, (DefineIR, NamedEventsIR)) and node.name not in found:
                found.add(node.name)
                stack.append(self.defines[node.name])
            stack.extend(children(node))
        return found

    def subjects(self) -> pl.LazyFrame:
        """One row per subject x group (a patient, or an episode for encounter-based measures): populations
        after the cascade, observations, strata, SDEs and the definitions that were true.

        Eligibility first: the initial population and the definitions it rests on are evaluated for every
        subject; everything else only for subjects in some group's initial population (every population of a
        subject outside it is false by the cascade), so most joins touch a small fraction of the rows."""
        ips = {g.id: dict(g.populations)["initial_population"] for g in self.plan.groups}
        early = self.reachable(list(ips.values()))
        eligibility_only = self.stage == "eligibility"
        if eligibility_only:
            needed = self.reachable(
                [c for g in self.plan.groups for p, c in g.populations if p in ELIGIBILITY_POPULATIONS]
                + [c for g in self.plan.groups for _, c in g.stratifiers]
            )
        order = [
            name for name, _ in self.plan.defines if not eligibility_only or name in needed or name in early
        ]
        exprs: dict[str, pl.Expr] = {}
        for name, node in self.plan.defines:
            if name in early:
                exprs[name] = self.define_expr(name, node)
        ip_exprs = {gid: self.cond(ip) for gid, ip in ips.items()}
        early_aggs = len(self.aggs)
        for name, node in self.plan.defines:
            if name not in early and name in order:
                exprs[name] = self.define_expr(name, node)
        group_exprs = []
        for group in self.plan.groups:
            pops = {
                pop: ip_exprs[group.id] if pop == "initial_population" else self.cond(cond)
                for pop, cond in group.populations
                if not eligibility_only or pop in ELIGIBILITY_POPULATIONS
            }
            strata = [(sid, self.cond(cond)) for sid, cond in group.stratifiers]
            observations = [] if eligibility_only else [(o, self.obs(o.value)) for o in group.observations]
            group_exprs.append((group.id, pops, strata, observations))
        frame = self.subject_frame()
        for _name, agg, keys in self.aggs[:early_aggs]:
            frame = frame.join(agg, on=list(keys), how="left")
        for name in order:
            if name in early:
                frame = frame.with_columns(exprs[name].alias(define_column(name)))
        eligible = pl.any_horizontal([e.fill_null(False) for e in ip_exprs.values()])
        frame = frame.with_columns(eligible.alias("_eligible"))
        inside = frame.filter(pl.col("_eligible"))
        for _name, agg, keys in self.aggs[early_aggs:]:
            inside = inside.join(agg, on=list(keys), how="left")
        for name in order:
            if name not in early:
                inside = inside.with_columns(exprs[name].alias(define_column(name)))
        # the definitions that were true, once per subject (not per group); outside the initial population only
        # the early ones can be (the others are not evaluated there: null)
        inside = inside.with_columns(
            names_where_true([(name, pl.col(define_column(name))) for name in order]).alias("_true_defines")
        )
        outside = frame.filter(~pl.col("_eligible")).with_columns(
            names_where_true([(n, pl.col(define_column(n))) for n in order if n in early]).alias(
                "_true_defines"
            )
        )
        frame = pl.concat([inside, outside], how="diagonal")
        sde = self.sde_columns()
        if len(group_exprs) > 1:  # one sort for all groups (each group's rows keep the frame's order)
            frame = frame.sort("_pidx", "episode_id", nulls_last=False)
        outputs = []
        for gid, pops, strata, observations in group_exprs:
            populations = cascade(self.plan.scoring, pops)
            if eligibility_only:
                populations = {
                    p: e if p in ELIGIBILITY_POPULATIONS else pl.lit(None, pl.Boolean)
                    for p, e in populations.items()
                }
            observed = [
                pl.when(observed_members(populations, o.population)).then(value).alias(f"obs:{o.id}")
                for o, value in observations
            ]
            outputs.append(
                frame.select(
                    pl.lit(self.plan.measure_id).alias("measure_id"),
                    pl.lit(gid).alias("group_id"),
                    "patient_id",
                    "episode_id",
                    *[e.alias(p) for p, e in populations.items()],
                    *observed,
                    names_where_true(strata).alias("strata"),
                    *sde,
                    pl.col("_true_defines").alias("true_defines"),
                    "_pidx",
                )
            )
        if len(outputs) == 1:
            outputs = [outputs[0].sort("_pidx", "episode_id", nulls_last=False)]
        return pl.concat(outputs, how="diagonal_relaxed").drop("_pidx")

    def subject_frame(self) -> pl.LazyFrame:
        """Patients; or, for episode-based measures, the episodes of every group's initial population."""
        patients = self.bound.patients
        if not self.episodic:
            return patients.with_columns(pl.lit(None, pl.String).alias("episode_id"))
        return self.episodes().join(patients.drop("patient_id"), on=PKEY, how="left")

    def episodes(self) -> pl.LazyFrame:
        """The episodes of every group's initial population, each once, numbered ``_ekey`` in (patient, episode)
        order: memberships are then joined to the subject frame on one integer."""
        if self._episodes is None:
            episodes = []
            for group in self.plan.groups:
                ip = dict(group.populations)["initial_population"]
                events = ip.events if isinstance(ip, EpisodeIR) else NamedEventsIR(ip.name, ())  # type: ignore[union-attr]
                episodes.append(
                    self.events(events).select(
                        "patient_id", PKEY, pl.col("id").alias("episode_id"), "start", "end", "tz_offset_min"
                    )
                )
            unique = pl.concat(episodes).unique(subset=[PKEY, "episode_id"], keep="first")
            self._episodes = (
                unique.sort(PKEY, "episode_id").with_row_index(EKEY) if self.bound.batch else unique
            )
        return self._episodes

    def sde_columns(self) -> list[pl.Expr]:
        """The supplemental data elements, computed once per run when the patients were bound."""
        return [pl.col(name) for name in ("sde_sex", "sde_race", "sde_ethnicity", "sde_payer")]


@functools.lru_cache(maxsize=4096)
def attr_expr(node: AttrTest) -> pl.Expr:
    """The filter expression of an attribute test (cached: plans are lowered once per request)."""
    col = timeexpr.length_days() if node.column == "length_days" else pl.col(node.column)
    if node.kind == "in":
        return col.is_in(list(node.values))
    if node.kind == "not_in":
        return col.is_in(list(node.values)).not_().fill_null(True)
    if node.kind == "compare":
        assert node.compare is not None
        return compare(col, node.compare)
    if node.kind == "is_true":
        return col.fill_null(False) if node.flag else col.fill_null(False).not_()
    if node.kind == "is_null":
        return col.is_null() if node.flag else col.is_not_null()
    keys = [f"{s}|{c}" for s, c in node.codes]
    return _coding_keys(node.column).list.eval(pl.element().is_in(keys)).list.any()


def first_components(comps: pl.LazyFrame, by: Sequence[str] = ()) -> pl.LazyFrame:
    """Each observation's first component (lowest ``component_ix``) among ``comps``: (patient_id, id, _cv, _cu);
    with ``by``, per value of those columns too (one sort for several component codes)."""
    keys = [*by, PKEY, "observation_id"]
    # a stable sort on the one integer column, then the first row per key: the lowest component_ix (ties in file
    # order), without sorting on the string keys
    return (
        comps
        .sort("component_ix", maintain_order=True)
        .unique(subset=keys, keep="first")
        .select(*by, PKEY, pl.col("observation_id").alias("id"), pl.col("value_quantity").alias("_cv"),
                pl.col("value_unit").alias("_cu"))
    )  # fmt: skip


def component_columns(key: str) -> tuple[str, str]:
    """The bound observation rows' columns holding their first ``key`` component's value and unit."""
    return f"_cv:{key}", f"_cu:{key}"


def suffixed(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Every column but the patient key renamed ``<name>_o``: the other side of a relation."""
    return frame.select(pl.col(PKEY), pl.all().exclude(PKEY).name.suffix("_o"))


def timing_anchors(timing: Timing) -> set[str]:
    """Every anchor a timing mentions."""
    right = timing.right
    points = [right.start, right.end] if isinstance(right, Window) else [right]
    return {timing.left.ref, *(p.ref for p in points)}


def observed_members(populations: dict[str, pl.Expr], population: str) -> pl.Expr:
    """Subjects whose observation counts: members of the population and not of its exclusion."""
    exclusion = {"measure_population": "measure_population_exclusion", "denominator": "denominator_exclusion",
                 "numerator": "numerator_exclusion"}.get(population)  # fmt: skip
    member = populations.get(population, pl.lit(False))
    if exclusion and exclusion in populations:
        member = member & populations[exclusion].not_()
    return member


def names_where_true(items: list[tuple[str, pl.Expr]]) -> pl.Expr:
    """The list of names whose expression is true. Built as a joined string then split: an order of magnitude
    faster in polars than concatenating lists of when/then (measured: 0.04 s vs 0.64 s on 100k rows)."""
    if not items:
        return pl.lit([], dtype=pl.List(pl.String))
    joined = pl.concat_str(
        [pl.when(e.fill_null(False)).then(pl.lit(name)) for name, e in items],
        separator="\x1f",
        ignore_nulls=True,
    )
    return (
        pl.when(joined == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(joined.str.split("\x1f"))
    )


def define_column(name: str) -> str:
    return f"def:{name}"


def lower(plan: MeasurePlan, bound: Bound, period: timeexpr.Period, stage: str = "all") -> pl.LazyFrame:
    """The plan's per-subject result over the bound frames (lazy). ``stage="eligibility"`` evaluates only the
    eligibility populations (initial population, denominator, exclusions, exceptions); the performance ones
    (numerator, numerator exclusion, observations) are then null: not evaluated."""
    return Lowerer(plan, bound, period, stage).subjects()
