"""Dependencies: the compiled library (built once per process), authentication, and the bounded body read."""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from fastapi import Request

from datasets import lake
from engine.library import library_hash, load_library
from engine.plan import MeasurePlan
from handlers.api.errors import ApiError
from handlers.settings import Settings

log = logging.getLogger("handlers.api")


@dataclass
class Engine:
    """The compiled plans (sorted by id) and, when a lake is configured, its manifest (read once)."""

    settings: Settings
    plans: tuple[MeasurePlan, ...]
    library_hash: str
    _manifest: lake.Manifest | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def by_id(self) -> dict[str, MeasurePlan]:
        return {p.measure_id.lower(): p for p in self.plans}

    def plan(self, measure_id: str) -> MeasurePlan:
        found = self.by_id.get(measure_id.strip().lower())
        if found is None:
            raise ApiError(
                404,
                f"Measure/{measure_id} is not in the library (known: {', '.join(self.ids)})",
                expression=["Measure.id"],
            )
        return found

    def select(self, measure_ids: Sequence[str]) -> list[MeasurePlan]:
        """The named plans (all when none are named), in library order, without duplicates."""
        names = [n for m in measure_ids for n in m.split(",") if n.strip()]
        if not names:
            return list(self.plans)
        wanted = {self.plan(n).measure_id for n in names}
        return [p for p in self.plans if p.measure_id in wanted]

    @property
    def ids(self) -> list[str]:
        return [p.measure_id for p in self.plans]

    def manifest(self) -> lake.Manifest:
        """The configured lake's manifest (cached; a lake is immutable once its manifest is written)."""
        if self.settings.data is None:
            raise ApiError(404, "no patient lake is configured (MEASURES_DATA)", code="not-supported")
        with self._lock:
            if self._manifest is None:
                self._manifest = lake.read_manifest(self.settings.data)
            return self._manifest


def build_engine(settings: Settings, plans: Sequence[MeasurePlan] | None = None) -> Engine:
    """Compile the configured library (or take ``plans``, for tests) once."""
    if plans is None:
        plans = load_library(settings.measure_ids, settings.valuesets)
    ordered = tuple(sorted(plans, key=lambda p: p.measure_id))
    log.info("compiled %d measures: %s", len(ordered), ", ".join(p.measure_id for p in ordered))
    return Engine(settings, ordered, library_hash(ordered))


class EngineHolder:
    """Builds the engine at most once (the lifespan warms it; Lambda with lifespan off builds it lazily)."""

    def __init__(self, settings: Settings, plans: Sequence[MeasurePlan] | None = None) -> None:
        self.settings = settings
        self._plans = plans
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def get(self) -> Engine:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = build_engine(self.settings, self._plans)
        return self._engine


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    holder: EngineHolder = request.app.state.engine
    return holder.get()


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def require_auth(request: Request) -> None:
    """When an API key is configured: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, else 401."""
    settings = get_settings(request)
    expected = settings.api_key
    if not expected:
        return
    key = request.headers.get("x-api-key")
    if key is not None and _equal(key, expected):
        return
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token and _equal(token.strip(), expected):
        return
    raise ApiError(
        401,
        "missing or invalid credentials (X-API-Key or Authorization: Bearer)",
        headers={"WWW-Authenticate": 'Bearer realm="measures"'},
    )


async def read_body(request: Request) -> bytes:
    """The request body, refused with 413 above the configured limit (declared length, then streamed size)."""
    limit = get_settings(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number", expression=["Content-Length"]) from None
        if length > limit:
            raise ApiError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
