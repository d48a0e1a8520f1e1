"""The delivery state machine's Lambda steps: parse the flow state, run one `inferops.delivery` step.

Errors keep their class name (`Retryable`, `EndpointBusy`, `DeliveryFailed`): the state machine routes on it.
A state that does not parse is a `DeliveryFailed` naming the field, never a stack trace.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from inferops import flow_steps, logs
from inferops.delivery import STEPS, TOKEN_STEPS, DeliveryFailed, DeliveryState, Services, services_from_environment
from inferops.handlers import run_step

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@cache
def _services() -> Services:
    return services_from_environment(flow_steps.SDK_CONFIG)


@logger.inject_lambda_context(correlation_id_path="state.delivery_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_step(
        event,
        logger,
        state=DeliveryState,
        services=_services,
        steps=STEPS,
        token_steps=TOKEN_STEPS,
        failure=DeliveryFailed,
        keys=lambda state: {"group": state.group, "version": state.version},
    )
