"""The request path: a Bundle (or a lake patient) -> in-memory canonical frames -> the compiled plans ->
individual MeasureReports. Synchronous (run in the thread pool by the routes); no I/O besides the lake
read."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from datasets.errors import DatasetError
from datasets.fhir import flatten_bundle
from datasets.hashing import bucket_of
from datasets.source import FrameSource, ParquetSource
from engine import EvaluationConfig, evaluate
from engine.errors import EngineError
from engine.plan import MeasurePlan
from handlers.api import reports
from handlers.api.deps import Engine
from handlers.api.errors import ApiError, issue
from handlers.api.schemas import EvaluateRequest

log = logging.getLogger("handlers.api")

try:  # engine/report.py: criterion reasons and care gaps (DetectedIssue); the local minimal report otherwise
    from engine.report import individual_report as _engine_individual_report
except ImportError:  # pragma: no cover - depends on the tree
    _engine_individual_report = None  # type: ignore[assignment]


def single_patient_config(start: date | None, end: date | None) -> EvaluationConfig:
    """In-memory engine, no event materialisation: start-up cost dominates for one patient."""
    if start is not None and end is not None and start > end:
        raise ApiError(400, "periodStart is after periodEnd", expression=["periodStart", "periodEnd"])
    return EvaluationConfig(period_start=start, period_end=end, streaming=False, materialize_events=True)


def _entry_index(bundle: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(bundle.get("entry") or ()):
        resource = entry.get("resource") or {}
        rid = resource.get("id")
        if rid is None and isinstance(entry.get("fullUrl"), str):
            rid = entry["fullUrl"].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        if isinstance(rid, str):
            out.setdefault((str(resource.get("resourceType")), rid), i)
    return out


def flatten_request(bundle: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
    """Canonical frames of a request Bundle; 422 naming every rejected resource and why."""
    try:
        flat = flatten_bundle(bundle, "request")
    except (DatasetError, pl.exceptions.PolarsError, ValueError, TypeError) as exc:
        raise ApiError(
            422, f"the Bundle could not be flattened: {type(exc).__name__}", expression=["Bundle"]
        ) from None
    if flat.rejected.height:
        index = _entry_index(bundle)
        issues = []
        for row in flat.rejected.iter_rows(named=True):
            rtype, rid = row.get("resource_type") or "?", row.get("id")
            where = index.get((rtype, rid)) if rid is not None else None
            expression = (
                [f"Bundle.entry[{where}].resource"]
                if where is not None
                else [f"Bundle.entry.resource.where(resourceType='{rtype}')"]
            )
            issues.append(
                issue("processing", f"{rtype}/{rid or '?'} rejected: {row.get('reason')}", expression)
            )
        raise ApiError(
            422,
            f"{flat.rejected.height} resource(s) of the Bundle were rejected",
            code="processing",
            issues=issues,
        )
    return {t: f for t, f in flat.tables.items() if f.height}


def _patient_ids(frames: Mapping[str, pl.DataFrame]) -> list[str]:
    patient = frames.get("patient")
    if patient is None or not patient.height:
        return []
    return sorted(patient["patient_id"].drop_nulls().unique().to_list())


def _only(frames: Mapping[str, pl.DataFrame], patient_id: str) -> dict[str, pl.DataFrame]:
    return {t: f.filter(pl.col("patient_id") == patient_id) for t, f in frames.items()}


def _reports(
    plans: Sequence[MeasurePlan],
    frames: Mapping[str, pl.DataFrame],
    patient_id: str,
    config: EvaluationConfig,
) -> list[dict[str, Any]]:
    try:
        result = evaluate(plans, FrameSource(frames), config)
    except (EngineError, DatasetError) as exc:
        log.warning("evaluation failed for Patient/%s: %s", patient_id, type(exc).__name__)
        raise ApiError(422, f"the data could not be evaluated: {type(exc).__name__}") from None
    evaluated = reports.evaluated_resources(frames, patient_id)
    when = datetime.now(UTC).replace(microsecond=0)
    mine = result.subjects.filter(pl.col("patient_id") == patient_id)
    out = []
    for plan in result.plans:
        span = (config.period_start or plan.period_start, config.period_end or plan.period_end)
        if _engine_individual_report is not None:
            doc = {
                "id": f"{plan.measure_id}-{patient_id}",
                **_engine_individual_report(mine, plan, span, patient_id, when=when),
            }
            doc["evaluatedResource"] = evaluated
        else:
            doc = reports.individual_report(plan, mine, patient_id, span, evaluated, generated_at=when)
        out.append(doc)
    return out


def evaluate_bundle(
    engine: Engine, plans: Sequence[MeasurePlan], request: EvaluateRequest
) -> list[dict[str, Any]]:
    """Individual reports of the request's patient for ``plans``."""
    config = single_patient_config(request.period_start, request.period_end)
    frames = flatten_request(request.bundle)
    patients = _patient_ids(frames)
    if request.subject is not None:
        if request.subject not in patients:
            raise ApiError(
                422,
                f"subject Patient/{request.subject} is not in the Bundle",
                expression=["subject"],
                code="not-found",
            )
        patient_id = request.subject
    elif len(patients) == 1:
        patient_id = patients[0]
    elif not patients:
        raise ApiError(422, "the Bundle holds no Patient resource", expression=["Bundle.entry"])
    else:
        raise ApiError(
            422,
            f"the Bundle holds {len(patients)} patients: name one with the subject parameter",
            expression=["subject"],
        )
    if len(patients) > 1:
        frames = _only(frames, patient_id)
    return _reports(plans, frames, patient_id, config)


def lake_patient_frames(engine: Engine, patient_id: str) -> dict[str, pl.DataFrame]:
    """The patient's rows of every table, reading only the patient's bucket (404 when absent)."""
    root = engine.settings.data
    assert root is not None
    try:
        manifest = engine.manifest()
        bucket = int(bucket_of([patient_id], manifest.n_buckets)[0])
        source = ParquetSource(
            root, buckets=[bucket], manifest=manifest, validate=engine.settings.validate_lake
        )
        tables = [t for t in manifest.tables if source.has_table(t)]
        lazies = [source.scan(t).filter(pl.col("patient_id") == patient_id) for t in tables]
        collected = pl.collect_all(lazies, engine="in-memory")
    except (DatasetError, OSError, pl.exceptions.PolarsError) as exc:
        log.error("reading the lake failed for Patient/%s: %s", patient_id, type(exc).__name__)
        raise ApiError(500, "the patient lake could not be read", code="exception") from None
    frames = {t: f for t, f in zip(tables, collected, strict=True) if f.height}
    if "patient" not in frames:
        raise ApiError(404, f"Patient/{patient_id} is not in the lake", expression=["Patient.id"])
    return frames


def evaluate_lake_patient(
    engine: Engine, plans: Sequence[MeasurePlan], patient_id: str, start: date | None, end: date | None
) -> list[dict[str, Any]]:
    config = single_patient_config(start, end)
    frames = lake_patient_frames(engine, patient_id)
    return _reports(plans, frames, patient_id, config)
