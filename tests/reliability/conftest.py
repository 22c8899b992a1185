"""A small clean lake per session, copied per test so each test may corrupt its own copy."""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from datasets import lake as lakes
from datasets.synthetic import SynthConfig, generate


@pytest.fixture(scope="session")
def clean_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clean-lake")
    generate(str(root), SynthConfig(n_patients=300, n_buckets=4, seed=11))
    return root


@pytest.fixture
def lake(clean_lake: Path, tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(clean_lake, root)
    return root


def first_file(root: Path, table: str) -> Path:
    """The first listed file of ``table`` (a bucket that holds rows)."""
    manifest = lakes.read_manifest(str(root))
    bucket = manifest.buckets_with_rows(table)[0]
    return Path(lakes.file_path(str(root), table, bucket))


def rewrite(path: Path, change: object) -> pl.DataFrame:
    """Rewrite one lake file with ``change(frame)`` (same row count keeps the manifest's counts)."""
    frame = pl.read_parquet(path, hive_partitioning=False)
    changed = change(frame)  # type: ignore[operator]
    changed.write_parquet(path)
    return changed


# ----------------------------------------------------------------------------------------- S3 (moto server)


logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the moto server logs one line per request


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A moto server on 127.0.0.1 (S3 only is used); yields its endpoint.

    moto keeps its state per process, shared with tests/aws' server (which may reset it between tests), so
    tests here create their own uniquely named buckets per test and keep nothing on S3 across tests.
    """
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_env(moto_s3: str) -> dict[str, str]:
    """The variables that point boto3 and polars at the moto server (fake credentials)."""
    return {
        "AWS_ENDPOINT_URL": moto_s3,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


def forget_boto3_credentials() -> None:
    """Drop boto3's default session: it caches the first credentials it resolves for the whole process, and
    other tests in the same worker (tests/aws' SeaweedFS test) use other credentials from the environment."""
    import boto3

    boto3.DEFAULT_SESSION = None


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RESULTS_ROOT"):
        monkeypatch.delenv(key, raising=False)
    forget_boto3_credentials()


@pytest.fixture
def s3_env(moto_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """boto3 and polars pointed at the moto server, for this test only."""
    use_env(monkeypatch, moto_env)
    yield moto_env["AWS_ENDPOINT_URL"]
    forget_boto3_credentials()
