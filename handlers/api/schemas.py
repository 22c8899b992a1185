"""Request parsing (a FHIR Bundle, or Parameters around one) and the response shapes shown at ``/docs``.

Bodies are parsed by hand rather than by pydantic so that every structural error becomes a 400
OperationOutcome naming the element (``Parameters.parameter[2].valueDate``), and so that resources reach the
flattener untouched. The pydantic models below document the responses; they are permissive (FHIR resources
carry many more elements than are listed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from handlers.api.errors import ApiError

PARAMETER_NAMES = ("periodStart", "periodEnd", "reportType", "subject", "additionalData", "measure")
REPORT_TYPES = ("individual", "subject")  # "subject" is the R5 name of the same thing


@dataclass(frozen=True)
class EvaluateRequest:
    """What ``$evaluate-measure`` needs: the patient data and the optional period and subject."""

    bundle: dict[str, Any]
    period_start: date | None = None
    period_end: date | None = None
    subject: str | None = None
    measures: tuple[str, ...] = ()


def parse_date(text: Any, where: str) -> date:
    """A FHIR date or dateTime -> its date (the period is in whole days)."""
    if not isinstance(text, str) or len(text) < 10:
        raise ApiError(400, f"{where}: expected a date (YYYY-MM-DD) or dateTime", expression=[where])
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise ApiError(400, f"{where}: not a valid date", expression=[where]) from None


def subject_id(text: Any, where: str) -> str:
    """``Patient/x`` or ``x`` -> ``x``."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, f"{where}: expected a Patient reference", expression=[where])
    ref = text.strip()
    if "/" in ref:
        rtype, _, rid = ref.rpartition("/")
        if not rtype.endswith("Patient") or not rid:
            raise ApiError(400, f"{where}: the subject must be a Patient reference", expression=[where])
        ref = rid
    return ref


def load_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(
            400, "the request body is empty: expected a FHIR Bundle or Parameters", expression=["body"]
        )
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 JSON", expression=["body"]) from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", expression=["body"]
        ) from None
    except RecursionError:
        raise ApiError(400, "JSON nested too deeply", expression=["body"]) from None


def check_bundle(bundle: Any, where: str = "Bundle") -> dict[str, Any]:
    """Structural checks of a Bundle the flattener relies on; raises 400 naming the first bad element."""
    if not isinstance(bundle, dict):
        raise ApiError(400, f"{where}: expected a JSON object", expression=[where])
    if bundle.get("resourceType") != "Bundle":
        raise ApiError(400, f"{where}.resourceType: expected 'Bundle'", expression=[f"{where}.resourceType"])
    entries = bundle.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ApiError(400, f"{where}.entry: expected an array", expression=[f"{where}.entry"])
    for i, entry in enumerate(entries):
        path = f"{where}.entry[{i}]"
        if not isinstance(entry, dict):
            raise ApiError(400, f"{path}: expected an object", expression=[path])
        if "fullUrl" in entry and not isinstance(entry["fullUrl"], str):
            raise ApiError(400, f"{path}.fullUrl: expected a string", expression=[f"{path}.fullUrl"])
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            raise ApiError(
                400, f"{path}.resource: expected a resource object", expression=[f"{path}.resource"]
            )
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            raise ApiError(
                400,
                f"{path}.resource.resourceType: expected a resource type",
                expression=[f"{path}.resource.resourceType"],
            )
        if "id" in resource and not isinstance(resource["id"], str):
            raise ApiError(
                400, f"{path}.resource.id: expected a string ({rtype})", expression=[f"{path}.resource.id"]
            )
    return bundle


def _value(param: Mapping[str, Any], where: str, *kinds: str) -> tuple[str, Any]:
    for kind in kinds:
        if kind in param:
            return f"{where}.{kind}", param[kind]
    raise ApiError(400, f"{where}: expected one of {', '.join(kinds)}", expression=[where])


