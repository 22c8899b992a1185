"""The on-disk dataset: Hive-partitioned Parquet per table plus ``_manifest.json``, the commit marker.

Layout::

    <root>/_manifest.json
    <root>/<table>/bucket=NNNN/part-0.parquet   sorted by SORT_KEYS, zstd, row groups of ~128k rows

The ``bucket`` column is not stored in the files (it is the Hive partition; readers add it back as UInt16).
The manifest is written last: a reader (or the S3 event that starts a batch run) sees either a complete
dataset or none. It lists every table's rows per bucket, so readers never list a prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from datasets import storage
from datasets.errors import DataContractError, ManifestError
from datasets.hashing import HASH_NAME, MAX_BUCKETS
from datasets.schema import SCHEMA_VERSION, SORT_KEYS, TABLES, Mismatch, check_schema

MANIFEST_NAME = "_manifest.json"
FORMAT = "measures-engine-lake/1"
ROW_GROUP_SIZE = 131_072
DEFAULT_TZ = "UTC"


def bucket_dir(bucket: int) -> str:
    return f"bucket={bucket:04d}"


def file_path(root: str, table: str, bucket: int) -> str:
    return storage.join(root, table, bucket_dir(bucket), "part-0.parquet")


def manifest_path(root: str) -> str:
    return storage.join(root, MANIFEST_NAME)


def canonical_json(value: object) -> bytes:
    """The byte form that content hashes are taken over: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class FileEntry:
    """One written file; picklable, so generator workers can hand it to the process writing the manifest."""

    table: str
    bucket: int
    rows: int
    sha256: str


@dataclass(frozen=True)
class TableInfo:
    rows: int
    files: int
    content_hash: str
    bucket_rows: tuple[int, ...]


@dataclass(frozen=True)
class Manifest:
    """The parsed ``_manifest.json``."""

    schema_version: str
    n_buckets: int
    hash: str
    created_by: str
    default_tz: str
    tables: Mapping[str, TableInfo]
    content_hash: str
    sources: tuple[Mapping[str, Any], ...] = field(default=())

    def buckets_with_rows(self, table: str, buckets: Iterable[int] | None = None) -> list[int]:
        """The buckets of ``table`` that hold rows (and so a file), limited to ``buckets`` when given."""
        info = self.tables.get(table)
        if info is None:
            return []
        wanted = range(self.n_buckets) if buckets is None else sorted(set(buckets))
        return [b for b in wanted if 0 <= b < self.n_buckets and info.bucket_rows[b] > 0]

    def body(self) -> dict[str, Any]:
        """Everything but the content hash, in its JSON shape."""
        body: dict[str, Any] = {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "n_buckets": self.n_buckets,
            "hash": self.hash,
            "created_by": self.created_by,
            "default_tz": self.default_tz,
            "tables": {
                name: {
                    "rows": t.rows,
                    "files": t.files,
                    "content_hash": t.content_hash,
                    "bucket_rows": list(t.bucket_rows),
                }
                for name, t in sorted(self.tables.items())
            },
        }
        if self.sources:
            body["sources"] = [dict(s) for s in self.sources]
        return body

    def to_json(self) -> bytes:
        return json.dumps(
            {**self.body(), "content_hash": self.content_hash}, indent=1, sort_keys=True
        ).encode()


def _table_info(n_buckets: int, entries: Sequence[FileEntry]) -> TableInfo:
    bucket_rows = [0] * n_buckets
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.bucket):
        bucket_rows[entry.bucket] = entry.rows
        digest.update(f"{entry.bucket}:{entry.rows}:{entry.sha256}\n".encode())
    return TableInfo(sum(bucket_rows), len(entries), digest.hexdigest(), tuple(bucket_rows))


def _problems_to_file_schema(
    table: str, found: Mapping[str, pl.DataType], version: str = SCHEMA_VERSION
) -> list[Mismatch]:
    """Schema problems of one file: the canonical columns (as of the lake's ``version``) less ``bucket``,
    which is the partition."""
    problems = []
    if "bucket" in found:
        problems.append(
            Mismatch(table, "bucket", "the Hive partition, not a stored column", str(found["bucket"]))
        )
    problems.extend(check_schema(table, {**found, "bucket": pl.UInt16()}, version=version))
    return problems


