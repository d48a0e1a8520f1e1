"""Deployments as the API sees them: start one, read it, list them, abort or approve it.

Starting is synchronous up to the point a user cares about: the request is planned (refusals come back at
once with every violation), the endpoint's lock is taken (a second request for the same endpoint gets a
409, not a queued surprise), then the `deployment` state machine runs the rest. Aborting picks the fastest
safe way back for where the flow stands: a parked bake or approval fails at once; a native SageMaker update,
which has no cancel call, is rolled back by setting one of its rollback alarms to ALARM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict

from inferops import flow_steps, metrics
from inferops.errors import Conflict, InferOpsError, NotFound
from inferops.flow_steps import Clients as Clients  # noqa: PLC0414 (explicit re-export for callers)
from inferops.model import Model
from inferops.planner import DeploymentRequest, Plan, PlanResult
from inferops.rollout import KIND, FlowState, preflight
from inferops.storage import OperationRecord, OperationStatus, Repository, TimelineEntry, WaitPurpose

if TYPE_CHECKING:
    pass


class Refused(InferOpsError):
    """Pre-flight refused the request: every violation, with its field and fix."""

    status_code = 422

    def __init__(self, result: PlanResult) -> None:
        first = result.violations[0]
        super().__init__(f"{len(result.violations)} problem(s); {first.field}: {first.message}", first.field)
        self.result = result


class Started(Model):
    model_config = ConfigDict(frozen=True)

    id: str | None
    status: str
    plan: Plan
    warnings: list[str]
    dry_run: bool = False


class DeploymentView(Model):
    """GET /deployments/{id}: the record, its plan, its timeline and the analysis verdicts."""

    model_config = ConfigDict(frozen=True)

    id: str
    endpoint: str
    status: OperationStatus
    created_at: str
    updated_at: str
    request: dict[str, Any]
    plan: dict[str, Any] | None
    result: dict[str, Any] | None
    stop_request: dict[str, Any] | None
    execution_arn: str | None
    verdicts: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    diagnosis: dict[str, Any] | None = None
    """FAILED / ROLLED_BACK: why, as findings with cause, evidence and fix (inferops.diagnosis.Diagnosis)."""


def start(request: DeploymentRequest, clients: Clients, *, dry_run: bool = False) -> Started:
    """Plan, record, lock the endpoint, start the flow. Refused → 422; endpoint busy → 409."""
    result = preflight(request, clients.sagemaker, clients.autoscaling)
    if not result.ok or result.plan is None:
        raise Refused(result)
    if dry_run:
        return Started(id=None, status="DRY_RUN", plan=result.plan, warnings=result.warnings, dry_run=True)
    repo = clients.repo
    flow_steps.refuse_when_locked(repo, request.endpoint_name, "endpoint_name")
    body = request.model_dump(mode="json")
    record = repo.create_operation(KIND, request.endpoint_name, body, plan=result.plan.model_dump(mode="json"))
    arn = flow_steps.start_execution(
        repo,
        clients.stepfunctions,
        clients.state_machine_arn,
        record,
        FlowState(operation_id=record.id, request=request),
    )
    metrics.operation_started(KIND)
    repo.append_timeline(record.id, "requested", f"{result.plan.strategy} deployment requested", {"execution": arn})
    return Started(id=record.id, status=OperationStatus.PENDING.value, plan=result.plan, warnings=result.warnings)


def get(operation_id: str, repo: Repository) -> DeploymentView:
    record = _deployment(operation_id, repo)
    return view(record, repo.timeline(operation_id))


def view(record: OperationRecord, timeline: list[TimelineEntry]) -> DeploymentView:
    entries = [e.model_dump(mode="json", exclude={"operation_id", "expires_at"}) for e in timeline]
    return DeploymentView(
        id=record.id,
        endpoint=record.endpoint,
        status=record.status,
        created_at=record.model_dump(mode="json")["created_at"],
        updated_at=record.model_dump(mode="json")["updated_at"],
        request=record.request,
        plan=record.plan,
        result={k: v for k, v in record.result.items() if k != "diagnosis"} if record.result else record.result,
        stop_request=record.stop_request,
        execution_arn=record.execution_arn,
        verdicts=[e["data"] for e in entries if e["kind"] == "verdict"],
        timeline=entries,
        diagnosis=(record.result or {}).get("diagnosis"),
    )


def _deployment(operation_id: str, repo: Repository) -> OperationRecord:
    record = repo.get_operation(operation_id)
    if record.kind != KIND:  # /deployments/{id} names no deployment: 404, as for an unknown id
        raise NotFound(f"operation {operation_id} is a {record.kind}, not a deployment", "id")
    return record


def abort(operation_id: str, clients: Clients, *, by: str, reason: str | None = None) -> DeploymentView:
    """Roll back now. The flow records the outcome (ABORTED) once the endpoint is back on its old config."""
    repo = clients.repo
    record = _deployment(operation_id, repo)
    if record.terminal:
        raise Conflict(f"deployment {operation_id} already ended as {record.status}", "status")
    the_plan = Plan.model_validate(record.plan) if record.plan else None
    updating = repo.get_task_token(record.endpoint, WaitPurpose.ENDPOINT_UPDATE)
    native_update = the_plan is not None and the_plan.path == "native" and updating is not None
    if native_update and the_plan is not None and not the_plan.alarms:
        raise Conflict(
            f"deployment {operation_id} cannot be aborted now: SageMaker has no call to cancel an update and this "
            "one has no rollback alarms; it ends by itself (the flow records the outcome)",
            "status",
        )
    why = reason or f"aborted by {by}"
    repo.request_stop(operation_id, kind="abort", reason=why, by=by)
    repo.append_timeline(operation_id, "abort", why, {"by": by})
    for purpose in (WaitPurpose.BAKE, WaitPurpose.APPROVAL):
        _fail_waiting(clients, record.endpoint, operation_id, purpose, why)
    if native_update and the_plan is not None:
        clients.cloudwatch.set_alarm_state(
            AlarmName=the_plan.alarms[0], StateValue="ALARM", StateReason=f"InferOps: {why} ({operation_id})"
        )
        repo.append_timeline(
            operation_id, "abort", f"set rollback alarm {the_plan.alarms[0]} to ALARM: SageMaker rolls back"
        )
    return get(operation_id, repo)


def _fail_waiting(clients: Clients, endpoint: str, operation_id: str, purpose: WaitPurpose, why: str) -> None:
    """Fail this deployment's parked wait (a 5xx raises with the token put back: a retried abort finds it)."""
    token = clients.repo.take_own_task_token(endpoint, purpose, operation_id)
    if token is not None:
        clients.repo.send_to_task_token(clients.stepfunctions, token, error="StopRequested", cause=why)


