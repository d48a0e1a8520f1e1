"""Every SageMaker request the twin serves, attributed to the Lambda that made it: what benchmarks count and what
the chaos suite's invariants ("no second UpdateEndpoint for one request") are checked against.

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
            name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")  # thread-local overlay during an invocation
            function = None
            if name:
                try:
                    function = twin.lambdas.logical_id(name)
                except KeyError:
                    function = name
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

        SageMakerResponse.call_action = call_action
        try:
            yield self
        finally:  # before Twin.stop(): the simulator then restores moto's own
            if previous is _MISSING:
                del SageMakerResponse.call_action
            else:
                SageMakerResponse.call_action = previous

    def effective(self, operation: str, *, since: int = 0) -> list[Call]:
        """InferOps' calls of `operation` that SageMaker accepted (from index `since` of `calls`)."""
        return [c for c in self.calls[since:] if c.operation == operation and c.function is not None and c.status < 400]
