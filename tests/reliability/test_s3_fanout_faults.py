"""Faults in the fan-out on S3 (a moto server on 127.0.0.1), driven through the Lambda handlers.

Every scenario ends the same way: the published objects of the run (``summary.json``, ``measure-reports.json``,
``report.html``) are either all absent or byte-identical to those of an undisturbed run, and a rerun of what
failed completes the run with exactly those bytes (so no record is lost or counted twice).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import polars as pl
import pytest

from datasets import storage
from engine.errors import EvaluationError
from handlers import batch
from handlers.batch_local import run_local

N_SHARDS = 3
# A fixed selection (measures being added to the library elsewhere do not change these tests)
MEASURES = ["CMS122", "CMS125", "CMS130", "CMS165"]
PUBLISHED = ("summary.json", "measure-reports.json", "report.html")


class LambdaTimeout(BaseException):  # named after what it simulates
    """The Lambda runtime stopping a function: nothing after this point runs, no handler catches it."""


def _client() -> Any:
    return storage._s3_client()


def _keys(bucket: str, prefix: str = "") -> dict[str, str]:
    """Every key under ``prefix`` with its ETag (= MD5 of the bytes for a single PUT)."""
    found: dict[str, str] = {}
    for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return found


def _upload(local: Path, bucket: str, prefix: str) -> str:
    client = _client()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"


BUCKET = "fanout-faults"  # one name (report.html names the dataset location), recreated for every test


def _fresh_bucket() -> None:
    """An empty ``BUCKET`` (moto's state lives in this process, so no other test worker sees it)."""
    client = _client()
    try:
        client.create_bucket(Bucket=BUCKET)
    except client.exceptions.BucketAlreadyOwnedByYou:
        _drop_bucket()
        client.create_bucket(Bucket=BUCKET)


def _drop_bucket() -> None:
    client = _client()
    try:
        for upload in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            client.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
        for key in _keys(BUCKET):
            client.delete_object(Bucket=BUCKET, Key=key)
        client.delete_bucket(Bucket=BUCKET)
    except client.exceptions.NoSuchBucket:
        pass


@pytest.fixture
def s3_lake(s3_env: str, clean_lake: Path) -> Iterator[dict[str, str]]:
    """A fresh bucket holding a copy of the clean lake (uploaded per test: moto's state may be reset)."""
    _fresh_bucket()
    data = _upload(clean_lake, BUCKET, "data/lake")
    yield {"bucket": BUCKET, "data": data, "out": f"s3://{BUCKET}/results"}
    _drop_bucket()


def _plan(lake: dict[str, str]) -> dict[str, Any]:
    return batch.plan_handler(
        {"data": lake["data"], "out": lake["out"], "n_shards": N_SHARDS, "measures": MEASURES}
    )


def _root(planned: dict[str, Any]) -> str:
    return planned["run_uri"].rsplit("/", 1)[0]


def published(planned: dict[str, Any]) -> dict[str, bytes]:
    """The run's published objects that exist (all three, or none, in every scenario)."""
    out: dict[str, bytes] = {}
    for name in PUBLISHED:
        with contextlib.suppress(FileNotFoundError):
            out[name] = storage.read_bytes(f"{_root(planned)}/{name}")
    return out


def _subject_rows(planned: dict[str, Any]) -> int:
    run = batch.load_run(planned["run_uri"])
    return sum(
        pl.read_parquet(storage.read_bytes(batch.subjects_path(run, i))).height
        for i in range(len(run.shards))
    )


@pytest.fixture(scope="module")
def reference(
    moto_env: dict[str, str], clean_lake: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """An undisturbed run through the handlers: its published bytes and subject rows (kept in memory)."""
    out = tmp_path_factory.mktemp("s3-reference-local")
    local = run_local(str(clean_lake), str(out), n_shards=N_SHARDS, workers=1, measures=MEASURES)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in moto_env.items():
            mp.setenv(key, value)
        boto3.DEFAULT_SESSION = None  # (see conftest.forget_boto3_credentials)
        _fresh_bucket()
        data = _upload(clean_lake, BUCKET, "data/lake")
        planned = _plan({"bucket": BUCKET, "data": data, "out": f"s3://{BUCKET}/results"})
        for item in planned["shards"]:
            batch.shard_handler(item)
        batch.reduce_handler({"run_uri": planned["run_uri"]})
        objects = published(planned)
        rows = _subject_rows(planned)
        _drop_bucket()
        boto3.DEFAULT_SESSION = None
    assert set(objects) == set(PUBLISHED)
    assert (
        objects["summary.json"] == Path(local.summary.path).read_bytes()
    )  # S3 and local agree byte for byte
    return {"objects": objects, "rows": rows, "run_id": planned["run_id"]}


def assert_nothing_published(planned: dict[str, Any]) -> None:
    assert published(planned) == {}, "a partial run was published"


def assert_not_committed(planned: dict[str, Any], reference: dict[str, Any]) -> None:
    """No ``summary.json`` (the commit marker); whatever else is there is already the final bytes."""
    objects = published(planned)
    assert "summary.json" not in objects, "summary.json published before the run was complete"
    assert objects == {k: v for k, v in reference["objects"].items() if k in objects}


def assert_complete(planned: dict[str, Any], reference: dict[str, Any]) -> None:
    objects = published(planned)
    assert objects == reference["objects"], "published bytes differ from the undisturbed run"
    assert _subject_rows(planned) == reference["rows"]  # no subject lost or duplicated
    assert json.loads(objects["summary.json"])["patients"] == 300


def _reduce_refuses(planned: dict[str, Any], missing: str) -> None:
    with pytest.raises(batch.RunIncompleteError, match=missing):
        batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_nothing_published(planned)


# -------------------------------------------------------------------------------------------- the scenarios


def test_undisturbed_run_matches_the_local_executor(
    s3_lake: dict[str, str], reference: dict[str, Any]
) -> None:
    planned = _plan(s3_lake)
    assert planned["run_id"] == reference["run_id"]
    assert len(planned["shards"]) == N_SHARDS
    for item in planned["shards"]:
        batch.shard_handler(item)
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)


def test_shard_that_raises(
    s3_lake: dict[str, str], reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    planned = _plan(s3_lake)
    real = batch.evaluate

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise EvaluationError("injected failure in step X")

    batch.shard_handler(planned["shards"][0])
    monkeypatch.setattr(batch, "evaluate", fails)
    with pytest.raises(batch.ShardError, match=r"shard 1 \(buckets .*\): evaluation failed"):
        batch.shard_handler(planned["shards"][1])
    monkeypatch.setattr(batch, "evaluate", real)
    batch.shard_handler(planned["shards"][2])
    assert not _keys(s3_lake["bucket"], f"results/{planned['run_id']}/subjects/shard=0001/")
    _reduce_refuses(planned, r"shards \[1\] have no counts; nothing published")
    batch.shard_handler(planned["shards"][1])  # the rerun of the failed item
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)


@pytest.mark.parametrize("stage", ["uploading-subjects", "uploading-errors", "writing-counts"])
def test_shard_that_times_out(
    s3_lake: dict[str, str], reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """The Lambda timeout stops the worker at ``stage``: everything before it is on S3, nothing after it."""
    planned = _plan(s3_lake)
    run = batch.load_run(planned["run_uri"])
    target = {
        "uploading-subjects": batch.subjects_path(run, 2),
        "uploading-errors": batch.errors_path(run, 2),
        "writing-counts": batch.counts_path(run, 2),
    }[stage]
    real_put, real_write = storage.put_file, storage.write_bytes

    def put_file(write: Callable[[str], None], url: str) -> str:
        if url == target:
            raise LambdaTimeout(f"Task timed out while {stage}")
        return real_put(write, url)

    def write_bytes(url: str, data: bytes) -> None:
        if url == target:
            raise LambdaTimeout(f"Task timed out while {stage}")
        real_write(url, data)

    for item in planned["shards"][:2]:
        batch.shard_handler(item)
    monkeypatch.setattr(storage, "put_file", put_file)
    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    with pytest.raises(LambdaTimeout):
        batch.shard_handler(planned["shards"][2])
    monkeypatch.setattr(storage, "put_file", real_put)  # (not undo(): that would drop the S3 environment)
    monkeypatch.setattr(storage, "write_bytes", real_write)
    assert not storage.exists(batch.counts_path(run, 2)) and not batch.shard_done(run, 2)
    _reduce_refuses(planned, r"shards \[2\] have no counts; nothing published")
    batch.shard_handler(planned["shards"][2])
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)


def test_shard_killed_mid_write_leaves_partial_objects(
    s3_lake: dict[str, str], reference: dict[str, Any]
) -> None:
    """Killed while uploading: an abandoned multipart upload of its counts, truncated objects at its subjects
    and errors keys and a stray temporary object under its prefix; no commit marker."""
    planned = _plan(s3_lake)
    run = batch.load_run(planned["run_uri"])
    for item in planned["shards"][1:]:
        batch.shard_handler(item)
    # what an undisturbed shard 0 would have written, cut short
    scratch = f"s3://{s3_lake['bucket']}/scratch"
    other = batch.RunPlan.from_dict({**run.to_dict(), "out": scratch})
    batch.evaluate_shard(other, 0)
    bucket = s3_lake["bucket"]
    client = _client()
    for source, target in (
        (batch.subjects_path(other, 0), batch.subjects_path(run, 0)),
        (batch.errors_path(other, 0), batch.errors_path(run, 0)),
    ):
        body = storage.read_bytes(source)
        client.put_object(Bucket=bucket, Key=storage.split_s3(target)[1], Body=body[: len(body) // 3])
    prefix = storage.split_s3(batch.subjects_path(run, 0))[1].rsplit("/", 1)[0]
    client.put_object(Bucket=bucket, Key=f"{prefix}/.part-0.parquet.tmp-4242", Body=b"PAR1\x00partial")
    counts_key = storage.split_s3(batch.counts_path(run, 0))[1]
    upload = client.create_multipart_upload(Bucket=bucket, Key=counts_key)
    half = storage.read_bytes(batch.counts_path(other, 0))[:100]
    client.upload_part(Bucket=bucket, Key=counts_key, UploadId=upload["UploadId"], PartNumber=1, Body=half)

    assert not batch.shard_done(run, 0)
    _reduce_refuses(planned, r"shards \[0\] have no counts; nothing published")
    batch.shard_handler(planned["shards"][0])  # the retry overwrites the partial objects
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)


def test_duplicated_and_reordered_shard_events(s3_lake: dict[str, str], reference: dict[str, Any]) -> None:
    planned = _plan(s3_lake)
    items = planned["shards"]
    run_doc = batch.load_run(planned["run_uri"]).to_dict()
    for index in (2, 0, 2, 1, 0):  # redelivered and out of order; some carry the plan instead of its uri
        event = items[index] if index != 0 else {"run": run_doc, "shard_index": 0}
        batch.shard_handler(event)
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)
    before = _keys(s3_lake["bucket"], f"results/{planned['run_id']}/")
    batch.shard_handler(items[1])  # a late duplicate after the reduce rewrites identical objects
    assert _keys(s3_lake["bucket"], f"results/{planned['run_id']}/") == before
    assert_complete(planned, reference)


def test_reducer_started_twice(s3_lake: dict[str, str], reference: dict[str, Any]) -> None:
    planned = _plan(s3_lake)
    for item in planned["shards"]:
        batch.shard_handler(item)
    first = batch.reduce_handler({"run_uri": planned["run_uri"]})
    keys = _keys(s3_lake["bucket"], f"results/{planned['run_id']}/")
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(batch.reduce_handler({"run_uri": planned["run_uri"]})))
        for _ in range(2)
    ]  # two more at the same time
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [first, first]
    assert _keys(s3_lake["bucket"], f"results/{planned['run_id']}/") == keys  # same keys, same ETags
    assert_complete(planned, reference)


