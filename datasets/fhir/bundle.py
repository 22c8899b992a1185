"""FHIR Bundles (REST, one patient; the official test cases) -> raw frames -> the shared flattener.

The resources of a Bundle are grouped by type and read with the same pinned schemas as Bulk ndjson (one
``read_ndjson`` per type), so the Bundle path is the Bulk path on a small input. ``fullUrl`` values give the
reference aliases: ``urn:uuid:`` references, and references that name a resource by the id in its fullUrl
rather than its ``id`` (the official eCQM tests do this).

Hostile input is refused per resource, never by a crash: a resource nested deeper than :data:`MAX_DEPTH`,
holding a string longer than :data:`MAX_STRING` or more than :data:`MAX_NODES` elements, or whose ``id`` is
not a string, goes to the quarantine with its reason (ids only) and the rest of the Bundle is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from datasets.errors import DataContractError
from datasets.fhir.flatten import REJECTED_SCHEMA, FlattenResult, flatten
from datasets.fhir.raw import RAW, read_ndjson

Resource = Mapping[str, Any]

# Far beyond any R4 resource the canonical tables read (real ones nest < 15 deep, strings of a few KiB).
MAX_DEPTH = 64
MAX_STRING = 1_000_000
MAX_NODES = 200_000
REJECTED_KEY = "_rejected"  # marks a refused resource between bundle_resources and frames_from_resources


def hostile(resource: Mapping[str, Any]) -> str | None:
    """Why ``resource`` must not be read (depth, size, ``id`` type), or None; iterative, so deep input is safe."""
    rid = resource.get("id")
    if rid is not None and not isinstance(rid, str):
        return "id is not a string"
    stack: list[tuple[Any, int]] = [(resource, 1)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"more than {MAX_NODES} elements"
        if isinstance(node, str):
            if len(node) > MAX_STRING:
                return f"a string longer than {MAX_STRING} characters"
        elif isinstance(node, Mapping | list):
            if depth > MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            children = node.values() if isinstance(node, Mapping) else node
            stack.extend((child, depth + 1) for child in children)
            if isinstance(node, Mapping):
                stack.extend((key, depth + 1) for key in node)
    return None


def fullurl_aliases(entries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Reference strings that name a resource other than by ``Type/id`` -> ``Type/id``: its fullUrl, and
    ``Type/<last segment of its fullUrl>`` (official eCQM tests reference resources that way)."""
    aliases: dict[str, str] = {}
    real: set[str] = set()
    pending: list[tuple[str, str]] = []
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, Mapping):
            continue
        rtype, rid, url = resource.get("resourceType"), resource.get("id"), entry.get("fullUrl")
        if not isinstance(rtype, str) or not isinstance(rid, str):
            continue
        real.add(f"{rtype}/{rid}")
        if isinstance(url, str):
            aliases[url] = f"{rtype}/{rid}"
            tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
            pending.append((f"{rtype}/{tail}", f"{rtype}/{rid}"))
    for key, target in pending:
        if key != target and key not in real:
            aliases[key] = target
    return aliases


def _rewrite_references(node: Any, aliases: Mapping[str, str], sole_patient: str | None) -> Any:
    """A copy of ``node`` whose ``reference`` strings that are fullUrl aliases read ``Type/id``.

    In a patient Bundle (exactly one Patient) a Patient reference that names no resource of the Bundle is
    read as that patient: the Bundle is the patient's compartment (official tests reference ``Patient-6``
    while the Patient's id is a uuid; the reference engines evaluate them that way).
    """
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                tail = _typed_tail(value)
                ref = aliases.get(value) or aliases.get(tail) or value
                if sole_patient and tail.startswith("Patient/") and ref not in aliases.values():
                    ref = sole_patient
                out[key] = ref
            else:
                out[key] = _rewrite_references(value, aliases, sole_patient)
        return out
    if isinstance(node, list):
        return [_rewrite_references(v, aliases, sole_patient) for v in node]
    return node


def _typed_tail(reference: str) -> str:
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])


