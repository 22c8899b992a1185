"""The measure definition language as frozen pydantic models.

A measure is data: populations are boolean *conditions* over a subject, built from *event sets* (rows of one
canonical table narrowed by value sets, status rules and filters). Every construct has one model here; the
compiler (``engine``) and the reference interpreter both walk these models, so their meaning is written once,
in ``docs/definition-language.md``.

YAML style: a construct is a mapping whose distinguishing key names it (``all:``, ``exists:``, ``from:``...);
the discriminators below pick the model from that key so error messages name the construct the author meant.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

NAME = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?$"
_DURATION = re.compile(r"^\s*([+-]?\d+)\s*(year|month|week|day|hour|minute)s?\s*$")


class Frozen(BaseModel):
    """Base of every model: immutable, no unknown keys, so a typo is an error and not a silent no-op."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------------------------- time references

# period | period.start | period.end | birth_date | death | this[.PART] | other[.PART], where PART is start,
# end, latest, earliest, prevalence, supply, or one of the row's own instant columns (authored_on, issued, ...)
TimeAnchor = Annotated[
    str, Field(pattern=r"^(period(\.start|\.end)?|birth_date|death|(this|other)(\.[a-z][a-z_]*)?)$")
]

INTERVAL_ANCHORS = frozenset(
    {
        "period",
        "this",
        "this.prevalence",
        "this.supply",
        "this.extended",
        "other",
        "other.prevalence",
        "other.supply",
        "other.extended",
    }
)


class Duration(Frozen):
    """A calendar quantity (CQL semantics: adding months clamps to the month's last day)."""

    amount: int = Field(ge=-100_000, le=100_000)  # beyond any calendar the engine can represent
    unit: Literal["year", "month", "week", "day", "hour", "minute"]

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"duration {text!r} is not like '-2 years' or '6 months'")
        unit = match.group(2)
        return cls.model_validate({"amount": int(match.group(1)), "unit": unit})


class TimeRef(Frozen):
    """A point in time: an anchor, shifted by ``offset``, then optionally set to a month/day of its year.

    ``{ref: period.start, offset: -2 years, month: 10, day: 1}`` is October 1 two years before the period start;
    several offsets apply in order: ``offset: [12 months, -60 days]``.
    """

    ref: TimeAnchor
    offset: tuple[Duration, ...] = ()
    month: int | None = Field(default=None, ge=1, le=12)
    day: int | None = Field(default=None, ge=1, le=31)

    @field_validator("offset", mode="before")
    @classmethod
    def _parse_offset(cls, value: Any) -> Any:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(Duration.parse(v) if isinstance(v, str) else v for v in items if v is not None)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"ref": value} if isinstance(value, str) else value

    @property
    def is_interval(self) -> bool:
        return self.ref in INTERVAL_ANCHORS and not self.offset and self.month is None and self.day is None


class Window(Frozen):
    """An interval built from two points; ``closed`` says which ends are included, as in ``[)``."""

    start: TimeRef
    end: TimeRef
    closed: Literal["[]", "[)", "(]", "()"] = "[]"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _point(cls, value: Any) -> Any:
        return {"ref": value} if isinstance(value, str) else value


def _window_or_ref(value: Any) -> str:
    if isinstance(value, Window) or (isinstance(value, dict) and "start" in value):
        return "window"
    return "ref"


Target = Annotated[
    Annotated[Window, Tag("window")] | Annotated[TimeRef, Tag("ref")], Discriminator(_window_or_ref)
]

Relation = Literal[
    "during", "overlaps", "before", "after", "on_or_before", "on_or_after", "same_day", "includes"
]


class Timing(Frozen):
    """``left`` relates to ``right``: e.g. ``{left: this.end, rel: during, right: period, precision: day}``.

    With ``precision: day`` each side is reduced to its own local calendar date before comparing (CQL compares
    day-precision values on each value's own date).
    """

    left: TimeRef = TimeRef(ref="this")
    rel: Relation
    right: Target
    precision: Literal["instant", "day"] = "instant"

    @field_validator("left", mode="before")
    @classmethod
    def _left(cls, value: Any) -> Any:
        return {"ref": value} if isinstance(value, str) else value


# ------------------------------------------------------------------------------------------------ filters


