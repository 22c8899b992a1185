"""AWS test tier: one ThreadedMotoServer on 127.0.0.1 for the session, with moto's Lambdas run in-process.

moto runs Step Functions definitions (``execute_state_machine``) but runs no Lambda code without Docker, so
``LambdaShim`` replaces ``LambdaFunction._invoke_lambda`` (the method every invoke path ends in: boto3
``Invoke``, Step Functions ``lambda:invoke``, S3 notifications) with "import the function's ``Handler`` and
call it" (reference/aws.md section 3). The handlers are unchanged production code: boto3 and polars reach the
server through ``AWS_ENDPOINT_URL``. The shim patches moto internals: it is checked against moto 5.2.5 only.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import threading
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise

REGION = "us-east-1"
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Context:
    """The slice of the Lambda context object that handlers may read."""

    function_name: str
    memory_limit_in_mb: int
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class LambdaShim:
    """Routes moto Lambda invocations to importable Python handlers; records every call."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _original: Callable[..., Any] | None = None

    @staticmethod
    def resolve(handler: str) -> Callable[..., Any]:
        module, _, name = handler.rpartition(".")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    def install(self) -> None:
        from moto.awslambda.models import LambdaFunction

        shim = self
        self._original = LambdaFunction._invoke_lambda

        def _invoke_lambda(fn: Any, event: Any = None) -> tuple[str, bool, str]:
            if isinstance(event, (str, bytes)):
                event = json.loads(event or "{}")
            event = {} if event is None else event
            with shim._lock:
                shim.calls.append((fn.function_name, event))
            try:
                context = _Context(
                    fn.function_name, int(fn.memory_size), invoked_function_arn=fn.function_arn
                )
                result = shim.resolve(fn.handler)(event, context)
                return json.dumps(result), False, ""
            except Exception as exc:  # Lambda reports a handled error as FunctionError + this payload
                payload = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
                return json.dumps(payload), True, traceback.format_exc()

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]

    def uninstall(self) -> None:
        from moto.awslambda.models import LambdaFunction

        if self._original is not None:
            LambdaFunction._invoke_lambda = self._original  # type: ignore[method-assign]
            self._original = None

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self.calls]


@dataclass(frozen=True)
class Moto:
    endpoint: str
    shim: LambdaShim

    def reset(self) -> None:
        self.shim.calls.clear()
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).read()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """The session's moto server: fake credentials and endpoint in the environment, SFN execution on."""
    pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "MOTO_PORT": str(port),  # moto's Step Functions call its own Lambda API at localhost:MOTO_PORT
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    _forget_boto3_credentials()
    shim = LambdaShim()
    shim.install()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        body = json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode()
        request = urllib.request.Request(
            f"{endpoint}/moto-api/config",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).read()
        yield Moto(endpoint, shim)
    finally:
        server.stop()
        shim.uninstall()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _forget_boto3_credentials()


def _forget_boto3_credentials() -> None:
    """boto3's default session keeps the first credentials it resolves for the whole process: drop it
    whenever this tier changes the credentials in the environment (other tests use other ones)."""
    import boto3

    boto3.DEFAULT_SESSION = None
