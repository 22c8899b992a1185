"""The shipped measure library, compiled in one call, and population counts from evaluated subjects.

Notebooks, the CLI and the batch handlers all need "the measures, with the project's value sets, optionally
overlaid by official expansions" and "counts and scores per measure x group x stratum"; this keeps one copy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

import measures
from definitions import ValueSetLibrary, load_fhir_valuesets, load_measure, load_valueset_yaml
from engine.compile import compile_measure
from engine.plan import MeasurePlan
from engine.populations import FHIR_CODES

log = logging.getLogger(__name__)

# Population columns in report order; those a measure's scoring lacks are absent from ``subjects``.
POPULATIONS: tuple[str, ...] = tuple(FHIR_CODES)
SUMMARY_KEYS = ("measure_id", "group_id", "stratum")


def _select_files(ids: Sequence[str] | None) -> list[Path]:
    files = measures.measure_files()
    if ids is None:
        return files
    by_stem = {f.stem.lower(): f for f in files}
    wanted = [i.strip().lower() for i in ids if i.strip()]
    unknown = [i for i in wanted if i not in by_stem]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; the library has {sorted(by_stem)}")
    return [by_stem[i] for i in sorted(set(wanted))]


def load_valuesets(valuesets: str | Path | None = None) -> ValueSetLibrary:
    """The project's synthetic value sets, overlaid by official expansions from ``valuesets`` when given."""
    library = ValueSetLibrary()
    for path in measures.valueset_files():
        library = library.overlay(load_valueset_yaml(path))
    if valuesets is not None:
        official, problems = load_fhir_valuesets(Path(valuesets))
        if not Path(valuesets).exists():
            problems = [f"{valuesets}: no such file or folder", *problems]
        if problems:
            # evaluating with a refused (truncated, unreadable) expansion would publish wrong rates
            raise ValueSetLoadError(problems)
        library = library.overlay(official)
    return library


class ValueSetLoadError(ValueError):
    """Expansions given with --valuesets that cannot be used; each problem names its file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("value sets refused: " + "; ".join(problems))


def load_library(
    measures: Sequence[str] | None = None, valuesets: str | Path | None = None
) -> list[MeasurePlan]:
    """Compile the library's measures (all, or the named ids, case-insensitive), sorted by measure id."""
    library = load_valuesets(valuesets)
    plans = [compile_measure(load_measure(path), library) for path in _select_files(measures)]
    return sorted(plans, key=lambda p: p.measure_id)


def library_hash(plans: Sequence[MeasurePlan]) -> str:
    """Order-independent hash of the compiled plans: a changed definition or value set changes it."""
    import hashlib

    digest = hashlib.sha256()
    for h in sorted(p.content_hash for p in plans):
        digest.update(h.encode())
    return digest.hexdigest()[:16]


def count_frame(subjects: pl.DataFrame) -> pl.DataFrame:
    """Exact population counts per measure x group x stratum (``stratum`` null = the whole group)."""
    pops = [p for p in POPULATIONS if p in subjects.columns]
    aggs = [pl.col(p).fill_null(False).cast(pl.Int64).sum().alias(p) for p in pops]
    whole = (
        subjects.group_by("measure_id", "group_id")
        .agg(aggs)
        .with_columns(pl.lit(None, pl.String).alias("stratum"))
    )
    frames = [whole]
    if "strata" in subjects.columns:
        exploded = subjects.explode("strata").filter(pl.col("strata").is_not_null())
        frames.append(
            exploded.group_by("measure_id", "group_id", pl.col("strata").alias("stratum")).agg(aggs)
        )
    out = pl.concat(frames, how="diagonal_relaxed")
    missing = [pl.lit(0, pl.Int64).alias(p) for p in POPULATIONS if p not in out.columns]
    out = out.with_columns(missing).with_columns(pl.col(p).fill_null(0) for p in POPULATIONS)
    return out.select(*SUMMARY_KEYS, *POPULATIONS).sort(SUMMARY_KEYS, nulls_last=False)


def score(counts: dict[str, int]) -> float | None:
    """Proportion score; None when the denominator after exclusions and exceptions is zero."""
    denominator = (
        counts.get("denominator", 0)
        - counts.get("denominator_exclusion", 0)
        - counts.get("denominator_exception", 0)
    )
    if denominator <= 0:
        return None
    return (counts.get("numerator", 0) - counts.get("numerator_exclusion", 0)) / denominator


def score_text(score: float | None, scoring: str | None) -> str:
    """A score as people read it: a proportion as a percentage, a ratio as a number, a continuous-variable
    group's aggregated observation as the observed value."""
    if score is None:
        return "-"
    if scoring in ("proportion", None):
        return f"{100 * score:.1f} %"
    if scoring == "ratio":
        return f"{score:.4g}"
    return f"{score:g} (observed)"


def with_scores(counts: pl.DataFrame) -> pl.DataFrame:
    """Add ``score`` to a count frame (rows as produced by ``count_frame``)."""
    scores = [score(row) for row in counts.iter_rows(named=True)]
    return counts.with_columns(pl.Series("score", scores, dtype=pl.Float64))


def summarize(subjects: pl.DataFrame, plans: Sequence[MeasurePlan] | None = None) -> pl.DataFrame:
    """Counts and score per measure x group (and stratum), for every group of ``plans`` even if empty."""
    counts = count_frame(subjects)
    if plans:
        groups = pl.DataFrame(
            [(p.measure_id, g.id) for p in plans for g in p.groups],
            schema={"measure_id": pl.String, "group_id": pl.String},
            orient="row",
        ).with_columns(pl.lit(None, pl.String).alias("stratum"))
        absent = groups.join(counts, on=["measure_id", "group_id"], how="anti")
        if absent.height:
            zeros = absent.with_columns(pl.lit(0, pl.Int64).alias(p) for p in POPULATIONS)
            counts = pl.concat([counts, zeros], how="diagonal_relaxed").sort(SUMMARY_KEYS, nulls_last=False)
    scored = with_scores(counts)
    return _observation_scores(scored, subjects, plans) if plans else scored


def _observation_scores(
    summary: pl.DataFrame, subjects: pl.DataFrame, plans: Sequence[MeasurePlan]
) -> pl.DataFrame:
    """Continuous-variable and ratio groups are scored from their measure observations (whole groups)."""
    from engine.observations import group_observations, merge_counts, observation_counts

    merged = merge_counts([observation_counts(subjects)])
    scores = {
        (p.measure_id, gid): entry["score"]
        for p in plans
        if p.scoring in ("continuous_variable", "ratio") and any(g.observations for g in p.groups)
        for gid, entry in group_observations(p, merged).items()
    }
    if not scores:
        return summary
    values = [
        scores.get((m, g), s) if stratum is None and (m, g) in scores else s
        for m, g, stratum, s in summary.select("measure_id", "group_id", "stratum", "score").iter_rows()
    ]
    return summary.with_columns(pl.Series("score", values, dtype=pl.Float64))
