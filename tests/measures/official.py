"""The official eCQM test cases the library covers, and the cases allowed to differ: one list for the engine's
conformance test and the API's."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ECQM = ROOT / ".." / "shared" / "data" / "ecqm"
# every library measure whose official test cases are in ../shared/data/ecqm
MEASURES = {
    path.stem.upper(): path.stem
    for path in sorted((ROOT / "measures").glob("cms*.yaml"))
    if (ECQM / path.stem.upper() / "tests").is_dir()
}
SKIPS = {
    (s["measure"], s["case"]): s["reason"]
    for s in yaml.safe_load((Path(__file__).parent / "official_skips.yaml").read_text()) or []
}


def case_ids() -> list[tuple[str, str]]:
    """(measure, case id) of every official test case of the covered measures."""
    return [(m, p.stem) for m in MEASURES for p in sorted((ECQM / m / "tests").glob("*.json"))]
