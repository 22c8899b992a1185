"""Errors raised when data does not honour its contract; each names the table, column, file or row."""

from __future__ import annotations

from collections.abc import Sequence


class DatasetError(Exception):
    """Base class of every error raised by ``datasets``."""


class DataContractError(DatasetError):
    """A table's columns or types differ from the canonical schema; raised before any work starts."""

    def __init__(self, problems: Sequence[object], where: str = "") -> None:
        self.problems = list(problems)
        self.where = where
        head = f"{where}: " if where else ""
        super().__init__(head + "; ".join(str(p) for p in self.problems))


class ManifestError(DatasetError):
    """The manifest is missing, malformed, or does not match the files beside it."""
