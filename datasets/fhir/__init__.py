"""FHIR R4 / US Core / QI-Core ingestion into the canonical tables, and export back to FHIR Bundles."""

from datasets.fhir.bundle import flatten_bundle, flatten_bundles
from datasets.fhir.flatten import FlattenResult, flatten
from datasets.fhir.systems import canonical_system, canonical_system_expr

__all__ = [
    "FlattenResult",
    "canonical_system",
    "canonical_system_expr",
    "flatten",
    "flatten_bundle",
    "flatten_bundles",
]
