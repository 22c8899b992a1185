"""``measures report RUN_DIR``: rebuild the self-contained HTML report of a batch run from its folder.

RUN_DIR is a run folder written by ``measures run`` (``<out>/<run_id>``, holding ``run.json`` and
``summary.json``), or the results root above it when that holds a single reduced run. When the run's
per-subject Parquet files exist (``subjects/shard=*/part-0.parquet``) they are tallied shard by shard and
merged, which adds the supplemental-data breakdowns; otherwise the report is built from
``summary.json`` alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="rebuild the HTML report of a batch run", description=__doc__
    )
    parser.add_argument("run_dir", help="run folder (<out>/<run_id>) or a results root holding one run")
    parser.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/report.html)")
    parser.add_argument("--summary-only", action="store_true", help="ignore the subjects Parquet files")
    parser.set_defaults(func=run)


def find_run(path: Path) -> Path:
    """The run folder: ``path`` itself, or its only reduced sub-folder."""
    if (path / "run.json").is_file():
        return path
    runs = sorted(p.parent for p in path.glob("*/summary.json") if (p.parent / "run.json").is_file())
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise FileNotFoundError(f"{path}: no run.json here and no reduced run (summary.json) below it")
    raise ValueError(f"{path} holds {len(runs)} runs; name one of {[r.name for r in runs]}")


def build(run_dir: Path, *, use_subjects: bool = True) -> tuple[str, dict[str, Any]]:
    """(HTML page, facts about how it was built) for a run folder."""
    from handlers import batch

    root = find_run(run_dir)
    run = batch.load_run(str(root / "run.json"))
    summary_path = root / "summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{root}: no summary.json (the run was not reduced)")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    evaluated = set(summary.get("measures", {}))
    plans = [p for p in batch.compiled(run.measures, run.valuesets) if p.measure_id in evaluated]
    return render_run(root, run, summary, plans, use_subjects=use_subjects)


def render_run(
    root: Path | None, run: Any, summary: dict[str, Any], plans: list[Any], *, use_subjects: bool = True
) -> tuple[str, dict[str, Any]]:
    """The HTML page of a reduced run: counts from the subjects files when the run folder is local (with
    supplemental-data breakdowns), else from the summary."""
    import polars as pl

    from engine import html_report
    from engine.library import library_hash
    from engine.report import SDE_COLUMNS, merge_tallies, tally, tally_from_summary
    from engine.results import engine_version, tz_policy

    warnings: list[str] = []
    if library_hash(plans) != run.library_hash:
        warnings.append(
            f"the definitions or value sets changed since this run (library {library_hash(plans)}, "
            f"run {run.library_hash}): titles and value-set lists are today's"
        )
    files = sorted((root / "subjects").glob("shard=*/*.parquet")) if use_subjects and root else []
    from_counts = tally_from_summary(summary)
    if files:
        parts = []
        for f in files:
            names = pl.read_parquet_schema(f)
            wanted = [
                c
                for c in names
                if c
                in {"measure_id", "group_id", "patient_id", "episode_id", "strata", *SDE_COLUMNS.values()}
                or c in html_report.FHIR_CODES
            ]
            parts.append(tally(pl.read_parquet(f, columns=wanted)))
        data = merge_tallies(parts)
        check = data.filter(pl.col("kind") == "group").drop("subjects", "kind", "key", "value")
        expected = from_counts.filter(pl.col("kind") == "group").drop("subjects", "kind", "key", "value")
        if not check.sort("measure_id", "group_id").equals(expected.sort("measure_id", "group_id")):
            warnings.append(
                "the subjects files do not reconcile with summary.json; showing the subjects' counts"
            )
        source = f"{len(files)} subjects files"
    else:
        data = from_counts
        source = "summary.json (no subjects files)"
    periods = {m: (d["period"]["start"], d["period"]["end"]) for m, d in summary.get("measures", {}).items()}
    provenance = {
        "run id": run.run_id,
        "dataset": run.data,
        "dataset manifest hash": run.manifest_hash,
        "library hash": run.library_hash,
        "patients": f"{run.patients:,}",
        "shards": len(run.shards),
        "period": "measure defaults"
        if run.period is None
        else f"{run.period[0]} – {run.period[1]} (override)",
        "time-zone policy": tz_policy(0),
        "value sets": run.valuesets or "the project's synthetic value sets",
        "counts from": source,
        "engine version": engine_version(),
        "warnings": warnings,
    }
    page = html_report.render(
        data,
        plans,
        provenance,
        periods=periods,
        total=run.patients,
        title=f"Quality measures report · run {run.run_id}",
    )
    return page, {"run": str(root), "source": source, "warnings": warnings}


def run(args: argparse.Namespace) -> int:
    try:
        page, facts = build(Path(args.run_dir), use_subjects=not args.summary_only)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"measures report failed: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(facts["run"]) / "report.html"
    out.write_text(page, encoding="utf-8")
    for warning in facts["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{out} ({out.stat().st_size:,} bytes, counts from {facts['source']})")
    return 0
