"""The `shadow_test` state machine end to end on the twin: the real API, ASL, Lambdas, SageMaker's inference
experiments and the CloudWatch traffic model (shadow variants get a mirrored sample of production's requests).

Tests are one-hour experiments judged every 10 minutes: ~45 minutes of analysis after provisioning, which the
twin plays in a few seconds. They wait on the execution's status (cheap) and read the API at the end.
"""

from __future__ import annotations

from typing import Any

from flowkit import ENDPOINT, create_endpoint, create_guard_alarm, create_model, wait_for
from flowkit import request as deployment
from flowkit import shadow_request as body

from twin.cloudwatch_traffic import ModelProfile
from twin.runtime import Twin

TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"}
GUARD = "scorer-shadow-guard"
SAGEMAKER_EVENTS = {"source": ["aws.sagemaker"]}


def start(twin: Twin, request: dict[str, Any]) -> str:
    status, reply = twin.api_request("POST", "/shadow-tests", body=request)
    assert status == 202, reply
    return str(reply["id"])


def get(twin: Twin, operation_id: str) -> dict[str, Any]:
    status, reply = twin.api_request("GET", f"/shadow-tests/{operation_id}")
    assert status == 200, reply
    return dict(reply)


def finished(twin: Twin, operation_id: str) -> dict[str, Any]:
    """Let the test run to its end (polling Step Functions, not the API) and return GET /shadow-tests/{id}."""
    arn = get(twin, operation_id)["execution_arn"]
    sfn = twin.client("stepfunctions")
    wait_for(twin, lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", step=300, limit=6 * 3600)
    twin.clock.sleep(1)  # the closing event and the lock release follow the final record
    view = get(twin, operation_id)
    assert view["status"] in TERMINAL, view
    return view


def until(twin: Twin, done: Any) -> None:
    """Let time pass until `done(item)` holds; `item(pk, sk)` reads the table directly (cheaper than the API)."""
    table = twin.template.physical("OperationsTable").ref
    dynamodb = twin.client("dynamodb")

    def item(pk: str, sk: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = dynamodb.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get(
            "Item"
        )
        return found

    wait_for(twin, lambda: bool(done(item)), step=300, limit=3 * 3600)


def running(operation_id: str) -> Any:
    """The test's phases have started (its progress record exists)."""
    return lambda item: item(f"OP#{operation_id}", "STATE#shadow") is not None


def waiting_for_approval(item: Any) -> bool:
    return item(f"TOKEN#{ENDPOINT}", "approval") is not None


def serving(twin: Twin) -> tuple[str, list[str], list[str], list[str]]:
    """The endpoint's status, production variants, their models, and its shadow variants."""
    sagemaker = twin.client("sagemaker")
    described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    return (
        described["EndpointStatus"],
        [v["VariantName"] for v in described["ProductionVariants"]],
        [v["ModelName"] for v in config["ProductionVariants"]],
        [v["VariantName"] for v in described.get("ShadowProductionVariants", [])],
    )


def lock_of(twin: Twin) -> dict[str, Any]:
    return dict(
        twin.client("dynamodb").get_item(
            TableName=twin.template.physical("OperationsTable").ref,
            Key={"pk": {"S": f"LOCK#{ENDPOINT}"}, "sk": {"S": "LOCK"}},
        )
    )


def kinds(view: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in view["timeline"]]


# ---------------------------------------------------------------------- outcomes
def test_a_good_candidate_ramps_to_100_percent_and_is_promoted() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        operation = start(twin, body(sampling_steps=[10, 50, 100], action="promote"))
        view = finished(twin, operation)
        endpoint = serving(twin)
        lock = lock_of(twin)
        announced = [e["detail"] for e in twin.bus.events if e.get("detail-type") == "InferOps Shadow Test Finished"]

    assert view["status"] == "SUCCEEDED", view["result"]
    assert view["result"]["decision"] == "promoted"
    assert endpoint == ("InService", ["AllTraffic-shadow"], [f"{ENDPOINT}-v2"], [])  # the shadow serves now
    assert [h["percent"] for h in view["sampling_history"]] == [10, 50, 100]
    phases = [v for v in view["verdicts"] if v["scope"] == "phase"]
    assert [(v["phase"], v["sampling"], v["result"]) for v in phases] == [
        (0, 10, "Pass"),
        (1, 50, "Pass"),
        (2, 100, "Pass"),
    ]
    intervals = [v for v in view["verdicts"] if v["scope"] == "interval"]
    assert len(intervals) >= 3 and all(v["result"] == "Pass" for v in intervals)
    assert view["final_verdict"]["result"] == "Pass"
    assert "Item" not in lock  # released
    assert [(a["status"], a["decision"]) for a in announced] == [("SUCCEEDED", "promoted")]
    assert {"planned", "locked", "experiment", "running", "phase", "verdict", "promote", "finished"} <= set(kinds(view))


def test_a_slower_candidate_is_discarded_with_the_verdicts_reasons() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile(latency_multiplier=1.8))
        operation = start(twin, body(action="promote"))
        view = finished(twin, operation)
        endpoint = serving(twin)

    assert view["status"] == "FAILED", view["result"]
    assert view["result"]["decision"] == "discarded"
    assert "ModelLatency" in view["result"]["reason"] and "Fail" in view["result"]["reason"]
    assert endpoint == ("InService", ["AllTraffic"], [f"{ENDPOINT}-v1"], [])  # production kept, shadow removed
    failing = [v for v in view["verdicts"] if v["result"] == "Fail"]
    assert failing and "ModelLatency" in failing[0]["reason"]


def test_a_candidate_with_errors_stops_early() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile(error_5xx_rate=0.3, model_error_rate=0.1))
        operation = start(twin, body(sampling_steps=[10, 100], action="promote"))
        view = finished(twin, operation)
        endpoint = serving(twin)
        experiment = twin.client("sagemaker").describe_inference_experiment(Name=view["experiment"])

    assert view["status"] == "FAILED", view["result"]
    assert view["result"]["reason"].startswith("stopped early: interval verdict Fail at 10 % sampling")
    assert "Invocation5XXErrors" in view["result"]["reason"]
    assert [h["percent"] for h in view["sampling_history"]] == [10]  # the ramp never went on
    assert [v["scope"] for v in view["verdicts"]] == ["interval"]  # stopped at the first interval
    running_at, discard_at = (
        _epoch(next(e for e in view["timeline"] if e["kind"] == k)["at"]) for k in ("running", "discard")
    )
    # by the scheduled judge (every ShadowJudgeMinutes, 5) once the interval's metrics are in, not at the phase's
    # end 20 minutes in: within the 10-minute interval, a minute of metric lag and a judge period
    assert discard_at - running_at <= 600 + 60 + 300
    assert experiment["Status"] == "Cancelled"
    assert endpoint == ("InService", ["AllTraffic"], [f"{ENDPOINT}-v1"], [])


