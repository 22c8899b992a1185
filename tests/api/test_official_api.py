"""Conformance through the API: every official test case of CMS125, CMS122 and CMS165, POSTed as the Bundle it
is to ``$evaluate-measure`` with the expected report's period, gives the expected population counts.

Expected counts and periods are read by engine.testdeck.load_official_case (as tests/measures/test_official.py
does); the cases allowed to differ are tests/measures/official_skips.yaml's, which must still differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import pytest
from fastapi.testclient import TestClient

from definitions import load_measure
from engine import compile_measure
from engine.testdeck import FHIR_POPULATION, load_official_case, official_valuesets
from tests.measures.official import ECQM, MEASURES, ROOT, SKIPS, case_ids

from .conftest import make_client

CODES = {name: code for code, name in FHIR_POPULATION.items()}

pytestmark = pytest.mark.skipif(not ECQM.is_dir(), reason=f"official eCQM content not found at {ECQM}")


@cache
def _plan(measure: str) -> object:
    valuesets, _ = official_valuesets(ECQM / measure)
    return compile_measure(load_measure(ROOT / "measures" / f"{MEASURES[measure]}.yaml"), valuesets)


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, TestClient]]:
    out = {m: make_client([_plan(m)], measures=m) for m in MEASURES}  # type: ignore[list-item]
    for c in out.values():
        c.__enter__()
    yield out
    for c in out.values():
        c.__exit__(None, None, None)


@pytest.mark.parametrize(("measure", "case"), case_ids(), ids=lambda v: v)
def test_official_case_via_api(clients: dict[str, TestClient], measure: str, case: str) -> None:
    path = ECQM / measure / "tests" / f"{case}.json"
    expected = load_official_case(path)
    assert expected.period is not None and expected.expect
    start, end = expected.period
    r = clients[measure].post(
        f"/Measure/{measure}/$evaluate-measure?periodStart={start}&periodEnd={end}",
        content=path.read_bytes(),
        headers={"content-type": "application/fhir+json"},
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["period"] == {"start": start.isoformat(), "end": end.isoformat()}
    groups = report["group"]
    wrong = []
    for index, populations in expected.expect.items():
        assert isinstance(index, int) and index < len(groups)
        got = {p["code"]["coding"][0]["code"]: p["count"] for p in groups[index]["population"]}
        for name, count in populations.items():
            if got.get(CODES[name], 0) != count:
                wrong.append(f"{groups[index]['id']}.{name} expected {count} got {got.get(CODES[name], 0)}")
    reason = SKIPS.get((measure, case))
    if reason is not None:
        assert wrong, f"{measure} {case} passes via the API now: remove it from official_skips.yaml"
        pytest.skip(f"{measure} {case}: {reason}")
    assert not wrong, f"{case}: {', '.join(wrong)}"
