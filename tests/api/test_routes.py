"""Every route and every error of the API, through the ASGI test client."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from .conftest import MEASURE_IDS, make_client
from .helpers import counts, dumps, patient_bundle, reports_of

FHIR = "application/fhir+json"


def outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"] and all(i["severity"] == "error" for i in body["issue"])
    return body


def parameters(bundle: dict[str, Any], **values: Any) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "additionalData", "resource": bundle}]
    for name, (kind, value) in values.items():
        params.append({"name": name, kind: value})
    return {"resourceType": "Parameters", "parameter": params}


# ------------------------------------------------------------------------------------------ happy paths


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["measures"] == list(MEASURE_IDS) and body["lake"] == "configured"


def test_measure_list_and_read(client: TestClient) -> None:
    r = client.get("/Measure")
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR)
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == list(MEASURE_IDS)
    one = client.get("/Measure/cms125").json()  # ids are case-insensitive
    assert one["resourceType"] == "Measure" and one["id"] == "CMS125"
    assert one["scoring"]["coding"][0]["code"] == "proportion"
    codes = [p["code"]["coding"][0]["code"] for p in one["group"][0]["population"]]
    assert "initial-population" in codes and "numerator" in codes


def test_evaluate_measure_with_a_bundle(client: TestClient) -> None:
    r = client.post("/Measure/CMS125/$evaluate-measure", json=patient_bundle())
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["resourceType"] == "MeasureReport" and report["type"] == "individual"
    assert report["subject"] == {"reference": "Patient/pat-1"}
    assert report["period"] == {"start": "2025-01-01", "end": "2025-12-31"}
    assert set(counts(report)["group-1"].values()) <= {0, 1}
    refs = [e["reference"] for e in report["evaluatedResource"]]
    assert "Patient/pat-1" in refs and "Encounter/pat-1-enc" in refs
    reasons = [e for e in report["extension"] if e["url"].endswith("criterion-result")]
    assert reasons, "per-criterion reasons are reported"


def test_evaluate_measure_with_parameters_and_period(client: TestClient) -> None:
    body = parameters(
        patient_bundle(),
        periodStart=("valueDate", "2024-01-01"),
        periodEnd=("valueDate", "2024-12-31"),
        reportType=("valueCode", "individual"),
        subject=("valueString", "Patient/pat-1"),
    )
    r = client.post("/Measure/CMS125/$evaluate-measure", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["period"] == {"start": "2024-01-01", "end": "2024-12-31"}


def test_period_from_query_parameters(client: TestClient) -> None:
    r = client.post(
        "/Measure/CMS125/$evaluate-measure?periodStart=2023-01-01&periodEnd=2023-12-31", json=patient_bundle()
    )
    assert r.status_code == 200 and r.json()["period"] == {"start": "2023-01-01", "end": "2023-12-31"}


def test_evaluate_measures_all_and_selected(client: TestClient) -> None:
    every = client.post("/Measure/$evaluate-measures", json=patient_bundle())
    assert every.status_code == 200, every.text
    assert sorted(reports_of(every.json())) == list(MEASURE_IDS)
    some = client.post("/Measure/$evaluate-measures?measure=CMS165&measure=cms122", json=patient_bundle())
    assert sorted(reports_of(some.json())) == ["CMS122", "CMS165"]


def test_several_patients_need_a_subject(client: TestClient) -> None:
    two = patient_bundle("a")
    two["entry"] += patient_bundle("b")["entry"]
    outcome(client.post("/Measure/CMS125/$evaluate-measure", json=two), 422)
    r = client.post("/Measure/CMS125/$evaluate-measure?subject=Patient/b", json=two)
    assert r.status_code == 200 and r.json()["subject"]["reference"] == "Patient/b"
    refs = [e["reference"] for e in r.json()["evaluatedResource"]]
    assert "Encounter/a-enc" not in refs
    outcome(client.post("/Measure/CMS125/$evaluate-measure?subject=Patient/zz", json=two), 422)


def test_lake_patient(client: TestClient, lake_tables: dict[str, Any]) -> None:
    pid = lake_tables["patient"]["patient_id"][0]
    r = client.get(f"/Patient/{pid}/$evaluate-measures")
    assert r.status_code == 200, r.text
    reports = reports_of(r.json())
    assert sorted(reports) == list(MEASURE_IDS)
    assert all(rep["subject"]["reference"] == f"Patient/{pid}" for rep in reports.values())
    one = client.get(f"/Patient/{pid}/$evaluate-measures?measure=CMS125")
    assert list(reports_of(one.json())) == ["CMS125"]


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/Measure/{measure_id}/$evaluate-measure" in spec["paths"]
    assert "EvaluateInput" in spec["components"]["schemas"]


# ------------------------------------------------------------------------------------------ errors


def test_unknown_measure_404(client: TestClient) -> None:
    outcome(client.get("/Measure/CMS999"), 404)
    outcome(client.post("/Measure/CMS999/$evaluate-measure", json=patient_bundle()), 404)
    outcome(client.post("/Measure/$evaluate-measures?measure=CMS999", json=patient_bundle()), 404)


def test_unknown_patient_404(client: TestClient) -> None:
    body = outcome(client.get("/Patient/nobody-here/$evaluate-measures"), 404)
    assert "Patient/nobody-here" in body["issue"][0]["diagnostics"]


def test_unknown_route_404(client: TestClient) -> None:
    outcome(client.get("/Nothing"), 404)


def test_no_lake_configured_404(plans: list[Any]) -> None:
    with make_client(plans) as c:
        outcome(c.get("/Patient/x/$evaluate-measures"), 404)


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b"[1, 2]", "body"),
        (b'{"resourceType": "Patient"}', "resourceType"),
        (b'{"resourceType": "Bundle", "entry": {}}', "Bundle.entry"),
        (b'{"resourceType": "Bundle", "entry": [3]}', "Bundle.entry[0]"),
        (b'{"resourceType": "Bundle", "entry": [{"resource": 1}]}', "Bundle.entry[0].resource"),
        (b'{"resourceType": "Bundle", "entry": [{"resource": {}}]}', "Bundle.entry[0].resource.resourceType"),
        (
            b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "id": 5}}]}',
            "Bundle.entry[0].resource.id",
        ),
        (b'{"resourceType": "Parameters", "parameter": []}', "Parameters.parameter"),
        (b'{"resourceType": "Parameters", "parameter": [{"name": "bogus"}]}', "Parameters.parameter[0].name"),
    ],
)
def test_malformed_bodies_400(client: TestClient, body: bytes, expression: str) -> None:
    r = client.post("/Measure/CMS125/$evaluate-measure", content=body, headers={"content-type": FHIR})
    issue = outcome(r, 400)["issue"][0]
    assert issue["code"] == "invalid"
    assert issue["expression"] == [expression]


def test_invalid_parameters_name_the_element(client: TestClient) -> None:
    bad_date = parameters(patient_bundle(), periodStart=("valueDate", "2025-02-30"))
    issue = outcome(client.post("/Measure/CMS125/$evaluate-measure", json=bad_date), 400)["issue"][0]
    assert issue["expression"] == ["Parameters.parameter[1].valueDate"]
    summary = parameters(patient_bundle(), reportType=("valueCode", "summary"))
    issue = outcome(client.post("/Measure/CMS125/$evaluate-measure", json=summary), 400)["issue"][0]
    assert issue["expression"] == ["Parameters.parameter[1].valueCode"]
    backwards = parameters(
        patient_bundle(), periodStart=("valueDate", "2025-12-31"), periodEnd=("valueDate", "2025-01-01")
    )
    outcome(client.post("/Measure/CMS125/$evaluate-measure", json=backwards), 400)
    outcome(
        client.post("/Measure/CMS125/$evaluate-measure?periodStart=yesterday", json=patient_bundle()), 400
    )


def test_flattener_rejections_422(client: TestClient) -> None:
    bundle = patient_bundle()
    bundle["entry"][1]["resource"]["period"]["start"] = "2025-13-45"
    body = outcome(client.post("/Measure/CMS125/$evaluate-measure", json=bundle), 422)
    rejected = [i for i in body["issue"] if "Encounter/pat-1-enc" in i["diagnostics"]]
    assert rejected and "period.start" in rejected[0]["diagnostics"]
    assert rejected[0]["expression"] == ["Bundle.entry[1].resource"]


def test_no_patient_422(client: TestClient) -> None:
    bundle = patient_bundle()
    bundle["entry"] = bundle["entry"][1:]
    outcome(client.post("/Measure/CMS125/$evaluate-measure", json=bundle), 422)


def test_body_limit_413(client: TestClient) -> None:
    big = patient_bundle()
    big["entry"][0]["resource"]["text"] = {"div": "x" * 250_000}
    outcome(client.post("/Measure/CMS125/$evaluate-measure", content=dumps(big)), 413)

    def chunks() -> Any:  # no Content-Length: the streamed size is checked
        yield b'{"resourceType": "Bundle", "entry": ['
        for _ in range(40):
            yield b" " * 10_000
        yield b"]}"

    outcome(client.post("/Measure/CMS125/$evaluate-measure", content=chunks()), 413)


def test_api_key_and_bearer(plans: list[Any]) -> None:
    with make_client(plans, api_key="s3cret-key") as c:
        assert c.get("/health").status_code == 200  # liveness stays open
        r = c.get("/Measure")
        outcome(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        outcome(c.get("/Measure", headers={"X-API-Key": "wrong"}), 401)
        outcome(c.get("/Measure", headers={"Authorization": "Bearer wrong"}), 401)
        assert c.get("/Measure", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/Measure", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        r = c.post(
            "/Measure/CMS125/$evaluate-measure", json=patient_bundle(), headers={"X-API-Key": "s3cret-key"}
        )
        assert r.status_code == 200


def test_no_patient_data_in_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.post("/Measure/CMS125/$evaluate-measure", json=patient_bundle(birth="1951-07-19"))
    bad = patient_bundle(birth="1951-07-19")
    bad["entry"][1]["resource"]["period"]["start"] = "2025-13-45"
    client.post("/Measure/CMS125/$evaluate-measure", json=bad)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "CMS125" in text  # the access log names the route
    for secret in ("Zyxwvutsrq", "Secretname", "1951-07-19", "99213"):
        assert secret not in text