class CodeRef(Frozen):
    system: str
    code: str
    display: str | None = None


class Compare(Frozen):
    """A value test: ``{op: '>', value: 9, unit: '%'}``; ``is_null``/``not_null`` take no value."""

    op: Literal["<", "<=", ">", ">=", "==", "!=", "is_null", "not_null"]
    value: float | None = None
    unit: str | None = None

    @model_validator(mode="after")
    def _value_needed(self) -> Compare:
        if self.op in ("is_null", "not_null"):
            if self.value is not None:
                raise ValueError(f"op {self.op} takes no value")
        elif self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        return self


class AttrFilter(Frozen):
    """A test on one column of the row: membership in literal values, codes or a value set, or a comparison."""

    attr: str
    in_: tuple[str, ...] | None = Field(default=None, alias="in")
    not_in: tuple[str, ...] | None = None
    codes: tuple[CodeRef, ...] | None = None
    valueset: str | None = None
    compare: Compare | None = None
    is_true: bool | None = None
    is_null: bool | None = None

    @model_validator(mode="after")
    def _one_test(self) -> AttrFilter:
        tests = [self.in_, self.not_in, self.codes, self.valueset, self.compare, self.is_true, self.is_null]
        if sum(t is not None for t in tests) != 1:
            raise ValueError(
                "an attr filter needs exactly one of: in, not_in, codes, valueset, compare, is_true, is_null"
            )
        return self


class ValueFilter(Frozen):
    """A test on the row's value (``value_quantity`` converted to ``unit``), or on one component's value."""

    value: Compare
    component: CodeRef | None = None


class TimingFilter(Frozen):
    timing: Timing


# How a row references another by id: ``encounter`` (this row's encounter_id is the other's id),
# ``reverse_encounter`` (the other's encounter_id is this row's id), and from an encounter to the rows its lists
# name: ``encounter_diagnosis`` (any diagnosis entry; CQMCommon encounterDiagnosis()), ``principal_diagnosis``
# (the entry with rank 1 and use "billing"; CQMCommon principalDiagnosis()) and ``principal_procedure`` (the
# QI-Core encounter-procedure entry with rank 1).
Link = Literal["encounter", "reverse_encounter", "encounter_diagnosis", "principal_diagnosis", "principal_procedure"]


