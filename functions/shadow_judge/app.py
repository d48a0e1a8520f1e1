"""Scheduled (EventBridge Scheduler): judge every running shadow test's analysis intervals that ended, each once;
a confirmed failing verdict stops its test (inferops.shadow_judge)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from inferops import logs, shadow_judge

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@cache
def _clients() -> shadow_judge.Clients:
    return shadow_judge.clients_from_env()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    clients = _clients()
    done = shadow_judge.run(clients, clients.repo.now())
    for decision in done.decisions:  # a test with nothing new due is routine: debug only
        log = logger.debug if decision.action == "waiting" else logger.info
        log(f"shadow test {decision.action}", extra=decision.model_dump())
    for test, reason in done.failures.items():
        logger.warning("not judged, the next run tries again", extra={"operation_id": test, "reason": reason})
    recorded = sum(d.recorded for d in done.decisions)
    logger.info(
        "judge run done", extra={"tests": len(done.decisions), "verdicts": recorded, "failed": len(done.failures)}
    )
    if done.failures and not done.decisions:
        raise RuntimeError(f"no shadow test judged: {next(iter(done.failures.values()))}")  # counted by the alarm
    return done.model_dump()
