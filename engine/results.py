"""The notebook object: an evaluation's results as polars DataFrames and FHIR MeasureReports.

>>> from engine.library import load_library                                    # doctest: +SKIP
>>> from engine.results import Results                                         # doctest: +SKIP
>>> res = Results.run(load_library(), ParquetSource("lake"))                   # doctest: +SKIP
>>> res.summary(); res.gaps(); res.attrition("CMS125"); res.explain("p1", "CMS125")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from engine import html_report
from engine.evaluate import EvaluationConfig, EvaluationResult, evaluate
from engine.explain import attrition, explain, find_plan
from engine.gaps import care_gaps
from engine.library import library_hash, summarize
from engine.plan import MeasurePlan
from engine.report import individual_report, subject_list_report, summary_report, tally

if TYPE_CHECKING:
    from datasets.source import DataSource

ReportKind = Literal["summary", "individual", "subject-list"]


def engine_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("measures-engine")
    except PackageNotFoundError:
        return "unknown"


def tz_policy(offset_min: int) -> str:
    sign = "+" if offset_min >= 0 else "-"
    hours, minutes = divmod(abs(offset_min), 60)
    return (
        f"period boundaries are local midnights at UTC{sign}{hours:02d}:{minutes:02d}; "
        "day-precision comparisons use each record's own recorded offset (UTC when absent)"
    )


class Results:
    """Wraps an :class:`EvaluationResult` (and, optionally, the source it read, for
    explanations' evidence)."""

    def __init__(self, result: EvaluationResult, source: DataSource | None = None) -> None:
        self.result = result
        self.source = source

    @classmethod
    def run(
        cls, plans: Iterable[MeasurePlan], source: DataSource, config: EvaluationConfig | None = None
    ) -> Results:
        """Evaluate and wrap, remembering the source."""
        return cls(evaluate(plans, source, config), source)

    # ---------------------------------------------------------------------------------------- frames
    @property
    def subjects(self) -> pl.DataFrame:
        return self.result.subjects

    @property
    def plans(self) -> tuple[MeasurePlan, ...]:
        return self.result.plans

    def plan(self, measure: str) -> MeasurePlan:
        return find_plan(self.plans, measure)

    def summary(self) -> pl.DataFrame:
        """Counts and score per measure x group (and stratum; ``stratum`` null = the whole group)."""
        return summarize(self.subjects, self.plans)

    def tally(self) -> pl.DataFrame:
        """Mergeable counts per measure x group x (group | stratum | supplemental-data value)."""
        return tally(self.subjects)

    def explain(self, patient_id: str, measure: str) -> pl.DataFrame:
        return explain(self.result, patient_id, measure, self.source)

    def gaps(self) -> pl.DataFrame:
        return care_gaps(self.result)

    def attrition(self, measure: str, *, supplemental: bool = False) -> pl.DataFrame:
        return attrition(self.result, measure, supplemental=supplemental)

    # ------------------------------------------------------------------------------------------ FHIR
    def measure_reports(
        self, kind: ReportKind = "summary", *, measure: str | None = None, patient_id: str | None = None
    ) -> list[dict[str, Any]]:
        """MeasureReport dicts: one per measure (summary, subject-list), or per measure for one patient
        (individual: ``patient_id`` required; measures where the patient has no row are skipped)."""
        plans = [self.plan(measure)] if measure else list(self.plans)
        config = self.result.config
        when = config.evaluated_at
        if kind == "summary":
            return [summary_report(self.subjects, p, config.period_for(p), when=when) for p in plans]
        if kind == "subject-list":
            return [subject_list_report(self.subjects, p, config.period_for(p), when=when) for p in plans]
        if kind != "individual":
            raise ValueError(f"kind must be summary, individual or subject-list, not {kind!r}")
        if patient_id is None:
            raise ValueError("an individual MeasureReport needs patient_id")
        rows = self.subjects.filter(pl.col("patient_id") == patient_id)
        gaps = self.gaps()
        out = []
        for p in plans:
            mine = rows.filter(pl.col("measure_id") == p.measure_id)
            if mine.height:
                out.append(individual_report(mine, p, config.period_for(p), patient_id, when=when, gaps=gaps))
        return out

    # ------------------------------------------------------------------------------------------ HTML
    def provenance(self) -> dict[str, Any]:
        manifest = getattr(self.source, "manifest", None)
        config = self.result.config
        return {
            "dataset manifest hash": getattr(manifest, "content_hash", None),
            "dataset": getattr(self.source, "root", None),
            "library hash": library_hash(self.plans),
            "time-zone policy": tz_policy(config.tz_offset_min),
            "evaluated at": None if config.evaluated_at is None else config.evaluated_at.isoformat(),
            "engine version": engine_version(),
        }

    def html(self, path: str | Path | None = None, *, title: str = "Quality measures report") -> str:
        """The self-contained HTML report; written to ``path`` when given."""
        periods = {
            p.measure_id: (
                str(self.result.config.period_for(p).start),
                str(self.result.config.period_for(p).end),
            )
            for p in self.plans
        }
        page = html_report.render(self.subjects, self.plans, self.provenance(), periods=periods, title=title)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def __repr__(self) -> str:
        ids = ", ".join(p.measure_id for p in self.plans)
        return f"Results({self.subjects.height} subject rows; {ids})"


def results(
    plans: Sequence[MeasurePlan], source: DataSource, config: EvaluationConfig | None = None
) -> Results:
    """Shorthand for :meth:`Results.run`."""
    return Results.run(plans, source, config)
