"""The shadow test state machine's Lambda steps: parse the flow state, run one `inferops.shadow` step.

Errors keep their class name (`Retryable`, `StopRequested`, `ShadowTestFailed`): the state machine routes on
it. A state that does not parse is a `ShadowTestFailed` naming the field, never a stack trace.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from inferops.handlers import run_step
from inferops.shadow import STEPS, TOKEN_STEPS, FlowState, Services, ShadowTestFailed
from inferops.storage import Repository

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
# One attempt per call: the state machine retries with backoff and jitter, visibly, on the flow's clock.
_SDK = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)


@cache
def _services() -> Services:
    return Services(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker", config=_SDK),
        autoscaling=boto3.client("application-autoscaling", config=_SDK),
        cloudwatch=boto3.client("cloudwatch", config=_SDK),
        stepfunctions=boto3.client("stepfunctions", config=_SDK),
    )


@logger.inject_lambda_context(correlation_id_path="state.operation_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_step(
        event,
        logger,
        state=FlowState,
        services=_services,
        steps=STEPS,
        token_steps=TOKEN_STEPS,
        failure=ShadowTestFailed,
        keys=lambda state: {"endpoint": state.request.endpoint_name},
    )
