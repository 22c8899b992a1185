"""Every measure file and shared library loads, validates and passes the semantic checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from definitions import load_measure
from definitions.loader import load_library
from measures import library_files, measure_files

MEASURES = measure_files()


@pytest.mark.parametrize("path", MEASURES, ids=lambda p: p.stem)
def test_measure_loads_and_checks(path: Path) -> None:
    resolved = load_measure(path)  # raises DefinitionError with file:line:col on any problem
    spec = resolved.measure.implements
    assert spec.library and spec.version, "implements must cite the CQL library and version"
    assert resolved.measure.copyright, "the Measure's copyright (abbreviated) must be carried"


@pytest.mark.parametrize("path", library_files(), ids=lambda p: p.stem)
def test_library_loads(path: Path) -> None:
    library, _ = load_library(path)
    assert library.library == path.stem
    assert library.implements, "a shared library cites the CQL library it implements"


@pytest.mark.parametrize("stem", ["cms125", "cms122", "cms165"])
def test_expected_measures_present(stem: str) -> None:
    assert stem in {p.stem for p in MEASURES}


def test_every_library_is_used() -> None:
    used = {name for path in MEASURES for name in load_measure(path).libraries}
    assert {p.stem for p in library_files()} <= used
