from __future__ import annotations

from pathlib import Path

import pytest

ECQM = Path(__file__).resolve().parents[2] / "../shared/data/ecqm"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def ecqm_dir() -> Path:
    if not ECQM.is_dir():
        pytest.skip("official eCQM content not present next to the repository")
    return ECQM
