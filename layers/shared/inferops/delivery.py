"""The delivery flow's steps: what each task of `statemachines/delivery.asl.json` does.

A delivery takes one approved model package version through the stages of its group's policy, in order. Each
stage is a guarded deployment (after a shadow test, when the policy asks for one) started through the same
code as the API's (`deployments.start`, `shadow_tests.start`: same pre-flight, endpoint lock, plan and record)
as its own execution; the delivery parks a task token keyed by the stage's endpoint and the child's Finished
event resumes it (a heartbeat falls back to reading the child's record). A stage that needs a human, or that
would start inside a freeze window, parks a token keyed by the delivery: an approval resumes it, the
heartbeat timeout ends the freeze (no Wait loop, so the history does not grow with the freeze). The first
stage that does not succeed stops the delivery, with the child's reason and diagnosis.

One delivery per group runs at a time (the group's lock); later approvals queue, and a newer approval
supersedes an older one that is queued or waiting (`inferops.deliveries`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import boto3
from pydantic import ConfigDict, Field

from inferops import deployments, metrics, shadow_tests
from inferops.delivery_policy import DeliveryPolicy, frozen_until
from inferops.errors import Conflict, InferOpsError, NotFound
from inferops.model import Model
from inferops.rollout import KIND as DEPLOYMENT_KIND
from inferops.rollout import StepError, aws
from inferops.shadow import KIND as SHADOW_TEST_KIND
from inferops.storage import OperationRecord, OperationStatus, Repository, WaitPurpose

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_stepfunctions import SFNClient

KIND = "delivery"
EVENT_SOURCE = "inferops"
EVENT_DETAIL_TYPE = "InferOps Delivery Finished"
STAGES = "stages"
"""The name of a delivery's working record (`Repository.*_operation_state`): its stages as they run."""
CHILD_HEARTBEAT_SECONDS = 3600
"""How long a stage waits for its child's Finished event before reading the child's record instead."""
TOKEN_MARGIN_SECONDS = 3600
GROUP_LEASE_SECONDS = 60 * 86400
"""A delivery holds its group's lock for its whole life (approvals may take days); a crashed one frees it."""

