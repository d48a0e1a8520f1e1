"""Registry-driven deliveries as the API and the event handler see them.

- Policies: PUT (checked with the planner against every stage's endpoint), GET, DELETE.
- The registry's "SageMaker Model Package State Change" event: `Approved` records one delivery per version
  (its id is derived from the version, so the write is conditional and repeats of the event are no-ops),
  supersedes the group's older deliveries that are queued or waiting, and starts it when no other delivery of
  the group runs (else it queues); `Rejected` stops the version's delivery unless its last (production) stage
  has started.
- The children's Finished events resume the delivery waiting for them; a delivery's Finished event starts
  the group's newest queued delivery.
- Reading (list, get), approving the next stage, cancelling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from inferops import deployments, shadow_tests
from inferops.delivery import (
    EVENT_DETAIL_TYPE,
    KIND,
    STAGES,
    DeliveryState,
    Services,
    StageRun,
    group_lock,
    initial_state,
)
from inferops.delivery_policy import DeliveryPolicy, PolicyRefused, check
from inferops.errors import Conflict, InvalidInput, NotFound, invalid
from inferops.model import Model
from inferops.storage import OperationRecord, OperationStatus, Repository, WaitPurpose

PACKAGE_STATE_CHANGE = "SageMaker Model Package State Change"
CHILD_FINISHED = ("InferOps Deployment Finished", "InferOps Shadow Test Finished")
START_LEASE_SECONDS = 900  # the execution's first step takes the group lock for the delivery's life
_S = OperationStatus


def delivery_id(group: str, version: int) -> str:
    """One delivery per model package version: the id is the version's, so recording it twice conflicts."""
    return f"dlv-{group}-{version}"


# ------------------------------------------------------------------------------------------------ policies
class PolicyView(Model):
    model_config = ConfigDict(frozen=True)

    group: str
    policy: DeliveryPolicy
    updated_at: str
    updated_by: str


def put_policy(group: str, policy: DeliveryPolicy, clients: Services, *, by: str) -> PolicyView:
    """Check every stage against its endpoint (422 naming the endpoint and the rule), then store."""
    violations = check(policy, clients.deployments.sagemaker, clients.deployments.autoscaling)
    if violations:
        raise PolicyRefused(violations)
    stored = clients.repo.put_delivery_policy(group, policy.model_dump(mode="json"), by=by)
    return PolicyView.model_validate(stored)


def get_policy(group: str, repo: Repository) -> PolicyView:
    stored = repo.get_delivery_policy(group)
    if stored is None:
        raise NotFound(f"model package group {group} has no delivery policy", "group")
    return PolicyView.model_validate(stored)


def delete_policy(group: str, repo: Repository) -> None:
    """Later approvals of the group start nothing; deliveries already recorded go on."""
    if not repo.delete_delivery_policy(group):
        raise NotFound(f"model package group {group} has no delivery policy", "group")


