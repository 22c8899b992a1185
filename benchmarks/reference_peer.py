"""Our per-patient Python reference interpreter (engine.reference.evaluate_patient) on a patient sample, against the
compiled engine over the same patients: per-patient populations must match; throughput ratio.

The sample is the first ``--sample`` patients (by id) of the ``--patients`` lake. The reference is timed on the
evaluate_patient calls only (rows are grouped per patient beforehand); the engine on ``evaluate`` over the whole
lake (its batch throughput) and over the sample alone (fixed costs dominate there).

    python -m benchmarks.reference_peer --patients 100000 --sample 2000 --measures CMS125
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

import polars as pl

from benchmarks import lake, machine, median, write_json

POPS = ("initial_population", "denominator", "denominator_exclusion", "numerator")


def sample_tables(root: str, n: int) -> dict[str, pl.DataFrame]:
    """Every table of the lake restricted to the first ``n`` patient ids."""
    from datasets.source import ParquetSource

    source = ParquetSource(root)
    ids = source.scan("patient", ["patient_id"]).collect().get_column("patient_id").sort().head(n)
    out = {}
    for table in source.manifest.tables:  # type: ignore[union-attr]
        if source.has_table(table):
            out[table] = source.scan(table).filter(pl.col("patient_id").is_in(ids.implode())).collect()
    return out


def engine_results(
    root: str, measure_ids: list[str], ids: set[str] | None = None
) -> tuple[dict[str, Any], float]:
    """{measure: {patient: {pop: bool}}} from the compiled engine over the lake at ``root``; evaluate seconds."""
    from datasets.source import ParquetSource
    from engine import EvaluationConfig, evaluate
    from engine.library import load_library

    plans = load_library(measure_ids)
    t = time.perf_counter()
    subjects = evaluate(plans, ParquetSource(root), EvaluationConfig()).subjects
    dt = time.perf_counter() - t
    if ids is not None:
        subjects = subjects.filter(pl.col("patient_id").is_in(list(ids)))
    out: dict[str, Any] = {}
    for row in subjects.iter_rows(named=True):
        out.setdefault(row["measure_id"], {})[row["patient_id"]] = {p: bool(row[p]) for p in POPS if p in row}
    return out, dt


def frame_source_results(
    tables: dict[str, pl.DataFrame], measure_ids: list[str]
) -> tuple[dict[str, Any], float]:
    from datasets.source import FrameSource
    from engine import EvaluationConfig, evaluate
    from engine.library import load_library

    plans = load_library(measure_ids)
    t = time.perf_counter()
    evaluate(plans, FrameSource(tables), EvaluationConfig())
    return {}, time.perf_counter() - t


def reference_results(
    tables: dict[str, pl.DataFrame], measure_ids: list[str]
) -> tuple[dict[str, Any], float]:
    import measures as measures_pkg
    from definitions import load_measure
    from engine.library import load_valuesets
    from engine.reference import ReferenceConfig, evaluate_patient

    valuesets = load_valuesets()
    by_stem = {f.stem.lower(): f for f in measures_pkg.measure_files()}
    resolved = [load_measure(by_stem[m.lower()]) for m in measure_ids]
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for table, df in tables.items():
        if table == "patient":
            continue
        for row in df.iter_rows(named=True):
            grouped.setdefault(row["patient_id"], {}).setdefault(table, []).append(row)
    patients = tables["patient"].sort("patient_id").to_dicts()
    out: dict[str, Any] = {}
    t = time.perf_counter()
    for r in resolved:
        m = r.measure
        config = (
            ReferenceConfig(m.period.start, m.period.end)
            if getattr(m, "period", None)
            else ReferenceConfig(date(2025, 1, 1), date(2025, 12, 31))
        )
        res = out.setdefault(m.id, {})
        for patient in patients:
            pid = patient["patient_id"]
            result = evaluate_patient(r, valuesets, patient, grouped.get(pid, {}), config)
            res[pid] = {p: bool(v) for p, v in next(iter(result.groups.values())).items() if p in POPS}
    return out, time.perf_counter() - t


def compare(ours: dict[str, Any], theirs: dict[str, Any], pops: Sequence[str] = POPS) -> dict[str, Any]:
    mismatches = []
    n = 0
    for pid, t in sorted(theirs.items()):
        o = ours.get(pid)
        n += 1
        diff = {p: (o.get(p) if o else None, t.get(p)) for p in pops if (o.get(p) if o else None) != t.get(p)}
        if diff:
            mismatches.append({"patient_id": pid, "ours_vs_theirs": diff})
    return {"compared": n, "mismatches": len(mismatches), "examples": mismatches[:20]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patients", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=2000)
    p.add_argument("--measures", nargs="+", default=["CMS125"])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    root = str(lake(args.patients))
    tables = sample_tables(root, args.sample)
    ids = set(tables["patient"]["patient_id"])
    ref_s, eng_s, small_s = [], [], []
    for _ in range(args.repeat):
        ref, t_ref = reference_results(tables, args.measures)
        ours, t_eng = engine_results(root, args.measures, ids)
        _, t_small = frame_source_results(tables, args.measures)
        ref_s.append(t_ref)
        eng_s.append(t_eng)
        small_s.append(t_small)
    checks = {m: compare(ours.get(m, {}), ref.get(m, {})) for m in args.measures}
    ref_pps = args.sample * len(args.measures) / median(ref_s)
    eng_pps = args.patients * len(args.measures) / median(eng_s)
    small_pps = args.sample * len(args.measures) / median(small_s)
    out = {
        "command": f"python -m benchmarks.reference_peer --patients {args.patients} --sample {args.sample} "
        f"--measures {' '.join(args.measures)} --repeat {args.repeat}",
        "machine": machine(),
        "measures": args.measures,
        "sample": args.sample,
        "reference_s": median(ref_s),
        "reference_runs_s": [round(x, 3) for x in ref_s],
        "reference_patient_measures_per_s": round(ref_pps, 1),
        "engine_lake_patients": args.patients,
        "engine_lake_s": median(eng_s),
        "engine_lake_patient_measures_per_s": round(eng_pps),
        "engine_sample_s": median(small_s),
        "engine_sample_patient_measures_per_s": round(small_pps),
        "ratio_engine_over_reference_throughput": round(eng_pps / ref_pps, 1),
        "ratio_engine_sample_over_reference_throughput": round(small_pps / ref_pps, 1),
        "agreement": checks,
    }
    write_json("reference_peer.json", out)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in main().items() if k != "machine"}, indent=1))
