"""Compile measure definitions to polars and evaluate them over canonical data.

In a notebook (a small synthetic lake is made here so the example runs as a doctest):

>>> import tempfile
>>> from datasets.source import ParquetSource
>>> from datasets.synthetic import SynthConfig, generate
>>> from engine import evaluate, load_library
>>> lake = tempfile.mkdtemp()
>>> _ = generate(lake, SynthConfig(n_patients=300, n_buckets=2, seed=1, processes=1))
>>> result = evaluate(load_library(["CMS125"]), ParquetSource(lake))
>>> result.subjects.height
300
>>> summary = result.summary()
>>> summary.select("measure_id", "group_id").row(0)
('CMS125', 'group-1')
>>> set(result.attrition("CMS125")["population"]) >= {"initial_population", "numerator"}
True
>>> result.measure_reports("summary")[0]["resourceType"]
'MeasureReport'
"""

from engine.compile import compile_measure
from engine.errors import CompileError, EngineError, EvaluationError, MissingValueSetError
from engine.evaluate import EvaluationConfig, EvaluationResult, evaluate
from engine.library import load_library, load_valuesets, summarize
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
    "load_library",
    "load_valuesets",
    "summarize",
]