def test_reducer_started_before_all_shards_finish(s3_lake: dict[str, str], reference: dict[str, Any]) -> None:
    planned = _plan(s3_lake)
    _reduce_refuses(planned, r"shards \[0, 1, 2\] have no counts; nothing published")
    batch.shard_handler(planned["shards"][1])
    _reduce_refuses(planned, r"shards \[0, 2\] have no counts; nothing published")
    batch.shard_handler(planned["shards"][2])
    _reduce_refuses(planned, r"shards \[0\] have no counts; nothing published")
    batch.shard_handler(planned["shards"][0])
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)


@pytest.mark.parametrize("stage", ["measure-reports.json", "report.html", "summary.json"])
def test_reducer_that_times_out_while_publishing(
    s3_lake: dict[str, str], reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """The reducer stopped while writing ``stage``: no commit marker, nothing that differs from the final
    bytes; the next reduce (the state machine's retry, or a rerun) publishes the run."""
    planned = _plan(s3_lake)
    for item in planned["shards"]:
        batch.shard_handler(item)
    real_write = storage.write_bytes

    def write_bytes(url: str, data: bytes) -> None:
        if url.endswith("/" + stage):
            raise LambdaTimeout(f"Task timed out while writing {stage}")
        real_write(url, data)

    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    with pytest.raises(LambdaTimeout):
        batch.reduce_handler({"run_uri": planned["run_uri"]})
    monkeypatch.setattr(storage, "write_bytes", real_write)
    assert_not_committed(planned, reference)
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)


