"""The SageMaker simulator: added operations against botocore's shapes, lifecycle timings, every guardrail
mode phase by phase, auto-rollback, rolling batches and UpdateRollbackFailed, weights updates, inference
components down to zero instances, inference experiments, async notifications, faults, event shapes
against AWS's published samples, and the moto internals the simulator patches.

Time moves when the test thread sleeps on the virtual clock (`run_until`); event times are the scheduled
virtual times, so durations are asserted exactly.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.config
import moto
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.cloudwatch.models import cloudwatch_backends

from twin.bus import ListSink
from twin.clock import VirtualClock
from twin.sagemaker import SageMakerSimulator, ServingVariant
from twin.sagemaker_base import PING_FAILURE, provision_seconds

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
STATE = "SageMaker Endpoint State Change"
DEPLOYMENT = "SageMaker Endpoint Deployment State Change"
NO_RETRY = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
LAX = botocore.config.Config(parameter_validation=False, retries={"total_max_attempts": 1, "mode": "standard"})

# Published samples: https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html
# (mirrored in awsdocs/amazon-sagemaker-developer-guide, doc_source/automating-sagemaker-with-eventbridge.md).
ENDPOINT_SAMPLE_DETAIL: dict[str, Any] = {
    "EndpointName": "MyEndpoint",
    "EndpointArn": "arn:aws:sagemaker:us-west-2:123456789012:endpoint/myendpoint",
    "EndpointConfigName": "MyEndpointConfig",
    "ProductionVariants": [{"DesiredWeight": 1.0, "DesiredInstanceCount": 1.0}],
    "EndpointStatus": "IN_SERVICE",
    "CreationTime": 1592411992203.0,
    "LastModifiedTime": 1592411994287.0,
    "Tags": {},
}
DEPLOYMENT_SAMPLE_DETAIL: dict[str, Any] = {
    "EndpointName": "sample-endpoint",
    "EndpointArn": "arn:aws:sagemaker:us-west-2:651393343886:endpoint/sample-endpoint",
    "EndpointConfigName": "sample-endpoint-config-1",
    "ProductionVariants": [
        {
            "VariantName": "AllTraffic",
            "CurrentWeight": 1,
            "DesiredWeight": 1,
            "CurrentInstanceCount": 3,
            "DesiredInstanceCount": 3,
        }
    ],
    "EndpointStatus": "UPDATING",
    "CreationTime": 1635195148181,
    "LastModifiedTime": 1635195148181,
    "Tags": {},
    "PendingDeploymentSummary": {
        "EndpointConfigName": "sample-endpoint-config-2",
        "StartTime": 1635195269181,  # "Timestamp" in the sample
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "CurrentWeight": 1,
                "DesiredWeight": 1,
                "CurrentInstanceCount": 1,
                "DesiredInstanceCount": 3,
                "VariantStatus": [
                    {
                        "Status": "Baking",
                        "StatusMessage": "Baking for 600 seconds (TerminationWaitInSeconds) with traffic enabled on "
                        "canary capacity of 1 instance(s).",
                        "StartTime": 1635195269181,
                    }
                ],
            }
        ],
    },
}
# https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html
ASYNC_SUCCESS_SAMPLE: dict[str, Any] = {
    "awsRegion": "us-east-1",
    "eventTime": "2022-01-25T22:46:00.608Z",
    "receivedTime": "2022-01-25T22:46:00.455Z",
    "invocationStatus": "Completed",
    "requestParameters": {
        "contentType": "text/csv",
        "endpointName": "<example-endpoint>",
        "inputLocation": "s3://<bucket>/<input-directory>/input-data.csv",
    },
    "responseParameters": {
        "contentType": "text/csv; charset=utf-8",
        "outputLocation": "s3://<bucket>/<output_directory>/prediction.out",
    },
    "inferenceId": "11111111-2222-3333-4444-555555555555",
    "eventVersion": "1.0",
    "eventSource": "aws:sagemaker",
    "eventName": "InferenceResult",
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@functools.cache
def client(service: str, lax: bool = False) -> Any:
    """One client per service for the whole module: building a SageMaker client costs ~0.1 s, and moto's
    mock intercepts every client created after moto is imported, whichever `mock_aws` is active."""
    return boto3.client(service, region_name=REGION, config=LAX if lax else NO_RETRY)


# ---------------------------------------------------------------------------------------------- fixtures
class Recorder(ListSink):
    """A ListSink that also calls hooks on each event (to act at an exact phase of a deployment)."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(now=clock.utcnow)
        self.hooks: list[Callable[[dict[str, Any]], None]] = []

    def put(self, **kwargs: Any) -> str:
        event_id = super().put(**kwargs)
        for hook in list(self.hooks):
            hook(self.events[-1])
        return event_id


