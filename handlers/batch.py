"""Batch evaluation as three plain functions (plan, evaluate_shard, reduce) plus Lambda handlers around them.

The functions know nothing of the orchestration: Step Functions (a Distributed Map over the shard list) and
the local process pool call the same code. Every output key and byte is a function of the run plan, so a
redelivered event or a retried shard rewrites identical objects, and ``summary.json`` is written last as the
commit marker: a reader that sees it sees a complete, reconciled run.

Bad rows are quarantined, not evaluated: each shard writes ``errors/shard-NNNN.parquet`` (file, row, ids and
reason; never a value) and counts them; the reducer refuses to publish when the share of quarantined rows
exceeds the run's ``max_error_rate``. Every refusal leaves what was computed in place, so a rerun completes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import polars as pl

from datasets import lake, storage
from datasets.source import ERRORS_SCHEMA, ParquetSource
from engine import EvaluationConfig, MeasurePlan, evaluate
from engine.errors import EngineError
from engine.library import POPULATIONS, count_frame, library_hash, load_library, score
from engine.observations import group_observations, merge_counts, observation_counts
from engine.populations import FHIR_CODES

log = logging.getLogger(__name__)

RUN_FORMAT = "measures-engine.run/1"
SUMMARY_FORMAT = "measures-engine.summary/2"  # 2: quarantine and observation aggregates
# Rough per-shard target: big enough to amortise a worker's start-up, small enough to spread over cores.
TARGET_PATIENTS_PER_SHARD = 25_000


class RunIncompleteError(RuntimeError):
    """A reduce that cannot publish: a planned shard is missing or the counts do not reconcile."""


class ErrorRateExceededError(RunIncompleteError):
    """More rows were quarantined than the run tolerates; the shards' results and errors stay for a rerun."""


class ShardError(RuntimeError):
    """A shard could not be evaluated; the message names the run, shard and buckets (ids only)."""


# Keys and prefixes that come from events: plain segments only (no traversal, no control characters).
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9._=+@,-]+$")


def safe_uri(uri: str, what: str) -> str:
    """``uri`` unchanged when it is an ``s3://bucket/key`` or a folder with no ``..``/empty/odd segments."""
    if not isinstance(uri, str) or not uri or len(uri) > 1024:
        raise ValueError(f"{what}: not a usable location")
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        segments = [bucket, *key.rstrip("/").split("/")] if key else [bucket]
        bad = [s for s in segments if s in (".", "..") or not _SAFE_SEGMENT.match(s)]
    else:  # a local folder (tests, the local executor): only traversal and control characters are refused
        parts = uri.replace("\\", "/").split("/")
        bad = [s for s in parts if s == ".." or any(ord(c) < 32 for c in s)]
    if bad:
        raise ValueError(
            f"{what}: refused location {uri!r} (empty, '..' or unexpected characters in a segment)"
        )
    return uri


