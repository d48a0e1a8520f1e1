"""The delivery state machine's Lambda steps: parse the flow state, run one `inferops.delivery` step.

Errors keep their class name (`Retryable`, `EndpointBusy`, `DeliveryFailed`): the state machine routes on it.
A state that does not parse is a `DeliveryFailed` naming the field, never a stack trace.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.config import Config
from pydantic import BaseModel, ValidationError

from inferops.delivery import STEPS, TOKEN_STEPS, DeliveryFailed, DeliveryState, Services, services_from_environment
from inferops.errors import first_problem

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
# One attempt per call: the state machine retries with backoff and jitter, visibly, on the flow's clock.
_SDK = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)


class StepCall(BaseModel):
    action: str
    state: dict[str, Any]
    token: str | None = None


@cache
def _services() -> Services:
    return services_from_environment(_SDK)


def _parse(event: dict[str, Any]) -> tuple[StepCall, DeliveryState]:
    try:
        call = StepCall.model_validate(event)
        return call, DeliveryState.model_validate(call.state)
    except ValidationError as error:
        field, message = first_problem(error)
        raise DeliveryFailed(f"invalid flow state: {field}: {message}") from error


@logger.inject_lambda_context(correlation_id_path="state.delivery_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    call, state = _parse(event)
    logger.append_keys(action=call.action, group=state.group, version=state.version)
    if call.action in TOKEN_STEPS:
        if not call.token:
            raise DeliveryFailed(f"step {call.action} needs the task token")
        result = TOKEN_STEPS[call.action](state, _services(), call.token)
    elif call.action in STEPS:
        result = STEPS[call.action](state, _services())
    else:
        raise DeliveryFailed(f"unknown step {call.action!r}")
    logger.info("step done", extra={"next": result.next})
    return result.model_dump(mode="json")
