"""What every flow shares: starting its execution under the endpoint's lock, and what its steps Lambda does
(parse the call, run one step, return the state).

A flow module provides `STEPS` (state -> state) and `TOKEN_STEPS` (state, task token -> state), its `FlowState`
model and its final error class; errors keep their class name, which the state machine routes on. A call that
does not parse is that final error naming the field, never a stack trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from pydantic import BaseModel, ValidationError

from inferops.errors import Conflict, first_problem
from inferops.rollout import Services
from inferops.storage import OperationRecord, OperationStatus, Repository

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# One attempt per call: the state machine retries with backoff and jitter, visibly, on the flow's clock.
SDK_CONFIG = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)

S = TypeVar("S", bound=BaseModel)


class StepCall(BaseModel):
    action: str
    state: dict[str, Any]
    token: str | None = None


@cache
def lambda_services() -> Services:
    """The clients of a steps Lambda, made once per container."""
    return Services(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker", config=SDK_CONFIG),
        autoscaling=boto3.client("application-autoscaling", config=SDK_CONFIG),
        cloudwatch=boto3.client("cloudwatch", config=SDK_CONFIG),
        stepfunctions=boto3.client("stepfunctions", config=SDK_CONFIG),
    )


def parse(event: Mapping[str, Any], state_type: type[S], failure: type[Exception]) -> tuple[StepCall, S]:
    try:
        call = StepCall.model_validate(event)
        return call, state_type.model_validate(call.state)
    except ValidationError as error:
        field, message = first_problem(error)
        raise failure(f"invalid flow state: {field}: {message}") from error


def run(
    call: StepCall,
    state: S,
    services: Services,
    steps: Mapping[str, Callable[[S, Services], S]],
    token_steps: Mapping[str, Callable[[S, Services, str], S]],
    failure: type[Exception],
) -> S:
    if call.action in token_steps:
        if not call.token:
            raise failure(f"step {call.action} needs the task token")
        return token_steps[call.action](state, services, call.token)
    if call.action in steps:
        return steps[call.action](state, services)
    raise failure(f"unknown step {call.action!r}")


def start_execution(
    repo: Repository,
    stepfunctions: SFNClient,
    state_machine_arn: str,
    record: OperationRecord,
    state: BaseModel,
    *,
    lease_seconds: float,
    field: str,
) -> str:
    """Take the endpoint's lock for the operation (lost race: REFUSED, Conflict naming `field`), start the flow
    named after it (failing: lock released, FAILED) and record the execution; its ARN."""
    try:
        repo.acquire_lock(record.endpoint, record.id, lease_seconds)
    except Conflict as busy:
        repo.transition(record.id, OperationStatus.REFUSED, result={"reason": busy.message})
        raise Conflict(busy.message, field) from busy
    try:
        execution = stepfunctions.start_execution(
            stateMachineArn=state_machine_arn, name=record.id, input=state.model_dump_json()
        )
    except Exception as error:
        repo.release_lock(record.endpoint, record.id)
        repo.transition(record.id, OperationStatus.FAILED, result={"reason": f"the flow did not start: {error}"})
        raise
    repo.set_execution(record.id, execution["executionArn"])
    return execution["executionArn"]
