"""Shared set-up for flows on the twin: an endpoint serving real traffic, a deployment through the real API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twin.cloudwatch_traffic import LoadProfile
from twin.runtime import Twin

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
ENDPOINT = "scorer"
TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"}


def create_model(twin: Twin, name: str) -> None:
    twin.client("sagemaker").create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/scorer:{name}",
            "ModelDataUrl": f"s3://models/scorer/{name}.tar.gz",
        },
    )


def create_endpoint(
    twin: Twin, *, instance_type: str = "ml.c7g.large", count: int = 4, name: str = ENDPOINT, rpm: float = 1200
) -> None:
    """An InService endpoint on model v1 with traffic, and model v2 ready to deploy."""
    sagemaker = twin.client("sagemaker")
    with twin.busy():
        create_model(twin, f"{name}-v1")
        create_model(twin, f"{name}-v2")
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"{name}-v1",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{name}-v1",
                    "InitialInstanceCount": count,
                    "InstanceType": instance_type,
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-v1")
        twin.cloudwatch.set_load_profile(name, LoadProfile(requests_per_minute=rpm))
    wait_for(twin, lambda: sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService")
    twin.clock.sleep(5)


def create_async_endpoint(twin: Twin, name: str, bucket: str, model: str = "ocr-v1") -> None:
    """An InService async endpoint whose notifications go to the template's success and error topics."""
    t = twin.template
    sagemaker = twin.client("sagemaker")
    sagemaker.create_model(
        ModelName=model,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ocr:1", "ModelDataUrl": "s3://m/x"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-v1",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1, "InstanceType": "ml.g5.xlarge"}
        ],
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": f"s3://{bucket}/output",
                "S3FailurePath": f"s3://{bucket}/failures",
                "NotificationConfig": {
                    "SuccessTopic": t.physical("AsyncSuccessTopic").ref,
                    "ErrorTopic": t.physical("AsyncErrorTopic").ref,
                },
            },
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
        },
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-v1")
    while sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] != "InService":
        twin.clock.sleep(30)


def create_guard_alarm(twin: Twin, name: str, endpoint: str = ENDPOINT) -> None:
    """An alarm on production's 5XX rate that stays OK on a healthy endpoint (tests force it into ALARM)."""
    twin.client("cloudwatch").put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}],
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0.5,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )


def wait_for(twin: Twin, done: Callable[[], bool], step: float = 30.0, limit: float = 12 * 3600) -> float:
    return twin.wait_for(done, step, limit)


def request(strategy: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_name": ENDPOINT,
        "model": {"source": "existing", "model_name": f"{ENDPOINT}-v2"},
        "strategy": strategy,
        "create_recommended_alarms": True,
        **extra,
    }


def shadow_request(**extra: Any) -> dict[str, Any]:
    """A one-hour shadow test of v2 judged every 10 minutes (POST /shadow-tests)."""
    return {
        "endpoint_name": ENDPOINT,
        "model": {"source": "existing", "model_name": f"{ENDPOINT}-v2"},
        "role_arn": ROLE,
        "duration_hours": 1,
        "analysis_interval_minutes": 10,
        "analysis": {"min_requests": 50, "min_samples": 3},
        **extra,
    }


def start(twin: Twin, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    status, reply = twin.api_request("POST", "/deployments", body=body, headers=headers)
    assert status == 202, reply
    return str(reply["id"])


def deployment(twin: Twin, operation_id: str) -> dict[str, Any]:
    status, reply = twin.api_request("GET", f"/deployments/{operation_id}")
    assert status == 200, reply
    return dict(reply)


def finished(twin: Twin, operation_id: str, *, step: float = 120.0) -> dict[str, Any]:
    """Let the deployment run to its end (virtual time) and return GET /deployments/{id}."""

    def done() -> bool:
        view = deployment(twin, operation_id)
        if view["status"] in TERMINAL:
            return True
        arn = view.get("execution_arn")
        execution = twin.client("stepfunctions").describe_execution(executionArn=arn) if arn else {}
        assert execution.get("status", "RUNNING") == "RUNNING", (execution, view)
        return False

    wait_for(twin, done, step=step)
    twin.clock.sleep(1)  # the closing event and the lock release follow the final record
    return deployment(twin, operation_id)


def serving_config(twin: Twin, name: str = ENDPOINT) -> tuple[str, str]:
    described = twin.client("sagemaker").describe_endpoint(EndpointName=name)
    return described["EndpointStatus"], described["EndpointConfigName"]
