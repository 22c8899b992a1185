"""``measures test`` and ``measures evaluate`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.cli import main

ECQM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ecqm"
pytestmark = pytest.mark.skipif(not ECQM.is_dir(), reason="official eCQM content not beside the repository")


def test_measures_test_passes_a_conformant_deck_and_fails_a_mismatch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["test", "CMS125", "--cases", str(ECQM)]) == 0
    assert " passed, 0 failed" in capsys.readouterr().out
    # the official CMS122 deck holds one case that contradicts its own CQL (see official_skips.yaml)
    assert main(["test", "CMS122", "--cases", str(ECQM)]) == 1
    out = capsys.readouterr().out
    assert "8956ebb5" in out and "1 failed" in out


def test_measures_evaluate_prints_the_individual_report(capsys: pytest.CaptureFixture[str]) -> None:
    case = sorted((ECQM / "CMS125" / "tests").glob("*.json"))[0]
    bundle = json.loads(case.read_text())
    expected = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MeasureReport"
    )
    period = f"{expected['period']['start'][:10]}:{expected['period']['end'][:10]}"
    args = ["evaluate", str(case), "--measure", "CMS125", "--period", period,
            "--valuesets", str(ECQM / "CMS125" / "measure-bundle.json")]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resourceType"] == "MeasureReport" and report["type"] == "individual"
    got = {p["code"]["coding"][0]["code"]: p["count"] for p in report["group"][0]["population"]}
    want = {p["code"]["coding"][0]["code"]: p["count"] for p in expected["group"][0]["population"]}
    assert {k: got.get(k, 0) for k in want} == want


def test_scores_read_by_scoring_type() -> None:
    """A proportion is a percentage; a ratio and a continuous-variable observation are numbers (a CV group's
    summed observation is not a rate)."""
    from engine.library import score_text

    assert score_text(0.807, "proportion") == "80.7 %"
    assert score_text(0.0362694, "ratio") == "0.03627"
    assert score_text(33517.0, "continuous_variable") == "33517 (observed)"
    assert score_text(None, "proportion") == "-"
