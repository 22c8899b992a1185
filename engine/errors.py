"""Errors of the engine. Compile errors point at the definition's file:line:col like definition errors."""

from __future__ import annotations

from datasets.errors import DataContractError
from definitions.diagnostics import DefinitionError, Diagnostic


class EngineError(Exception):
    """Base class of errors raised while compiling or evaluating."""


class CompileError(DefinitionError):
    """The definition is valid but cannot be compiled (missing value set, unsupported construct)."""


class MissingValueSetError(CompileError):
    """A value set the measure needs has no expansion among those loaded."""


class EvaluationError(EngineError):
    """Evaluation failed on the data (the message names the measure and the step, never patient data)."""


__all__ = [
    "CompileError",
    "DataContractError",
    "Diagnostic",
    "EngineError",
    "EvaluationError",
    "MissingValueSetError",
]
