"""Scale to zero without the twin: schedules, the cost arithmetic, error translation, the wake claim, the alarm
route, and what the sweep decides for a classic endpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from pydantic import ValidationError

from inferops import alarm_events, scaling
from inferops.errors import NotFound
from inferops.rollout import Retryable, Services
from inferops.scaling import (
    CapacityUnavailable,
    FlowState,
    LastWake,
    Parked,
    ScaleToZeroRequest,
    ScalingFailed,
    Schedule,
    Settings,
    account,
    aws,
    log_capacity,
)
from inferops.storage import OperationStatus, Repository

EVENTS = Path(__file__).resolve().parents[2] / "events" / "alarm_events"
MONDAY_9 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


def at(day: int, hour: int, minute: int = 0) -> float:
    """2026-01-05 is a Monday: day 0 = MON."""
    return MONDAY_9 + day * 86400 + (hour - 9) * HOUR + minute * 60


# --- schedules ------------------------------------------------------------------------------------------
def test_office_hours_schedule() -> None:
    office = Schedule()  # MON-FRI 07:00-20:00 UTC
    assert office.awake(at(0, 7)) and office.awake(at(4, 19, 59))
    assert not office.awake(at(0, 6, 59)) and not office.awake(at(0, 20))
    assert not office.awake(at(5, 12))  # Saturday


def test_overnight_schedule_belongs_to_the_day_it_starts() -> None:
    nights = Schedule(days=["FRI"], start="22:00", end="06:00")
    assert nights.awake(at(4, 23)) and nights.awake(at(5, 5, 59))  # Friday night into Saturday
    assert not nights.awake(at(5, 6)) and not nights.awake(at(3, 23)) and not nights.awake(at(0, 2))


def test_schedule_in_a_time_zone() -> None:
    berlin = Schedule(start="08:00", end="09:00", timezone="Europe/Berlin")  # UTC+1 in January
    assert berlin.awake(at(0, 7, 30)) and not berlin.awake(at(0, 8, 30))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"idle_minutes": 5}, "idle_minutes"),
        ({"max_copies": 0}, "max_copies"),
        ({"schedule": {"start": "25:00"}}, "schedule.start"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, "schedule.timezone"),
        ({"schedule": {"start": "08:00", "end": "08:00"}}, "schedule"),
        ({"schedule": {"days": []}}, "schedule.days"),
        ({"idle": 60}, "idle"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        ScaleToZeroRequest.model_validate(body)
    assert ".".join(str(p) for p in error.value.errors()[0]["loc"]) == field


# --- cost arithmetic ------------------------------------------------------------------------------------
def test_account_integrates_capacity_between_changes_and_counts_idle_hours() -> None:
    start = at(0, 9)
    log = [(start, 2), (start + 1.5 * HOUR, 0), (start + 3 * HOUR, 2)]
    demand = {start: 100.0, start + HOUR: 0.0, start + 2 * HOUR: 0.0, start + 3 * HOUR: 5.0}
    used, idle, zero, hours = account(log, demand, start=start, end=start + 4 * HOUR, before=2)
    assert hours == 4.0
    assert zero == pytest.approx(1.5)  # 10:30-12:00
    assert used == pytest.approx(2 * 2.5)
    assert idle == pytest.approx(1.0)  # 10:00-10:30 with 2 instances and no requests


def test_account_uses_the_capacity_before_the_first_change() -> None:
    start = at(0, 9)
    used, idle, zero, _ = account([], {}, start=start + 0.5 * HOUR, end=start + 2 * HOUR, before=3)
    assert (used, idle, zero) == (pytest.approx(4.5), pytest.approx(4.5), 0.0)


def test_capacity_log_keeps_changes_only_and_forgets_old_ones() -> None:
    settings = Settings(endpoint="ep", kind="classic", request=ScaleToZeroRequest(), enabled_at=0.0)
    settings = log_capacity(settings, 100.0, 2)
    assert log_capacity(settings, 200.0, 2) is settings
    settings = log_capacity(settings, 300.0, 0)
    late = log_capacity(settings, 300.0 + 40 * 86400, 1)
    assert [c for _, c in settings.capacity_log] == [2, 0]
    assert late.capacity_log == [(300.0 + 40 * 86400, 1)]


# --- AWS errors -----------------------------------------------------------------------------------------
def _client_error(code: str, status: int = 400, message: str = "nope") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "X"
    )


def test_a_quota_refusal_is_capacity_unavailable() -> None:
    message = "The account-level service limit 'ml.g5.xlarge for endpoint usage' is 2 Instances"
    expected = "quota reached \\(ResourceLimitExceeded\\): The account-level"
    with pytest.raises(CapacityUnavailable, match=expected), aws("scaling out"):
        raise _client_error("ResourceLimitExceeded", message=message)


@pytest.mark.parametrize(("code", "status", "kind"), [("ThrottlingException", 400, Retryable), ("X", 503, Retryable)])
def test_throttling_and_5xx_are_retryable(code: str, status: int, kind: type[Exception]) -> None:
    with pytest.raises(kind), aws("scaling out"):
        raise _client_error(code, status)


def test_other_errors_are_final() -> None:
    with pytest.raises(ScalingFailed, match="scaling out failed: ValidationException"), aws("scaling out"):
        raise _client_error("ValidationException")


# --- the wake claim and the alarm route ------------------------------------------------------------------
def _settings(repo: Repository, endpoint: str = "chat", **extra: Any) -> Settings:
    settings = Settings(endpoint=endpoint, kind="inference-component", request=ScaleToZeroRequest(), enabled_at=0.0)
    settings = settings.model_copy(update=extra)
    repo.put_scaling_settings(endpoint, settings.model_dump(mode="json"))
    return settings


def test_one_wake_claim_at_a_time(ddb_table: Repository) -> None:
    repo = ddb_table
    with pytest.raises(NotFound):
        repo.claim_wake("chat", "op-1", 60)
    _settings(repo)
    assert repo.claim_wake("chat", "op-1", 60) is None
    assert repo.claim_wake("chat", "op-1", 60) is None  # the holder again
    assert repo.claim_wake("chat", "op-2", 60) == "op-1"
    assert not repo.release_wake("chat", "op-2")
    assert repo.release_wake("chat", "op-1")
    assert repo.claim_wake("chat", "op-2", 60) is None
    repo.put_scaling_settings("chat", {"endpoint": "chat"})  # new settings keep the claim in flight
    assert repo.claim_wake("chat", "op-3", 60) == "op-2"
    assert [i["endpoint"] for i in repo.scaling_endpoints()] == ["chat"]


def test_a_lapsed_wake_claim_is_taken_over(ddb_table: Repository) -> None:
    now = [1000.0]
    repo = Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: now[0])
    _settings(repo)
    assert repo.claim_wake("chat", "op-1", 60) is None
    now[0] += 61
    assert repo.claim_wake("chat", "op-2", 60) is None


def _sfn_expecting(starts: int) -> tuple[Any, Stubber]:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    stub = Stubber(sfn)
    for n in range(starts):
        stub.add_response(
            "start_execution",
            {
                "executionArn": f"arn:aws:states:us-east-1:123456789012:execution:scaling:{n}",
                "startDate": datetime.now(UTC),
            },
            {"stateMachineArn": "arn:sm", "name": ANY, "input": ANY},
        )
    stub.activate()
    return sfn, stub


def test_many_scale_from_zero_alarms_start_one_wake(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = ddb_table
    monkeypatch.setenv("SCALING_STATE_MACHINE_ARN", "arn:sm")
    event = json.loads((EVENTS / "scale_from_zero_alarm.json").read_text())
    _settings(repo)
    repo.put_wake_alarm(event["detail"]["alarmName"], "chat")
    sfn, stub = _sfn_expecting(1)
    change = alarm_events.normalize(event)
    first = alarm_events.react(change, repo, sfn)
    again = alarm_events.react(change, repo, sfn)
    stub.assert_no_pending_responses()
    assert (first["action"], first["endpoint"]) == ("wake", "chat")
    assert (again["action"], again["operation"]) == ("already_waking", first["operation"])
    record = repo.get_operation(first["operation"])
    assert record.kind == "scaling" and record.request["trigger"] == f"alarm:{change.alarm_name}"
    assert repo.get_lock("chat") is not None


def test_an_alarm_inferops_did_not_make_for_waking_is_not_a_wake(
    ddb_table: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCALING_STATE_MACHINE_ARN", "arn:sm")
    event = json.loads((EVENTS / "scale_from_zero_alarm.json").read_text())
    sfn, _stub = _sfn_expecting(0)
    result = alarm_events.react(alarm_events.normalize(event), ddb_table, sfn)
    assert result["action"] == "ignored" and result["reason"] == "no running operation watches this alarm"


def test_a_wake_alarm_while_another_operation_holds_the_endpoint_is_ignored(
    ddb_table: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = ddb_table
    _settings(repo)
    repo.put_wake_alarm("InferOps-chat-llm-NoCapacityInvocationFailures", "chat")
    repo.acquire_lock("chat", "op-deploying", 600)
    sfn, _ = _sfn_expecting(0)
    result = scaling.wake_on_alarm("InferOps-chat-llm-NoCapacityInvocationFailures", 0.0, repo, sfn, "arn:sm")
    assert result is not None and result["action"] == "ignored" and "op-deploying" in result["reason"]
    assert repo.claim_wake("chat", "op-next", 60) is None  # the claim was released


def test_a_wake_alarm_reporting_the_gap_a_wake_just_filled_starts_no_second_wake(ddb_table: Repository) -> None:
    """Found by the chaos suite: an async endpoint's alarm (two 1-minute periods) went into ALARM a minute after
    a requested wake had served, and started a second wake for the same burst of requests."""
    repo = ddb_table
    alarm = "InferOps-ocr-HasBacklogWithoutCapacity"
    woken = LastWake(operation_id="op-woke", trigger="request", requested_at=900.0, serving_at=1000.0, seconds=100.0)
    _settings(repo, "ocr", last_wake=woken)
    repo.put_wake_alarm(alarm, "ocr")
    sfn, stub = _sfn_expecting(1)
    late = scaling.wake_on_alarm(alarm, 1000.0 + scaling.WAKE_ALARM_LOOKBACK_SECONDS, repo, sfn, "arn:sm")
    early = scaling.wake_on_alarm(alarm, 950.0, repo, sfn, "arn:sm")  # changed before it served, delivered late
    fresh = scaling.wake_on_alarm(alarm, 1001.0 + scaling.WAKE_ALARM_LOOKBACK_SECONDS, repo, sfn, "arn:sm")
    stub.assert_no_pending_responses()
    assert late == early == {"action": "already_awake", "endpoint": "ocr", "operation": "op-woke"}
    assert fresh is not None and fresh["action"] == "wake" and fresh["operation"] != "op-woke"


# --- what the sweep decides ---------------------------------------------------------------------------
class _Metrics:
    """GetMetricData answering `requests` per hour for every query."""

    def __init__(self, requests: float) -> None:
        self.requests = requests
        self.calls = 0

    def get_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        stamp = kwargs["StartTime"]
        return {"MetricDataResults": [{"Timestamps": [stamp], "Values": [self.requests]}]}


def _clients(repo: Repository, requests: float = 0.0) -> Services:
    return Services(repo, None, None, _Metrics(requests), None)  # type: ignore[arg-type]


def _classic(**extra: Any) -> Settings:
    request = ScaleToZeroRequest(idle_minutes=30, schedule=Schedule())
    return Settings(endpoint="scorer", kind="classic", request=request, enabled_at=at(0, 7), **extra)


def test_sweep_parks_outside_the_awake_hours_and_unparks_in_them(ddb_table: Repository) -> None:
    clients = _clients(ddb_table, requests=50)
    parked = Parked(config_name="scorer-v1", parked_at=at(0, 20), by="schedule")
    assert scaling.decide(_classic(), clients, at(0, 21)) == ("park", "schedule")
    assert scaling.decide(_classic(parked=parked), clients, at(0, 21)) == (None, "")
    assert scaling.decide(_classic(parked=parked), clients, at(1, 7, 5)) == ("unpark", "schedule")
    by_hand = parked.model_copy(update={"by": "request"})
    assert scaling.decide(_classic(parked=by_hand), clients, at(1, 7, 5)) == (None, "")  # parked on purpose


def test_sweep_keeps_an_endpoint_woken_at_night_up_for_one_idle_window(ddb_table: Repository) -> None:
    clients = _clients(ddb_table, requests=0)
    wake = LastWake(
        operation_id="op-1", trigger="request", requested_at=at(0, 22), serving_at=at(0, 22, 5), seconds=300
    )
    assert scaling.decide(_classic(last_wake=wake), clients, at(0, 22, 20)) == (None, "")
    assert scaling.decide(_classic(last_wake=wake), clients, at(0, 22, 40)) == ("park", "schedule")


def test_sweep_parks_an_idle_endpoint_in_its_awake_hours(ddb_table: Repository) -> None:
    assert scaling.decide(_classic(), _clients(ddb_table, requests=0), at(0, 7, 20)) == (None, "")  # window not over
    assert scaling.decide(_classic(), _clients(ddb_table, requests=0), at(0, 10)) == ("park", "idle")
    assert scaling.decide(_classic(), _clients(ddb_table, requests=3), at(0, 10)) == (None, "")


# --- failures -------------------------------------------------------------------------------------------
def test_a_wake_without_capacity_fails_naming_the_quota(ddb_table: Repository) -> None:
    repo = ddb_table
    record = repo.create_operation("scaling", "chat", {"action": "wake"})
    state = FlowState(
        operation_id=record.id,
        endpoint_name="chat",
        action="wake",
        requested_at=0.0,
        error={
            "Error": "CapacityUnavailable",
            "Cause": json.dumps({"errorMessage": "scaling out: quota reached (ResourceLimitExceeded): limit is 2"}),
        },
    )
    services = Services(repo, None, None, None, None)  # type: ignore[arg-type]
    ended = scaling.handle_failure(state, services)
    assert ended.outcome is not None and ended.outcome.status is OperationStatus.FAILED
    assert ended.outcome.reason == (
        "no capacity after retries with backoff: scaling out: quota reached (ResourceLimitExceeded): limit is 2"
    )
    assert [e.kind for e in repo.timeline(record.id)] == ["error"]


# --- disabling restores capacity ------------------------------------------------------------------------
class _Copies:
    """SageMaker as far as restoring a component's copies goes."""

    def __init__(self, desired: int) -> None:
        self.desired = desired
        self.updates: list[int] = []

    def describe_inference_component(self, InferenceComponentName: str) -> dict[str, Any]:
        return {"RuntimeConfig": {"DesiredCopyCount": self.desired}}

    def update_inference_component_runtime_config(self, **kwargs: Any) -> dict[str, Any]:
        self.updates.append(kwargs["DesiredRuntimeConfig"]["CopyCount"])
        return {}


