"""Alarm events: normalized from EventBridge's shape; an alarm in ALARM stops the watching operations once."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from inferops.alarm_events import STOP_ERROR, normalize, react
from inferops.errors import InvalidInput
from inferops.storage import OperationStatus, Repository, WaitPurpose

EVENTS = Path(__file__).resolve().parents[2] / "events" / "alarm_events"
ALARM = "inferops-fraud-scorer-fleet-errors"
ENDPOINT = "fraud-scorer"
REASON = (
    f"alarm {ALARM} went into ALARM: Threshold Crossed: 2 out of the last 2 datapoints [4.2 (05/01/26 09:40:00), "
    "1.6 (05/01/26 09:30:00)] were greater than the threshold (1.0) (minimum 2 datapoints for OK -> ALARM transition)."
)


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


@pytest.fixture
def sfn() -> Any:
    return boto3.client("stepfunctions", region_name="us-east-1")


def baking(repo: Repository, operation_id: str = "op-1", *, status: OperationStatus = OperationStatus.RUNNING) -> None:
    """A managed deployment of fraud-scorer parked in its bake, watching the fleet-errors alarm."""
    repo.create_operation("deployment", ENDPOINT, {}, operation_id=operation_id)
    repo.transition(operation_id, OperationStatus.RUNNING)
    if status is not OperationStatus.RUNNING:
        repo.transition(operation_id, status)
    repo.put_alarm_watch(ALARM, ENDPOINT, operation_id, ttl_seconds=3600)
    repo.put_task_token(ENDPOINT, WaitPurpose.BAKE, f"bake-{operation_id}", operation_id, ttl_seconds=3600)


def failure(token: str) -> dict[str, Any]:
    return {"taskToken": token, "error": STOP_ERROR, "cause": REASON}


# --- normalize ------------------------------------------------------------------------------------------


def test_metric_alarm_into_alarm() -> None:
    change = normalize(sample("rollback_alarm_in_alarm"))
    assert (change.alarm_name, change.previous_state, change.state) == (ALARM, "OK", "ALARM")
    assert change.reason.startswith("Threshold Crossed: 2 out of the last 2 datapoints")
    assert change.changed_at == datetime(2026, 1, 5, 9, 52, 40, 207000, tzinfo=UTC)
    assert change.alarm_rule is None
    assert change.describe().startswith(f"alarm {ALARM} OK -> ALARM: Threshold Crossed")


def test_metric_alarm_back_to_ok() -> None:
    change = normalize(sample("rollback_alarm_ok"))
    assert (change.previous_state, change.state) == ("ALARM", "OK")


def test_composite_alarm_keeps_its_rule_and_the_child_in_the_reason() -> None:
    change = normalize(sample("composite_alarm_in_alarm"))
    assert (change.alarm_name, change.state) == ("inferops-fraud-scorer-rollback", "ALARM")
    assert change.alarm_rule is not None and 'ALARM("inferops-fraud-scorer-new-fleet-latency")' in change.alarm_rule
    assert "alarm:inferops-fraud-scorer-new-fleet-latency transitioned to ALARM" in change.reason
    assert change.describe().startswith("composite alarm inferops-fraud-scorer-rollback OK -> ALARM")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["detail"].pop("alarmName"), "detail.alarmName"),
        (lambda e: e["detail"].update(alarmName=""), "detail.alarmName"),
        (lambda e: e["detail"].update(alarmName="x" * 256), "detail.alarmName"),
        (lambda e: e["detail"]["state"].update(value="FIRING"), "detail.state.value"),
        (lambda e: e["detail"]["state"].pop("timestamp"), "detail.state.timestamp"),
        (lambda e: e["detail"].pop("previousState"), "detail.previousState"),
        (lambda e: e.update(source="aws.sagemaker"), "source"),
        (lambda e: e.update({"detail-type": "CloudWatch Alarm Configuration Change"}), "detail-type"),
    ],
)
def test_malformed_events_name_the_field(mutate: Any, field: str) -> None:
    event = sample("rollback_alarm_in_alarm")
    mutate(event)
    with pytest.raises(InvalidInput) as raised:
        normalize(event)
    assert raised.value.field == field


# --- react ----------------------------------------------------------------------------------------------


def test_alarm_stops_the_watching_operation_and_fails_its_bake(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    change = normalize(sample("rollback_alarm_in_alarm"))
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("bake-op-1"))
        result = react(change, ddb_table, sfn)
        stub.assert_no_pending_responses()

    assert result == {
        "action": "stopped",
        "alarm": ALARM,
        "stopped": ["op-1"],
        "already_stopping": [],
        "ended": [],
        "tokens": {"op-1:bake": "failed"},
    }
    stop = ddb_table.get_operation("op-1").stop_request
    assert stop is not None
    assert (stop["kind"], stop["by"], stop["reason"]) == ("alarm", f"alarm:{ALARM}", REASON)
    [entry] = ddb_table.timeline("op-1")
    assert (entry.kind, entry.message, entry.data["event_id"]) == ("alarm", REASON, change.event_id)
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE) is None


def test_a_duplicate_event_fails_nothing_twice(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    event = sample("rollback_alarm_in_alarm")
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("bake-op-1"))
        react(normalize(event), ddb_table, sfn)
        repeat = react(normalize(event), ddb_table, sfn)  # the Stubber fails on any unexpected call
        stub.assert_no_pending_responses()

    assert (repeat["stopped"], repeat["already_stopping"], repeat["tokens"]) == ([], ["op-1"], {})
    assert len(ddb_table.timeline("op-1")) == 1


def test_a_paused_approval_is_failed_too(ddb_table: Repository, sfn: Any) -> None:
    ddb_table.create_operation("deployment", ENDPOINT, {}, operation_id="op-2")
    ddb_table.transition("op-2", OperationStatus.RUNNING)
    ddb_table.transition("op-2", OperationStatus.PAUSED)
    ddb_table.put_alarm_watch(ALARM, ENDPOINT, "op-2", ttl_seconds=3600)
    ddb_table.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approve-op-2", "op-2", ttl_seconds=3600)
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("approve-op-2"))
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
    assert result["tokens"] == {"op-2:approval": "failed"}


def test_ok_is_ignored(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    with Stubber(sfn):
        result = react(normalize(sample("rollback_alarm_ok")), ddb_table, sfn)
    assert result == {"action": "ignored", "alarm": ALARM, "reason": "the alarm went OK: only ALARM stops operations"}
    assert ddb_table.get_operation("op-1").stop_request is None
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE) is not None


def test_insufficient_data_is_ignored(ddb_table: Repository, sfn: Any) -> None:
    event = sample("rollback_alarm_in_alarm")
    event["detail"]["state"]["value"] = "INSUFFICIENT_DATA"
    with Stubber(sfn):
        assert react(normalize(event), ddb_table, sfn)["action"] == "ignored"


def test_an_unwatched_alarm_is_ignored(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    with Stubber(sfn):
        result = react(normalize(sample("composite_alarm_in_alarm")), ddb_table, sfn)
    assert result["reason"] == "no running operation watches this alarm"
    assert ddb_table.get_operation("op-1").stop_request is None


def test_a_watch_of_a_finished_operation_is_skipped(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table, "op-done", status=OperationStatus.SUCCEEDED)
    ddb_table.put_alarm_watch(ALARM, ENDPOINT, "op-vanished", ttl_seconds=3600)  # its operation expired
    with Stubber(sfn) as stub:
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
        stub.assert_no_pending_responses()
    assert (result["action"], result["ended"], result["tokens"]) == ("ignored", ["op-done", "op-vanished"], {})
    assert ddb_table.get_operation("op-done").stop_request is None
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE) is not None  # not ours to touch


def test_an_expired_watch_is_not_acted_on(ddb_table: Repository, sfn: Any) -> None:
    clock = [1_750_000_000.0]
    repo = Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: clock[0])
    baking(repo)
    clock[0] += 3601
    with Stubber(sfn):
        assert react(normalize(sample("rollback_alarm_in_alarm")), repo, sfn)["action"] == "ignored"


def test_another_operations_token_is_put_back(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    ddb_table.put_task_token(ENDPOINT, WaitPurpose.BAKE, "bake-op-9", "op-9", ttl_seconds=600)
    before = ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE)
    with Stubber(sfn) as stub:
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
        stub.assert_no_pending_responses()
    assert (result["stopped"], result["tokens"]) == (["op-1"], {})
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE) == before


def test_an_earlier_abort_wins_but_the_bake_still_ends(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    ddb_table.request_stop("op-1", kind="abort", reason="operator", by="alice")
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("bake-op-1"))
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
    assert (result["already_stopping"], result["tokens"]) == (["op-1"], {"op-1:bake": "failed"})
    assert ddb_table.get_operation("op-1").stop_request["by"] == "alice"  # type: ignore[index]
    assert ddb_table.timeline("op-1") == []


@pytest.mark.parametrize("code", ["TaskDoesNotExist", "InvalidToken", "TaskTimedOut"])
def test_a_wait_the_flow_already_left_is_fine(ddb_table: Repository, sfn: Any, code: str) -> None:
    baking(ddb_table)
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_failure", service_error_code=code)
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
    assert (result["stopped"], result["tokens"]) == (["op-1"], {"op-1:bake": f"gone ({code})"})
    assert ddb_table.get_operation("op-1").stop_request is not None  # the flow sees it at its next step
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE) is None


def test_a_throttled_failure_puts_the_token_back_for_the_retry(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    stored = ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE)
    event = sample("rollback_alarm_in_alarm")
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_failure", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(sfn.exceptions.ClientError):
            react(normalize(event), ddb_table, sfn)
        assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.BAKE) == stored  # same token, creation and expiry
        assert ddb_table.get_operation("op-1").stop_request is not None

        stub.add_response("send_task_failure", {}, failure("bake-op-1"))
        retry = react(normalize(event), ddb_table, sfn)  # EventBridge's retry delivers
        stub.assert_no_pending_responses()
    assert (retry["already_stopping"], retry["tokens"]) == (["op-1"], {"op-1:bake": "failed"})
    assert len(ddb_table.timeline("op-1")) == 1


# --- shadow tests -----------------------------------------------------------------------------------------


def watching_shadow(
    repo: Repository, operation_id: str = "op-s", purpose: WaitPurpose = WaitPurpose.SHADOW_WATCH
) -> None:
    """A shadow test of fraud-scorer parked between two analyses (or waiting for approval), with a guard alarm."""
    repo.create_operation("shadow_test", ENDPOINT, {}, operation_id=operation_id)
    repo.transition(operation_id, OperationStatus.RUNNING)
    repo.put_alarm_watch(ALARM, ENDPOINT, operation_id, ttl_seconds=3600)
    repo.put_task_token(ENDPOINT, purpose, f"{purpose}-{operation_id}", operation_id, ttl_seconds=3600)


def test_a_guard_alarm_fails_a_shadow_tests_parked_watch(ddb_table: Repository, sfn: Any) -> None:
    watching_shadow(ddb_table)
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("shadow-watch-op-s"))
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
        stub.assert_no_pending_responses()
    assert (result["stopped"], result["tokens"]) == (["op-s"], {"op-s:shadow-watch": "failed"})
    stop = ddb_table.get_operation("op-s").stop_request
    assert stop is not None and stop["kind"] == "alarm"
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH) is None


def test_a_guard_alarm_fails_a_shadow_test_waiting_for_approval(ddb_table: Repository, sfn: Any) -> None:
    watching_shadow(ddb_table, purpose=WaitPurpose.APPROVAL)
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("approval-op-s"))
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
    assert result["tokens"] == {"op-s:approval": "failed"}


def test_a_deployments_watch_does_not_touch_shadow_waits(ddb_table: Repository, sfn: Any) -> None:
    baking(ddb_table)
    ddb_table.put_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH, "watch-op-1", "op-1", ttl_seconds=3600)
    with Stubber(sfn) as stub:
        stub.add_response("send_task_failure", {}, failure("bake-op-1"))
        result = react(normalize(sample("rollback_alarm_in_alarm")), ddb_table, sfn)
        stub.assert_no_pending_responses()
    assert result["tokens"] == {"op-1:bake": "failed"}  # the deployment's waits, as before
    assert ddb_table.get_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH) is not None


def test_the_shadow_kind_is_the_flows() -> None:
    from inferops import alarm_events, shadow

    assert alarm_events.SHADOW_TEST_KIND == shadow.KIND
