"""Shadow tests as the API sees them: start one, read it, list them, promote, discard or approve it, change it.

Starting is synchronous up to what a user needs at once: eligibility is checked (every broken rule comes back
as a 422), the endpoint's lock is taken (a busy endpoint is a 409), then the `shadow_test` state machine runs.
An operator's decision is recorded first (the first one wins), then wakes the flow where it is parked; a flow
between two steps finds the decision at its next step. Changes (PATCH) are what SageMaker allows once an
experiment runs: the sampling percentage, the end time and the description.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints

from inferops import flow_steps, metrics, shadow
from inferops.errors import Conflict, InferOpsError, InvalidInput, NotFound
from inferops.flow_steps import Clients as Clients  # noqa: PLC0414 (explicit re-export for callers)
from inferops.flow_steps import utc_text as _when
from inferops.model import Model
from inferops.shadow import (
    DECISION_MARGIN_SECONDS,
    KIND,
    MAX_DURATION_SECONDS,
    PROGRESS,
    FlowState,
    ShadowPlan,
    ShadowPlanResult,
    ShadowTestRequest,
)
from inferops.storage import OperationRecord, OperationStatus, Repository, TimelineEntry, WaitPurpose

if TYPE_CHECKING:
    pass


class Refused(InferOpsError):
    """The request breaks eligibility rules: every violation, with its field, rule and fix."""

    status_code = 422

    def __init__(self, result: ShadowPlanResult) -> None:
        first = result.violations[0]
        super().__init__(f"{len(result.violations)} problem(s); {first.field}: {first.message}", first.field)
        self.result = result


class Started(Model):
    model_config = ConfigDict(frozen=True)

    id: str | None
    status: str
    plan: ShadowPlan
    warnings: list[str]
    dry_run: bool = False


class ShadowTestView(Model):
    """GET /shadow-tests/{id}: status, where the test stands, sampling history, verdicts over time, timeline."""

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
    experiment: str | None = Field(description="the SageMaker inference experiment's name")
    phase: dict[str, Any] | None = Field(
        description="the current (or last) phase: index, count, sampling, times, intervals judged so far"
    )
    sampling_percent: int | None = Field(description="the shadow's current sampling percentage")
    sampling_history: list[dict[str, Any]] = Field(description="every sampling change: at, percent, by")
    verdicts: list[dict[str, Any]] = Field(description="every verdict, per interval and per phase, oldest first")
    final_verdict: dict[str, Any] | None
    decision: dict[str, Any] | None = Field(description="an operator's promote/discard, once recorded")
    waiting_for: str | None = Field(description='"approval" while the test waits for a human')
    timeline: list[dict[str, Any]] = Field(description="what happened, oldest first (interval verdicts: see verdicts)")
    diagnosis: dict[str, Any] | None = None


class ShadowTestPatch(Model):
    """PATCH /shadow-tests/{id}: what SageMaker lets a running experiment change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampling_percent: int | None = Field(default=None, ge=1, le=100, description="the shadow's share of requests")
    end_time: datetime | None = Field(default=None, description="the experiment's new end (at most 30 days)")
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None


class ShadowTestSummary(Model):
    model_config = ConfigDict(frozen=True)

    id: str
    endpoint: str
    status: OperationStatus
    created_at: str
    updated_at: str
    action: str | None
    decision: str | None
    reason: str | None


class ShadowTestPage(Model):
    model_config = ConfigDict(frozen=True)

    shadow_tests: list[ShadowTestSummary]
    next_token: str | None


# ------------------------------------------------------------------------------------------------ start
def start(request: ShadowTestRequest, clients: Clients, *, dry_run: bool = False) -> Started:
    """Check, record, lock the endpoint, start the flow. Refused -> 422; endpoint busy -> 409."""
    repo = clients.repo
    operation_id = repo.new_operation_id()
    result = shadow.preflight(
        request, clients.sagemaker, clients.autoscaling, clients.cloudwatch, now=repo.now(), operation_id=operation_id
    )
    if not result.ok or result.plan is None:
        raise Refused(result)
    if dry_run:
        return Started(id=None, status="DRY_RUN", plan=result.plan, warnings=result.warnings, dry_run=True)
    flow_steps.refuse_when_locked(repo, request.endpoint_name, "endpoint_name")
    body = request.model_dump(mode="json")
    record = repo.create_operation(
        KIND, request.endpoint_name, body, operation_id, plan=result.plan.model_dump(mode="json")
    )
    arn = flow_steps.start_execution(
        repo,
        clients.stepfunctions,
        clients.state_machine_arn,
        record,
        FlowState(operation_id=record.id, request=request),
    )
    metrics.operation_started(shadow.KIND)
    repo.append_timeline(
        record.id,
        "requested",
        f"shadow test of {_candidate(request)} on {request.endpoint_name} requested ({request.action} at the end)",
        {"execution": arn},
    )
    return Started(id=record.id, status=OperationStatus.PENDING.value, plan=result.plan, warnings=result.warnings)