@pytest.mark.parametrize(
    ("min_capacity", "capacity", "desired", "updates"),
    [(None, 2, 0, [2]), (1, 3, 0, [1]), (None, 2, 2, []), (0, 2, 0, []), (None, None, 0, [])],
)
def test_disabling_brings_copies_back_to_what_they_were(
    min_capacity: int | None, capacity: int | None, desired: int, updates: list[int]
) -> None:
    sm = _Copies(desired)
    saved = scaling.SavedTarget(
        resource_id="inference-component/chat-llm",
        dimension=scaling.IC_DIMENSION,
        min_capacity=min_capacity,
        capacity=capacity,
    )
    settings = Settings(endpoint="chat", kind="inference-component", request=ScaleToZeroRequest(), enabled_at=0.0)
    scaling._raise_to_min(Services(None, sm, None, None, None), settings, saved)  # type: ignore[arg-type]
    assert sm.updates == updates


class _Creating:
    """SageMaker with the endpoint still coming up."""

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        return {"EndpointName": EndpointName, "EndpointStatus": "Creating", "ProductionVariants": []}


def test_a_wait_that_outlives_its_deadline_fails_instead_of_looking_forever(ddb_table: Repository) -> None:
    now = [1000.0]
    repo = Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: now[0])
    record = repo.create_operation("scaling", "scorer", {"action": "unpark"})
    wait = scaling.Wait(expect="endpoint", started_at=1000.0, heartbeat_seconds=375, give_up_at=2800.0)
    state = FlowState(operation_id=record.id, endpoint_name="scorer", action="unpark", requested_at=1000.0, wait=wait)
    services = Services(repo, _Creating(), None, None, None)  # type: ignore[arg-type]
    now[0] = 2000.0
    again = scaling.check(state, services)
    assert again.next == "await" and again.wait is not None and again.wait.heartbeat_seconds == scaling.RECHECK_SECONDS
    now[0] = 2800.0
    with pytest.raises(ScalingFailed, match="not serving 1800 s after the change \\(the endpoint is Creating\\)"):
        scaling.check(again, services)


