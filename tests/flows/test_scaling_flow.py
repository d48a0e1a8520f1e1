"""Scale to zero and wake on the twin, with the real API, ASL, Lambdas, alarms and Application Auto Scaling:
for each kind of endpoint, enable -> traffic stops -> zero -> traffic arrives -> one wake -> serving, and
disabling restores the settings exactly. Time is virtual; each test checks several things in one flow.
"""

from __future__ import annotations

from typing import Any

import pytest
from flowkit import create_endpoint, create_model, wait_for

from twin.cloudwatch_traffic import LoadProfile
from twin.demo import copies, create_ic_endpoint
from twin.runtime import Twin

pytestmark = pytest.mark.flow

TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"}
IC_ENDPOINT = "chat"
IC = "chat-llm"


def endpoint_view(twin: Twin, name: str) -> dict[str, Any]:
    status, reply = twin.api_request("GET", f"/endpoints/{name}")
    assert status == 200, reply
    return dict(reply)


def item(twin: Twin, pk: str, sk: str) -> dict[str, Any]:
    """A table item as DynamoDB returns it ({} when absent): cheaper to poll than the API's endpoint view."""
    table = twin.template.physical("OperationsTable").ref
    return dict(
        twin.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item", {})
    )


def scaling_operations(twin: Twin, name: str) -> list[dict[str, str]]:
    """The endpoint's scaling operations, newest first: id, action, trigger, status (one Query on gsi1)."""
    items = twin.client("dynamodb").query(
        TableName=twin.template.physical("OperationsTable").ref,
        IndexName="gsi1",
        KeyConditionExpression="gsi1pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"EP#{name}"}},
        ScanIndexForward=False,
    )["Items"]
    return [
        {
            "id": i["id"]["S"],
            "action": i["request"]["M"]["action"]["S"],
            "trigger": i["request"]["M"]["trigger"]["S"],
            "status": i["status"]["S"],
        }
        for i in items
        if i["kind"]["S"] == "scaling"
    ]


def latest_operation(twin: Twin, name: str) -> dict[str, str]:
    found = scaling_operations(twin, name)
    return found[0] if found else {}


def instances(twin: Twin, name: str) -> int:
    variants = twin.client("sagemaker").describe_endpoint(EndpointName=name)["ProductionVariants"]
    return sum(int(v.get("CurrentInstanceCount", 0)) for v in variants)


def operation_done(twin: Twin, name: str, operation_id: str, limit: float = 6 * 3600) -> dict[str, Any]:
    """Let time pass until the endpoint's latest scaling operation (this one) ends; its view."""

    def done() -> bool:
        status = item(twin, f"OP#{operation_id}", "META").get("status", {}).get("S")
        return status in TERMINAL

    wait_for(twin, done, step=30, limit=limit)
    with twin.busy():
        operation = endpoint_view(twin, name)["operation"]
    assert operation is not None
    return dict(operation)


