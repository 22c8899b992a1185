"""The two latency-bound figures of the targets: one Lambda shard's work, and one patient in process.

* ``shard``: a child process plans a run over the 1M lake with ``--shards`` shards (64 buckets / 22: about
  47,000 patients in the first shard, one Lambda's work) and runs ``handlers.batch.evaluate_shard`` on it as
  the worker Lambda does: import, library compile, footer validation, screening, evaluation, writes. Wall time
  of each part and the child's peak RSS.
* ``single``: plans prebuilt once, then ``evaluate`` over one patient's rows at a time (``FrameSource``, the
  API's in-memory configuration), for one measure (CMS125) and for the whole library; p50/p95/p99 over
  ``--patients`` patients x ``--repeat``. Flattening a FHIR Bundle is not included (the API figure has it).

    .venv/bin/python -m benchmarks.latency [--shards 22] [--patients 40] [--repeat 5]

Writes benchmarks/results/latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

from benchmarks import PY, lake, library_plans, machine, run_child, write_json

SHARD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from handlers import batch
t1 = time.perf_counter()
run = batch.plan(sys.argv[1], sys.argv[2], n_shards=int(sys.argv[3]))
batch._LIBRARIES.clear()  # the planner compiled the library; a cold worker compiles it again, once
t2 = time.perf_counter()
batch._plans_for(run)
t3 = time.perf_counter()
result = batch.evaluate_shard(run, 0)
t4 = time.perf_counter()
start, stop = run.shards[0]
from benchmarks import peak_rss_gib
print(json.dumps({"import_s": t1 - t0, "plan_s": t2 - t1, "compile_s": t3 - t2, "shard_s": t4 - t3,
                  "buckets": stop - start, "patients": result.patients, "peak_rss_gib": peak_rss_gib()}))
"""


def shard_figure(n_shards: int, repeat: int) -> dict[str, Any]:
    root = lake(1_000_000)
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            wall, _, stdout = run_child([PY, "-c", SHARD_SCRIPT, str(root), out, str(n_shards)])
            runs.append({**json.loads(stdout.strip().splitlines()[-1]), "wall_s": wall})  # its own VmHWM
    best = min(runs, key=lambda r: r["shard_s"])
    return {
        "lake_patients": 1_000_000,
        "shards": n_shards,
        "patients": best["patients"],
        "buckets": best["buckets"],
        "shard_s_median": round(statistics.median(r["shard_s"] for r in runs), 3),
        "compile_s_median": round(statistics.median(r["compile_s"] for r in runs), 3),
        "import_s_median": round(statistics.median(r["import_s"] for r in runs), 3),
        "peak_rss_gib_max": round(max(r["peak_rss_gib"] for r in runs), 3),
        "runs": runs,
    }


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "n": len(ordered)}


def single_figure(n_patients: int, repeat: int) -> dict[str, Any]:
    import polars as pl

    from datasets.schema import TABLE_NAMES
    from datasets.source import FrameSource, ParquetSource
    from engine import evaluate
    from handlers.api.service import single_patient_config

    plans, skipped = library_plans()
    one = [p for p in plans if p.measure_id == "CMS125"]
    source = ParquetSource(str(lake(100_000)), [0, 1])
    ids = source.scan("patient", ["patient_id"]).collect()["patient_id"].sort().head(n_patients).to_list()
    tables = {t: source.scan(t).collect() for t in TABLE_NAMES if source.has_table(t)}
    patients = [
        FrameSource({t: f.filter(pl.col("patient_id") == pid) for t, f in tables.items()}) for pid in ids
    ]
    config = single_patient_config(None, None)
    out: dict[str, Any] = {"patients": len(ids), "repeat": repeat, "skipped": skipped}
    for label, chosen in (("one_measure", one), ("library", plans)):
        evaluate(chosen, patients[0], config)  # warm: first-call costs are not per-request costs
        samples = []
        for _ in range(repeat):
            for patient in patients:
                t = time.perf_counter()
                evaluate(chosen, patient, config)
                samples.append((time.perf_counter() - t) * 1000)
        out[label] = {"measures": len(chosen), **_percentiles(samples)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, default=22, help="64 buckets / 22: about 47,000 patients a shard")
    p.add_argument("--shard-repeat", type=int, default=3)
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", nargs="+", choices=("shard", "single"), default=["shard", "single"])
    args = p.parse_args(argv)
    result: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m benchmarks.latency " + " ".join(argv or []),
    }
    if "shard" in args.only:
        result["shard"] = shard_figure(args.shards, args.shard_repeat)
    if "single" in args.only:
        result["single_patient"] = single_figure(args.patients, args.repeat)
    write_json("latency.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str))


if __name__ == "__main__":
    main()