class Twin:
    def __init__(self, clock: VirtualClock, sink: Recorder, sim: SageMakerSimulator) -> None:
        self.clock, self.sink, self.sim = clock, sink, sim
        self.sm = client("sagemaker")
        self.cw = client("cloudwatch")

    def run_until(self, predicate: Callable[[], Any], limit: float = 12 * 3600, step: float = 300) -> Any:
        """Let virtual time pass until `predicate()` is truthy."""
        deadline = self.clock.now() + limit
        while True:
            value = predicate()
            if value:
                return value
            assert self.clock.now() < deadline, "virtual time limit reached"
            self.clock.sleep(step)

    def status(self, name: str = "ep") -> str:
        return str(self.sm.describe_endpoint(EndpointName=name)["EndpointStatus"])

    def settle(self, name: str = "ep", wanted: tuple[str, ...] = ("InService",)) -> dict[str, Any]:
        self.run_until(lambda: self.status(name) in wanted)
        return dict(self.sm.describe_endpoint(EndpointName=name))

    def model(self, name: str, image: str | None = None) -> None:
        self.sm.create_model(
            ModelName=name,
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": image or f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}:1"},
        )

    def config(
        self, name: str, model: str | None, instance_type: str = "ml.m5.xlarge", count: int = 4, **extra: Any
    ) -> None:
        variant: dict[str, Any] = {
            "VariantName": "AllTraffic",
            "InstanceType": instance_type,
            "InitialInstanceCount": count,
        }
        if model:
            variant["ModelName"] = model
        variant.update(extra.pop("variant", {}))
        self.sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant], **extra)

    def endpoint(self, name: str = "ep", config: str = "c1", **extra: Any) -> dict[str, Any]:
        self.sm.create_endpoint(EndpointName=name, EndpointConfigName=config, **extra)
        return self.settle(name, ("InService", "Failed"))

    def alarm(self, name: str = "errors") -> None:
        self.cw.put_metric_alarm(
            AlarmName=name,
            MetricName="Invocation5XXErrors",
            Namespace="AWS/SageMaker",
            Statistic="Average",
            Period=600,
            EvaluationPeriods=2,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
            Dimensions=[{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        )

    def trip(self, alarm: str = "errors") -> None:
        """What the alarm evaluator does: set the state in moto's CloudWatch."""
        cloudwatch_backends[ACCOUNT][REGION].set_alarm_state(alarm, "Threshold Crossed", '{"version":"1.0"}', "ALARM")

    def on_phase(self, fragment: str, action: Callable[[], None]) -> None:
        """Run `action` (once) when a deployment event shows a status message containing `fragment`."""

        def hook(event: dict[str, Any]) -> None:
            if event["detail-type"] == DEPLOYMENT and any(fragment in m for _, m in statuses(event)):
                self.sink.hooks.remove(hook)
                action()

        self.sink.hooks.append(hook)

    def phases(self) -> list[tuple[str, str]]:
        """The (Status, StatusMessage) of every deployment event, in order (one event per phase)."""
        return [item for event in self.sink.of_type(DEPLOYMENT) for item in statuses(event)]


def statuses(event: dict[str, Any]) -> list[tuple[str, str]]:
    detail = event["detail"]
    variants = detail.get("PendingDeploymentSummary", {}).get("ProductionVariants", []) + detail["ProductionVariants"]
    return [(s["Status"], s["StatusMessage"]) for v in variants for s in v.get("VariantStatus", [])]


@pytest.fixture
def twin() -> Iterator[Twin]:
    clock = VirtualClock(speed=20.0, auto_advance=True)
    sink = Recorder(clock)
    clock.start()
    try:
        with mock_aws():
            sim = SageMakerSimulator(clock, sink)
            sim.install()
            try:
                yield Twin(clock, sink, sim)
            finally:
                sim.uninstall()
    finally:
        clock.stop()
    assert clock.errors == []


@pytest.fixture
def blue(twin: Twin) -> Twin:
    """An InService endpoint `ep` on config c1 (model m1, 4 x ml.m5.xlarge) and config c2 (model m2)."""
    twin.model("m1")
    twin.model("m2")
    twin.config("c1", "m1")
    twin.config("c2", "m2")
    twin.alarm()
    twin.endpoint()
    return twin


def update(twin: Twin, config: str = "c2", **deployment: Any) -> None:
    kwargs: dict[str, Any] = {"EndpointName": "ep", "EndpointConfigName": config}
    if deployment:
        kwargs["DeploymentConfig"] = {**deployment, "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "errors"}]}}
    twin.sm.update_endpoint(**kwargs)


def blue_green(kind: str, wait: int = 600, termination: int = 300, **sizes: Any) -> dict[str, Any]:
    routing = {"Type": kind, "WaitIntervalInSeconds": wait, **sizes}
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": termination,
            "MaximumExecutionTimeoutInSeconds": 14400,
        }
    }


def rolling(batch: int = 25, wait: int = 300, rollback: dict[str, Any] | None = None) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": batch},
        "WaitIntervalInSeconds": wait,
        "MaximumExecutionTimeoutInSeconds": 28800,
    }
    if rollback:
        policy["RollbackMaximumBatchSize"] = rollback
    return {"RollingUpdatePolicy": policy}


def event_time(event: dict[str, Any]) -> datetime:
    return datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def error_of(call: Callable[[], Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    return error["Error"]["Code"], error["Error"]["Message"], error["ResponseMetadata"]["HTTPStatusCode"]


# ---------------------------------------------------------------------------------------------- moto pins
def test_moto_internals_the_simulator_patches_are_pinned() -> None:
    """A moto upgrade must fail here, loudly, before it silently breaks the twin."""
    from moto.applicationautoscaling import models as aas_models
    from moto.applicationautoscaling import responses as aas_responses
    from moto.core.responses import BaseResponse
    from moto.s3.models import S3Backend
    from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
    from moto.sns.models import SNSBackend

    assert moto.__version__ == "5.2.5"
    params = lambda fn: list(inspect.signature(fn).parameters)  # noqa: E731
    assert params(FakeEndpoint.__init__) == [
        "self", "account_id", "region_name", "endpoint_name", "endpoint_config_name", "production_variants",
        "data_capture_config", "tags",
    ]  # fmt: skip
    assert params(FakeEndpointConfig.__init__) == [
        "self", "account_id", "region_name", "endpoint_config_name", "production_variants",
        "async_inference_config", "data_capture_config", "tags", "kms_key_id",
    ]  # fmt: skip
    assert params(FakeEndpointConfig.validate_instance_type) == ["self", "instance_type"]
    assert params(BaseResponse.call_action) == ["self"]
    assert params(BaseResponse._get_action) == ["self"]
    assert params(SNSBackend.publish)[:3] == ["self", "message", "arn"]
    assert params(S3Backend.put_object)[:4] == ["self", "bucket_name", "key_name", "value"]
    assert params(S3Backend.get_object)[:3] == ["self", "bucket_name", "key_name"]
    assert hasattr(SageMakerRuntimeResponse, "invoke_endpoint_async")
    assert "self.params = " in inspect.getsource(BaseResponse.parse_parameters)  # parsed from botocore's model
    assert "self.automated_parameter_parsing = True" in inspect.getsource(SageMakerResponse.__init__)
    assert "getattr(self, action)" in inspect.getsource(BaseResponse.call_action)  # methods looked up per request
    for name in ("endpoints", "endpoint_configs", "_models"):
        assert name in inspect.getsource(SageMakerModelBackend.__init__)
    assert "ScalableDimensionValueSet" in vars(aas_models) and "ScalableDimensionValueSet" in vars(aas_responses)
    assert "valid_dimensions = [d.value for d in ScalableDimensionValueSet]" in inspect.getsource(
        aas_models._target_params_are_valid
    )
    assert "state_value" in inspect.getsource(cloudwatch_backends[ACCOUNT][REGION].__class__.set_alarm_state)
    # operations moto lacks: if moto starts to implement one, review the simulator's replacement
    for name in ("update_endpoint", "create_inference_component", "create_inference_experiment"):
        assert not hasattr(SageMakerResponse, name)


def test_install_patches_and_uninstall_restores() -> None:
    from moto.applicationautoscaling import models as aas_models
    from moto.sagemaker.models import FakeEndpointConfig
    from moto.sagemaker.responses import SageMakerResponse

    clock = VirtualClock(speed=0.0)
    before = (FakeEndpointConfig.validate_instance_type, aas_models.ScalableDimensionValueSet)
    sim = SageMakerSimulator(clock, ListSink())
    sim.install()
    sim.install()  # idempotent
    try:
        assert hasattr(SageMakerResponse, "update_endpoint")
        assert FakeEndpointConfig.validate_instance_type is not before[0]
        with pytest.raises(RuntimeError):
            SageMakerSimulator(clock, ListSink()).install()
    finally:
        sim.uninstall()
    assert not hasattr(SageMakerResponse, "update_endpoint")
    assert "call_action" not in vars(SageMakerResponse)
    assert (FakeEndpointConfig.validate_instance_type, aas_models.ScalableDimensionValueSet) == before


# ---------------------------------------------------------------------------------------------- shapes
def test_added_operations_validate_input_like_aws(blue: Twin) -> None:
    """Server-side validation from botocore's model, with AWS's message format (client validation off)."""
    lax = client("sagemaker", lax=True)
    too_short = {"RollingUpdatePolicy": {**rolling()["RollingUpdatePolicy"], "MaximumExecutionTimeoutInSeconds": 100}}
    cases: list[tuple[Callable[[], Any], str]] = [
        (
            lambda: lax.update_endpoint(
                EndpointName="ep", EndpointConfigName="c2", DeploymentConfig=blue_green("ALL_AT_ONCE", wait=4000)
            ),
            "Value '4000' at 'deploymentConfig.blueGreenUpdatePolicy.trafficRoutingConfiguration."
            "waitIntervalInSeconds' failed to satisfy constraint: Member must have value less than or equal to 3600",
        ),
        (
            lambda: lax.update_endpoint(EndpointName="ep"),
            "Value null at 'endpointConfigName' failed to satisfy constraint: Member must not be null",
        ),
        (
            lambda: lax.update_endpoint(
                EndpointName="ep",
                EndpointConfigName="c2",
                DeploymentConfig={"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": f"a{i}"} for i in range(11)]}},
            ),
            "Member must have length less than or equal to 10",
        ),
        (
            lambda: lax.update_endpoint(EndpointName="ep", EndpointConfigName="c2", DeploymentConfig=too_short),
            "Member must have value greater than or equal to 600",
        ),
        (
            lambda: lax.create_inference_component(
                InferenceComponentName="ic",
                EndpointName="ep",
                Specification={"ComputeResourceRequirements": {"MinMemoryRequiredInMb": 64}},
            ),
            "Value '64' at 'specification.computeResourceRequirements.minMemoryRequiredInMb'",
        ),
        (
            lambda: lax.stop_inference_experiment(Name="x", ModelVariantActions={"v": "Explode"}),
            "Member must satisfy enum value set: [Retain, Remove, Promote]",
        ),
        (lambda: lax.list_inference_components(MaxResults=500), "Member must have value less than or equal to 100"),
        (lambda: lax.describe_inference_experiment(Name="bad_name!"), "Member must satisfy regular expression pattern"),
    ]
    for call, fragment in cases:
        code, message, status = error_of(call)
        assert (code, status) == ("ValidationException", 400)
        assert fragment in message, message
        assert message.startswith(("1 validation error detected: ", "2 validation errors detected: ")), message


