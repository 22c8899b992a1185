"""Hypothesis strategies: small patient populations over a tiny code universe; random measures.

The universe is small on purpose (three value sets over five codes, a handful of instants around the period's
boundaries, offsets that move local dates across midnight) so that random definitions actually select rows and
ties, nulls and boundary cases happen often.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from definitions.model import Measure
from definitions.resolved import ResolvedMeasure
from definitions.valuesets import ValueSet, ValueSetLibrary

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
URL_A = "http://example.org/ValueSet/a"
URL_B = "http://example.org/ValueSet/b"
URL_C = "http://example.org/ValueSet/c"
BP_PROFILE = "http://hl7.org/fhir/StructureDefinition/bp"
SYSTOLIC = {"system": LOINC, "code": "8480-6"}
DIASTOLIC = {"system": LOINC, "code": "8462-4"}
BP_CODE = (LOINC, "85354-9")
VALUESETS = ValueSetLibrary(
    {
        URL_A: ValueSet(URL_A, "A", None, frozenset({(SCT, "1"), (SCT, "2")})),
        URL_B: ValueSet(URL_B, "B", None, frozenset({(SCT, "2"), (SCT, "3")})),
        URL_C: ValueSet(URL_C, "C", None, frozenset({BP_CODE, (SCT, "4")})),
    }
)
CODINGS = [(SCT, "1"), (SCT, "2"), (SCT, "3"), (SCT, "4"), (SCT, "5"), BP_CODE]
PERIOD = (date(2025, 1, 1), date(2025, 12, 31))

TABLES = ("encounter", "condition", "procedure", "observation", "medication_request")
STATUS = {
    "encounter": ("status", ["finished", "cancelled", "in-progress", None]),
    "condition": ("clinical_status", ["active", "resolved", "recurrence", "inactive", None]),
    "procedure": ("status", ["completed", "not-done", "in-progress", None]),
    "observation": ("status", ["final", "amended", "preliminary", None]),
    "medication_request": ("status", ["active", "completed", "cancelled", None]),
}
CODE_COLUMN = {"encounter": "type", "condition": "code", "procedure": "code", "observation": "code",
               "medication_request": "medication"}  # fmt: skip
DONE_ENC = [{"attr": "status", "in": ["finished", "in-progress"]}]
ACTIVE_REQ = [{"attr": "status", "in": ["active", "completed"]}, {"attr": "do_not_perform", "is_true": False}]
NOT_INACTIVE = [{"attr": "clinical_status", "not_in": ["inactive"]}]
STATUS_RULES = {
    "done_encounter": {"table": "encounter", "where": DONE_ENC},
    "active_condition": {"table": "condition", "where": NOT_INACTIVE},
    "done_procedure": {"table": "procedure", "where": [{"attr": "status", "in": ["completed"]}]},
    "final_observation": {"table": "observation", "where": [{"attr": "status", "in": ["final", "amended"]}]},
    "active_request": {
        "table": "medication_request",
        "where": ACTIVE_REQ,
    },
}  # fmt: skip
RULE_OF = {rule["table"]: name for name, rule in STATUS_RULES.items()}

DAYS = [date(2023, 10, 1), date(2024, 12, 31), date(2025, 1, 1), date(2025, 2, 28), date(2025, 6, 15),
        date(2025, 12, 31), date(2026, 1, 1)]  # fmt: skip
OFFSETS = [None, 0, -300, 120, 330, -720]

# ------------------------------------------------------------------------------------------------ data

instants = st.builds(
    lambda d, h, m: datetime(d.year, d.month, d.day, h, m, tzinfo=UTC),
    st.sampled_from(DAYS), st.sampled_from([0, 3, 12, 21, 23]), st.sampled_from([0, 59]),
)  # fmt: skip
codings = st.lists(st.sampled_from(CODINGS), max_size=2, unique=True).map(
    lambda cs: [{"system": s, "code": c, "display": None} for s, c in cs]
)


@st.composite
def intervals(draw: st.DrawFn) -> tuple[datetime | None, datetime | None]:
    start = draw(st.none() | instants)
    if start is None:
        return None, draw(st.none() | instants)
    gap = draw(st.sampled_from([None, 0, 5, 48, 24 * 40]))
    return start, None if gap is None else start + timedelta(hours=gap)


@st.composite
def event_row(draw: st.DrawFn, table: str, pid: str, rid: str, encounter_ids: list[str]) -> dict[str, Any]:
    start, end = draw(intervals())
    column, statuses = STATUS[table]
    row: dict[str, Any] = {
        "patient_id": pid, "id": rid, "start": start, "end": end, "start_prec": 7, "end_prec": 7,
        "tz_offset_min": draw(st.sampled_from(OFFSETS)), column: draw(st.sampled_from(statuses)),
        CODE_COLUMN[table]: draw(codings),
    }  # fmt: skip
    if table != "encounter":
        row["encounter_id"] = draw(st.none() | st.sampled_from(encounter_ids)) if encounter_ids else None
    if table in ("procedure", "observation"):
        row["not_done_valueset"] = draw(st.sampled_from([None, None, URL_A, URL_C]))
    if table == "observation":
        row["value_quantity"] = draw(st.sampled_from([None, 60.0, 70.0, 139.0, 140.0, 1500.0]))
        row["value_unit"] = draw(st.sampled_from(["kg", "g", "mm[Hg]", "mmHg", "%", "cm"]))
        row["profiles"] = draw(st.sampled_from([None, [BP_PROFILE]]))
        row["category"] = draw(codings)
    if table == "medication_request":
        row["do_not_perform"] = draw(st.sampled_from([None, True, False]))
        row["refills"] = draw(st.sampled_from([None, 0, 1, 3]))
    return row


@st.composite
def components(draw: st.DrawFn, obs: dict[str, Any]) -> list[dict[str, Any]]:
    codes = draw(st.lists(st.sampled_from([SYSTOLIC, DIASTOLIC]), max_size=2, unique_by=lambda c: c["code"]))
    return [
        {"patient_id": obs["patient_id"], "observation_id": obs["id"], "component_ix": ix,
         "start": obs["start"],
         "code": [{**code, "display": None}],
         "value_quantity": draw(st.sampled_from([None, 80.0, 139.0, 140.0, 150.0])),
         "value_unit": draw(st.sampled_from(["mm[Hg]", "mmHg", "%"]))}
        for ix, code in enumerate(codes)
    ]  # fmt: skip


@st.composite
def populations(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """1-30 patients, each with 0-3 rows per table; observation components linked by observation_id."""
    n = draw(st.integers(1, 30))
    patients: list[dict[str, Any]] = []
    tables: dict[str, list[dict[str, Any]]] = {t: [] for t in (*TABLES, "observation_component")}
    for i in range(n):
        pid = f"p{i}"
        patients.append({
            "patient_id": pid,
            "birth_date": draw(st.sampled_from([None, date(1960, 12, 31), date(1970, 1, 1), date(2008, 2, 29),
                                                date(1958, 6, 15), date(2007, 12, 31)])),
            "gender": draw(st.sampled_from(["female", "male", None])),
        })  # fmt: skip
        encounter_ids: list[str] = []
        for table in TABLES:
            for j in range(draw(st.integers(0, 3))):
                rid = f"{pid}-{table[:3]}{j}"
                row = draw(event_row(table, pid, rid, encounter_ids))
                tables[table].append(row)
                if table == "encounter":
                    encounter_ids.append(rid)
                if table == "observation":
                    tables["observation_component"].extend(draw(components(row)))
    return patients, tables


# ------------------------------------------------------------------------------------------------ language

ANCHOR_POINTS = ["this.start", "this.end", "this.latest", "this.earliest"]
DURATIONS = [None, None, "-1 year", "-2 years", "1 month", "-3 days", "12 hours"]


@st.composite
def point(draw: st.DrawFn, anchors: list[str]) -> dict[str, Any] | str:
    ref = draw(st.sampled_from(anchors))
    out: dict[str, Any] = {"ref": ref}
    offset = draw(st.sampled_from(DURATIONS))
    if offset is not None and not (ref.startswith("period") and "hour" in offset):  # check.py: dates only
        out["offset"] = offset
    if ref.startswith("period") and draw(st.booleans()):
        out["month"], out["day"] = draw(st.sampled_from([(10, 1), (2, 29), (12, 31), (1, 1)]))
    return out if len(out) > 1 else ref


@st.composite
def timing(draw: st.DrawFn, table: str, other: str | None) -> dict[str, Any]:
    """A type-correct timing (as ``definitions/check.py`` wants): points with points, intervals where due."""
    this_ivals = ["this", "this.prevalence"] if table == "condition" else ["this"]
    other_ivals = (
        [] if other is None else (["other", "other.prevalence"] if other == "condition" else ["other"])
    )
    points = ["period.start", "period.end", *ANCHOR_POINTS]
    if other is not None:
        points += [p.replace("this", "other") for p in ANCHOR_POINTS]
    rel = draw(st.sampled_from(["during", "overlaps", "includes", "before", "after", "on_or_before",
                                "on_or_after", "same_day"]))  # fmt: skip
    precision = draw(st.sampled_from(["instant", "day"]))
    if rel in ("before", "after", "on_or_before", "on_or_after", "same_day"):
        left, right = draw(point(ANCHOR_POINTS)), draw(point(points))
    else:
        left = draw(st.sampled_from(this_ivals) | point(ANCHOR_POINTS))
        if rel == "includes":
            left = draw(st.sampled_from(this_ivals))
        if draw(st.booleans()):
            right = draw(st.sampled_from(["period", *other_ivals]))
            if rel == "includes" and draw(st.booleans()):
                right = draw(point(points))
        else:
            closed = draw(st.sampled_from(["[]", "[)", "(]", "()"]))
            right = {"start": draw(point(points)), "end": draw(point(points)), "closed": closed}
    return {"left": left, "rel": rel, "right": right, "precision": precision}


@st.composite
def attr_filter(draw: st.DrawFn, table: str) -> dict[str, Any]:
    column, statuses = STATUS[table]
    options = [
        {
            "attr": column,
            "in": draw(st.lists(st.sampled_from([s for s in statuses if s]), min_size=1, max_size=2)),
        },
        {"attr": column, "not_in": [draw(st.sampled_from([s for s in statuses if s]))]},
        {"attr": column, "is_null": draw(st.booleans())},
        {"attr": CODE_COLUMN[table], "valueset": draw(st.sampled_from(["a", "b", "c"]))},
        {
            "attr": CODE_COLUMN[table],
            "codes": [{"system": SCT, "code": draw(st.sampled_from(["1", "3", "5"]))}],
        },
    ]
    if table == "medication_request":
        options += [
            {"attr": "do_not_perform", "is_true": draw(st.booleans())},
            {
                "attr": "refills",
                "compare": {"op": draw(st.sampled_from(["<", ">=", "==", "!="])), "value": 1},
            },
        ]
    if table == "observation":
        options.append(
            {"attr": "value_quantity", "compare": {"op": draw(st.sampled_from([">", "<="])), "value": 70}}
        )
    return draw(st.sampled_from(options))


def value_filter(with_component: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda op, value, unit, comp: {
            "value": {"op": op, "value": value, **({"unit": unit} if unit else {})},
            **({"component": comp} if comp else {}),
        },
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
        st.sampled_from([65, 70, 140, 1.5, 1500]),
        st.sampled_from([None, "kg", "g", "mm[Hg]", "%"]),
        st.sampled_from([None, SYSTOLIC, DIASTOLIC] if with_component else [None]),
    )


@st.composite
def filters(draw: st.DrawFn, table: str, depth: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 2 if depth > 0 else 1))):
        kind = draw(st.sampled_from(["attr", "value", "timing", "timing", "with", "without"]))
        if kind == "value" and table == "observation":
            out.append(draw(value_filter()))
        elif kind in ("with", "without") and depth > 0:
            other_table = draw(st.sampled_from(TABLES))
            spec: dict[str, Any] = {kind: draw(retrieve(other_table, depth - 1))}
            if table != "encounter" and other_table == "encounter" and draw(st.booleans()):
                spec["link"] = "encounter"
            elif table == "encounter" and other_table != "encounter" and draw(st.booleans()):
                spec["link"] = "reverse_encounter"
            if "link" not in spec or draw(st.booleans()):
                spec["timing"] = draw(timing(table, other_table))
                if draw(st.integers(0, 3)) == 0:  # several timings, all of which must hold
                    spec["timing"] = [spec["timing"], draw(timing(table, other_table))]
            if draw(st.integers(0, 2)) == 0:  # the last/first/last-day related row must pass a test
                pick: dict[str, Any] = {
                    "by": draw(st.sampled_from(["latest", "earliest"])),
                    "time": draw(st.sampled_from(["start", "end", "latest", "earliest"])),
                    "day": draw(st.booleans()),
                }
                if draw(st.booleans()):
                    pick["in"] = draw(retrieve(other_table, 0))
                test = draw(filters(other_table, 0))
                if test:
                    pick["test"] = test
                spec["pick"] = pick
            out.append(spec)  # dicts with a timing key are built as models by the caller (see to_filter)
        elif kind == "timing":
            out.append({"timing": draw(timing(table, None))})
        else:
            out.append(draw(attr_filter(table)))
    return out


@st.composite
def retrieve(draw: st.DrawFn, table: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {"from": table}
    how = draw(
        st.sampled_from(["vs", "vs", "vs2", "codes"] + (["profile"] if table == "observation" else []))
    )
    if how == "vs":
        out["valueset"] = draw(st.sampled_from(["a", "b", "c"]))
    elif how == "vs2":
        out["valueset"] = ["a", "c"]
    elif how == "codes":
        out["codes"] = [{"system": SCT, "code": draw(st.sampled_from(["1", "3", "4"]))}]
    else:
        out["profile"] = BP_PROFILE
    if table in ("procedure", "observation") and how.startswith("vs") and draw(st.booleans()):
        out["negated"] = True
    if draw(st.booleans()):
        out["status"] = RULE_OF[table]
    where = draw(filters(table, depth))
    if where:
        out["where"] = where
    return out


@st.composite
def event_set(draw: st.DrawFn, depth: int, table: str | None = None) -> dict[str, Any]:
    table = table or draw(st.sampled_from(TABLES))
    kind = draw(st.sampled_from(["retrieve", "retrieve", "named", "union"]))
    if kind == "named":
        out: dict[str, Any] = {"events": f"ev_{table}"}
        where = draw(filters(table, depth))
        if where:
            out["where"] = where
        return out
    if kind == "union":
        return {"union": [draw(retrieve(table, depth)), draw(retrieve(table, depth))]}
    return draw(retrieve(table, depth))


@st.composite
def condition(draw: st.DrawFn, depth: int = 2) -> dict[str, Any]:
    kinds = ["exists", "exists", "count", "age", "gender", "pick", "ref"]
    if depth > 0:
        kinds += ["all", "any", "not"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("all", "any"):
        return {kind: draw(st.lists(condition(depth - 1), min_size=1, max_size=3))}
    if kind == "not":
        return {"not": draw(condition(depth - 1))}
    if kind == "exists":
        return {"exists": draw(event_set(1))}
    if kind == "ref":
        return {"ref": f"ev_{draw(st.sampled_from(TABLES))}"}
    if kind == "count":
        return {
            "count": draw(event_set(1)),
            "distinct": draw(st.sampled_from(["rows", "days"])),
            "compare": {"op": draw(st.sampled_from([">=", "==", "<"])), "value": draw(st.integers(0, 3))},
        }
    if kind == "age":
        spec: dict[str, Any] = {"at": draw(point(["period.start", "period.end"]))}
        spec["min"], spec["max"] = draw(
            st.sampled_from([(18, None), (None, 17), (17, 64), (65, None), (0, 120)])
        )
        if draw(st.booleans()):
            spec["unit"] = draw(st.sampled_from(["months", "days"]))
            spec["min"], spec["max"] = (
                None if spec["min"] is None else spec["min"] * 12,
                None if spec["max"] is None else spec["max"] * 400,
            )
        return {"age": spec}
    if kind == "gender":
        return {"gender": draw(st.sampled_from(["female", "male"]))}
    by = draw(st.sampled_from(["latest", "earliest", "lowest", "highest"]))
    # lowest/highest order by value_quantity, which only observations have
    table = "observation" if by in ("lowest", "highest") else draw(st.sampled_from(["observation", *TABLES]))
    pick: dict[str, Any] = {
        "from": draw(event_set(1, table)),
        "by": by,
        "time": draw(st.sampled_from(["start", "end", "latest", "earliest"])),
        "missing": draw(st.booleans()),
    }
    if draw(st.booleans()):
        pick["day"] = draw(st.sampled_from(["latest", "earliest"]))
    if table == "observation" and draw(st.booleans()):
        pick["component"] = draw(st.sampled_from([SYSTOLIC, DIASTOLIC]))
    if draw(st.booleans()):
        pick["unit"] = draw(st.sampled_from(["mm[Hg]", "kg"]))
    test = draw(st.lists(value_filter(False) if table == "observation" else attr_filter(table), max_size=1))
    test += draw(filters(table, 0))
    pick["test"] = test
    return {"pick": pick}


def _model_filters(node: Any) -> Any:
    """Build ``{with|without:, timing:}`` as models: the YAML discriminator reads such a dict as a timing
    filter (``definitions/model.py`` ``_filter_kind`` tests ``timing`` before ``with``)."""
    from definitions.model import WithFilter, WithoutFilter

    if isinstance(node, list):
        return [_model_filters(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _model_filters(v) for k, v in node.items()}
    if "with" in out:
        return WithFilter.model_validate(out)
    if "without" in out:
        return WithoutFilter.model_validate(out)
    return out


@st.composite
def measures(draw: st.DrawFn) -> ResolvedMeasure:
    """A proportion measure: a named event set per table, random populations (IP and numerator always)."""
    define = {f"ev_{t}": draw(retrieve(t, 1)) for t in TABLES}
    pops: dict[str, Any] = {"initial_population": draw(condition()), "numerator": draw(condition())}
    for name in ("denominator", "denominator_exclusion", "denominator_exception", "numerator_exclusion"):
        if draw(st.integers(0, 2)) == 0:
            pops[name] = draw(condition(1))
    data = {
        "id": "DIFF", "version": "1", "title": "differential", "implements": {"library": "D", "version": "1"},
        "scoring": "proportion", "period": {"start": PERIOD[0], "end": PERIOD[1]},
        "valuesets": {"a": URL_A, "b": URL_B, "c": URL_C}, "status_rules": STATUS_RULES,
        "define": _model_filters(define), "populations": _model_filters(pops),
    }  # fmt: skip
    return ResolvedMeasure(Measure.model_validate(data), {})
