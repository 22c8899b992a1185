"""Golden tests: each bad definition under bad/ reports exactly the problems in its .expected file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from definitions import DefinitionError, load_measure

BAD = Path(__file__).parent / "bad"
REPO = Path(__file__).resolve().parents[2]


def _render(path: Path) -> str:
    with pytest.raises(DefinitionError) as info:
        load_measure(path)
    lines = [str(d) for d in info.value.diagnostics]
    return "\n".join(lines) + f"\n{len(lines)} problem(s)\n"


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_definition_reports_every_problem_with_its_position(path: Path) -> None:
    os.chdir(REPO)  # the expected files name the definition relative to the repository root
    actual = _render(path.relative_to(REPO))
    expected = path.with_suffix(".expected").read_text()
    assert actual == expected


def test_every_problem_is_reported_at_once() -> None:
    os.chdir(REPO)
    with pytest.raises(DefinitionError) as info:
        load_measure(Path("tests/definitions/bad/semantic.yaml"))
    assert len(info.value.diagnostics) == 8
    assert all(d.line > 1 for d in info.value.diagnostics)


def test_library_measures_load() -> None:
    from measures import measure_files

    for path in measure_files():
        resolved = load_measure(path)
        assert resolved.measure.implements.library
        assert resolved.measure.implements.version