def test_endpoint_configs_keep_every_field_and_accept_every_catalog_type(twin: Twin) -> None:
    twin.model("m1")
    for instance_type in ("ml.g6e.12xlarge", "ml.inf2.xlarge", "ml.p5.48xlarge", "ml.c7g.large"):
        twin.config(f"cfg-{instance_type.replace('.', '-')}", "m1", instance_type, 1)
    twin.sm.create_endpoint_config(
        EndpointConfigName="full",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "InstanceType": "ml.g5.12xlarge",
                "InitialInstanceCount": 1,
                "ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 4},
                "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
            }
        ],
        ShadowProductionVariants=[
            {"VariantName": "Shadow", "ModelName": "m1", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
        ],
        ExecutionRoleArn=ROLE,
        EnableNetworkIsolation=True,
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://bucket/out"}},
    )
    described = twin.sm.describe_endpoint_config(EndpointConfigName="full")
    assert described["ExecutionRoleArn"] == ROLE
    assert described["EnableNetworkIsolation"] is True
    assert described["ShadowProductionVariants"][0]["VariantName"] == "Shadow"
    assert described["ProductionVariants"][0]["ManagedInstanceScaling"]["MinInstanceCount"] == 0
    assert described["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == "s3://bucket/out"
    code, message, _ = error_of(lambda: twin.config("bad", "m1", "ml.m5.gigantic"))
    assert code == "ValidationException" and "Member must satisfy enum value set" in message
    code, message, _ = error_of(lambda: twin.config("bad", "missing-model"))
    assert message == f'Could not find model "arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/missing-model".'


# ---------------------------------------------------------------------------------------------- endpoints
@pytest.mark.parametrize(("instance_type", "expected"), [("ml.m5.xlarge", 245), ("ml.g5.xlarge", 510)])
def test_create_takes_the_catalog_duration_then_delete(twin: Twin, instance_type: str, expected: int) -> None:
    twin.model("m1")
    twin.config("c1", "m1", instance_type, 2)
    assert provision_seconds(instance_type) == expected
    with twin.clock.activity():
        twin.sm.create_endpoint(EndpointName="ep", EndpointConfigName="c1", Tags=[{"Key": "team", "Value": "ml"}])
        creating = twin.sm.describe_endpoint(EndpointName="ep")
    assert creating["EndpointStatus"] == "Creating"
    assert creating["ProductionVariants"][0]["VariantStatus"][0]["Status"] == "Creating"
    described = twin.settle()
    created, in_service = twin.sink.of_type(STATE)
    assert [created["detail"]["EndpointStatus"], in_service["detail"]["EndpointStatus"]] == ["CREATING", "IN_SERVICE"]
    assert event_time(in_service) - event_time(created) == timedelta(seconds=expected)
    assert in_service["detail"]["Tags"] == {"team": "ml"}
    variant = described["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"], variant["CurrentWeight"]) == (2, 2, 1.0)
    assert variant["DeployedImages"][0]["ResolvedImage"].startswith(
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/m1@sha256:"
    )
    assert "VariantStatus" not in variant
    assert twin.sm.list_endpoints()["Endpoints"][0]["EndpointStatus"] == "InService"
    code, message, _ = error_of(lambda: twin.sm.create_endpoint(EndpointName="ep", EndpointConfigName="c1"))
    assert message == f'Cannot create already existing endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep".'

    twin.sm.delete_endpoint(EndpointName="ep")
    assert twin.status() == "Deleting"
    twin.run_until(lambda: not twin.sm.list_endpoints()["Endpoints"])
    code, message, _ = error_of(lambda: twin.sm.describe_endpoint(EndpointName="ep"))
    assert (code, message) == (
        "ValidationException",
        f'Could not find endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep".',
    )
    assert twin.sink.of_type(STATE)[-1]["detail"]["EndpointStatus"] == "DELETING"


def test_serverless_endpoint(twin: Twin) -> None:
    twin.model("m1")
    serverless = {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    twin.sm.create_endpoint_config(
        EndpointConfigName="c1",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "m1", "ServerlessConfig": serverless}],
    )
    variant = twin.endpoint()["ProductionVariants"][0]
    assert (variant["CurrentServerlessConfig"], variant["DesiredServerlessConfig"]) == (serverless, serverless)
    assert "CurrentInstanceCount" not in variant
    created, in_service = twin.sink.of_type(STATE)
    assert event_time(in_service) - event_time(created) == timedelta(seconds=provision_seconds(None))
    [serving] = twin.sim.serving_variants("ep")
    assert (serving.instance_type, serving.weight_share, serving.instance_count) == ("", 1.0, 1)


def test_unhealthy_model_fails_creation_with_the_ping_reason(twin: Twin) -> None:
    twin.model("m1")
    twin.config("c1", "m1")
    twin.sim.set_model_health("m1", healthy=False)
    described = twin.endpoint()
    reason = (
        "The primary container for production variant AllTraffic did not pass the ping health check. "
        "Please check CloudWatch logs for this endpoint."
    )
    assert (described["EndpointStatus"], described["FailureReason"]) == ("Failed", reason)
    failed = twin.sink.of_type(STATE)[-1]["detail"]
    assert (failed["EndpointStatus"], failed["FailureReason"]) == ("FAILED", reason)
    _, message, _ = error_of(lambda: update(twin, "c1"))
    assert message.startswith("Cannot update failed endpoint")
    assert twin.sim.serving_variants("ep")[0].instance_count == 0