def _timings(value: Any) -> Any:
    """``timing:`` takes one relation or a list of them, all of which must hold for the same pair of rows."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


class RelatedPick(Frozen):
    """Of the other rows that relate to this row, only the last (``by: latest``) or first (``by: earliest``)
    ordered by its ``time`` counts (unknown times first, ties by id, as CQL sorts); with ``day: true`` every
    related row on that row's local day counts. A counted row must be a row of ``in`` (an event set of the same
    table) and pass ``test``. CQL: ``Last(... where <relation> sort by ...)`` per row of the outer query."""

    by: Literal["latest", "earliest"]
    time: Literal["start", "end", "latest", "earliest"] = "latest"
    day: bool = False
    in_: EventSet | None = Field(default=None, alias="in")
    test: tuple[Filter, ...] = ()


class WithFilter(Frozen):
    """Keep the row when some row of ``events`` relates to it (``timing``: one relation or a list that must all
    hold, with ``other.*`` naming that row; and/or ``link``: one row references the other by id); with ``pick``,
    when the picked related row passes its test."""

    with_: EventSet = Field(alias="with")
    timing: Annotated[tuple[Timing, ...], BeforeValidator(_timings)] = ()
    link: Link | None = None
    pick: RelatedPick | None = None


class WithoutFilter(Frozen):
    """Keep the row when no row of ``events`` relates to it (the same relations as ``with``)."""

    without: EventSet
    timing: Annotated[tuple[Timing, ...], BeforeValidator(_timings)] = ()
    link: Link | None = None
    pick: RelatedPick | None = None


def _filter_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("with", "without", "attr", "value", "timing"):
            if key in value:
                return key
    elif isinstance(value, BaseModel):
        return {AttrFilter: "attr", ValueFilter: "value", TimingFilter: "timing", WithFilter: "with"}.get(
            type(value), "without"
        )
    return "attr"


Filter = Annotated[
    Annotated[AttrFilter, Tag("attr")]
    | Annotated[ValueFilter, Tag("value")]
    | Annotated[TimingFilter, Tag("timing")]
    | Annotated[WithFilter, Tag("with")]
    | Annotated[WithoutFilter, Tag("without")],
    Discriminator(_filter_kind),
]

# --------------------------------------------------------------------------------------------- event sets

TableName = Literal[
    "coverage", "encounter", "condition", "procedure", "observation", "medication_request",
    "medication_dispense", "medication_administration", "immunization", "allergy_intolerance",
    "service_request", "device_request", "diagnostic_report", "encounter_location",
]  # fmt: skip


class ExtendStart(Frozen):
    """Move a row's start back to the start of the latest row of ``events`` that ends ``within`` before it
    (on or before the start, at most ``within`` earlier); steps apply in order. CQMCommon's
    ``hospitalizationWithObservation()`` is two steps: observation services, then an emergency visit, each
    within 1 hour. The result is ``this.extended`` (``[extended start, end]``) and ``this.extended_start``."""

    events: EventSet
    within: Duration

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, value: Any) -> Any:
        return Duration.parse(value) if isinstance(value, str) else value


class Retrieve(Frozen):
    """Rows of one table whose codes are in a value set (any coding), narrowed by a status rule and filters.

    ``negated: true`` retrieves the *not done* form: the code (or the ``not_done_valueset`` extension) names the
    value set, and the status rule names what counts as not done.
    """

    from_: TableName = Field(alias="from")
    valueset: str | tuple[str, ...] | None = None
    codes: tuple[CodeRef, ...] | None = None
    code_path: str | None = None
    profile: str | None = None
    status: str | None = None
    negated: bool = False
    extend_start: tuple[ExtendStart, ...] = ()
    where: tuple[Filter, ...] = ()

    @property
    def valuesets(self) -> tuple[str, ...]:
        if self.valueset is None:
            return ()
        return (self.valueset,) if isinstance(self.valueset, str) else self.valueset


class Union_(Frozen):
    """Rows of several event sets of the same table, each row once."""

    union: tuple[EventSet, ...] = Field(min_length=2)
    where: tuple[Filter, ...] = ()


class EventRef(Frozen):
    """A named event set (``define``), possibly narrowed further."""

    events: str = Field(pattern=NAME)
    extend_start: tuple[ExtendStart, ...] = ()
    where: tuple[Filter, ...] = ()


def _event_kind(value: Any) -> str:
    if isinstance(value, dict):
        if "union" in value:
            return "union"
        if "events" in value:
            return "ref"
        return "retrieve"
    kinds: dict[type, str] = {Union_: "union", EventRef: "ref"}
    return kinds.get(type(value), "retrieve")


def _name_to_ref(value: Any) -> Any:
    return {"events": value} if isinstance(value, str) else value


EventSet = Annotated[
    Annotated[Retrieve, Tag("retrieve")] | Annotated[Union_, Tag("union")] | Annotated[EventRef, Tag("ref")],
    Discriminator(_event_kind),
    BeforeValidator(_name_to_ref),
]

# ------------------------------------------------------------------------------------------------ conditions


class All(Frozen):
    all: tuple[Condition, ...] = Field(min_length=1)


class Any_(Frozen):
    any: tuple[Condition, ...] = Field(min_length=1)


class Not(Frozen):
    not_: Condition = Field(alias="not")


class Ref(Frozen):
    """A named definition: a condition, or an event set (then: does the subject have any such event)."""

    ref: str = Field(pattern=NAME)


class Exists(Frozen):
    exists: EventSet


class Count(Frozen):
    """How many events (or distinct local days / distinct codes) the subject has, compared."""

    count: EventSet
    distinct: Literal["rows", "days"] = "rows"
    compare: Compare


class Age(Frozen):
    """Age in completed calendar units at a date (CQL ``AgeInYearsAt(date from ...)``), within [min, max]."""

    class Spec(Frozen):
        at: TimeRef = TimeRef(ref="period.end")
        unit: Literal["years", "months", "days"] = "years"
        min: int | None = None
        max: int | None = None

        @field_validator("at", mode="before")
        @classmethod
        def _at(cls, value: Any) -> Any:
            return {"ref": value} if isinstance(value, str) else value

    age: Spec


class Gender(Frozen):
    gender: Literal["male", "female", "other", "unknown"]


class Pick(Frozen):
    """Choose one event (the latest, earliest, lowest or highest), then test it.

    ``day: latest`` first keeps only the events on the subject's latest local day with an event (CMS165's "most
    recent blood pressure day"). ``value``/``component`` say which value ``lowest``/``highest`` order by (nulls
    first, as CQL sorts). With no event the result is ``missing``.
    """

    class Spec(Frozen):
        from_: EventSet = Field(alias="from")
        by: Literal["latest", "earliest", "lowest", "highest"]
        time: Literal["start", "end", "latest", "earliest", "supply_start", "supply_end"] = "latest"
        day: Literal["latest", "earliest"] | None = None
        component: CodeRef | None = None
        unit: str | None = None
        test: tuple[Filter, ...] = ()
        missing: bool = False

    pick: Spec


class CoveredDays(Frozen):
    """Cumulative medication duration: days covered by the union of the events' supply intervals within a
    window (overlaps counted once), compared."""

    class Spec(Frozen):
        """With ``relative_to``, the window may name ``other.*`` (a row of that event set): the condition holds
        when the covered days compare true for some such row (CMS128: days covered in the 114 days after the
        first antidepressant dispense)."""

        from_: EventSet = Field(alias="from")
        window: Target
        compare: Compare
        relative_to: EventSet | None = None

    covered_days: Spec


def _condition_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("all", "any", "not", "ref", "exists", "count", "age", "gender", "pick", "covered_days"):
            if key in value:
                return key
        return "unknown"
    kinds: dict[type, str] = {
        All: "all", Any_: "any", Not: "not", Ref: "ref", Exists: "exists", Count: "count", Age: "age",
        Gender: "gender", Pick: "pick", CoveredDays: "covered_days",
    }  # fmt: skip
    return kinds.get(type(value), "unknown")


def _str_to_ref(value: Any) -> Any:
    return {"ref": value} if isinstance(value, str) else value


Condition = Annotated[
    Annotated[All, Tag("all")]
    | Annotated[Any_, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[Ref, Tag("ref")]
    | Annotated[Exists, Tag("exists")]
    | Annotated[Count, Tag("count")]
    | Annotated[Age, Tag("age")]
    | Annotated[Gender, Tag("gender")]
    | Annotated[Pick, Tag("pick")]
    | Annotated[CoveredDays, Tag("covered_days")],
    Discriminator(_condition_kind, custom_error_type="unknown_condition",
                  custom_error_message="not a condition: expected one of all, any, not, ref, exists, count, "
                  "age, gender, pick, covered_days"),
    BeforeValidator(_str_to_ref),
]  # fmt: skip


def _define_kind(value: Any) -> str:
    if isinstance(value, dict) and any(key in value for key in ("from", "union", "events")):
        return "events"
    if isinstance(value, (Retrieve, Union_, EventRef)):
        return "events"
    return "condition"


Definition = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated[EventSet, Tag("events")], Discriminator(_define_kind)
]


# ----------------------------------------------------------------------------------------- measure / library

PopulationName = Literal[
    "initial_population", "denominator", "denominator_exclusion", "denominator_exception",
    "numerator", "numerator_exclusion", "measure_population", "measure_population_exclusion",
]  # fmt: skip


class IfObs(Frozen):
    """``{if: CONDITION, then: OBS, else: OBS}``: a value chosen by a condition on the subject (or episode)."""

    if_: Condition = Field(alias="if")
    then: ObsExpr
    else_: ObsExpr = Field(alias="else")


class SumObs(Frozen):
    sum: tuple[ObsExpr, ...] = Field(min_length=1)


class ProductObs(Frozen):
    product: tuple[ObsExpr, ...] = Field(min_length=1)


class RatioObs(Frozen):
    """``{ratio: [a, b]}``: a / b, unknown when b is zero."""

    ratio: tuple[ObsExpr, ObsExpr]


class DurationObs(Frozen):
    """Time between two points of the episode (``this.start``, ``this.end``...) in whole units."""

    class Spec(Frozen):
        from_: TimeRef = Field(alias="from")
        to: TimeRef
        unit: Literal["minutes", "hours", "days"] = "minutes"

        @field_validator("from_", "to", mode="before")
        @classmethod
        def _point(cls, value: Any) -> Any:
            return {"ref": value} if isinstance(value, str) else value

    duration: Spec


class CountObs(Frozen):
    """The number of rows of an event set for the subject."""

    count_of: EventSet


def _obs_kind(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    if isinstance(value, dict):
        for key in ("if", "sum", "product", "ratio", "duration", "count_of"):
            if key in value:
                return key
        return "unknown"
    kinds: dict[type, str] = {
        IfObs: "if", SumObs: "sum", ProductObs: "product", RatioObs: "ratio", DurationObs: "duration",
        CountObs: "count_of",
    }  # fmt: skip
    return kinds.get(type(value), "unknown")


ObsExpr = Annotated[
    Annotated[float, Tag("number")]
    | Annotated[IfObs, Tag("if")]
    | Annotated[SumObs, Tag("sum")]
    | Annotated[ProductObs, Tag("product")]
    | Annotated[RatioObs, Tag("ratio")]
    | Annotated[DurationObs, Tag("duration")]
    | Annotated[CountObs, Tag("count_of")],
    Discriminator(_obs_kind, custom_error_type="unknown_observation",
                  custom_error_message="not an observation: expected a number, if, sum, product, ratio, "
                  "duration or count_of"),
]  # fmt: skip


class Observation(Frozen):
    """A measure observation: a value per member of ``population``, aggregated for the group's score."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    population: PopulationName
    value: ObsExpr
    aggregate: Literal["sum", "mean", "median", "min", "max", "count"] = "median"