# ------------------------------------------------------------------------------------------------ registry events
class _PackageDetail(Model):
    model_config = ConfigDict(extra="ignore")

    ModelPackageGroupName: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    ModelPackageVersion: int = Field(ge=1)
    ModelPackageArn: str = Field(pattern=r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[^/]{1,63}/\d+$")
    ModelApprovalStatus: Literal["Approved", "Rejected", "PendingManualApproval"]


class _PackageEnvelope(Model):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    detail_type: Literal["SageMaker Model Package State Change"] = Field(alias="detail-type")
    source: Literal["aws.sagemaker"]
    time: datetime
    detail: _PackageDetail


class PackageChange(Model):
    """A model package version's approval status, from the registry's event."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    group: str
    version: int
    arn: str
    approval: Literal["Approved", "Rejected", "PendingManualApproval"]

    def describe(self) -> str:
        return f"{self.group} version {self.version} is {self.approval}"


def normalize_package_event(event: dict[str, Any]) -> PackageChange:
    """The registry's event as a PackageChange; a malformed one is InvalidInput naming the field."""
    try:
        parsed = _PackageEnvelope.model_validate(event)
    except ValidationError as error:
        raise invalid(error, "not a SageMaker Model Package State Change event") from error
    detail = parsed.detail
    if not detail.ModelPackageArn.endswith(f"/{detail.ModelPackageGroupName}/{detail.ModelPackageVersion}"):
        raise InvalidInput(
            f"detail.ModelPackageArn {detail.ModelPackageArn} is not version {detail.ModelPackageVersion} of "
            f"{detail.ModelPackageGroupName}",
            "detail.ModelPackageArn",
        )
    return PackageChange(
        event_id=parsed.id,
        group=detail.ModelPackageGroupName,
        version=detail.ModelPackageVersion,
        arn=detail.ModelPackageArn,
        approval=detail.ModelApprovalStatus,
    )


def on_package_change(change: PackageChange, clients: Services) -> dict[str, Any]:
    if change.approval == "Approved":
        return _approved(change, clients)
    if change.approval == "Rejected":
        return _rejected(change, clients)
    return {"action": "ignored", "why": "pending approval starts nothing"}


def _approved(change: PackageChange, clients: Services) -> dict[str, Any]:
    repo = clients.repo
    stored = repo.get_delivery_policy(change.group)
    if stored is None:
        return {"action": "ignored", "why": f"{change.group} has no delivery policy"}
    policy = DeliveryPolicy.model_validate(stored["policy"])
    the_id = delivery_id(change.group, change.version)
    request = {
        "group": change.group,
        "version": change.version,
        "model_package_arn": change.arn,
        "policy": policy.model_dump(mode="json"),
        "event_id": change.event_id,
    }
    try:
        repo.create_operation(KIND, change.group, request, the_id)
    except Conflict:
        return {"action": "duplicate", "delivery": the_id}
    repo.append_timeline(the_id, "approved", f"version {change.version} approved in the model registry")
    delivered, _ = repo.page_operations(change.group, kind=KIND, status=_S.SUCCEEDED, limit=1)
    newer = [r for r in [*_live(repo, change.group), *delivered] if r.id != the_id and version_of(r) > change.version]
    if newer:
        reason = f"superseded by version {version_of(newer[0])} ({newer[0].id}), approved earlier"
        repo.transition(the_id, _S.ABORTED, result={"status": "ABORTED", "reason": reason})
        repo.append_timeline(the_id, "superseded", reason)
        return {"action": "superseded", "delivery": the_id}
    superseded = [
        older.id
        for older in _live(repo, change.group)
        if version_of(older) < change.version and _supersede(older, f"superseded by version {change.version}", clients)
    ]
    started = launch_next(change.group, clients)
    return {"action": "recorded", "delivery": the_id, "superseded": superseded, "started": started}


def version_of(record: OperationRecord) -> int:
    """The model package version a delivery delivers."""
    return int(record.request.get("version") or 0)


def _live(repo: Repository, group: str) -> list[OperationRecord]:
    """The group's deliveries that have not ended, newest first (one Query per page; never a Scan)."""
    found: list[OperationRecord] = []
    token: str | None = None
    for status in (_S.PENDING, _S.RUNNING, _S.PAUSED):
        token = None
        while True:
            records, token = repo.page_operations(group, kind=KIND, status=status, limit=100, cursor=token)
            found += records
            if token is None:
                break
    return sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)


def _supersede(record: OperationRecord, reason: str, clients: Services) -> bool:
    """A queued (never started) delivery ends now; a waiting one (approval, freeze) is stopped; a running one
    (a stage's child in flight) goes on: only queued and waiting deliveries are superseded."""
    repo = clients.repo
    if record.status is _S.PENDING and record.execution_arn is None:
        try:
            repo.transition(record.id, _S.ABORTED, expected=_S.PENDING, result={"status": "ABORTED", "reason": reason})
        except Conflict:
            return False  # it just started
        repo.append_timeline(record.id, "superseded", reason)
        return True
    if record.status is _S.PAUSED:
        _stop(record, reason, by="model registry", clients=clients)
        repo.append_timeline(record.id, "superseded", reason)
        return True
    return False