# ---------------------------------------------------------------------------------------------- guardrails
WAIT_CANARY = "Baking for 600 seconds (WaitIntervalInSeconds) with traffic enabled on canary capacity of 1 instance(s)."
FINAL = "Baking for 600 seconds (WaitIntervalInSeconds) with traffic enabled on full capacity of 4 instance(s)."
TERMINATION = (
    "Baking for 300 seconds (TerminationWaitInSeconds) with traffic enabled on full capacity of 4 instance(s)."
)
LAUNCH = ("Creating", "Launching 4 instance(s).")
FULL = ("ActivatingTraffic", "Activating traffic on full capacity of 4 instance(s).")
TERMINATE = ("Deleting", "Terminating 4 instance(s).")


def linear_steps() -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    for n in (1, 2, 3):
        bake = f"Baking for 600 seconds (WaitIntervalInSeconds) with traffic enabled on linear step capacity of {n}"
        steps += [
            ("ActivatingTraffic", f"Activating traffic on linear step capacity of {n} instance(s)."),
            ("Baking", f"{bake} instance(s)."),
        ]
    return [*steps, FULL, ("Baking", FINAL)]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            blue_green("ALL_AT_ONCE"),
            [LAUNCH, FULL, ("Baking", FINAL), ("Baking", TERMINATION), TERMINATE],
        ),
        (
            blue_green("CANARY", CanarySize={"Type": "CAPACITY_PERCENT", "Value": 25}),
            [
                LAUNCH,
                ("ActivatingTraffic", "Activating traffic on canary capacity of 1 instance(s)."),
                ("Baking", WAIT_CANARY),
                FULL,
                ("Baking", FINAL),
                ("Baking", TERMINATION),
                TERMINATE,
            ],
        ),
        (
            blue_green("LINEAR", LinearStepSize={"Type": "INSTANCE_COUNT", "Value": 1}),
            [LAUNCH, *linear_steps(), ("Baking", TERMINATION), TERMINATE],
        ),
    ],
    ids=["all-at-once", "canary", "linear"],
)
def test_blue_green_modes_run_their_phases_in_order(blue: Twin, policy: dict[str, Any], expected: list[Any]) -> None:
    shares: dict[str, list[ServingVariant]] = {}
    blue.on_phase(WAIT_CANARY, lambda: shares.setdefault("canary", blue.sim.serving_variants("ep")))
    with blue.clock.activity():
        update(blue, **policy)
        pending = blue.sm.describe_endpoint(EndpointName="ep")
    assert pending["EndpointStatus"] == "Updating"
    assert pending["PendingDeploymentSummary"]["EndpointConfigName"] == "c2"
    assert pending["PendingDeploymentSummary"]["ProductionVariants"][0]["InstanceType"] == "ml.m5.xlarge"
    done = blue.settle()
    assert blue.phases() == expected
    assert (done["EndpointConfigName"], done.get("FailureReason")) == ("c2", None)
    assert done["LastDeploymentConfig"]["BlueGreenUpdatePolicy"] == policy["BlueGreenUpdatePolicy"]
    assert "PendingDeploymentSummary" not in done
    assert [e["detail"]["EndpointStatus"] for e in blue.sink.of_type(STATE)][-2:] == ["UPDATING", "IN_SERVICE"]
    final = blue.sink.of_type(DEPLOYMENT)[-1]["detail"]
    assert (final["EndpointStatus"], final["EndpointConfigName"]) == ("IN_SERVICE", "c2")
    serving = blue.sim.serving_variants("ep")
    assert [(s.endpoint_config_name, s.instance_count, s.weight_share, s.is_new_fleet) for s in serving] == [
        ("c2", 4, 1.0, False)
    ]
    if "CANARY" in str(policy):
        split = {s.endpoint_config_name: (s.weight_share, s.instance_count, s.is_new_fleet) for s in shares["canary"]}
        assert split == {"c1": (0.75, 3, False), "c2": (0.25, 1, True)}
    bakes = [e for e in blue.sink.of_type(DEPLOYMENT) if any(m == FINAL for _, m in statuses(e))]
    after = blue.sink.of_type(DEPLOYMENT)[blue.sink.of_type(DEPLOYMENT).index(bakes[0]) + 1]
    assert event_time(after) - event_time(bakes[0]) == timedelta(seconds=600)


def test_alarm_during_canary_bake_rolls_back_to_the_old_config(blue: Twin) -> None:
    blue.on_phase(WAIT_CANARY, blue.trip)
    update(blue, **blue_green("CANARY", CanarySize={"Type": "INSTANCE_COUNT", "Value": 1}))
    done = blue.settle()
    assert done["EndpointConfigName"] == "c1"  # how the control plane detects SageMaker's auto-rollback
    assert "errors" in done["FailureReason"] and "ALARM" in done["FailureReason"]
    phases = blue.phases()
    assert phases[-2:] == [("Baking", WAIT_CANARY), TERMINATE]
    assert ("ActivatingTraffic", FULL[1]) not in phases
    rollback = [e for e in blue.sink.of_type(DEPLOYMENT) if TERMINATE in statuses(e)][-1]
    bake = next(e for e in blue.sink.of_type(DEPLOYMENT) if ("Baking", WAIT_CANARY) in statuses(e))
    assert timedelta(0) <= event_time(rollback) - event_time(bake) <= timedelta(seconds=15)  # first alarm poll
    assert rollback["detail"]["PendingDeploymentSummary"]["EndpointConfigName"] == "c2"
    assert [(s.endpoint_config_name, s.weight_share) for s in blue.sim.serving_variants("ep")] == [("c1", 1.0)]
    assert blue.sink.of_type(DEPLOYMENT)[-1]["detail"]["EndpointStatus"] == "IN_SERVICE"


def test_unhealthy_new_model_fails_the_update_and_keeps_the_old_config(blue: Twin) -> None:
    blue.sim.set_model_health("m2", healthy=False)
    update(blue, **blue_green("ALL_AT_ONCE"))
    done = blue.settle()
    assert done["EndpointConfigName"] == "c1"
    assert done["FailureReason"] == PING_FAILURE.format(variant="AllTraffic")
    assert blue.phases() == [LAUNCH, TERMINATE]


def test_default_update_without_deployment_config_is_all_at_once_without_bakes(blue: Twin) -> None:
    blue.trip()  # no DeploymentConfig: no alarms are watched
    blue.sm.update_endpoint(EndpointName="ep", EndpointConfigName="c2")
    assert blue.settle()["EndpointConfigName"] == "c2"
    assert blue.phases() == [LAUNCH, FULL, TERMINATE]


