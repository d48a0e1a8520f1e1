"""What the Lambda handlers share: the EventBridge reactions' clients and parse -> react -> log, and the state
machines' steps' parse -> run one step -> log.

A malformed event raises after logging the reason: EventBridge retries it, then dead-letters it to the
rule's DLQ, so nothing is lost silently and nothing is half done. A flow state that does not parse raises the
flow's failure class naming the field (the state machine routes on the class name), never a stack trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import boto3
from pydantic import BaseModel, ValidationError

from inferops.errors import InvalidInput, first_problem
from inferops.model import Model
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


F = TypeVar("F", bound=BaseModel)
V = TypeVar("V")


class StepCall(Model):
    """What a state machine's Lambda task sends: the step, the flow's state, and its task token if it waits."""

    action: str
    state: dict[str, Any]
    token: str | None = None


def run_step(
    event: dict[str, Any],
    logger: Logger,
    *,
    state: type[F],
    services: Callable[[], V],
    steps: Mapping[str, Callable[[F, V], F]],
    token_steps: Mapping[str, Callable[[F, V, str], F]],
    failure: type[Exception],
    keys: Callable[[F], dict[str, Any]],
) -> dict[str, Any]:
    """Parse the call and the flow state, run the named step, return the new state (what the Choice reads)."""
    try:
        call = StepCall.model_validate(event)
        flow = state.model_validate(call.state)
    except ValidationError as error:
        field, message = first_problem(error)
        raise failure(f"invalid flow state: {field}: {message}") from error
    logger.append_keys(action=call.action, **keys(flow))
    if call.action in token_steps:
        if not call.token:
            raise failure(f"step {call.action} needs the task token")
        result = token_steps[call.action](flow, services(), call.token)
    elif call.action in steps:
        result = steps[call.action](flow, services())
    else:
        raise failure(f"unknown step {call.action!r}")
    logger.info("step done", extra={"next": getattr(result, "next", None)})
    return result.model_dump(mode="json")
