"""Registry-driven delivery end to end on the twin: a model package approved in the registry (the twin's
SageMaker sends the real-shaped "SageMaker Model Package State Change" event) goes through the stored
policy's stages, each a real deployment flow started through the API's own code."""

from __future__ import annotations

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

    wait_for(twin, done, step=60)
    twin.clock.sleep(1)
    return delivery(twin, the_id)


def test_approval_delivers_to_staging_then_production_once() -> None:
    with Twin() as twin:
        (arn,) = set_up(twin, policy())
        set_approval(twin, arn, "Approved")
        set_approval(twin, arn, "Approved")  # no change: SageMaker sends nothing
        twin.clock.sleep(1)
        view = finished(twin, f"dlv-{GROUP}-1")
        staging, production = serving_config(twin, STAGING), serving_config(twin, PRODUCTION)
        announced = [e["detail"] for e in twin.bus.events if e.get("detail-type") == "InferOps Delivery Finished"]
        package_events = [e for e in twin.bus.events if e.get("detail-type") == PACKAGE_EVENT]

    assert view["status"] == "SUCCEEDED", view
    assert [s["status"] for s in view["stages"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert staging[0] == production[0] == "InService"
    assert staging[1] == view["stages"][0]["operations"][0]["id"] or staging[1] != f"{STAGING}-v1"
    assert len(announced) == 1 and announced[0]["status"] == "SUCCEEDED"
    assert [e["detail"]["ModelApprovalStatus"] for e in package_events] == ["PendingManualApproval", "Approved"]
