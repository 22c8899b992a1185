"""Linear UCUM unit conversions, enough for the quantities measures compare (mass, length, volume, time,
pressure, percent). A pair of units outside one table is not convertible: the value is unknown, never guessed."""

from __future__ import annotations

# unit -> (dimension, factor to the dimension's base unit)
CONVERSIONS: dict[str, tuple[str, float]] = {
    "%": ("percent", 1.0),
    "mm[Hg]": ("pressure", 1.0),
    "mmHg": ("pressure", 1.0),
    "kg": ("mass", 1000.0),
    "g": ("mass", 1.0),
    "mg": ("mass", 0.001),
    "ug": ("mass", 1e-6),
    "[lb_av]": ("mass", 453.59237),
    "lb": ("mass", 453.59237),
    "m": ("length", 100.0),
    "cm": ("length", 1.0),
    "mm": ("length", 0.1),
    "[in_i]": ("length", 2.54),
    "in": ("length", 2.54),
    "L": ("volume", 1000.0),
    "dL": ("volume", 100.0),
    "mL": ("volume", 1.0),
    "a": ("time", 525960.0),
    "mo": ("time", 43830.0),
    "wk": ("time", 10080.0),
    "d": ("time", 1440.0),
    "h": ("time", 60.0),
    "min": ("time", 1.0),
    "s": ("time", 1 / 60),
    "kg/m2": ("bmi", 1.0),
    "mg/dL": ("concentration_mass", 1.0),
    "g/dL": ("concentration_mass", 1000.0),
    "mmol/mol": ("hba1c_ifcc", 1.0),
    "{score}": ("score", 1.0),
    "1": ("unity", 1.0),
}


def factor(from_unit: str | None, to_unit: str) -> float | None:
    """Multiplier that turns a value in ``from_unit`` into ``to_unit``; None when not convertible.

    A value without a unit is taken to be in the target unit (many sources omit the unit of a percentage).
    """
    if from_unit is None or from_unit == to_unit:
        return 1.0
    source = CONVERSIONS.get(from_unit)
    target = CONVERSIONS.get(to_unit)
    if source is None or target is None or source[0] != target[0]:
        return None
    return source[1] / target[1]