def test_rolling_update_replaces_the_fleet_batch_by_batch(blue: Twin) -> None:
    shares: list[list[ServingVariant]] = []
    second_bake = "Baking for 300 seconds (WaitIntervalInSeconds) with traffic enabled on 2 instance(s)."
    blue.on_phase(second_bake, lambda: shares.append(blue.sim.serving_variants("ep")))
    update(blue, **rolling(batch=25))
    assert blue.settle()["EndpointConfigName"] == "c2"
    batches: list[tuple[str, str]] = []
    for n in (1, 2, 3, 4):
        batches += [
            ("Creating", "Launching 1 instance(s)."),
            ("ActivatingTraffic", f"Activating traffic on {n} instance(s)."),
            ("Baking", f"Baking for 300 seconds (WaitIntervalInSeconds) with traffic enabled on {n} instance(s)."),
            ("Deleting", "Terminating 1 instance(s)."),
        ]
    assert blue.phases() == batches
    split = {s.endpoint_config_name: (s.instance_count, round(s.weight_share, 2)) for s in shares[0]}
    assert split == {"c1": (3, 0.6), "c2": (2, 0.4)}


def test_rolling_rollback_in_batches_on_alarm(blue: Twin) -> None:
    blue.on_phase("traffic enabled on 3 instance(s).", blue.trip)
    update(blue, **rolling(batch=25, rollback={"Type": "INSTANCE_COUNT", "Value": 1}))
    done = blue.settle()
    assert (done["EndpointConfigName"], done["ProductionVariants"][0]["CurrentInstanceCount"]) == ("c1", 4)
    assert "ALARM" in done["FailureReason"]
    phases = blue.phases()
    bake = ("Baking", "Baking for 300 seconds (WaitIntervalInSeconds) with traffic enabled on 3 instance(s).")
    launch, terminate = ("Creating", "Launching 1 instance(s)."), ("Deleting", "Terminating 1 instance(s).")
    assert phases[phases.index(bake) + 1 :] == [launch, terminate, launch, terminate, terminate]


def test_rolling_rollback_that_fails_too_leaves_update_rollback_failed(blue: Twin) -> None:
    blue.sim.set_rollback_failure("ep")
    blue.on_phase("traffic enabled on 2 instance(s).", blue.trip)
    update(blue, **rolling(batch=25, rollback={"Type": "INSTANCE_COUNT", "Value": 1}))
    done = blue.settle(wanted=("UpdateRollbackFailed",))
    assert "rollback failed" in done["FailureReason"]
    assert blue.sink.of_type(STATE)[-1]["detail"]["EndpointStatus"] == "UPDATE_ROLLBACK_FAILED"
    assert {s.endpoint_config_name for s in blue.sim.serving_variants("ep")} == {"c1", "c2"}  # mixed configs
    assert sum(s.weight_share for s in blue.sim.serving_variants("ep")) == pytest.approx(1.0)
    blue.sim.set_rollback_failure("ep", fails=False)
    blue.sm.update_endpoint(EndpointName="ep", EndpointConfigName="c1")  # the documented recovery
    recovered = blue.settle()
    assert (recovered["EndpointConfigName"], recovered["ProductionVariants"][0]["CurrentInstanceCount"]) == ("c1", 4)


def test_deployment_past_its_maximum_execution_time_rolls_back(blue: Twin) -> None:
    policy = blue_green("CANARY", wait=3600, termination=0, CanarySize={"Type": "INSTANCE_COUNT", "Value": 1})
    policy["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] = 1800
    update(blue, **policy)
    done = blue.settle()
    assert done["EndpointConfigName"] == "c1"
    assert "MaximumExecutionTimeoutInSeconds (1800)" in done["FailureReason"]
    started, rolled_back = blue.sink.of_type(DEPLOYMENT)[0], blue.sink.of_type(DEPLOYMENT)[-2]
    assert TERMINATE in statuses(rolled_back)
    assert timedelta(seconds=1800) < event_time(rolled_back) - event_time(started) <= timedelta(seconds=1800 + 15)


def test_update_endpoint_refuses_what_sagemaker_refuses(blue: Twin) -> None:
    with blue.clock.activity():
        update(blue, **blue_green("ALL_AT_ONCE"))
        code, message, _ = error_of(lambda: update(blue, "c1"))
    assert message == f'Cannot update in-progress endpoint "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/ep".'
    blue.settle()
    bad = [
        (blue_green("CANARY", CanarySize={"Type": "CAPACITY_PERCENT", "Value": 60}), "exceeds 50%"),
        (blue_green("CANARY"), "CanarySize must be specified"),
        (blue_green("LINEAR", LinearStepSize={"Type": "CAPACITY_PERCENT", "Value": 5}), "between 10% and 50%"),
        (rolling(batch=75), "between 5% and 50%"),
        ({**blue_green("ALL_AT_ONCE"), **rolling()}, "Only one of"),
    ]
    for policy, fragment in bad:
        code, message, _ = error_of(lambda policy=policy: update(blue, "c1", **policy))  # type: ignore[misc]
        assert code == "ValidationException" and fragment in message, message
    code, message, _ = error_of(lambda: update(blue, "nope"))
    assert (
        message == f'Could not find endpoint configuration "arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/nope".'
    )
    blue.sm.create_endpoint_config(
        EndpointConfigName="renamed",
        ProductionVariants=[
            {"VariantName": "Other", "ModelName": "m2", "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}
        ],
    )
    code, message, _ = error_of(lambda: update(blue, "renamed", **blue_green("ALL_AT_ONCE")))
    assert "same variant names" in message


def test_autoscaled_variant_cannot_change_instance_type(blue: Twin) -> None:
    aas = client("application-autoscaling")
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/ep/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=1,
        MaxCapacity=8,
    )
    blue.config("bigger", "m2", "ml.m5.2xlarge")
    _, message, _ = error_of(lambda: update(blue, "bigger"))
    assert "Application Auto Scaling" in message
    update(blue, "c2")  # a model-only change is allowed
    assert blue.settle()["EndpointConfigName"] == "c2"


def test_retained_properties_and_deployment_config(twin: Twin) -> None:
    twin.model("m1")
    twin.model("m2")
    twin.config("c1", "m1")
    twin.config("c2", "m2", count=2)
    twin.alarm()
    canary = blue_green("CANARY", wait=60, termination=0, CanarySize={"Type": "INSTANCE_COUNT", "Value": 1})
    twin.endpoint(DeploymentConfig=canary)
    assert twin.sm.describe_endpoint(EndpointName="ep")["LastDeploymentConfig"] == canary  # stored, not deployed
    desired = {"VariantName": "AllTraffic", "DesiredInstanceCount": 6, "DesiredWeight": 2.0}
    twin.sm.update_endpoint_weights_and_capacities(EndpointName="ep", DesiredWeightsAndCapacities=[desired])
    twin.settle()
    twin.sm.update_endpoint(
        EndpointName="ep", EndpointConfigName="c2", RetainAllVariantProperties=True, RetainDeploymentConfig=True
    )
    done = twin.settle()
    variant = done["ProductionVariants"][0]
    assert (variant["DesiredInstanceCount"], variant["CurrentInstanceCount"], variant["DesiredWeight"]) == (6, 6, 2.0)
    assert ("ActivatingTraffic", "Activating traffic on canary capacity of 1 instance(s).") in twin.phases()
    twin.sm.update_endpoint(
        EndpointName="ep",
        EndpointConfigName="c1",
        RetainAllVariantProperties=True,
        ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredInstanceCount"}],
    )
    variant = twin.settle()["ProductionVariants"][0]
    assert (variant["DesiredInstanceCount"], variant["DesiredWeight"]) == (4, 2.0)


def test_excluded_inf1_endpoint_falls_back_to_all_at_once_without_deployment_events(twin: Twin) -> None:
    twin.model("m1")
    twin.model("m2")
    twin.config("c1", "m1", "ml.inf1.xlarge", 2)
    twin.config("c2", "m2", "ml.inf1.xlarge", 2)
    twin.alarm()
    twin.endpoint()
    update(twin, **blue_green("CANARY", CanarySize={"Type": "INSTANCE_COUNT", "Value": 1}))
    assert twin.settle()["EndpointConfigName"] == "c2"
    assert twin.sink.of_type(DEPLOYMENT) == []
    assert [e["detail"]["EndpointStatus"] for e in twin.sink.of_type(STATE)][-2:] == ["UPDATING", "IN_SERVICE"]


# ---------------------------------------------------------------------------------------------- capacity
def test_weights_and_capacities_go_through_a_short_updating_phase(blue: Twin) -> None:
    with blue.clock.activity():
        blue.sm.update_endpoint_weights_and_capacities(
            EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 6}]
        )
        updating = blue.sm.describe_endpoint(EndpointName="ep")
    variant = updating["ProductionVariants"][0]
    assert updating["EndpointStatus"] == "Updating"
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (4, 6)
    assert variant["VariantStatus"][0]["StatusMessage"] == "Scaling out desired instance count to 6."
    variant = blue.settle()["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (6, 6)
    first, last = blue.sink.of_type(DEPLOYMENT)[-2:]
    assert first["detail"]["ProductionVariants"][0]["VariantStatus"][0]["Status"] == "Updating"
    assert event_time(last) - event_time(first) == timedelta(seconds=60)
    assert blue.sim.serving_variants("ep")[0].instance_count == 6
    blue.sim.apply_capacity("endpoint/ep/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", 2)
    assert blue.settle()["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    _, message, _ = error_of(
        lambda: blue.sm.update_endpoint_weights_and_capacities(
            EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "Nope", "DesiredWeight": 1.0}]
        )
    )
    assert 'The variant name(s) "Nope" is/are not present' in message


