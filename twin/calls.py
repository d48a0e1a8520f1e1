"""AWS API calls made while the twin runs, attributed to the Lambda that made them: what benchmarks count and
what the chaos suite's invariants ("no second UpdateEndpoint for one request") are checked against.

`SageMakerCalls`: every SageMaker request the simulator serves, with its parameters and SageMaker's answer.
`ApiCalls`: every AWS API call any InferOps function makes, any service (botocore's client entry point).

    with SageMakerCalls(twin).installed() as calls:
        ...
    calls.effective("UpdateEndpoint")   # the calls InferOps made that SageMaker accepted (status < 400)

moto's `SageMakerResponse.call_action` (the simulator's entry point, fault injection included) is wrapped for
the block; a call counts as InferOps' when the thread making it is inside a Lambda invocation (its thread-local
`AWS_LAMBDA_FUNCTION_NAME`), so a test's or benchmark's own set-up and reads are told apart (`function` None).
An injected throttle or 5xx is recorded with its status: it reached SageMaker but changed nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from twin.lambdas import LambdaRuntime
from twin.runtime import Twin

_MISSING = object()


@dataclass
class Call:
    virtual: float
    wall: float
    function: str | None  # the Lambda (logical id) whose invocation made the call; None: not InferOps
    operation: str
    params: dict[str, Any] | None = None
    step: str = ""  # the invocation that made it: the deployment step's action, or the API route (set by callers)
    status: int = 200  # SageMaker's answer: >= 400 when it refused (an injected fault, a validation error)


@dataclass
class SageMakerCalls:
    """Every SageMaker request moto serves while installed, attributed to the calling Lambda (if any)."""

    twin: Twin
    calls: list[Call] = field(default_factory=list)

    @contextmanager
    def installed(self) -> Iterator[SageMakerCalls]:
        from moto.sagemaker.responses import SageMakerResponse

        previous = vars(SageMakerResponse).get("call_action", _MISSING)
        inner = SageMakerResponse.call_action  # the simulator's (fault injection, then moto's dispatch)
        twin = self.twin

        def call_action(response: Any) -> Any:
            operation = response._get_action()
            function = _caller(twin.lambdas)
            try:
                params = json.loads(response.body or "{}")
            except (TypeError, ValueError):
                params = None
            call = Call(twin.clock.now(), time.perf_counter(), function, operation, params)
            self.calls.append(call)
            try:
                result = inner(response)
            except Exception:
                call.status = 400  # moto raises its client errors (validation, not found)
                raise
            if isinstance(result, tuple) and result and isinstance(result[0], int):
                call.status = result[0]
            return result

        setattr(SageMakerResponse, "call_action", call_action)  # noqa: B010
        try:
            yield self
        finally:  # before Twin.stop(): the simulator then restores moto's own
            if previous is _MISSING:
                delattr(SageMakerResponse, "call_action")
            else:
                setattr(SageMakerResponse, "call_action", previous)  # noqa: B010

    def effective(self, operation: str, *, since: int = 0) -> list[Call]:
        """InferOps' calls of `operation` that SageMaker accepted (from index `since` of `calls`)."""
        return [c for c in self.calls[since:] if c.operation == operation and c.function is not None and c.status < 400]


def _caller(lambdas: LambdaRuntime) -> str | None:
    """The Lambda (logical id) whose invocation runs on this thread, or None."""
    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")  # thread-local overlay during an invocation
    if not name:
        return None
    try:
        return lambdas.logical_id(name)
    except KeyError:
        return name


@dataclass
class ApiCall:
    virtual: float
    function: str
    service: str
    operation: str


@dataclass
class ApiCalls:
    """Every AWS API call made from inside an InferOps Lambda while installed (botocore's `_make_api_call`), for
    the twins started meanwhile (`twin_of` names the running one). Step Functions' own service integrations
    (an `events:putEvents` task) are not Lambda calls and are not counted."""

    calls: list[ApiCall] = field(default_factory=list)

    def between(self, start: float, end: float) -> list[ApiCall]:
        return [c for c in self.calls if start <= c.virtual <= end]

    @contextmanager
    def installed(self) -> Iterator[ApiCalls]:
        from botocore.client import BaseClient

        inner = getattr(BaseClient, "_make_api_call")  # noqa: B009

        def make_api_call(client: BaseClient, operation: str, params: Any) -> Any:
            twin = Twin._active
            function = _caller(twin.lambdas) if twin is not None else None
            if twin is not None and function is not None:
                service = client.meta.service_model.service_name
                self.calls.append(ApiCall(twin.clock.now(), function, service, operation))
            return inner(client, operation, params)

        setattr(BaseClient, "_make_api_call", make_api_call)  # noqa: B010
        try:
            yield self
        finally:
            setattr(BaseClient, "_make_api_call", inner)  # noqa: B010
