"""The measure definition language: frozen pydantic models, a YAML loader with positions, semantic checks.

>>> from definitions import load_measure  # doctest: +SKIP
"""

from definitions.diagnostics import DefinitionError, Diagnostic
from definitions.loader import load_library, load_measure, load_measures
from definitions.model import Library, Measure
from definitions.resolved import ResolvedMeasure
from definitions.valuesets import ValueSet, ValueSetLibrary, load_fhir_valuesets, load_valueset_yaml

__all__ = [
    "DefinitionError",
    "Diagnostic",
    "Library",
    "Measure",
    "ResolvedMeasure",
    "ValueSet",
    "ValueSetLibrary",
    "load_fhir_valuesets",
    "load_library",
    "load_measure",
    "load_measures",
    "load_valueset_yaml",
]
