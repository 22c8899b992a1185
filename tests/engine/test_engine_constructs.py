"""Constructs the random differential test does not generate, checked on hand-built patients: the compiled
engine and the reference interpreter must both give the expected answer."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from datasets.source import FrameSource
from definitions.model import Measure
from definitions.resolved import ResolvedMeasure
from engine import EvaluationConfig, compile_measure, evaluate
from tests.engine.test_differential import frames
from tests.engine.test_reference import LOINC, PATIENT, SCT, URL_A, URL_B, VALUESETS, code, dt, row, truth


def _dx(condition_id: str, rank: int | None, use: str | None = "billing") -> dict[str, Any]:
    return {"condition_id": condition_id, "use": use, "rank": rank, "present_on_admission": None}


def _stay(start: Any, end: Any, type_code: str = "9-9") -> dict[str, Any]:
    system = LOINC if type_code == "9-9" else SCT
    return {
        "location_id": "l1",
        "status": "completed",
        "start": start,
        "end": end,
        "type": code(type_code, system),
    }


def _reading(rid: str, at: Any, value: float, status: str = "final") -> dict[str, Any]:
    return row(rid, at, at, code=code("9-9", LOINC), status=status, value_quantity=value)


CASES: list[tuple[str, Any, dict[str, list[dict[str, Any]]], bool]] = [
    (
        "supply days of medication requests, overlaps counted once",
        {
            "covered_days": {
                "from": {"from": "medication_request", "valueset": "a"},
                "window": "period",
                "compare": {"op": "==", "value": 27},
            }
        },
        {
            "medication_request": [
                row(
                    "m1",
                    None,
                    None,
                    medication=code("1"),
                    authored_on=dt(2025, 1, 1),
                    expected_supply_days=10.0,
                ),
                row(
                    "m2",
                    None,
                    None,
                    medication=code("1"),
                    authored_on=dt(2025, 1, 5),
                    expected_supply_days=16.0,
                ),
                row(
                    "m3",
                    None,
                    None,
                    medication=code("1"),
                    authored_on=dt(2025, 12, 25),
                    expected_supply_days=30.0,
                ),
                row("m4", dt(2025, 6, 1), dt(2025, 6, 30), medication=code("1")),
            ]
        },
        True,
    ),
    (
        "supply from dose and frequency: 60 tablets, 2 a day, 1 refill = 60 days",
        {
            "exists": {
                "from": "medication_request",
                "valueset": "a",
                "where": [
                    {
                        "timing": {
                            "left": "this.supply",
                            "rel": "includes",
                            "right": {"ref": "period.start", "offset": "59 days"},
                            "precision": "day",
                        }
                    }
                ],
            }
        },
        {
            "medication_request": [
                row(
                    "m1",
                    None,
                    None,
                    medication=code("1"),
                    authored_on=dt(2025, 1, 1),
                    dispense_quantity=60.0,
                    dose_value=1.0,
                    timing_frequency=2,
                    timing_period=1.0,
                    timing_period_unit="d",
                    refills=1,
                ),
            ]
        },
        True,
    ),
    (
        "an instant column of the row as time anchor (issued)",
        {
            "exists": {
                "from": "observation",
                "valueset": "a",
                "where": [{"timing": {"left": "this.issued", "rel": "during", "right": "period"}}],
            }
        },
        {"observation": [row("o1", None, None, code=code("1"), issued=dt(2025, 3, 1))]},
        True,
    ),
    (
        "birth-relative window: within 42 days of birth",
        {
            "exists": {
                "from": "procedure",
                "valueset": "a",
                "where": [
                    {
                        "timing": {
                            "left": "this.start",
                            "rel": "during",
                            "right": {
                                "start": "birth_date",
                                "end": {"ref": "birth_date", "offset": "42 days"},
                            },
                            "precision": "day",
                        }
                    }
                ],
            }
        },
        {"procedure": [row("x1", dt(1970, 7, 1), dt(1970, 7, 1), code=code("1"))]},
        True,
    ),
    *[
        (
            f"encounter list link {link}: {title}",
            {
                "exists": {
                    "from": "encounter",
                    "valueset": "a",
                    "where": [
                        {
                            "with": {
                                "from": "condition" if link != "principal_procedure" else "procedure",
                                "valueset": "b",
                            },
                            "link": link,
                        }
                    ],
                }
            },
            {
                "encounter": [row("e1", dt(2025, 3, 1), dt(2025, 3, 4), type=code("1"), **{column: entries})],
                "condition": [row("c1", dt(2025, 3, 1), None, code=code("9-9", LOINC))],
                "procedure": [row("c1", dt(2025, 3, 2), dt(2025, 3, 2), code=code("9-9", LOINC))],
            },
            expected,
        )
        for link, column, title, entries, expected in [
            ("encounter_diagnosis", "diagnoses", "any entry", [_dx("c0", 1), _dx("c1", 2)], True),
            ("encounter_diagnosis", "diagnoses", "no entry names the row", [_dx("c0", 1)], False),
            ("principal_diagnosis", "diagnoses", "rank 1, billing", [_dx("c1", 1)], True),
            ("principal_diagnosis", "diagnoses", "rank 2", [_dx("c1", 2)], False),
            ("principal_diagnosis", "diagnoses", "no use", [_dx("c1", 1, None)], False),
            ("principal_procedure", "procedures", "rank 1", [{"procedure_id": "c1", "rank": 1}], True),
            ("principal_procedure", "procedures", "rank 2", [{"procedure_id": "c1", "rank": 2}], False),
        ]
    ],
    *[
        (
            f"length in days {title}",
            {
                "exists": {
                    "from": "encounter",
                    "valueset": "a",
                    "where": [{"attr": "length_days", "compare": {"op": "<", "value": 2}}],
                }
            },
            {"encounter": [row("e1", start, end, type=code("1"))]},
            expected,
        )
        for title, start, end, expected in [
            ("1 calendar day (late evening to early morning)", dt(2025, 3, 1, 23), dt(2025, 3, 2, 1), True),
            ("2 calendar days in 26 hours", dt(2025, 3, 1, 23), dt(2025, 3, 3, 1), False),
            ("unknown end", dt(2025, 3, 1, 23), None, False),
        ]
    ],
    *[
        (
            f"location stays of an encounter, two timings that must both hold: {title}",
            {
                "exists": {
                    "from": "encounter",
                    "valueset": "a",
                    "where": [
                        {
                            "with": {
                                "from": "encounter_location",
                                "valueset": "b",
                                "where": [{"attr": "length_days", "compare": {"op": ">=", "value": 1}}],
                            },
                            "link": "reverse_encounter",
                            "timing": [
                                {"left": "other.start", "rel": "on_or_after", "right": "this.start"},
                                {
                                    "left": "other.start",
                                    "rel": "during",
                                    "precision": "day",
                                    "right": {
                                        "start": "this.start",
                                        "end": {"ref": "this.start", "offset": "1 day"},
                                    },
                                },
                            ],
                        }
                    ],
                }
            },
            {"encounter": [row("e1", dt(2025, 3, 1, 8), dt(2025, 3, 9), type=code("1"), locations=stays)]},
            expected,
        )
        for title, stays, expected in [
            (
                "a day in the unit from the day after admission",
                [_stay(dt(2025, 3, 2, 22), dt(2025, 3, 3, 1))],
                True,
            ),
            (
                "the unit type on another stay",
                [_stay(dt(2025, 3, 2, 22), dt(2025, 3, 3, 1), "1"), _stay(dt(2025, 3, 2), dt(2025, 3, 2, 1))],
                False,
            ),
            ("starts before admission", [_stay(dt(2025, 3, 1, 7), dt(2025, 3, 3))], False),
            ("starts two days after admission", [_stay(dt(2025, 3, 3, 1), dt(2025, 3, 5))], False),
            ("less than a calendar day", [_stay(dt(2025, 3, 1, 9), dt(2025, 3, 1, 20))], False),
        ]
    ],
]
CASES += [
    (
        f"the last related row must pass (pick {pick}): {title}",
        {
            "exists": {
                "from": "encounter",
                "valueset": "a",
                "where": [
                    {
                        "with": {"from": "observation", "valueset": "b"},
                        "timing": {"left": "other.end", "rel": "during", "right": "this"},
                        "pick": pick,
                    }
                ],
            }
        },
        {
            "encounter": [row("e1", dt(2025, 3, 1, 8), dt(2025, 3, 3, 8), type=code("1"))],
            "observation": readings,
        },
        expected,
    )
    for pick, title, readings, expected in [
        (
            {"by": "latest", "time": "start", "test": [{"value": {"op": ">=", "value": 140}}]},
            "last is high",
            [_reading("o1", dt(2025, 3, 1, 9), 120), _reading("o2", dt(2025, 3, 2, 9), 150)],
            True,
        ),
        (
            {"by": "latest", "time": "start", "test": [{"value": {"op": ">=", "value": 140}}]},
            "an earlier one is high",
            [_reading("o1", dt(2025, 3, 1, 9), 150), _reading("o2", dt(2025, 3, 2, 9), 120)],
            False,
        ),
        (
            {"by": "earliest", "time": "start", "test": [{"value": {"op": ">=", "value": 140}}]},
            "first is high",
            [_reading("o1", dt(2025, 3, 1, 9), 150), _reading("o2", dt(2025, 3, 2, 9), 120)],
            True,
        ),
        (
            {"by": "latest", "time": "start", "test": [{"value": {"op": ">=", "value": 140}}]},
            "the high one ends after the stay (not related)",
            [_reading("o1", dt(2025, 3, 1, 9), 120), _reading("o2", dt(2025, 3, 4, 9), 150)],
            False,
        ),
        (
            {
                "by": "latest",
                "time": "start",
                "in": {
                    "from": "observation",
                    "valueset": "b",
                    "where": [{"attr": "status", "in": ["final"]}],
                },
            },
            "membership of another set",
            [
                _reading("o1", dt(2025, 3, 1, 9), 120, status="preliminary"),
                _reading("o2", dt(2025, 3, 2, 9), 150),
            ],
            True,
        ),
        (
            {"by": "latest", "time": "latest", "day": True, "test": [{"value": {"op": ">=", "value": 140}}]},
            "any reading on the last day",
            [_reading("o1", dt(2025, 3, 2, 9), 150), _reading("o2", dt(2025, 3, 2, 18), 120)],
            True,
        ),
        (
            {"by": "latest", "time": "latest", "day": True, "test": [{"value": {"op": ">=", "value": 140}}]},
            "only an earlier day has one",
            [_reading("o1", dt(2025, 3, 1, 9), 150), _reading("o2", dt(2025, 3, 2, 18), 120)],
            False,
        ),
    ]
]


def _engine_truth(cond: Any, tables: dict[str, list[dict[str, Any]]]) -> bool:
    measure = Measure.model_validate({
        "id": "T", "version": "1", "title": "t", "implements": {"library": "T", "version": "1"},
        "scoring": "proportion", "period": {"start": "2025-01-01", "end": "2025-12-31"},
        "valuesets": {"a": URL_A, "b": URL_B}, "define": {"c": cond},
        "populations": {"initial_population": "c", "numerator": {"gender": "female"}},
    })  # fmt: skip
    plan = compile_measure(ResolvedMeasure(measure, {}), VALUESETS)
    config = EvaluationConfig(period_start=date(2025, 1, 1), period_end=date(2025, 12, 31))
    subjects = evaluate([plan], FrameSource(frames([PATIENT], tables)), config).subjects
    return bool(subjects["initial_population"][0])


@pytest.mark.parametrize(("title", "cond", "tables", "expected"), CASES, ids=[c[0] for c in CASES])
def test_engine_and_reference_agree(title: str, cond: Any, tables: dict[str, Any], expected: bool) -> None:
    assert truth(cond, tables) is expected, "reference"
    assert _engine_truth(cond, tables) is expected, "engine"


def test_compound_offsets_and_death() -> None:
    """``offset: [12 months, -60 days]`` applies in order; ``death`` is the patient's deceased date-time."""
    within = {
        "exists": {"from": "procedure", "valueset": "a", "where": [{"timing": {
            "left": "this.start", "rel": "during", "precision": "day",
            "right": {"start": {"ref": "period.start", "offset": ["12 months", "-60 days"]},
                      "end": {"ref": "period.start", "offset": ["12 months", "60 days"]}}}}]},
    }  # fmt: skip
    tables = {"procedure": [row("x1", dt(2025, 11, 2), dt(2025, 11, 2), code=code("1"))]}
    assert truth(within, tables) is True and _engine_truth(within, tables) is True
    tables = {"procedure": [row("x1", dt(2025, 11, 1), dt(2025, 11, 1), code=code("1"))]}
    assert truth(within, tables) is False and _engine_truth(within, tables) is False