def _candidate(request: ShadowTestRequest) -> str:
    spec = request.model
    return str(getattr(spec, "model_name", None) or getattr(spec, "model_package_arn", None) or spec.source)


# ------------------------------------------------------------------------------------------------ reading
def _test(operation_id: str, repo: Repository) -> OperationRecord:
    record = repo.get_operation(operation_id)
    if record.kind != KIND:  # /shadow-tests/{id} names no shadow test: 404, as for an unknown id
        raise NotFound(f"operation {operation_id} is a {record.kind}, not a shadow test", "id")
    return record


def get(operation_id: str, repo: Repository) -> ShadowTestView:
    record = _test(operation_id, repo)
    progress = repo.get_operation_state(operation_id, PROGRESS)
    decision = (progress or {}).get("decision")
    waiting = repo.get_task_token(record.endpoint, WaitPurpose.APPROVAL)
    return view(
        record,
        repo.timeline(operation_id),
        progress,
        decision,
        waiting_for="approval" if waiting is not None and waiting.operation_id == operation_id else None,
    )


def view(
    record: OperationRecord,
    timeline: list[TimelineEntry],
    progress: dict[str, Any] | None,
    decision: dict[str, Any] | None,
    *,
    waiting_for: str | None = None,
) -> ShadowTestView:
    entries = [e.model_dump(mode="json", exclude={"operation_id", "expires_at"}) for e in timeline]
    verdicts = [
        {k: v for k, v in e["data"].items() if k != "metrics"} | {"at": e["at"]}
        for e in entries
        if e["kind"] == "verdict"
    ]
    intervals = [i for i, e in enumerate(entries) if e["kind"] == "verdict" and e["data"].get("scope") == "interval"]
    hidden = set(intervals[:-1])  # the latest interval verdict keeps its place, with its metrics' gist
    shown = [e for i, e in enumerate(entries) if i not in hidden]
    phases = (progress or {}).get("phases") or []
    current = int((progress or {}).get("current") or 0)
    phase = None
    if phases:
        now_phase = phases[min(current, len(phases) - 1)]
        phase = {
            "index": current,
            "count": len(phases),
            "sampling_percent": now_phase["sampling_percent"],
            "starts_at": _iso(now_phase["starts_at"]),
            "ends_at": _iso(now_phase["ends_at"]),
            "intervals_judged": int((progress or {}).get("judged") or 0),
        }
    history = [{**h, "at": _iso(h["at"])} for h in (progress or {}).get("sampling_history") or []]
    result = record.result or {}
    phase_verdicts = [v for v in verdicts if v.get("scope") == "phase"]
    dumped = record.model_dump(mode="json")
    return ShadowTestView(
        id=record.id,
        endpoint=record.endpoint,
        status=record.status,
        created_at=dumped["created_at"],
        updated_at=dumped["updated_at"],
        request=record.request,
        plan=record.plan,
        result={k: v for k, v in result.items() if k != "diagnosis"} if record.result else None,
        stop_request=record.stop_request,
        execution_arn=record.execution_arn,
        experiment=(progress or {}).get("experiment")
        or result.get("experiment")
        or (record.plan or {}).get("experiment_name"),
        phase=phase,
        sampling_percent=shadow.current_sampling(progress) if progress else None,
        sampling_history=history,
        verdicts=verdicts,
        final_verdict=result.get("final_verdict")
        or (phase_verdicts[-1] if record.terminal and phase_verdicts else None),
        decision=decision,
        waiting_for=waiting_for if not record.terminal else None,
        timeline=shown,
        diagnosis=result.get("diagnosis"),
    )


def _iso(epoch: Any) -> str | None:
    if epoch is None:
        return None
    return _when(float(epoch))


def list_page(
    repo: Repository, endpoint: str, *, status: OperationStatus | None, limit: int, next_token: str | None
) -> ShadowTestPage:
    """An endpoint's shadow tests, newest first: one Query on the endpoint index per page (no Scan)."""
    records, token = repo.page_operations(endpoint, kind=KIND, status=status, limit=limit, cursor=next_token)
    summaries = []
    for record in records:
        dumped = record.model_dump(mode="json")
        summaries.append(
            ShadowTestSummary(
                id=record.id,
                endpoint=record.endpoint,
                status=record.status,
                created_at=dumped["created_at"],
                updated_at=dumped["updated_at"],
                action=record.request.get("action"),
                decision=(record.result or {}).get("decision"),
                reason=(record.result or {}).get("reason"),
            )
        )
    return ShadowTestPage(shadow_tests=summaries, next_token=token)