def _stale_summary(reference: dict[str, Any]) -> bytes:
    """A summary of an earlier run over another input: another dataset hash, other counts."""
    doc = json.loads(reference["objects"]["summary.json"])
    doc["dataset"] = "0" * 64
    doc["patients"] = 7
    return batch.dumps(doc)


@pytest.mark.parametrize(
    "damage, refusal",
    [
        ("truncated-counts", r"counts/shard-0001.json is unreadable \(JSONDecodeError\); rerun the shard"),
        ("foreign-counts", "belong to another run"),
        ("counts-of-another-library", "have another library_hash"),
        ("missing-subjects", r"subjects/shard=0001/part-0.parquet is missing; rerun shard 1"),
        ("missing-errors", r"errors/shard-0001.parquet is missing; rerun shard 1"),
        ("stale-summary", None),
        ("stale-temporary-objects", None),
    ],
)
def test_partial_or_stale_objects_are_refused_or_overwritten(
    s3_lake: dict[str, str], reference: dict[str, Any], damage: str, refusal: str | None
) -> None:
    planned = _plan(s3_lake)
    run = batch.load_run(planned["run_uri"])
    root, bucket, client = _root(planned), s3_lake["bucket"], _client()
    for item in planned["shards"]:
        batch.shard_handler(item)

    def put(url: str, body: bytes) -> None:
        client.put_object(Bucket=bucket, Key=storage.split_s3(url)[1], Body=body)

    counts = batch.counts_path(run, 1)
    if damage == "truncated-counts":
        put(counts, storage.read_bytes(counts)[:40])
    elif damage == "foreign-counts":
        put(counts, storage.read_bytes(batch.counts_path(run, 0)))
    elif damage == "counts-of-another-library":
        doc = json.loads(storage.read_bytes(counts))
        put(counts, batch.dumps({**doc, "library_hash": "f" * 16}))
    elif damage == "missing-subjects":
        storage.remove(batch.subjects_path(run, 1))
    elif damage == "missing-errors":
        storage.remove(batch.errors_path(run, 1))
    elif damage == "stale-summary":  # left by an earlier run over another input, before this reduce
        put(f"{root}/summary.json", _stale_summary(reference))
        put(f"{root}/measure-reports.json", b'{"resourceType": "Bundle", "entry": []}\n')
        put(f"{root}/report.html", b"<html>stale</html>")
    else:  # temporary objects of an interrupted writer beside the published keys
        put(f"{root}/.summary.json.tmp-4242", b'{"partial": ')
        put(f"{root}/summary.json.tmp", b'{"partial": ')
        put(f"{root}/counts/.shard-0001.json.tmp-4242", b'{"run_id": ')
    if refusal is not None:
        _reduce_refuses(planned, refusal)
        assert not batch.shard_done(run, 1) and batch.shard_done(run, 0)
        batch.shard_handler(planned["shards"][1])  # the rerun of the damaged shard repairs it
    batch.reduce_handler({"run_uri": planned["run_uri"]})
    assert_complete(planned, reference)
