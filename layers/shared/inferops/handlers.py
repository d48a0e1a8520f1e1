"""What the EventBridge reaction handlers share: their clients, and parse -> react -> log.

A malformed event raises after logging the reason: EventBridge retries it, then dead-letters it to the
rule's DLQ, so nothing is lost silently and nothing is half done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import boto3

from inferops.errors import InvalidInput
from inferops.storage import Repository

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from mypy_boto3_stepfunctions import SFNClient


class Change(Protocol):
    def describe(self) -> str: ...


C = TypeVar("C", bound=Change)


@cache
def repository() -> Repository:
    return Repository(os.environ["TABLE_NAME"])


@cache
def stepfunctions() -> SFNClient:
    return boto3.client("stepfunctions")


def react_to_event(
    event: dict[str, Any],
    logger: Logger,
    normalize: Callable[[dict[str, Any]], C],
    react: Callable[[C, Repository, SFNClient], dict[str, Any]],
) -> dict[str, Any]:
    try:
        change = normalize(event)
    except InvalidInput as error:
        logger.error(
            "rejected event", extra={"reason": error.message, "field": error.field, "event_id": event.get("id")}
        )
        raise
    result = react(change, repository(), stepfunctions())
    logger.info(change.describe(), extra=result)
    return result
