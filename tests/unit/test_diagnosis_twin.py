"""The simulator's diagnostic knobs leave SageMaker's traces: log streams and lines, FailureReasons, quota errors."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from twin.runtime import Twin

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"


def _endpoint(twin: Twin, name: str, model: dict[str, Any], instance_type: str, count: int = 1) -> None:
    sagemaker = twin.client("sagemaker")
    sagemaker.create_model(ModelName=name, ExecutionRoleArn=ROLE, **model)
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": count,
                "InstanceType": instance_type,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)


def _status(twin: Twin, name: str) -> dict[str, Any]:
    return dict(twin.client("sagemaker").describe_endpoint(EndpointName=name))


@pytest.mark.flow
def test_knobs_leave_sagemakers_traces() -> None:
    image = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
    with Twin(parameters={"LogLevel": "WARNING"}, schedules=False) as twin:
        logs = twin.client("logs")
        with twin.busy():
            twin.sagemaker.set_instance_quota("ml.m5.xlarge", 3)
            twin.sagemaker.set_container_cuda("gpu", "12.1")
            _endpoint(
                twin,
                "pipe",
                {
                    "Containers": [
                        {"Image": f"{image}/featurize:1", "ContainerHostname": "featurizer"},
                        {"Image": f"{image}/xgboost:1"},
                    ]
                },
                "ml.m5.xlarge",
                count=2,
            )
            _endpoint(twin, "gpu", {"PrimaryContainer": {"Image": f"{image}/byoc:latest"}}, "ml.g4dn.xlarge")
            with pytest.raises(ClientError) as refused:
                _endpoint(twin, "more", {"PrimaryContainer": {"Image": f"{image}/byoc:latest"}}, "ml.m5.xlarge", 2)
        twin.clock.sleep(900)
        pipe, gpu = _status(twin, "pipe"), _status(twin, "gpu")
        streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/pipe")["logStreams"]
        lines = logs.filter_log_events(logGroupName="/aws/sagemaker/Endpoints/pipe")["events"]
        gpu_groups = logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/Endpoints/gpu")["logGroups"]

    error = refused.value.response["Error"]
    assert error["Code"] == "ResourceLimitExceeded"
    assert error["Message"] == (
        "The account-level service limit 'ml.m5.xlarge for endpoint usage' is 3 Instances, with current utilization "
        "of 2 Instances and a request delta of 2 Instances. Please contact AWS support to request an increase for "
        "this limit."
    )
    assert pipe["EndpointStatus"] == "InService"
    names = sorted(s["logStreamName"] for s in streams)
    assert len(names) == 4 and all(n.startswith("AllTraffic/i-0") for n in names)  # 2 instances x 2 containers
    assert {n.rsplit("/", 1)[1] for n in names} == {"featurizer", "container-2"}
    assert any("Booting worker with pid" in e["message"] for e in lines)
    assert gpu["EndpointStatus"] == "Failed"  # CUDA 12.1 on driver 470 (CUDA 11.4): the container never starts
    assert gpu["FailureReason"].startswith("CannotStartContainerError. Please ensure the model container for variant")
    assert gpu_groups == []  # ... so it never logged anything
