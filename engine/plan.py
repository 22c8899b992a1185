"""The compiled form of a measure: a resolved tree (names, value sets and status rules inlined) and what it
needs from the data. It is plain frozen data, so it can be hashed, printed for golden tests and lowered to
polars against whatever frames a run binds (a whole lake, a shard, one patient's bundle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date
from typing import Any, Literal

from definitions.model import CodeRef, Compare, Duration, Target, TimeRef, Timing

# --------------------------------------------------------------------------------------------- event sets


@dataclass(frozen=True)
class AttrTest:
    column: str
    kind: Literal["in", "not_in", "codes", "valueset", "compare", "is_true", "is_null"]
    values: tuple[str, ...] = ()
    codes: tuple[tuple[str, str], ...] = ()
    compare: Compare | None = None
    flag: bool | None = None
    table: str = ""
    tag_key: str = ""  # membership key when the test is answered by the bind-time tags of (table, column)


@dataclass(frozen=True)
class ValueTest:
    compare: Compare
    component: tuple[str, str] | None = None


@dataclass(frozen=True)
class TimingTest:
    timing: Timing


@dataclass(frozen=True)
class RelatedPickIR:
    """Of the related rows, the last/first by ``time`` (or all on its day) must be rows of ``members`` passing
    ``test``."""

    by: str
    time: str
    day: bool
    members: EventsIR | None
    test: tuple[FilterIR, ...]


@dataclass(frozen=True)
class RelatedTest:
    """``with`` (``negate=False``) or ``without`` another event set."""

    events: EventsIR
    timing: tuple[Timing, ...]  # all must hold
    link: str | None
    negate: bool
    pick: RelatedPickIR | None = None


FilterIR = AttrTest | ValueTest | TimingTest | RelatedTest


@dataclass(frozen=True)
class ExtendIR:
    """Move the start back to the latest row of ``events`` ending at most ``within`` before it."""

    events: EventsIR
    within: Duration


@dataclass(frozen=True)
class RetrieveIR:
    table: str
    code_column: str
    keys: tuple[str, ...]  # membership keys: value-set URLs, "codes:<hash>", "profile:<url>"
    negated_urls: tuple[str, ...]  # URLs a not-done row may name in not_done_valueset
    all_rows: bool  # no code restriction: every row of the table
    filters: tuple[FilterIR, ...]
    extend: tuple[ExtendIR, ...] = ()


@dataclass(frozen=True)
class UnionIR:
    """Rows of several event sets, each once. Over several tables (``mixed``) only the event columns (patient,
    id, time) are kept, so only timing filters apply (counting immunizations *or* procedures)."""

    parts: tuple[EventsIR, ...]
    filters: tuple[FilterIR, ...]
    mixed: bool = False


@dataclass(frozen=True)
class NamedEventsIR:
    """A reference to a named event set, lowered once per plan and shared by every use."""

    name: str
    filters: tuple[FilterIR, ...]
    extend: tuple[ExtendIR, ...] = ()


EventsIR = RetrieveIR | UnionIR | NamedEventsIR

# ------------------------------------------------------------------------------------------------ conditions


@dataclass(frozen=True)
class AllIR:
    items: tuple[CondIR, ...]


@dataclass(frozen=True)
class AnyIR:
    items: tuple[CondIR, ...]


@dataclass(frozen=True)
class NotIR:
    item: CondIR


@dataclass(frozen=True)
class DefineIR:
    """A named condition (a column of the subject frame) or a named event set (has any)."""

    name: str


@dataclass(frozen=True)
class ExistsIR:
    events: EventsIR


@dataclass(frozen=True)
class CountIR:
    events: EventsIR
    distinct: str
    compare: Compare


@dataclass(frozen=True)
class AgeIR:
    at: TimeRef
    unit: str
    min: int | None
    max: int | None


@dataclass(frozen=True)
class GenderIR:
    gender: str


@dataclass(frozen=True)
class PickIR:
    events: EventsIR
    by: str
    time: str
    day: str | None
    component: tuple[str, str] | None
    unit: str | None
    test: tuple[FilterIR, ...]
    missing: bool


@dataclass(frozen=True)
class CoveredDaysIR:
    events: EventsIR
    window: Target
    compare: Compare
    use_supply: bool = False
    relative: EventsIR | None = None


@dataclass(frozen=True)
class EpisodeIR:
    """The subject is in this event set: for episode-based measures the episode is one of its rows; for
    patient-based ones, the patient has one."""

    events: EventsIR


CondIR = (
    AllIR
    | AnyIR
    | NotIR
    | DefineIR
    | ExistsIR
    | CountIR
    | AgeIR
    | GenderIR
    | PickIR
    | CoveredDaysIR
    | EpisodeIR
)

# ------------------------------------------------------------------------------------------------ observations


@dataclass(frozen=True)
class NumberObsIR:
    value: float


@dataclass(frozen=True)
class IfObsIR:
    cond: CondIR
    then: ObsIR
    otherwise: ObsIR


@dataclass(frozen=True)
class ArithObsIR:
    op: Literal["sum", "product", "ratio"]
    items: tuple[ObsIR, ...]


@dataclass(frozen=True)
class DurationObsIR:
    start: TimeRef
    end: TimeRef
    unit: str


@dataclass(frozen=True)
class CountObsIR:
    events: EventsIR


ObsIR = NumberObsIR | IfObsIR | ArithObsIR | DurationObsIR | CountObsIR


@dataclass(frozen=True)
class ObservationIR:
    id: str
    population: str
    value: ObsIR
    aggregate: str


@dataclass(frozen=True)
class GroupIR:
    id: str
    populations: tuple[tuple[str, CondIR], ...]
    stratifiers: tuple[tuple[str, CondIR], ...]
    observations: tuple[ObservationIR, ...] = ()


@dataclass(frozen=True)
class MeasurePlan:
    """A compiled measure. ``defines`` are in dependency order; ``membership`` lists every (key, system, code)
    the retrieves match on; ``columns`` what each table must provide."""

    measure_id: str
    version: str
    title: str
    scoring: str
    basis: str
    improvement: str
    period_start: date
    period_end: date
    spec: str
    defines: tuple[tuple[str, CondIR | EventsIR], ...]
    groups: tuple[GroupIR, ...]
    supplemental: tuple[str, ...]
    membership: tuple[tuple[str, str, str], ...] = field(repr=False)
    columns: tuple[tuple[str, tuple[str, ...]], ...]
    tag_columns: tuple[tuple[str, str], ...]
    attr_tag_columns: tuple[tuple[str, str], ...] = ()
    supply_tables: tuple[str, ...] = ()
    valueset_versions: tuple[tuple[str, str], ...] = ()
    source_hash: str = ""

    @property
    def tables(self) -> dict[str, tuple[str, ...]]:
        return dict(self.columns)

    @property
    def content_hash(self) -> str:
        """Stable across processes: the printed plan plus the membership it matches against."""
        digest = hashlib.sha256(self.pretty().encode())
        for row in self.membership:
            digest.update("\x1f".join(row).encode())
        return digest.hexdigest()[:16]

    def pretty(self) -> str:
        """A stable, readable rendering of the plan for golden tests and reviews."""
        lines = [
            f"measure {self.measure_id} v{self.version} ({self.scoring}, basis {self.basis}, "
            f"improvement {self.improvement})",
            f"  implements {self.spec}",
            f"  period {self.period_start} .. {self.period_end}",
            "  tables:",
        ]
        lines += [f"    {table}: {', '.join(cols)}" for table, cols in self.columns]
        lines.append("  defines:")
        for name, node in self.defines:
            lines.append(f"    {name} =")
            lines += _render(node, 6)
        for group in self.groups:
            lines.append(f"  group {group.id}:")
            for pop, cond in group.populations:
                lines.append(f"    {pop} =")
                lines += _render(cond, 6)
            for sid, cond in group.stratifiers:
                lines.append(f"    stratifier {sid} =")
                lines += _render(cond, 6)
            for obs in group.observations:
                lines.append(f"    observation {obs.id} of {obs.population} ({obs.aggregate}) =")
                lines += _render(obs.value, 6)
        return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if hasattr(value, "model_dump"):
        dumped = value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return str(dumped)
    return repr(value)


def _render(node: Any, indent: int) -> list[str]:
    pad = " " * indent
    if not is_dataclass(node):
        return [pad + _scalar(node)]
    simple: list[str] = []
    nested: list[tuple[str, Any]] = []
    for f in fields(node):
        value = getattr(node, f.name)
        if (isinstance(value, tuple) and value and all(is_dataclass(v) for v in value)) or is_dataclass(
            value
        ):
            nested.append((f.name, value))
        elif value in (None, (), False) and f.name not in ("negate",):
            continue
        else:
            simple.append(f"{f.name}={_scalar(value)}")
    out = [f"{pad}{type(node).__name__.removesuffix('IR')}({', '.join(simple)})"]
    for name, value in nested:
        out.append(f"{pad}  {name}:")
        for item in value if isinstance(value, tuple) else (value,):
            out += _render(item, indent + 4)
    return out


def children(node: object) -> Iterator[object]:
    """The IR nodes directly inside ``node``: its fields and their tuple items that are IR dataclasses."""
    if not is_dataclass(node):
        return
    for f in fields(node):
        value = getattr(node, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            if is_dataclass(item):
                yield item


def walk(node: object) -> Iterator[object]:
    """``node`` and every IR node below it (named definitions are not followed: they are their own roots)."""
    yield node
    for child in children(node):
        yield from walk(child)


def code_key(codes: tuple[CodeRef, ...]) -> str:
    """The membership key of a literal code list (a value set without a URL)."""
    text = "|".join(sorted(f"{c.system}#{c.code}" for c in codes))
    return "codes:" + hashlib.sha256(text.encode()).hexdigest()[:12]


def component_key(system: str, code: str) -> str:
    """The membership key of one component code."""
    return f"component:{system}|{code}"
