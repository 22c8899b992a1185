"""Conformance: every official test case of each measure, expected MeasureReport counts vs ours.

The only cases allowed to differ are listed, with their reason, in official_skips.yaml; a listed case that
passes fails the test, so the list cannot go stale.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import yaml

from definitions import load_measure
from engine import compile_measure
from engine.testdeck import CaseResult, load_official, official_valuesets, run_deck

ROOT = Path(__file__).resolve().parents[2]
ECQM = ROOT / ".." / "shared" / "data" / "ecqm"
# every library measure whose official test cases are in ../shared/data/ecqm
MEASURES = {
    path.stem.upper(): path.stem
    for path in sorted((ROOT / "measures").glob("cms*.yaml"))
    if (ECQM / path.stem.upper() / "tests").is_dir()
}
SKIPS = {
    (s["measure"], s["case"]): s["reason"]
    for s in yaml.safe_load((Path(__file__).parent / "official_skips.yaml").read_text()) or []
}


def _case_ids() -> list[tuple[str, str]]:
    return [(m, p.stem) for m in MEASURES for p in sorted((ECQM / m / "tests").glob("*.json"))]


@cache
def _results(measure: str) -> tuple[dict[str, CaseResult], tuple[str, ...]]:
    folder = ECQM / measure
    valuesets, problems = official_valuesets(folder)
    plan = compile_measure(load_measure(ROOT / "measures" / f"{MEASURES[measure]}.yaml"), valuesets)
    return {r.case.id: r for r in run_deck(plan, load_official(folder))}, tuple(problems)


pytestmark = pytest.mark.skipif(not ECQM.is_dir(), reason=f"official eCQM content not found at {ECQM}")


@pytest.mark.parametrize(("measure", "case"), _case_ids(), ids=lambda v: v)
def test_official_case(measure: str, case: str) -> None:
    result = _results(measure)[0][case]
    assert result.checks, "the expected MeasureReport names no populations"
    reason = SKIPS.get((measure, case))
    if reason is not None:
        assert not result.ok, f"{measure} {case} passes now: remove it from official_skips.yaml"
        pytest.skip(f"{measure} {case}: {reason}")
    assert result.ok, result.describe() + (f" [{result.case.notes}]" if result.case.notes else "")


def test_skips_name_real_cases() -> None:
    known = set(_case_ids())
    assert set(SKIPS) <= known, f"official_skips.yaml names unknown cases: {sorted(set(SKIPS) - known)}"


@pytest.mark.parametrize("measure", list(MEASURES))
def test_measure_bundle_valuesets_load(measure: str) -> None:
    _, problems = _results(measure)
    assert not problems, problems
