"""The scaling state machine's Lambda steps: parse the flow state, run one `inferops.scaling` step.

Errors keep their class name (`Retryable`, `CapacityUnavailable`, `ScalingFailed`): the state machine routes
on it. A state that does not parse is a `ScalingFailed` naming the field, never a stack trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from inferops import flow_steps
from inferops.scaling import STEPS, TOKEN_STEPS, FlowState, ScalingFailed

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


@logger.inject_lambda_context(correlation_id_path="state.operation_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    call, state = flow_steps.parse(event, FlowState, ScalingFailed)
    logger.append_keys(action=call.action, endpoint=state.endpoint_name, scaling=state.action)
    result = flow_steps.run(call, state, flow_steps.lambda_services(), STEPS, TOKEN_STEPS, ScalingFailed)
    logger.info("step done", extra={"next": result.next})
    return result.model_dump(mode="json")
