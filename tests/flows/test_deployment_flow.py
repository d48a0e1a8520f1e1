"""The `deployment` state machine end to end on the twin: the real API, ASL, Lambdas and SageMaker simulator."""

from __future__ import annotations

from typing import Any

import pytest
from flowkit import ENDPOINT, create_endpoint, deployment, finished, request, serving_config, start, wait_for

from twin.cloudwatch_traffic import ModelProfile
from twin.runtime import Twin


def _kinds(view: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in view["timeline"]]


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "all_at_once", "bake_seconds": 300},
        {"type": "canary", "size": {"value": 25}, "bake_seconds": 600},
        {"type": "linear", "step": {"value": 25}, "bake_seconds": 300},
        {"type": "rolling", "batch": {"value": 25}, "bake_seconds": 300},
    ],
    ids=lambda s: s["type"],
)
def test_native_strategies_succeed(strategy: dict[str, Any]) -> None:
    with Twin() as twin:
        create_endpoint(twin)
        operation = start(twin, request(strategy))
        view = finished(twin, operation)
        status, config = serving_config(twin)
        lock = twin.client("dynamodb").get_item(
            TableName=twin.template.physical("OperationsTable").ref,
            Key={"pk": {"S": f"LOCK#{ENDPOINT}"}, "sk": {"S": "LOCK"}},
        )
        announced = [e for e in twin.bus.events if e.get("detail-type") == "InferOps Deployment Finished"]

    assert view["status"] == "SUCCEEDED", view["result"]
    assert (status, config) == ("InService", view["plan"]["new_endpoint_config_name"])
    assert view["result"]["endpoint_config"] == config
    assert "Item" not in lock  # released
    assert [e["detail"]["status"] for e in announced] == ["SUCCEEDED"]
    assert {"planned", "locked", "update", "finished"} <= set(_kinds(view))


def test_alarm_during_the_canary_bake_is_reported_as_rolled_back() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile.bad())
        operation = start(twin, request({"type": "canary", "size": {"value": 25}, "bake_seconds": 1200}))
        view = finished(twin, operation)
        status, config = serving_config(twin)

    assert view["status"] == "ROLLED_BACK", view["result"]
    assert (status, config) == ("InService", f"{ENDPOINT}-v1")
    assert "alarm" in view["result"]["reason"]


def test_an_unhealthy_model_fails_and_the_endpoint_keeps_its_old_config() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.sagemaker.set_model_health(f"{ENDPOINT}-v2", healthy=False)
        operation = start(twin, request({"type": "canary", "size": {"value": 25}, "bake_seconds": 600}))
        view = finished(twin, operation)
        status, config = serving_config(twin)

    assert view["status"] == "FAILED", view["result"]
    assert (status, config) == ("InService", f"{ENDPOINT}-v1")
    assert "health check" in view["result"]["reason"]


def test_a_second_request_for_the_same_endpoint_gets_409() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        first = start(twin, request({"type": "canary", "size": {"value": 25}, "bake_seconds": 600}))
        status, reply = twin.api_request("POST", "/deployments", body=request({"type": "all_at_once"}))
        view = deployment(twin, first)

    assert status == 409, reply
    assert reply["field"] == "endpoint_name" and first in reply["message"]
    assert view["status"] in {"PENDING", "RUNNING"}


def _managed(steps: list[int], **extra: Any) -> dict[str, Any]:
    return request(
        {"type": "managed", "steps": steps, "bake_seconds": 600, **extra},
        create_recommended_alarms=False,
        analysis={"min_requests": 50},
    )


def _variants(twin: Twin) -> dict[str, float]:
    described = twin.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
    return {v["VariantName"]: v.get("CurrentWeight", 0.0) for v in described["ProductionVariants"]}


def test_managed_path_shifts_step_by_step_on_passing_verdicts() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        operation = start(twin, _managed([10, 50, 100]))
        view = finished(twin, operation)
        status, config = serving_config(twin)
        variants = _variants(twin)

    assert view["status"] == "SUCCEEDED", view["result"]
    assert (status, config) == ("InService", view["plan"]["new_endpoint_config_name"])
    assert list(variants) == ["AllTraffic-green"]
    assert [(v["share"], v["result"]) for v in view["verdicts"]] == [(10, "Pass"), (50, "Pass"), (100, "Pass")]
    shifts = [e["data"]["share"] for e in view["timeline"] if e["kind"] == "shift"]
    assert shifts == [10, 50, 100]


