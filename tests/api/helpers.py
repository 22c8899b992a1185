"""Bundles and report readers for the API tests (imported by path: tests use --import-mode=importlib)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def patient_bundle(
    pid: str = "pat-1", *, birth: str = "1960-05-01", gender: str = "female"
) -> dict[str, Any]:
    """A small valid Bundle: one woman with an office visit in 2025 and a mammogram (CMS125 numerator)."""
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "id": pid,
                    "gender": gender,
                    "birthDate": birth,
                    "name": [{"family": "Zyxwvutsrq", "given": ["Secretname"]}],
                }
            },
            {
                "resource": {
                    "resourceType": "Encounter",
                    "id": f"{pid}-enc",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "type": [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]}],
                    "subject": {"reference": f"Patient/{pid}"},
                    "period": {"start": "2025-03-01T10:00:00Z", "end": "2025-03-01T10:30:00Z"},
                }
            },
        ],
    }


def counts(report: dict[str, Any]) -> dict[str, dict[str, int]]:
    """group id -> population code -> count."""
    return {
        g["id"]: {p["code"]["coding"][0]["code"]: int(p["count"]) for p in g.get("population", [])}
        for g in report.get("group", [])
    }


def reports_of(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """measure id -> MeasureReport of a Bundle of reports."""
    out = {}
    for entry in bundle["entry"]:
        report = entry["resource"]
        measure_id = report["measure"].rsplit("/", 1)[-1].split("|", 1)[0]
        out[measure_id] = report
    return out


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
