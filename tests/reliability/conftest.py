"""A small clean lake per session, copied per test so each test may corrupt its own copy."""

from __future__ import annotations

import shutil
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
