"""Small builders for hand-written FHIR resources in tests."""

from __future__ import annotations

from typing import Any


def bundle(*resources: dict[str, Any], full_urls: list[str] | None = None) -> dict[str, Any]:
    urls = full_urls or [f"http://x.org/fhir/{r['resourceType']}/{r.get('id')}" for r in resources]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": u, "resource": r} for u, r in zip(urls, resources, strict=True)],
    }


def patient(pid: str = "p1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970-06-15", **extra}


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def obs(oid: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": cc("http://loinc.org", "1234-5"),
        **extra,
    }