def test_inference_component_endpoint_scales_to_zero_wakes_once_and_restores() -> None:
    with Twin() as twin:
        create_ic_endpoint(twin, IC_ENDPOINT, IC)
        aas = twin.client("application-autoscaling")
        status, enabled = twin.api_request("PUT", f"/endpoints/{IC_ENDPOINT}/scale-to-zero", body={"max_copies": 2})
        assert status == 202, enabled
        done = operation_done(twin, IC_ENDPOINT, enabled["id"])
        assert done["status"] == "SUCCEEDED", done
        described = twin.client("sagemaker").describe_endpoint(EndpointName=IC_ENDPOINT)
        config = twin.client("sagemaker").describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        managed = config["ProductionVariants"][0]["ManagedInstanceScaling"]
        (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        policies = {
            p["PolicyName"]: p
            for p in aas.describe_scaling_policies(
                ServiceNamespace="sagemaker", ResourceId=f"inference-component/{IC}"
            )["ScalingPolicies"]
        }

        # traffic stops: target tracking takes the copies to 0, managed instance scaling the instances
        twin.cloudwatch.set_load_profile(IC_ENDPOINT, requests_per_minute=0)
        wait_for(twin, lambda: instances(twin, IC_ENDPOINT) == 0 and copies(twin, IC) == 0, step=300)
        at_zero = endpoint_view(twin, IC_ENDPOINT)

        # traffic arrives: NoCapacityInvocationFailures -> alarm -> one wake (the step policy acts too)
        twin.cloudwatch.set_load_profile(IC_ENDPOINT, requests_per_minute=30)
        wait_for(twin, lambda: latest_operation(twin, IC_ENDPOINT).get("action") == "wake", step=30)
        wake = latest_operation(twin, IC_ENDPOINT)
        woke = operation_done(twin, IC_ENDPOINT, wake["id"])
        awake = endpoint_view(twin, IC_ENDPOINT)
        wakes = [
            i
            for i in twin.lambdas.of("AlarmEventsFunction")
            if (i.payload or {}).get("action") in ("wake", "already_waking")
        ]

        status, disabled = twin.api_request("DELETE", f"/endpoints/{IC_ENDPOINT}/scale-to-zero")
        assert status == 202, disabled
        restored = operation_done(twin, IC_ENDPOINT, disabled["id"])
        after = twin.client("sagemaker").describe_endpoint(EndpointName=IC_ENDPOINT)
        targets_after = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        alarms_after = twin.client("cloudwatch").describe_alarms(AlarmNamePrefix="InferOps-")["MetricAlarms"]
        status, gone = twin.api_request("POST", f"/endpoints/{IC_ENDPOINT}/wake")

    assert managed == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 2}
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 2)
    tracking = policies["InferOps-InvocationsPerCopy"]["TargetTrackingScalingPolicyConfiguration"]
    assert (
        tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerInferenceComponentInvocationsPerCopy"
    )
    assert (tracking["TargetValue"], tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (1, 300, 300)
    step = policies["InferOps-ScaleOutFromZero"]["StepScalingPolicyConfiguration"]
    assert (step["AdjustmentType"], step["MetricAggregationType"], step["Cooldown"]) == (
        "ChangeInCapacity",
        "Maximum",
        60,
    )
    assert at_zero["scale_to_zero"]["at_zero"] is True
    assert woke["status"] == "SUCCEEDED", woke
    assert woke["trigger"].startswith(f"alarm:InferOps-{IC}-NoCapacityInvocationFailures")
    assert awake["capacity"]["copies"][IC] >= 1
    assert 0 < awake["last_wake_seconds"] < 1800
    assert len([w for w in wakes if w.payload["action"] == "wake"]) == 1
    assert restored["status"] == "SUCCEEDED", restored
    assert after["EndpointConfigName"] == "chat-config"
    assert targets_after == []  # there was no scalable target before
    assert alarms_after == []
    assert status == 404, gone


ASYNC_ENDPOINT = "ocr"


def async_endpoint(twin: Twin) -> None:
    sagemaker = twin.client("sagemaker")
    with twin.busy():
        create_model(twin, "ocr-v1")
        twin.client("s3").create_bucket(Bucket="ocr-out")
        sagemaker.create_endpoint_config(
            EndpointConfigName="ocr-config",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "ocr-v1",
                    "InstanceType": "ml.g5.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://ocr-out/results"}},
        )
        sagemaker.create_endpoint(EndpointName=ASYNC_ENDPOINT, EndpointConfigName="ocr-config")
    wait_for(twin, lambda: sagemaker.describe_endpoint(EndpointName=ASYNC_ENDPOINT)["EndpointStatus"] == "InService")
    twin.cloudwatch.set_load_profile(ASYNC_ENDPOINT, LoadProfile(requests_per_minute=10, async_inference=True))


