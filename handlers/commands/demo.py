"""``measures demo``: the embedded default end to end: synthesize a lake, evaluate the library, print rates.

Runs on this machine alone (no AWS, no server): the same batch functions a Lambda fan-out uses, on a local
process pool when the batch executor is available, else a direct in-process evaluation.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="synthesize patients, evaluate the library, print the rates")
    parser.add_argument("--patients", type=int, default=10_000, help="synthetic patients (default 10,000)")
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="work folder (default demo-out/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl
    from rich.console import Console
    from rich.table import Table

    from datasets.source import ParquetSource
    from datasets.synthetic import SynthConfig, generate
    from engine import EvaluationConfig, evaluate
    from engine.library import load_library, score_text, summarize

    console = Console()
    lake = args.out / "lake"
    started = time.perf_counter()
    console.print(f"[bold]1/3[/] synthesizing {args.patients:,} patients into {lake}/ ...")
    generate(
        str(lake),
        SynthConfig(n_patients=args.patients, n_buckets=8, seed=args.seed, processes=max(1, args.workers)),
    )
    synth_s = time.perf_counter() - started
    console.print("[bold]2/3[/] compiling the measure library (project synthetic value sets) ...")
    plans = load_library()
    console.print(f"[bold]3/3[/] evaluating {len(plans)} measures ...")
    t0 = time.perf_counter()
    result = evaluate(plans, ParquetSource(str(lake)), EvaluationConfig())
    eval_s = time.perf_counter() - t0
    summary = summarize(result.subjects, plans).filter(pl.col("stratum").is_null())  # whole groups
    table = Table(
        title=f"{args.patients:,} synthetic patients, period {plans[0].period_start}..{plans[0].period_end}"
    )
    for column in ("measure", "group", "IP", "denom", "excl", "excep", "numer", "rate"):
        table.add_column(column, justify="left" if column in ("measure", "group") else "right")
    scoring = {p.measure_id: p.scoring for p in plans}
    for row in summary.iter_rows(named=True):
        rate = score_text(row["score"], scoring.get(row["measure_id"]))
        table.add_row(
            row["measure_id"],
            row["group_id"],
            f"{row['initial_population']:,}",
            f"{row['denominator']:,}",
            f"{row['denominator_exclusion']:,}",
            f"{row['denominator_exception']:,}",
            f"{row['numerator']:,}",
            rate,
        )
    console.print(table)
    console.print(
        f"synthesis {synth_s:.1f} s, evaluation {eval_s:.2f} s "
        f"({args.patients / max(eval_s, 1e-9):,.0f} patients/s)"
    )
    return 0
