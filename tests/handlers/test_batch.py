"""Batch handlers: sharding must not change a byte of the summary, and reduce must refuse incomplete runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets.synthetic import SynthConfig, generate
from handlers import batch
from handlers.batch_local import run_local
from handlers.cli import main


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("lake")
    generate(str(root), SynthConfig(n_patients=400, n_buckets=8, seed=7))
    return str(root)


def _summary(lake: str, out: Path, **kwargs: object) -> bytes:
    done = run_local(lake, str(out), **kwargs)  # type: ignore[arg-type]
    return Path(done.summary.path).read_bytes()


def test_shards_and_workers_do_not_change_the_summary(lake: str, tmp_path: Path) -> None:
    one = _summary(lake, tmp_path / "a", n_shards=1, workers=1)
    four = _summary(lake, tmp_path / "b", n_shards=4, workers=1)
    two_workers = _summary(lake, tmp_path / "c", n_shards=4, workers=2)
    assert one == four == two_workers
    doc = json.loads(one)
    assert doc["patients"] == 400
    group = doc["measures"]["CMS125"]["groups"]["group-1"]
    assert set(group["populations"]) >= {"initial-population", "denominator", "numerator"}
    assert group["populations"]["initial-population"] > 0


def test_summary_is_byte_identical_for_1_2_8_workers_and_1_vs_16_shards(tmp_path: Path) -> None:
    root = tmp_path / "lake16"
    generate(str(root), SynthConfig(n_patients=480, n_buckets=16, seed=11))
    runs = [(1, 1), (16, 1), (16, 2), (16, 8), (2, 2)]
    summaries = {_summary(str(root), tmp_path / f"out-{s}-{w}", n_shards=s, workers=w) for s, w in runs}
    assert len(summaries) == 1


def test_choose_shards_covers_every_bucket_once() -> None:
    shards = batch.choose_shards([5, 0, 7, 1, 9, 3, 0, 2], 3)
    assert len(shards) == 3
    assert [b for s in shards for b in range(*s)] == list(range(8))
    assert batch.choose_shards([1, 1], 9) == ((0, 1), (1, 2))


def test_run_id_is_deterministic(lake: str, tmp_path: Path) -> None:
    a = batch.plan(lake, str(tmp_path), n_shards=2)
    b = batch.plan(lake, str(tmp_path), n_shards=2)
    c = batch.plan(lake, str(tmp_path), n_shards=3)
    assert a.run_id == b.run_id != c.run_id
    assert batch.RunPlan.from_dict(json.loads(Path(a.root, "run.json").read_text())) == a


def test_missing_shard_fails_and_publishes_nothing(lake: str, tmp_path: Path) -> None:
    run = batch.plan(lake, str(tmp_path), n_shards=3)
    batch.evaluate_shard(run, 0)
    batch.evaluate_shard(run, 2)
    with pytest.raises(batch.RunIncompleteError, match=r"\[1\]"):
        batch.reduce(run)
    assert not Path(run.root, "summary.json").exists()
    batch.evaluate_shard(run.to_dict(), 1)
    assert Path(batch.reduce(run).path).exists()


def test_retried_shard_rewrites_identical_bytes(lake: str, tmp_path: Path) -> None:
    run = batch.plan(lake, str(tmp_path), n_shards=2)
    first = batch.evaluate_shard(run, 1)
    before = Path(first.subjects_path).read_bytes(), Path(first.counts_path).read_bytes()
    batch._LIBRARIES.clear()  # a fresh process compiles again
    second = batch.evaluate_shard(run, 1)
    assert (second.subjects_path, second.counts_path) == (first.subjects_path, first.counts_path)
    assert (Path(second.subjects_path).read_bytes(), Path(second.counts_path).read_bytes()) == before


def test_lambda_handlers_round_trip(lake: str, tmp_path: Path) -> None:
    planned = batch.plan_handler({"data": lake, "out": str(tmp_path), "n_shards": 2, "measures": ["cms125"]})
    assert len(planned["shards"]) == 2
    for item in planned["shards"]:
        assert batch.shard_handler(item)["run_id"] == planned["run_id"]
    reduced = batch.reduce_handler({"run_uri": planned["run_uri"]})
    doc = json.loads(Path(reduced["summary_uri"]).read_text())
    assert list(doc["measures"]) == ["CMS125"]


def test_s3_event_names_the_data_root() -> None:
    event = {"detail": {"bucket": {"name": "b"}, "object": {"key": "lakes/x/_manifest.json"}}}
    assert batch._s3_object(event) == ("b", "lakes/x/_manifest.json")


def test_cli_run_json(lake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "run",
            "--data",
            lake,
            "--out",
            str(tmp_path),
            "--workers",
            "1",
            "--format",
            "json",
            "--measures",
            "CMS122,cms165",
            "--period",
            "2025-01-01:2025-12-31",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["measures"]) == ["CMS122", "CMS165"]
    assert doc["measures"]["CMS122"]["period"] == {"start": "2025-01-01", "end": "2025-12-31"}


def test_cli_run_missing_lake_fails(tmp_path: Path) -> None:
    assert main(["run", "--data", str(tmp_path / "nope"), "--workers", "1"]) == 1


def test_summarize_counts_strata_and_scores() -> None:
    import polars as pl

    from engine.library import summarize

    subjects = pl.DataFrame(
        {
            "measure_id": ["M", "M", "M", "N"],
            "group_id": ["g", "g", "g", "g"],
            "patient_id": ["1", "2", "3", "1"],
            "initial_population": [True, True, False, False],
            "denominator": [True, True, False, False],
            "denominator_exclusion": [False, True, False, False],
            "numerator": [True, False, False, False],
            "strata": [["s1"], ["s1", "s2"], [], []],
        }
    )
    out = summarize(subjects)
    rows = {(r["measure_id"], r["stratum"]): r for r in out.iter_rows(named=True)}
    assert rows[("M", None)]["denominator"] == 2 and rows[("M", None)]["score"] == 1.0
    assert rows[("M", "s2")]["denominator"] == 1 and rows[("M", "s2")]["score"] is None
    assert rows[("N", None)]["score"] is None


def test_s3_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="lake")
        generate("s3://lake/data", SynthConfig(n_patients=120, n_buckets=4, seed=3))
        event = {
            "detail": {"bucket": {"name": "lake"}, "object": {"key": "data/_manifest.json"}},
            "n_shards": 2,
        }
        planned = batch.plan_handler(event)
        assert planned["run_uri"].startswith("s3://lake/data/_results/")
        for item in planned["shards"]:
            batch.shard_handler(item)
        reduced = batch.reduce_handler({"run_uri": planned["run_uri"]})
        assert reduced["patients"] == 120
        local = generate(str(tmp_path / "lake"), SynthConfig(n_patients=120, n_buckets=4, seed=3))
        assert local.n_buckets == 4
        here = run_local(str(tmp_path / "lake"), str(tmp_path / "out"), n_shards=2, workers=1)
        from datasets import storage

        assert storage.read_bytes(reduced["summary_uri"]) == Path(here.summary.path).read_bytes()
        # and as a user runs it, from the command line, s3:// in and out
        args = [
            "run",
            "--data",
            "s3://lake/data",
            "--out",
            "s3://lake/cli",
            "--workers",
            "1",
            "--shards",
            "2",
        ]
        assert main([*args, "--format", "json"]) == 0
        cli = [k for k in storage.list_files("s3://lake/cli") if k.endswith("/summary.json")]
        assert len(cli) == 1 and storage.read_bytes(cli[0]) == Path(here.summary.path).read_bytes()
    finally:
        server.stop()
