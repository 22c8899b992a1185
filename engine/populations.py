"""Population membership per scoring type, from each population's own criterion.

Source: HL7 FHIR Clinical Reasoning / Quality Measure IG, "Measure population criteria" (proportion: a
numerator member must be in the denominator and not excluded; an exception applies only to denominator
members not excluded and not in the numerator; ratio and continuous-variable populations nest the same way).
Unknown (null) criteria are false here, at the population boundary, and nowhere earlier.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

PROPORTION_POPULATIONS = (
    "initial_population",
    "denominator",
    "denominator_exclusion",
    "denominator_exception",
    "numerator",
    "numerator_exclusion",
)
CV_POPULATIONS = ("initial_population", "measure_population", "measure_population_exclusion")

# FHIR measure-population codes (http://terminology.hl7.org/CodeSystem/measure-population).
FHIR_CODES: dict[str, str] = {
    "initial_population": "initial-population",
    "denominator": "denominator",
    "denominator_exclusion": "denominator-exclusion",
    "denominator_exception": "denominator-exception",
    "numerator": "numerator",
    "numerator_exclusion": "numerator-exclusion",
    "measure_population": "measure-population",
    "measure_population_exclusion": "measure-population-exclusion",
}


def _true(criteria: Mapping[str, pl.Expr], name: str, default: bool) -> pl.Expr:
    expr = criteria.get(name)
    return pl.lit(default) if expr is None else expr.fill_null(False)


def cascade(scoring: str, criteria: Mapping[str, pl.Expr]) -> dict[str, pl.Expr]:
    """Membership expressions of every population of the scoring type, nested as the spec requires."""
    ip = _true(criteria, "initial_population", False)
    if scoring == "cohort":
        return {"initial_population": ip}
    if scoring == "continuous_variable":
        mp = ip & _true(criteria, "measure_population", True)
        mpx = mp & _true(criteria, "measure_population_exclusion", False)
        return {"initial_population": ip, "measure_population": mp, "measure_population_exclusion": mpx}
    denom = ip & _true(criteria, "denominator", True)
    denex = denom & _true(criteria, "denominator_exclusion", False)
    if scoring == "ratio":
        numer = ip & _true(criteria, "numerator", False)
        numex = numer & _true(criteria, "numerator_exclusion", False)
        return {
            "initial_population": ip,
            "denominator": denom,
            "denominator_exclusion": denex,
            "denominator_exception": pl.lit(False),
            "numerator": numer,
            "numerator_exclusion": numex,
        }
    numer = denom & denex.not_() & _true(criteria, "numerator", False)
    numex = numer & _true(criteria, "numerator_exclusion", False)
    denexcep = denom & denex.not_() & numer.not_() & _true(criteria, "denominator_exception", False)
    return {
        "initial_population": ip,
        "denominator": denom,
        "denominator_exclusion": denex,
        "denominator_exception": denexcep,
        "numerator": numer,
        "numerator_exclusion": numex,
    }