# ------------------------------------------------------------------------------------------------ decisions
def _running(operation_id: str, repo: Repository) -> OperationRecord:
    record = _test(operation_id, repo)
    if record.terminal:
        raise Conflict(f"shadow test {operation_id} already ended as {record.status}", "status")
    return record


def _record_decision(
    repo: Repository, record: OperationRecord, decision: str, by: str, reason: str | None
) -> dict[str, Any]:
    wanted = {"decision": decision, "by": by, "at": _when(repo.now()), **({"reason": reason} if reason else {})}
    try:
        written = repo.update_operation_state(record.id, PROGRESS, fields={"decision": wanted}, unless_set="decision")
    except NotFound as missing:
        raise Conflict(f"shadow test {record.id} is not running yet: nothing to decide", "status") from missing
    if not written:
        existing = (repo.get_operation_state(record.id, PROGRESS) or {}).get("decision") or {}
        if existing.get("decision") != decision:
            raise Conflict(
                f"shadow test {record.id} already has a decision: {existing.get('decision')} by {existing.get('by')}",
                "decision",
            )
        return existing
    repo.append_timeline(
        record.id, "decision", f"{decision} requested by {by}" + (f": {reason}" if reason else ""), wanted
    )
    return wanted


def _check_gate(record: OperationRecord, progress: dict[str, Any] | None) -> None:
    """Promotion requires the last phase at 100 % sampling (SageMaker's best practice, InferOps' rule)."""
    if progress is None:
        raise Conflict(f"shadow test {record.id} is not running yet: nothing to promote", "status")
    phases = progress.get("phases") or []
    current = int(progress.get("current") or 0)
    percent = shadow.current_sampling(progress)
    last = bool(phases) and current == len(phases) - 1
    if not last or not shadow.full_sampling_since(progress, float(phases[current]["starts_at"])):
        raise Conflict(
            f"promotion requires the last phase at 100 % sampling: shadow test {record.id} is in phase "
            f"{current + 1}/{len(phases)} at {percent} % sampling",
            "sampling",
        )


def promote(operation_id: str, clients: Clients, *, by: str) -> ShadowTestView:
    """Promote the shadow now (the last phase at 100 % sampling, or a test waiting for approval)."""
    repo = clients.repo
    record = _running(operation_id, repo)
    _check_gate(record, repo.get_operation_state(operation_id, PROGRESS))
    decision = _record_decision(repo, record, "promote", by, None)
    _wake(clients, record, decision)
    return get(operation_id, repo)


def approve(operation_id: str, clients: Clients, *, by: str) -> ShadowTestView:
    """Approve the promotion a paused test waits for."""
    repo = clients.repo
    record = _running(operation_id, repo)
    waiting = repo.get_task_token(record.endpoint, WaitPurpose.APPROVAL)
    if waiting is None or waiting.operation_id != operation_id:
        raise Conflict(f"shadow test {operation_id} is {record.status} and not waiting for an approval", "status")
    _check_gate(record, repo.get_operation_state(operation_id, PROGRESS))
    decision = _record_decision(repo, record, "promote", by, None)
    if not _wake(clients, record, decision):
        raise Conflict(f"shadow test {operation_id} stopped waiting for an approval", "status")
    return get(operation_id, repo)


def _wake(clients: Clients, record: OperationRecord, decision: dict[str, Any]) -> bool:
    """Hand a decision to the parked wait (approval first, else the watch); False when none is parked."""
    for purpose in (WaitPurpose.APPROVAL, WaitPurpose.SHADOW_WATCH):
        token = clients.repo.take_own_task_token(record.endpoint, purpose, record.id)
        if token is not None and not clients.repo.send_to_task_token(clients.stepfunctions, token, output=decision):
            return True
    return False


def discard(operation_id: str, clients: Clients, *, by: str, reason: str | None = None) -> ShadowTestView:
    """Remove the shadow variant now; production keeps serving. At the approval stage this is the decision."""
    repo = clients.repo
    record = _running(operation_id, repo)
    waiting = repo.get_task_token(record.endpoint, WaitPurpose.APPROVAL)
    if waiting is not None and waiting.operation_id == operation_id:
        decision = _record_decision(repo, record, "discard", by, reason)
        if _wake(clients, record, decision):
            return get(operation_id, repo)
    why = reason or f"discarded by {by}"
    repo.request_stop(operation_id, kind="abort", reason=why, by=by)
    repo.append_timeline(operation_id, "discard", why, {"by": by})
    purposes = [WaitPurpose.SHADOW_WATCH, WaitPurpose.APPROVAL]
    if repo.get_operation_state(operation_id, PROGRESS) is None:  # still waiting for SageMaker to start the test
        purposes.append(WaitPurpose.ENDPOINT_UPDATE)
    for purpose in purposes:
        token = repo.take_own_task_token(record.endpoint, purpose, operation_id)
        if token is not None:
            repo.send_to_task_token(clients.stepfunctions, token, error="StopRequested", cause=why)
    return get(operation_id, repo)