def launch_next(group: str, clients: Services) -> str | None:
    """Start the group's newest queued delivery if no other delivery of the group holds the group's lock."""
    repo = clients.repo
    queued = [r for r in _live(repo, group) if r.status is _S.PENDING and r.execution_arn is None]
    if not queued:
        return None
    newest = queued[0]
    for older in queued[1:]:
        _supersede(older, f"superseded by version {version_of(newest)}", clients)
    try:
        repo.acquire_lock(group_lock(group), newest.id, START_LEASE_SECONDS)
    except Conflict:
        holder = repo.get_lock(group_lock(group))
        owner = holder.owner if holder else "another delivery"
        repo.append_timeline(newest.id, "queued", f"queued behind {owner}")
        return None
    current = repo.get_operation(newest.id)
    if current.terminal or current.stop_request:
        repo.release_lock(group_lock(group), newest.id)
        return None
    try:
        execution = clients.stepfunctions.start_execution(
            stateMachineArn=clients.delivery_state_machine_arn,
            name=newest.id,
            input=state_of(current).model_dump_json(),
        )
    except clients.stepfunctions.exceptions.ExecutionAlreadyExists:
        return newest.id
    except Exception:
        repo.release_lock(group_lock(group), newest.id)
        raise
    repo.set_execution(newest.id, execution["executionArn"])
    return newest.id


def _rejected(change: PackageChange, clients: Services) -> dict[str, Any]:
    repo = clients.repo
    the_id = delivery_id(change.group, change.version)
    try:
        record = repo.get_operation(the_id)
    except NotFound:
        return {"action": "ignored", "why": "no delivery of this version"}
    if record.terminal:
        return {"action": "ignored", "why": f"its delivery already ended {record.status}"}
    production = production_started(repo, record)
    if production is not None:
        why = f"version {change.version} rejected after stage {production.name} started: the delivery goes on"
        repo.append_timeline(the_id, "rejected", why)
        return {"action": "kept", "delivery": the_id, "why": why}
    _stop(record, f"version {change.version} was rejected in the model registry", by="model registry", clients=clients)
    return {"action": "cancelled", "delivery": the_id}


def production_started(repo: Repository, record: OperationRecord) -> StageRun | None:
    """The delivery's last (production) stage once it has started: a rejection no longer stops the delivery."""
    stages = _stages(repo, record)
    production = stages[-1] if stages else None
    if production is not None and (production.children or production.status in ("SUCCEEDED", "FAILED")):
        return production
    return None


# ------------------------------------------------------------------------------------------------ children
class ChildFinished(Model):
    model_config = ConfigDict(frozen=True)

    event_id: str
    kind: str
    operation_id: str
    endpoint_name: str
    status: str

    def describe(self) -> str:
        return f"{self.kind}: {self.operation_id} on {self.endpoint_name} ended {self.status}"


class _FinishedDetail(Model):
    model_config = ConfigDict(extra="ignore")

    operationId: str = Field(min_length=1, max_length=128)
    endpointName: str = Field(min_length=1, max_length=63)
    status: str


class _DeliveryDetail(Model):
    model_config = ConfigDict(extra="ignore")

    deliveryId: str = Field(min_length=1, max_length=128)
    modelPackageGroupName: str = Field(min_length=1, max_length=63)
    status: str


def normalize_inferops_event(event: dict[str, Any]) -> ChildFinished:
    """InferOps' own Finished events: of a stage's child (deployment, shadow test), or of a delivery (its group
    stands in the endpoint's place)."""
    kind = str(event.get("detail-type", ""))
    if kind != EVENT_DETAIL_TYPE and kind not in CHILD_FINISHED:
        raise InvalidInput(f"detail-type {kind!r} is not an InferOps Finished event", "detail-type")
    try:
        if kind == EVENT_DETAIL_TYPE:
            ended = _DeliveryDetail.model_validate(event.get("detail"))
            operation_id, endpoint, status = ended.deliveryId, ended.modelPackageGroupName, ended.status
        else:
            child = _FinishedDetail.model_validate(event.get("detail"))
            operation_id, endpoint, status = child.operationId, child.endpointName, child.status
    except ValidationError as error:
        raise invalid(error, f"not an {kind} event", "detail") from error
    return ChildFinished(
        event_id=str(event.get("id", "")), kind=kind, operation_id=operation_id, endpoint_name=endpoint, status=status
    )


