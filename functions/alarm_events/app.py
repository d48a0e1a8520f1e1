"""CloudWatch alarm state changes (EventBridge): an alarm in ALARM stops the operations watching it.

A malformed event raises: EventBridge retries, then dead-letters it to the rule's DLQ with the reason logged.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger

from inferops.alarm_events import normalize, react
from inferops.errors import InvalidInput
from inferops.storage import Repository

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_stepfunctions import SFNClient

logger = Logger()


@cache
def _repository() -> Repository:
    return Repository(os.environ["TABLE_NAME"])


@cache
def _stepfunctions() -> SFNClient:
    return boto3.client("stepfunctions")


@logger.inject_lambda_context(correlation_id_path="detail.alarmName")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        change = normalize(event)
    except InvalidInput as error:
        logger.error(
            "rejected event", extra={"reason": error.message, "field": error.field, "event_id": event.get("id")}
        )
        raise
    result = react(change, _repository(), _stepfunctions())
    logger.info(change.describe(), extra=result)
    return result