def test_async_endpoint_scales_to_zero_a_quota_failure_is_diagnosed_and_a_wake_serves() -> None:
    with Twin() as twin:
        async_endpoint(twin)
        aas = twin.client("application-autoscaling")
        status, enabled = twin.api_request("PUT", f"/endpoints/{ASYNC_ENDPOINT}/scale-to-zero", body={})
        assert status == 202, enabled
        assert operation_done(twin, ASYNC_ENDPOINT, enabled["id"])["status"] == "SUCCEEDED"
        (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        (alarm,) = twin.client("cloudwatch").describe_alarms(AlarmNamePrefix="InferOps-")["MetricAlarms"]

        twin.cloudwatch.set_load_profile(ASYNC_ENDPOINT, requests_per_minute=0)
        wait_for(twin, lambda: instances(twin, ASYNC_ENDPOINT) == 0, step=300)

        # requests queue while the account has no ml.g5.xlarge left: the wake retries with backoff, then fails
        twin.sagemaker.set_instance_quota("ml.g5.xlarge", 0)
        twin.cloudwatch.set_load_profile(ASYNC_ENDPOINT, requests_per_minute=10)
        wait_for(twin, lambda: latest_operation(twin, ASYNC_ENDPOINT).get("action") == "wake")
        failed = operation_done(twin, ASYNC_ENDPOINT, latest_operation(twin, ASYNC_ENDPOINT)["id"])

        # quota raised; a wake request (and a second one at once) scale out, once
        twin.sagemaker.set_instance_quota("ml.g5.xlarge", None)
        first = twin.api_request("POST", f"/endpoints/{ASYNC_ENDPOINT}/wake")
        second = twin.api_request("POST", f"/endpoints/{ASYNC_ENDPOINT}/wake")
        woke = operation_done(twin, ASYNC_ENDPOINT, first[1]["operation"]["id"])
        awake = endpoint_view(twin, ASYNC_ENDPOINT)

        status, disabled = twin.api_request("DELETE", f"/endpoints/{ASYNC_ENDPOINT}/scale-to-zero")
        restored = operation_done(twin, ASYNC_ENDPOINT, disabled["id"])
        targets_after = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]

    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 5)
    assert (alarm["MetricName"], alarm["Statistic"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
        "HasBacklogWithoutCapacity",
        "Average",
        2,
        2,
    )
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1.0, "GreaterThanOrEqualToThreshold")
    assert failed["status"] == "FAILED", failed
    assert (
        "ResourceLimitExceeded" in failed["result"]["reason"]
        and "no capacity after retries" in failed["result"]["reason"]
    )
    assert failed["result"]["diagnosis"]["findings"], failed["result"]["diagnosis"]
    assert first[0] == 202 and first[1]["started"] is True
    assert second[0] == 200 and second[1]["started"] is False
    assert second[1]["operation"]["id"] == first[1]["operation"]["id"]
    assert woke["status"] == "SUCCEEDED", woke
    assert awake["capacity"]["instances"] >= 1 and awake["last_wake_seconds"] > 0
    assert restored["status"] == "SUCCEEDED", restored
    assert targets_after == []


CLASSIC = "scorer"


