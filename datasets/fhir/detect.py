"""Which kind of input a path is: a Bundle file or folder of them, a Bulk ndjson export, a Synthea folder."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class InputKind(StrEnum):
    BUNDLE = "bundle"
    BULK = "bulk"
    SYNTHEA = "synthea"


def detect(path: Path) -> InputKind:
    """The input kind, from the files present; a ``ValueError`` names what was expected."""
    if path.is_file() and path.suffix == ".json":
        return InputKind.BUNDLE
    if path.is_dir():
        if (path / "patients.csv").exists() or (path / "csv" / "patients.csv").exists():
            return InputKind.SYNTHEA
        if next(path.rglob("*.ndjson"), None) is not None:
            return InputKind.BULK
        if next(path.rglob("*.json"), None) is not None:
            return InputKind.BUNDLE
    raise ValueError(
        f"{path}: not a Bundle .json, a folder of Bundles, a Bulk ndjson export or a Synthea CSV folder"
    )