def test_a_scale_out_whose_new_instances_fail_their_health_check_is_rolled_back(blue: Twin) -> None:
    blue.sim.set_model_health("m1", healthy=False)
    blue.sm.update_endpoint_weights_and_capacities(
        EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 6}]
    )
    described = blue.settle()
    variant = described["ProductionVariants"][0]
    assert described["EndpointStatus"] == "InService"
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (4, 4)
    assert "did not pass the ping health check" in described["FailureReason"]
    statuses = [e["detail"]["EndpointStatus"] for e in blue.sink.of_type(STATE)]
    assert statuses[-2:] == ["ROLLING_BACK", "IN_SERVICE"]


# ---------------------------------------------------------------------------------------------- inference components
def test_inference_component_copies_provision_and_scale_to_zero(twin: Twin) -> None:
    twin.model("llm")
    twin.config(
        "ic-config",
        None,
        "ml.g5.xlarge",
        1,
        variant={"ManagedInstanceScaling": {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 4}},
        ExecutionRoleArn=ROLE,
    )
    twin.endpoint(config="ic-config")

    def copies(name: str) -> int:
        return int(
            twin.sm.describe_inference_component(InferenceComponentName=name)["RuntimeConfig"]["CurrentCopyCount"]
        )

    spec = {
        "ModelName": "llm",
        "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 1024},
    }
    with twin.clock.activity():
        twin.sm.create_inference_component(
            InferenceComponentName="ic",
            EndpointName="ep",
            VariantName="AllTraffic",
            Specification=spec,
            RuntimeConfig={"CopyCount": 2},
        )
        creating = twin.sm.describe_inference_component(InferenceComponentName="ic")
    assert creating["InferenceComponentStatus"] == "Creating"
    assert creating["RuntimeConfig"] == {"DesiredCopyCount": 2, "CurrentCopyCount": 0}
    twin.run_until(
        lambda: (
            twin.sm.describe_inference_component(InferenceComponentName="ic")["InferenceComponentStatus"] == "InService"
        )
    )
    described = twin.sm.describe_inference_component(InferenceComponentName="ic")
    assert described["RuntimeConfig"]["CurrentCopyCount"] == 2
    assert described["Specification"]["ModelName"] == "llm"
    assert twin.sm.describe_endpoint(EndpointName="ep")["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    [serving] = twin.sim.serving_variants("ep")
    assert (serving.inference_component_name, serving.copy_count, serving.instance_count) == ("ic", 2, 2)
    listed = twin.sm.list_inference_components(EndpointNameEquals="ep")["InferenceComponents"]
    assert [c["InferenceComponentName"] for c in listed] == ["ic"]

    aas = client("application-autoscaling")
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="inference-component/ic",
        ScalableDimension="sagemaker:inference-component:DesiredCopyCount",
        MinCapacity=0,
        MaxCapacity=4,
    )
    aas.put_scaling_policy(
        PolicyName="scale-out-from-zero",
        ServiceNamespace="sagemaker",
        ResourceId="inference-component/ic",
        ScalableDimension="sagemaker:inference-component:DesiredCopyCount",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Maximum",
            "Cooldown": 60,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    twin.sm.update_inference_component_runtime_config(
        InferenceComponentName="ic", DesiredRuntimeConfig={"CopyCount": 0}
    )
    assert twin.sm.describe_inference_component(InferenceComponentName="ic")["InferenceComponentStatus"] == "Updating"
    twin.run_until(
        lambda: twin.sm.describe_endpoint(EndpointName="ep")["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    )
    assert twin.sm.describe_inference_component(InferenceComponentName="ic")["RuntimeConfig"]["CurrentCopyCount"] == 0
    assert twin.status() == "InService"

    twin.sim.apply_capacity("inference-component/ic", "sagemaker:inference-component:DesiredCopyCount", 1)  # from zero
    started = twin.clock.now()
    twin.run_until(lambda: copies("ic") == 1, step=60)
    assert twin.clock.now() - started >= provision_seconds("ml.g5.xlarge")  # an instance had to launch first
    twin.sm.delete_inference_component(InferenceComponentName="ic")
    twin.run_until(lambda: not twin.sm.list_inference_components()["InferenceComponents"])
    code, message, _ = error_of(lambda: twin.sm.describe_inference_component(InferenceComponentName="ic"))
    assert code == "ValidationException" and "Could not find inference component" in message


# ---------------------------------------------------------------------------------------------- experiments
def experiment_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "Name": "shadow-test",
        "Type": "ShadowMode",
        "RoleArn": ROLE,
        "EndpointName": "ep",
        "ModelVariants": [
            {
                "ModelName": name,
                "VariantName": variant,
                "InfrastructureConfig": {
                    "InfrastructureType": "RealTimeInference",
                    "RealTimeInferenceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2},
                },
            }
            for name, variant in (("m1", "Production"), ("m2", "Shadow"))
        ],
        "ShadowModeConfig": {
            "SourceModelVariantName": "Production",
            "ShadowModelVariants": [{"ShadowModelVariantName": "Shadow", "SamplingPercentage": 50}],
        },
    }
    request.update(overrides)
    return request


def test_inference_experiment_lifecycle_and_promotion(blue: Twin) -> None:
    sm = blue.sm
    start = blue.clock.utcnow() + timedelta(hours=1)
    short = {"StartTime": start, "EndTime": start + timedelta(minutes=30)}
    _, message, _ = error_of(lambda: sm.create_inference_experiment(**experiment_request(Schedule=short)))
    assert "between 1 hour and 30 days" in message
    sm.create_inference_experiment(**experiment_request(Schedule={"StartTime": start}))
    seen = [sm.describe_inference_experiment(Name="shadow-test")["Status"]]
    blue.run_until(lambda: sm.describe_inference_experiment(Name="shadow-test")["Status"] == "Created", step=10)
    seen.append("Created")
    code, message, _ = error_of(lambda: sm.create_inference_experiment(**experiment_request(Name="second")))
    assert code == "ResourceInUse"
    sm.start_inference_experiment(Name="shadow-test")  # start early
    seen.append(sm.describe_inference_experiment(Name="shadow-test")["Status"])
    blue.run_until(lambda: sm.describe_inference_experiment(Name="shadow-test")["Status"] == "Running")
    seen.append("Running")
    assert seen == ["Creating", "Created", "Starting", "Running"]
    running = sm.describe_inference_experiment(Name="shadow-test")
    assert {v["Status"] for v in running["ModelVariants"]} == {"InService"}
    assert running["EndpointMetadata"]["EndpointStatus"] == "InService"
    endpoint = sm.describe_endpoint(EndpointName="ep")
    assert endpoint["ShadowProductionVariants"][0]["VariantName"] == "Shadow"
    [mirror] = blue.sim.shadow_variants("ep")
    assert (mirror.model_name, mirror.weight_share, mirror.shadow) == ("m2", 0.5, True)
    sm.update_inference_experiment(
        Name="shadow-test",
        ShadowModeConfig={
            "SourceModelVariantName": "Production",
            "ShadowModelVariants": [{"ShadowModelVariantName": "Shadow", "SamplingPercentage": 100}],
        },
    )
    assert blue.sim.shadow_variants("ep")[0].weight_share == 1.0
    variants = experiment_request()["ModelVariants"]
    _, message, _ = error_of(lambda: sm.update_inference_experiment(Name="shadow-test", ModelVariants=variants))
    assert "cannot be updated after the experiment started" in message
    keep_both = {"Shadow": "Promote", "Production": "Retain"}
    _, message, _ = error_of(lambda: sm.stop_inference_experiment(Name="shadow-test", ModelVariantActions=keep_both))
    assert "requires the action Remove" in message

    sm.stop_inference_experiment(Name="shadow-test", ModelVariantActions={"Shadow": "Promote", "Production": "Remove"})
    assert sm.describe_inference_experiment(Name="shadow-test")["Status"] == "Stopping"
    blue.run_until(lambda: sm.describe_inference_experiment(Name="shadow-test")["Status"] == "Completed")
    done = sm.describe_inference_experiment(Name="shadow-test")
    assert {v["VariantName"]: v["Status"] for v in done["ModelVariants"]} == {
        "Production": "Deleted",
        "Shadow": "InService",
    }
    assert "CompletionTime" in done
    endpoint = sm.describe_endpoint(EndpointName="ep")
    assert [v["VariantName"] for v in endpoint["ProductionVariants"]] == ["Shadow"]
    assert "ShadowProductionVariants" not in endpoint
    assert blue.sim.serving_variants("ep")[0].model_name == "m2"
    assert [e["Name"] for e in sm.list_inference_experiments(StatusEquals="Completed")["InferenceExperiments"]] == [
        "shadow-test"
    ]
    sm.delete_inference_experiment(Name="shadow-test")
    code, _, _ = error_of(lambda: sm.describe_inference_experiment(Name="shadow-test"))
    assert code == "ResourceNotFound"


def test_inference_experiment_reverts_the_endpoint_at_its_scheduled_end(blue: Twin) -> None:
    start = blue.clock.utcnow()
    blue.sm.create_inference_experiment(
        **experiment_request(Schedule={"StartTime": start, "EndTime": start + timedelta(hours=1)})
    )
    blue.run_until(lambda: blue.sm.describe_inference_experiment(Name="shadow-test")["Status"] == "Running")
    assert blue.sm.describe_endpoint(EndpointName="ep")["EndpointConfigName"] != "c1"
    blue.run_until(lambda: blue.sm.describe_inference_experiment(Name="shadow-test")["Status"] == "Completed")
    endpoint = blue.settle()
    assert (endpoint["EndpointConfigName"], "ShadowProductionVariants" in endpoint) == ("c1", False)
    completed = blue.sm.describe_inference_experiment(Name="shadow-test")["CompletionTime"]
    assert completed >= start + timedelta(hours=1)


def test_inference_experiment_eligibility(twin: Twin) -> None:
    twin.model("m1")
    twin.model("m2")
    twin.sm.create_endpoint_config(
        EndpointConfigName="two",
        ProductionVariants=[
            {"VariantName": v, "ModelName": "m1", "InstanceType": "ml.m5.xlarge", "InitialInstanceCount": 1}
            for v in ("A", "B")
        ],
    )
    twin.endpoint(config="two")
    _, message, _ = error_of(lambda: twin.sm.create_inference_experiment(**experiment_request()))
    assert "exactly one production variant" in message
    lax = client("sagemaker", lax=True)
    request = experiment_request()
    request["ShadowModeConfig"]["ShadowModelVariants"][0]["SamplingPercentage"] = 150
    _, message, _ = error_of(lambda: lax.create_inference_experiment(**request))
    assert "Member must have value less than or equal to 100" in message


# ---------------------------------------------------------------------------------------------- async
def test_async_results_and_notifications(twin: Twin) -> None:
    s3 = client("s3")
    sns = client("sns")
    sqs = client("sqs")
    s3.create_bucket(Bucket="async-io")
    s3.put_object(Bucket="async-io", Key="in/1.json", Body=b'{"x": 1}')
    topics = {kind: sns.create_topic(Name=f"async-{kind}")["TopicArn"] for kind in ("success", "error")}
    queue = sqs.create_queue(QueueName="notes")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for topic in topics.values():
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})

    def drain() -> list[dict[str, Any]]:
        got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in got]

    twin.model("m1")
    twin.config(
        "async",
        "m1",
        count=1,
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": "s3://async-io/out",
                "S3FailurePath": "s3://async-io/failed",
                "NotificationConfig": {"SuccessTopic": topics["success"], "ErrorTopic": topics["error"]},
            }
        },
    )
    twin.endpoint(config="async")
    test = {"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"}
    assert drain() == [test, test]  # one per topic, on CreateEndpoint

    runtime = client("sagemaker-runtime")
    answer = runtime.invoke_endpoint_async(
        EndpointName="ep", InputLocation="s3://async-io/in/1.json", ContentType="application/json", InferenceId="req-1"
    )
    assert answer["InferenceId"] == "req-1"
    assert answer["OutputLocation"].startswith("s3://async-io/out/") and answer["OutputLocation"].endswith(".out")
    assert twin.sim.async_backlog("ep").size == 1
    [success] = twin.run_until(drain, step=30)
    assert list(success) == list(ASYNC_SUCCESS_SAMPLE)
    assert (success["invocationStatus"], success["inferenceId"], success["awsRegion"]) == ("Completed", "req-1", REGION)
    assert ISO_MS.match(success["eventTime"]) and ISO_MS.match(success["receivedTime"])
    request = {"contentType": "application/json", "endpointName": "ep", "inputLocation": "s3://async-io/in/1.json"}
    assert success["requestParameters"] == request
    assert success["responseParameters"]["outputLocation"] == answer["OutputLocation"]
    key = answer["OutputLocation"].removeprefix("s3://async-io/")
    assert s3.get_object(Bucket="async-io", Key=key)["Body"].read() == b'{"x": 1}'

    twin.sim.set_model_health("m1", healthy=False)
    answer = runtime.invoke_endpoint_async(EndpointName="ep", InputLocation="s3://async-io/in/1.json")
    [failure] = twin.run_until(drain, step=30)
    assert failure["invocationStatus"] == "Failed"
    assert failure["failureReason"].startswith("ClientError: Received server error (500) from model.")
    assert failure["responseParameters"]["failureLocation"] == answer["FailureLocation"]
    assert set(failure) == set(ASYNC_SUCCESS_SAMPLE) | {"failureReason"}
    body = s3.get_object(Bucket="async-io", Key=answer["FailureLocation"].removeprefix("s3://async-io/"))["Body"].read()
    assert json.loads(body)["message"] == failure["failureReason"]

    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint_async(EndpointName="nope", InputLocation="s3://async-io/in/1.json")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    twin.sim.set_model_health("m1", healthy=True)
    twin.sm.update_endpoint_weights_and_capacities(
        EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}]
    )
    twin.settle()
    runtime.invoke_endpoint_async(EndpointName="ep", InputLocation="s3://async-io/in/1.json")
    twin.clock.sleep(600)
    backlog = twin.sim.async_backlog("ep")
    assert (backlog.queued, backlog.instances) == (1, 0)  # waits for capacity (HasBacklogWithoutCapacity)
    assert backlog.oldest_age_seconds is not None and backlog.oldest_age_seconds >= 600
    assert drain() == [test, test]  # UpdateEndpointWeightsAndCapacities sends test notifications too


