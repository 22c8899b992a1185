"""Code-system URIs: one canonical URI per system, so data and value sets meet on the same string.

Data and value sets spell the same system several ways (names, ``urn:oid:``, and the aliases the official eCQM
content mixes). Both sides go through :func:`canonical_system` (or :func:`canonical_system_expr`), so the
choice of canonical form only has to be consistent, not "right". The canonical forms are those of the VSAC
expansions (data-model 2.3): CDT is ``http://www.ada.org/cdt``, Source of Payment Typology is
``urn:oid:2.16.840.1.113883.3.221.5`` (``https://nahdo.org/sopt`` maps to it), HCPCS is
``http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets``. ICD-10-CM codes are written dotted (``E66.01``).
"""

from __future__ import annotations

import polars as pl

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
NDC = "http://hl7.org/fhir/sid/ndc"
CDT = "http://www.ada.org/cdt"
CDCREC = "urn:oid:2.16.840.1.113883.6.238"
SOP = "urn:oid:2.16.840.1.113883.3.221.5"
ACTCODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
UCUM = "http://unitsofmeasure.org"

_ALIASES: dict[str, tuple[str, ...]] = {
    SNOMED: ("SNOMED-CT", "SNOMED", "SNOMEDCT", "SNOMED CT", "urn:oid:2.16.840.1.113883.6.96"),
    ICD10CM: ("ICD10CM", "ICD-10-CM", "urn:oid:2.16.840.1.113883.6.90"),
    ICD10PCS: ("ICD10PCS", "ICD-10-PCS", "urn:oid:2.16.840.1.113883.6.4"),
    CPT: ("CPT4", "CPT", "urn:oid:2.16.840.1.113883.6.12"),
    HCPCS: ("HCPCS", "http://www.nlm.nih.gov/research/umls/hcpcs", "urn:oid:2.16.840.1.113883.6.285"),
    LOINC: ("LOINC", "urn:oid:2.16.840.1.113883.6.1"),
    RXNORM: ("RXNORM", "urn:oid:2.16.840.1.113883.6.88"),
    CVX: ("CVX", "urn:oid:2.16.840.1.113883.12.292"),
    NDC: ("NDC", "urn:oid:2.16.840.1.113883.6.69"),
    CDT: ("CDT", "http://terminology.hl7.org/CodeSystem/CD2", "urn:oid:2.16.840.1.113883.6.13"),
    CDCREC: ("CDCREC", "urn:oid:2.16.840.1.113883.6.238"),
    SOP: ("SOP", "https://nahdo.org/sopt", "http://nahdo.org/sopt"),
    ACTCODE: ("ACTCODE", "V3-ACTCODE", "urn:oid:2.16.840.1.113883.5.4"),
    UCUM: ("UCUM",),
}

# Lower-cased alias (and canonical URI) -> canonical URI. Lookups ignore case and a trailing slash.
ALIAS_TO_CANONICAL: dict[str, str] = {
    alias.lower(): canonical for canonical, aliases in _ALIASES.items() for alias in (canonical, *aliases)
}

_KEYS = pl.Series(list(ALIAS_TO_CANONICAL), dtype=pl.String)
_VALUES = pl.Series(list(ALIAS_TO_CANONICAL.values()), dtype=pl.String)


def _key(uri: str) -> str:
    return uri.strip().rstrip("/").lower()


def canonical_system(uri: str) -> str:
    """The canonical URI of a code system; an unknown URI comes back unchanged (stripped)."""
    return ALIAS_TO_CANONICAL.get(_key(uri), uri.strip())


def canonical_system_expr(expr: pl.Expr) -> pl.Expr:
    """:func:`canonical_system` as a polars expression (vectorized; nulls stay null)."""
    key = expr.str.strip_chars().str.strip_chars_end("/").str.to_lowercase()
    return key.replace_strict(_KEYS, _VALUES, default=expr.str.strip_chars(), return_dtype=pl.String)


def normalize_code(system: str, code: str) -> str:
    """ICD-10-CM to the dotted form VSAC uses (``E6601`` -> ``E66.01``); other codes verbatim."""
    if system == ICD10CM and "." not in code and len(code) > 3:
        return f"{code[:3]}.{code[3:]}"
    return code


def normalize_code_expr(system: pl.Expr, code: pl.Expr) -> pl.Expr:
    """:func:`normalize_code` on columns; ``system`` must already be canonical."""
    code = code.str.strip_chars()
    undotted = (system == ICD10CM) & ~code.str.contains(".", literal=True) & (code.str.len_chars() > 3)
    return pl.when(undotted).then(code.str.slice(0, 3) + "." + code.str.slice(3)).otherwise(code)


_UNITS = {
    "mmhg": "mm[Hg]",
    "mm hg": "mm[Hg]",
    "mm[hg]": "mm[Hg]",
    "lbs": "[lb_av]",
    "lb": "[lb_av]",
    "in": "[in_i]",
    "inch": "[in_i]",
    "inches": "[in_i]",
    "percent": "%",
    "kg/m^2": "kg/m2",
    "beats/minute": "/min",
    "bpm": "/min",
    "breaths/minute": "/min",
    "degf": "[degF]",
    "degc": "Cel",
}


def ucum_unit_expr(unit: pl.Expr) -> pl.Expr:
    """Common free-text units (Synthea ``UNITS``, display strings) to their UCUM code; others unchanged."""
    keys = list(_UNITS)
    return unit.str.to_lowercase().replace_strict(
        keys, [_UNITS[k] for k in keys], default=unit, return_dtype=pl.String
    )
