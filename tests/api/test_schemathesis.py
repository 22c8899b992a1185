"""A bounded property-based run over the OpenAPI schema: no operation answers 5xx."""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from handlers.api import create_app  # noqa: E402
from handlers.settings import Settings  # noqa: E402

from .conftest import MEASURE_IDS  # noqa: E402


@pytest.mark.slow
def test_no_server_errors(plans: list[Any], lake: str) -> None:
    from hypothesis import HealthCheck, given, settings

    app = create_app(Settings(data=lake, measures=",".join(MEASURE_IDS), max_body_bytes=100_000), plans=plans)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls: list[int] = []

    def run(op: Any) -> None:
        @given(case=op.as_strategy())
        @settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call()
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{op.method.upper()} {op.path} -> {response.status_code}")

        check()

    for operation in schema.get_all_operations():
        run(operation.ok())
    assert len(calls) >= 5 * len(MEASURE_IDS), "the run made too few calls"
    assert not failures, sorted(set(failures))