def parse_parameters(params: dict[str, Any]) -> EvaluateRequest:
    """FHIR Parameters of ``$evaluate-measure``."""
    items = params.get("parameter", [])
    if not isinstance(items, list):
        raise ApiError(400, "Parameters.parameter: expected an array", expression=["Parameters.parameter"])
    start = end = None
    subject = None
    bundles: list[dict[str, Any]] = []
    measures: list[str] = []
    for i, param in enumerate(items):
        where = f"Parameters.parameter[{i}]"
        if not isinstance(param, dict):
            raise ApiError(400, f"{where}: expected an object", expression=[where])
        name = param.get("name")
        if name not in PARAMETER_NAMES:
            raise ApiError(
                400,
                f"{where}.name: unsupported parameter (supported: {', '.join(PARAMETER_NAMES)})",
                expression=[f"{where}.name"],
            )
        if name in ("periodStart", "periodEnd"):
            path, value = _value(param, where, "valueDate", "valueDateTime", "valueString")
            day = parse_date(value, path)
            start, end = (day, end) if name == "periodStart" else (start, day)
        elif name == "reportType":
            path, value = _value(param, where, "valueCode", "valueString")
            if value not in REPORT_TYPES:
                raise ApiError(400, f"{path}: only reportType 'individual' is supported", expression=[path])
        elif name == "subject":
            path, value = _value(param, where, "valueString", "valueReference")
            if isinstance(value, dict):
                value, path = value.get("reference"), f"{path}.reference"
            subject = subject_id(value, path)
        elif name == "measure":
            path, value = _value(param, where, "valueString", "valueCanonical", "valueId")
            if not isinstance(value, str) or not value:
                raise ApiError(400, f"{path}: expected a measure id", expression=[path])
            measures.append(value.rsplit("/", 1)[-1].split("|", 1)[0])
        else:
            bundles.append(check_bundle(param.get("resource"), f"{where}.resource"))
    if not bundles:
        raise ApiError(
            400,
            "Parameters: additionalData (a Bundle with the patient's resources) is required",
            expression=["Parameters.parameter"],
        )
    if len(bundles) == 1:
        bundle = bundles[0]
    else:
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [e for b in bundles for e in (b.get("entry") or [])],
        }
    return EvaluateRequest(bundle, start, end, subject, tuple(measures))


def parse_body(body: bytes) -> EvaluateRequest:
    """A Bundle or Parameters body -> :class:`EvaluateRequest` (400 OperationOutcome when malformed)."""
    data = load_json(body)
    if not isinstance(data, dict):
        raise ApiError(400, "expected a FHIR resource (a JSON object)", expression=["body"])
    rtype = data.get("resourceType")
    if rtype == "Bundle":
        return EvaluateRequest(check_bundle(data))
    if rtype == "Parameters":
        return parse_parameters(data)
    raise ApiError(400, "resourceType: expected 'Bundle' or 'Parameters'", expression=["resourceType"])


# ------------------------------------------------------------------------------------------ docs models

_OPEN = ConfigDict(extra="allow")


class Coding(BaseModel):
    model_config = _OPEN
    system: str | None = None
    code: str | None = None


class CodeableConcept(BaseModel):
    model_config = _OPEN
    coding: list[Coding] = Field(default_factory=list)
    text: str | None = None


class OperationOutcomeIssue(BaseModel):
    model_config = _OPEN
    severity: str
    code: str
    diagnostics: str | None = None
    expression: list[str] | None = None


class OperationOutcome(BaseModel):
    model_config = _OPEN
    resourceType: str = "OperationOutcome"
    issue: list[OperationOutcomeIssue]


class ReportPopulation(BaseModel):
    model_config = _OPEN
    code: CodeableConcept
    count: int


class ReportGroup(BaseModel):
    model_config = _OPEN
    id: str
    population: list[ReportPopulation]


class MeasureReport(BaseModel):
    model_config = _OPEN
    resourceType: str = "MeasureReport"
    id: str
    status: str
    type: str
    measure: str
    subject: dict[str, str]
    period: dict[str, str]
    group: list[ReportGroup]
    evaluatedResource: list[dict[str, str]] = Field(default_factory=list)


class Measure(BaseModel):
    model_config = _OPEN
    resourceType: str = "Measure"
    id: str
    url: str
    version: str
    title: str
    status: str


class BundleEntry(BaseModel):
    model_config = _OPEN
    fullUrl: str | None = None
    resource: dict[str, Any]


class Bundle(BaseModel):
    model_config = _OPEN
    resourceType: str = "Bundle"
    type: str
    total: int | None = None
    entry: list[BundleEntry] = Field(default_factory=list)


class Health(BaseModel):
    status: str
    measures: list[str]
    library_hash: str | None = None
    lake: str | None = None


# OpenAPI request body for the evaluate operations (the body is read raw; see parse_body).
EVALUATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": {"$ref": "#/components/schemas/EvaluateInput"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/EvaluateInput"}},
        },
    }
}
EVALUATE_INPUT_SCHEMA = {
    "title": "EvaluateInput",
    "description": "A FHIR Bundle of one patient's resources, or FHIR Parameters (periodStart, periodEnd, "
    "reportType=individual, subject, additionalData=Bundle).",
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle", "Parameters"]},
        "type": {"type": "string"},
        "entry": {"type": "array", "items": {"type": "object"}},
        "parameter": {"type": "array", "items": {"type": "object"}},
    },
}
