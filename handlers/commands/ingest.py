"""``measures ingest SRC --out DIR``: FHIR Bundles, Bulk ndjson or Synthea CSV -> a bucketed lake."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from datasets.fhir.detect import InputKind, detect
from datasets.fhir.flatten import FlattenResult
from datasets.fhir.quarantine import summary, write_rejected, write_unknown_systems
from datasets.schema import TABLES

BUNDLE_CHUNK = 500  # Bundles flattened per vectorized pass


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ingest", help="ingest FHIR Bundles, Bulk ndjson or Synthea CSV into a lake"
    )
    parser.add_argument(
        "src", type=Path, help="a Bundle .json, a folder of Bundles, a Bulk export, a Synthea CSV folder"
    )
    parser.add_argument("--out", type=Path, required=True, help="the lake folder to write")
    parser.add_argument("--buckets", type=int, default=16, help="number of patient buckets (default 16)")
    parser.set_defaults(func=run)


def _bundles(src: Path, n_buckets: int, progress: Progress) -> FlattenResult:
    from datasets.fhir.bundle import flatten_bundles
    from datasets.fhir.flatten import merge_results

    files = [src] if src.is_file() else sorted(src.rglob("*.json"))
    task = progress.add_task("bundles", total=len(files))
    results = []
    for start in range(0, len(files), BUNDLE_CHUNK):
        chunk = files[start : start + BUNDLE_CHUNK]
        pairs = []
        for path in chunk:
            doc = json.loads(path.read_bytes())
            if isinstance(doc, dict) and doc.get("resourceType") == "Bundle":
                pairs.append((doc, str(path.relative_to(src.parent if src.is_file() else src))))
        results.append(flatten_bundles(pairs, n_buckets=n_buckets))
        progress.advance(task, len(chunk))
    return merge_results(results)


def ingest(src: Path, out: Path, n_buckets: int, console: Console | None = None) -> FlattenResult:
    """Flatten ``src``, write the lake and its quarantine; returns what was written."""
    from datasets.lake import LakeWriter

    console = console or Console(stderr=True)
    kind = detect(src)
    with Progress(console=console, transient=True) as progress:
        if kind is InputKind.BUNDLE:
            result = _bundles(src, n_buckets, progress)
        else:
            task = progress.add_task(f"{kind.value} {src.name}", total=None)
            if kind is InputKind.BULK:
                from datasets.fhir.bulk import flatten_export

                result = flatten_export(src, n_buckets=n_buckets)
            else:
                from datasets.fhir.synthea import flatten_synthea

                result = flatten_synthea(src, n_buckets=n_buckets)
            progress.update(task, total=1, completed=1)
        writer = LakeWriter(
            str(out),
            n_buckets,
            created_by="measures ingest",
            sources=[{"kind": kind.value, "name": src.name}],
        )
        task = progress.add_task("writing", total=len(TABLES))
        for table, frame in result.tables.items():
            for (bucket,), part in frame.partition_by("bucket", as_dict=True).items():
                writer.write(table, int(bucket), part)
            progress.advance(task)
        writer.finish()
    write_rejected(out, result.rejected)
    write_unknown_systems(out, result.unknown_systems)
    return result


def run(args: argparse.Namespace) -> int:
    console = Console()
    started = time.perf_counter()
    result = ingest(args.src, args.out, args.buckets, console)
    table = Table("table", "rows", title=f"ingested {args.src} -> {args.out}")
    for name, frame in result.tables.items():
        table.add_row(name, f"{frame.height:,}")
    console.print(table)
    for what, n in sorted(result.dropped_counts.items()):
        console.print(f"dropped on purpose: {what}: {n:,} (entered-in-error / deleted)")
    console.print(f"rejected: {result.rejected.height:,} -> {args.out / '_quarantine' / 'rejected.parquet'}")
    if result.rejected.height:
        with pl.Config(tbl_rows=20, fmt_str_lengths=80):
            console.print(str(summary(result.rejected)))
    unknown = result.unknown_systems
    if unknown.height:
        console.print(
            f"kept, but no code system (missing or not an absolute URI: cannot match any value set): "
            f"{int(unknown['codings'].sum()):,} codings -> {args.out / '_quarantine' / 'unknown_systems.parquet'}"
        )
        with pl.Config(tbl_rows=20, fmt_str_lengths=80):
            console.print(str(unknown))
    console.print(f"{time.perf_counter() - started:.1f} s")
    return 0
