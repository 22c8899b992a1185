"""AWS Lambda entry point for the API (API Gateway HTTP API, payload v2): ``handlers.lambda_api.handler``.

The app and the compiled library are built once per execution environment, on the first invocation (Mangum
runs with ``lifespan="off"`` because it would otherwise run the lifespan on every invocation). Settings come
from the function's environment (handlers/settings.py).
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum

from handlers.api.app import create_app
from handlers.api.errors import FHIR_JSON
from handlers.settings import Settings, load_settings

TEXT_MIME_TYPES = ["application/json", FHIR_JSON, "text/"]

_handler: Mangum | None = None


def build_handler(settings: Settings | None = None, **app_kwargs: Any) -> Mangum:
    """A Mangum adapter around a fresh app (tests pass settings and plans)."""
    app = create_app(settings or load_settings(), **app_kwargs)
    return Mangum(app, lifespan="off", text_mime_types=TEXT_MIME_TYPES)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        _handler = build_handler()
    result: dict[str, Any] = _handler(event, context)
    return result
