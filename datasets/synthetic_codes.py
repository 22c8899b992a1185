"""The project's synthetic value sets (``measures/valuesets/synthetic/*.yaml``), as the generator needs them.

The generator draws every clinical code from these files, so whatever the library measures retrieve by value
set exists in the synthetic world, and a value-set edit changes both sides at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from datasets.fhir.systems import canonical_system

VALUESET_DIR = Path(__file__).resolve().parent.parent / "measures" / "valuesets" / "synthetic"

Coding = tuple[str, str, str]


@dataclass(frozen=True)
class ValueSet:
    url: str
    name: str
    codes: tuple[Coding, ...]


def load_valuesets(directory: Path = VALUESET_DIR) -> dict[str, ValueSet]:
    """Every synthetic value set by name; a name defined twice or an empty value set is an error."""
    found: dict[str, ValueSet] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not isinstance(doc, dict) or doc.get("synthetic") is not True:
            raise ValueError(f"{path}: not a synthetic value-set file (missing 'synthetic: true')")
        for entry in doc.get("valuesets", []):
            # the lake holds canonical code systems (ingestion canonicalises them; so does the generator)
            codes = tuple((canonical_system(str(s)), str(c), str(d)) for s, c, d in entry["codes"])
            name = str(entry["name"])
            if name in found:
                raise ValueError(f"{path}: value set {name!r} defined twice")
            if not codes:
                raise ValueError(f"{path}: value set {name!r} has no codes")
            found[name] = ValueSet(str(entry["url"]), name, codes)
    return found