class LakeWriter:
    """Writes a dataset table by table and bucket by bucket, then the manifest (``finish``).

    Any manifest already at ``root`` is removed first, so a lake being rewritten is never mistaken for a
    complete one.
    """

    def __init__(
        self,
        root: str,
        n_buckets: int,
        *,
        created_by: str = "measures-engine",
        sources: Sequence[Mapping[str, Any]] = (),
        remove_old_manifest: bool = True,
    ) -> None:
        if not 1 <= n_buckets <= MAX_BUCKETS:
            raise ValueError(f"n_buckets must be in 1..{MAX_BUCKETS}, got {n_buckets}")
        self.root = root
        self.n_buckets = n_buckets
        self.created_by = created_by
        self.sources = tuple(sources)
        self._entries: dict[tuple[str, int], FileEntry] = {}
        if remove_old_manifest:
            storage.remove(manifest_path(root))

    def write(self, table: str, bucket: int, frame: pl.DataFrame) -> FileEntry | None:
        """Check, sort and write one table's rows of one bucket; an empty frame writes no file."""
        entry = write_bucket(self.root, table, bucket, frame, self.n_buckets)
        if entry is not None:
            self.add(entry)
        return entry

    def add(self, entry: FileEntry) -> None:
        """Record a file written elsewhere (a worker process) with :func:`write_bucket`."""
        key = (entry.table, entry.bucket)
        if key in self._entries:
            raise ValueError(f"{entry.table} bucket {entry.bucket} written twice")
        self._entries[key] = entry

    def finish(self) -> Manifest:
        """Write ``_manifest.json`` (last: it is the commit marker) and return it."""
        by_table: dict[str, list[FileEntry]] = {}
        for entry in self._entries.values():
            by_table.setdefault(entry.table, []).append(entry)
        tables = {name: _table_info(self.n_buckets, entries) for name, entries in sorted(by_table.items())}
        draft = Manifest(
            SCHEMA_VERSION, self.n_buckets, HASH_NAME, self.created_by, DEFAULT_TZ, tables, "", self.sources
        )
        manifest = Manifest(
            **{**draft.__dict__, "content_hash": hashlib.sha256(canonical_json(draft.body())).hexdigest()}
        )
        storage.write_bytes(manifest_path(self.root), manifest.to_json())
        return manifest


def write_bucket(root: str, table: str, bucket: int, frame: pl.DataFrame, n_buckets: int) -> FileEntry | None:
    """Write ``<root>/<table>/bucket=NNNN/part-0.parquet``: schema-checked, sorted, zstd, ~128k-row groups."""
    if not 0 <= bucket < n_buckets:
        raise ValueError(f"bucket {bucket} outside 0..{n_buckets - 1}")
    if frame.height == 0:
        return None
    problems = check_schema(
        table, frame.schema if "bucket" in frame.columns else {**frame.schema, "bucket": pl.UInt16()}
    )
    if problems:
        raise DataContractError(problems, where=f"{table} bucket {bucket}")
    if "bucket" in frame.columns:
        wrong = frame.filter(pl.col("bucket") != bucket).height
        if wrong:
            raise DataContractError([f"{table}.bucket: {wrong} rows not in bucket {bucket}"], where=table)
        frame = frame.drop("bucket")
    frame = frame.sort(list(SORT_KEYS[table]), nulls_last=True, maintain_order=True)

    def write(path: str) -> None:
        frame.write_parquet(path, compression="zstd", row_group_size=ROW_GROUP_SIZE, statistics=True)

    digest = storage.put_file(write, file_path(root, table, bucket))
    return FileEntry(table, bucket, frame.height, digest)