def test_a_guard_alarm_stops_the_test_at_once() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        create_guard_alarm(twin, GUARD)
        operation = start(twin, body(action="promote", guard_alarms=[GUARD]))
        until(twin, running(operation))
        with twin.busy():  # time holds still while the alarm changes, so alarm_at is when it did
            alarm_at = twin.clock.now()
            twin.client("cloudwatch").set_alarm_state(AlarmName=GUARD, StateValue="ALARM", StateReason="on-call paged")
        view = finished(twin, operation)
        endpoint = serving(twin)
        watches = twin.client("dynamodb").get_item(
            TableName=twin.template.physical("OperationsTable").ref,
            Key={"pk": {"S": f"ALARM#{GUARD}"}, "sk": {"S": operation}},
        )

    assert view["status"] == "FAILED", view["result"]
    assert GUARD in view["result"]["reason"] and "stopped early" in view["result"]["reason"]
    assert view["stop_request"]["kind"] == "alarm"
    discard = next(e for e in view["timeline"] if e["kind"] == "discard")
    assert _epoch(discard["at"]) - alarm_at < 60  # the parked watch failed at once, not at its next wake
    assert endpoint == ("InService", ["AllTraffic"], [f"{ENDPOINT}-v1"], [])
    assert "Item" not in watches  # the watch is forgotten


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_approval_path_promotes_once_approved() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        operation = start(twin, body(action="approval"))
        early = twin.api_request("POST", f"/shadow-tests/{operation}/approve")
        until(twin, waiting_for_approval)
        paused = get(twin, operation)
        status, approved = twin.api_request("POST", f"/shadow-tests/{operation}/approve")
        view = finished(twin, operation)
        endpoint = serving(twin)

    assert early[0] == 409 and "not waiting for an approval" in early[1]["message"]
    assert (paused["status"], paused["waiting_for"], paused["final_verdict"]) == ("PAUSED", "approval", None)
    assert status == 202, approved
    assert approved["decision"]["decision"] == "promote"
    assert view["status"] == "SUCCEEDED", view["result"]
    assert view["result"]["decision"] == "promoted" and "approved by" in view["result"]["reason"]
    assert endpoint == ("InService", ["AllTraffic-shadow"], [f"{ENDPOINT}-v2"], [])
    assert "approval" in kinds(view) and "decision" in kinds(view)


