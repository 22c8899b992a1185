"""Conformance: every official test case of each measure, expected MeasureReport counts vs ours.

The only cases allowed to differ are listed, with their reason, in official_skips.yaml; a listed case that
passes fails the test, so the list cannot go stale.
"""

from __future__ import annotations

from functools import cache

import pytest

from definitions import load_measure
from engine import compile_measure
from engine.testdeck import CaseResult, load_official, official_valuesets, run_deck
from tests.measures.official import ECQM, MEASURES, ROOT, SKIPS, case_ids


@cache
def _results(measure: str) -> tuple[dict[str, CaseResult], tuple[str, ...]]:
    folder = ECQM / measure
    valuesets, problems = official_valuesets(folder)
    plan = compile_measure(load_measure(ROOT / "measures" / f"{MEASURES[measure]}.yaml"), valuesets)
    return {r.case.id: r for r in run_deck(plan, load_official(folder))}, tuple(problems)


pytestmark = pytest.mark.skipif(not ECQM.is_dir(), reason=f"official eCQM content not found at {ECQM}")


@pytest.mark.parametrize(("measure", "case"), case_ids(), ids=lambda v: v)
def test_official_case(measure: str, case: str) -> None:
    result = _results(measure)[0][case]
    assert result.checks, "the expected MeasureReport names no populations"
    reason = SKIPS.get((measure, case))
    if reason is not None:
        assert not result.ok, f"{measure} {case} passes now: remove it from official_skips.yaml"
        pytest.skip(f"{measure} {case}: {reason}")
    assert result.ok, result.describe() + (f" [{result.case.notes}]" if result.case.notes else "")


def test_skips_name_real_cases() -> None:
    known = set(case_ids())
    assert set(SKIPS) <= known, f"official_skips.yaml names unknown cases: {sorted(set(SKIPS) - known)}"


@pytest.mark.parametrize("measure", list(MEASURES))
def test_measure_bundle_valuesets_load(measure: str) -> None:
    _, problems = _results(measure)
    assert not problems, problems
