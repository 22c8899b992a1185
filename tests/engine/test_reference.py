"""The reference interpreter on small hand-built patients: every construct of the spec, tricky corners too."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from definitions.model import Library, Measure, WithFilter, WithoutFilter
from definitions.resolved import ResolvedMeasure
from definitions.valuesets import ValueSet, ValueSetLibrary
from engine.reference import MissingExpansionError, ReferenceConfig, evaluate_patient

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
URL_A = "http://example.org/ValueSet/a"
URL_B = "http://example.org/ValueSet/b"
VALUESETS = ValueSetLibrary(
    {
        URL_A: ValueSet(URL_A, "A", None, frozenset({(SCT, "1"), (SCT, "2")})),
        URL_B: ValueSet(URL_B, "B", None, frozenset({(LOINC, "9-9")})),
    }
)
CONFIG = ReferenceConfig(date(2025, 1, 1), date(2025, 12, 31))
PATIENT = {"patient_id": "p", "birth_date": date(1970, 6, 15), "gender": "female"}


def dt(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def code(c: str, system: str = SCT) -> list[dict[str, Any]]:
    return [{"system": system, "code": c, "display": None}]


def row(rid: str, start: datetime | None, end: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {"patient_id": "p", "id": rid, "start": start, "end": end, "tz_offset_min": None, **extra}


def run(
    define: dict[str, Any],
    populations: dict[str, Any] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    patient: dict[str, Any] | None = None,
    config: ReferenceConfig = CONFIG,
    libraries: dict[str, Library] | None = None,
    **measure: Any,
) -> Any:
    m = Measure.model_validate(
        {
            "id": "T",
            "version": "1",
            "title": "t",
            "implements": {"library": "T", "version": "1"},
            "scoring": "proportion",
            "period": {"start": "2025-01-01", "end": "2025-12-31"},
            "valuesets": {"a": URL_A, "b": URL_B},
            "define": define,
            "populations": populations or {"initial_population": "ip", "numerator": "num"},
            **measure,
        }
    )
    res = evaluate_patient(
        ResolvedMeasure(m, libraries or {}), VALUESETS, patient or PATIENT, tables or {}, config
    )
    return res


def truth(cond: Any, tables: dict[str, list[dict[str, Any]]], **kw: Any) -> bool:
    """Whether a condition holds: it is the initial population, the numerator always true."""
    res = run({"c": cond}, {"initial_population": "c", "numerator": {"gender": "female"}}, tables, **kw)
    return bool(res.groups["group-1"]["initial_population"])


def n_rows(events: Any, tables: dict[str, list[dict[str, Any]]], **kw: Any) -> int:
    res = run({"e": events}, {"initial_population": {"exists": "e"}, "numerator": "e"}, tables, **kw)
    return int(res.defines["e"])


# ------------------------------------------------------------------------------------------- retrieves


def test_retrieve_matches_any_coding_and_ignores_other_patients() -> None:
    enc = [
        row("e1", dt(2025, 3, 1), type=code("9") + code("2")),
        row("e2", dt(2025, 3, 1), type=code("7")),
        {**row("e3", dt(2025, 3, 1), type=code("1")), "patient_id": "q"},
        row("e4", dt(2025, 3, 1), type=None),
    ]
    assert n_rows({"from": "encounter", "valueset": "a"}, {"encounter": enc}) == 1


def test_negated_retrieve_matches_not_done_valueset() -> None:
    proc = [
        row("x1", dt(2025, 3, 1), code=code("5"), not_done_valueset=URL_A, status="not-done"),
        row("x2", dt(2025, 3, 1), code=code("5"), not_done_valueset=URL_B, status="not-done"),
        row("x3", dt(2025, 3, 1), code=code("1"), not_done_valueset=None, status="not-done"),
    ]
    assert n_rows({"from": "procedure", "valueset": "a", "negated": True}, {"procedure": proc}) == 2
    assert n_rows({"from": "procedure", "valueset": "a"}, {"procedure": proc}) == 1


def test_codes_profile_and_code_path() -> None:
    obs = [
        row("o1", dt(2025, 3, 1), code=code("85354-9", LOINC)),
        row("o2", dt(2025, 3, 1), code=code("1"), profiles=["http://hl7.org/fhir/StructureDefinition/bp"]),
        row("o3", dt(2025, 3, 1), code=code("1"), category=code("9-9", LOINC)),
    ]
    assert (
        n_rows(
            {"from": "observation", "profile": "http://hl7.org/fhir/StructureDefinition/bp"},
            {"observation": obs},
        )
        == 1  # declared profiles only (o2); o1 carries the fixed code but declares nothing
    )
    assert (
        n_rows(
            {
                "from": "observation",
                "profile": "http://hl7.org/fhir/StructureDefinition/bp",
                "codes": [{"system": LOINC, "code": "85354-9"}],
            },
            {"observation": obs},
        )
        == 2  # profile or code: any of the retrieve's criteria matches
    )
    assert n_rows({"from": "observation", "codes": [{"system": SCT, "code": "1"}]}, {"observation": obs}) == 2
    assert (
        n_rows({"from": "observation", "valueset": "b", "code_path": "category"}, {"observation": obs}) == 1
    )


def test_missing_expansion_names_the_url() -> None:
    with pytest.raises(MissingExpansionError, match=r"example\.org/ValueSet/zz"):
        run(
            {"e": {"from": "encounter", "valueset": "http://example.org/ValueSet/zz"}},
            {"initial_population": {"exists": "e"}, "numerator": "e"},
        )


def test_status_rule_union_and_ref_narrowing() -> None:
    enc = [
        row("e1", dt(2025, 3, 1), type=code("1"), status="finished", class_code="AMB"),
        row("e2", dt(2025, 3, 2), type=code("2"), status="cancelled", class_code="AMB"),
        row("e3", dt(2025, 3, 3), type=code("2"), status="finished", class_code="IMP"),
    ]
    rules = {"done": {"table": "encounter", "where": [{"attr": "status", "in": ["finished"]}]}}
    define = {
        "enc": {"from": "encounter", "valueset": "a", "status": "done"},
        "both": {"union": ["enc", {"from": "encounter", "codes": [{"system": SCT, "code": "1"}]}]},
        "amb": {"events": "both", "where": [{"attr": "class_code", "not_in": ["IMP"]}]},
    }
    res = run(
        define,
        {"initial_population": {"exists": "both"}, "numerator": "amb"},
        {"encounter": enc},
        status_rules=rules,
    )
    assert res.defines == {"enc": 2, "both": 2, "amb": 1}


def test_library_names_resolve_in_their_own_scope() -> None:
    lib = Library.model_validate(
        {
            "library": "lib",
            "version": "1",
            "valuesets": {"a": URL_B},
            "define": {"obs": {"from": "observation", "valueset": "a"}},
        }
    )
    obs = [row("o1", dt(2025, 3, 1), code=code("9-9", LOINC)), row("o2", dt(2025, 3, 1), code=code("1"))]
    res = run(
        {},
        {"initial_population": {"exists": "lib.obs"}, "numerator": "lib.obs"},
        {"observation": obs},
        libraries={"lib": lib},
        include=["lib"],
    )
    assert res.defines == {"lib.obs": 1}
    assert res.groups["group-1"]["numerator"]


# ------------------------------------------------------------------------------------------- attr / value


def test_attr_filters_null_rules() -> None:
    mr = [
        row("m1", dt(2025, 3, 1), medication=code("1"), status="active", do_not_perform=True, refills=3),
        row("m2", dt(2025, 3, 1), medication=code("1"), status=None, do_not_perform=None, refills=None),
        row("m3", dt(2025, 3, 1), medication=code("1"), status="stopped", do_not_perform=False, refills=0),
    ]
    t = {"medication_request": mr}
    base: dict[str, Any] = {"from": "medication_request", "valueset": "a"}
    assert n_rows({**base, "where": [{"attr": "status", "in": ["active", "stopped"]}]}, t) == 2
    assert n_rows({**base, "where": [{"attr": "status", "not_in": ["active"]}]}, t) == 2  # null passes not_in
    assert n_rows({**base, "where": [{"attr": "do_not_perform", "is_true": False}]}, t) == 2  # false and null
    assert n_rows({**base, "where": [{"attr": "do_not_perform", "is_true": True}]}, t) == 1
    assert n_rows({**base, "where": [{"attr": "refills", "compare": {"op": "!=", "value": 3}}]}, t) == 1
    assert n_rows({**base, "where": [{"attr": "refills", "is_null": True}]}, t) == 1
    assert (
        n_rows({**base, "where": [{"attr": "status", "codes": [{"system": "x", "code": "active"}]}]}, t) == 1
    )


def test_value_filter_units_and_components() -> None:
    obs = [
        row("o1", dt(2025, 3, 1), code=code("1"), value_quantity=70.0, value_unit="kg"),
        row("o2", dt(2025, 3, 1), code=code("1"), value_quantity=65000.0, value_unit="g"),
        row("o3", dt(2025, 3, 1), code=code("1"), value_quantity=80.0, value_unit="cm"),  # inconvertible
        row("o4", dt(2025, 3, 1), code=code("1"), value_quantity=None, value_unit="kg"),
    ]
    comps = [
        {
            "patient_id": "p",
            "observation_id": "o3",
            "component_ix": 0,
            "code": code("8480-6", LOINC),
            "value_quantity": 150.0,
            "value_unit": "mmHg",
        }
    ]
    t = {"observation": obs, "observation_component": comps}
    base: dict[str, Any] = {"from": "observation", "valueset": "a"}
    assert n_rows({**base, "where": [{"value": {"op": ">=", "value": 66, "unit": "kg"}}]}, t) == 1
    assert n_rows({**base, "where": [{"value": {"op": "<", "value": 66000, "unit": "g"}}]}, t) == 1
    comp = {
        "value": {"op": ">", "value": 140, "unit": "mm[Hg]"},
        "component": {"system": LOINC, "code": "8480-6"},
    }
    assert n_rows({**base, "where": [comp]}, t) == 1


# ------------------------------------------------------------------------------------------- time


def test_day_precision_uses_each_values_own_local_date() -> None:
    # 2025-01-01T03:00Z recorded at -05:00 is 2024-12-31 locally: outside the period by day, inside by instant
    enc = [{**row("e1", dt(2025, 1, 1, 3), dt(2025, 1, 1, 3), type=code("1")), "tz_offset_min": -300}]
    during = {"timing": {"left": "this.start", "rel": "during", "right": "period", "precision": "day"}}
    instant = {"timing": {"left": "this.start", "rel": "during", "right": "period"}}
    t = {"encounter": enc}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [during]}, t) == 0
    assert n_rows({"from": "encounter", "valueset": "a", "where": [instant]}, t) == 1
    # the period's boundaries are in the evaluation time zone (+02:00: it starts 2024-12-31T22:00Z)
    late = [row("e2", dt(2024, 12, 31, 23), type=code("1"))]
    east = ReferenceConfig(date(2025, 1, 1), date(2025, 12, 31), tz_offset_min=120)
    assert (
        n_rows({"from": "encounter", "valueset": "a", "where": [instant]}, {"encounter": late}, config=east)
        == 1
    )
    assert n_rows({"from": "encounter", "valueset": "a", "where": [instant]}, {"encounter": late}) == 0


def test_closed_null_boundaries() -> None:
    enc = [
        row("open_end", dt(2024, 6, 1), None, type=code("1")),  # [2024-06-01, end of time]: overlaps period
        row("open_start", None, dt(2026, 1, 1), type=code("1")),  # [start of time, 2026]: overlaps
        row("unknown", None, None, type=code("1")),  # both null: unknown, dropped
        row("before", dt(2024, 1, 1), dt(2024, 2, 1), type=code("1")),
    ]
    ovl = {"timing": {"left": "this", "rel": "overlaps", "right": "period"}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [ovl]}, {"encounter": enc}) == 2
    ends = {"timing": {"left": "this.end", "rel": "after", "right": "period.end"}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [ends]}, {"encounter": enc}) == 2
    latest = {"timing": {"left": "this.latest", "rel": "during", "right": "period"}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [latest]}, {"encounter": enc}) == 0


def test_prevalence_unknown_end_for_inactive_conditions() -> None:
    cond = [
        row("active", dt(2020, 1, 1), None, code=code("1"), clinical_status="active"),
        row("resolved", dt(2020, 1, 1), None, code=code("1"), clinical_status="resolved"),
        row("recurrence", dt(2020, 1, 1), None, code=code("1"), clinical_status="recurrence"),
    ]
    ovl = {"timing": {"left": "this.prevalence", "rel": "overlaps", "right": "period"}}
    assert n_rows({"from": "condition", "valueset": "a", "where": [ovl]}, {"condition": cond}) == 2
    plain = {"timing": {"left": "this", "rel": "overlaps", "right": "period"}}
    assert n_rows({"from": "condition", "valueset": "a", "where": [plain]}, {"condition": cond}) == 3


def test_calendar_month_clamping_and_month_day() -> None:
    # window [period.end - 1 month, period.end] for a period ending 2025-03-31 starts 2025-02-28
    cfg = ReferenceConfig(date(2025, 1, 1), date(2025, 3, 31))
    enc = [row("e1", dt(2025, 2, 28, 12), type=code("1")), row("e2", dt(2025, 2, 27, 12), type=code("1"))]
    win = {"start": {"ref": "period.end", "offset": "-1 month"}, "end": "period.end"}
    f = {"timing": {"left": "this.start", "rel": "during", "right": win, "precision": "day"}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [f]}, {"encounter": enc}, config=cfg) == 1
    # October 1 two years before the period start (CMS125's window), 00:00 local
    oct1 = {
        "start": {"ref": "period.start", "offset": "-2 years", "month": 10, "day": 1},
        "end": "period.end",
    }
    enc2 = [row("a", dt(2023, 10, 1, 0), type=code("1")), row("b", dt(2023, 9, 30, 23, 59), type=code("1"))]
    g = {"timing": {"left": "this.start", "rel": "during", "right": oct1}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [g]}, {"encounter": enc2}) == 1


def test_open_window_ends_and_point_relations() -> None:
    enc = [
        row("e1", dt(2025, 12, 31, 10), dt(2025, 12, 31, 10), type=code("1")),
        row("e2", dt(2025, 6, 1), dt(2025, 6, 1), type=code("1")),
    ]
    win = {"start": "period.start", "end": "period.end", "closed": "[)"}
    f = {"timing": {"left": "this.start", "rel": "during", "right": win, "precision": "day"}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [f]}, {"encounter": enc}) == 1
    same = {"timing": {"left": "this.start", "rel": "same_day", "right": {"ref": "period.end"}}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [same]}, {"encounter": enc}) == 1
    inc = {"timing": {"left": "period", "rel": "includes", "right": "this"}}
    assert n_rows({"from": "encounter", "valueset": "a", "where": [inc]}, {"encounter": enc}) == 2


def test_with_link_encounter_and_without() -> None:
    enc = [
        row("e1", dt(2025, 3, 1), dt(2025, 3, 2), type=code("1")),
        row("e2", dt(2025, 5, 1), dt(2025, 5, 2), type=code("1")),
    ]
    proc = [
        row("x1", dt(2025, 3, 1, 12), code=code("1"), encounter_id="e1"),
        row("x2", dt(2025, 3, 1, 12), code=code("1"), encounter_id="e2"),  # linked, but outside e2's interval
        row("x3", dt(2025, 8, 1), code=code("1"), encounter_id=None),
    ]
    t = {"encounter": enc, "procedure": proc}
    base: dict[str, Any] = {"from": "procedure", "valueset": "a"}
    other = {"from": "encounter", "valueset": "a"}
    inside = {"left": "this.start", "rel": "during", "right": "other"}
    # built as models: YAML {with:, timing:} is read as a timing filter (model.py _filter_kind)
    linked = WithFilter.model_validate({"with": other, "link": "encounter"})
    linked_inside = WithFilter.model_validate({"with": other, "link": "encounter", "timing": inside})
    outside = WithoutFilter.model_validate({"without": other, "timing": inside})
    assert n_rows({**base, "where": [linked]}, t) == 2
    assert n_rows({**base, "where": [linked_inside]}, t) == 1
    assert n_rows({**base, "where": [outside]}, t) == 1  # x3: August, in no encounter
    back = {"from": "encounter", "valueset": "a", "where": [{"with": base, "link": "reverse_encounter"}]}
    assert n_rows(back, t) == 2


# ------------------------------------------------------------------------------------------- conditions


def test_kleene_logic_unknown_gender() -> None:
    unknown = {**PATIENT, "gender": None}
    assert not truth({"gender": "female"}, {}, patient=unknown)
    assert not truth({"not": {"gender": "female"}}, {}, patient=unknown)  # not unknown = unknown
    assert truth({"any": [{"gender": "male"}, {"not": {"gender": "male"}}]}, {})
    assert truth(
        {"any": [{"gender": "female"}, {"exists": {"from": "encounter", "valueset": "a"}}]},
        {},
        patient=PATIENT,
    )
    assert truth(
        {"any": [{"gender": "male"}, {"not": {"exists": {"from": "encounter", "valueset": "a"}}}]},
        {},
        patient=unknown,
    )  # unknown or true = true
    assert not truth(
        {"all": [{"gender": "female"}, {"not": {"exists": {"from": "encounter", "valueset": "a"}}}]},
        {},
        patient=unknown,
    )


def test_age_completed_years() -> None:
    birthday_after = {**PATIENT, "birth_date": date(1960, 12, 31)}  # turns 65 on the period's last day
    assert truth({"age": {"at": "period.end", "min": 65}}, {}, patient=birthday_after)
    assert not truth({"age": {"at": "period.start", "min": 65}}, {}, patient=birthday_after)
    leap = {**PATIENT, "birth_date": date(2008, 2, 29)}
    assert not truth(
        {"age": {"at": {"ref": "period.start", "month": 2, "day": 28}, "min": 17}}, {}, patient=leap
    )
    assert truth({"age": {"at": {"ref": "period.start", "month": 3, "day": 1}, "min": 17}}, {}, patient=leap)
    assert not truth({"age": {"at": "period.end", "max": 200}}, {}, patient={**PATIENT, "birth_date": None})
    assert truth({"age": {"at": "period.end", "unit": "months", "min": 666, "max": 666}}, {})


def test_count_rows_and_distinct_local_days() -> None:
    enc = [
        row("e1", dt(2025, 3, 1, 1), type=code("1")),
        {**row("e2", dt(2025, 3, 2, 2), type=code("1")), "tz_offset_min": -300},  # 2025-03-01 locally
        row("e3", dt(2025, 3, 5), type=code("1")),
    ]
    t = {"encounter": enc}
    ev = {"from": "encounter", "valueset": "a"}
    assert truth({"count": ev, "compare": {"op": "==", "value": 3}}, t)
    assert truth({"count": ev, "distinct": "days", "compare": {"op": "==", "value": 2}}, t)


def _bp(rid: str, start: datetime, systolic: float | None, offset: int | None = None) -> dict[str, Any]:
    return {
        **row(rid, start, start, code=code("85354-9", LOINC)),
        "tz_offset_min": offset,
        "value_quantity": systolic,
        "value_unit": "mm[Hg]",
    }


def test_pick_lowest_nulls_first_on_latest_day() -> None:
    obs = [
        _bp("b1", dt(2025, 5, 1, 9), 150.0),
        _bp("b2", dt(2025, 5, 1, 15), 135.0),
        _bp("b3", dt(2025, 4, 1), 120.0),
        _bp("b4", dt(2025, 5, 2, 2), None, offset=-300),  # 2025-05-01 locally, no value: sorts first
    ]
    ev = {"from": "observation", "codes": [{"system": LOINC, "code": "85354-9"}]}
    t = {"observation": obs}
    lowest = {"from": ev, "by": "lowest", "day": "latest", "test": [{"value": {"op": "<", "value": 140}}]}
    assert not truth({"pick": lowest}, t)  # chosen b4, whose missing value fails the test
    assert truth({"pick": {**lowest, "test": [{"attr": "id", "in": ["b4"]}]}}, t)
    highest = {**lowest, "by": "highest"}
    assert not truth({"pick": highest}, t)  # 150 is the highest of the latest day
    assert truth({"pick": {**lowest, "by": "latest", "test": [{"attr": "id", "in": ["b4"]}]}}, t)
    assert truth({"pick": {**lowest, "day": None}}, {"observation": obs[:3]})  # lowest of all days: b3, 120
    assert truth(
        {"pick": {**lowest, "day": None, "by": "latest"}}, {"observation": obs[:3]}
    )  # b2 (15:00): 135
    assert truth(
        {"pick": {"from": {"from": "observation", "valueset": "b"}, "by": "latest", "missing": True}}, t
    )


def test_pick_ties_break_by_row_id() -> None:
    obs = [_bp("b2", dt(2025, 5, 1), 130.0), _bp("b1", dt(2025, 5, 1), 130.0)]
    ev = {"from": "observation", "codes": [{"system": LOINC, "code": "85354-9"}]}
    t = {"observation": obs}
    assert truth({"pick": {"from": ev, "by": "earliest", "test": [{"attr": "id", "in": ["b1"]}]}}, t)
    assert truth({"pick": {"from": ev, "by": "latest", "test": [{"attr": "id", "in": ["b2"]}]}}, t)
    assert truth({"pick": {"from": ev, "by": "lowest", "test": [{"attr": "id", "in": ["b1"]}]}}, t)


def test_covered_days() -> None:
    """Medication requests cover their supply days (CumulativeMedicationDuration), overlaps once."""
    mr = [
        row("m1", None, None, medication=code("1"), authored_on=dt(2025, 1, 1), expected_supply_days=10.0),
        row("m2", None, None, medication=code("1"), authored_on=dt(2025, 1, 5), expected_supply_days=16.0),
        row("m3", None, None, medication=code("1"), authored_on=dt(2025, 12, 25), expected_supply_days=30.0),
        row("m4", dt(2025, 6, 1), dt(2025, 6, 30), medication=code("1")),  # no supply stated: covers nothing
    ]
    ev = {"from": "medication_request", "valueset": "a"}
    assert truth(
        {"covered_days": {"from": ev, "window": "period", "compare": {"op": "==", "value": 27}}},
        {"medication_request": mr},
    )
    enc = [row("e1", dt(2025, 3, 1), dt(2025, 3, 3), type=code("1"))]
    assert truth(
        {
            "covered_days": {
                "from": {"from": "encounter", "valueset": "a"},
                "window": "period",
                "compare": {"op": "==", "value": 3},
            }
        },
        {"encounter": enc},
    )


# ------------------------------------------------------------------------------------------- populations


def test_population_cascade() -> None:
    enc = [row("e1", dt(2025, 3, 1), type=code("1"))]
    pops = {
        "initial_population": {"gender": "female"},
        "denominator_exclusion": {"exists": {"from": "encounter", "valueset": "b"}},
        "numerator": {"exists": {"from": "encounter", "valueset": "a"}},
        "denominator_exception": {"gender": "female"},
    }
    res = run({}, pops, {"encounter": enc})
    assert res.groups["group-1"] == {
        "initial_population": True,
        "denominator": True,
        "denominator_exclusion": False,
        "denominator_exception": False,
        "numerator": True,
        "numerator_exclusion": False,
    }
    res = run({}, pops, {})
    assert res.groups["group-1"]["denominator_exception"] and not res.groups["group-1"]["numerator"]
    excl = {
        **pops,
        "denominator_exclusion": {"gender": "female"},
        "numerator_exclusion": {"gender": "female"},
    }
    res = run({}, excl, {"encounter": enc})
    assert res.groups["group-1"] == {
        "initial_population": True,
        "denominator": True,
        "denominator_exclusion": True,
        "denominator_exception": False,
        "numerator": False,
        "numerator_exclusion": False,
    }
    res = run({}, pops, {"encounter": enc}, patient={**PATIENT, "gender": None})
    assert not any(res.groups["group-1"].values())
