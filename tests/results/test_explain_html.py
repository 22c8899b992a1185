"""explain on a hand case; the self-contained HTML report in headless Chromium; `measures report`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import polars as pl
import pytest

from datasets.source import FrameSource
from datasets.synthetic import SynthConfig, generate
from engine.html_report import render, wilson
from engine.library import load_library
from engine.results import Results
from engine.testdeck import load_case
from handlers.batch_local import run_local
from handlers.cli import main

CASES = Path(__file__).parents[1] / "cases"


def _case_source(path: Path) -> tuple[FrameSource, str]:
    case = load_case(path)
    return FrameSource(dict(case.tables)), case.patient_ids[0]


def test_explain_hand_case_shows_the_mammogram() -> None:
    source, patient = _case_source(CASES / "cms125" / "ipp_denom_numer_mammogram_december_31.yaml")
    res = Results.run(load_library(["CMS125"]), source)
    frame = res.explain(patient, "CMS125")
    names = frame["name"].to_list()
    plan = res.plan("CMS125")
    assert names[: len(plan.defines)] == [n for n, _ in plan.defines]  # plan order
    mammogram = frame.filter(pl.col("name") == "mammogram").row(0, named=True)
    assert mammogram["result"] is True and mammogram["used_by"] == ["group-1.numerator"]
    assert [e["id"] for e in mammogram["evidence"]] == [f"{patient}/mammo"]
    assert mammogram["evidence"][0]["start"].isoformat().startswith("2025-12-31T23:00")
    visits = frame.filter(pl.col("name") == "adult_outpatient_encounters.qualifying_encounters").row(
        0, named=True
    )
    assert visits["result"] is True and visits["n_evidence"] == 1
    pops = dict(frame.filter(pl.col("kind") == "population").select("name", "result").iter_rows())
    assert pops == {
        "group-1.initial_population": True,
        "group-1.denominator": True,
        "group-1.denominator_exclusion": False,
        "group-1.numerator": True,
    }
    assert res.gaps().height == 0
    # without a source: truth values, no evidence
    bare = Results(dataclasses.replace(res.result, source=None)).explain(patient, "CMS125")
    assert bare["result"].to_list() == frame["result"].to_list() and bare["n_evidence"].sum() == 0


def test_explain_unknown_patient_or_measure() -> None:
    source, patient = _case_source(CASES / "cms125" / "ipp_denom_numer_mammogram_december_31.yaml")
    res = Results.run(load_library(["CMS125"]), source)
    with pytest.raises(KeyError):
        res.explain("nobody", "CMS125")
    with pytest.raises(KeyError):
        res.explain(patient, "CMS999")


def test_wilson_interval() -> None:
    lo, hi = wilson(50, 100)  # type: ignore[misc]
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(0, 10)  # type: ignore[misc]
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(0, 0) is None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("lake")
    generate(str(lake), SynthConfig(n_patients=500, n_buckets=4, seed=3, processes=1))
    out = tmp_path_factory.mktemp("out")
    done = run_local(str(lake), str(out), measures=["CMS122", "CMS125", "CMS165"], n_shards=2, workers=1)
    return Path(done.summary.path).parent


def test_report_command_rebuilds_the_html(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir.parent)]) == 0  # the results root holding one run
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "2 subjects files" in page and "Wilson 95 % CI" in page
    for needle in (
        "CMS122",
        "CMS125",
        "CMS165",
        "Race",
        "Ethnicity",
        "Payer",
        "Attrition funnel",
        json.loads((run_dir / "run.json").read_text())["manifest_hash"],
    ):
        assert needle in page
    assert "<script" not in page and "http-equiv" not in page
    assert 'src="http' not in page and "url(http" not in page and "@import" not in page
    # same bytes when rebuilt; summary-only still renders the counts
    assert main(["report", str(run_dir), "--out", str(run_dir / "again.html")]) == 0
    assert (run_dir / "again.html").read_text(encoding="utf-8") == page
    assert main(["report", str(run_dir), "--summary-only", "--out", str(run_dir / "counts.html")]) == 0
    assert "no subjects files" in (run_dir / "counts.html").read_text(encoding="utf-8")
    assert main(["report", str(run_dir / "nothing")]) == 1


def test_html_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium) - the render check needs a browser")
    assert main(["report", str(run_dir), "--out", str(tmp_path / "report.html")]) == 0
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp()
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1280,2000",
         (tmp_path / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": profile},
    )  # fmt: skip
    shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 10_000
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
               or "net::ERR" in line]  # fmt: skip
    assert not console, console


def test_render_from_a_summary_document_only() -> None:
    plans = load_library(["CMS125"])
    doc = {
        "measures": {
            "CMS125": {
                "groups": {
                    "group-1": {
                        "populations": {
                            "initial-population": 10,
                            "denominator": 10,
                            "denominator-exclusion": 1,
                            "numerator": 6,
                        },
                        "strata": {},
                    }
                }
            }
        }
    }
    page = render(doc, plans, {"run id": "x"}, total=40)
    assert "66.7 %" in page and "of 40 evaluated subjects" in page
