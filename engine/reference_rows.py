"""Row-level tests for the reference interpreter: code matching, quantities and units (spec sections 3 and 6).

Kept apart from the walk over the models so each rule reads on its own; everything here is one row at a time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any

from definitions.model import CodeRef, Compare
from definitions.valuesets import canonical_url
from engine.units import CONVERSIONS

LOINC = "http://loinc.org"
BP_CODE = (LOINC, "85354-9")
# Profiles whose instances carry a fixed code (spec section 3: blood pressure is 85354-9).
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip


def codings(value: Any) -> list[tuple[str, str]]:
    """The (system, code) pairs of a coding-list cell (display ignored); empty for null."""
    if value is None:
        return []
    out: list[tuple[str, str]] = []
    for coding in value:
        if coding is None:
            continue
        system, code = coding.get("system"), coding.get("code")
        if system is not None and code is not None:
            out.append((str(system), str(code)))
    return out


def cell_matches(value: Any, codes: Iterable[tuple[str, str]]) -> bool:
    """A coding-list cell matches when any coding is in ``codes``; a string cell when it equals any code."""
    wanted = set(codes)
    if value is None:
        return False
    if isinstance(value, str):
        return value in {code for _, code in wanted}
    return any(pair in wanted for pair in codings(value))


def code_refs(refs: Iterable[CodeRef]) -> set[tuple[str, str]]:
    return {(ref.system, ref.code) for ref in refs}


def profile_matches(row: dict[str, Any], code_column: str, url: str) -> bool:
    profiles = row.get("profiles") or []
    return url in profiles


def not_done_matches(row: dict[str, Any], urls: Iterable[str]) -> bool:
    value = row.get("not_done_valueset")
    return value is not None and canonical_url(str(value)) in {canonical_url(u) for u in urls}


def convert(value: float | None, unit: str | None, target: str | None) -> float | None:
    """``value`` in ``unit`` expressed in ``target``; None (unknown) when missing or not convertible.

    No target: the raw number. Identical units need no table. A row without a unit is taken to be in the
    target unit (spec section 6: sources often omit the unit of a percentage).
    """
    if value is None:
        return None
    if target is None or unit == target or unit is None:
        return float(value)
    source, goal = CONVERSIONS.get(unit), CONVERSIONS.get(target)
    if source is None or goal is None or source[0] != goal[0]:
        return None
    return float(value) * source[1] / goal[1]


def compare_number(value: float | None, compare: Compare) -> bool:
    """A numeric comparison that fails on an unknown value (``is_null``/``not_null`` test for it)."""
    if compare.op == "is_null":
        return value is None
    if compare.op == "not_null":
        return value is not None
    if value is None:
        return False
    return _OPS[compare.op](value, compare.value)


def value_source(
    row: dict[str, Any], components: list[dict[str, Any]], component: CodeRef | None
) -> dict[str, Any] | None:
    """Where a quantity lives: the row, or its component with the code (lowest ``component_ix`` first)."""
    if component is None:
        return row
    wanted = [(component.system, component.code)]
    found = [c for c in components if cell_matches(c.get("code"), wanted)]
    found.sort(key=lambda c: (c.get("component_ix") is None, c.get("component_ix") or 0))
    return found[0] if found else None


def quantity(
    row: dict[str, Any], components: list[dict[str, Any]], component: CodeRef | None, unit: str | None
) -> float | None:
    """The row's (or its component's) ``value_quantity`` converted to ``unit``; None when unknown."""
    source = value_source(row, components, component)
    if source is None:
        return None
    return convert(source.get("value_quantity"), source.get("value_unit"), unit)
