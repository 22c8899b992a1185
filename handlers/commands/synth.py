"""``measures synth``: generate a synthetic patient lake (folder or ``s3://``) for demos and benchmarks."""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from datasets.lake import FileEntry
from datasets.synthetic import SynthConfig, generate


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate synthetic patients into a lake", description=__doc__
    )
    parser.add_argument("--patients", type=int, required=True, help="number of patients")
    parser.add_argument("--out", required=True, help="lake folder or s3://bucket/prefix")
    parser.add_argument("--buckets", type=int, default=64, help="hash buckets (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument(
        "--period-year", type=int, default=2025, help="measurement period year (default 2025)"
    )
    parser.add_argument(
        "--processes", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)"
    )
    parser.add_argument(
        "--format",
        choices=("parquet", "fhir"),
        default="parquet",
        help="parquet: the bucketed lake (default); fhir: one FHIR R4 Bundle JSON per patient (the same patients "
        "as the lake of the same seed, for cross-checks with FHIR-based engines)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console(stderr=True)
    cfg = SynthConfig(
        n_patients=args.patients,
        n_buckets=args.buckets,
        seed=args.seed,
        period_year=args.period_year,
        processes=max(1, args.processes),
    )
    began = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"generating {cfg.n_patients:,} patients", total=cfg.n_buckets)

        def advance(bucket: int, entries: list[FileEntry]) -> None:
            progress.advance(task)

        if args.format == "fhir":
            with tempfile.TemporaryDirectory(prefix="measures-synth-") as lake:
                manifest = generate(lake, cfg, progress=advance)
                written = export_lake_bundles(lake, args.out, manifest.n_buckets)
            console.print(f"{written:,} FHIR Bundles written to {args.out}/")
        else:
            manifest = generate(args.out, cfg, progress=advance)
    elapsed = time.perf_counter() - began
    table = Table(title=f"{args.out} ({cfg.n_buckets} buckets, seed {cfg.seed}, {elapsed:.1f} s)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("files", justify="right")
    for name, info in manifest.tables.items():
        table.add_row(name, f"{info.rows:,}", str(info.files))
    Console().print(table)
    return 0


def export_lake_bundles(lake: str, out: str, n_buckets: int) -> int:
    """Every patient of a lake as a FHIR Bundle file, bucket by bucket (bounded memory)."""
    from datasets.fhir.export import write_bundles
    from datasets.schema import TABLE_NAMES
    from datasets.source import ParquetSource

    written = 0
    for bucket in range(n_buckets):
        source = ParquetSource(lake, buckets=[bucket], validate=False)
        tables = {t: source.scan(t).collect() for t in TABLE_NAMES}
        written += write_bundles(tables, out)
    return written
