"""Bad lake input: every bad file or row is named (file, row, column) and nothing already computed is lost."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from datasets import lake as lakes
from datasets.errors import DataContractError, DatasetError, ManifestError
from datasets.source import ParquetSource
from handlers import batch
from handlers.batch_local import run_local
from handlers.cli import main

from .conftest import first_file, rewrite

Change = Callable[[Path], None]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a parquet file at all" * 10)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _drop_column(path: Path) -> None:
    rewrite(path, lambda f: f.drop("status"))


def _extra_column(path: Path) -> None:
    rewrite(path, lambda f: f.with_columns(surprise=pl.lit(1)))


def _wrong_type(path: Path) -> None:
    rewrite(path, lambda f: f.with_columns(pl.col("start").cast(pl.String)))


def _fewer_rows(path: Path) -> None:
    rewrite(path, lambda f: f.head(f.height - 1))


def _missing(path: Path) -> None:
    path.unlink()


FILE_FAULTS: dict[str, tuple[Change, type[DatasetError], str]] = {
    "truncated": (_truncate, DataContractError, "unreadable Parquet"),
    "garbage": (_garbage, DataContractError, "unreadable Parquet"),
    "empty": (_empty, DataContractError, "unreadable Parquet"),
    "missing-column": (_drop_column, DataContractError, "encounter.status: expected String, found missing"),
    "extra-column": (_extra_column, DataContractError, "encounter.surprise: expected no such column"),
    "wrong-type": (_wrong_type, DataContractError, "encounter.start: expected Datetime"),
    "rows-differ-from-manifest": (_fewer_rows, ManifestError, "the manifest says"),
    "listed-but-missing": (_missing, ManifestError, "listed in the manifest"),
}


def _shard_of(run: batch.RunPlan, path: Path) -> int:
    bucket = int(path.parent.name.split("=")[1])
    return next(i for i, (a, b) in enumerate(run.shards) if a <= bucket < b)


@pytest.mark.parametrize("fault", sorted(FILE_FAULTS))
def test_bad_file_is_named_and_other_shards_commit(lake: Path, tmp_path: Path, fault: str) -> None:
    change, error, message = FILE_FAULTS[fault]
    path = first_file(lake, "encounter")
    original = path.read_bytes()
    change(path)
    out = tmp_path / "out"
    run = batch.plan(str(lake), str(out), n_shards=2)
    bad = _shard_of(run, path)
    with pytest.raises(error, match=message) as info:
        batch.evaluate_shard(run, bad)
    assert str(path) in str(info.value)
    # The local executor: the other shard commits, the run fails naming the file, nothing is published.
    with pytest.raises(batch.RunIncompleteError) as failed:
        run_local(str(lake), str(out), n_shards=2, workers=1)
    assert str(path) in str(failed.value) and f"shard {bad}" in str(failed.value)
    assert not Path(run.root, "summary.json").exists()
    good = 1 - bad
    assert batch.shard_done(run, good)
    committed = Path(batch.counts_path(run, good)).stat().st_mtime_ns
    # Repair the file: the rerun evaluates only the failed shard and publishes.
    path.write_bytes(original)
    done = run_local(str(lake), str(out), n_shards=2, workers=1)
    assert Path(batch.counts_path(run, good)).stat().st_mtime_ns == committed
    assert json.loads(Path(done.summary.path).read_text())["patients"] == run.patients


def test_tampered_manifest_is_refused(lake: Path, tmp_path: Path) -> None:
    manifest = lake / lakes.MANIFEST_NAME
    doc = json.loads(manifest.read_text())
    doc["tables"]["encounter"]["bucket_rows"][0] += 1
    doc["tables"]["encounter"]["rows"] += 1
    manifest.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="content_hash"):
        batch.plan(str(lake), str(tmp_path))
    manifest.write_text("{ truncated")
    with pytest.raises(ManifestError, match="malformed manifest"):
        batch.plan(str(lake), str(tmp_path))
    manifest.unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        batch.plan(str(lake), str(tmp_path))


def _plant_bad_rows(lake: Path) -> dict[str, int]:
    """Null keys, duplicates, an orphan and out-of-range dates, same row counts (the manifest still holds)."""
    enc = first_file(lake, "encounter")
    frame = pl.read_parquet(enc, hive_partitioning=False)
    ids = frame["id"].to_list()
    pids = frame["patient_id"].to_list()
    starts = frame["start"].to_list()
    ids[1] = None  # null id
    pids[2] = None  # null patient_id
    ids[3] = ids[0]  # duplicate id (row 0 is kept)
    pids[4] = "ghost-patient"  # orphan
    starts[5] = starts[5].replace(year=1700)  # out of range
    frame = frame.with_columns(
        pl.Series("id", ids, pl.String),
        pl.Series("patient_id", pids, pl.String),
        pl.Series("start", starts, frame.schema["start"]),
    )
    frame.write_parquet(enc)
    pat = first_file(lake, "patient")
    pat = first_file(lake, "patient")
    patients = pl.read_parquet(pat, hive_partitioning=False)
    dup = patients["patient_id"].to_list()
    dup[1] = dup[0]  # a duplicated patient: the second copy is quarantined, its events become orphans
    patients.with_columns(pl.Series("patient_id", dup, pl.String)).write_parquet(pat)
    return {
        "null key id": 1,
        "null key patient_id": 1,
        "duplicate id": 1,
        "orphan: patient_id not in the patient table": 1,
        "start out of range": 1,
        "duplicate patient_id": 1,
    }


def test_bad_rows_are_quarantined_counted_and_named(lake: Path, tmp_path: Path) -> None:
    expected = _plant_bad_rows(lake)
    done = run_local(str(lake), str(tmp_path / "out"), n_shards=2, workers=1, max_error_rate=0.01)
    quarantine = done.summary.document["quarantine"]
    # the duplicated patient's events are now those of the kept patient; the replaced one's become orphans
    reasons = dict(quarantine["reasons"])
    orphans = reasons.pop("orphan: patient_id not in the patient table")
    assert orphans >= 1
    assert reasons == {k: v for k, v in expected.items() if not k.startswith("orphan")}
    assert quarantine["quarantined"] == sum(reasons.values()) + orphans
    sink = pl.concat(pl.read_parquet(p) for p in sorted(Path(done.run.root, "errors").glob("*.parquet")))
    assert sink.height == quarantine["quarantined"]
    enc = str(first_file(lake, "encounter"))
    assert sink.filter(pl.col("reason") == "duplicate id").select("file", "row").row(0) == (enc, 3)
    assert sink.filter(pl.col("reason") == "start out of range")["row"].to_list() == [5]
    assert done.summary.document["patients"] == done.run.patients  # reconciled: nothing lost


def test_screened_rows_are_not_evaluated(lake: Path) -> None:
    _plant_bad_rows(lake)
    source = ParquetSource(str(lake), validate=False)
    errors = source.screen()
    enc = source.scan("encounter", ["id", "patient_id"]).collect()
    assert enc["patient_id"].null_count() == 0 and enc["id"].null_count() == 0
    assert enc["id"].is_duplicated().sum() == 0
    assert "ghost-patient" not in enc["patient_id"].to_list()
    total = ParquetSource(str(lake), validate=False).scan("encounter", ["id"]).collect().height
    assert total - enc.height == errors.filter(pl.col("table") == "encounter").height


def test_future_dates_need_an_as_of(lake: Path, tmp_path: Path) -> None:
    enc = first_file(lake, "encounter")
    frame = pl.read_parquet(enc, hive_partitioning=False)
    latest = frame["start"].max()
    assert latest is not None
    done = run_local(str(lake), str(tmp_path / "a"), n_shards=1, workers=1)
    assert "start in the future" not in done.summary.document["quarantine"]["reasons"]
    as_of = (latest.date()).replace(year=latest.year - 1).isoformat()
    later = run_local(str(lake), str(tmp_path / "b"), n_shards=1, workers=1, as_of=as_of)
    assert later.summary.document["quarantine"]["reasons"]["start in the future"] > 0
    assert later.run.run_id != done.run.run_id


def test_error_rate_above_threshold_publishes_nothing_and_rerun_completes(lake: Path, tmp_path: Path) -> None:
    _plant_bad_rows(lake)
    out = tmp_path / "out"
    with pytest.raises(batch.ErrorRateExceededError, match="nothing published") as info:
        run_local(str(lake), str(out), n_shards=2, workers=1, max_error_rate=0.0)
    run = batch.plan(str(lake), str(out), n_shards=2)
    assert "errors" in str(info.value)
    assert not Path(run.root, "summary.json").exists()
    assert all(batch.shard_done(run, i) for i in range(2))  # computed results and the sink are kept
    stamps = [Path(batch.counts_path(run, i)).stat().st_mtime_ns for i in range(2)]
    done = run_local(str(lake), str(out), n_shards=2, workers=1, max_error_rate=0.5)
    assert [Path(batch.counts_path(run, i)).stat().st_mtime_ns for i in range(2)] == stamps
    assert Path(done.summary.path).exists()


def test_cli_max_error_rate(lake: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _plant_bad_rows(lake)
    args = ["run", "--data", str(lake), "--out", str(tmp_path), "--workers", "1", "--shards", "2"]
    assert main([*args, "--max-error-rate", "0"]) == 1
    err = capsys.readouterr().err
    assert "rows quarantined" in err and "nothing published" in err
    assert main([*args, "--max-error-rate", "0.5"]) == 0
    assert "quarantined" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["missing.json", "truncated.json"])
def test_missing_or_truncated_valueset_expansion_is_named(
    clean_lake: Path, tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused expansion fails the run before any work, naming the file (results with a wrong value set
    would be published otherwise)."""
    from engine.library import ValueSetLoadError

    (tmp_path / "truncated.json").write_text('{"resourceType": "ValueSet", "expansion": {"contains": [')
    batch._LIBRARIES.clear()
    with pytest.raises(ValueSetLoadError, match=name):
        batch.plan(str(clean_lake), str(tmp_path / "out"), valuesets=str(tmp_path / name))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("summary.json"))
