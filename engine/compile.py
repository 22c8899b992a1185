"""compile_measure: a checked definition plus value sets -> MeasurePlan. Pure: no I/O, no clock.

Rewrite steps, in order: resolve names to qualified definitions (dependency order), inline status rules into
retrieves, resolve value-set names to URLs and verify an expansion exists for each, collect the membership
(key, system, code) table and the columns each table must provide. One translate function per construct.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from datasets.schema import CODES, UTC_INSTANT
from datasets.views import columns_of, primary_code_of
from definitions.model import (
    Age,
    All,
    Any_,
    AttrFilter,
    CodeRef,
    Count,
    CountObs,
    CoveredDays,
    DurationObs,
    EventRef,
    Exists,
    Gender,
    IfObs,
    Not,
    Pick,
    ProductObs,
    RatioObs,
    Ref,
    RelatedPick,
    Retrieve,
    SumObs,
    Timing,
    TimingFilter,
    Union_,
    ValueFilter,
    WithFilter,
    WithoutFilter,
)
from definitions.resolved import MEASURE_SCOPE, ResolvedMeasure, definition_kind
from definitions.valuesets import ValueSetLibrary, canonical_url
from engine.errors import CompileError, Diagnostic, MissingValueSetError
from engine.links import LIST_LINKS
from engine.plan import (
    AgeIR,
    AllIR,
    AnyIR,
    ArithObsIR,
    AttrTest,
    CondIR,
    CountIR,
    CountObsIR,
    CoveredDaysIR,
    DefineIR,
    DurationObsIR,
    EpisodeIR,
    EventsIR,
    ExistsIR,
    ExtendIR,
    FilterIR,
    GenderIR,
    GroupIR,
    IfObsIR,
    MeasurePlan,
    NamedEventsIR,
    NotIR,
    NumberObsIR,
    ObservationIR,
    ObsIR,
    PickIR,
    RelatedPickIR,
    RelatedTest,
    RetrieveIR,
    TimingTest,
    UnionIR,
    ValueTest,
    code_key,
    component_key,
)
from engine.supply import SUPPLY_COLUMNS
from engine.systems import canonical_system

Path = tuple[str | int, ...]

COMPONENT_COLUMNS = ("observation_id", "component_ix", "code", "value_quantity", "value_unit", "patient_id")
MIXED = "mixed"  # the table of a union over several tables: only the event columns remain
PROFILE_SYSTEM = "profile"  # the membership "system" of declared-profile keys (matched against meta.profile)
EVENT_COLUMNS = ("patient_id", "id", "start", "end", "tz_offset_min")
LENGTH_DAYS = "length_days"  # a computed attribute of every event row


class _Compiler:
    def __init__(self, resolved: ResolvedMeasure, valuesets: ValueSetLibrary) -> None:
        self.r = resolved
        self.valuesets = valuesets
        self.problems: list[Diagnostic] = []
        self.defines: dict[str, CondIR | EventsIR] = {}
        self.order: list[str] = []
        self.in_progress: set[str] = set()
        self.membership: set[tuple[str, str, str]] = set()
        self.columns: dict[str, set[str]] = {}
        self.tags: set[tuple[str, str]] = set()
        self.attr_tags: set[tuple[str, str]] = set()
        self.supply: set[str] = set()
        self.versions: dict[str, str] = {}

    # ------------------------------------------------------------------------------------------ helpers
    def err(self, scope: str, path: Path, message: str, cls: type[CompileError] = CompileError) -> None:
        self.problems.append(self.r.diagnostic(scope, path, message))
        self.error_class = cls

    def need(self, table: str, *columns: str) -> None:
        if table == MIXED:
            return  # the parts of a mixed union need their own columns
        known = columns_of(table)
        cols = self.columns.setdefault(table, set())
        for column in columns:
            if column in known:
                cols.add(column)

    def qualified(self, scope: str, name: str) -> str:
        return name if scope == MEASURE_SCOPE else f"{scope}.{name}"

    def valueset_url(self, scope: str, path: Path, name: str) -> str | None:
        found = self.r.valueset(name, scope)
        if found is None:
            self.err(scope, path, f"unknown value set {name!r}")
            return None
        url = canonical_url(str(found.value))
        if url not in self.valuesets:
            self.err(
                scope,
                path,
                f"value set {url} ({name}) has no expansion loaded; pass --valuesets",
                MissingValueSetError,
            )
            return None
        vs = self.valuesets[url]
        self.versions[url] = vs.version or ""
        for system, code in vs.codes:
            self.membership.add((url, canonical_system(system), code))
        return url

    # ------------------------------------------------------------------------------------------ defines
    def define(self, scope: str, name: str, path: Path) -> str | None:
        found = self.r.define(name, scope)
        if found is None:
            self.err(scope, path, f"unknown definition {name!r}")
            return None
        qname = self.qualified(found.scope, found.name)
        if qname in self.defines:
            return qname
        if qname in self.in_progress:
            self.err(found.scope, found.path, f"definition {qname!r} refers to itself")
            return None
        self.in_progress.add(qname)
        value = found.value
        node: CondIR | EventsIR
        if definition_kind(value) == "events":
            node = self.events(found.scope, found.path, value)
        else:
            node = self.cond(found.scope, found.path, value)
        self.in_progress.discard(qname)
        self.defines[qname] = node
        self.order.append(qname)
        return qname

    def is_events_define(self, qname: str) -> bool:
        node = self.defines.get(qname)
        return isinstance(node, (RetrieveIR, UnionIR, NamedEventsIR))

    # ------------------------------------------------------------------------------------------ events
    def events(self, scope: str, path: Path, node: Any) -> EventsIR:
        if isinstance(node, Retrieve):
            return self.retrieve(scope, path, node)
        if isinstance(node, Union_):
            parts = tuple(self.events(scope, (*path, "union", i), p) for i, p in enumerate(node.union))
            tables = {self.table_of(p) for p in parts}
            table = next(iter(tables)) if len(tables) == 1 else MIXED
            return UnionIR(parts, self.filters(scope, (*path, "where"), table, node.where), table == MIXED)
        assert isinstance(node, EventRef)
        qname = self.define(scope, node.events, (*path, "events"))
        if qname is None or not self.is_events_define(qname):
            if qname is not None:
                self.err(scope, (*path, "events"), f"{node.events!r} is a condition, not an event set")
            return RetrieveIR("encounter", "type", (), (), False, ())
        table = self.table_of(self.defines[qname])
        extend = self.extend(scope, path, node.extend_start)
        return NamedEventsIR(qname, self.filters(scope, (*path, "where"), table, node.where), extend)

    def table_of(self, node: CondIR | EventsIR) -> str:
        if isinstance(node, RetrieveIR):
            return node.table
        if isinstance(node, UnionIR):
            return MIXED if node.mixed else self.table_of(node.parts[0])
        if isinstance(node, NamedEventsIR):
            return self.table_of(self.defines[node.name])
        raise TypeError(node)

    def retrieve(self, scope: str, path: Path, node: Retrieve) -> RetrieveIR:
        table = node.from_
        code_column = node.code_path or primary_code_of(table)
        if code_column not in columns_of(table):
            self.err(scope, (*path, "code_path"), f"table {table} has no column {code_column}")
        keys: list[str] = []
        urls = [u for i, vs in enumerate(node.valuesets)
                if (u := self.valueset_url(scope, (*path, "valueset", i) if isinstance(node.valueset, tuple)
                                           else (*path, "valueset"), vs)) is not None]  # fmt: skip
        keys += urls
        if node.codes:
            key = code_key(node.codes)
            keys.append(key)
            self.membership.update((key, canonical_system(c.system), c.code) for c in node.codes)
        if node.profile is not None:
            # a profile retrieve matches the profiles a resource declares (meta.profile), as CQL engines do;
            # to also accept undeclared resources by their fixed code, add `codes:` (any of them matches)
            key = "profile:" + node.profile
            keys.append(key)
            self.membership.add((key, PROFILE_SYSTEM, node.profile))
            self.need(table, "profiles")
        if keys:
            if len(keys) > (node.profile is not None):
                self.tags.add((table, code_column))
            if node.profile is not None:
                self.tags.add((table, "profiles"))
        self.need(table, *EVENT_COLUMNS, code_column, code_column.removesuffix("_code") + "_system")
        if node.negated:
            self.need(table, "not_done_valueset")
        filters: list[FilterIR] = []
        if node.status is not None:
            rule = self.r.status_rule(node.status, scope)
            if rule is None:
                self.err(scope, (*path, "status"), f"unknown status rule {node.status!r}")
            else:
                filters += self.filters(rule.scope, (*rule.path, "where"), table, rule.value.where)
        filters += self.filters(scope, (*path, "where"), table, node.where)
        extend = self.extend(scope, path, node.extend_start)
        return RetrieveIR(
            table,
            code_column,
            tuple(sorted(keys)),
            tuple(sorted(urls)) if node.negated else (),
            not keys,
            tuple(filters),
            extend,
        )

    def extend(self, scope: str, path: Path, steps: tuple[Any, ...]) -> tuple[ExtendIR, ...]:
        """Start-extension steps (hospitalization with observation): each names an event set."""
        out = []
        for i, step in enumerate(steps):
            events = self.events(scope, (*path, "extend_start", i, "events"), step.events)
            self.need(self.table_of(events), "start", "end", "end_prec", "patient_id")
            out.append(ExtendIR(events, step.within))
        return tuple(out)

    # ------------------------------------------------------------------------------------------ filters
    def filters(self, scope: str, path: Path, table: str, items: tuple[Any, ...]) -> tuple[FilterIR, ...]:
        return tuple(self.filter(scope, (*path, i), table, f) for i, f in enumerate(items))

    def filter(self, scope: str, path: Path, table: str, node: Any) -> FilterIR:
        if table == MIXED and not isinstance(node, TimingFilter):
            self.err(scope, path, "rows of a union of several tables keep only their time: filter the parts")
            return TimingTest(Timing.model_validate({"rel": "during", "right": "period"}))
        if isinstance(node, AttrFilter):
            return self.attr(scope, path, table, node)
        if isinstance(node, ValueFilter):
            self.need(table, "value_quantity", "value_unit")
            comp = None if node.component is None else self.component(node.component)
            return ValueTest(node.value, comp)
        if isinstance(node, TimingFilter):
            self.timing_columns(table, node.timing, "this", scope, path)
            return TimingTest(node.timing)
        assert isinstance(node, (WithFilter, WithoutFilter))
        other = node.with_ if isinstance(node, WithFilter) else node.without
        key = "with" if isinstance(node, WithFilter) else "without"
        events = self.events(scope, (*path, key), other)
        other_table = self.table_of(events)
        for timing in node.timing:
            self.timing_columns(table, timing, "this", scope, path)
            self.timing_columns(other_table, timing, "other", scope, path)
        if node.link in LIST_LINKS:
            link = LIST_LINKS[node.link]
            if (table, other_table) != (link.this_table, link.other_table):
                self.err(
                    scope,
                    (*path, "link"),
                    f"link {node.link} relates {link.this_table} rows to {link.other_table} rows, "
                    f"not {table} to {other_table}",
                )
            self.need(table, link.list_column)
            self.need(other_table, "id")
        elif node.link is not None:
            self.need(table, "encounter_id", "id")
            self.need(other_table, "encounter_id", "id")
        if not node.timing and node.link is None:
            self.err(scope, path, f"{key} needs a timing or a link saying how the rows relate")
        pick = (
            None if node.pick is None else self.related_pick(scope, (*path, "pick"), other_table, node.pick)
        )
        return RelatedTest(events, node.timing, node.link, negate=isinstance(node, WithoutFilter), pick=pick)

    def related_pick(self, scope: str, path: Path, table: str, node: RelatedPick) -> RelatedPickIR:
        """The picked related row's test: membership in an event set of the same table and filters."""
        if table == MIXED:
            self.err(scope, path, "pick orders the rows of one table: relate a union of one table's sets")
        self.need(table, "start", "end", "tz_offset_min", "id")
        members = None
        if node.in_ is not None:
            members = self.events(scope, (*path, "in"), node.in_)
            if self.table_of(members) != table:
                self.err(scope, (*path, "in"), f"in: rows of {self.table_of(members)}, not of {table}")
        test = self.filters(scope, (*path, "test"), table, node.test)
        return RelatedPickIR(node.by, node.time, node.day, members, test)

    def component(self, code: CodeRef) -> tuple[str, str]:
        """A component code, matched through the bind-time tags of observation_component.code."""
        self.need("observation_component", *COMPONENT_COLUMNS)
        system = canonical_system(code.system)
        self.membership.add((component_key(system, code.code), system, code.code))
        self.attr_tags.add(("observation_component", "code"))
        return system, code.code

    def timing_columns(
        self, table: str, timing: Any, side: str = "this", scope: str = "", path: Path = ()
    ) -> None:
        """Columns (and derived intervals) a timing needs from the rows of ``table`` on ``side``."""
        right = timing.right
        refs = [
            timing.left.ref,
            *([right.start.ref, right.end.ref] if hasattr(right, "start") else [right.ref]),
        ]
        mine = [r for r in refs if r == side or r.startswith(side + ".")]
        if table == MIXED:
            if any(r.split(".", 1)[-1] not in ("start", "end", "latest", "earliest", side) for r in mine):
                self.err(scope, path, f"rows of a union of several tables have only start/end: {mine}")
            return
        if any(r.endswith("prevalence") for r in mine):
            if table != "condition":
                self.err(scope, path, f"{side}.prevalence is defined for conditions, not {table}")
            self.need(table, "clinical_status")
        if any(r.split(".", 1)[-1] in ("supply", "supply_start", "supply_end") for r in mine):
            if table not in SUPPLY_COLUMNS:
                self.err(
                    scope,
                    path,
                    f"{side}.supply is defined for medication requests and dispenses, not {table}",
                )
            else:
                self.need(table, *SUPPLY_COLUMNS[table])
                self.supply.add(table)
        builtin = {
            "start", "end", "latest", "earliest", "prevalence", "supply", "supply_start", "supply_end", "extended",
            "extended_start",
        }  # fmt: skip
        for ref in mine:
            part = ref.split(".", 1)[1] if "." in ref else ""
            if part and part not in builtin:
                if columns_of(table).get(part) != UTC_INSTANT:
                    self.err(scope, path, f"{ref}: table {table} has no instant column {part!r}")
                else:
                    self.need(table, part)
        if "birth_date" in refs:
            self.need("patient", "birth_date")
        if "death" in refs:
            self.need("patient", "deceased_datetime")

    def attr(self, scope: str, path: Path, table: str, node: AttrFilter) -> AttrTest:
        column = node.attr
        if column == LENGTH_DAYS:
            # CQMCommon lengthInDays(): the difference in calendar days between the row's start and end
            if node.compare is None:
                self.err(scope, (*path, "attr"), f"{LENGTH_DAYS} is a number: test it with compare")
            self.need(table, "start", "end", "tz_offset_min")
            return AttrTest(column, "compare", compare=node.compare)
        if column not in columns_of(table):
            self.err(scope, (*path, "attr"), f"table {table} has no column {column!r}")
        self.need(table, column)
        if node.in_ is not None:
            return AttrTest(column, "in", values=node.in_)
        if node.not_in is not None:
            return AttrTest(column, "not_in", values=node.not_in)
        coded = columns_of(table).get(column) == CODES
        if node.codes is not None:
            codes = tuple(sorted((canonical_system(c.system), c.code) for c in node.codes))
            key = code_key(node.codes)
            if coded:
                self.membership.update((key, system, code) for system, code in codes)
                self.attr_tags.add((table, column))
            return AttrTest(column, "codes", codes=codes, table=table, tag_key=key if coded else "")
        if node.valueset is not None:
            url = self.valueset_url(scope, (*path, "valueset"), node.valueset)
            if coded and url:
                self.attr_tags.add((table, column))
            return AttrTest(
                column, "valueset", values=(url or "",), table=table, tag_key=url or "" if coded else ""
            )
        if node.compare is not None:
            return AttrTest(column, "compare", compare=node.compare)
        if node.is_true is not None:
            return AttrTest(column, "is_true", flag=node.is_true)
        return AttrTest(column, "is_null", flag=node.is_null)

    # ------------------------------------------------------------------------------------------ conditions
    def cond(self, scope: str, path: Path, node: Any) -> CondIR:
        handler = self.COND.get(type(node))
        if handler is None:
            self.err(scope, path, f"cannot compile {type(node).__name__}")
            return AllIR(())
        return handler(self, scope, path, node)

    def _all(self, scope: str, path: Path, node: All) -> CondIR:
        return AllIR(tuple(self.cond(scope, (*path, "all", i), c) for i, c in enumerate(node.all)))

    def _any(self, scope: str, path: Path, node: Any_) -> CondIR:
        return AnyIR(tuple(self.cond(scope, (*path, "any", i), c) for i, c in enumerate(node.any)))

    def _not(self, scope: str, path: Path, node: Not) -> CondIR:
        return NotIR(self.cond(scope, (*path, "not"), node.not_))

    def _ref(self, scope: str, path: Path, node: Ref) -> CondIR:
        qname = self.define(scope, node.ref, (*path, "ref"))
        return DefineIR(qname or "")

    def _exists(self, scope: str, path: Path, node: Exists) -> CondIR:
        return ExistsIR(self.events(scope, (*path, "exists"), node.exists))

    def _count(self, scope: str, path: Path, node: Count) -> CondIR:
        return CountIR(self.events(scope, (*path, "count"), node.count), node.distinct, node.compare)

    def _age(self, scope: str, path: Path, node: Age) -> CondIR:
        if not node.age.at.ref.startswith("period"):
            self.err(scope, (*path, "age", "at"), "age is taken at a point of the period")
        self.need("patient", "birth_date")
        return AgeIR(node.age.at, node.age.unit, node.age.min, node.age.max)

    def _gender(self, scope: str, path: Path, node: Gender) -> CondIR:
        self.need("patient", "gender")
        return GenderIR(node.gender)

    def _pick(self, scope: str, path: Path, node: Pick) -> CondIR:
        spec = node.pick
        events = self.events(scope, (*path, "pick", "from"), spec.from_)
        table = self.table_of(events)
        self.need(table, "value_quantity", "value_unit")
        if (
            spec.by in ("lowest", "highest")
            and spec.component is None
            and (table == MIXED or "value_quantity" not in columns_of(table))
        ):
            self.err(scope, (*path, "pick", "by"), f"{spec.by} orders by value, and {table} rows have none")
        test = self.filters(scope, (*path, "pick", "test"), table, spec.test)
        comp = None if spec.component is None else self.component(spec.component)
        return PickIR(events, spec.by, spec.time, spec.day, comp, spec.unit, test, spec.missing)

    def _covered(self, scope: str, path: Path, node: CoveredDays) -> CondIR:
        spec = node.covered_days
        events = self.events(scope, (*path, "covered_days", "from"), spec.from_)
        table = self.table_of(events)
        use_supply = table in SUPPLY_COLUMNS
        if use_supply:
            self.need(table, *SUPPLY_COLUMNS[table])
            self.supply.add(table)
        relative = None
        window_timing = Timing.model_validate({"rel": "during", "left": "period", "right": spec.window})
        if spec.relative_to is not None:
            relative = self.events(scope, (*path, "covered_days", "relative_to"), spec.relative_to)
            self.timing_columns(self.table_of(relative), window_timing, "other", scope, path)
        elif "other" in repr(spec.window):
            self.err(scope, (*path, "covered_days", "window"), "other.* in a window needs relative_to")
        return CoveredDaysIR(events, spec.window, spec.compare, use_supply, relative)

    def population(self, scope: str, path: Path, node: Any) -> CondIR:
        """A population criterion: a condition, or an event set (its episodes / has one)."""
        if isinstance(node, (Retrieve, Union_, EventRef)):
            return EpisodeIR(self.events(scope, path, node))
        return self.cond(scope, path, node)

    def check_episodes(self, gpath: Path, pops: tuple[tuple[str, CondIR], ...]) -> None:
        """Episode-based groups take their episodes from an encounter event set as initial population."""
        ip = dict(pops).get("initial_population")
        events: EventsIR | None = None
        if isinstance(ip, EpisodeIR):
            events = ip.events
        elif isinstance(ip, DefineIR) and self.is_events_define(ip.name):
            events = NamedEventsIR(ip.name, ())
        if events is None or self.table_of(events) != "encounter":
            self.err(
                MEASURE_SCOPE,
                (*gpath, "populations", "initial_population"),
                "an encounter-based measure's initial population is an event set of encounters",
            )

    def obs(self, scope: str, path: Path, node: Any) -> ObsIR:
        if isinstance(node, (int, float)):
            return NumberObsIR(float(node))
        if isinstance(node, IfObs):
            return IfObsIR(
                self.cond(scope, (*path, "if"), node.if_),
                self.obs(scope, (*path, "then"), node.then),
                self.obs(scope, (*path, "else"), node.else_),
            )
        if isinstance(node, (SumObs, ProductObs, RatioObs)):
            op: Literal["sum", "product", "ratio"] = (
                "sum" if isinstance(node, SumObs) else "product" if isinstance(node, ProductObs) else "ratio"
            )
            items = getattr(node, op)
            return ArithObsIR(op, tuple(self.obs(scope, (*path, op, i), x) for i, x in enumerate(items)))
        if isinstance(node, DurationObs):
            return DurationObsIR(node.duration.from_, node.duration.to, node.duration.unit)
        assert isinstance(node, CountObs)
        return CountObsIR(self.events(scope, (*path, "count_of"), node.count_of))

    COND: ClassVar[dict[type, Callable[[_Compiler, str, Path, Any], CondIR]]] = {
        All: _all, Any_: _any, Not: _not, Ref: _ref, Exists: _exists, Count: _count, Age: _age,
        Gender: _gender, Pick: _pick, CoveredDays: _covered,
    }  # fmt: skip

    # ------------------------------------------------------------------------------------------ measure
    def compile(self) -> MeasurePlan:
        m = self.r.measure
        groups: list[GroupIR] = []
        for gi, group in enumerate(m.groups):
            gpath: Path = ("groups", gi)
            pops = tuple(
                (name, self.population(MEASURE_SCOPE, (*gpath, "populations", name), cond))
                for name, cond in group.populations.items()
            )
            observations = tuple(
                ObservationIR(
                    o.id,
                    o.population,
                    self.obs(MEASURE_SCOPE, (*gpath, "observations", oi, "value"), o.value),
                    o.aggregate,
                )
                for oi, o in enumerate(group.observations)
            )
            if m.basis == "encounter":
                self.check_episodes(gpath, pops)
            if m.scoring == "continuous_variable" and not any(
                o.population == "measure_population" for o in observations
            ):
                self.err(
                    MEASURE_SCOPE,
                    (*gpath, "observations"),
                    "continuous-variable scoring needs an observation of measure_population",
                )
            strata = tuple(
                (s.id, self.cond(MEASURE_SCOPE, (*gpath, "stratifiers", si, "criterion"), s.criterion))
                for si, s in enumerate(group.stratifiers)
            )
            groups.append(GroupIR(group.id, pops, strata, observations))
        self.need("patient", "patient_id", "birth_date", "gender")
        if "race" in m.supplemental:
            self.need("patient", "race_omb", "race_detailed")
        if "ethnicity" in m.supplemental:
            self.need("patient", "ethnicity_omb", "ethnicity_detailed")
        if "payer" in m.supplemental:
            self.need("coverage", "patient_id", "type")
        if self.problems:
            raise self.error_class(self.problems)
        return MeasurePlan(
            measure_id=m.id,
            version=m.version,
            title=m.title,
            scoring=m.scoring,
            basis=m.basis,
            improvement=m.improvement,
            period_start=m.period.start,
            period_end=m.period.end,
            spec=f"{m.implements.library} {m.implements.version}"
            + (f" ({m.implements.source})" if m.implements.source else ""),
            defines=tuple((name, self.defines[name]) for name in self.order),
            groups=tuple(groups),
            supplemental=m.supplemental,
            membership=tuple(sorted(self.membership)),
            columns=tuple(sorted((t, tuple(sorted(c))) for t, c in self.columns.items())),
            tag_columns=tuple(sorted(self.tags)),
            attr_tag_columns=tuple(sorted(self.attr_tags - self.tags)),
            supply_tables=tuple(sorted(self.supply)),
            valueset_versions=tuple(sorted(self.versions.items())),
            source_hash=self.r.content_hash,
        )

    error_class: type[CompileError] = CompileError


def compile_measure(resolved: ResolvedMeasure, valuesets: ValueSetLibrary) -> MeasurePlan:
    """Compile a loaded measure against the value sets of this run; CompileError lists every problem."""
    return _Compiler(resolved, valuesets).compile()
