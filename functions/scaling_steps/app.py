"""The scaling state machine's Lambda steps: parse the flow state, run one `inferops.scaling` step.

Errors keep their class name (`Retryable`, `CapacityUnavailable`, `ScalingFailed`): the state machine routes
on it. A state that does not parse is a `ScalingFailed` naming the field, never a stack trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferops import flow_steps, logs
from inferops.handlers import run_step
from inferops.scaling import STEPS, TOKEN_STEPS, FlowState, ScalingFailed

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@logger.inject_lambda_context(correlation_id_path="state.operation_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_step(
        event,
        logger,
        state=FlowState,
        services=flow_steps.lambda_services,
        steps=STEPS,
        token_steps=TOKEN_STEPS,
        failure=ScalingFailed,
        keys=lambda state: {"endpoint": state.endpoint_name, "scaling": state.action},
    )