# ------------------------------------------------------------------------------------------------ changes
def update(operation_id: str, patch: ShadowTestPatch, clients: Clients, *, by: str) -> ShadowTestView:
    """Change a running experiment: sampling percentage, end time, description (as SageMaker allows)."""
    repo = clients.repo
    _running(operation_id, repo)
    if patch.sampling_percent is None and patch.end_time is None and patch.description is None:
        raise InvalidInput("nothing to change: give sampling_percent, end_time or description", "body")
    progress = repo.get_operation_state(operation_id, PROGRESS)
    if progress is None:
        raise Conflict(f"shadow test {operation_id} is not running yet: its experiment cannot change now", "status")
    name = str(progress["experiment"])
    described = clients.sagemaker.describe_inference_experiment(Name=name)
    if described["Status"] != "Running":
        raise Conflict(
            f"experiment {name} is {described['Status']}: SageMaker changes running experiments only", "status"
        )
    params: dict[str, Any] = {"Name": name}
    fields: dict[str, Any] = {}
    now = repo.now()
    if patch.sampling_percent is not None:
        shadow_config = described["ShadowModeConfig"]
        variant = shadow_config["ShadowModelVariants"][0]["ShadowModelVariantName"]
        params["ShadowModeConfig"] = {
            "SourceModelVariantName": shadow_config["SourceModelVariantName"],
            "ShadowModelVariants": [{"ShadowModelVariantName": variant, "SamplingPercentage": patch.sampling_percent}],
        }
    if patch.end_time is not None:
        end = _check_end(patch.end_time, described, progress, now)
        params["Schedule"] = {"EndTime": datetime.fromtimestamp(end, UTC)}
        fields.update(_rescheduled(progress, end, now))
    if patch.description is not None:
        params["Description"] = patch.description
    clients.sagemaker.update_inference_experiment(**params)
    append: dict[str, list[Any]] = {}
    if patch.sampling_percent is not None:
        append["sampling_history"] = [{"at": now, "percent": patch.sampling_percent, "by": by}]
    repo.update_operation_state(operation_id, PROGRESS, fields=fields or None, append=append or None)
    changes = patch.model_dump(mode="json", exclude_none=True)
    repo.append_timeline(
        operation_id,
        "changed",
        f"changed by {by}: "
        + ", ".join(f"{k} {v}" for k, v in changes.items())
        + (" (the ramp's next phase sets its own sampling)" if patch.sampling_percent is not None else ""),
        {"by": by, **changes},
    )
    return get(operation_id, repo)


def _check_end(end_time: datetime, described: Any, progress: dict[str, Any], now: float) -> float:
    if end_time.tzinfo is None:
        raise InvalidInput("end_time needs a time zone (e.g. 2026-01-31T12:00:00Z)", "end_time")
    end = end_time.timestamp()
    started = described.get("Schedule", {}).get("StartTime")
    start = started.timestamp() if isinstance(started, datetime) else float(progress["running_at"])
    if end > start + MAX_DURATION_SECONDS:
        raise InvalidInput(
            f"end_time is more than 30 days after the experiment's start ({_when(start)}): SageMaker's limit",
            "end_time",
        )
    soonest = now + int(progress["interval_seconds"]) + DECISION_MARGIN_SECONDS
    if end < soonest:
        raise InvalidInput(f"end_time must leave at least one analysis interval: {_when(soonest)} or later", "end_time")
    return end


def _rescheduled(progress: dict[str, Any], end: float, now: float) -> dict[str, Any]:
    """The phases after an end-time change: the current and the remaining phases share what is left equally."""
    analysis_end = end - DECISION_MARGIN_SECONDS
    phases = [dict(p) for p in progress["phases"]]
    current = int(progress.get("current") or 0)
    begin = float(phases[current]["starts_at"])
    each = (analysis_end - begin) / (len(phases) - current)
    interval = int(progress["interval_seconds"])
    if begin + each < now + interval:
        raise InvalidInput(
            f"end_time leaves less than one {interval // 60}-minute analysis interval to each remaining phase",
            "end_time",
        )
    for offset, index in enumerate(range(current, len(phases))):
        phases[index]["starts_at"] = begin + offset * each
        phases[index]["ends_at"] = analysis_end if index == len(phases) - 1 else begin + (offset + 1) * each
    return {"end_at": end, "analysis_end_at": analysis_end, "phases": phases}