class Stratifier(Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    criterion: Condition


class Group(Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    populations: dict[PopulationName, Definition]
    stratifiers: tuple[Stratifier, ...] = ()
    observations: tuple[Observation, ...] = ()


class StatusRule(Frozen):
    """A named filter list applied to a retrieve of ``table`` (the eCQM status libraries, written once)."""

    table: TableName
    where: tuple[Filter, ...] = Field(min_length=1)


class Spec(Frozen):
    """The specification a measure implements: where its meaning comes from."""

    library: str
    version: str
    source: str | None = None


class Period(Frozen):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")
        return self


class Library(Frozen):
    """Shared logic: value sets, status rules and named definitions that measures ``include``."""

    library: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: str
    title: str | None = None
    implements: tuple[Spec, ...] = ()
    include: tuple[str, ...] = ()
    valuesets: dict[str, str] = {}
    status_rules: dict[str, StatusRule] = {}
    define: dict[str, Definition] = {}


class Measure(Frozen):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str
    title: str
    steward: str | None = None
    description: str | None = None
    implements: Spec
    copyright: str | None = None
    scoring: Literal["proportion", "ratio", "continuous_variable", "cohort"]
    basis: Literal["patient", "encounter"] = "patient"
    improvement: Literal["increase", "decrease"] = "increase"
    period: Period
    include: tuple[str, ...] = ()
    valuesets: dict[str, str] = {}
    status_rules: dict[str, StatusRule] = {}
    define: dict[str, Definition] = {}
    groups: tuple[Group, ...] = Field(min_length=1)
    supplemental: tuple[Literal["sex", "race", "ethnicity", "payer"], ...] = (
        "sex",
        "race",
        "ethnicity",
        "payer",
    )

    @model_validator(mode="before")
    @classmethod
    def _single_group(cls, value: Any) -> Any:
        """``populations:`` at the top level is one group named after the measure (most measures have one)."""
        if isinstance(value, dict) and "populations" in value and "groups" not in value:
            value = dict(value)
            group: dict[str, Any] = {"id": "group-1", "populations": value.pop("populations")}
            if "stratifiers" in value:
                group["stratifiers"] = value.pop("stratifiers")
            value["groups"] = [group]
        return value


for _model in (WithFilter, WithoutFilter, ExtendStart, Retrieve, Union_, EventRef, All, Any_, Not, Count, Pick.Spec,
               Pick, CoveredDays.Spec, CoveredDays, IfObs, SumObs, ProductObs, RatioObs, CountObs, Observation,
               Group, Stratifier, Library, Measure):  # fmt: skip
    _model.model_rebuild()