def on_inferops_event(finished: ChildFinished, clients: Services) -> dict[str, Any]:
    if finished.kind == EVENT_DETAIL_TYPE:  # a delivery ended: the group's next queued one may start
        return {"action": "launch", "started": launch_next(finished.endpoint_name, clients)}
    repo = clients.repo
    token = repo.get_task_token(finished.endpoint_name, WaitPurpose.DELIVERY_STAGE)
    if token is None or token.operation_id != finished.operation_id:
        return {"action": "ignored", "why": "no delivery waits for this operation"}
    taken = repo.take_own_task_token(finished.endpoint_name, WaitPurpose.DELIVERY_STAGE, finished.operation_id)
    if taken is None:
        return {"action": "ignored", "why": "resumed already, or another operation's wait"}
    gone = repo.send_to_task_token(clients.stepfunctions, taken, output={"source": "event", "status": finished.status})
    return {"action": "gone" if gone else "resumed", "operation": finished.operation_id}


# ------------------------------------------------------------------------------------------------ reading
class StageView(Model):
    model_config = ConfigDict(frozen=True)

    name: str
    endpoint_name: str
    status: str
    approval: bool
    shadow_test: bool
    approved_by: str | None
    deferred_until: str | None
    started_at: str | None
    ended_at: str | None
    operations: list[dict[str, Any]] = Field(description="the stage's shadow test and deployment: id, kind, status")
    reason: str | None
    diagnosis: dict[str, Any] | None


class DeliveryView(Model):
    """GET /deliveries/{id}."""

    model_config = ConfigDict(frozen=True)

    id: str
    group: str
    version: int
    model_package_arn: str
    status: OperationStatus
    created_at: str
    updated_at: str
    current_stage: str | None
    waiting_for: str | None = Field(description='"approval" or "freeze" while a stage waits')
    stages: list[StageView]
    reason: str | None
    failed_stage: str | None
    diagnosis: dict[str, Any] | None
    stop_request: dict[str, Any] | None
    execution_arn: str | None
    timeline: list[dict[str, Any]]


def _delivery(the_id: str, repo: Repository) -> OperationRecord:
    record = repo.get_operation(the_id)
    if record.kind != KIND:
        raise NotFound(f"operation {the_id} is a {record.kind}, not a delivery", "id")
    return record


def _stages(repo: Repository, record: OperationRecord) -> list[StageRun]:
    saved = repo.get_operation_state(record.id, STAGES)
    if saved is not None:
        return [StageRun.model_validate(s) for s in saved.get("stages") or []]
    policy = DeliveryPolicy.model_validate(record.request["policy"])
    status = "CANCELLED" if record.terminal else "PENDING"
    return [StageRun(name=s.name, endpoint_name=s.endpoint_name, status=status) for s in policy.stages]


def get(the_id: str, repo: Repository) -> DeliveryView:
    record = _delivery(the_id, repo)
    saved = repo.get_operation_state(the_id, STAGES) or {}
    runs = _stages(repo, record)
    policy = DeliveryPolicy.model_validate(record.request["policy"])
    index = int(saved.get("stage") or 0)
    hold = saved.get("hold") or None
    result = record.result or {}
    dumped = record.model_dump(mode="json")
    return DeliveryView(
        id=record.id,
        group=record.endpoint,
        version=version_of(record),
        model_package_arn=str(record.request.get("model_package_arn")),
        status=record.status,
        created_at=dumped["created_at"],
        updated_at=dumped["updated_at"],
        current_stage=runs[index].name if not record.terminal and index < len(runs) else None,
        waiting_for=str(hold["kind"]) if hold and not record.terminal else None,
        stages=[
            StageView(
                name=run.name,
                endpoint_name=run.endpoint_name,
                status=run.status,
                approval=spec.approval,
                shadow_test=spec.shadow_test is not None,
                approved_by=run.approved_by,
                deferred_until=_utc(run.deferred_until),
                started_at=_utc(run.started_at),
                ended_at=_utc(run.ended_at),
                operations=[
                    {"id": c.operation_id, "kind": c.kind, "status": c.status, "reason": c.reason} for c in run.children
                ],
                reason=run.reason,
                diagnosis=run.diagnosis,
            )
            for run, spec in zip(runs, policy.stages, strict=False)
        ],
        reason=result.get("reason"),
        failed_stage=result.get("failed_stage"),
        diagnosis=result.get("diagnosis"),
        stop_request=record.stop_request,
        execution_arn=record.execution_arn,
        timeline=[e.model_dump(mode="json", exclude={"operation_id", "expires_at"}) for e in repo.timeline(the_id)],
    )


