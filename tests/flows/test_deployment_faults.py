"""The deployment flow under the faults AWS really has: repeated, reordered and lost events, throttling and
5xx from SageMaker, crashed Lambdas, and requests that must be refused."""

from __future__ import annotations

from typing import Any

from flowkit import ENDPOINT, create_endpoint, deployment, finished, request, serving_config, start, wait_for

from twin.cloudwatch_traffic import ModelProfile
from twin.runtime import Twin

CANARY = {"type": "canary", "size": {"value": 25}, "bake_seconds": 600}
SAGEMAKER_EVENTS = {"source": ["aws.sagemaker"]}


def _resumes(twin: Twin) -> int:
    results = [i.payload for i in twin.lambdas.of("EndpointEventsFunction") if isinstance(i.payload, dict)]
    return sum(1 for r in results if r.get("action") == "resumed")


def test_duplicated_and_reordered_events_resume_the_flow_once() -> None:
    with Twin(seed=7) as twin:
        create_endpoint(twin)
        twin.faults.events.duplicate = 1.0
        twin.faults.events.reorder = 1.0
        twin.faults.events.pattern = SAGEMAKER_EVENTS
        operation = start(twin, request(CANARY))
        view = finished(twin, operation)
        serving = serving_config(twin)
        resumed = _resumes(twin)

    assert view["status"] == "SUCCEEDED", view["result"]
    assert serving == ("InService", view["plan"]["new_endpoint_config_name"])
    assert resumed == 1
    assert not any(e["kind"] == "heartbeat" for e in view["timeline"])  # resumed by the event


def test_a_lost_event_costs_one_heartbeat_not_a_stuck_flow() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.faults.events.lose = 1.0  # SageMaker's events never arrive
        twin.faults.events.pattern = SAGEMAKER_EVENTS
        operation = start(twin, request(CANARY))
        view = finished(twin, operation, step=120)
        serving = serving_config(twin)

    assert view["status"] == "SUCCEEDED", view["result"]
    assert serving == ("InService", view["plan"]["new_endpoint_config_name"])
    assert sum(1 for e in view["timeline"] if e["kind"] == "heartbeat") == 1


def test_throttling_and_5xx_from_sagemaker_are_retried() -> None:
    with Twin(seed=3) as twin:
        create_endpoint(twin)
        twin.faults.sagemaker_errors = {"*": ("ThrottlingException", 0.2), "UpdateEndpoint": ("InternalFailure", 0.2)}
        operation = start_with_retries(twin, request(CANARY))
        view = finished(twin, operation)
        twin.faults.sagemaker_errors = {}
        serving = serving_config(twin)
        injected = twin.faults.report()

    assert view["status"] == "SUCCEEDED", view["result"]
    assert serving == ("InService", view["plan"]["new_endpoint_config_name"])
    assert sum(n for k, n in injected.items() if k.startswith("sagemaker.")) >= 3


def start_with_retries(twin: Twin, body: dict[str, Any]) -> str:
    """A client retrying a throttled POST with the same Idempotency-Key, as the CLI does."""
    for _ in range(10):
        status, reply = twin.api_request("POST", "/deployments", body=body, headers={"Idempotency-Key": "try-1"})
        if status == 202:
            return str(reply["id"])
        assert status == 503, reply
    raise AssertionError("the API never accepted the request")


def test_a_crashed_step_is_retried() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.faults.crash_once("DeploymentStepsFunction", times=2)
        operation = start(twin, request(CANARY))
        view = finished(twin, operation)

    assert view["status"] == "SUCCEEDED", view["result"]


def test_an_alarm_rolls_a_managed_deployment_back_at_once() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile.bad())
        body = request({"type": "managed", "steps": [10, 100], "bake_seconds": 3600})
        operation = start(twin, body)
        view = finished(twin, operation)
        serving = serving_config(twin)
        stopped = [i.payload for i in twin.lambdas.of("AlarmEventsFunction") if isinstance(i.payload, dict)]

    assert view["status"] == "ROLLED_BACK", view["result"]
    assert serving == ("InService", f"{ENDPOINT}-v1")
    assert "ALARM" in view["result"]["reason"]
    assert view["verdicts"] == []  # the bake never reached its analysis: the alarm cut it short
    assert stopped, "the alarm handler ran"
    shift = next(e for e in view["timeline"] if e["kind"] == "shift")
    rollback = next(e for e in view["timeline"] if e["kind"] == "rollback")
    assert rollback["at"] < _plus(shift["at"], 3600)


def _plus(stamp: str, seconds: int) -> str:
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_ineligible_requests_get_every_violation() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        body = request(
            {"type": "canary", "size": {"value": 60}, "bake_seconds": 5000},
            create_recommended_alarms=False,
            model_size_gb=400,
        )
        status, reply = twin.api_request("POST", "/deployments", body=body)
        listed, page = twin.api_request("GET", "/deployments", query={"endpoint": ENDPOINT})

    assert status == 422
    fields = {v["field"] for v in reply["violations"]}
    assert {"strategy.size", "strategy.bake_seconds", "alarms", "model_size_gb"} <= fields
    assert all(v["fix"] for v in reply["violations"])
    assert listed == 200 and page["deployments"] == []  # nothing started, nothing recorded


def test_a_flow_started_directly_refuses_what_preflight_refuses() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        execution = twin.start_execution(
            "DeploymentStateMachine",
            {"operation_id": "op-direct-1", "request": request({"type": "canary", "size": {"value": 60}})},
        )
        done = twin.wait_execution(execution)
        view = deployment(twin, "op-direct-1")
        wait_for(twin, lambda: True)

    assert done["status"] == "FAILED"
    assert view["status"] == "REFUSED"
    assert any(v["field"] == "strategy.size" for v in view["result"]["violations"])