# ---------------------------------------------------------------------------------------------- faults
def test_injected_faults_reach_boto3_as_client_errors(twin: Twin) -> None:
    twin.sim.faults = types.SimpleNamespace(
        sagemaker_errors={"DescribeEndpoint": ("ThrottlingException", 1.0), "UpdateEndpoint": ("InternalFailure", 1.0)}
    )
    assert error_of(lambda: twin.sm.describe_endpoint(EndpointName="ep")) == (
        "ThrottlingException",
        "Rate exceeded",
        400,
    )
    code, _, status = error_of(lambda: twin.sm.update_endpoint(EndpointName="ep", EndpointConfigName="c"))
    assert (code, status) == ("InternalFailure", 500)
    twin.sim.faults = types.SimpleNamespace(sagemaker_errors={"ListEndpoints": ("ThrottlingException", 0.5)})
    outcomes = []
    for _ in range(40):
        try:
            twin.sm.list_endpoints()
            outcomes.append(True)
        except ClientError:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35  # seeded: the same split every run
    counted = types.SimpleNamespace(calls=[], sagemaker_error=lambda op: "ServiceUnavailable")
    twin.sim.faults = counted
    assert error_of(twin.sm.list_endpoints)[2] == 503


# ---------------------------------------------------------------------------------------------- event shapes
def same_shape(sample: Any, actual: Any, path: str = "detail") -> None:
    """Same keys, and the same JSON types (int vs float vs str), recursively."""
    if isinstance(sample, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(sample), f"{path}: {sorted(actual)} != {sorted(sample)}"
        for key in sample:
            same_shape(sample[key], actual[key], f"{path}.{key}")
    elif isinstance(sample, list):
        assert isinstance(actual, list) and actual, path
        for item in actual:
            same_shape(sample[0], item, f"{path}[]")
    else:
        assert type(actual) is type(sample), f"{path}: {type(actual).__name__} != {type(sample).__name__}"


def test_events_match_the_published_samples(blue: Twin) -> None:
    update(blue, **blue_green("CANARY", CanarySize={"Type": "INSTANCE_COUNT", "Value": 1}))
    blue.settle()
    for event in blue.sink.of_type(STATE):
        assert (event["source"], event["resources"]) == ("aws.sagemaker", [event["detail"]["EndpointArn"]])
        same_shape(ENDPOINT_SAMPLE_DETAIL, event["detail"])
        assert re.fullmatch(r"[A-Z_]+", event["detail"]["EndpointStatus"])
    canary_bake = next(e for e in blue.sink.of_type(DEPLOYMENT) if ("Baking", WAIT_CANARY) in statuses(e))
    same_shape(DEPLOYMENT_SAMPLE_DETAIL, canary_bake["detail"])
    assert canary_bake["detail"]["EndpointStatus"] == "UPDATING"
    pending = canary_bake["detail"]["PendingDeploymentSummary"]["ProductionVariants"][0]
    assert (pending["CurrentInstanceCount"], pending["DesiredInstanceCount"]) == (4, 4)
    created = blue.sm.describe_endpoint(EndpointName="ep")["CreationTime"]
    assert canary_bake["detail"]["CreationTime"] == round(created.timestamp() * 1000)
    assert blue.sink.of_type(STATE)[0]["detail"]["CreationTime"] == float(round(created.timestamp() * 1000))


def test_the_registry_lists_a_groups_approved_versions_newest_first_with_virtual_times(twin: Twin) -> None:
    """What the delivery reconciliation reads: ListModelPackages by group and approval status, and the versions'
    CreationTime / LastModifiedTime on the twin's clock (moto's own are wall-clock times)."""
    twin.sm.create_model_package_group(ModelPackageGroupName="scorer")
    twin.sm.create_model_package_group(ModelPackageGroupName="other")
    spec = {"Containers": [{"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/s:1"}]}
    arns = []
    for group in ("scorer", "scorer", "scorer", "other"):
        twin.clock.sleep(60)
        arns.append(
            twin.sm.create_model_package(
                ModelPackageGroupName=group, InferenceSpecification=spec, ModelApprovalStatus="PendingManualApproval"
            )["ModelPackageArn"]
        )
    created = twin.clock.now()
    twin.clock.sleep(600)
    for arn in (arns[0], arns[1], arns[3]):
        twin.sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    approved_at = twin.clock.now()

    listed = twin.sm.list_model_packages(
        ModelPackageGroupName="scorer", ModelApprovalStatus="Approved", SortBy="CreationTime", SortOrder="Descending"
    )["ModelPackageSummaryList"]
    described = twin.sm.describe_model_package(ModelPackageName=arns[1])

    assert [(p["ModelPackageGroupName"], p["ModelPackageVersion"]) for p in listed] == [("scorer", 2), ("scorer", 1)]
    assert described["CreationTime"].timestamp() == pytest.approx(created - 120, abs=5)
    assert described["LastModifiedTime"].timestamp() == pytest.approx(approved_at, abs=5)
