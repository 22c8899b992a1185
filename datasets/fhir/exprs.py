"""Polars expression builders for FHIR datatypes: codings, references, extensions, values.

Kept apart from the per-resource mappings so that each mapping reads as a table of ``column = expression``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import polars as pl

from datasets.fhir.systems import UCUM, canonical_system_expr, normalize_code_expr, ucum_unit_expr


def col(name: str, *path: str) -> pl.Expr:
    """``name.path[0].path[1]`` on a struct column."""
    expr = pl.col(name)
    for field in path:
        expr = expr.struct.field(field)
    return expr


def nonempty(expr: pl.Expr) -> pl.Expr:
    """Null for an empty list: a list column is null when the source had nothing, never ``[]``."""
    return pl.when(expr.list.len() > 0).then(expr)


def _canonical_codings(codings: pl.Expr) -> pl.Expr:
    def canon(element: pl.Expr) -> pl.Expr:
        system = canonical_system_expr(element.struct.field("system"))
        return pl.struct(
            system=system,
            code=normalize_code_expr(system, element.struct.field("code")),
            display=element.struct.field("display"),
        )

    kept = codings.list.filter(pl.element().struct.field("code").is_not_null())
    # nonempty before the eval (same result: the eval keeps lengths): the eval then runs once, not twice
    return nonempty(kept).list.eval(canon(pl.element()))


def codings(codings: pl.Expr) -> pl.Expr:
    """A list of Codings -> List(Coding) with canonical systems (null when none has a code)."""
    return _canonical_codings(codings)


def codes(cc: pl.Expr) -> pl.Expr:
    """One CodeableConcept -> List(Coding) with canonical systems (null when it has no coding)."""
    return _canonical_codings(cc.struct.field("coding"))


def codes_many(ccs: pl.Expr) -> pl.Expr:
    """A list of CodeableConcepts -> all their codings in one list (data-model 2.3)."""
    return _canonical_codings(ccs.list.eval(pl.element().struct.field("coding").explode()))


def first_code(cc: pl.Expr) -> pl.Expr:
    """The code of the first coding (status-like CodeableConcepts: clinicalStatus, verificationStatus)."""
    return cc.struct.field("coding").list.first().struct.field("code").str.strip_chars().str.to_lowercase()


def ref_id(reference: pl.Expr, aliases: Mapping[str, str] | None = None) -> pl.Expr:
    """A reference string -> logical id (relative, absolute, versioned, ``urn:uuid:`` and fullUrl aliases)."""
    stripped = reference.str.strip_chars().str.replace(r"/_history/[^/]*$", "")
    logical = stripped.str.extract(r"([^/:]+)$")
    if not aliases:
        return logical
    keys, values = list(aliases), list(aliases.values())
    by_full = reference.replace_strict(keys, values, default=None, return_dtype=pl.String)
    typed = stripped.str.extract(r"([A-Za-z]+/[^/]+)$")
    by_typed = typed.replace_strict(keys, values, default=None, return_dtype=pl.String)
    return pl.coalesce(by_full, by_typed, logical)


def ref_ids(refs: pl.Expr, aliases: Mapping[str, str] | None = None) -> pl.Expr:
    """A list of references -> list of logical ids (null when empty)."""
    return nonempty(refs).list.eval(ref_id(pl.element().struct.field("reference"), aliases))


def _matches(url: pl.Expr, suffixes: tuple[str, ...]) -> pl.Expr:
    cond = pl.lit(False)
    for suffix in suffixes:
        cond = cond | url.str.ends_with(suffix)
    return cond


def extension(ext: pl.Expr, suffixes: tuple[str, ...], value: str) -> pl.Expr:
    """The ``value`` field of the first extension whose url ends with one of ``suffixes``.

    Matching the url's end tolerates the variants seen in the official tests (``qicore-doNotPeform``,
    ``http://qicore-qicore-doNotPerformReason``).
    """
    element = pl.element()
    hits = ext.list.filter(
        _matches(element.struct.field("url"), suffixes) & element.struct.field(value).is_not_null()
    )
    return hits.list.first().struct.field(value)


def extensions(ext: pl.Expr, suffixes: tuple[str, ...]) -> pl.Expr:
    """All extensions whose url ends with one of ``suffixes`` (null when none): repeating extensions."""
    return nonempty(ext.list.filter(_matches(pl.element().struct.field("url"), suffixes)))


def sub_value(extension: pl.Expr, url: str, value: str) -> pl.Expr:
    """The ``value`` of the first sub-extension named ``url`` of one (complex) extension struct."""
    subs = extension.struct.field("extension")
    return subs.list.filter(pl.element().struct.field("url") == url).list.first().struct.field(value)


def sub_extension(ext: pl.Expr, suffix: str) -> pl.Expr:
    """The nested ``extension`` list of the first extension ending with ``suffix`` (race, ethnicity)."""
    return extension(ext, (suffix,), "extension")


def sub_values(subs: pl.Expr, url: str, value: str, field: str | None = None) -> pl.Expr:
    """All ``value`` (optionally ``.field``) of the sub-extensions named ``url``, in one ``list.eval``: an
    empty list when there is none (wrap in :func:`nonempty` for the canonical null)."""
    element = pl.element()
    picked = element.filter(element.struct.field("url") == url).struct.field(value)
    if field is not None:
        picked = picked.struct.field(field)
    return subs.list.eval(picked)


def unit(quantity: pl.Expr) -> pl.Expr:
    """The UCUM unit of a Quantity: its ``code`` when the system is UCUM, else the ``unit`` text mapped."""
    code = quantity.struct.field("code")
    ucum = pl.when((quantity.struct.field("system") == UCUM) & code.is_not_null()).then(code)
    return pl.coalesce(ucum, ucum_unit_expr(pl.coalesce(code, quantity.struct.field("unit"))))


VALUE_TYPES = (
    "Quantity",
    "CodeableConcept",
    "string",
    "boolean",
    "integer",
    "Range",
    "dateTime",
    "Period",
    "time",
    "Ratio",
)


def value_columns(coalesce: Callable[..., pl.Expr] = pl.coalesce) -> dict[str, pl.Expr]:
    """The canonical ``value_*`` columns from the ``value[x]`` choice columns of the current frame.

    ``valueDateTime`` is parsed by the caller (it needs the time registry): it sets ``value_datetime``.
    ``coalesce`` may drop arguments known to be null (the flattener's pruning).
    """
    present = [(pl.col(f"value{t[0].upper()}{t[1:]}").is_not_null(), t) for t in VALUE_TYPES]
    value_type = pl.lit(None, dtype=pl.String)
    for cond, name in reversed(present):
        value_type = pl.when(cond).then(pl.lit(name)).otherwise(value_type)
    qty = pl.col("valueQuantity")
    return {
        "value_type": value_type,
        "value_quantity": coalesce(qty.struct.field("value"), pl.col("valueInteger").cast(pl.Float64)),
        "value_comparator": qty.struct.field("comparator"),
        "value_unit": coalesce(unit(qty), unit(col("valueRange", "low")), unit(col("valueRange", "high"))),
        "value_concept": codes(pl.col("valueCodeableConcept")),
        "value_string": coalesce(pl.col("valueString"), pl.col("valueTime")),
        "value_boolean": pl.col("valueBoolean"),
        "value_low": col("valueRange", "low", "value"),
        "value_high": col("valueRange", "high", "value"),
        "data_absent_reason": codes(pl.col("dataAbsentReason")),
    }
