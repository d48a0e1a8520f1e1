"""Diagnosis end to end on the twin: the simulator's failure knobs leave SageMaker's traces (FailureReasons,
container logs, ResourceLimitExceeded, scaling activities, metrics) and the real API and flow explain them."""

from __future__ import annotations

from typing import Any

from flowkit import ACCOUNT, ENDPOINT, ROLE, create_endpoint, finished, request, start, wait_for

from twin.cloudwatch_traffic import LoadProfile
from twin.runtime import Twin

QUIET = {"LogLevel": "WARNING"}


def _rules(diagnosis: dict[str, Any]) -> list[str]:
    return [f["rule"] for f in diagnosis["findings"]]


def _texts(finding: dict[str, Any]) -> list[str]:
    return [e["text"] for e in finding["evidence"]]


def test_an_unhealthy_model_is_diagnosed_from_its_container_logs() -> None:
    with Twin(parameters=QUIET) as twin:
        create_endpoint(twin, count=2)
        twin.sagemaker.set_model_health(f"{ENDPOINT}-v2", healthy=False)
        operation = start(twin, request({"type": "all_at_once", "bake_seconds": 300}))
        view = finished(twin, operation)
        status, live = twin.api_request("GET", f"/endpoints/{ENDPOINT}/diagnosis", query={"minutes": "60"})

    assert view["status"] == "FAILED", view["result"]
    attached = view["diagnosis"]
    assert _rules(attached)[0] == "ping-health-check", attached["summary"]
    finding = attached["findings"][0]
    assert "The primary container of variant AllTraffic did not answer GET /ping" in finding["cause"]
    logs = [e for e in finding["evidence"] if e["kind"] == "log"]
    assert any(e["text"].startswith("FileNotFoundError: [Errno 2]") for e in logs)  # the worker's traceback
    assert all(e["source"].startswith("AllTraffic/i-0") for e in logs)  # streams <variant>/<instance-id>
    assert finding["logs_url"].startswith(
        f"https://console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEventViewer:group=/aws/sagemaker/"
        f"Endpoints/{ENDPOINT};stream=AllTraffic/i-0"
    )
    assert any(e["kind"] == "diagnosis" for e in view["timeline"])
    assert status == 200 and _rules(live)[0] == "ping-health-check"  # the endpoint keeps its FailureReason


def test_the_quota_failure_names_the_quota() -> None:
    with Twin(parameters=QUIET) as twin:
        create_endpoint(twin, count=2)
        twin.sagemaker.set_instance_quota("ml.c7g.large", 3)
        operation = start(twin, request({"type": "all_at_once", "bake_seconds": 300}))
        view = finished(twin, operation)

    assert view["status"] == "FAILED", view["result"]
    assert "ResourceLimitExceeded" in view["result"]["reason"]
    (finding,) = view["diagnosis"]["findings"]
    assert finding["rule"] == "resource-limit-exceeded"
    assert (
        "'ml.c7g.large for endpoint usage' is 3 instance(s), 2 in use, and the change asked for 2 more"
        in (finding["cause"])
    )
    assert "Service Quotas increase of 'ml.c7g.large for endpoint usage'" in finding["fix"]


def test_autoscaling_against_the_quota_is_diagnosed_from_the_scaling_activities() -> None:
    resource = f"endpoint/{ENDPOINT}/variant/AllTraffic"
    dimension = "sagemaker:variant:DesiredInstanceCount"
    with Twin(parameters=QUIET) as twin:
        create_endpoint(twin, count=2)
        twin.sagemaker.set_instance_quota("ml.c7g.large", 4)
        scaling = twin.client("application-autoscaling")
        scaling.register_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=dimension, MinCapacity=6, MaxCapacity=8
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
        twin.clock.sleep(400)
        status, body = twin.api_request("GET", f"/endpoints/{ENDPOINT}/diagnosis", query={"minutes": "15"})

    assert status == 200, body
    (finding,) = body["findings"]
    assert finding["rule"] == "resource-limit-exceeded"
    assert "quota 'ml.c7g.large for endpoint usage' is 4 instance(s), 2 in use" in finding["cause"]
    assert all(e["kind"] == "scaling_activity" for e in finding["evidence"])
    assert "Error Code: ResourceLimitExceeded" in finding["evidence"][0]["text"]


