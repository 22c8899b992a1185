"""A real worker process killed (SIGKILL) in the middle of writing its shard, with the local process pool.

The pool's workers are spawned interpreters, so the fault is planted through a ``sitecustomize`` module on
their PYTHONPATH: in a worker, when the shard's subjects file is being written, it writes half of it under the
temporary name and then sends itself SIGKILL (what the out-of-memory killer does). The run must fail naming
that shard and the signal, publish nothing, keep the other shards, and a rerun must publish the reference bytes.
"""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from handlers import batch
from handlers.batch_local import run_local

MEASURES = ["CMS122", "CMS125", "CMS130", "CMS165"]
REPO = Path(__file__).resolve().parents[2]
KILL_ENV = "MEASURES_TEST_SIGKILL_SHARD"

SITECUSTOMIZE = textwrap.dedent(
    f'''
    """Test fault (tests/reliability/test_worker_killed.py): SIGKILL this process mid-write of one shard."""
    import os
    import signal
    import sys

    _SHARD = os.environ.get({KILL_ENV!r})
    if _SHARD is not None:
        sys.path.insert(0, {str(REPO)!r})
        from datasets import storage

        _real_put_file = storage.put_file
        _needle = "shard=%04d" % int(_SHARD)

        def put_file(write, url):
            if _needle not in str(url):
                return _real_put_file(write, url)

            def half_then_die(path):
                write(path)
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.truncate(max(1, size // 2))
                os.kill(os.getpid(), signal.SIGKILL)

            return _real_put_file(half_then_die, url)

        storage.put_file = put_file
    '''
)


@pytest.fixture(scope="module")
def reference(clean_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    out = tmp_path_factory.mktemp("killed-reference")
    done = run_local(str(clean_lake), str(out), n_shards=3, workers=1, measures=MEASURES)
    return Path(done.summary.path).read_bytes()


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging the suite) if a dead worker hangs the pool."""

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError("run_local hung after a worker was killed")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(240)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_worker_killed_mid_write_fails_the_run_naming_the_shard_and_a_rerun_completes(
    clean_lake: Path,
    tmp_path: Path,
    reference: bytes,
    monkeypatch: pytest.MonkeyPatch,
    deadline: None,
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "out"
    run = batch.plan(str(clean_lake), str(out), n_shards=3, measures=MEASURES)
    shard_dir = Path(batch.subjects_path(run, 1)).parent

    with monkeypatch.context() as env:
        env.setenv("PYTHONPATH", str(hook))  # only the spawned workers start with it
        env.setenv(KILL_ENV, "1")
        with pytest.raises(batch.RunIncompleteError) as info:
            run_local(str(clean_lake), str(out), n_shards=3, workers=2, measures=MEASURES)
    message = str(info.value)
    assert "1 of 3 shards failed, nothing published" in message, message
    assert "shard 1: worker process killed by SIGKILL" in message, message
    assert "shard 0:" not in message and "shard 2:" not in message  # the innocent shards were not lost
    # the worker really died mid-write: half a file under a temporary name, no final file, no commit marker
    leftovers = [p.name for p in shard_dir.iterdir()] if shard_dir.exists() else []
    assert any(name.startswith(".part-0.parquet.tmp-") for name in leftovers), leftovers
    assert not Path(batch.subjects_path(run, 1)).exists()
    assert not Path(batch.counts_path(run, 1)).exists()
    assert [batch.shard_done(run, i) for i in range(3)] == [True, False, True]
    for name in ("summary.json", "measure-reports.json", "report.html"):
        assert not Path(run.root, name).exists(), f"{name} published after a killed worker"

    committed = {i: Path(batch.counts_path(run, i)).stat().st_mtime_ns for i in (0, 2)}
    done = run_local(str(clean_lake), str(out), n_shards=3, workers=2, measures=MEASURES)
    assert Path(done.summary.path).read_bytes() == reference
    assert {i: Path(batch.counts_path(run, i)).stat().st_mtime_ns for i in (0, 2)} == committed  # reused