def parse_manifest(raw: bytes, where: str = MANIFEST_NAME) -> Manifest:
    """Parse and verify a manifest: required fields, known tables, bucket counts and its own content hash."""
    try:
        doc = json.loads(raw)
        tables = {
            name: TableInfo(
                int(t["rows"]),
                int(t["files"]),
                str(t["content_hash"]),
                tuple(int(r) for r in t["bucket_rows"]),
            )
            for name, t in doc["tables"].items()
        }
        manifest = Manifest(
            schema_version=str(doc["schema_version"]),
            n_buckets=int(doc["n_buckets"]),
            hash=str(doc["hash"]),
            created_by=str(doc["created_by"]),
            default_tz=str(doc["default_tz"]),
            tables=tables,
            content_hash=str(doc["content_hash"]),
            sources=tuple(doc.get("sources", ())),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ManifestError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None
    problems = []
    if manifest.hash != HASH_NAME:
        problems.append(f"hash {manifest.hash!r}, this engine buckets with {HASH_NAME!r}")
    if manifest.schema_version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        problems.append(f"schema_version {manifest.schema_version}, this engine reads {SCHEMA_VERSION}")
    for name, info in tables.items():
        if name not in TABLES:
            problems.append(f"unknown table {name!r}")
        elif len(info.bucket_rows) != manifest.n_buckets or sum(info.bucket_rows) != info.rows:
            problems.append(
                f"{name}: bucket_rows do not match n_buckets={manifest.n_buckets} / rows={info.rows}"
            )
    expected = hashlib.sha256(canonical_json(manifest.body())).hexdigest()
    if expected != manifest.content_hash:
        problems.append(
            f"content_hash {manifest.content_hash[:12]}… does not match the content ({expected[:12]}…)"
        )
    if problems:
        raise ManifestError(f"{where}: " + "; ".join(problems))
    return manifest


def read_manifest(root: str) -> Manifest:
    """The manifest at ``root``; ``ManifestError`` if it is missing (an incomplete dataset) or invalid."""
    where = manifest_path(root)
    try:
        raw = storage.read_bytes(where)
    except FileNotFoundError:
        raise ManifestError(
            f"{where}: no manifest; the dataset is incomplete or not a measures-engine lake"
        ) from None
    return parse_manifest(raw, where)


def file_schema_and_rows(path: str) -> tuple[pl.Schema, int]:
    """A file's schema and row count from its Parquet footer (no data pages are read)."""
    lf = pl.scan_parquet(path, hive_partitioning=False, storage_options=storage.storage_options(path))
    return lf.collect_schema(), int(lf.select(pl.len()).collect().item())


def check_file(table: str, path: str, version: str = SCHEMA_VERSION) -> tuple[list[Mismatch], int]:
    """Schema problems of one file (against the schema as of the lake's ``version``) and its row count; an
    unreadable file is a ``DataContractError``."""
    try:
        schema, rows = file_schema_and_rows(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataContractError(
            [f"{table}: unreadable Parquet ({type(exc).__name__}: {exc})"], where=path
        ) from None
    return _problems_to_file_schema(table, schema, version), rows


def validate_buckets(root: str, manifest: Manifest, buckets: Iterable[int] | None = None) -> None:
    """Check the listed files of ``buckets`` (all when None) against the manifest before any work starts.

    Missing, truncated or corrupt files, schema drift (missing, extra or retyped columns) and row counts that
    differ from the manifest each raise an error naming the file, so a shard fails before evaluating anything.
    """
    for table in manifest.tables:
        if table not in TABLES:
            continue
        for bucket in manifest.buckets_with_rows(table, buckets):
            path = file_path(root, table, bucket)
            if not storage.exists(path):
                raise ManifestError(f"{path}: listed in the manifest ({table}, bucket {bucket}) but missing")
            problems, rows = check_file(table, path, manifest.schema_version)
            if problems:
                raise DataContractError(problems, where=path)
            expected = manifest.tables[table].bucket_rows[bucket]
            if rows != expected:
                raise ManifestError(
                    f"{path}: {rows} rows, the manifest says {expected} ({table}, bucket {bucket})"
                )


def validate_lake(root: str) -> Manifest:
    """Check every listed file: schema (``DataContractError``) and row count (``ManifestError``)."""
    manifest = read_manifest(root)
    validate_buckets(root, manifest)
    return manifest
