"""Golden tests of MeasurePlan.pretty(): a change to how a measure compiles shows up as a readable diff.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/engine/test_plan_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from definitions import ValueSetLibrary, load_measure, load_valueset_yaml
from engine import compile_measure
from measures import LIBRARY_DIR, valueset_files

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("measure", ["cms125", "cms122", "cms165"])
def test_plan_pretty_is_stable(measure: str) -> None:
    valuesets = ValueSetLibrary().overlay(v for f in valueset_files() for v in load_valueset_yaml(f))
    plan = compile_measure(load_measure(LIBRARY_DIR / f"{measure}.yaml"), valuesets)
    text = plan.pretty()
    golden = GOLDEN / f"{measure}.plan.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert plan.pretty() == text  # stable within a process too
