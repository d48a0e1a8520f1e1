"""Reactions to CloudWatch alarm state changes: an alarm in ALARM stops the operations watching it.

A flow that watches alarms (a managed deployment's rollback alarms, a shadow test's guard alarms) registers an
alarm watch per alarm for its operation. When one of them reports ALARM, the operation gets a stop request
(the first request wins; the flow honours it at its next step) and, if the flow is parked in a bake or an
approval wait, that wait's task fails with `AlarmTriggered`, so a managed deployment rolls back at once
instead of at the end of its bake (a shadow test parked watching a phase, or waiting for approval, removes
its shadow variant at once). EventBridge delivers at least once: a repeat finds the stop already
recorded and the task token gone, and a retried delivery fails a token the first one had to put back.

A scale-from-zero alarm (inferops.scaling) in ALARM wakes its endpoint instead: one wake however many fire.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from inferops.errors import Conflict, NotFound, invalid
from inferops.model import Model
from inferops.storage import ALARM_NAME_MAX_LENGTH, WaitPurpose

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

    from inferops.storage import AlarmWatch, Repository

STOP_ERROR = "AlarmTriggered"
"""The error a parked wait fails with: the flows catch it and roll back."""
STOPPABLE_WAITS = (WaitPurpose.BAKE, WaitPurpose.APPROVAL)
SHADOW_TEST_KIND = "shadow_test"  # inferops.shadow.KIND (not imported: it would weigh on this handler's cold start)
SHADOW_TEST_WAITS = (WaitPurpose.SHADOW_WATCH, WaitPurpose.APPROVAL)
"""A shadow test's waits a guard alarm fails: watching a phase, or waiting for approval."""
WAKE_ALARM_PREFIX = "InferOps-"
"""The scale-from-zero alarms inferops.scaling creates (the table says which endpoint each one wakes)."""

AlarmStateValue = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]


class _State(Model):
    model_config = ConfigDict(extra="ignore")

    value: AlarmStateValue
    reason: str = ""
    timestamp: datetime


class _Configuration(Model):
    model_config = ConfigDict(extra="ignore")

    alarmRule: str | None = None  # only composite alarms have one; metric alarms list `metrics`


class _Detail(Model):
    model_config = ConfigDict(extra="ignore")

    alarmName: str = Field(min_length=1, max_length=ALARM_NAME_MAX_LENGTH)
    state: _State
    previousState: _State
    configuration: _Configuration = Field(default_factory=_Configuration)


class _Envelope(Model):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    detail_type: Literal["CloudWatch Alarm State Change"] = Field(alias="detail-type")
    source: Literal["aws.cloudwatch"]
    time: datetime
    detail: _Detail


class AlarmChange(Model):
    """One alarm state change: what the reaction and the timeline use."""

    model_config = ConfigDict(frozen=True)

    event_id: str
    alarm_name: str
    state: AlarmStateValue
    previous_state: AlarmStateValue
    reason: str
    changed_at: datetime
    alarm_rule: str | None
    """The rule of a composite alarm (its reason names the child alarm that changed it); None for metric alarms."""

    def describe(self) -> str:
        kind = "composite alarm" if self.alarm_rule is not None else "alarm"
        return f"{kind} {self.alarm_name} {self.previous_state} -> {self.state}: {self.reason}"


def normalize(event: dict[str, Any]) -> AlarmChange:
    """Parse an EventBridge event; malformed input is an InvalidInput naming the field (dead-lettered)."""
    try:
        envelope = _Envelope.model_validate(event)
    except ValidationError as error:
        raise invalid(error, "not a CloudWatch alarm state change") from error
    detail = envelope.detail
    return AlarmChange(
        event_id=envelope.id,
        alarm_name=detail.alarmName,
        state=detail.state.value,
        previous_state=detail.previousState.value,
        reason=detail.state.reason,
        changed_at=detail.state.timestamp,
        alarm_rule=detail.configuration.alarmRule,
    )


