"""Lake layout, manifest round trip, validation errors, ParquetSource / FrameSource, and s3 through moto."""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from datasets import storage
from datasets.errors import DataContractError, ManifestError
from datasets.hashing import HASH_NAME, bucket_of
from datasets.lake import LakeWriter, canonical_json, file_path, manifest_path, read_manifest, validate_lake
from datasets.schema import SCHEMA_VERSION, TABLES, conform, empty_frame
from datasets.source import DataSource, FrameSource, ParquetSource

N_BUCKETS = 4


def _patients(n: int) -> pl.DataFrame:
    ids = [f"x{i:04d}" for i in range(n)]
    frame = pl.DataFrame(
        {
            "patient_id": ids,
            "bucket": pl.Series(bucket_of(ids, N_BUCKETS), dtype=pl.UInt16),
            "gender": ["female" if i % 2 else "male" for i in range(n)],
        }
    )
    return conform("patient", frame)


def _encounters(patients: pl.DataFrame) -> pl.DataFrame:
    t0 = datetime(2025, 3, 1, tzinfo=UTC)
    frame = patients.select("patient_id", "bucket").with_columns(
        (pl.col("patient_id") + "-e").alias("id"),
        pl.lit(t0).cast(pl.Datetime("us", "UTC")).alias("start"),
        pl.lit("finished").alias("status"),
    )
    return conform("encounter", frame)


def _write_lake(root: str, n: int = 40) -> dict[str, pl.DataFrame]:
    tables = {"patient": _patients(n)}
    tables["encounter"] = _encounters(tables["patient"])
    writer = LakeWriter(root, N_BUCKETS, sources=[{"name": "test"}])
    for table, frame in tables.items():
        for (bucket,), part in frame.partition_by("bucket", as_dict=True).items():
            writer.write(table, int(bucket), part)  # type: ignore[arg-type]
    writer.finish()
    return tables


@pytest.fixture
def lake(tmp_path: Path) -> tuple[str, dict[str, pl.DataFrame]]:
    root = str(tmp_path / "lake")
    return root, _write_lake(root)


def test_layout_and_manifest_round_trip(lake: tuple[str, dict[str, pl.DataFrame]]) -> None:
    root, _ = lake
    manifest = read_manifest(root)
    assert manifest.schema_version == SCHEMA_VERSION
    assert manifest.n_buckets == N_BUCKETS and manifest.hash == HASH_NAME and manifest.default_tz == "UTC"
    assert manifest.sources == ({"name": "test"},)
    assert manifest.tables["patient"].rows == 40
    assert sum(manifest.tables["encounter"].bucket_rows) == 40
    path = Path(file_path(root, "patient", manifest.buckets_with_rows("patient")[0]))
    assert path.parent.name.startswith("bucket=") and len(path.parent.name) == len("bucket=0000")
    stored = pl.read_parquet(path, hive_partitioning=False)
    assert "bucket" not in stored.columns  # the partition, not a column
    assert stored["patient_id"].is_sorted()
    assert validate_lake(root).content_hash == manifest.content_hash


def test_manifest_tampering_is_detected(lake: tuple[str, dict[str, pl.DataFrame]]) -> None:
    root, _ = lake
    doc = json.loads(Path(manifest_path(root)).read_text())
    doc["tables"]["patient"]["rows"] += 1
    Path(manifest_path(root)).write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="patient"):
        read_manifest(root)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(str(tmp_path))


def test_row_count_mismatch_names_the_file(lake: tuple[str, dict[str, pl.DataFrame]]) -> None:
    root, _ = lake
    bucket = read_manifest(root).buckets_with_rows("encounter")[0]
    path = file_path(root, "encounter", bucket)
    pl.read_parquet(path, hive_partitioning=False).head(1).write_parquet(path)
    with pytest.raises(ManifestError, match=f"bucket={bucket:04d}"):
        validate_lake(root)


def test_bad_file_schema_is_a_contract_error(lake: tuple[str, dict[str, pl.DataFrame]]) -> None:
    root, _ = lake
    bucket = read_manifest(root).buckets_with_rows("patient")[0]
    path = file_path(root, "patient", bucket)
    frame = pl.read_parquet(path, hive_partitioning=False)
    frame.with_columns(pl.col("birth_date_prec").cast(pl.Int64)).write_parquet(path)
    with pytest.raises(
        DataContractError, match=r"patient\.birth_date_prec: expected Int8, found Int64"
    ) as err:
        validate_lake(root)
    assert err.value.where == path
    with pytest.raises(DataContractError, match=r"patient\.birth_date_prec"):
        ParquetSource(root)


