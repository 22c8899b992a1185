"""Every official eCQM test Bundle flattens with no rejected record (MeasureReports are skipped)."""

from __future__ import annotations

import json
from pathlib import Path

from datasets.fhir import flatten_bundles


def test_all_official_bundles_flatten_without_rejects(ecqm_dir: Path) -> None:
    files = sorted(ecqm_dir.glob("*/tests/*.json"))
    assert len(files) > 600
    result = flatten_bundles(
        [(json.loads(f.read_bytes()), f"{f.parent.parent.name}/{f.stem}") for f in files]
    )
    assert result.rejected.height == 0, result.rejected
    assert result.tables["patient"].height == len(files)
    # Two Observations are entered-in-error in the official tests: dropped on purpose and counted.
    assert result.dropped_counts == {"observation": 2}
    # Every event points at a patient that exists.
    patients = set(result.tables["patient"]["patient_id"])
    for name, frame in result.tables.items():
        if name != "patient" and frame.height:
            assert set(frame["patient_id"]) <= patients, name
    # References by fullUrl id resolve to the resources' logical ids (CMS159 case).
    enc_ids = set(result.tables["encounter"]["id"])
    cond = result.tables["condition"].filter(result.tables["condition"]["encounter_id"].is_not_null())
    assert set(cond["encounter_id"]) <= enc_ids | {None}