def dumps(value: object) -> bytes:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline."""
    return (json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class RunPlan:
    """Everything a shard or the reducer needs; written as ``<out>/<run_id>/run.json``."""

    run_id: str
    data: str
    out: str
    manifest_hash: str
    library_hash: str
    n_buckets: int
    patients: int
    shards: tuple[tuple[int, int], ...]  # [start, stop) bucket ranges
    measures: tuple[str, ...] | None = None
    period: tuple[str, str] | None = None
    valuesets: str | None = None
    as_of: str | None = None  # ISO date: events or births after it are quarantined as "in the future"
    max_error_rate: float | None = None  # publish only when quarantined rows / rows <= this

    @property
    def root(self) -> str:
        return storage.join(self.out, self.run_id)

    def shard_buckets(self, index: int) -> list[int]:
        start, stop = self.shards[index]
        return list(range(start, stop))

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["shards"] = [list(s) for s in self.shards]
        doc["format"] = RUN_FORMAT
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RunPlan:
        return cls(
            run_id=str(doc["run_id"]),
            data=str(doc["data"]),
            out=str(doc["out"]),
            manifest_hash=str(doc["manifest_hash"]),
            library_hash=str(doc["library_hash"]),
            n_buckets=int(doc["n_buckets"]),
            patients=int(doc["patients"]),
            shards=tuple((int(a), int(b)) for a, b in doc["shards"]),
            measures=None if doc.get("measures") is None else tuple(doc["measures"]),
            period=None if doc.get("period") is None else (str(doc["period"][0]), str(doc["period"][1])),
            valuesets=doc.get("valuesets"),
            as_of=None if doc.get("as_of") is None else str(doc["as_of"]),
            max_error_rate=None if doc.get("max_error_rate") is None else float(doc["max_error_rate"]),
        )


@dataclass(frozen=True)
class ShardResult:
    run_id: str
    shard_index: int
    patients: int
    subjects_path: str
    counts_path: str
    quarantined: int = 0


@dataclass(frozen=True)
class Summary:
    run_id: str
    path: str
    document: dict[str, Any]
    frame: pl.DataFrame  # measure_id, group_id, stratum, population counts, score


def _as_run(run: RunPlan | Mapping[str, Any]) -> RunPlan:
    return run if isinstance(run, RunPlan) else RunPlan.from_dict(run)


def parse_period(period: str | Sequence[str] | None) -> tuple[str, str] | None:
    """``START:END`` (ISO dates) or a pair -> a validated pair of ISO strings."""
    if period is None:
        return None
    parts = period.split(":") if isinstance(period, str) else list(period)
    if len(parts) != 2:
        raise ValueError(f"period must be START:END, got {period!r}")
    start, end = (date.fromisoformat(p.strip()) for p in parts)
    if end < start:
        raise ValueError(f"period ends before it starts: {start}..{end}")
    return start.isoformat(), end.isoformat()


def choose_shards(bucket_rows: Sequence[int], n_shards: int | None) -> tuple[tuple[int, int], ...]:
    """Contiguous bucket ranges with roughly equal patients; empty buckets still belong to a shard."""
    n_buckets = len(bucket_rows)
    total = sum(bucket_rows)
    if n_shards is None:
        n_shards = max(1, -(-total // TARGET_PATIENTS_PER_SHARD))
    n_shards = max(1, min(n_shards, n_buckets))
    shards: list[tuple[int, int]] = []
    start, seen = 0, 0
    for b, rows in enumerate(bucket_rows):
        seen += rows
        remaining_shards = n_shards - len(shards) - 1
        remaining_buckets = n_buckets - b - 1
        cut = seen * n_shards >= total * (len(shards) + 1) or remaining_buckets == remaining_shards
        if remaining_shards > 0 and cut:
            shards.append((start, b + 1))
            start = b + 1
    shards.append((start, n_buckets))
    return tuple(shards)


# Compiled plans per process, keyed by the library selection; warm Lambdas and pool workers reuse them.
_LIBRARIES: dict[tuple[tuple[str, ...] | None, str | None], list[MeasurePlan]] = {}


def compiled(measures: Sequence[str] | None, valuesets: str | None) -> list[MeasurePlan]:
    key = (None if measures is None else tuple(measures), valuesets)
    if key not in _LIBRARIES:
        _LIBRARIES[key] = load_library(key[0], valuesets)
    return _LIBRARIES[key]


def _plans_for(run: RunPlan) -> list[MeasurePlan]:
    plans = compiled(run.measures, run.valuesets)
    found = library_hash(plans)
    if found != run.library_hash:
        raise RunIncompleteError(
            f"run {run.run_id}: library hash {found} differs from the planned {run.library_hash}"
            " (definitions or value sets changed since planning)"
        )
    return plans


def _config(run: RunPlan) -> EvaluationConfig:
    if run.period is None:
        return EvaluationConfig()
    start, end = (date.fromisoformat(p) for p in run.period)
    return EvaluationConfig(period_start=start, period_end=end)


def plan(
    data: str,
    out: str,
    *,
    measures: Sequence[str] | None = None,
    period: str | Sequence[str] | None = None,
    valuesets: str | None = None,
    n_shards: int | None = None,
    max_error_rate: float | None = None,
    as_of: str | date | None = None,
) -> RunPlan:
    """Read the manifest, shard its buckets, derive the run id and write ``run.json``.

    ``as_of`` (an ISO date; default none) quarantines births and events after it as "in the future"; it is
    opt-in so results never depend on the day a run happens, and it is part of the run id when set.
    ``max_error_rate`` is not: a rerun with another threshold reuses the shards already done.
    """
    if max_error_rate is not None and not 0 <= max_error_rate <= 1:
        raise ValueError(f"max_error_rate must be in 0..1, got {max_error_rate}")
    manifest = lake.read_manifest(data)
    ids = None if measures is None else tuple(sorted({m.strip().upper() for m in measures if m.strip()}))
    valuesets = None if valuesets is None else str(valuesets)
    plans = compiled(ids, valuesets)
    lib = library_hash(plans)
    span = parse_period(period)
    patient_rows = manifest.tables["patient"].bucket_rows if "patient" in manifest.tables else (0,) * 1
    if len(patient_rows) != manifest.n_buckets:
        patient_rows = (0,) * manifest.n_buckets
    shards = choose_shards(patient_rows, n_shards)
    as_of = None if as_of is None else date.fromisoformat(str(as_of)).isoformat()
    options: dict[str, Any] = {"measures": ids, "n_shards": len(shards), "shards": shards}
    if as_of is not None:
        options["as_of"] = as_of
    identity = lake.canonical_json([manifest.content_hash, lib, span, options])
    run_id = hashlib.sha256(identity).hexdigest()[:16]
    run = RunPlan(
        run_id=run_id,
        data=data,
        out=out,
        manifest_hash=manifest.content_hash,
        library_hash=lib,
        n_buckets=manifest.n_buckets,
        patients=sum(patient_rows),
        shards=shards,
        measures=ids,
        period=span,
        valuesets=valuesets,
        as_of=as_of,
        max_error_rate=max_error_rate,
    )
    storage.write_bytes(storage.join(run.root, "run.json"), dumps(run.to_dict()))
    log.info("planned run %s: %d shards over %d buckets", run.run_id, len(shards), run.n_buckets)
    return run


def load_run(uri: str) -> RunPlan:
    """A run plan from its ``run.json`` (a Step Functions payload may carry the path instead of the plan)."""
    return RunPlan.from_dict(json.loads(storage.read_bytes(uri)))


def subjects_path(run: RunPlan, index: int) -> str:
    return storage.join(run.root, "subjects", f"shard={index:04d}", "part-0.parquet")


def counts_path(run: RunPlan, index: int) -> str:
    return storage.join(run.root, "counts", f"shard-{index:04d}.json")


def errors_path(run: RunPlan, index: int) -> str:
    """The shard's quarantine sink (file, row, ids, reason), written even when empty."""
    return storage.join(run.root, "errors", f"shard-{index:04d}.parquet")


