"""FHIR Bulk Data export folders (ndjson, one or more files per resource type) -> the shared flattener.

Each file is read with its type's pinned schema in one ``read_ndjson`` call (vectorized; a file whose
lines do not fit is re-read line by line and only the bad lines are refused). Several exports under one
folder are merged: per (type, id) the version with the newest ``meta.lastUpdated`` wins (P7), and the
``deleted`` output (transaction Bundles of DELETE requests, in a ``deleted/`` folder or a file named so)
removes the ids it names unless a newer version exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from datasets.fhir.bundle import read_lines, with_source
from datasets.fhir.flatten import FlattenResult, flatten
from datasets.fhir.raw import RAW, read_ndjson
from datasets.fhir.timing import parse_time


def ndjson_files(root: Path) -> Iterator[Path]:
    yield from sorted(p for p in root.rglob("*.ndjson") if p.is_file())


def _is_deleted(path: Path, root: Path) -> bool:
    return any("deleted" in part.lower() for part in path.relative_to(root).parts)


def _first_type(path: Path) -> str | None:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    value = json.loads(line).get("resourceType")
                except (ValueError, AttributeError):
                    return None
                return value if isinstance(value, str) else None
    return None


def _deletes(files: list[Path]) -> pl.DataFrame:
    """(resource_type, id, deleted_at) from the deleted Bundles; no timestamp means "deleted last"."""
    rows: list[dict[str, str | None]] = []
    for path in files:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            bundle = json.loads(line)
            stamp = (bundle.get("meta") or {}).get("lastUpdated")
            for entry in bundle.get("entry") or ():
                request = entry.get("request") or {}
                url = str(request.get("url", "")).split("/_history/")[0].strip("/")
                if request.get("method", "").upper() == "DELETE" and "/" in url:
                    rtype, rid = url.split("/")[-2:]
                    rows.append({"resource_type": rtype, "id": rid, "deleted_at": stamp})
    frame = pl.DataFrame(rows, schema={"resource_type": pl.String, "id": pl.String, "deleted_at": pl.String})
    return frame.with_columns(deleted_at=parse_time(pl.col("deleted_at")).struct.field("high"))


def read_export(root: Path, source: str | None = None) -> tuple[dict[str, pl.DataFrame], pl.DataFrame, int]:
    """Raw frames per type (merged, newest version per id, deletes applied), reader rejects, ids deleted."""
    source = source or root.name
    files = list(ndjson_files(root))
    deleted_files = [p for p in files if _is_deleted(p, root)]
    by_type: dict[str, list[pl.DataFrame]] = {}
    rejected: list[pl.DataFrame] = []
    for path in files:
        if path in deleted_files:
            continue
        rtype = _first_type(path)
        if rtype not in RAW:
            continue
        try:
            frame = read_ndjson(path, rtype)
        except (pl.exceptions.PolarsError, ValueError):
            frame, bad = read_lines(rtype, [ln for ln in path.read_text().splitlines() if ln.strip()])
            rejected.append(
                pl.DataFrame(
                    [{"resource_type": rtype, "id": rid, "reason": why} for rid, why in bad],
                    schema={"resource_type": pl.String, "id": pl.String, "reason": pl.String},
                )
            )
        by_type.setdefault(rtype, []).append(frame)
    deletes = _deletes(deleted_files)
    n_deleted = 0
    frames: dict[str, pl.DataFrame] = {}
    for rtype, parts in by_type.items():
        frame = pl.concat(parts) if len(parts) > 1 else parts[0]
        frame, gone = _newest(frame, deletes.filter(pl.col("resource_type") == rtype))
        n_deleted += gone
        frames[rtype] = frame
    rej = (
        pl.concat(rejected)
        if rejected
        else pl.DataFrame(schema={"resource_type": pl.String, "id": pl.String, "reason": pl.String})
    )
    return frames, with_source(rej, source), n_deleted


def _newest(frame: pl.DataFrame, deletes: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Keep the newest version of each id (ties: the later file/line), then drop ids deleted after it."""
    stamp = parse_time(pl.col("meta").struct.field("lastUpdated")).struct.field("low")
    ranked = frame.with_row_index("__order").with_columns(__stamp=stamp)
    newest = ranked.sort(["__stamp", "__order"], nulls_last=False).unique(
        "id", keep="last", maintain_order=True
    )
    if deletes.height:
        latest_delete = deletes.group_by("id").agg(pl.col("deleted_at").max())
        joined = newest.join(latest_delete, on="id", how="left")
        gone = pl.col("deleted_at").is_not_null() & (
            pl.col("deleted_at").is_null()
            | pl.col("__stamp").is_null()
            | (pl.col("__stamp") <= pl.col("deleted_at"))
        )
        hit = deletes["id"].is_in(newest["id"].implode())
        undated = deletes.filter(hit & pl.col("deleted_at").is_null())["id"]
        gone = gone | pl.col("id").is_in(undated.implode())
        before = joined.height
        newest = joined.filter(~gone.fill_null(False)).drop("deleted_at")
        return newest.sort("__order").drop("__order", "__stamp"), before - newest.height
    return newest.sort("__order").drop("__order", "__stamp"), 0


def flatten_export(root: Path, source: str | None = None, *, n_buckets: int = 1) -> FlattenResult:
    """A Bulk Data export folder -> canonical tables; ``dropped_counts['deleted']`` counts applied deletes."""
    source = source or root.name
    frames, rejected, n_deleted = read_export(root, source)
    result = flatten(frames, source, n_buckets=n_buckets, rejected=rejected)
    if n_deleted:
        result.dropped_counts["deleted"] = n_deleted
    return result
