"""The Lambda adapter (Mangum) with real-shaped API Gateway v2 (HTTP API) events: the contract test."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from handlers.lambda_api import build_handler
from handlers.settings import Settings

from .conftest import MEASURE_IDS
from .helpers import patient_bundle


def event(
    method: str, path: str, query: str = "", body: bytes | None = None, b64: bool = False
) -> dict[str, Any]:
    headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com", "accept": "application/fhir+json"}
    payload = None
    if body is not None:
        headers["content-type"] = "application/fhir+json"
        headers["content-length"] = str(len(body))
        payload = base64.b64encode(body).decode() if b64 else body.decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "30/Nov/2026:08:00:00 +0000",
            "timeEpoch": 1795996800000,
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
        },
        "body": payload,
        "isBase64Encoded": b64,
    }


class Context:
    function_name = "measures-api"
    aws_request_id = "req-1"


@pytest.fixture(scope="module")
def handler(plans: list[Any], lake: str) -> Any:
    return build_handler(Settings(data=lake, measures=",".join(MEASURE_IDS)), plans=plans)


def call(handler: Any, ev: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    out = handler(ev, Context())
    assert not out.get("isBase64Encoded"), "FHIR JSON must come back as text"
    return out["statusCode"], out["headers"], json.loads(out["body"])


def test_health(handler: Any) -> None:
    status, _, body = call(handler, event("GET", "/health"))
    assert status == 200 and body["measures"] == list(MEASURE_IDS)


def test_measure_read_and_404(handler: Any) -> None:
    status, headers, body = call(handler, event("GET", "/Measure/CMS125"))
    assert status == 200 and body["id"] == "CMS125"
    assert headers["content-type"].startswith("application/fhir+json")
    status, _, body = call(handler, event("GET", "/Measure/NOPE"))
    assert status == 404 and body["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("b64", [False, True])
def test_evaluate_measure(handler: Any, b64: bool) -> None:
    raw = json.dumps(patient_bundle()).encode()
    status, _, body = call(handler, event("POST", "/Measure/CMS125/$evaluate-measure", body=raw, b64=b64))
    assert status == 200 and body["resourceType"] == "MeasureReport"
    assert body["subject"] == {"reference": "Patient/pat-1"}


def test_evaluate_measures_query_and_lake(handler: Any, lake_tables: dict[str, Any]) -> None:
    raw = json.dumps(patient_bundle()).encode()
    status, _, body = call(
        handler, event("POST", "/Measure/$evaluate-measures", "measure=CMS122&measure=CMS125", body=raw)
    )
    assert status == 200 and body["total"] == 2
    pid = lake_tables["patient"]["patient_id"][0]
    status, _, body = call(handler, event("GET", f"/Patient/{pid}/$evaluate-measures"))
    assert status == 200 and body["total"] == len(MEASURE_IDS)
    status, _, body = call(handler, event("GET", "/Patient/absent/$evaluate-measures"))
    assert status == 404


def test_malformed_body(handler: Any) -> None:
    status, _, body = call(handler, event("POST", "/Measure/CMS125/$evaluate-measure", body=b"{oops"))
    assert status == 400 and body["issue"][0]["expression"] == ["body"]
