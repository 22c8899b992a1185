"""Shared fixtures of the API tests: one compiled library, one small synthetic lake, clients over them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from datasets.source import ParquetSource
from datasets.synthetic import SynthConfig, generate
from engine.library import load_library
from engine.plan import MeasurePlan
from handlers.api import create_app
from handlers.settings import Settings

# The measures these tests serve (fixed, so measures being added to the library elsewhere do not change them).
MEASURE_IDS = ("CMS122", "CMS125", "CMS130", "CMS165")
ROOT = Path(__file__).resolve().parents[2]
ECQM = ROOT / ".." / "shared" / "data" / "ecqm"


@pytest.fixture(scope="session")
def plans() -> list[MeasurePlan]:
    return load_library(MEASURE_IDS)


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("api") / "lake"
    generate(str(root), SynthConfig(n_patients=80, n_buckets=4, seed=11))
    return str(root)


@pytest.fixture(scope="session")
def lake_tables(lake: str) -> dict[str, pl.DataFrame]:
    source = ParquetSource(lake)
    return {t: source.scan(t).collect() for t in source.manifest.tables if source.has_table(t)}  # type: ignore[union-attr]


def make_client(plans: list[MeasurePlan], **settings: Any) -> TestClient:
    settings.setdefault("measures", ",".join(MEASURE_IDS))
    return TestClient(create_app(Settings(**settings), plans=plans), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def client(plans: list[MeasurePlan], lake: str) -> Iterator[TestClient]:
    with make_client(plans, data=lake, max_body_bytes=200_000) as c:
        yield c