def test_classic_endpoint_is_parked_by_schedule_woken_on_request_unparked_identically_and_restored() -> None:
    with Twin() as twin:
        create_endpoint(twin, count=2, name=CLASSIC, rpm=600)
        sagemaker, aas = twin.client("sagemaker"), twin.client("application-autoscaling")
        resource = f"endpoint/{CLASSIC}/variant/AllTraffic"
        with twin.busy():
            arn = sagemaker.describe_endpoint(EndpointName=CLASSIC)["EndpointArn"]
            sagemaker.add_tags(ResourceArn=arn, Tags=[{"Key": "team", "Value": "ranking"}])
            aas.register_scalable_target(
                ServiceNamespace="sagemaker",
                ResourceId=resource,
                ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                MinCapacity=2,
                MaxCapacity=4,
            )
            aas.put_scaling_policy(
                PolicyName="invocations",
                ServiceNamespace="sagemaker",
                ResourceId=resource,
                ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration={
                    "TargetValue": 600.0,
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                },
            )
        schedule = {"days": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"], "start": "11:00", "end": "12:00"}
        status, enabled = twin.api_request(
            "PUT", f"/endpoints/{CLASSIC}/scale-to-zero", body={"idle_minutes": 15, "schedule": schedule}
        )
        assert status == 202, enabled
        assert operation_done(twin, CLASSIC, enabled["id"])["status"] == "SUCCEEDED"

        # 09:0x is outside the awake hours: the sweep parks it
        parked_item = lambda: item(twin, f"SCALE#{CLASSIC}", "SETTINGS")["data"]["M"]["parked"]  # noqa: E731
        wait_for(twin, lambda: "M" in parked_item(), step=120)
        parked = endpoint_view(twin, CLASSIC)

        # a wake request recreates it identically
        status, woken = twin.api_request("POST", f"/endpoints/{CLASSIC}/wake")
        assert status == 202, woken
        seen: dict[str, Any] = {}

        def woken_and_read() -> bool:
            """Time held from the wake's end to the reads: the sweep re-parks it once its idle window passes."""
            with twin.busy():
                status = item(twin, f"OP#{woken['operation']['id']}", "META").get("status", {}).get("S")
                if status not in TERMINAL:
                    return False
                seen["awake"] = endpoint_view(twin, CLASSIC)
                described = sagemaker.describe_endpoint(EndpointName=CLASSIC)
                seen["config"] = described["EndpointConfigName"]
                seen["tags"] = sagemaker.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
                seen["targets"] = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
                seen["policies"] = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)[
                    "ScalingPolicies"
                ]
                return True

        wait_for(twin, woken_and_read, step=30, limit=6 * 3600)
        awake, config, tags = seen["awake"], seen["config"], seen["tags"]
        targets, policies = seen["targets"], seen["policies"]
        woke = dict(awake["operation"])

        # 11:00 the schedule unparks it, 12:00 parks it again; disabling then recreates it for good
        wait_for(
            twin,
            lambda: twin.clock.utcnow().hour >= 12 and "M" in parked_item(),
            step=300,
        )
        report_status, report = twin.api_request("GET", "/reports/cost", query={"days": "1"})
        status, disabled = twin.api_request("DELETE", f"/endpoints/{CLASSIC}/scale-to-zero")
        restored = operation_done(twin, CLASSIC, disabled["id"])
        final = endpoint_view(twin, CLASSIC)
        history = [(o["action"], o["trigger"], o["status"]) for o in scaling_operations(twin, CLASSIC)]
        targets_after = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]

    assert parked["scale_to_zero"]["parked"]["by"] == "schedule"
    assert parked["scale_to_zero"]["parked"]["config_name"] == f"{CLASSIC}-v1"
    assert woke["status"] == "SUCCEEDED", woke
    assert awake["status"] == "InService" and awake["capacity"]["instances"] == 2
    assert awake["last_wake"]["trigger"] == "request" and awake["last_wake_seconds"] > 0
    assert config == f"{CLASSIC}-v1"
    assert tags == [{"Key": "team", "Value": "ranking"}]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(2, 4)]
    assert [p["PolicyName"] for p in policies] == ["invocations"]
    assert ("unpark", "schedule", "SUCCEEDED") in history
    assert history.count(("park", "schedule", "SUCCEEDED")) >= 2
    assert restored["status"] == "SUCCEEDED", restored
    assert final["status"] == "InService" and final["scale_to_zero"] is None
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in targets_after] == [(2, 4)]
    assert report_status == 200, report
    (cost,) = report["endpoints"]
    assert (cost["endpoint"], cost["kind"], cost["instance_type"]) == (CLASSIC, "classic", "ml.c7g.large")
    assert 1.0 < cost["zero_hours"] < cost["hours"]  # parked 09:15-09:2x, 09:45-11:0x and since 12:00
    assert cost["saved_usd"] == round(cost["zero_hours"] * 2 * cost["price_usd_per_hour"], 2)
    assert report["saved_usd"] == cost["saved_usd"]