def read_counts(run: RunPlan, index: int) -> dict[str, Any] | None:
    """The shard's counts document when it is present, complete and of this run; None when absent.

    A document that is unreadable or belongs to another run/dataset/library raises, naming the key: it is a
    partial or stale object, and rerunning the shard replaces it.
    """
    path = counts_path(run, index)
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("counts"), list):
            raise ValueError("not a counts document")
        int(doc["patients"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RunIncompleteError(
            f"run {run.run_id}: {path} is unreadable ({type(exc).__name__}); rerun the shard"
        ) from None
    if doc.get("run_id") != run.run_id or doc.get("shard") != index:
        raise RunIncompleteError(f"run {run.run_id}: counts of shard {index} belong to another run")
    for field_name, expected in (("manifest_hash", run.manifest_hash), ("library_hash", run.library_hash)):
        if field_name in doc and doc[field_name] != expected:
            raise RunIncompleteError(f"run {run.run_id}: counts of shard {index} have another {field_name}")
    return doc


def shard_done(run: RunPlan, index: int) -> bool:
    """True when the shard's outputs are all present and its counts are of this run (a rerun may skip it)."""
    try:
        doc = read_counts(run, index)
    except RunIncompleteError:
        return False
    return (
        doc is not None
        and storage.exists(subjects_path(run, index))
        and storage.exists(errors_path(run, index))
    )


def _as_of(run: RunPlan) -> datetime | None:
    if run.as_of is None:
        return None
    return datetime.combine(date.fromisoformat(run.as_of), time.max, tzinfo=UTC)


def _count_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [dict(row) for row in frame.iter_rows(named=True)]


def evaluate_shard(run: RunPlan | Mapping[str, Any], shard_index: int) -> ShardResult:
    """Evaluate every plan over one shard's buckets; write its subjects and counts under fixed keys."""
    run = _as_run(run)
    if not 0 <= shard_index < len(run.shards):
        raise ValueError(f"run {run.run_id} has {len(run.shards)} shards, no shard {shard_index}")
    plans = _plans_for(run)
    manifest = lake.read_manifest(run.data)
    if manifest.content_hash != run.manifest_hash:
        raise RunIncompleteError(f"run {run.run_id}: the dataset changed since planning")
    buckets = run.shard_buckets(shard_index)
    start, stop = run.shards[shard_index]
    where = f"run {run.run_id} shard {shard_index} (buckets {start}..{stop - 1})"
    # Footers and row counts first: a truncated, corrupt or drifted file fails here, named, before any work.
    lake.validate_buckets(run.data, manifest, buckets)
    source = ParquetSource(run.data, buckets, manifest=manifest, validate=False)
    errors = source.screen(_as_of(run))
    rows = sum(manifest.tables[t].bucket_rows[b] for t in manifest.tables for b in buckets)
    patients = (
        sum(manifest.tables["patient"].bucket_rows[b] for b in buckets) if "patient" in manifest.tables else 0
    )
    evaluable = patients - errors.filter(pl.col("table") == "patient").height
    if evaluable:
        try:
            subjects = evaluate(plans, source, _config(run)).subjects
        except (EngineError, pl.exceptions.PolarsError, OSError) as exc:
            raise ShardError(f"{where}: evaluation failed ({type(exc).__name__}: {exc})") from exc
    else:
        subjects = pl.DataFrame(
            schema={"measure_id": pl.String, "group_id": pl.String, "patient_id": pl.String}
        )
    subjects = subjects.sort("measure_id", "group_id", "patient_id")
    out_subjects = subjects_path(run, shard_index)
    storage.put_file(lambda p: subjects.write_parquet(p, compression="zstd", statistics=True), out_subjects)
    errors = errors.select(list(ERRORS_SCHEMA))
    storage.put_file(lambda p: errors.write_parquet(p, compression="zstd"), errors_path(run, shard_index))
    reasons = errors.group_by("reason").len().sort("reason").iter_rows() if errors.height else []
    doc = {
        "run_id": run.run_id,
        "shard": shard_index,
        "buckets": list(run.shards[shard_index]),
        "manifest_hash": run.manifest_hash,
        "library_hash": run.library_hash,
        "patients": patients,
        "rows": rows,
        "quarantined": errors.height,
        "reasons": {str(reason): int(n) for reason, n in reasons},
        "counts": _count_records(count_frame(subjects)) if subjects.height else [],
        "observations": observation_counts(subjects) if subjects.height else [],
    }
    out_counts = counts_path(run, shard_index)
    storage.write_bytes(out_counts, dumps(doc))  # last: the shard's commit marker
    log.info(
        "run %s shard %d: %d patients, %d rows quarantined, buckets %s",
        run.run_id,
        shard_index,
        patients,
        errors.height,
        run.shards[shard_index],
    )
    return ShardResult(run.run_id, shard_index, patients, out_subjects, out_counts, errors.height)


def _merge(docs: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    keys = ("measure_id", "group_id", "stratum")
    totals: dict[tuple[str, str, str | None], dict[str, int]] = {}
    for doc in docs:
        for row in doc["counts"]:
            key = (row["measure_id"], row["group_id"], row["stratum"])
            acc = totals.setdefault(key, dict.fromkeys(POPULATIONS, 0))
            for pop in POPULATIONS:
                acc[pop] += int(row.get(pop, 0))
    rows = [{**dict(zip(keys, k, strict=True)), **v, "score": score(v)} for k, v in totals.items()]
    schema: dict[str, pl.DataType] = {
        "measure_id": pl.String(),
        "group_id": pl.String(),
        "stratum": pl.String(),
    }
    schema |= {p: pl.Int64() for p in POPULATIONS} | {"score": pl.Float64()}
    return pl.DataFrame(rows, schema=schema, orient="row").sort(list(keys), nulls_last=False)


def _entry(row: Mapping[str, Any], populations: Sequence[str]) -> dict[str, Any]:
    return {"populations": {FHIR_CODES[p]: int(row[p]) for p in populations}, "score": row["score"]}


def quarantine_totals(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows read, rows quarantined, their share and reasons, over every shard's counts."""
    rows = sum(int(d.get("rows", 0)) for d in docs)
    quarantined = sum(int(d.get("quarantined", 0)) for d in docs)
    reasons: dict[str, int] = {}
    for d in docs:
        for reason, n in (d.get("reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + int(n)
    return {
        "rows": rows,
        "quarantined": quarantined,
        "rate": quarantined / rows if rows else 0.0,
        "reasons": dict(sorted(reasons.items())),
        "sink": "errors/",
    }


def _document(
    run: RunPlan, plans: Sequence[MeasurePlan], frame: pl.DataFrame, docs: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    rows = {(r["measure_id"], r["group_id"], r["stratum"]): r for r in frame.iter_rows(named=True)}
    zero = {**dict.fromkeys(POPULATIONS, 0), "score": None}
    config = _config(run)
    measures: dict[str, Any] = {}
    merged = merge_counts(d.get("observations") or [] for d in docs)
    for p in plans:
        period = config.period_for(p)
        groups: dict[str, Any] = {}
        observed = group_observations(p, merged)
        for g in p.groups:
            pops = [name for name, _ in g.populations if name in FHIR_CODES]
            entry = _entry(rows.get((p.measure_id, g.id, None), zero), pops)
            if g.observations:
                entry["observations"] = observed[g.id]["observations"]
                if p.scoring in ("continuous_variable", "ratio"):
                    entry["score"] = observed[g.id]["score"]
            entry["strata"] = {
                sid: _entry(rows.get((p.measure_id, g.id, sid), zero), pops) for sid, _ in g.stratifiers
            }
            groups[g.id] = entry
        measures[p.measure_id] = {
            "version": p.version,
            "scoring": p.scoring,
            "plan_hash": p.content_hash,
            "period": {"start": str(period.start), "end": str(period.end)},
            "groups": groups,
        }
    return {
        "format": SUMMARY_FORMAT,
        "dataset": run.manifest_hash,
        "library": run.library_hash,
        "patients": run.patients,
        "measures": measures,
    }


def _publish_reports(run: RunPlan, plans: Sequence[MeasurePlan], document: dict[str, Any]) -> None:
    """FHIR summary MeasureReports (one Bundle) and the HTML report, beside the summary; deterministic bytes."""
    from pathlib import Path

    from engine.report import summary_report
    from handlers.commands.report import render_run

    config = _config(run)
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": summary_report(document, p, config.period_for(p))} for p in plans],
    }
    storage.write_bytes(storage.join(run.root, "measure-reports.json"), dumps(bundle))
    local = None if storage.is_s3(run.root) else Path(run.root)
    page, _facts = render_run(local, run, document, list(plans))
    storage.write_bytes(storage.join(run.root, "report.html"), page.encode("utf-8"))


def reduce(run: RunPlan | Mapping[str, Any]) -> Summary:
    """Merge every shard's counts exactly, reconcile with the manifest, write ``summary.json`` last.

    Safe to start twice or early: it reads only committed shard outputs, refuses (publishing nothing) while any
    is missing, stale or partial, and a second complete reduce rewrites the same bytes.
    """
    run = _as_run(run)
    plans = _plans_for(run)
    docs: list[dict[str, Any]] = []
    missing: list[int] = []
    for index in range(len(run.shards)):
        doc = read_counts(run, index)
        if doc is None:
            missing.append(index)
            continue
        for path in (subjects_path(run, index), errors_path(run, index)):
            if not storage.exists(path):
                raise RunIncompleteError(f"run {run.run_id}: {path} is missing; rerun shard {index}")
        docs.append(doc)
    if missing:
        raise RunIncompleteError(f"run {run.run_id}: shards {missing} have no counts; nothing published")
    seen = sum(int(d["patients"]) for d in docs)
    if seen != run.patients:
        raise RunIncompleteError(
            f"run {run.run_id}: shards saw {seen} patients, the manifest lists {run.patients}"
        )
    quarantine = quarantine_totals(docs)
    if run.max_error_rate is not None and quarantine["rate"] > run.max_error_rate:
        raise ErrorRateExceededError(
            f"run {run.run_id}: {quarantine['quarantined']} of {quarantine['rows']} rows quarantined"
            f" ({100 * quarantine['rate']:.2f}% > {100 * run.max_error_rate:.2f}%); nothing published,"
            f" see {storage.join(run.root, 'errors')}"
        )
    frame = _merge(docs)
    document = _document(run, plans, frame, docs)
    document["quarantine"] = quarantine
    _publish_reports(run, plans, document)
    path = storage.join(run.root, "summary.json")
    storage.write_bytes(path, dumps(document))  # last: the commit marker of a complete run
    log.info("run %s reduced: %d shards, %d patients", run.run_id, len(docs), seen)
    return Summary(run.run_id, path, document, frame)


# ------------------------------------------------------------------------------------------ Lambda handlers


def _s3_object(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(bucket, key) of an S3 notification or an EventBridge "Object Created" event, else None."""
    detail = event.get("detail")
    if isinstance(detail, Mapping) and "bucket" in detail and "object" in detail:
        return str(detail["bucket"]["name"]), str(detail["object"]["key"])
    records = event.get("Records")
    if isinstance(records, list) and records and "s3" in records[0]:
        s3 = records[0]["s3"]
        return str(s3["bucket"]["name"]), str(s3["object"]["key"])
    return None


_RUN_ID = re.compile(r"^[0-9a-f]{16}$")


def _checked(run: RunPlan) -> RunPlan:
    """A plan from an event (or a run.json it names) whose locations are validated like the event's own: its
    run id, data and out become keys and paths that are written to."""
    if not _RUN_ID.match(run.run_id):
        raise ValueError(f"run_id: refused location {run.run_id[:40]!r} (not a run id)")
    safe_uri(run.data, "run.data")
    safe_uri(run.out, "run.out")
    return run


def _run_of(event: Mapping[str, Any]) -> RunPlan:
    if "run" in event:
        return _checked(_as_run(event["run"]))
    if "run_uri" in event:
        return _checked(load_run(safe_uri(str(event["run_uri"]), "run_uri")))
    raise ValueError("event needs 'run' (the plan) or 'run_uri' (its run.json)")


def plan_handler(event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    """Plan a run for a new ``_manifest.json`` (S3/EventBridge event) or an explicit ``{"data", "out"}``."""
    import os

    obj = _s3_object(event)
    if obj is not None:
        bucket, key = obj
        if not key.endswith(lake.MANIFEST_NAME):
            raise ValueError(f"not a manifest: s3://{bucket}/{key}")
        prefix = key[: -len(lake.MANIFEST_NAME)].rstrip("/")
        data = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    else:
        data = str(event["data"])
    safe_uri(data, "data")
    out = event.get("out") or os.environ.get("RESULTS_ROOT") or storage.join(data, "_results")
    safe_uri(str(out), "out")
    run = plan(
        data,
        str(out),
        measures=event.get("measures"),
        period=event.get("period"),
        valuesets=event.get("valuesets"),
        n_shards=event.get("n_shards"),
        max_error_rate=event.get("max_error_rate"),
        as_of=event.get("as_of"),
    )
    run_uri = storage.join(run.root, "run.json")
    return {
        "run_id": run.run_id,
        "run_uri": run_uri,
        "shards": [{"run_uri": run_uri, "shard_index": i} for i in range(len(run.shards))],
    }


def shard_handler(event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    """One Distributed Map item: ``{"run_uri" | "run", "shard_index"}``."""
    result = evaluate_shard(_run_of(event), int(event["shard_index"]))
    return asdict(result)


def reduce_handler(event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
    """After the map: ``{"run_uri" | "run"}``; fails (for the state machine to see) if a shard is missing."""
    summary = reduce(_run_of(event))
    return {"run_id": summary.run_id, "summary_uri": summary.path, "patients": summary.document["patients"]}
