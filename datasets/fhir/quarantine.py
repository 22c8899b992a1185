"""The quarantine: every record refused, with its reason: ``<lake>/_quarantine/rejected.parquet``.

Rows carry ids only (source, resource type, resource id, patient id) and a fixed reason text: no PHI.
Beside it, ``unknown_systems.parquet`` counts the codings that were kept although their code system is
missing or not an absolute URI (they cannot match any value set): table, system string, count.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from datasets.fhir.flatten import REJECTED_SCHEMA, UNKNOWN_SYSTEMS_SCHEMA

QUARANTINE_DIR = "_quarantine"
REJECTED_FILE = "rejected.parquet"
UNKNOWN_SYSTEMS_FILE = "unknown_systems.parquet"


def write_rejected(root: Path, rejected: pl.DataFrame) -> Path:
    """Write the quarantine file (always, even empty, so "nothing rejected" is visible too)."""
    path = root / QUARANTINE_DIR / REJECTED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rejected.select(list(REJECTED_SCHEMA)).cast(REJECTED_SCHEMA).write_parquet(path)
    return path


def summary(rejected: pl.DataFrame) -> pl.DataFrame:
    """Counts per (resource_type, reason), for the console."""
    return rejected.group_by("resource_type", "reason").len().sort("len", descending=True)


def write_unknown_systems(root: Path, unknown: pl.DataFrame) -> Path:
    """Write the unknown-code-system counts (always, even empty): table, system string, codings."""
    path = root / QUARANTINE_DIR / UNKNOWN_SYSTEMS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    unknown.select(list(UNKNOWN_SYSTEMS_SCHEMA)).cast(UNKNOWN_SYSTEMS_SCHEMA).write_parquet(path)
    return path
