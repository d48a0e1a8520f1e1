"""The deployment state machine's Lambda steps: parse the flow state, run one `inferops.rollout` step.

Errors keep their class name (`Retryable`, `StopRequested`, `DeploymentFailed`): the state machine routes
on it. A state that does not parse is a `DeploymentFailed` naming the field, never a stack trace.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from pydantic import BaseModel, ValidationError

from inferops import logs
from inferops.errors import first_problem
from inferops.rollout import STEPS, TOKEN_STEPS, DeploymentFailed, FlowState, Services
from inferops.storage import Repository

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()
# One attempt per call: the state machine retries with backoff and jitter, visibly, on the flow's clock.
_SDK = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)


class StepCall(BaseModel):
    action: str
    state: dict[str, Any]
    token: str | None = None


@cache
def _services() -> Services:
    return Services(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker", config=_SDK),
        autoscaling=boto3.client("application-autoscaling", config=_SDK),
        cloudwatch=boto3.client("cloudwatch", config=_SDK),
        stepfunctions=boto3.client("stepfunctions", config=_SDK),
    )


def _parse(event: dict[str, Any]) -> tuple[StepCall, FlowState]:
    try:
        call = StepCall.model_validate(event)
        return call, FlowState.model_validate(call.state)
    except ValidationError as error:
        field, message = first_problem(error)
        raise DeploymentFailed(f"invalid flow state: {field}: {message}") from error


@logger.inject_lambda_context(correlation_id_path="state.operation_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    call, state = _parse(event)
    logger.append_keys(action=call.action, endpoint=state.request.endpoint_name)
    if call.action in TOKEN_STEPS:
        if not call.token:
            raise DeploymentFailed(f"step {call.action} needs the task token")
        result = TOKEN_STEPS[call.action](state, _services(), call.token)
    elif call.action in STEPS:
        result = STEPS[call.action](state, _services())
    else:
        raise DeploymentFailed(f"unknown step {call.action!r}")
    logger.info("step done", extra={"next": result.next})
    return result.model_dump(mode="json")