def react(change: AlarmChange, repo: Repository, stepfunctions: SFNClient) -> dict[str, Any]:
    """Stop every running operation that watches the alarm, and fail the bake or approval wait it is parked in.

    Acts on any event whose state is ALARM (a composite alarm's suppression changes repeat ALARM -> ALARM): an
    alarm in ALARM is reason enough to stop, as it is for SageMaker's own guardrails, and stopping is idempotent.
    """
    summary: dict[str, Any] = {"action": "ignored", "alarm": change.alarm_name}
    if change.state != "ALARM":
        return {**summary, "reason": f"the alarm went {change.state}: only ALARM stops operations"}
    woken = _wake(change, repo, stepfunctions)
    if woken is not None:
        return {**summary, **woken}
    watches = repo.alarm_watches(change.alarm_name)
    if not watches:
        return {**summary, "reason": "no running operation watches this alarm"}
    reason = f"alarm {change.alarm_name} went into ALARM: {change.reason}"
    outcome: dict[str, list[str]] = {"stopped": [], "already_stopping": [], "ended": []}
    tokens: dict[str, str] = {}
    for watch in watches:
        verdict, kind = _stop(watch, change, reason, repo)
        outcome[verdict].append(watch.operation_id)
        if verdict != "ended":
            waits = SHADOW_TEST_WAITS if kind == SHADOW_TEST_KIND else STOPPABLE_WAITS
            tokens |= _fail_waits(watch, reason, repo, stepfunctions, waits)
    stopping = outcome["stopped"] or outcome["already_stopping"]
    return {**summary, "action": "stopped" if stopping else "ignored", **outcome, "tokens": tokens}


def _wake(change: AlarmChange, repo: Repository, stepfunctions: SFNClient) -> dict[str, Any] | None:
    """A scale-from-zero alarm wakes its endpoint at once (one wake however many alarms fire); None: not one."""
    arn = os.environ.get("SCALING_STATE_MACHINE_ARN")
    if not arn or not change.alarm_name.startswith(WAKE_ALARM_PREFIX):
        return None
    from inferops.scaling import wake_on_alarm  # only scale-from-zero alarms pay for this import

    return wake_on_alarm(change.alarm_name, change.changed_at.timestamp(), repo, stepfunctions, arn)


def _stop(
    watch: AlarmWatch, change: AlarmChange, reason: str, repo: Repository
) -> tuple[Literal["stopped", "already_stopping", "ended"], str | None]:
    """Record the stop request; only the delivery that records it writes the timeline entry. Also the kind of
    the operation (None when it is gone), which says what waits it may be parked in."""
    try:
        current = repo.get_operation(watch.operation_id)
    except NotFound:  # the watch outlived its operation (both expire by TTL)
        return "ended", None
    if current.terminal:
        return "ended", current.kind
    if current.stop_request is not None:  # a repeat of this event, or an earlier abort or alarm
        return "already_stopping", current.kind
    by = f"alarm:{change.alarm_name}"
    try:
        stopped = repo.request_stop(watch.operation_id, kind="alarm", reason=reason, by=by)
    except Conflict:  # it ended between our read and our write
        return "ended", current.kind
    recorded = stopped.stop_request or {}
    if (recorded.get("by"), recorded.get("reason")) != (by, reason):  # another stop won the race
        return "already_stopping", current.kind
    repo.append_timeline(watch.operation_id, "alarm", reason, change.model_dump(mode="json"))
    return "stopped", current.kind


def _fail_waits(
    watch: AlarmWatch,
    reason: str,
    repo: Repository,
    stepfunctions: SFNClient,
    purposes: tuple[WaitPurpose, ...] = STOPPABLE_WAITS,
) -> dict[str, str]:
    """Fail the operation's parked wait (a deployment's bake/approval, a shadow test's watch/approval), so its
    flow's catch rolls back (removes the shadow) now."""
    results: dict[str, str] = {}
    for purpose in purposes:
        token = repo.take_task_token(watch.endpoint, purpose)
        if token is None:
            continue
        if token.operation_id != watch.operation_id:  # another operation's wait: not ours to end
            repo.put_back_task_token(token)
            continue
        # throttled or a 5xx raises: EventBridge retries, finds the stop recorded and fails the token again;
        # a wait that is gone means the flow moved on: it finds the stop request at its next step
        gone = repo.send_to_task_token(stepfunctions, token, error=STOP_ERROR, cause=reason)
        results[f"{watch.operation_id}:{purpose}"] = f"gone ({gone})" if gone else "failed"
    return results