StageStatus = Literal["PENDING", "WAITING_APPROVAL", "DEFERRED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
ChildKind = Literal["shadow_test", "deployment"]


# ------------------------------------------------------------------------------------------------ errors
class DeliveryFailed(StepError):
    """A failure no retry will fix; the message is the reason shown to users."""


class EndpointBusy(StepError):
    """Another operation holds the stage's endpoint: the state machine retries the start, with backoff."""


# ------------------------------------------------------------------------------------------------ state
class _State(Model):
    model_config = ConfigDict(extra="ignore")


class ChildRun(_State):
    """A deployment or shadow test a stage started, as the delivery saw it end."""

    kind: ChildKind
    operation_id: str
    status: str = "PENDING"
    reason: str | None = None
    decision: str | None = Field(default=None, description="a shadow test's: promote or discard")
    started_at: float
    ended_at: float | None = None


class StageRun(_State):
    name: str
    endpoint_name: str
    status: StageStatus = "PENDING"
    approved_by: str | None = None
    deferred_until: float | None = None
    children: list[ChildRun] = Field(default_factory=list)
    started_at: float | None = None
    ended_at: float | None = None
    reason: str | None = None
    diagnosis: dict[str, Any] | None = None


class Hold(_State):
    """A parked wait keyed by the delivery: a human's approval, or the end of a freeze window."""

    kind: Literal["approval", "freeze"]
    seconds: int = Field(ge=1)
    until: float


class Outcome(_State):
    status: OperationStatus
    reason: str
    failed_stage: str | None = None


class DeliveryState(_State):
    """The state machine's state: the Lambda steps return it whole, the Choice states read `next`."""

    delivery_id: str
    group: str
    version: int
    model_package_arn: str
    policy: DeliveryPolicy
    stage: int = 0
    stages: list[StageRun] = Field(default_factory=list)
    hold: Hold | None = None
    heartbeat_seconds: int = CHILD_HEARTBEAT_SECONDS
    resumed: dict[str, Any] | None = Field(default=None, description="what resumed the last wait (approval: by)")
    outcome: Outcome | None = None
    error: dict[str, Any] | None = Field(default=None, description="what a Catch caught: Error and Cause")
    event: dict[str, Any] | None = Field(default=None, description="the detail of the closing EventBridge event")
    next: str = ""


@dataclass(frozen=True)
class Services:
    """The clients of the steps, the event handler and the API: the children start with the API's own code."""

    deployments: deployments.Clients
    shadow_tests: shadow_tests.Clients
    delivery_state_machine_arn: str = ""
    """Where queued deliveries start (the event handler); the flow's own steps don't start deliveries."""

    @property
    def repo(self) -> Repository:
        return self.deployments.repo

    @property
    def stepfunctions(self) -> SFNClient:
        return self.deployments.stepfunctions


def services_from_environment(config: Config | None = None) -> Services:
    """Real clients, the table and the state machines named by the function's environment."""
    repo = Repository(os.environ["TABLE_NAME"])
    sagemaker = boto3.client("sagemaker", config=config)
    autoscaling = boto3.client("application-autoscaling", config=config)
    cloudwatch = boto3.client("cloudwatch", config=config)
    sfn = boto3.client("stepfunctions", config=config)
    deployment_flow = os.environ.get("DEPLOYMENT_STATE_MACHINE_ARN", "")
    shadow_flow = os.environ.get("SHADOW_TEST_STATE_MACHINE_ARN", "")
    return Services(
        deployments=deployments.Clients(repo, sagemaker, autoscaling, cloudwatch, sfn, deployment_flow),
        shadow_tests=shadow_tests.Clients(repo, sagemaker, autoscaling, cloudwatch, sfn, shadow_flow),
        delivery_state_machine_arn=os.environ.get("DELIVERY_STATE_MACHINE_ARN", ""),
    )


def initial_state(
    delivery_id: str, group: str, version: int, model_package_arn: str, policy: DeliveryPolicy
) -> DeliveryState:
    stages = [StageRun(name=s.name, endpoint_name=s.endpoint_name) for s in policy.stages]
    return DeliveryState(
        delivery_id=delivery_id,
        group=group,
        version=version,
        model_package_arn=model_package_arn,
        policy=policy,
        stages=stages,
    )


def _now(services: Services) -> float:
    return services.repo.now()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timeline(services: Services, state: DeliveryState, kind: str, message: str, **data: Any) -> None:
    services.repo.append_timeline(state.delivery_id, kind, message, data or None)


def save(state: DeliveryState, repo: Repository) -> None:
    """Write the stages where the API reads them (only the flow writes this record)."""
    repo.put_operation_state(
        state.delivery_id,
        STAGES,
        {
            "stage": state.stage,
            "stages": [s.model_dump(mode="json") for s in state.stages],
            "hold": state.hold.model_dump(mode="json") if state.hold else None,
        },
    )


def _with_stage(state: DeliveryState, run: StageRun, **update: Any) -> DeliveryState:
    stages = list(state.stages)
    stages[state.stage] = run
    return state.model_copy(update={"stages": stages, **update})


def _end(state: DeliveryState, status: OperationStatus, reason: str, failed_stage: str | None = None) -> DeliveryState:
    outcome = Outcome(status=status, reason=reason, failed_stage=failed_stage)
    return state.model_copy(update={"outcome": outcome, "next": "finish", "hold": None})


def _set_status(repo: Repository, delivery_id: str, to: OperationStatus) -> OperationRecord:
    """PENDING/PAUSED -> RUNNING, RUNNING -> PAUSED; a stopped or ended delivery is left alone."""
    record = repo.get_operation(delivery_id)
    if record.status is to or record.terminal:
        return record
    with suppress(Conflict):  # a concurrent cancel or supersede: the next step sees it
        return repo.transition(delivery_id, to)
    return repo.get_operation(delivery_id)


# ------------------------------------------------------------------------------------------------ steps
def begin(state: DeliveryState, services: Services) -> DeliveryState:
    """The execution started: record it (superseded or cancelled meanwhile: end at once)."""
    record = services.repo.get_operation(state.delivery_id)
    if record.terminal:
        return _end(state, record.status, str((record.result or {}).get("reason") or f"already {record.status}"))
    if record.stop_request:
        return _end(state, OperationStatus.ABORTED, f"stopped before it started: {record.stop_request['reason']}")
    try:
        services.repo.acquire_lock(group_lock(state.group), state.delivery_id, GROUP_LEASE_SECONDS)
    except Conflict as busy:
        raise DeliveryFailed(f"another delivery of {state.group} runs: {busy.message}") from busy
    _set_status(services.repo, state.delivery_id, OperationStatus.RUNNING)
    metrics.operation_started(KIND)
    names = ", ".join(f"{s.name} ({s.endpoint_name})" for s in state.policy.stages)
    _timeline(services, state, "started", f"delivering version {state.version} of {state.group} to {names}")
    save(state, services.repo)
    return state.model_copy(update={"next": "advance"})


def advance(state: DeliveryState, services: Services) -> DeliveryState:
    """Decide what the current stage does next: wait for approval, wait out a freeze, start a child, or end."""
    repo, now = services.repo, _now(services)
    record = repo.get_operation(state.delivery_id)
    if record.stop_request:
        return _stopped(state, services, str(record.stop_request["reason"]))
    if state.stage >= len(state.stages):
        names = ", ".join(s.name for s in state.stages)
        return _end(state, OperationStatus.SUCCEEDED, f"version {state.version} delivered to {names}")
    run, spec = state.stages[state.stage], state.policy.stages[state.stage]
    resumed = state.resumed or {}
    if state.hold is not None and state.hold.kind == "approval" and resumed.get("approved_by"):
        run = run.model_copy(update={"approved_by": str(resumed["approved_by"]), "status": "PENDING"})
        _timeline(services, state, "approved", f"stage {run.name} approved by {run.approved_by}")
    state = _with_stage(state, run, hold=None, resumed=None)
    until = frozen_until(list(state.policy.freeze_windows), datetime.fromtimestamp(now, UTC))
    if (spec.approval and run.approved_by is None) or until is not None:
        newer = _newer_queued(state, repo)
        if newer is not None:  # a waiting delivery gives way to a newer approved version queued behind it
            return _stopped(state, services, f"superseded by version {newer}, approved while this one waited")
    if spec.approval and run.approved_by is None:
        seconds = math.ceil(state.policy.approval_timeout_hours * 3600)
        hold = Hold(kind="approval", seconds=seconds, until=now + seconds)
        state = _with_stage(state, run.model_copy(update={"status": "WAITING_APPROVAL"}), hold=hold, next="hold")
        _set_status(repo, state.delivery_id, OperationStatus.PAUSED)
        _timeline(
            services,
            state,
            "approval",
            f"stage {run.name} ({run.endpoint_name}) waits for approval (POST /deliveries/{state.delivery_id}/approve)",
        )
        save(state, repo)
        return state
    if until is not None:
        lifts = until.timestamp()
        hold = Hold(kind="freeze", seconds=max(1, math.ceil(lifts - now)), until=lifts)
        run = run.model_copy(update={"status": "DEFERRED", "deferred_until": lifts})
        state = _with_stage(state, run, hold=hold, next="hold")
        _set_status(repo, state.delivery_id, OperationStatus.PAUSED)
        _timeline(services, state, "deferred", f"stage {run.name} deferred: freeze window until {_iso(lifts)}")
        save(state, repo)
        return state
    _set_status(repo, state.delivery_id, OperationStatus.RUNNING)
    state = state.model_copy(update={"next": "start"})
    save(state, repo)
    return state


def _stopped(state: DeliveryState, services: Services, reason: str) -> DeliveryState:
    if state.stage < len(state.stages):
        run = state.stages[state.stage]
        if run.status not in ("SUCCEEDED", "FAILED"):
            run = run.model_copy(update={"status": "CANCELLED", "ended_at": _now(services), "reason": reason})
            state = _with_stage(state, run)
    return _end(state, OperationStatus.ABORTED, reason)


def _newer_queued(state: DeliveryState, repo: Repository) -> int | None:
    """The newest version of the group queued (approved, not started) after this one, if any."""
    queued, _ = repo.page_operations(state.group, kind=KIND, status=OperationStatus.PENDING, limit=20)
    versions = [int(r.request.get("version") or 0) for r in queued if r.execution_arn is None]
    newer = [v for v in versions if v > state.version]
    return max(newer) if newer else None


def next_child(state: DeliveryState) -> ChildKind:
    """A stage runs its shadow test (if any) first, then its deployment."""
    spec, run = state.policy.stages[state.stage], state.stages[state.stage]
    if spec.shadow_test is not None and not any(c.kind == "shadow_test" for c in run.children):
        return "shadow_test"
    return "deployment"


def start_child(state: DeliveryState, services: Services) -> DeliveryState:
    """Start the stage's next child through the API's own start code; a refusal fails the stage."""
    repo, now = services.repo, _now(services)
    run, spec = state.stages[state.stage], state.policy.stages[state.stage]
    kind = next_child(state)
    try:
        with aws(f"stage {run.name}: starting the {kind.replace('_', ' ')}"):  # a throttled pre-flight is retried
            if kind == "shadow_test":
                request = spec.shadow_test_request(state.model_package_arn)
                assert request is not None
                child_id = shadow_tests.start(request, services.shadow_tests).id
            else:
                child_id = deployments.start(spec.deployment_request(state.model_package_arn), services.deployments).id
    except (deployments.Refused, shadow_tests.Refused) as refused:
        return _stage_failed(state, services, f"the {kind.replace('_', ' ')} was refused: {refused.message}", None)
    except Conflict as busy:
        child_id = _adoptable(state, services, kind, run)
        if child_id is None:
            raise EndpointBusy(f"stage {run.name}: {busy.message}") from busy
    except NotFound as missing:
        return _stage_failed(state, services, missing.message, None)
    except InferOpsError as error:
        raise DeliveryFailed(f"stage {run.name}: {error.message}") from error
    assert child_id is not None
    child = ChildRun(kind=kind, operation_id=child_id, started_at=now)
    run = run.model_copy(
        update={"status": "RUNNING", "started_at": run.started_at or now, "children": [*run.children, child]}
    )
    state = _with_stage(state, run, heartbeat_seconds=CHILD_HEARTBEAT_SECONDS, next="await")
    what = "shadow test" if kind == "shadow_test" else "deployment"
    _timeline(
        services, state, "stage", f"stage {run.name}: {what} {child_id} started on {run.endpoint_name}", child=child_id
    )
    save(state, repo)
    return state


def _adoptable(state: DeliveryState, services: Services, kind: ChildKind, run: StageRun) -> str | None:
    """A retried start finds its own child holding the endpoint (same version, started by this stage): adopt it."""
    repo = services.repo
    lock = repo.get_lock(run.endpoint_name)
    if lock is None or lock.expired:
        return None
    with suppress(NotFound):
        holder = repo.get_operation(lock.owner)
        wanted = SHADOW_TEST_KIND if kind == "shadow_test" else DEPLOYMENT_KIND
        package = (holder.request.get("model") or {}).get("model_package_arn")
        started = run.started_at or repo.get_operation(state.delivery_id).created_at.timestamp()
        if holder.kind == wanted and package == state.model_package_arn and holder.created_at.timestamp() >= started:
            return holder.id
    return None


def await_child(state: DeliveryState, services: Services, token: str) -> DeliveryState:
    """Park the token under the child's endpoint; the child's Finished event resumes it (or we do, if it ended)."""
    run = state.stages[state.stage]
    child = run.children[-1]
    repo = services.repo
    ttl = state.heartbeat_seconds + TOKEN_MARGIN_SECONDS
    repo.put_task_token(run.endpoint_name, WaitPurpose.DELIVERY_STAGE, token, child.operation_id, ttl)
    if repo.get_operation(child.operation_id).terminal:
        mine = repo.take_task_token(run.endpoint_name, WaitPurpose.DELIVERY_STAGE)
        if mine is not None and mine.token == token:
            with aws("resuming the delivery"):
                services.stepfunctions.send_task_success(taskToken=token, output=json.dumps({"source": "record"}))
    return state


def check_child(state: DeliveryState, services: Services) -> DeliveryState:
    """The child ended (or the heartbeat passed): read its record and go on, wait again, or stop."""
    repo, now = services.repo, _now(services)
    run = state.stages[state.stage]
    child = run.children[-1]
    record = repo.get_operation(child.operation_id)
    if not record.terminal:
        _timeline(services, state, "heartbeat", f"stage {run.name}: {child.operation_id} is {record.status}")
        return state.model_copy(update={"next": "await", "heartbeat_seconds": CHILD_HEARTBEAT_SECONDS})
    result = record.result or {}
    reason = str(result.get("reason") or record.status)
    ended = child.model_copy(
        update={"status": record.status.value, "reason": reason, "decision": result.get("decision"), "ended_at": now}
    )
    run = run.model_copy(update={"children": [*run.children[:-1], ended]})
    state = _with_stage(state, run)
    stop = repo.get_operation(state.delivery_id).stop_request
    if record.status is not OperationStatus.SUCCEEDED:
        if stop:
            return _stopped(state, services, str(stop["reason"]))
        what = "shadow test" if child.kind == "shadow_test" else "deployment"
        message = f"{what} {child.operation_id} on {run.endpoint_name} ended {record.status.value}: {reason}"
        return _stage_failed(state, services, message, result.get("diagnosis"))
    if child.kind == "shadow_test" and ended.decision != "promote":
        _timeline(services, state, "stage", f"stage {run.name}: shadow test passed ({reason}); deploying next")
        save(state, repo)
        return state.model_copy(update={"next": "advance"})
    done = run.model_copy(update={"status": "SUCCEEDED", "ended_at": now, "reason": reason})
    state = _with_stage(state, done)
    _timeline(services, state, "stage", f"stage {run.name} succeeded: {reason}")
    state = state.model_copy(update={"stage": state.stage + 1, "next": "advance"})
    save(state, repo)
    return state


def _stage_failed(
    state: DeliveryState, services: Services, reason: str, diagnosis: dict[str, Any] | None
) -> DeliveryState:
    run = state.stages[state.stage]
    failed = run.model_copy(
        update={"status": "FAILED", "ended_at": _now(services), "reason": reason, "diagnosis": diagnosis}
    )
    state = _with_stage(state, failed)
    _timeline(services, state, "stage", f"stage {run.name} failed: {reason}")
    later = [s.name for s in state.stages[state.stage + 1 :]]
    tail = f"; not delivered to {', '.join(later)}" if later else ""
    return _end(state, OperationStatus.FAILED, f"stage {run.name} failed: {reason}{tail}", failed_stage=run.name)


def hold(state: DeliveryState, services: Services, token: str) -> DeliveryState:
    """Park the token under the delivery: an approval resumes it; its heartbeat timeout is the hold's end."""
    assert state.hold is not None
    repo = services.repo
    ttl = state.hold.seconds + TOKEN_MARGIN_SECONDS
    repo.put_task_token(state.delivery_id, WaitPurpose.DELIVERY_HOLD, token, state.delivery_id, ttl)
    stop = repo.get_operation(state.delivery_id).stop_request
    if stop:  # a cancel that arrived before the token was parked would otherwise wait out the hold
        mine = repo.take_task_token(state.delivery_id, WaitPurpose.DELIVERY_HOLD)
        if mine is not None and mine.token == token:
            with aws("stopping the delivery"):
                services.stepfunctions.send_task_failure(
                    taskToken=token, error="StopRequested", cause=str(stop["reason"])
                )
    return state


def hold_ended(state: DeliveryState, services: Services) -> DeliveryState:
    """The hold's heartbeat passed: a freeze has lifted (go on); an approval was not given in time (fail)."""
    held = state.hold
    if held is not None and held.kind == "approval":
        hours = state.policy.approval_timeout_hours
        return _stage_failed(state, services, f"no approval within {hours:g} h", None)
    _timeline(services, state, "resumed", "freeze window over")
    return state.model_copy(update={"hold": None, "next": "advance"})


def _reason(state: DeliveryState) -> str:
    error = state.error or {}
    cause = error.get("Cause")
    if isinstance(cause, str) and cause.startswith("{"):
        with suppress(ValueError):
            cause = json.loads(cause).get("errorMessage", cause)
    return str(cause or error.get("Error") or "the delivery failed")


def handle_failure(state: DeliveryState, services: Services) -> DeliveryState:
    """A step failed for good, or a cancel failed a parked wait: end (a running child keeps its own flow)."""
    error = state.error or {}
    reason = _reason(state)
    with suppress(NotFound):
        _timeline(services, state, "error", f"{error.get('Error', 'error')}: {reason}", **error)
    if error.get("Error") == "StopRequested":
        return _stopped(state, services, reason)
    name = state.stages[state.stage].name if state.stage < len(state.stages) else None
    if name is not None:
        return _stage_failed(state, services, reason, None)
    return _end(state, OperationStatus.FAILED, reason)


def finish(state: DeliveryState, services: Services) -> DeliveryState:
    """Record the outcome and the stages, release the group's lock (the Finished event starts the next one)."""
    repo = services.repo
    outcome = state.outcome or Outcome(status=OperationStatus.FAILED, reason=_reason(state))
    record = repo.get_operation(state.delivery_id)
    save(state.model_copy(update={"hold": None}), repo)
    if not record.terminal:
        failed = [s for s in state.stages if s.status == "FAILED"]
        result: dict[str, Any] = {"status": outcome.status.value, "reason": outcome.reason}
        if outcome.failed_stage:
            result["failed_stage"] = outcome.failed_stage
        if failed and failed[0].diagnosis:
            result["diagnosis"] = failed[0].diagnosis
        repo.transition(state.delivery_id, outcome.status, result=result)
        _timeline(services, state, "finished", f"{outcome.status.value}: {outcome.reason}")
        metrics.operation_finished(KIND, outcome.status.value)
    else:
        outcome = Outcome(status=record.status, reason=str((record.result or {}).get("reason") or record.status))
    repo.release_lock(group_lock(state.group), state.delivery_id)
    done = state.model_copy(update={"outcome": outcome, "next": "announce"})
    return done.model_copy(update={"event": announcement(done)})


def group_lock(group: str) -> str:
    """The lock key that lets one delivery per model package group run at a time."""
    return f"group:{group}"


def announcement(state: DeliveryState) -> dict[str, Any]:
    """The detail of the `InferOps Delivery Finished` event."""
    outcome = state.outcome
    return {
        "deliveryId": state.delivery_id,
        "modelPackageGroupName": state.group,
        "modelPackageVersion": state.version,
        "modelPackageArn": state.model_package_arn,
        "status": outcome.status.value if outcome else "FAILED",
        "reason": outcome.reason if outcome else _reason(state),
        "failedStage": outcome.failed_stage if outcome else None,
        "stages": [{"name": s.name, "endpointName": s.endpoint_name, "status": s.status} for s in state.stages],
    }


Step = Callable[[DeliveryState, Services], DeliveryState]
TokenStep = Callable[[DeliveryState, Services, str], DeliveryState]
STEPS: dict[str, Step] = {
    "begin": begin,
    "advance": advance,
    "start_child": start_child,
    "check_child": check_child,
    "hold_ended": hold_ended,
    "handle_failure": handle_failure,
    "finish": finish,
}
TOKEN_STEPS: dict[str, TokenStep] = {"await_child": await_child, "hold": hold}
