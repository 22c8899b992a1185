"""Code-system URIs: one canonical URI per system, so data and value sets meet on the same string.

Data and value sets spell the same system several ways (names, ``urn:oid:``, and the aliases the official eCQM
content mixes). Both sides go through :func:`canonical_system` (or :func:`canonical_system_expr`), so the
choice of canonical form only has to be consistent, not "right". The canonical forms are those of the VSAC
expansions (data-model 2.3): CDT is ``http://www.ada.org/cdt``, Source of Payment Typology is
``urn:oid:2.16.840.1.113883.3.221.5`` (``https://nahdo.org/sopt`` maps to it), HCPCS is
``http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets``. ICD-10-CM codes are written dotted (``E66.01``).
"""

from __future__ import annotations

import re

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


# RFC 3986 absolute URI: a scheme, ":", then something without spaces. ``urn:oid:`` needs an OID and
# ``urn:uuid:`` a UUID; ``http(s)`` needs ``//`` and a host.
_SCHEME_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+\Z")
_OID_URN = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+\Z", re.IGNORECASE)
_UUID_URN = re.compile(r"urn:uuid:[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\Z", re.IGNORECASE)
_HTTP_URI = re.compile(r"https?://[^\s/?#]+\S*\Z", re.IGNORECASE)
_VALID: dict[str, bool] = {}


def is_absolute_system(system: str | None) -> bool:
    """Whether a (canonical) code system can name a code system at all: an absolute URI.

    Missing, empty, a name that :func:`canonical_system` does not know (``loinc.org``), ``urn:oid`` without
    an OID, a bare OID: no value set can hold such a coding. A well-formed but unfamiliar URI (a local code
    system) is fine.
    """
    if not system:
        return False
    known = _VALID.get(system)
    if known is not None:
        return known
    lowered = system.lower()
    if lowered.startswith("urn:oid"):
        valid = bool(_OID_URN.match(system))
    elif lowered.startswith("urn:uuid"):
        valid = bool(_UUID_URN.match(system))
    elif lowered.startswith(("http:", "https:")):
        valid = bool(_HTTP_URI.match(system))
    else:
        valid = bool(_SCHEME_URI.match(system))
    if len(_VALID) < 4096:
        _VALID[system] = valid
    return valid


def normalize_code(system: str, code: str) -> str:
    """ICD-10-CM to the dotted form VSAC uses (``E6601`` -> ``E66.01``); other codes verbatim."""
    if system == ICD10CM and "." not in code and len(code) > 3:
        return f"{code[:3]}.{code[3:]}"
    return code


def normalize_code_expr(system: pl.Expr, code: pl.Expr) -> pl.Expr:
    """:func:`normalize_code` on columns; ``system`` must already be canonical.

    One regex replace (a code of more than 3 characters and no dot gets one after the third): fewer
    expression nodes than slicing, which matters on a one-patient Bundle where planning dominates.
    """
    code = code.str.strip_chars()
    return pl.when(system == ICD10CM).then(code.str.replace(_UNDOTTED, "${1}.${2}")).otherwise(code)


_UNDOTTED = r"^([^.]{3})([^.]+)$"


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