def approve(operation_id: str, clients: Clients, *, by: str) -> DeploymentView:
    """Let a paused managed deployment take its next traffic step."""
    repo = clients.repo
    record = _deployment(operation_id, repo)
    token = repo.take_own_task_token(record.endpoint, WaitPurpose.APPROVAL, operation_id)
    if token is None:
        raise Conflict(f"deployment {operation_id} is {record.status} and not waiting for an approval", "status")
    if repo.send_to_task_token(clients.stepfunctions, token, output={"approved_by": by}):  # a 5xx: retry approve
        raise Conflict(f"deployment {operation_id} stopped waiting for an approval", "status")
    repo.append_timeline(operation_id, "approved", f"approved by {by}", {"by": by})
    return get(operation_id, repo)


class DeploymentSummary(Model):
    model_config = ConfigDict(frozen=True)

    id: str
    endpoint: str
    status: OperationStatus
    created_at: str
    updated_at: str
    strategy: str | None
    reason: str | None


class DeploymentPage(Model):
    model_config = ConfigDict(frozen=True)

    deployments: list[DeploymentSummary]
    next_token: str | None


def list_page(
    repo: Repository, endpoint: str, *, status: OperationStatus | None, limit: int, next_token: str | None
) -> DeploymentPage:
    """An endpoint's deployments, newest first: one Query on the endpoint index per page (no Scan)."""
    records, token = repo.page_operations(endpoint, kind=KIND, status=status, limit=limit, cursor=next_token)
    summaries = []
    for record in records:
        dumped = record.model_dump(mode="json")
        summaries.append(
            DeploymentSummary(
                id=record.id,
                endpoint=record.endpoint,
                status=record.status,
                created_at=dumped["created_at"],
                updated_at=dumped["updated_at"],
                strategy=(record.plan or {}).get("strategy") or (record.request.get("strategy") or {}).get("type"),
                reason=(record.result or {}).get("reason"),
            )
        )
    return DeploymentPage(deployments=summaries, next_token=token)
