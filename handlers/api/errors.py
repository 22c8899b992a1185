"""Every error the API returns is a FHIR OperationOutcome; this module builds them and installs the handlers.

Diagnostics name the element (``expression``, FHIRPath-like: ``Bundle.entry[3].resource.period.start``) and
the resource type/id, never clinical values. Unexpected exceptions are logged by class name only (their
messages may quote patient data) and answered with a generic 500.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

FHIR_JSON = "application/fhir+json"
log = logging.getLogger("handlers.api")

# HTTP status -> OperationOutcome.issue.code (http://hl7.org/fhir/issue-type)
_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    500: "exception",
}


class ApiError(Exception):
    """An error answered with ``status`` and an OperationOutcome of one or more issues."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        *,
        expression: Sequence[str] = (),
        code: str | None = None,
        issues: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.expression = list(expression)
        self.code = code or _ISSUE_CODE.get(status, "processing")
        self.extra_issues = list(issues)
        self.headers = headers

    def outcome(self) -> dict[str, Any]:
        first = issue(self.code, self.diagnostics, self.expression)
        return operation_outcome([first, *self.extra_issues])


def issue(
    code: str, diagnostics: str, expression: Sequence[str] = (), severity: str = "error"
) -> dict[str, Any]:
    out: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        out["expression"] = list(expression)
    return out


def operation_outcome(issues: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def outcome_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def _loc(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(parts) if parts else "request"


def install(app: FastAPI) -> None:
    """Register the OperationOutcome handlers on ``app``."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return outcome_response(exc.status, exc.outcome(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = [
            issue("invalid", f"{_loc(e.get('loc', ()))}: {e.get('msg', 'invalid')}", [_loc(e.get("loc", ()))])
            for e in exc.errors()
        ]
        return outcome_response(400, operation_outcome(issues or [issue("invalid", "invalid request")]))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        text = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and text == "Not Found":
            text = f"no route for {request.method} {request.url.path}"
        code = _ISSUE_CODE.get(exc.status_code, "processing")
        return outcome_response(
            exc.status_code, operation_outcome([issue(code, text)]), getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "-")
        log.error("request %s failed: %s", request_id, type(exc).__name__)
        body = operation_outcome([issue("exception", f"internal error (request {request_id})")])
        return outcome_response(500, body)