def test_union_across_tables_counts_distinct_days() -> None:
    """Immunizations *or* procedures on distinct days (CMS117 style): a union over two tables."""
    cond = {
        "count": {
            "union": [{"from": "immunization", "valueset": "a"}, {"from": "procedure", "valueset": "a"}]
        },
        "distinct": "days",
        "compare": {"op": ">=", "value": 3},
    }
    tables = {
        "immunization": [row("i1", dt(2025, 1, 1), dt(2025, 1, 1), vaccine_code=code("1")),
                         row("i2", dt(2025, 2, 1), dt(2025, 2, 1), vaccine_code=code("1"))],
        "procedure": [row("x1", dt(2025, 2, 1), dt(2025, 2, 1), code=code("2")),
                      row("x2", dt(2025, 3, 1), dt(2025, 3, 1), code=code("2"))],
    }  # fmt: skip
    assert truth(cond, tables) is True and _engine_truth(cond, tables) is True
    tables["procedure"] = tables["procedure"][:1]
    assert truth(cond, tables) is False and _engine_truth(cond, tables) is False


def test_covered_days_relative_to_a_chosen_row() -> None:
    """CMS128 style: days covered in the 114 days from the first dispense's supply start, at least 84."""
    dispenses = [
        row("d1", None, None, medication=code("1"), when_handed_over=dt(2025, 3, 1), days_supply=30.0),
        row("d2", None, None, medication=code("1"), when_handed_over=dt(2025, 4, 1), days_supply=30.0),
        row("d3", None, None, medication=code("1"), when_handed_over=dt(2025, 5, 5), days_supply=30.0),
    ]
    first = {
        "from": "medication_dispense",
        "valueset": "a",
        "where": [
            {
                "without": {"from": "medication_dispense", "valueset": "a"},
                "timing": {"left": "other.supply_start", "rel": "before", "right": "this.supply_start"},
            }
        ],
    }
    cond = {"covered_days": {
        "from": {"from": "medication_dispense", "valueset": "a"},
        "relative_to": first,
        "window": {"start": "other.supply_start", "end": {"ref": "other.supply_start", "offset": "114 days"}},
        "compare": {"op": ">=", "value": 84}}}  # fmt: skip
    tables = {"medication_dispense": dispenses}
    assert truth(cond, tables) is True and _engine_truth(cond, tables) is True  # 30 + 30 + 30 = 90 days
    tables = {"medication_dispense": dispenses[:2]}
    assert truth(cond, tables) is False and _engine_truth(cond, tables) is False  # 60 days