class _Deleting:
    """SageMaker deleting the parked endpoint, then without it: CreateEndpoint recorded."""

    def __init__(self) -> None:
        self.gone = False
        self.created: list[str] = []

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        if self.gone and not self.created:
            raise ClientError(
                {"Error": {"Code": "ValidationException", "Message": f'Could not find endpoint "{EndpointName}".'}},
                "DescribeEndpoint",
            )
        status = "Creating" if self.created else "Deleting"
        return {"EndpointName": EndpointName, "EndpointStatus": status, "ProductionVariants": []}

    def create_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        self.created.append(kwargs["EndpointConfigName"])
        return {}


def test_a_wake_right_after_a_park_waits_for_the_deletion_then_recreates(ddb_table: Repository) -> None:
    """The park's DeleteEndpoint takes a minute or more: the wake waits for it instead of failing its retries."""
    parked = Parked(config_name="scorer-v1", parked_at=at(0, 21), by="schedule")
    ddb_table.put_scaling_settings("scorer", _classic(parked=parked).model_dump(mode="json"))
    record = ddb_table.create_operation("scaling", "scorer", {"action": "wake"})
    state = FlowState(operation_id=record.id, endpoint_name="scorer", action="wake", requested_at=at(0, 21))
    sm = _Deleting()
    services = Services(ddb_table, sm, None, None, None)  # type: ignore[arg-type]

    waiting = scaling.apply(state, services)
    assert waiting.next == "await" and waiting.wait is not None and waiting.wait.expect == "gone"
    assert scaling.check(waiting, services).wait == waiting.wait.model_copy(
        update={"heartbeat_seconds": scaling.RECHECK_SECONDS}
    )  # still deleting: look again
    assert sm.created == []
    sm.gone = True
    recreating = scaling.check(waiting, services)
    assert sm.created == ["scorer-v1"]
    assert recreating.next == "await" and recreating.wait is not None and recreating.wait.expect == "endpoint"


