"""Routes, following the FHIR ``$evaluate-measure`` convention. Responses are ``application/fhir+json``."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from handlers.api import reports, service
from handlers.api.deps import Engine, get_engine, read_body, require_auth
from handlers.api.errors import FHIR_JSON, ApiError
from handlers.api.schemas import (
    EVALUATE_BODY,
    Bundle,
    Health,
    Measure,
    MeasureReport,
    OperationOutcome,
    parse_body,
    parse_date,
    subject_id,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OperationOutcome, "description": text}
    for code, text in (
        (400, "malformed JSON, not a Bundle or Parameters, or an invalid element (named)"),
        (401, "an API key is configured and the request has none or a wrong one"),
        (404, "unknown measure or patient"),
        (413, "request body above the configured limit"),
        (422, "resources the flattener rejected (type/id and reason), or no single patient"),
    )
}

router = APIRouter()
data = APIRouter(dependencies=[Depends(require_auth)], responses=ERRORS)

EngineDep = Annotated[Engine, Depends(get_engine)]
MeasureQuery = Annotated[list[str] | None, Query(alias="measure", description="measure ids (none = all)")]
PeriodStart = Annotated[
    str | None, Query(alias="periodStart", description="YYYY-MM-DD (default: the measure's)")
]
PeriodEnd = Annotated[str | None, Query(alias="periodEnd", description="YYYY-MM-DD (default: the measure's)")]
SubjectQuery = Annotated[str | None, Query(description="Patient/<id> when the Bundle holds several patients")]


def fhir(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


def _day(text: str | None, name: str) -> date | None:
    return None if text is None else parse_date(text, name)


@router.get("/health", response_model=Health, tags=["service"])
def health(request: Request) -> dict[str, Any]:
    """Liveness plus what is loaded (compiles the library on first call if the lifespan did not)."""
    engine = request.app.state.engine.get()
    return {
        "status": "ok",
        "measures": engine.ids,
        "library_hash": engine.library_hash,
        "lake": "configured" if engine.settings.data else None,
    }


@data.get("/Measure", response_model=Bundle, tags=["Measure"])
def list_measures(engine: EngineDep) -> JSONResponse:
    """A searchset Bundle of the served measures (Measure-shaped metadata)."""
    entries = [
        {
            "fullUrl": reports.canonical(p),
            "resource": reports.measure_resource(p),
            "search": {"mode": "match"},
        }
        for p in engine.plans
    ]
    return fhir({"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})


@data.get("/Measure/{measure_id}", response_model=Measure, tags=["Measure"])
def read_measure(measure_id: str, engine: EngineDep) -> JSONResponse:
    return fhir(reports.measure_resource(engine.plan(measure_id)))


@data.post(
    "/Measure/{measure_id}/$evaluate-measure",
    response_model=MeasureReport,
    tags=["evaluate"],
    openapi_extra=EVALUATE_BODY,
)
async def evaluate_measure(
    measure_id: str,
    request: Request,
    engine: EngineDep,
    period_start: PeriodStart = None,
    period_end: PeriodEnd = None,
    subject: SubjectQuery = None,
) -> JSONResponse:
    """The individual MeasureReport of one measure for the patient in the body (a Bundle, or Parameters with
    periodStart, periodEnd, reportType=individual, subject and additionalData). Query parameters are used when
    the body does not give them."""
    plan = engine.plan(measure_id)
    body = await read_body(request)
    parsed = parse_body(body)
    parsed = _with_query(parsed, period_start, period_end, subject)
    found = await run_in_threadpool(service.evaluate_bundle, engine, [plan], parsed)
    return fhir(found[0])


@data.post(
    "/Measure/$evaluate-measures", response_model=Bundle, tags=["evaluate"], openapi_extra=EVALUATE_BODY
)
async def evaluate_measures(
    request: Request,
    engine: EngineDep,
    measure: MeasureQuery = None,
    period_start: PeriodStart = None,
    period_end: PeriodEnd = None,
    subject: SubjectQuery = None,
) -> JSONResponse:
    """A Bundle of individual MeasureReports, one per named measure (all when none is named)."""
    body = await read_body(request)
    parsed = _with_query(parse_body(body), period_start, period_end, subject)
    plans = engine.select([*(measure or ()), *parsed.measures])
    found = await run_in_threadpool(service.evaluate_bundle, engine, plans, parsed)
    return fhir(reports.report_bundle(found))


@data.get("/Patient/{patient_id}/$evaluate-measures", response_model=Bundle, tags=["evaluate"])
async def evaluate_lake_patient(
    patient_id: str,
    engine: EngineDep,
    measure: MeasureQuery = None,
    period_start: PeriodStart = None,
    period_end: PeriodEnd = None,
) -> JSONResponse:
    """Reports for a patient of the configured lake: only the patient's bucket is read."""
    plans = engine.select(measure or ())
    if engine.settings.data is None:
        raise ApiError(404, "no patient lake is configured (MEASURES_DATA)", code="not-supported")
    start, end = _day(period_start, "periodStart"), _day(period_end, "periodEnd")
    found = await run_in_threadpool(service.evaluate_lake_patient, engine, plans, patient_id, start, end)
    return fhir(reports.report_bundle(found))


def _with_query(parsed: Any, start: str | None, end: str | None, subject: str | None) -> Any:
    """Fill the period and subject from query parameters where the body has none."""
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if parsed.period_start is None and start is not None:
        changes["period_start"] = parse_date(start, "periodStart")
    if parsed.period_end is None and end is not None:
        changes["period_end"] = parse_date(end, "periodEnd")
    if parsed.subject is None and subject is not None:
        changes["subject"] = subject_id(subject, "subject")
    return replace(parsed, **changes) if changes else parsed


router.include_router(data)
