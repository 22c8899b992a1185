"""Code-system URIs as the data stores them: value-set codes go through the same canonicalisation as ingestion
(one alias table, in ``datasets.fhir.systems``), so a CD2/CDT or SOP alias in an expansion still matches."""

from __future__ import annotations

from datasets.fhir.systems import canonical_system

__all__ = ["canonical_system"]