def test_a_park_the_sweep_started_is_dropped_when_a_wake_ended_since(ddb_table: Repository) -> None:
    """The sweep decides on what it read before taking the lock: under the lock, the park decides again."""
    now = [at(0, 22, 10)]
    repo = Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: now[0])
    wake = LastWake(
        operation_id="op-1", trigger="request", requested_at=at(0, 22), serving_at=at(0, 22, 5), seconds=300
    )
    repo.put_scaling_settings("scorer", _classic(last_wake=wake).model_dump(mode="json"))
    record = repo.create_operation("scaling", "scorer", {"action": "park"})
    state = FlowState(
        operation_id=record.id, endpoint_name="scorer", action="park", trigger="schedule", requested_at=at(0, 22)
    )
    services = Services(repo, _Creating(), None, _Metrics(0), None)  # type: ignore[arg-type]
    ended = scaling.apply(state, services)
    assert ended.outcome is not None and ended.outcome.status is OperationStatus.SUCCEEDED
    assert ended.outcome.reason.startswith("not parked")
    now[0] = at(0, 22, 40)  # one idle window after the wake: the same park goes ahead (and finds it Creating)
    with pytest.raises(Retryable, match="parking once it settles"):
        scaling.apply(state, services)


class _RolledBack:
    """SageMaker after a scale-out from zero whose instances failed their health check."""

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        return {
            "EndpointName": EndpointName,
            "EndpointStatus": "InService",
            "FailureReason": "The primary container for production variant AllTraffic did not pass the ping check.",
            "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 0, "DesiredInstanceCount": 0}],
        }


