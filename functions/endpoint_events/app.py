"""SageMaker endpoint events (EventBridge): record them and resume the flow waiting for the endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferops import logs
from inferops.endpoint_events import normalize, react
from inferops.handlers import react_to_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@logger.inject_lambda_context(correlation_id_path="detail.EndpointName")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return react_to_event(event, logger, normalize, react)
