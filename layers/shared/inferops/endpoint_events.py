"""Reactions to SageMaker's endpoint events: normalize, drop repeats and stale ones, record, resume.

EventBridge's shapes differ from DescribeEndpoint's: statuses are UPPER_SNAKE (`IN_SERVICE`), times are
epoch milliseconds, deployment progress sits in `PendingDeploymentSummary`. SageMaker may send an event
more than once and EventBridge may deliver out of order, so each endpoint's newest reported state is kept
with a conditional write and anything not newer is ignored. A flow waiting for an endpoint to settle has
stored its task token under `WAIT_PURPOSE`; the first settled event takes the token (atomically) and
resumes the execution. A lost event only delays the flow: its heartbeat falls back to DescribeEndpoint.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from inferops.errors import InvalidInput, invalid
from inferops.model import Model
from inferops.storage import WaitPurpose

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

    from inferops.storage import Repository

ENDPOINT_STATE_CHANGE = "SageMaker Endpoint State Change"
DEPLOYMENT_STATE_CHANGE = "SageMaker Endpoint Deployment State Change"
WAIT_PURPOSE = WaitPurpose.ENDPOINT_UPDATE
STATUSES = {
    "OUT_OF_SERVICE": "OutOfService",
    "CREATING": "Creating",
    "UPDATING": "Updating",
    "SYSTEM_UPDATING": "SystemUpdating",
    "ROLLING_BACK": "RollingBack",
    "IN_SERVICE": "InService",
    "DELETING": "Deleting",
    "FAILED": "Failed",
    "UPDATE_ROLLBACK_FAILED": "UpdateRollbackFailed",
}
SETTLED = frozenset({"InService", "Failed", "UpdateRollbackFailed", "OutOfService"})


class _Detail(Model):
    model_config = ConfigDict(extra="ignore")

    EndpointName: str = Field(min_length=1, max_length=63)
    EndpointStatus: str
    EndpointConfigName: str | None = None
    LastModifiedTime: float | None = None
    FailureReason: str | None = None
    PendingDeploymentSummary: dict[str, Any] | None = None
    ProductionVariants: list[dict[str, Any]] = Field(default_factory=list)


class _Envelope(Model):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    detail_type: Literal["SageMaker Endpoint State Change", "SageMaker Endpoint Deployment State Change"] = Field(
        alias="detail-type"
    )
    source: Literal["aws.sagemaker"]
    time: datetime
    detail: _Detail


class EndpointChange(Model):
    """One event in DescribeEndpoint's vocabulary: what the flows and the timeline use."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    kind: Literal["endpoint", "deployment"]
    endpoint_name: str
    status: str
    config_name: str | None
    pending_config_name: str | None
    failure_reason: str | None
    modified_ms: int
    variant_statuses: list[str]

    @property
    def settled(self) -> bool:
        return self.kind == "endpoint" and self.status in SETTLED

    def fingerprint(self) -> str:
        """What makes two events with the same time different (a deployment's phases share one)."""
        key = json.dumps([self.status, self.config_name, self.pending_config_name, self.variant_statuses])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def describe(self) -> str:
        text = f"endpoint {self.status}"
        if self.config_name:
            text += f" on {self.config_name}"
        if self.variant_statuses:
            text += f"; new fleet: {', '.join(self.variant_statuses)}"
        if self.failure_reason:
            text += f" ({self.failure_reason})"
        return text


def normalize(event: dict[str, Any]) -> EndpointChange:
    """Parse an EventBridge event; malformed input is an InvalidInput naming the field (dead-lettered)."""
    try:
        envelope = _Envelope.model_validate(event)
    except ValidationError as error:
        raise invalid(error, "not a SageMaker endpoint event") from error
    detail = envelope.detail
    status = STATUSES.get(detail.EndpointStatus, detail.EndpointStatus)
    if status not in STATUSES.values():
        raise InvalidInput(f"unknown endpoint status {detail.EndpointStatus!r}", field="detail.EndpointStatus")
    pending = detail.PendingDeploymentSummary or {}
    statuses = [
        str(s.get("Status"))
        for variant in pending.get("ProductionVariants", [])
        for s in variant.get("VariantStatus", [])[-1:]
    ]
    modified = detail.LastModifiedTime
    return EndpointChange(
        event_id=envelope.id,
        kind="endpoint" if envelope.detail_type == ENDPOINT_STATE_CHANGE else "deployment",
        endpoint_name=detail.EndpointName,
        status=status,
        config_name=detail.EndpointConfigName,
        pending_config_name=pending.get("EndpointConfigName"),
        failure_reason=detail.FailureReason,
        modified_ms=int(modified) if modified is not None else int(envelope.time.timestamp() * 1000),
        variant_statuses=statuses,
    )


def react(change: EndpointChange, repo: Repository, stepfunctions: SFNClient) -> dict[str, Any]:
    """Record a new change on the endpoint's running operation and resume a flow waiting for it.

    A repeat may still resume (its first delivery may have failed to); an event older than the state
    already recorded, or older than the waiting token, never does.
    """
    freshness = repo.record_endpoint_state(change.endpoint_name, change.kind, change.modified_ms, change.fingerprint())
    if freshness == "stale":
        return {"action": "ignored", "reason": "older than the state already recorded"}
    lock = repo.get_lock(change.endpoint_name)
    operation = lock.owner if lock is not None and not lock.expired else None
    if operation is not None and freshness == "new":
        repo.append_timeline(operation, "sagemaker", change.describe(), change.model_dump(mode="json"))
    token = repo.take_task_token(change.endpoint_name, WAIT_PURPOSE) if change.settled else None
    if token is None:
        return {"action": "recorded" if freshness == "new" else "ignored", "operation": operation}
    if change.modified_ms < token.created_at.timestamp() * 1000:  # settled before the flow started waiting
        repo.put_back_task_token(token)
        return {"action": "recorded", "operation": operation, "token": "kept (event predates the wait)"}
    gone = repo.send_to_task_token(stepfunctions, token, output=change.model_dump_json())  # a 5xx: retried delivery
    if gone:  # the flow already moved on (heartbeat fallback, abort, timeout)
        return {"action": "recorded", "operation": operation, "token": f"gone ({gone})"}
    return {"action": "resumed", "operation": token.operation_id}
