"""Registry-driven delivery end to end on the twin: a model package approved in the registry (the twin's
SageMaker sends the real-shaped "SageMaker Model Package State Change" event) goes through the stored
policy's stages, each a real deployment flow started through the API's own code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flowkit import ACCOUNT, TERMINAL, create_endpoint, serving_config, wait_for

from inferops.delivery_policy import Stage
from inferops.planner import new_config_name
from twin.runtime import Twin

GROUP = "scorer"
STAGING, PRODUCTION = "scorer-staging", "scorer-prod"
PACKAGE_EVENT = "SageMaker Model Package State Change"


def policy(**extra: Any) -> dict[str, Any]:
    deployment = {"strategy": {"type": "all_at_once", "bake_seconds": 300}, "create_recommended_alarms": True}
    return {
        "stages": [
            {"name": "staging", "endpoint_name": STAGING, "deployment": deployment},
            {"name": "production", "endpoint_name": PRODUCTION, "deployment": deployment},
        ],
        **extra,
    }


def registry(twin: Twin, versions: int = 1) -> list[str]:
    """The group and `versions` packages waiting for approval: their ARNs."""
    sagemaker = twin.client("sagemaker")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    arns = []
    for n in range(1, versions + 1):
        arns.append(
            sagemaker.create_model_package(
                ModelPackageGroupName=GROUP,
                ModelApprovalStatus="PendingManualApproval",
                InferenceSpecification={
                    "Containers": [
                        {
                            "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scorer:{n}",
                            "ModelDataUrl": f"s3://models/scorer/v{n}.tar.gz",
                        }
                    ],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
            )["ModelPackageArn"]
        )
    return arns


def set_up(twin: Twin, body: dict[str, Any], versions: int = 1) -> list[str]:
    create_endpoint(twin, name=STAGING, count=2)
    create_endpoint(twin, name=PRODUCTION, count=2)
    arns = registry(twin, versions)
    status, reply = twin.api_request("PUT", f"/delivery-policies/{GROUP}", body=body)
    assert status == 200, reply
    return arns


def set_approval(twin: Twin, arn: str, status: str) -> None:
    twin.client("sagemaker").update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status)


def delivery(twin: Twin, the_id: str) -> dict[str, Any]:
    status, reply = twin.api_request("GET", f"/deliveries/{the_id}")
    assert status == 200, reply
    return dict(reply)


def finished(twin: Twin, the_id: str) -> dict[str, Any]:
    def done() -> bool:
        status, reply = twin.api_request("GET", f"/deliveries/{the_id}")
        return status == 200 and reply["status"] in TERMINAL

    wait_for(twin, done, step=300)
    twin.clock.sleep(1)
    return delivery(twin, the_id)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_approval_delivers_through_a_freeze_and_an_approval_once_whatever_the_repeats() -> None:
    """Approved (three times, one a redelivered copy) -> one delivery; deferred by the freeze; staging; the
    production stage waits for a human; production."""
    with Twin() as twin:
        now = twin.clock.now()
        freeze = {"kind": "once", "starts_at": _iso(now - 60), "ends_at": _iso(now + 7200), "reason": "launch"}
        body = policy(freeze_windows=[freeze])
        body["stages"][1]["approval"] = True
        (arn,) = set_up(twin, body)
        set_approval(twin, arn, "Approved")
        set_approval(twin, arn, "Approved")  # SageMaker sends another event: still one delivery
        twin.clock.sleep(1)
        approved = [e for e in twin.bus.events if e.get("detail-type") == PACKAGE_EVENT][-1]
        twin.bus.put_event(dict(approved))  # EventBridge delivers the same event twice
        the_id = f"dlv-{GROUP}-1"
        twin.clock.sleep(60)
        deferred = delivery(twin, the_id)
        wait_for(twin, lambda: delivery(twin, the_id)["waiting_for"] == "approval", step=600)
        waiting = delivery(twin, the_id)
        untouched = serving_config(twin, PRODUCTION)
        status, approved_view = twin.api_request("POST", f"/deliveries/{the_id}/approve")
        view = finished(twin, the_id)
        staging, production = serving_config(twin, STAGING), serving_config(twin, PRODUCTION)
        status_list, listed = twin.api_request("GET", "/deliveries", query={"group": GROUP})
        announced = [e["detail"] for e in twin.bus.events if e.get("detail-type") == "InferOps Delivery Finished"]
        executions = twin.client("stepfunctions").list_executions(
            stateMachineArn=twin.template.physical("DeliveryStateMachine").ref
        )["executions"]

    assert (deferred["status"], deferred["waiting_for"]) == ("PAUSED", "freeze")
    assert deferred["stages"][0]["status"] == "DEFERRED"
    assert deferred["stages"][0]["deferred_until"] == freeze["ends_at"]
    assert waiting["stages"][0]["status"] == "SUCCEEDED"
    assert waiting["stages"][0]["started_at"] >= freeze["ends_at"]  # nothing started inside the freeze
    assert waiting["stages"][1]["status"] == "WAITING_APPROVAL" and waiting["current_stage"] == "production"
    assert untouched == ("InService", f"{PRODUCTION}-v1")  # production waited for the human
    assert status == 202, approved_view
    assert view["status"] == "SUCCEEDED", view
    assert [s["status"] for s in view["stages"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert view["stages"][1]["approved_by"]
    deployed = [s["operations"][0] for s in view["stages"]]
    assert [d["kind"] for d in deployed] == ["deployment", "deployment"]
    assert staging[0] == production[0] == "InService"
    assert staging[1] != f"{STAGING}-v1" and production[1] != f"{PRODUCTION}-v1"
    assert status_list == 200 and [d["id"] for d in listed["deliveries"]] == [the_id]
    assert len(executions) == 1
    assert len(announced) == 1 and announced[0]["status"] == "SUCCEEDED"


def test_a_failure_in_staging_stops_before_production() -> None:
    with Twin() as twin:
        (arn,) = set_up(twin, policy())
        staging_stage = Stage.model_validate(policy()["stages"][0])
        twin.sagemaker.set_model_health(new_config_name(staging_stage.deployment_request(arn)), healthy=False)
        set_approval(twin, arn, "Approved")
        twin.clock.sleep(1)
        view = finished(twin, f"dlv-{GROUP}-1")
        staging, production = serving_config(twin, STAGING), serving_config(twin, PRODUCTION)

    assert view["status"] == "FAILED", view
    assert view["failed_stage"] == "staging"
    assert [s["status"] for s in view["stages"]] == ["FAILED", "PENDING"]
    assert "health check" in view["reason"] and "not delivered to production" in view["reason"]
    assert view["stages"][0]["operations"][0]["status"] == "FAILED"
    assert view["diagnosis"] and view["stages"][0]["diagnosis"]  # the deployment's diagnosis, carried up
    assert staging == ("InService", f"{STAGING}-v1") and production == ("InService", f"{PRODUCTION}-v1")


def test_a_newer_approval_supersedes_a_waiting_one_and_a_rejection_cancels() -> None:
    """Inside a freeze nothing deploys: v1 waits, v2's approval supersedes it, v2's rejection cancels v2."""
    with Twin() as twin:
        now = twin.clock.now()
        freeze = {"kind": "once", "starts_at": _iso(now - 60), "ends_at": _iso(now + 86400)}
        first, second = set_up(twin, policy(freeze_windows=[freeze]), versions=2)
        set_approval(twin, first, "Approved")
        twin.clock.sleep(60)
        v1_waiting = delivery(twin, f"dlv-{GROUP}-1")
        set_approval(twin, second, "Approved")
        twin.clock.sleep(60)
        v1, v2_waiting = delivery(twin, f"dlv-{GROUP}-1"), delivery(twin, f"dlv-{GROUP}-2")
        set_approval(twin, second, "Rejected")
        twin.clock.sleep(60)
        v2 = delivery(twin, f"dlv-{GROUP}-2")
        staging, production = serving_config(twin, STAGING), serving_config(twin, PRODUCTION)
        status, again = twin.api_request("POST", f"/deliveries/dlv-{GROUP}-2/cancel", body={})
        malformed = dict([e for e in twin.bus.events if e.get("detail-type") == PACKAGE_EVENT][-1])
        malformed["detail"] = {k: v for k, v in malformed["detail"].items() if k != "ModelPackageVersion"}
        twin.bus.put_event(malformed)
        twin.clock.sleep(300)  # Lambda retries the refused event twice, then sends it to the OnFailure queue
        failures = twin.template.queues["DeliveryEventsFailures"].url
        letters = twin.client("sqs").receive_message(QueueUrl=failures, MaxNumberOfMessages=10).get("Messages", [])

    assert v1_waiting["waiting_for"] == "freeze"
    assert v1["status"] == "ABORTED" and "superseded by version 2" in v1["reason"]
    assert v2_waiting["status"] == "PAUSED" and v2_waiting["waiting_for"] == "freeze"
    assert v2["status"] == "ABORTED" and "rejected" in v2["reason"]
    assert [s["status"] for s in v2["stages"]] == ["CANCELLED", "PENDING"]
    assert staging == ("InService", f"{STAGING}-v1") and production == ("InService", f"{PRODUCTION}-v1")
    assert status == 409, again
    assert len(letters) == 1
    letter = json.loads(letters[0]["Body"])
    assert letter["requestPayload"]["id"] == malformed["id"] and letter["requestContext"]["approximateInvokeCount"] == 3
    assert "detail.ModelPackageVersion" in letter["responsePayload"]["errorMessage"]  # the reason


def test_an_approval_whose_event_is_lost_is_delivered_by_the_scheduled_reconciliation() -> None:
    """EventBridge loses the approval event: the reconciliation (DeliveryReconcileFunction on its schedule) finds the
    latest approved version without a delivery and starts it through the event's own code; one stage keeps it short."""
    with Twin() as twin:
        create_endpoint(twin, name=STAGING, count=2)
        (arn,) = registry(twin)
        staging_only = {"stages": [policy()["stages"][0]]}
        status, reply = twin.api_request("PUT", f"/delivery-policies/{GROUP}", body=staging_only)
        assert status == 200, reply
        twin.faults.lose_next({"detail-type": [PACKAGE_EVENT], "detail": {"ModelApprovalStatus": ["Approved"]}})
        set_approval(twin, arn, "Approved")
        approved_at = twin.clock.now()
        the_id = f"dlv-{GROUP}-1"
        view = finished(twin, the_id)
        sweeps = twin.lambdas.of("DeliveryReconcileFunction")
        started = [i for i in sweeps if i.ok and any(d["action"] == "started" for d in i.payload["decisions"])]
        status_list, listed = twin.api_request("GET", "/deliveries", query={"group": GROUP})
        staging = serving_config(twin, STAGING)

    assert twin.faults.counts["event.lost"] == 1
    assert view["status"] == "SUCCEEDED", view
    assert [e["kind"] for e in view["timeline"]][:2] == ["approved", "reconciled"]
    assert len(started) == 1 and started[0].started - approved_at <= 600 + 180 + 60  # a period, the grace, a poll
    assert all(i.ok for i in sweeps)
    assert status_list == 200 and [d["id"] for d in listed["deliveries"]] == [the_id]
    assert staging[0] == "InService" and staging[1] != f"{STAGING}-v1"
