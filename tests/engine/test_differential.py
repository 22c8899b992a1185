"""The compiled engine against the reference interpreter on random populations and random measures.

Any difference is a bug on one side; hypothesis shrinks it to a small measure and a few rows.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.schema import TABLES as SCHEMA
from datasets.source import FrameSource
from definitions.resolved import ResolvedMeasure
from engine import EvaluationConfig, compile_measure, evaluate
from engine.reference import PROPORTION, ReferenceConfig, evaluate_patient
from tests.engine import strategies as S

COLUMNS = list(PROPORTION)


def frames(
    patients: list[dict[str, Any]], tables: dict[str, list[dict[str, Any]]]
) -> dict[str, pl.DataFrame]:
    out = {"patient": pl.DataFrame(patients, schema={k: SCHEMA["patient"][k] for k in patients[0]})}
    for table, rows in tables.items():
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            full = [{k: r.get(k) for k in keys} for r in rows]
            out[table] = pl.DataFrame(full, schema={k: SCHEMA[table][k] for k in keys})
    return out


def engine_results(
    resolved: ResolvedMeasure,
    patients: list[dict[str, Any]],
    tables: dict[str, list[dict[str, Any]]],
    tz: int,
) -> dict[str, dict[str, bool]]:
    plan = compile_measure(resolved, S.VALUESETS)
    config = EvaluationConfig(period_start=S.PERIOD[0], period_end=S.PERIOD[1], tz_offset_min=tz)
    res = evaluate([plan], FrameSource(frames(patients, tables)), config)
    return {r["patient_id"]: {c: bool(r[c]) for c in COLUMNS} for r in res.subjects.iter_rows(named=True)}


def reference_results(
    resolved: ResolvedMeasure,
    patients: list[dict[str, Any]],
    tables: dict[str, list[dict[str, Any]]],
    tz: int,
) -> dict[str, dict[str, bool]]:
    config = ReferenceConfig(S.PERIOD[0], S.PERIOD[1], tz)
    return {
        p["patient_id"]: evaluate_patient(resolved, S.VALUESETS, p, tables, config).groups["group-1"]
        for p in patients
    }


def check_invariants(pops: dict[str, bool]) -> None:
    if pops["denominator"]:
        assert pops["initial_population"]
    if pops["numerator"]:
        assert pops["denominator"] and not pops["denominator_exclusion"]
    if pops["denominator_exclusion"] or pops["denominator_exception"]:
        assert pops["denominator"]
    if pops["denominator_exception"]:
        assert not pops["numerator"] and not pops["denominator_exclusion"]
    if pops["numerator_exclusion"]:
        assert pops["numerator"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(S.measures(), S.populations(), st.sampled_from([0, -300, 120]))
def test_engine_agrees_with_reference(
    resolved: ResolvedMeasure,
    population: tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]],
    tz: int,
) -> None:
    patients, tables = population
    expected = reference_results(resolved, patients, tables, tz)
    for pops in expected.values():
        check_invariants(pops)
    got = engine_results(resolved, patients, tables, tz)
    for pid, pops in expected.items():
        assert pid in got, f"engine has no row for patient {pid}"
        diff = {c: (got[pid][c], pops[c]) for c in COLUMNS if got[pid][c] != pops[c]}
        defines = _defines(resolved, patients, tables, pid, tz)
        assert not diff, f"patient {pid}: (engine, reference) {diff}; reference defines {defines}"
    for pops in got.values():
        check_invariants(pops)


def _defines(
    resolved: ResolvedMeasure,
    patients: list[dict[str, Any]],
    tables: dict[str, list[dict[str, Any]]],
    pid: str,
    tz: int,
) -> dict[str, Any]:
    patient = next(p for p in patients if p["patient_id"] == pid)
    return evaluate_patient(
        resolved, S.VALUESETS, patient, tables, ReferenceConfig(S.PERIOD[0], S.PERIOD[1], tz)
    ).defines


def test_strategies_build_valid_measures() -> None:
    """Generated measures pass the semantic checks (bar unused definitions and impossible windows, which are
    legal to evaluate: they select nothing)."""
    from definitions.check import check_measure

    @settings(max_examples=25, deadline=None)
    @given(S.measures())
    def inner(resolved: ResolvedMeasure) -> None:
        problems = [
            p
            for p in check_measure(resolved)
            if "never used" not in p.message and "impossible" not in p.message
        ]
        assert not problems, problems

    inner()