def test_an_oversized_pipeline_payload_is_found_in_the_senders_access_log() -> None:
    sagemaker_containers = [
        {"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/featurize:1", "ContainerHostname": "featurizer"},
        {"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", "ContainerHostname": "scorer"},
    ]
    with Twin(parameters=QUIET) as twin:
        sagemaker = twin.client("sagemaker")
        with twin.busy():
            sagemaker.create_model(ModelName="pipe", ExecutionRoleArn=ROLE, Containers=sagemaker_containers)
            sagemaker.create_endpoint_config(
                EndpointConfigName="pipe-v1",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "pipe",
                        "InitialInstanceCount": 2,
                        "InstanceType": "ml.m5.xlarge",
                    }
                ],
            )
            sagemaker.create_endpoint(EndpointName="pipe", EndpointConfigName="pipe-v1")
            twin.cloudwatch.set_load_profile("pipe", LoadProfile(requests_per_minute=300))
        wait_for(twin, lambda: sagemaker.describe_endpoint(EndpointName="pipe")["EndpointStatus"] == "InService")
        twin.sagemaker.set_pipeline_payload("pipe", "featurizer", 6_000_000)
        twin.cloudwatch.set_model_profile("pipe", model_error_rate=1.0)  # every request: ModelError 424
        twin.clock.sleep(300)
        status, body = twin.api_request("GET", "/endpoints/pipe/diagnosis", query={"minutes": "10"})

    assert status == 200, body
    assert _rules(body) == ["pipeline-payload-too-large"], body["summary"]
    finding = body["findings"][0]
    assert "featurizer returns 6,000,000 bytes to scorer" in finding["cause"]
    log = next(e for e in finding["evidence"] if e["kind"] == "log")
    assert log["source"].startswith("AllTraffic/i-0") and log["source"].endswith("/featurizer")
    assert '"POST /invocations HTTP/1.1" 200 6000000' in log["text"]
    texts = _texts(finding)
    assert "no ContainerLatency from scorer" in texts
    assert any(t.startswith("ContainerLatency Average") and "ContainerName=featurizer" in t for t in texts)
    assert any("InvocationModelErrors" in t for t in texts)


def test_a_container_built_on_a_newer_cuda_than_the_host_driver() -> None:
    image = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
    with Twin(parameters=QUIET) as twin:
        create_endpoint(twin, instance_type="ml.g5.xlarge", count=1)
        twin.client("sagemaker").create_model(
            ModelName="scorer-cu124",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": image, "ModelDataUrl": "s3://models/scorer/cu124.tar.gz"},
        )
        body = {**request({"type": "all_at_once"}), "model": {"source": "existing", "model_name": "scorer-cu124"}}
        view = finished(twin, start(twin, body))

    assert view["status"] == "FAILED", view["result"]
    assert "CannotStartContainerError" in view["result"]["reason"]
    (finding,) = view["diagnosis"]["findings"]
    assert finding["rule"] == "cuda-driver-mismatch"
    assert "needs CUDA 12.4 and ml.g5.xlarge hosts run NVIDIA driver 470" in finding["cause"]
    assert "ml.g6.*" in finding["fix"]


def test_an_image_bundling_nvidia_drivers_fails_its_ping_with_an_nvml_mismatch() -> None:
    with Twin(parameters=QUIET) as twin:
        create_endpoint(twin, instance_type="ml.g5.xlarge", count=1)
        twin.sagemaker.set_bundled_driver(f"{ENDPOINT}-v2")
        view = finished(twin, start(twin, request({"type": "all_at_once"})))

    assert view["status"] == "FAILED", view["result"]
    assert _rules(view["diagnosis"])[:2] == ["nvml-driver-mismatch", "ping-health-check"]
    texts = _texts(view["diagnosis"]["findings"][0])
    assert texts == ["Failed to initialize NVML: Driver/library version mismatch"]
