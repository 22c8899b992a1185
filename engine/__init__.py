"""Compile measure definitions to polars and evaluate them over canonical data.

>>> from engine import compile_measure, evaluate, EvaluationConfig  # doctest: +SKIP
"""

from engine.compile import compile_measure
from engine.errors import CompileError, EngineError, EvaluationError, MissingValueSetError
from engine.evaluate import EvaluationConfig, EvaluationResult, evaluate
from engine.plan import MeasurePlan

__all__ = [
    "CompileError",
    "EngineError",
    "EvaluationConfig",
    "EvaluationError",
    "EvaluationResult",
    "MeasurePlan",
    "MissingValueSetError",
    "compile_measure",
    "evaluate",
]
