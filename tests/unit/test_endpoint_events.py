"""Endpoint events: normalized from EventBridge's shapes, repeats and stale ones dropped, flows resumed once."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from inferops.endpoint_events import WAIT_PURPOSE, normalize, react
from inferops.errors import InvalidInput
from inferops.storage import Repository

EVENTS = Path(__file__).resolve().parents[2] / "events" / "endpoint_events"


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def fresh(name: str, after: float = 1.0) -> dict[str, Any]:
    """A sample event that happened `after` seconds from now (after the flow stored its token)."""
    event = sample(name)
    event["detail"]["LastModifiedTime"] = (time.time() + after) * 1000
    return event


@pytest.fixture
def sfn() -> Any:
    return boto3.client("stepfunctions", region_name="us-east-1")


def test_endpoint_state_change_is_in_describe_endpoint_vocabulary() -> None:
    change = normalize(sample("endpoint_in_service"))
    assert (change.kind, change.status, change.config_name) == ("endpoint", "InService", "fraud-scorer-io-029f311a")
    assert change.modified_ms == 1767606331000
    assert change.settled


def test_deployment_change_carries_the_new_fleet_phase() -> None:
    change = normalize(sample("deployment_canary_baking"))
    assert (change.kind, change.status) == ("deployment", "Updating")
    assert change.pending_config_name == "fraud-scorer-io-029f311a"
    assert change.variant_statuses == ["Baking"]
    assert not change.settled


def test_failure_reason_is_kept() -> None:
    change = normalize(sample("endpoint_update_rollback_failed"))
    assert change.status == "UpdateRollbackFailed"
    assert change.failure_reason is not None and "rollback" in change.failure_reason


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["detail"].pop("EndpointName"), "detail.EndpointName"),
        (lambda e: e.update(source="aws.ec2"), "source"),
        (lambda e: e["detail"].update(EndpointStatus="SLEEPING"), "detail.EndpointStatus"),
        (lambda e: e.update({"detail-type": "SageMaker Training Job State Change"}), "detail-type"),
    ],
)
def test_malformed_events_name_the_field(mutate: Any, field: str) -> None:
    event = sample("endpoint_in_service")
    mutate(event)
    with pytest.raises(InvalidInput) as raised:
        normalize(event)
    assert raised.value.field == field


def test_settled_event_resumes_the_waiting_flow_once(ddb_table: Repository, sfn: Any) -> None:
    ddb_table.acquire_lock("fraud-scorer", "op-1", 3600)
    ddb_table.create_operation("deployment", "fraud-scorer", {}, operation_id="op-1")
    ddb_table.put_task_token("fraud-scorer", WAIT_PURPOSE, "token-1", "op-1", 3600)
    event = fresh("endpoint_in_service")
    change = normalize(event)
    with Stubber(sfn) as stub:
        stub.add_response("send_task_success", {}, {"taskToken": "token-1", "output": change.model_dump_json()})
        assert react(change, ddb_table, sfn) == {"action": "resumed", "operation": "op-1"}
        repeat = copy.deepcopy(event)
        repeat["id"] = "another-delivery"
        assert react(normalize(repeat), ddb_table, sfn)["action"] == "ignored"  # a duplicate sends nothing
        stub.assert_no_pending_responses()
    assert [e.message for e in ddb_table.timeline("op-1")] == ["endpoint InService on fraud-scorer-io-029f311a"]


def test_an_older_event_after_a_newer_one_is_ignored(ddb_table: Repository, sfn: Any) -> None:
    newer = normalize(sample("endpoint_in_service"))
    older_event = sample("endpoint_in_service")
    older_event["detail"].update(EndpointStatus="UPDATING", LastModifiedTime=1767604715000.0)
    with Stubber(sfn):
        assert react(newer, ddb_table, sfn)["action"] == "recorded"
        assert react(normalize(older_event), ddb_table, sfn)["action"] == "ignored"


def test_deployment_phases_with_one_timestamp_are_all_recorded(ddb_table: Repository, sfn: Any) -> None:
    ddb_table.acquire_lock("fraud-scorer", "op-2", 3600)
    ddb_table.create_operation("deployment", "fraud-scorer", {}, operation_id="op-2")
    baking = sample("deployment_canary_baking")
    activating = copy.deepcopy(baking)
    activating["detail"]["PendingDeploymentSummary"]["ProductionVariants"][0]["VariantStatus"][0]["Status"] = (
        "ActivatingTraffic"
    )
    with Stubber(sfn):
        assert react(normalize(activating), ddb_table, sfn)["action"] == "recorded"
        assert react(normalize(baking), ddb_table, sfn)["action"] == "recorded"
        assert react(normalize(baking), ddb_table, sfn)["action"] == "ignored"
    assert len(ddb_table.timeline("op-2")) == 2


@pytest.mark.parametrize("code", ["TaskDoesNotExist", "InvalidToken", "TaskTimedOut"])
def test_a_token_the_flow_no_longer_holds_is_dropped(ddb_table: Repository, sfn: Any, code: str) -> None:
    ddb_table.put_task_token("fraud-scorer", WAIT_PURPOSE, "token-2", "op-3", 3600)
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_success", service_error_code=code)
        result = react(normalize(fresh("endpoint_in_service")), ddb_table, sfn)
    assert result["token"] == f"gone ({code})"
    assert ddb_table.get_task_token("fraud-scorer", WAIT_PURPOSE) is None


def test_a_throttled_resume_puts_the_token_back_for_the_retry(ddb_table: Repository, sfn: Any) -> None:
    ddb_table.put_task_token("fraud-scorer", WAIT_PURPOSE, "token-3", "op-4", 3600)
    event = fresh("endpoint_in_service")
    with Stubber(sfn) as stub:
        stub.add_client_error("send_task_success", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(sfn.exceptions.ClientError):
            react(normalize(event), ddb_table, sfn)
        token = ddb_table.get_task_token("fraud-scorer", WAIT_PURPOSE)
        assert token is not None and token.token == "token-3"
        stub.add_response(
            "send_task_success", {}, {"taskToken": "token-3", "output": normalize(event).model_dump_json()}
        )
        assert react(normalize(event), ddb_table, sfn)["action"] == "resumed"  # EventBridge's retry delivers


def test_a_settled_event_from_before_the_wait_does_not_resume(ddb_table: Repository, sfn: Any) -> None:
    """An old InService arriving late must not end the wait for the update that started after it."""
    ddb_table.put_task_token("fraud-scorer", WAIT_PURPOSE, "token-4", "op-5", 3600)
    with Stubber(sfn) as stub:
        result = react(normalize(fresh("endpoint_in_service", after=-600)), ddb_table, sfn)
        stub.assert_no_pending_responses()
    assert result["token"] == "kept (event predates the wait)"
    assert ddb_table.get_task_token("fraud-scorer", WAIT_PURPOSE) is not None