def _utc(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeliverySummary(Model):
    model_config = ConfigDict(frozen=True)

    id: str
    group: str
    version: int
    status: OperationStatus
    created_at: str
    updated_at: str
    reason: str | None


class DeliveryPage(Model):
    model_config = ConfigDict(frozen=True)

    deliveries: list[DeliverySummary]
    next_token: str | None


def list_page(
    repo: Repository, group: str, *, status: OperationStatus | None, limit: int, next_token: str | None
) -> DeliveryPage:
    """A group's deliveries, newest first: one Query on the group's index per page (no Scan)."""
    records, token = repo.page_operations(group, kind=KIND, status=status, limit=limit, cursor=next_token)
    summaries = []
    for record in records:
        dumped = record.model_dump(mode="json")
        summaries.append(
            DeliverySummary(
                id=record.id,
                group=record.endpoint,
                version=version_of(record),
                status=record.status,
                created_at=dumped["created_at"],
                updated_at=dumped["updated_at"],
                reason=(record.result or {}).get("reason"),
            )
        )
    return DeliveryPage(deliveries=summaries, next_token=token)


# ------------------------------------------------------------------------------------------------ actions
def approve(the_id: str, clients: Services, *, by: str) -> DeliveryView:
    """Let the stage that waits for a human start."""
    repo = clients.repo
    record = _delivery(the_id, repo)
    saved = repo.get_operation_state(the_id, STAGES) or {}
    hold = saved.get("hold") or {}
    if record.terminal or hold.get("kind") != "approval":
        raise Conflict(f"delivery {the_id} is {record.status} and not waiting for an approval", "status")
    token = repo.take_task_token(the_id, WaitPurpose.DELIVERY_HOLD)
    if token is None or repo.send_to_task_token(clients.stepfunctions, token, output={"approved_by": by}):
        raise Conflict(f"delivery {the_id} stopped waiting for an approval", "status")
    return get(the_id, repo)


def cancel(the_id: str, clients: Services, *, by: str, reason: str | None = None) -> DeliveryView:
    """Stop the delivery: a queued one ends now, a waiting one at once, a running stage's child is aborted."""
    repo = clients.repo
    record = _delivery(the_id, repo)
    if record.terminal:
        raise Conflict(f"delivery {the_id} already ended as {record.status}", "status")
    _stop(record, reason or f"cancelled by {by}", by=by, clients=clients)
    return get(the_id, repo)


def _stop(record: OperationRecord, why: str, *, by: str, clients: Services) -> None:
    """Ask the flow to stop and wake it where it waits; a stage's running child is aborted (it rolls back)."""
    repo = clients.repo
    if record.execution_arn is None:
        try:
            repo.transition(record.id, _S.ABORTED, expected=_S.PENDING, result={"status": "ABORTED", "reason": why})
            repo.append_timeline(record.id, "cancelled", why, {"by": by})
            return
        except Conflict:
            record = repo.get_operation(record.id)  # it just started: stop it as a running one
    repo.request_stop(record.id, kind="abort", reason=why, by=by)
    repo.append_timeline(record.id, "cancel", why, {"by": by})
    token = repo.take_task_token(record.id, WaitPurpose.DELIVERY_HOLD)
    if token is not None:
        repo.send_to_task_token(clients.stepfunctions, token, error="StopRequested", cause=why)
    running = [s for s in _stages(repo, record) if s.status == "RUNNING" and s.children]
    for stage in running:
        child = stage.children[-1]
        try:
            if child.kind == "shadow_test":
                shadow_tests.discard(child.operation_id, clients.shadow_tests, by=by, reason=why)
            else:
                deployments.abort(child.operation_id, clients.deployments, by=by, reason=why)
        except Conflict as busy:  # ended meanwhile, or a native update without alarms: the delivery stops after it
            repo.append_timeline(record.id, "cancel", f"{child.operation_id} goes on: {busy.message}")


def state_of(record: OperationRecord) -> DeliveryState:
    """The flow's starting state for a recorded delivery (tests and the demo start executions with it)."""
    policy = DeliveryPolicy.model_validate(record.request["policy"])
    return initial_state(
        record.id, record.endpoint, version_of(record), str(record.request["model_package_arn"]), policy
    )