def test_eligibility_stage_leaves_performance_unevaluated() -> None:
    """``stage="eligibility"`` answers the eligibility populations only; performance ones are null."""
    from definitions import load_measure
    from engine.library import load_valuesets
    from measures import LIBRARY_DIR

    plan = compile_measure(load_measure(LIBRARY_DIR / "cms125.yaml"), load_valuesets())
    woman = {**PATIENT, "birth_date": date(1965, 1, 1)}
    visit = row("e1", dt(2025, 3, 1), dt(2025, 3, 1), status="finished",
                type=[{"system": "http://www.ama-assn.org/go/cpt", "code": "99213", "display": None}])  # fmt: skip
    source = FrameSource(frames([woman], {"encounter": [visit]}))
    full = evaluate([plan], source, EvaluationConfig()).subjects.row(0, named=True)
    early = evaluate([plan], source, EvaluationConfig(stage="eligibility")).subjects.row(0, named=True)
    assert full["initial_population"] is True and full["numerator"] is False
    assert early["initial_population"] is True and early["denominator"] is True
    assert early["numerator"] is None and early["numerator_exclusion"] is None


def test_start_extended_back_over_observation_and_emergency_visits() -> None:
    """CQMCommon hospitalizationWithObservation: an ED visit ending within an hour of an observation stay,
    which ends within an hour of the admission, moves the stay's start back to the ED visit's start."""
    ed = row("ed", dt(2025, 3, 1, 2), dt(2025, 3, 1, 7, 30), type=code("9-9", LOINC))
    obs = row("obs", dt(2025, 3, 1, 8), dt(2025, 3, 2, 8), type=code("2"))
    stay = row("stay", dt(2025, 3, 2, 8, 30), dt(2025, 3, 5), type=code("1"))
    steps = [{"events": {"from": "encounter", "codes": [{"system": SCT, "code": "2"}]}, "within": "1 hour"},
             {"events": {"from": "encounter", "valueset": "b"}, "within": "1 hour"}]  # fmt: skip
    lab = row("lab", dt(2025, 3, 1, 3), dt(2025, 3, 1, 3), code=code("1"))
    cond = {
        "exists": {
            "from": "encounter",
            "codes": [{"system": SCT, "code": "1"}],
            "extend_start": steps,
            "where": [
                {
                    "with": {"from": "observation", "valueset": "a"},
                    "timing": {"left": "other.start", "rel": "during", "right": "this.extended"},
                }
            ],
        }
    }
    tables = {"encounter": [ed, obs, stay], "observation": [lab]}
    assert truth(cond, tables) is True and _engine_truth(cond, tables) is True
    late_obs = {**obs, "end": dt(2025, 3, 2, 7)}  # ends 1.5 hours before the stay: no extension at all
    tables = {"encounter": [ed, late_obs, stay], "observation": [lab]}
    assert truth(cond, tables) is False and _engine_truth(cond, tables) is False