def test_a_wake_whose_scale_out_was_rolled_back_fails_at_once_with_sagemakers_reason(ddb_table: Repository) -> None:
    record = ddb_table.create_operation("scaling", "ocr", {"action": "wake"})
    wait = scaling.Wait(expect="instances", started_at=0.0, heartbeat_seconds=300, give_up_at=9e12)
    state = FlowState(operation_id=record.id, endpoint_name="ocr", action="wake", requested_at=0.0, wait=wait)
    services = Services(ddb_table, _RolledBack(), None, None, None)  # type: ignore[arg-type]
    with pytest.raises(ScalingFailed, match=r"the scale-out was rolled back: The primary container .* ping check"):
        scaling.check(state, services)


class _FailedRecreation(_Deleting):
    """The parked endpoint recreated by an earlier wake and Failed; deleting it makes it Deleting, then gone."""

    def __init__(self) -> None:
        super().__init__()
        self.status = "Failed"
        self.deleted = 0

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        if self.status == "gone":
            return super().describe_endpoint(EndpointName)
        return {"EndpointName": EndpointName, "EndpointStatus": self.status, "ProductionVariants": []}

    def delete_endpoint(self, EndpointName: str) -> dict[str, Any]:
        self.deleted += 1
        self.status = "Deleting"
        return {}


