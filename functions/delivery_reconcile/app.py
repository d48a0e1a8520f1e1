"""Scheduled (EventBridge Scheduler): reconcile deliveries with the model registry, the fallback for lost
registry approvals, rejections and Finished events (inferops.delivery_reconcile)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from inferops import delivery_reconcile, logs
from inferops.delivery import Services, services_from_environment

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@cache
def _services() -> Services:
    return services_from_environment()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    services = _services()
    sweep = delivery_reconcile.reconcile(services, services.repo.now())
    for decision in sweep.decisions:  # a skip repeats every sweep until the registry changes: debug only
        log = logger.debug if decision.action == "skipped" else logger.info
        log(f"reconciled: {decision.action}", extra=decision.model_dump())
    for group, reason in sweep.failures.items():
        logger.warning("group not reconciled, the next sweep tries again", extra={"group": group, "reason": reason})
    repaired = sum(1 for d in sweep.decisions if d.action != "skipped")
    skipped = len(sweep.decisions) - repaired
    logger.info(
        "delivery reconciliation done", extra={"repaired": repaired, "skipped": skipped, "failed": len(sweep.failures)}
    )
    return sweep.model_dump()
