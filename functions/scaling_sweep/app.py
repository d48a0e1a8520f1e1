"""Scheduled (EventBridge Scheduler): park idle or off-hours classic endpoints, unpark them in their awake hours,
and log every scale-to-zero endpoint's capacity for the cost report (inferops.scaling.sweep)."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger

from inferops.scaling import Clients, sweep
from inferops.storage import Repository

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


@cache
def _clients() -> Clients:
    return Clients(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker"),
        autoscaling=boto3.client("application-autoscaling"),
        cloudwatch=boto3.client("cloudwatch"),
        stepfunctions=boto3.client("stepfunctions"),
        state_machine_arn=os.environ["SCALING_STATE_MACHINE_ARN"],
    )


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clients = _clients()
    decisions = sweep(clients, clients.repo.now())
    logger.info("sweep done", extra={"decisions": decisions})
    return {"decisions": decisions}
