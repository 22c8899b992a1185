"""The hand-written test patients (tests/cases/<measure>/*.yaml), one test per case file.

Value sets are the official expansions of the measure bundle (read in place from ../shared/data/ecqm).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from definitions import load_measure
from engine import compile_measure
from engine.testdeck import CaseResult, load_case, official_valuesets, run_deck

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "cases"
ECQM = ROOT / ".." / "shared" / "data" / "ecqm"

CASE_FILES = sorted(CASES.glob("*/*.yaml"))


@cache
def _results(measure: str) -> dict[str, CaseResult]:
    folder = ECQM / measure.upper()
    if not (folder / "measure-bundle.json").is_file():
        pytest.skip(f"official value sets not found at {folder}")
    valuesets, _ = official_valuesets(folder)
    plan = compile_measure(load_measure(ROOT / "measures" / f"{measure}.yaml"), valuesets)
    cases = [load_case(p) for p in sorted((CASES / measure).glob("*.yaml"))]
    return {r.case.id: r for r in run_deck(plan, cases)}


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_case(path: Path) -> None:
    result = _results(path.parent.name)[path.stem]
    assert result.case.expect and all(result.case.expect.values()), "a case must say what it expects"
    assert result.ok, result.describe()


@pytest.mark.parametrize("measure", ["cms125", "cms122", "cms165"])
def test_every_population_is_exercised(measure: str) -> None:
    """Each population is expected true by some case and false by another (every branch is reached)."""
    seen: dict[str, set[int]] = {}
    for result in _results(measure).values():
        for check in result.checks:
            seen.setdefault(check.population, set()).add(check.expected)
    for population in ("initial_population", "denominator", "denominator_exclusion", "numerator"):
        values = seen.get(population)
        assert values == {0, 1}, f"{measure} {population}: expected values seen {values}"
