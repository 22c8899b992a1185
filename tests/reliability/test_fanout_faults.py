"""Faults in the fan-out (local executor): the report is complete and correct or not published; a rerun
completes it; nothing already computed is lost or double-counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datasets import storage
from handlers import batch
from handlers.batch_local import run_local


@pytest.fixture(scope="module")
def reference(clean_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The summary of an undisturbed run: every fault scenario must end with exactly these bytes."""
    out = tmp_path_factory.mktemp("reference")
    return Path(run_local(str(clean_lake), str(out), n_shards=3, workers=1).summary.path).read_bytes()


def _summary(run: batch.RunPlan) -> Path:
    return Path(run.root, "summary.json")


def test_shard_that_raises_fails_the_run_and_rerun_completes(
    clean_lake: Path, tmp_path: Path, reference: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch.evaluate_shard
    calls: list[int] = []

    def flaky(run: Any, index: int) -> batch.ShardResult:
        calls.append(index)
        if index == 1:
            raise batch.ShardError("shard 1: injected failure")
        return real(run, index)

    monkeypatch.setattr(batch, "evaluate_shard", flaky)
    with pytest.raises(batch.RunIncompleteError, match=r"1 of 3 shards failed.*shard 1: ShardError"):
        run_local(str(clean_lake), str(tmp_path), n_shards=3, workers=1)
    assert calls == [0, 1, 2]  # the failure did not stop the later shard
    run = batch.plan(str(clean_lake), str(tmp_path), n_shards=3)
    assert not _summary(run).exists()
    monkeypatch.setattr(batch, "evaluate_shard", lambda r, i: (calls.append(i), real(r, i))[1])
    calls.clear()
    done = run_local(str(clean_lake), str(tmp_path), n_shards=3, workers=1)
    assert calls == [1]  # only the failed shard ran again
    assert Path(done.summary.path).read_bytes() == reference


def test_shard_killed_before_its_commit_marker(
    clean_lake: Path, tmp_path: Path, reference: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed (or timed out) mid-shard: subjects written, counts not; a stray temporary file."""
    run = batch.plan(str(clean_lake), str(tmp_path), n_shards=3)
    real_write = storage.write_bytes

    def dies_on_counts(url: str, data: bytes) -> None:
        if url == batch.counts_path(run, 2):
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            Path(url).with_name(".shard-0002.json.tmp-99999").write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt("killed")  # not an Exception: like SIGKILL, nothing catches it
        real_write(url, data)

    batch.evaluate_shard(run, 0)
    batch.evaluate_shard(run, 1)
    monkeypatch.setattr(storage, "write_bytes", dies_on_counts)
    with pytest.raises(KeyboardInterrupt):
        batch.evaluate_shard(run, 2)
    monkeypatch.undo()
    assert Path(batch.subjects_path(run, 2)).exists() and not batch.shard_done(run, 2)
    with pytest.raises(batch.RunIncompleteError, match=r"shards \[2\] have no counts; nothing published"):
        batch.reduce(run)
    assert not _summary(run).exists()
    done = run_local(str(clean_lake), str(tmp_path), n_shards=3, workers=1)
    assert Path(done.summary.path).read_bytes() == reference


def test_duplicated_and_reordered_shard_events(clean_lake: Path, tmp_path: Path, reference: bytes) -> None:
    run = batch.plan(str(clean_lake), str(tmp_path), n_shards=3)
    for index in (2, 0, 2, 1, 0):  # redelivered, out of order
        batch.evaluate_shard(run.to_dict(), index)
    first = batch.reduce(run)
    assert Path(first.path).read_bytes() == reference
    second = batch.reduce(run.to_dict())  # a reducer started twice: same bytes, no double count
    assert Path(second.path).read_bytes() == reference


def test_reducer_before_all_shards_finish_publishes_nothing(clean_lake: Path, tmp_path: Path) -> None:
    run = batch.plan(str(clean_lake), str(tmp_path), n_shards=3)
    with pytest.raises(batch.RunIncompleteError, match=r"\[0, 1, 2\]"):
        batch.reduce(run)
    batch.evaluate_shard(run, 1)
    with pytest.raises(batch.RunIncompleteError, match=r"\[0, 2\]"):
        batch.reduce(run)
    assert not _summary(run).exists()
    assert not Path(run.root, "measure-reports.json").exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncated-counts", "is unreadable"),
        ("foreign-counts", "belong to another run"),
        ("missing-subjects", "subjects/shard=0001/part-0.parquet is missing"),
        ("missing-errors", "errors/shard-0001.parquet is missing"),
    ],
)
def test_partial_or_stale_objects_are_refused_then_repaired(
    clean_lake: Path, tmp_path: Path, reference: bytes, damage: str, message: str
) -> None:
    run_local(str(clean_lake), str(tmp_path), n_shards=3, workers=1)
    run = batch.plan(str(clean_lake), str(tmp_path), n_shards=3)
    _summary(run).unlink()
    counts = Path(batch.counts_path(run, 1))
    if damage == "truncated-counts":
        counts.write_bytes(counts.read_bytes()[:40])
    elif damage == "foreign-counts":
        counts.write_bytes(Path(batch.counts_path(run, 0)).read_bytes())
    elif damage == "missing-subjects":
        Path(batch.subjects_path(run, 1)).unlink()
    else:
        Path(batch.errors_path(run, 1)).unlink()
    with pytest.raises(batch.RunIncompleteError, match=message):
        batch.reduce(run)
    assert not _summary(run).exists()
    assert not batch.shard_done(run, 1) and batch.shard_done(run, 0)
    done = run_local(str(clean_lake), str(tmp_path), n_shards=3, workers=1)
    assert Path(done.summary.path).read_bytes() == reference


def test_pool_worker_failure_keeps_the_other_shards(
    clean_lake: Path, tmp_path: Path, reference: bytes
) -> None:
    """Two spawn workers; the shard whose file is corrupt fails in its worker, the others commit."""
    import shutil

    from datasets import lake as lakes

    from .conftest import first_file

    root = tmp_path / "lake"
    shutil.copytree(clean_lake, root)
    path = first_file(root, "encounter")
    original = path.read_bytes()
    path.write_bytes(original[:100])
    out = tmp_path / "out"
    with pytest.raises(batch.RunIncompleteError, match="1 of 3 shards failed") as info:
        run_local(str(root), str(out), n_shards=3, workers=2)
    assert str(path) in str(info.value)
    run = batch.plan(str(root), str(out), n_shards=3)
    assert sum(batch.shard_done(run, i) for i in range(3)) == 2
    path.write_bytes(original)
    done = run_local(str(root), str(out), n_shards=3, workers=2)
    assert Path(done.summary.path).read_bytes() == reference
    assert lakes.read_manifest(str(root)).content_hash == done.run.manifest_hash