def test_managed_path_rolls_back_a_bad_model_on_the_analysis() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile.bad())
        operation = start(twin, _managed([10, 50, 100]))
        view = finished(twin, operation)
        status, config = serving_config(twin)
        variants = _variants(twin)

    assert view["status"] == "ROLLED_BACK", view["result"]
    assert (status, config) == ("InService", f"{ENDPOINT}-v1")
    assert list(variants) == ["AllTraffic"]
    assert [(v["share"], v["result"]) for v in view["verdicts"]] == [(10, "Fail")]
    assert "analysis Fail at 10 %" in view["result"]["reason"]


def test_managed_path_waits_for_approval() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        operation = start(twin, _managed([20, 100], approval_before=[100]))
        wait_for(twin, lambda: deployment(twin, operation)["status"] == "PAUSED")
        twin.clock.sleep(3 * 3600)  # nobody approves for hours: it stays paused, at 20 %
        paused = deployment(twin, operation)
        weights = _variants(twin)
        status, reply = twin.api_request("POST", f"/deployments/{operation}/approve")
        view = finished(twin, operation)
        again, _ = twin.api_request("POST", f"/deployments/{operation}/approve")

    assert paused["status"] == "PAUSED"
    assert weights == {"AllTraffic": 80.0, "AllTraffic-green": 20.0}
    assert status == 200, reply
    assert view["status"] == "SUCCEEDED", view["result"]
    assert again == 409


def test_abort_mid_bake_on_the_managed_path() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        operation = start(twin, _managed([10, 100]))
        wait_for(twin, lambda: any(e["kind"] == "shift" for e in deployment(twin, operation)["timeline"]))
        twin.clock.sleep(120)
        status, reply = twin.api_request("POST", f"/deployments/{operation}/abort", body={"reason": "wrong build"})
        view = finished(twin, operation)
        serving = serving_config(twin)

    assert status == 202, reply
    assert view["status"] == "ABORTED", view["result"]
    assert "wrong build" in view["result"]["reason"]
    assert serving == ("InService", f"{ENDPOINT}-v1")


def test_abort_mid_bake_on_the_native_path_uses_a_rollback_alarm() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        operation = start(twin, request({"type": "canary", "size": {"value": 25}, "bake_seconds": 1800}))
        twin.clock.sleep(1200)  # provisioned (~10 min), canary baking
        status, reply = twin.api_request("POST", f"/deployments/{operation}/abort")
        view = finished(twin, operation)
        serving = serving_config(twin)

    assert status == 202, reply
    assert view["status"] == "ABORTED", view["result"]
    assert serving == ("InService", f"{ENDPOINT}-v1")


def test_autoscaling_is_deregistered_for_the_rollout_and_restored_after() -> None:
    resource = f"endpoint/{ENDPOINT}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    with Twin() as twin:
        create_endpoint(twin)
        scaling = twin.client("application-autoscaling")
        scaling.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension, MinCapacity=2, MaxCapacity=8
        )
        scaling.put_scaling_policy(
            PolicyName="invocations",
            ServiceNamespace="sagemaker",
            ResourceId=resource,
            ScalableDimension=dimension,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": 70.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            },
        )
        canary = {"type": "canary", "size": {"value": 25}, "bake_seconds": 300}
        bigger = request(canary, instance_type="ml.c7g.xlarge")  # a new instance type: SageMaker needs it deregistered
        refused, reply = twin.api_request("POST", "/deployments", body=bigger)
        body = {**bigger, "deregister_autoscaling": True}
        operation = start(twin, body)
        view = finished(twin, operation)
        targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
        policies = scaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)

    assert refused == 422 and any(v["field"] == "deregister_autoscaling" for v in reply["violations"]), reply
    assert view["status"] == "SUCCEEDED", view["result"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets["ScalableTargets"]] == [(2, 8)]
    assert [p["PolicyName"] for p in policies["ScalingPolicies"]] == ["invocations"]
    assert "autoscaling" in _kinds(view)


def test_managed_path_with_an_unhealthy_model_fails_before_any_traffic_moves() -> None:
    with Twin() as twin:
        create_endpoint(twin)
        twin.sagemaker.set_model_health(f"{ENDPOINT}-v2", healthy=False)
        operation = start(twin, _managed([10, 100]))
        view = finished(twin, operation)
        serving = serving_config(twin)
        variants = _variants(twin)

    assert view["status"] == "FAILED", view["result"]
    assert "adding the candidate variant failed" in view["result"]["reason"]
    assert serving == ("InService", f"{ENDPOINT}-v1") and list(variants) == ["AllTraffic"]
    assert not any(e["kind"] == "shift" for e in view["timeline"])