def frames_from_resources(resources: Iterable[Resource]) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Group resources by type into raw frames; a resource whose shape breaks its type's schema is refused."""
    lines: dict[str, list[str]] = {}
    rejected: list[dict[str, str | None]] = []
    for resource in resources:
        rtype = resource.get("resourceType")
        if not (isinstance(rtype, str) and rtype in RAW):
            continue
        why = resource.get(REJECTED_KEY)
        if not why:
            try:
                lines.setdefault(rtype, []).append(json.dumps(resource, separators=(",", ":")))
                continue
            except (RecursionError, ValueError, TypeError):
                why = hostile(resource) or "not serialisable as JSON"
        rid = resource.get("id")
        rejected.append({"resource_type": rtype, "id": rid if isinstance(rid, str) else None, "reason": why})
    frames: dict[str, pl.DataFrame] = {}
    for rtype, group in lines.items():
        frame, bad = read_lines(rtype, group)
        frames[rtype] = frame
        rejected.extend({"resource_type": rtype, "id": rid, "reason": why} for rid, why in bad)
    rej = pl.DataFrame(rejected, schema={"resource_type": pl.String, "id": pl.String, "reason": pl.String})
    return frames, rej


def read_lines(rtype: str, lines: list[str]) -> tuple[pl.DataFrame, list[tuple[str | None, str]]]:
    """ndjson lines of one type -> raw frame; on a shape error, retry line by line and refuse the bad ones."""
    schema = RAW[rtype]
    try:
        return read_ndjson("\n".join(lines).encode(), rtype), []
    except (pl.exceptions.PolarsError, ValueError):
        pass
    good: list[pl.DataFrame] = []
    bad: list[tuple[str | None, str]] = []
    for line in lines:
        try:
            good.append(read_ndjson(line.encode(), rtype))
        except (pl.exceptions.PolarsError, ValueError):
            rid = _id_of(line)
            bad.append((rid, "element of an unexpected FHIR type (shape does not match the R4 datatype)"))
    return (pl.concat(good) if good else pl.DataFrame(schema=schema)), bad


def _id_of(line: str) -> str | None:
    try:
        value = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def with_source(rejected: pl.DataFrame, source: str) -> pl.DataFrame:
    """Complete reader-side rejects to the quarantine schema."""
    if rejected.height == 0:
        return pl.DataFrame(schema=REJECTED_SCHEMA)
    return rejected.with_columns(source=pl.lit(source), patient_id=pl.lit(None, dtype=pl.String)).select(
        list(REJECTED_SCHEMA)
    )


def bundle_resources(bundle: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    """The resources of one Bundle with references made relative (``Type/id``) and the source attached, so
    many Bundles can be flattened together without their fullUrl aliases colliding."""
    if not isinstance(bundle, Mapping):
        raise DataContractError(["not a FHIR Bundle (expected a JSON object)"], where=source)
    listed = bundle.get("entry")
    entries = [e for e in listed if isinstance(e, Mapping)] if isinstance(listed, list) else []
    aliases = fullurl_aliases(entries)
    patients = [t for t in aliases.values() if t.startswith("Patient/")]
    sole = patients[0] if len(set(patients)) == 1 else None
    resources = []
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, Mapping) or resource.get("resourceType") not in RAW:
            continue
        why = hostile(resource)
        if why:  # not walked further (the reference rewrite recurses): kept only as a quarantine record
            rid = resource.get("id")
            resources.append(
                {
                    "resourceType": resource["resourceType"],
                    "id": rid if isinstance(rid, str) else None,
                    "_source": source,
                    REJECTED_KEY: why,
                }
            )
            continue
        resource = _rewrite_references(dict(resource), aliases, sole) if aliases else dict(resource)
        if "id" not in resource and isinstance(entry.get("fullUrl"), str):
            resource["id"] = entry["fullUrl"].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        resource["_source"] = source
        resources.append(resource)
    return resources


def flatten_bundles(bundles: Iterable[tuple[Mapping[str, Any], str]], *, n_buckets: int = 1) -> FlattenResult:
    """Several ``(bundle, source)`` pairs in one vectorized pass (a folder of Bundles, the official tests)."""
    resources = [r for bundle, source in bundles for r in bundle_resources(bundle, source)]
    frames, rejected = frames_from_resources(resources)
    return flatten(frames, "bundle", n_buckets=n_buckets, rejected=with_source(rejected, "bundle"))


def flatten_bundle(bundle: Mapping[str, Any], source: str = "bundle", *, n_buckets: int = 1) -> FlattenResult:
    """One Bundle -> canonical tables (the REST path). MeasureReports (expected outputs) and other
    non-clinical types are skipped, not rejected."""
    frames, rejected = frames_from_resources(bundle_resources(bundle, source))
    return flatten(frames, source, n_buckets=n_buckets, rejected=with_source(rejected, source))
