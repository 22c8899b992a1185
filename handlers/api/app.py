"""``create_app(settings)``: the FastAPI application. The library is compiled once per process (in the
lifespan, or on the first request where the lifespan is off, as under Mangum)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.plan import MeasurePlan
from handlers.api import errors
from handlers.api.deps import EngineHolder
from handlers.api.routes import router
from handlers.api.schemas import EVALUATE_INPUT_SCHEMA
from handlers.settings import Settings, load_settings

log = logging.getLogger("handlers.api")


class AccessLog:
    """One log line per request: id, method, path, status, milliseconds. Never bodies or query values other
    than what the path holds (measure and patient ids)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %s -> %d in %.1f ms",
                request_id,
                scope.get("method"),
                scope.get("path"),
                status,
                1000 * (time.perf_counter() - started),
            )


def create_app(
    settings: Settings | None = None, *, plans: Sequence[MeasurePlan] | None = None, warm: bool = True
) -> FastAPI:
    """The API. ``plans`` replaces compiling the configured library (tests); ``warm`` compiles it in the
    lifespan (otherwise on the first request)."""
    settings = settings or load_settings()
    holder = EngineHolder(settings, plans)
    logging.getLogger("handlers.api").setLevel(settings.log_level.upper())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            holder.get()
        yield

    app = FastAPI(
        title="measures-engine",
        summary="Clinical quality measures for one patient, FHIR $evaluate-measure style",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.engine = holder
    errors.install(app)
    app.include_router(router)
    app.add_middleware(AccessLog)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["EvaluateInput"] = (
                EVALUATE_INPUT_SCHEMA
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
