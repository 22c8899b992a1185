"""Scaling of the full library: wall time, patients/s and peak RSS per lake size, each run in a fresh child process.

The parent times the whole child (``wall_s``: interpreter start, imports, compiling the library, evaluating,
counting) and reads the child's own peak RSS from ``os.wait4``; the child reports its inner timings
(``evaluate_s``: ``engine.evaluate`` alone). Sizes are run round-robin ``--repeat`` times; medians are reported.

    python -m benchmarks.scaling --sizes 10000 100000 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import PY, lake, machine, median, run_child, write_json


def child(root: str) -> None:
    t0 = time.perf_counter()
    from benchmarks import library_plans, peak_rss_gib
    from datasets.source import ParquetSource
    from engine import EvaluationConfig, evaluate
    from engine.library import summarize

    t1 = time.perf_counter()
    plans, skipped = library_plans()
    t2 = time.perf_counter()
    result = evaluate(plans, ParquetSource(root), EvaluationConfig())
    t3 = time.perf_counter()
    summary = summarize(result.subjects, plans)
    t4 = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": t1 - t0,
                "compile_s": t2 - t1,
                "evaluate_s": t3 - t2,
                "summarize_s": t4 - t3,
                "subjects": result.subjects.height,
                "measures": [p.measure_id for p in plans],
                "skipped": skipped,
                "initial_population": int(summary["initial_population"].sum()),
                "peak_rss_gib": peak_rss_gib(),
            }
        )
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child)
        return {}
    roots = {n: lake(n) for n in args.sizes}
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in args.sizes}
    for i in range(args.repeat):
        for n in args.sizes:
            wall, _, out = run_child([PY, "-m", "benchmarks.scaling", "--child", str(roots[n])])
            inner = json.loads(out.strip().splitlines()[-1])
            rss = inner["peak_rss_gib"]  # the child's own VmHWM
            runs[n].append({"wall_s": wall, **inner})
            print(
                f"rep {i} {n:>9,}: wall {wall:.2f}s evaluate {inner['evaluate_s']:.2f}s rss {rss:.2f} GiB",
                flush=True,
            )
    rows = []
    for n in args.sizes:
        r = runs[n]
        ev = median([x["evaluate_s"] for x in r])
        rows.append(
            {
                "patients": n,
                "lake_bytes": sum(f.stat().st_size for f in roots[n].rglob("*.parquet")),
                "wall_s": median([x["wall_s"] for x in r]),
                "evaluate_s": ev,
                "patients_per_s": round(n / ev),
                "peak_rss_gib": round(max(x["peak_rss_gib"] for x in r), 3),
                "import_s": median([x["import_s"] for x in r]),
                "compile_s": median([x["compile_s"] for x in r]),
                "runs_wall_s": [round(x["wall_s"], 2) for x in r],
                "runs_evaluate_s": [round(x["evaluate_s"], 2) for x in r],
                "subjects": r[0]["subjects"],
                "measures": r[0]["measures"],
                "skipped": r[0]["skipped"],
            }
        )
    out = {
        "command": "python -m benchmarks.scaling --sizes "
        + " ".join(map(str, args.sizes))
        + f" --repeat {args.repeat}",
        "machine": machine(),
        "rows": rows,
    }
    write_json("scaling.json", out)
    return out


if __name__ == "__main__":
    r = main()
    if r:
        json.dump(r["rows"], sys.stdout, indent=1)
