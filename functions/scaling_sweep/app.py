"""Scheduled (EventBridge Scheduler): park idle or off-hours classic endpoints, unpark them in their awake hours,
and log every scale-to-zero endpoint's capacity for the cost report (inferops.scaling.sweep)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from inferops import logs
from inferops.scaling import Clients, clients_from_env, sweep

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@cache
def _clients() -> Clients:
    return clients_from_env()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clients = _clients()
    decisions = sweep(clients, clients.repo.now())
    logger.info("sweep done", extra={"decisions": decisions})
    return {"decisions": decisions}
