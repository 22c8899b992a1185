"""Errors that point at the author's file: ``file.yaml:LINE:COL: path: message``, all of them at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in a definition file, with the 1-based position of the YAML node it concerns."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        """One line per problem (line breaks in a path or message are shown as spaces)."""
        where = f"{self.path}: " if self.path else ""
        text = f"{where}{self.message}".replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        return f"{self.file}:{self.line}:{self.col}: {text}"


class DefinitionError(Exception):
    """Every problem found in one or more definition files; raised once, after collecting them all."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(set(diagnostics))
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid definition")