def test_a_failed_wake_of_a_parked_endpoint_deletes_the_failed_recreation_and_the_next_wake_starts_over(
    ddb_table: Repository,
) -> None:
    parked = Parked(config_name="scorer-v1", parked_at=at(0, 21), by="schedule")
    ddb_table.put_scaling_settings("scorer", _classic(parked=parked).model_dump(mode="json"))
    sm = _FailedRecreation()
    services = Services(ddb_table, sm, None, None, None)  # type: ignore[arg-type]
    record = ddb_table.create_operation("scaling", "scorer", {"action": "wake"})
    ddb_table.acquire_lock("scorer", record.id, 600)
    failed = FlowState(
        operation_id=record.id,
        endpoint_name="scorer",
        action="wake",
        requested_at=at(0, 21),
        outcome=scaling.Outcome(status=OperationStatus.FAILED, reason="the endpoint is Failed: ping health check"),
    )
    scaling.finish(failed, services)
    assert (sm.deleted, ddb_table.get_operation(record.id).status) == (1, OperationStatus.FAILED)
    assert ddb_table.get_lock("scorer") is None
    assert scaling.load_settings(ddb_table, "scorer").parked == parked  # type: ignore[union-attr]

    sm.status = "Failed"  # the clean-up did not happen (say it was throttled): the next wake deletes it first
    again = ddb_table.create_operation("scaling", "scorer", {"action": "wake"})
    state = FlowState(operation_id=again.id, endpoint_name="scorer", action="wake", requested_at=at(0, 22))
    waiting = scaling.apply(state, services)
    assert sm.deleted == 2 and waiting.wait is not None and waiting.wait.expect == "gone"


class _StillServing(_Deleting):
    """The endpoint a park recorded but did not delete (its DeleteEndpoint answered 503)."""

    def __init__(self) -> None:
        super().__init__()
        self.deletes = 0

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        status = "Deleting" if self.deletes else "InService"
        return {"EndpointName": EndpointName, "EndpointStatus": status, "ProductionVariants": []}

    def delete_endpoint(self, EndpointName: str) -> dict[str, Any]:
        self.deletes += 1
        return {}


def test_a_retried_park_whose_delete_failed_deletes_the_endpoint_instead_of_calling_it_parked(
    ddb_table: Repository,
) -> None:
    parked = Parked(config_name="scorer-v1", parked_at=at(0, 21), by="idle")
    ddb_table.put_scaling_settings("scorer", _classic(parked=parked).model_dump(mode="json"))
    record = ddb_table.create_operation("scaling", "scorer", {"action": "park"})
    state = FlowState(operation_id=record.id, endpoint_name="scorer", action="park", trigger="idle", requested_at=0.0)
    sm = _StillServing()
    services = Services(ddb_table, sm, None, None, None)  # type: ignore[arg-type]
    ended = scaling.apply(state, services)
    assert sm.deletes == 1 and ended.outcome is not None and ended.outcome.reason.startswith("parked (idle)")
    again = scaling.apply(state, services)  # a second retry finds it going: nothing more
    assert sm.deletes == 1 and again.outcome is not None and again.outcome.reason == "already parked"
