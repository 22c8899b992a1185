"""The port the engine reads data through, and its two adapters (a Parquet lake, in-memory frames).

Binding a source checks the schema of what it will read, so a bad file fails with the table, column and path
before any evaluation starts, never half-way through a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import polars as pl

from datasets import lake, storage
from datasets.errors import DataContractError, ManifestError
from datasets.schema import (
    SCHEMA_VERSION,
    TABLE_NAMES,
    Mismatch,
    check_schema,
    conform,
    empty_frame,
    schema_of,
)

PARTITION_SCHEMA = {"bucket": pl.UInt16()}
# Instants outside this window are data errors (a year 0001 or 9999 placeholder, a unit mix-up), not care.
EARLIEST = datetime(1850, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# The quarantine sink's schema: ids and reasons only, never a value that could be PHI.
ERRORS_SCHEMA: dict[str, pl.DataType] = {
    "table": pl.String(),
    "file": pl.String(),
    "row": pl.Int64(),
    "id": pl.String(),
    "patient_id": pl.String(),
    "reason": pl.String(),
}


@runtime_checkable
class DataSource(Protocol):
    """Where canonical tables come from. ``scan`` always returns the canonical columns and dtypes."""

    def scan(self, table: str, columns: Sequence[str] | None = None) -> pl.LazyFrame: ...

    def has_table(self, table: str) -> bool: ...


def _projection(table: str, columns: Sequence[str] | None) -> list[str]:
    """The columns to return, in the order asked; unknown names are a contract error, not a polars crash."""
    schema = schema_of(table)
    if columns is None:
        return list(schema)
    unknown = [Mismatch(table, c, "a canonical column", "requested") for c in columns if c not in schema]
    if unknown:
        raise DataContractError(unknown, where=f"scan({table!r})")
    return list(columns)


def _empty(table: str, columns: Sequence[str] | None) -> pl.LazyFrame:
    return empty_frame(table).lazy().select(_projection(table, columns))


class ParquetSource:
    """A lake folder or ``s3://`` prefix, optionally limited to some buckets (one worker's shard).

    Files are located from the manifest when there is one (no prefix listing, which is slow on S3), else by
    listing ``<root>/<table>/bucket=NNNN/``.
    """

    def __init__(
        self,
        root: str,
        buckets: Sequence[int] | None = None,
        *,
        validate: bool = True,
        manifest: lake.Manifest | None = None,
    ) -> None:
        self.root = root
        self.buckets = None if buckets is None else tuple(sorted(set(buckets)))
        if manifest is None:
            try:
                manifest = lake.read_manifest(root)
            except ManifestError:
                if storage.exists(lake.manifest_path(root)):
                    raise  # a manifest that exists but is bad is an error, not a reason to guess
        self.manifest = manifest
        self._files: dict[str, list[str]] = {t: self._locate(t) for t in TABLE_NAMES}
        self._excluded: dict[str, pl.Series] = {}  # table -> row numbers (over its files, in order) to skip
        if validate:
            self.validate()

    @classmethod
    def from_manifest(
        cls, root: str, buckets: Sequence[int] | None = None, *, validate: bool = True
    ) -> ParquetSource:
        """Bind to a committed lake: the manifest must exist and be valid (n_buckets, hash, tables)."""
        manifest = lake.read_manifest(root)
        if buckets is not None:
            outside = [b for b in buckets if not 0 <= b < manifest.n_buckets]
            if outside:
                raise ManifestError(f"{root}: buckets {outside} outside 0..{manifest.n_buckets - 1}")
        return cls(root, buckets, validate=validate, manifest=manifest)

    @property
    def version(self) -> str:
        """The schema version the lake was written at (a lake without a manifest is taken as current)."""
        return SCHEMA_VERSION if self.manifest is None else self.manifest.schema_version

    @property
    def n_buckets(self) -> int | None:
        return None if self.manifest is None else self.manifest.n_buckets

    def _locate(self, table: str) -> list[str]:
        if self.manifest is not None:
            return [
                lake.file_path(self.root, table, b)
                for b in self.manifest.buckets_with_rows(table, self.buckets)
            ]
        found = storage.list_files(storage.join(self.root, table), ".parquet")
        if self.buckets is None:
            return found
        wanted = {lake.bucket_dir(b) for b in self.buckets}
        return [f for f in found if any(f"/{w}/" in f.replace("\\", "/") for w in wanted)]

    def files(self, table: str) -> list[str]:
        return list(self._files[table])

    def validate(self) -> None:
        """Check every selected file's schema (Parquet footer only); raise on the first bad file."""
        for table, files in self._files.items():
            for path in files:
                problems, _ = lake.check_file(table, path, self.version)
                if problems:
                    raise DataContractError(problems, where=path)

    def screen(self, as_of: datetime | None = None) -> pl.DataFrame:
        """Find the rows that must not be evaluated, exclude them from later scans, and return them.

        A row is quarantined (one reason each, the first that applies) for: a null key (``patient_id``,
        ``id``); a duplicate key (every copy after the first, in file order); an event whose patient is not
        in the patient table (an orphan); a birth date or start instant outside 1850..2200 or after
        ``as_of``. The result (:data:`ERRORS_SCHEMA`) names file and row, with ids only.
        """
        keys: dict[str, list[tuple[str, pl.DataFrame]]] = {}
        for table, files in self._files.items():
            schema = schema_of(table)
            cols = [c for c in ("patient_id", "id", "start", "birth_date") if c in schema]
            lazies = [
                pl.scan_parquet(p, hive_partitioning=False, storage_options=storage.storage_options(p))
                .select(cols)
                .with_row_index("row")
                for p in files
            ]
            keys[table] = list(zip(files, pl.collect_all(lazies), strict=True)) if lazies else []
        patient_ids = pl.concat(
            [f.select("patient_id") for _, f in keys.get("patient", [])]
            or [pl.DataFrame(schema={"patient_id": pl.String})]
        )["patient_id"].drop_nulls()
        found: list[pl.DataFrame] = []
        for table, parts in keys.items():
            if not parts:
                continue
            offsets, total = [], 0
            for _, frame in parts:
                offsets.append(total)
                total += frame.height
            frame = pl.concat(
                [
                    f.with_columns(file=pl.lit(path), offset=pl.lit(off, pl.Int64))
                    for (path, f), off in zip(parts, offsets, strict=True)
                ],
                how="vertical_relaxed",
            )
            bad = _problems(table, frame, patient_ids, as_of)
            if bad.height:
                self._excluded[table] = (bad["offset"] + bad["row"].cast(pl.Int64)).cast(pl.UInt32)
                found.append(bad.select(list(ERRORS_SCHEMA)))
        if not found:
            return pl.DataFrame(schema=ERRORS_SCHEMA)
        return pl.concat(found).sort("table", "file", "row")

    def has_table(self, table: str) -> bool:
        return bool(self._files.get(table))

    def scan(self, table: str, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        files = self._files.get(table)
        if files is None:
            schema_of(table)  # raises the KeyError naming the known tables
        if not files:
            return _empty(table, columns)
        older = self.version != SCHEMA_VERSION
        lf = pl.scan_parquet(
            files,
            hive_partitioning=True,
            hive_schema=PARTITION_SCHEMA,
            storage_options=storage.storage_options(self.root),
            # a lake of an older minor version: the columns and struct fields added since read as nulls
            schema=pl.Schema({k: v for k, v in schema_of(table).items() if k != "bucket"}) if older else None,
            missing_columns="insert" if older else "raise",
            cast_options=pl.ScanCastOptions(missing_struct_fields="insert") if older else None,
        )
        excluded = self._excluded.get(table)
        if excluded is not None:
            lf = lf.with_row_index("__row").filter(~pl.col("__row").is_in(excluded.implode()))
        return lf.select(_projection(table, columns))


def _problems(
    table: str, frame: pl.DataFrame, patient_ids: pl.Series, as_of: datetime | None
) -> pl.DataFrame:
    """The rows of ``frame`` (one table's key columns) to quarantine, with the first reason that applies."""
    key = "patient_id" if table == "patient" else "id" if "id" in frame.columns else None
    reason: Any = pl.when(pl.col("patient_id").is_null()).then(pl.lit("null key patient_id"))  # a when-chain
    if key == "id":
        reason = reason.when(pl.col("id").is_null()).then(pl.lit("null key id"))
    if key is not None:
        first = pl.int_range(pl.len()).over(key) == 0
        reason = reason.when(pl.col(key).is_not_null() & ~first).then(pl.lit(f"duplicate {key}"))
    if table != "patient":
        reason = reason.when(~pl.col("patient_id").is_in(patient_ids.implode())).then(
            pl.lit("orphan: patient_id not in the patient table")
        )
    if "start" in frame.columns:
        when = pl.col("start")
        reason = reason.when((when < EARLIEST) | (when >= LATEST)).then(pl.lit("start out of range"))
        if as_of is not None:
            reason = reason.when(when > as_of).then(pl.lit("start in the future"))
    if "birth_date" in frame.columns:
        born = pl.col("birth_date")
        low, high = EARLIEST.date(), LATEST.date()
        reason = reason.when((born < low) | (born >= high)).then(pl.lit("birth_date out of range"))
        if as_of is not None:
            reason = reason.when(born > as_of.date()).then(pl.lit("birth_date in the future"))
    out = frame.with_columns(reason=reason.otherwise(None)).filter(pl.col("reason").is_not_null())
    if "id" not in out.columns:
        out = out.with_columns(id=pl.lit(None, pl.String))
    return out.with_columns(pl.lit(table).alias("table"), pl.col("row").cast(pl.Int64))


class FrameSource:
    """In-memory canonical frames (the API's flattened Bundle, tests); missing columns are added as nulls."""

    def __init__(self, frames: Mapping[str, pl.DataFrame]) -> None:
        problems: list[Mismatch] = []
        self._frames: dict[str, pl.DataFrame] = {}
        for table, frame in frames.items():
            if table not in TABLE_NAMES:
                problems.append(Mismatch(table, "*", "a canonical table", "an unknown table"))
                continue
            extra = [c for c in frame.columns if c not in schema_of(table)]
            wrong = check_schema(
                table, frame.schema, require=tuple(c for c in frame.columns if c not in extra)
            )
            problems.extend(wrong)
            problems.extend(Mismatch(table, c, "no such column", str(frame.schema[c])) for c in extra)
            if not wrong and not extra:
                self._frames[table] = conform(table, frame)
        if problems:
            raise DataContractError(problems, where="frames")

    @classmethod
    def from_rows(cls, rows: Mapping[str, Iterable[Mapping[str, object]]]) -> FrameSource:
        """Build from plain dicts (tests, examples): each table's rows typed by the canonical schema."""
        frames = {}
        for table, records in rows.items():
            schema = schema_of(table)
            records = list(records)
            present = {k for r in records for k in r}
            frames[table] = pl.DataFrame(records, schema={k: v for k, v in schema.items() if k in present})
        return cls(frames)

    def has_table(self, table: str) -> bool:
        return table in self._frames and self._frames[table].height > 0

    def scan(self, table: str, columns: Sequence[str] | None = None) -> pl.LazyFrame:
        frame = self._frames.get(table)
        if frame is None:
            return _empty(table, columns)
        return frame.lazy().select(_projection(table, columns))
