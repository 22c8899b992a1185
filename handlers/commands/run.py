"""``measures run --data DIR``: evaluate the measure library over a lake, sharded over a process pool.

Bad rows are quarantined to ``<out>/<run_id>/errors/`` and counted; above ``--max-error-rate`` the run fails
instead of publishing. A failed run keeps every committed shard: running the same command again completes it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from datasets.errors import DatasetError
from engine.errors import EngineError

DEFAULT_MAX_ERROR_RATE = 0.01


def _rate_arg(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in 0..1, got {text}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="evaluate the measures over a lake (batch)", description=__doc__
    )
    parser.add_argument("--data", required=True, help="lake folder or s3://bucket/prefix")
    parser.add_argument("--out", default=None, help="results root (default DATA/_results)")
    parser.add_argument("--measures", default=None, help="comma-separated measure ids (default: all)")
    parser.add_argument("--period", default=None, help="measurement period START:END (ISO dates)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)"
    )
    parser.add_argument("--shards", type=int, default=None, help="number of shards (default: one per worker)")
    parser.add_argument("--valuesets", default=None, help="official ValueSet expansions (file/folder)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    parser.add_argument(
        "--max-error-rate",
        type=_rate_arg,
        default=DEFAULT_MAX_ERROR_RATE,
        help="fail instead of publishing when more than this fraction of rows is quarantined"
        f" (default {DEFAULT_MAX_ERROR_RATE})",
    )
    parser.add_argument(
        "--as-of", default=None, help="ISO date: quarantine births and events after it as 'in the future'"
    )
    parser.set_defaults(func=run)


def _print_table(document: dict[str, Any], elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    from engine.library import score_text

    table = Table(title=f"{document['patients']:,} patients, {elapsed:.1f} s")
    for name in ("measure", "group", "IP", "denominator", "exclusions", "numerator", "rate"):
        table.add_column(name, justify="left" if name in ("measure", "group") else "right")
    for measure_id, measure in sorted(document["measures"].items()):
        for group_id, group in sorted(measure["groups"].items()):
            strata = [(f"{group_id} / {s}", v) for s, v in sorted(group["strata"].items())]
            rows = [(group_id, group), *strata]
            for label, entry in rows:
                pops = entry["populations"]
                exclusions = sum(pops.get(k, 0) for k in ("denominator-exclusion", "denominator-exception"))
                table.add_row(
                    measure_id,
                    label,
                    f"{pops.get('initial-population', 0):,}",
                    f"{pops.get('denominator', 0):,}",
                    f"{exclusions:,}",
                    f"{pops.get('numerator', 0):,}",
                    score_text(entry["score"], measure.get("scoring")),
                )
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from handlers import batch
    from handlers.batch_local import run_local

    console = Console(stderr=True)
    measures = None if args.measures is None else [m for m in args.measures.split(",") if m.strip()]
    began = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("planning", total=None, rate="")
            state = {"patients": 0}

            def on_plan(plan: batch.RunPlan) -> None:
                progress.update(task, description=f"run {plan.run_id}", total=len(plan.shards))

            def on_shard(result: batch.ShardResult) -> None:
                state["patients"] += result.patients
                speed = state["patients"] / max(time.perf_counter() - began, 1e-9)
                progress.update(task, advance=1, rate=f"{speed:,.0f} patients/s")

            done = run_local(
                args.data,
                args.out,
                measures=measures,
                period=args.period,
                valuesets=args.valuesets,
                n_shards=args.shards,
                workers=args.workers,
                on_plan=on_plan,
                on_shard=on_shard,
                max_error_rate=args.max_error_rate,
                as_of=args.as_of,
            )
    except (
        DatasetError,
        EngineError,
        batch.RunIncompleteError,
        batch.ShardError,
        ValueError,
        FileNotFoundError,
    ) as exc:
        from rich.text import Text

        console.print(Text("measures run failed: ", style="red") + Text(str(exc)))  # no markup from data
        return 1
    elapsed = time.perf_counter() - began
    if args.format == "json":
        sys.stdout.write(batch.dumps(done.summary.document).decode())
    else:
        _print_table(done.summary.document, elapsed)
        quarantine = done.summary.document.get("quarantine") or {}
        if quarantine.get("quarantined"):
            reasons = ", ".join(f"{r}: {n}" for r, n in quarantine["reasons"].items())
            console.print(
                f"quarantined {quarantine['quarantined']:,} of {quarantine['rows']:,} rows"
                f" ({100 * quarantine['rate']:.2f} %; {reasons}); see {done.run.root}/errors/",
                markup=False,
                highlight=False,
            )
        console.print(f"summary: {done.summary.path}")
    return 0