def test_writer_refuses_wrong_schema(tmp_path: Path) -> None:
    frame = _patients(3).with_columns(pl.col("gender").cast(pl.Categorical))
    with pytest.raises(DataContractError, match=r"patient\.gender"):
        LakeWriter(str(tmp_path), N_BUCKETS).write("patient", 0, frame.filter(pl.col("bucket") == 0))


def test_parquet_source_buckets(lake: tuple[str, dict[str, pl.DataFrame]]) -> None:
    root, tables = lake
    source = ParquetSource.from_manifest(root, buckets=[1, 2])
    assert isinstance(source, DataSource)
    got = source.scan("encounter").collect()
    assert got.schema == TABLES["encounter"]
    expected = tables["encounter"].filter(pl.col("bucket").is_in([1, 2]))
    assert got.height == expected.height > 0
    assert set(got["bucket"].unique().to_list()) <= {1, 2}
    assert source.scan("patient", ["patient_id", "bucket"]).collect().schema == pl.Schema(
        {"patient_id": pl.String(), "bucket": pl.UInt16()}
    )
    # a table the lake does not have scans as an empty canonical frame
    assert not source.has_table("immunization")
    assert source.scan("immunization").collect().schema == empty_frame("immunization").schema
    whole = ParquetSource(root).scan("patient").collect()
    assert whole.height == 40


def test_frame_source_conforms_and_checks() -> None:
    source = FrameSource({"patient": pl.DataFrame({"patient_id": ["a"], "gender": ["male"]})})
    assert source.scan("patient").collect().schema == TABLES["patient"]
    assert source.scan("encounter", ["id"]).collect().height == 0
    with pytest.raises(DataContractError, match=r"patient\.birth_date: expected Date, found String"):
        FrameSource({"patient": pl.DataFrame({"patient_id": ["a"], "birth_date": ["2020-01-01"]})})
    with pytest.raises(DataContractError, match=r"patient\.shoe_size"):
        FrameSource({"patient": pl.DataFrame({"patient_id": ["a"], "shoe_size": [42]})})


# --- s3 through a moto server on loopback ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        storage._s3_client().create_bucket(Bucket="lake")
        yield "s3://lake/datasets/test"
    finally:
        server.stop()


def test_s3_round_trip(s3_bucket: str) -> None:
    tables = _write_lake(s3_bucket, n=20)
    assert storage.storage_options(s3_bucket) == {
        "aws_endpoint_url": storage.storage_options(s3_bucket)["aws_endpoint_url"],  # type: ignore[index]
        "aws_allow_http": "true",
        "aws_region": "us-east-1",
    }
    manifest = validate_lake(s3_bucket)
    assert manifest.tables["encounter"].rows == 20
    source = ParquetSource.from_manifest(s3_bucket, buckets=[0, 3])
    got = source.scan("encounter").collect()
    assert got.height == tables["encounter"].filter(pl.col("bucket").is_in([0, 3])).height
    assert got.schema == TABLES["encounter"]


def _set_version(root: str, version: str) -> None:
    """Restamp the manifest's schema version (and its content hash, as a writer of that version would)."""
    doc = json.loads(Path(manifest_path(root)).read_text())
    doc["schema_version"] = version
    manifest = replace(read_manifest(root), schema_version=version)
    doc["content_hash"] = hashlib.sha256(canonical_json(manifest.body())).hexdigest()
    Path(manifest_path(root)).write_text(json.dumps(doc))


def _as_written_at_1_0_0(root: str) -> None:
    """Rewrite a lake as a 1.0.0 writer would have: without the columns and struct fields 1.1.0 added."""
    for bucket in read_manifest(root).buckets_with_rows("encounter"):
        path = file_path(root, "encounter", bucket)
        frame = pl.read_parquet(path, hive_partitioning=False).drop("procedures")
        old_stay = pl.List(pl.Struct({"location_id": pl.String, "status": pl.String,
                                      "start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}))  # fmt: skip
        frame.with_columns(pl.lit(None, old_stay).alias("locations")).write_parquet(path)
    _set_version(root, "1.0.0")


def test_an_older_minor_version_reads_with_the_additions_null(
    lake: tuple[str, dict[str, pl.DataFrame]],
) -> None:
    root, tables = lake
    _as_written_at_1_0_0(root)
    assert validate_lake(root).schema_version == "1.0.0"
    source = ParquetSource(root)
    frame = source.scan("encounter", ["id", "procedures", "locations"]).collect()
    assert frame.height == tables["encounter"].height
    assert frame["procedures"].null_count() == frame.height
    assert frame.schema["locations"] == TABLES["encounter"]["locations"]
    # the current schema is still enforced on a current lake: the same files under a 1.1.0 manifest fail
    _set_version(root, SCHEMA_VERSION)
    with pytest.raises(DataContractError, match=r"encounter\.procedures: expected .* found missing"):
        validate_lake(root)
