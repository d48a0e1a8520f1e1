"""Registry-driven delivery events (EventBridge).

- "SageMaker Model Package State Change": an approved version starts (or queues) its delivery, a rejected one
  stops it before production. A malformed event is logged with the reason and raised: EventBridge retries it,
  then dead-letters it.
- InferOps' own Finished events: a stage's deployment or shadow test ended (resume the delivery waiting for it),
  or a delivery ended (start the group's next queued one).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from inferops import deliveries, logs
from inferops.delivery import Services, services_from_environment
from inferops.errors import InvalidInput

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@cache
def _services() -> Services:
    return services_from_environment()


@logger.inject_lambda_context(correlation_id_path="id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        if event.get("source") == "aws.sagemaker":
            change = deliveries.normalize_package_event(event)
            result = deliveries.on_package_change(change, _services())
        else:
            finished = deliveries.normalize_inferops_event(event)
            result = deliveries.on_inferops_event(finished, _services())
    except InvalidInput as error:
        logger.error(
            "rejected event", extra={"reason": error.message, "field": error.field, "event_id": event.get("id")}
        )
        raise
    logger.info(str(event.get("detail-type")), extra=result)
    return result