def test_an_operator_changes_sampling_cannot_promote_early_and_discards() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        operation = start(twin, body(sampling_steps=[50, 100], action="promote"))
        until(twin, running(operation))
        promote = twin.api_request("POST", f"/shadow-tests/{operation}/promote")
        patched = twin.api_request("PATCH", f"/shadow-tests/{operation}", body={"sampling_percent": 70})
        experiment = twin.client("sagemaker").describe_inference_experiment(Name=patched[1]["experiment"])
        bad = twin.api_request("PATCH", f"/shadow-tests/{operation}", body={"sampling_percent": 0})
        discarded = twin.api_request("POST", f"/shadow-tests/{operation}/discard", body={"reason": "not today"})
        view = finished(twin, operation)
        endpoint = serving(twin)

    assert promote[0] == 409 and promote[1]["field"] == "sampling"
    assert "promotion requires the last phase at 100 % sampling" in promote[1]["message"]
    assert patched[0] == 200, patched[1]
    assert [h["percent"] for h in patched[1]["sampling_history"]] == [50, 70]
    assert experiment["ShadowModeConfig"]["ShadowModelVariants"][0]["SamplingPercentage"] == 70
    assert bad[0] == 422 and bad[1]["field"] == "sampling_percent"
    assert discarded[0] == 202, discarded[1]
    assert view["status"] == "ABORTED", view["result"]
    assert "not today" in view["result"]["reason"]
    assert endpoint == ("InService", ["AllTraffic"], [f"{ENDPOINT}-v1"], [])


# ---------------------------------------------------------------------- refusals and faults
def _endpoint(twin: Twin, name: str, variants: list[dict[str, Any]]) -> None:
    sagemaker = twin.client("sagemaker")
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants)
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)


def test_ineligible_requests_get_422_naming_the_rule_and_a_busy_endpoint_409() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        with twin.busy():
            create_model(twin, "other")
            model = {"ModelName": f"{ENDPOINT}-v1", "InitialInstanceCount": 1, "InstanceType": "ml.c7g.large"}
            _endpoint(twin, "two-variants", [{**model, "VariantName": "a"}, {**model, "VariantName": "b"}])
            _endpoint(
                twin,
                "serverless",
                [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "other",
                        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
                    }
                ],
            )
            _endpoint(twin, "inf1", [{**model, "VariantName": "AllTraffic", "InstanceType": "ml.inf1.xlarge"}])
        twin.clock.sleep(900)
        cases = {
            "single_production_variant": body(endpoint_name="two-variants"),
            "not_serverless": body(endpoint_name="serverless"),
            "not_inf1": body(endpoint_name="inf1"),
            "sampling_range": body(sampling_steps=[0, 150]),
            "duration_range": body(duration_hours=0.5),
            "promotion_needs_full_sampling": body(sampling_steps=[10, 50], action="promote"),
            "model_exists": body(model={"source": "existing", "model_name": "nope"}),
        }
        replies = {rule: twin.api_request("POST", "/shadow-tests", body=b) for rule, b in cases.items()}
        first = start(twin, body())
        busy = twin.api_request("POST", "/shadow-tests", body=body())
        deploy = twin.api_request("POST", "/deployments", body=deployment({"type": "all_at_once"}))

    for rule, (status, reply) in replies.items():
        assert status == 422, (rule, reply)
        assert rule in [v["rule"] for v in reply["violations"]], (rule, reply)
        assert all({"field", "rule", "message", "fix"} <= set(v) for v in reply["violations"])
    assert busy[0] == 409 and first in busy[1]["message"] and busy[1]["field"] == "endpoint_name"
    assert deploy[0] == 409 and first in deploy[1]["message"]  # one operation per endpoint, whatever its kind


def test_duplicated_and_reordered_events_resume_the_flow_once_per_wait() -> None:
    with Twin(seed=7) as twin:
        create_endpoint(twin, count=2)
        twin.faults.events.duplicate = 1.0
        twin.faults.events.reorder = 1.0
        twin.faults.events.pattern = SAGEMAKER_EVENTS
        operation = start(twin, body(action="discard"))
        view = finished(twin, operation)
        endpoint = serving(twin)
        results = [i.payload for i in twin.lambdas.of("EndpointEventsFunction") if isinstance(i.payload, dict)]

    assert view["status"] == "SUCCEEDED", view["result"]
    assert view["result"]["decision"] == "discarded" and "as requested" in view["result"]["reason"]
    assert sum(1 for r in results if r.get("action") == "resumed") == 2  # the start, then the stop
    assert "heartbeat" not in kinds(view)  # resumed by the events, not by the fallback
    assert endpoint == ("InService", ["AllTraffic"], [f"{ENDPOINT}-v1"], [])


def test_lost_events_cost_a_heartbeat_not_a_stuck_test() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2)
        twin.faults.events.lose = 1.0  # SageMaker's endpoint events never arrive
        twin.faults.events.pattern = SAGEMAKER_EVENTS
        operation = start(twin, body(action="promote"))
        view = finished(twin, operation)
        endpoint = serving(twin)

    assert view["status"] == "SUCCEEDED", view["result"]
    assert kinds(view).count("heartbeat") == 2  # the start and the stop, each found by DescribeInferenceExperiment
    assert endpoint == ("InService", ["AllTraffic-shadow"], [f"{ENDPOINT}-v2"], [])
