"""MeasureReports, tallies, attrition and care gaps: FHIR R4 structure, and shard merges equal the whole."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.source import ParquetSource
from datasets.synthetic import SynthConfig, generate
from engine import evaluate
from engine.explain import attrition, attrition_frame
from engine.gaps import care_gaps
from engine.library import load_library, summarize
from engine.populations import FHIR_CODES
from engine.report import (
    individual_report,
    merge_tallies,
    subject_list_report,
    summary_report,
    tally,
    tally_from_counts,
)
from engine.results import Results

N_BUCKETS = 8


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("lake")
    generate(str(root), SynthConfig(n_patients=600, n_buckets=N_BUCKETS, seed=11, processes=1))
    return str(root)


@pytest.fixture(scope="module")
def plans() -> list:
    return [p for p in load_library() if p.measure_id in ("CMS122", "CMS125", "CMS165")]


@pytest.fixture(scope="module")
def whole(lake: str, plans: list) -> Results:
    return Results.run(plans, ParquetSource(lake))


def _validate(doc: dict) -> None:
    models = pytest.importorskip("fhir.resources.R4B.measurereport", reason="fhir.resources is not installed")
    models.MeasureReport.model_validate(doc)


def test_summary_reports_validate_and_match_the_counts(whole: Results) -> None:
    summary = whole.summary()
    for doc, plan in zip(whole.measure_reports("summary"), whole.plans, strict=True):
        _validate(doc)
        assert doc["type"] == "summary" and doc["measure"].endswith(
            f"/Measure/{plan.measure_id}|{plan.version}"
        )
        assert doc["improvementNotation"]["coding"][0]["code"] == plan.improvement
        group = doc["group"][0]
        row = summary.filter((pl.col("measure_id") == plan.measure_id) & pl.col("stratum").is_null()).row(
            0, named=True
        )
        for population in group["population"]:
            name = {v: k for k, v in FHIR_CODES.items()}[population["code"]["coding"][0]["code"]]
            assert population["count"] == row[name]
        assert group["measureScore"]["value"] == pytest.approx(row["score"])
        sdes = {s["code"][0]["text"]: s for s in group["stratifier"]}
        assert set(sdes) == {f"sde-{n}" for n in plan.supplemental}
        # every subject has exactly one sex: the strata add up to the group
        ip = sum(st["population"][0]["count"] for st in sdes["sde-sex"]["stratum"])
        assert ip == row["initial_population"]


def test_subject_list_and_individual_reports_validate(whole: Results) -> None:
    for doc in whole.measure_reports("subject-list"):
        _validate(doc)
        lists = {c["id"]: c for c in doc["contained"]}
        for population in doc["group"][0]["population"]:
            ref = population["subjectResults"]["reference"].removeprefix("#")
            assert len(lists[ref].get("entry", [])) == population["count"]
    gaps = whole.gaps()
    patient = gaps.filter(pl.col("measure_id") == "CMS125")["patient_id"][0]
    reports = whole.measure_reports("individual", patient_id=patient)
    assert reports
    for doc in reports:
        _validate(doc)
        assert doc["subject"] == {"reference": f"Patient/{patient}"}
    cms125 = next(d for d in reports if "/CMS125|" in d["measure"])
    issues = [c for c in cms125.get("contained", []) if c["resourceType"] == "DetectedIssue"]
    assert len(issues) == 1 and "mammogram" in issues[0]["detail"]
    results = {
        e["extension"][0]["valueString"]: e["extension"][2]["valueBoolean"]
        for e in cms125["extension"]
        if e["url"].endswith("/criterion-result")
    }
    assert results["mammogram"] is False and results["initial_population"] is True


def test_gaps_follow_the_improvement_notation(whole: Results) -> None:
    gaps = whole.gaps()
    subjects = whole.subjects
    for plan in whole.plans:
        rows = subjects.filter(pl.col("measure_id") == plan.measure_id)
        eligible = rows.filter(
            pl.col("denominator") & ~pl.col("denominator_exclusion") & ~pl.col("denominator_exception")
        )
        expected = eligible.filter(
            pl.col("numerator") if plan.improvement == "decrease" else ~pl.col("numerator")
        )
        mine = gaps.filter(pl.col("measure_id") == plan.measure_id)
        assert sorted(mine["patient_id"]) == sorted(expected["patient_id"])
        assert (mine["due_date"] == plan.period_end).all()
        assert mine["criteria"].list.len().min() >= 1


def test_attrition_is_a_cascade(whole: Results) -> None:
    for plan in whole.plans:
        frame = whole.attrition(plan.measure_id).filter(pl.col("stratum").is_null())
        assert frame["step"].to_list() == list(range(1, frame.height + 1))
        first = frame.row(0, named=True)
        assert first["population"] == "initial_population"
        assert (
            first["kept"] + first["dropped"]
            == whole.subjects.filter(pl.col("measure_id") == plan.measure_id).height
        )
        kept = frame["kept"].to_list()
        assert kept == sorted(kept, reverse=True)
        assert (frame["dropped"] >= 0).all()


def test_counts_frames_give_the_same_summary_report(whole: Results) -> None:
    for plan in whole.plans:
        from_subjects = summary_report(whole.subjects, plan, supplemental=False)
        from_counts = summary_report(summarize(whole.subjects, whole.plans), plan)
        assert from_subjects == from_counts
    assert tally_from_counts(summarize(whole.subjects)).filter(pl.col("kind") == "group").height == 3


# ------------------------------------------------------------------------------------ shard merging


@cache
def _shard(lake: str, buckets: tuple[int, ...], ids: tuple[str, ...]) -> pl.DataFrame:
    plans = [p for p in load_library() if p.measure_id in ids]
    return evaluate(plans, ParquetSource(lake, list(buckets), validate=False)).subjects


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(st.integers(min_value=0, max_value=3), min_size=N_BUCKETS, max_size=N_BUCKETS))
def test_merged_shards_equal_the_whole(lake: str, plans: list, whole: Results, labels: list[int]) -> None:
    ids = tuple(p.measure_id for p in plans)
    shards = [tuple(b for b, label in enumerate(labels) if label == k) for k in sorted(set(labels))]
    parts = [_shard(lake, s, ids) for s in shards]
    merged = merge_tallies(tally(p) for p in parts)
    assert merged.equals(tally(whole.subjects))
    for plan in plans:
        assert attrition_frame(merged, plan).equals(attrition(whole.result, plan.measure_id))
        assert summary_report(merged, plan) == summary_report(whole.subjects, plan)
    gaps = pl.concat([care_gaps(_result(p, plans)) for p in parts]).sort(
        "measure_id", "group_id", "patient_id"
    )
    assert gaps.equals(whole.gaps())


def _result(subjects: pl.DataFrame, plans: list):  # type: ignore[no-untyped-def]
    from engine.evaluate import EvaluationConfig, EvaluationResult

    return EvaluationResult(subjects, tuple(plans), EvaluationConfig())


def test_individual_report_from_dict_rows(whole: Results) -> None:
    plan = whole.plan("CMS165")
    rows = whole.subjects.filter(pl.col("measure_id") == "CMS165").head(1).to_dicts()
    doc = individual_report(rows, plan)
    _validate(doc)
    assert doc["subject"]["reference"] == f"Patient/{rows[0]['patient_id']}"
    assert subject_list_report(whole.subjects.head(0), plan)["type"] == "subject-list"


def test_results_repr_and_paths(whole: Results, tmp_path: Path) -> None:
    assert "CMS125" in repr(whole)
    page = whole.html(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == page
