"""The diagnosis rule table, one case per signature, on evidence shaped like what AWS records.

Texts are the shapes SageMaker, its containers and Application Auto Scaling publish (FailureReasons and API
errors as the guide and public bug reports quote them, gunicorn/nginx/MMS log lines, scaling activity
messages), not strings invented to fit the regexes. Where AWS publishes no text (the serverless conversion's
ValidationError, the autoscaled-variant refusal), the case says so and the rule leans on the configs.
"""

from __future__ import annotations

from typing import Any

import pytest

from inferops import diagnosis
from inferops.diagnosis import (
    SIGNATURES,
    AlarmInfo,
    ContainerInfo,
    Evidence,
    FailureObject,
    LogLine,
    MetricValue,
    ScalingInfo,
    VariantInfo,
    analyze,
    report,
)

EP = "fraud-scorer"
T0 = 1_767_603_600_000  # 2026-01-05T09:00:00Z in ms
DIMS = {"EndpointName": EP, "VariantName": "AllTraffic"}


def variant(**extra: Any) -> VariantInfo:
    base: dict[str, Any] = {
        "name": "AllTraffic",
        "config_name": f"{EP}-v1",
        "instance_type": "ml.m5.xlarge",
        "model_name": "fraud-v1",
        "containers": [ContainerInfo(name="primary", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:v1")],
    }
    return VariantInfo(**{**base, **extra})


def evidence(**extra: Any) -> Evidence:
    base: dict[str, Any] = {
        "endpoint": EP,
        "status": "InService",
        "config_name": f"{EP}-v1",
        "variants": [variant()],
        "window_start": T0 / 1000,
        "window_end": T0 / 1000 + 3600,
        "checked": ["DescribeEndpoint"],
    }
    return Evidence(**{**base, **extra})


def log(stream: str, *messages: str) -> list[LogLine]:
    return [LogLine(stream=stream, timestamp_ms=T0 + 1000 * i, message=m) for i, m in enumerate(messages)]


def metric(name: str, value: float, statistic: str = "Sum", unit: str = "None", **dims: str) -> MetricValue:
    namespace = "/aws/sagemaker/Endpoints" if name.endswith("Utilization") else "AWS/SageMaker"
    return MetricValue(
        namespace=namespace, name=name, dimensions={**DIMS, **dims}, statistic=statistic, value=value, unit=unit
    )


PING = (
    "The primary container for production variant AllTraffic did not pass the ping health check. Please check "
    "CloudWatch logs for this endpoint."
)
QUOTA = (
    "Failed to set desired instance count to 110. Reason: The account-level service limit 'ml.c5.xlarge for "
    "endpoint usage' is 1000 Instances, with current utilization of 997 Instances and a request delta of 20 "
    "Instances. Please contact AWS support to request an increase for this limit. (Service: AmazonSageMaker; "
    "Status Code: 400; Error Code: ResourceLimitExceeded; Request ID: 6b4f5e52-0c8a-4c7e-9b5e-1f1f1e2e3e4e)."
)
CUDA_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5.1-gpu-py311-cu124-ubuntu22.04-sagemaker"
)
GUNICORN_CRASH = log(
    "AllTraffic/i-0179208609ff7e488",
    "[2026-01-05 09:00:02 +0000] [13] [ERROR] Exception in worker process",
    "Traceback (most recent call last):",
    "FileNotFoundError: [Errno 2] No such file or directory: '/opt/ml/model/model.joblib'",
    "[2026-01-05 09:00:03 +0000] [9] [ERROR] Reason: Worker failed to boot.",
    "2026/01/05 09:00:07 [error] 11#11: *1 connect() to unix:/tmp/gunicorn.sock failed (111: Connection refused) "
    'while connecting to upstream, client: 10.32.0.2, server: , request: "GET /ping HTTP/1.1"',
    '10.32.0.2 - - [05/Jan/2026:09:00:07 +0000] "GET /ping HTTP/1.1" 502 182 "-" "AHC/2.0"',
)
PIPELINE = variant(
    model_name="pipe",
    containers=[ContainerInfo(name="MyContainerName1"), ContainerInfo(name="MyContainerName2")],
)

# rule -> (evidence, a phrase the cause or fix must carry)
CASES: dict[str, tuple[Evidence, str]] = {
    "update-rollback-failed": (
        evidence(status="UpdateRollbackFailed", failure_reason="Rolling deployment failed."),
        "UpdateEndpoint again",
    ),
    "resource-limit-exceeded": (
        evidence(
            scaling=[
                ScalingInfo(
                    activity_id="a-1",
                    resource_id=f"endpoint/{EP}/variant/AllTraffic",
                    status="Failed",
                    cause="minimum capacity was set to 110",
                    message=QUOTA,
                )
            ]
        ),
        "'ml.c5.xlarge for endpoint usage' is 1000 instance(s), 997 in use, and the change asked for 20 more",
    ),
    "nvml-driver-mismatch": (
        evidence(logs=log("AllTraffic/i-0a", "Failed to initialize NVML: Driver/library version mismatch")),
        "bundles NVIDIA driver packages",
    ),
    "cuda-driver-mismatch": (
        evidence(
            status="Failed",
            failure_reason="CannotStartContainerError. Please ensure the model container for variant AllTraffic "
            "starts correctly when invoked with 'docker run <image> serve'",
            variants=[
                variant(instance_type="ml.g5.xlarge", containers=[ContainerInfo(name="primary", image=CUDA_IMAGE)])
            ],
        ),
        "CUDA 12.4 is a major version newer than the host's CUDA 11.4",
    ),
    "missing-port-label": (
        evidence(
            errors=[
                "ValidationException: Your Ecr Image 123456789012.dkr.ecr.us-east-1.amazonaws.com/feat:1 does not "
                "contain required com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true Docker label(s)."
            ]
        ),
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/feat:1",
    ),
    "ecr-pull-denied": (
        evidence(
            status="Failed",
            failure_reason="Please make sure all images included in the model for the production variant AllTraffic "
            "exist, and that the execution role used to create the model has permissions to access them.",
        ),
        "sagemaker.amazonaws.com",
    ),
    "access-denied-tags": (
        evidence(
            errors=[
                "An error occurred (AccessDeniedException) when calling the CreateEndpoint operation: User: "
                "arn:aws:sts::123456789012:assumed-role/ml/x is not authorized to perform: sagemaker:AddTags on "
                f"resource: arn:aws:sagemaker:us-east-1:123456789012:endpoint/{EP}"
            ]
        ),
        "sagemaker:AddTags",
    ),
    "access-denied": (
        evidence(
            errors=[
                "User: arn:aws:sts::123456789012:assumed-role/ml/x is not authorized to perform: "
                "iam:PassRole on resource: arn:aws:iam::123456789012:role/SageMakerExecution"
            ]
        ),
        "policy simulator",
    ),
    "serverless-conversion": (  # AWS publishes no text for it ("a ValidationError"): the configs tell
        evidence(
            variants=[
                variant(),
                variant(config_name=f"{EP}-serverless", role="target", instance_type=None, serverless=True),
            ],
            errors=["UpdateEndpoint to fraud-scorer-serverless failed: ValidationException: ..."],
        ),
        "new serverless endpoint",
    ),
    "autoscaled-variant-blocks-update": (  # the exact text is unpublished: the twin's wording; the target tells
        evidence(
            variants=[variant(autoscaled=True)],
            errors=[
                'UpdateEndpoint failed: ValidationException: The variant(s) "[AllTraffic]" are registered as scalable '
                "targets with Application Auto Scaling; deregister them before changing their instance type."
            ],
        ),
        "AllTraffic are registered with Application Auto Scaling",
    ),
    "pipeline-payload-too-large": (
        evidence(
            variants=[PIPELINE],
            errors=[
                "An error occurred (ModelError) when calling the InvokeEndpoint operation: Received response from "
                "MyContainerName1 with status code 200. However, the request payload from MyContainerName1 to "
                "MyContainerName2 is 6000000 bytes, which has exceeded the maximum limit of 5 MB. See "
                "https://us-west-2.console.aws.amazon.com/cloudwatch/home?region=us-west-2#logEventViewer:group="
                f"/aws/sagemaker/Endpoints/{EP} in account 123456789012 for more information."
            ],
        ),
        "MyContainerName1 returns 6,000,000 bytes to MyContainerName2",
    ),
    "invocation-timeout": (
        evidence(
            errors=[
                'ModelError: Received server error (0) from primary with message "Your invocation timed out while '
                "waiting for a response from container primary. Review the latency metrics for each container in "
                'Amazon CloudWatch, resolve the issue, and try again."'
            ]
        ),
        "MMS_DEFAULT_RESPONSE_TIMEOUT",
    ),
    "pipeline-model-error": (
        evidence(
            variants=[PIPELINE],
            errors=[
                "Received server error (500) from MyContainerName2 with message \"{'error': 'bad input'}\". See "
                f"https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEventViewer:group=/aws/"
                f"sagemaker/Endpoints/{EP} in account 123456789012 for more information."
            ],
            logs=log("AllTraffic/i-0a/MyContainerName2", "ValueError: could not convert string to float: 'abc'"),
        ),
        "AllTraffic/i-0a/MyContainerName2",
    ),
    "mme-model-not-ready": (
        evidence(
            variants=[variant(containers=[ContainerInfo(name="primary", mode="MultiModel")])],
            errors=[
                "An error occurred (ModelNotReadyException) when calling the InvokeEndpoint operation: Model "
                "fraud-7.tar.gz is not ready yet."
            ],
        ),
        "360 s",
    ),
    "async-expired-requests": (evidence(is_async=True, metrics=[metric("ExpiredRequests", 42)]), "TTL"),
    "async-backlog-without-capacity": (
        evidence(is_async=True, metrics=[metric("HasBacklogWithoutCapacity", 1, "Maximum")]),
        "HasBacklogWithoutCapacity-ScalingPolicy",
    ),
    "async-invocation-failures": (
        evidence(
            is_async=True,
            failure_objects=[FailureObject(uri=f"s3://async/{EP}/failure/4b1c.out", last_modified=None)],
        ),
        "S3FailurePath",
    ),
    "serverless-write-permission": (
        evidence(
            variants=[variant(instance_type=None, serverless=True)],
            logs=log("AllTraffic/i-0a", "PermissionError: [Errno 13] Permission denied: '/opt/ml/model/cache'"),
        ),
        "chmod o+rwX",
    ),
    "jvm-cpu-detection": (
        evidence(logs=log("AllTraffic/i-0a", "active_processor_count: determined by OSContainer: 1")),
        "-XX:-UseContainerSupport",
    ),
    "missing-sagemaker-program": (
        evidence(logs=log("AllTraffic/i-0a", "AttributeError: 'NoneType' object has no attribute 'transform'")),
        "SAGEMAKER_PROGRAM",
    ),
    "ping-health-check": (
        evidence(status="Failed", failure_reason=PING, logs=GUNICORN_CRASH),
        "The primary container of variant AllTraffic did not answer GET /ping",
    ),
    "deployment-execution-timeout": (
        evidence(
            failure_reason="Deployment was rolled back: it did not complete within MaximumExecutionTimeoutInSeconds "
            "(1800)."
        ),
        "28,800 s",
    ),
    "rollback-alarm": (
        evidence(
            failure_reason="Deployment was rolled back: the auto-rollback alarm(s) fraud-latency went into ALARM state "
            "during the baking period.",
            alarms=[AlarmInfo(name="fraud-latency", state="ALARM", reason="Threshold Crossed: 2 datapoints")],
        ),
        "(fraud-latency)",
    ),
    "server-errors": (
        evidence(metrics=[metric("Invocations", 1000), metric("Invocation5XXErrors", 200)]),
        "5 %",
    ),
    "model-errors": (
        evidence(metrics=[metric("Invocations", 1000), metric("InvocationModelErrors", 90)]),
        "non-2XX",
    ),
    "cold-start": (
        evidence(metrics=[metric("OverheadLatency", 4_200_000, "Maximum", "Microseconds")]),
        "provisioned concurrency",
    ),
    "resource-pressure": (
        evidence(metrics=[metric("MemoryUtilization", 97.5, "Maximum", "Percent")]),
        "more memory",
    ),
    "disk-full": (evidence(metrics=[metric("DiskUtilization", 95, "Maximum", "Percent")]), "VolumeSizeInGB"),
    "alarm-in-alarm": (
        evidence(alarms=[AlarmInfo(name="fraud-5xx", state="ALARM", reason="Threshold Crossed")]),
        "fraud-5xx",
    ),
    "endpoint-failed": (
        evidence(status="Failed", failure_reason="Request to service failed. If failure persists after retry, contact"),
        "DeleteEndpoint",
    ),
    "container-errors": (
        evidence(logs=log("AllTraffic/i-0a", "[2026-01-05 09:00:02 +0000] [13] [ERROR] Error handling request /x")),
        "error lines",
    ),
}


def test_every_signature_has_a_recorded_case() -> None:
    assert sorted(CASES) == sorted(s.rule for s in SIGNATURES)
    assert len({s.rule for s in SIGNATURES}) == len(SIGNATURES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_signature_fires_on_its_recorded_evidence(rule: str) -> None:
    ev, phrase = CASES[rule]
    findings = analyze(ev)
    found = {f.rule: f for f in findings}
    assert rule in found, [f.rule for f in findings]
    finding = found[rule]
    assert phrase in finding.cause + " " + finding.fix, (finding.cause, finding.fix)
    assert finding.evidence, "a finding always shows its evidence"
    assert finding.guide and finding.logs_url.startswith("https://console.aws.amazon.com/cloudwatch/home?region=")
    assert "?" not in finding.cause.replace("?region", ""), finding.cause  # every template field was filled


def test_the_table_is_data_cause_fix_and_guide_for_every_row() -> None:
    for sig in SIGNATURES:
        assert sig.cause and sig.fix and sig.guide, sig.rule
        assert sig.text or sig.status or sig.metric or sig.probe, sig.rule
        if sig.text:
            assert sig.pattern is not None


def test_nothing_found_says_what_was_checked() -> None:
    ev = evidence(checked=["DescribeEndpoint fraud-scorer: InService", "CloudWatch metrics: 12 series"], logs=[])
    result = report(ev)
    assert result.findings == []
    assert result.summary.startswith("No known failure signature matched. Checked: DescribeEndpoint fraud-scorer")
    assert "CloudWatch metrics: 12 series" in result.summary


def test_healthy_traffic_is_no_finding() -> None:
    ev = evidence(
        metrics=[
            metric("Invocations", 36000),
            metric("Invocation5XXErrors", 3),
            metric("ModelLatency", 90_000, "Maximum", "Microseconds"),
            metric("OverheadLatency", 9_000, "Maximum", "Microseconds"),
            metric("MemoryUtilization", 35, "Maximum", "Percent"),
        ],
        logs=log(
            "AllTraffic/i-0a", '10.32.0.2 - - [05/Jan/2026:09:00:07 +0000] "GET /ping HTTP/1.1" 200 1 "-" "AHC/2.0"'
        ),
    )
    assert analyze(ev) == []


def test_ping_failure_shows_the_traceback_not_only_the_pings() -> None:
    ev, _ = CASES["ping-health-check"]
    (finding,) = [f for f in analyze(ev) if f.rule == "ping-health-check"]
    texts = [e.text for e in finding.evidence]
    assert texts[0] == PING
    assert any(t.startswith("FileNotFoundError") for t in texts)
    assert sum("GET /ping" in t for t in texts) <= 2  # one copy of what every ping logged
    assert finding.logs_url.endswith(";stream=AllTraffic/i-0179208609ff7e488")
    assert "endpoint-failed" not in {f.rule for f in analyze(ev)}  # superseded by the specific cause


def test_nvml_is_ranked_before_the_ping_failure_it_causes() -> None:
    ev = evidence(
        failure_reason=PING,
        logs=log("AllTraffic/i-0a", "Failed to initialize NVML: Driver/library version mismatch", *[
            line.message for line in GUNICORN_CRASH
        ]),
    )  # fmt: skip
    rules = [f.rule for f in analyze(ev)]
    assert rules.index("nvml-driver-mismatch") < rules.index("ping-health-check")


@pytest.mark.parametrize(
    ("instance_type", "image", "phrase"),
    [
        ("ml.g5.xlarge", CUDA_IMAGE, "major version newer than the host's CUDA 11.4"),
        ("ml.g6.xlarge", CUDA_IMAGE, "minor version newer than the host's CUDA 12.2"),
        ("ml.p5e.48xlarge", CUDA_IMAGE, "not newer than the host's CUDA 12.4"),
        ("ml.g5.xlarge", "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc:latest", "does not say its CUDA"),
        ("ml.c7g.large", "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc:latest", "built for arm64"),
    ],
)
def test_cuda_rule_uses_the_catalog_driver_generation(instance_type: str, image: str, phrase: str) -> None:
    ev = evidence(
        failure_reason="CannotStartContainerError. Please ensure the model container for variant AllTraffic starts "
        "correctly when invoked with 'docker run <image> serve'",
        variants=[variant(instance_type=instance_type, containers=[ContainerInfo(name="primary", image=image)])],
    )
    (finding,) = [f for f in analyze(ev) if f.rule == "cuda-driver-mismatch"]
    assert phrase in finding.cause, finding.cause


def test_cuda_requirement_from_the_container_runtime_log_wins_over_the_tag() -> None:
    ev = evidence(
        variants=[variant(instance_type="ml.g4dn.xlarge")],
        logs=log(
            "AllTraffic/i-0a",
            "nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.1, please update your driver "
            "to a newer version, or use an earlier cuda container: unknown",
        ),
    )
    (finding,) = [f for f in analyze(ev) if f.rule == "cuda-driver-mismatch"]
    assert "needs CUDA 12.1" in finding.cause and "driver 470" in finding.cause
    assert "ml.g6.*" in finding.fix and "ml.p5e" in finding.fix  # hosts whose driver runs CUDA 12


def test_pipeline_payload_from_the_access_log_and_container_latency() -> None:
    ev = evidence(
        variants=[PIPELINE],
        logs=log(
            "AllTraffic/i-0a/MyContainerName1",
            '10.32.0.2 - - [05/Jan/2026:09:00:07 +0000] "POST /invocations HTTP/1.1" 200 6000000 "-" "AHC/2.0"',
        ),
        metrics=[
            metric("ContainerLatency", 38000, "Average", "Microseconds", ContainerName="MyContainerName1"),
            metric("Invocations", 300),
            metric("InvocationModelErrors", 300),
        ],
    )
    findings = analyze(ev)
    assert [f.rule for f in findings] == ["pipeline-payload-too-large"]  # model-errors is the same failure
    texts = [e.text for e in findings[0].evidence]
    assert "MyContainerName1 returns 6,000,000 bytes to MyContainerName2" in findings[0].cause
    assert "no ContainerLatency from MyContainerName2" in texts
    assert any("InvocationModelErrors 300 of 300" in t for t in texts)


@pytest.mark.parametrize(
    ("stream", "size"),
    [
        ("AllTraffic/i-0a/MyContainerName2", 6_000_000),  # the last container answers the caller
        ("AllTraffic/i-0a/MyContainerName1", 5_000_000),  # under the limit
        ("AllTraffic/i-0a", 6_000_000),  # not a pipeline stream
    ],
)
def test_large_answers_that_are_not_an_inter_container_payload(stream: str, size: int) -> None:
    line = f'10.32.0.2 - - [05/Jan/2026:09:00:07 +0000] "POST /invocations HTTP/1.1" 200 {size} "-" "AHC/2.0"'
    ev = evidence(variants=[PIPELINE], logs=log(stream, line))
    assert "pipeline-payload-too-large" not in {f.rule for f in analyze(ev)}


def test_quota_message_inside_a_deployment_error_names_the_quota() -> None:
    error = (
        "UpdateEndpoint to fraud-io-1 failed: ResourceLimitExceeded: The account-level service limit 'ml.g5.xlarge "
        "for endpoint usage' is 4 Instances, with current utilization of 4 Instances and a request delta of 4 "
        "Instances. Please contact AWS support to request an increase for this limit."
    )
    (finding,) = analyze(evidence(errors=[error]))
    assert finding.rule == "resource-limit-exceeded"
    assert "'ml.g5.xlarge for endpoint usage' is 4 instance(s), 4 in use" in finding.cause
    assert "'ml.g5.xlarge for endpoint usage'" in finding.fix


def test_rollback_alarm_shows_both_fleets_metrics() -> None:
    ev = evidence(
        failure_reason="Deployment was rolled back: the auto-rollback alarm(s) fraud-latency went into ALARM state.",
        alarms=[AlarmInfo(name="fraud-latency", state="ALARM", reason="Threshold Crossed")],
        metrics=[
            metric("ModelLatency", 80_000, "Maximum", "Microseconds", EndpointConfigName=f"{EP}-v1"),
            metric("ModelLatency", 700_000, "Maximum", "Microseconds", EndpointConfigName=f"{EP}-v2"),
        ],
    )
    findings = analyze(ev)
    assert [f.rule for f in findings] == ["rollback-alarm"]  # the alarm finding folds into it
    kinds = [e.kind for e in findings[0].evidence]
    assert kinds.count("metric") == 1 and "alarm" in kinds
    assert f"ModelLatency Maximum by endpoint config: {EP}-v1 80 ms; {EP}-v2 700 ms" in [
        e.text for e in findings[0].evidence
    ]


def test_findings_are_ordered_by_severity() -> None:
    ev = evidence(
        status="Failed",
        failure_reason=PING,
        metrics=[metric("MemoryUtilization", 99, "Maximum", "Percent"), metric("Invocations", 100)],
        logs=GUNICORN_CRASH,
    )
    severities = [f.severity for f in analyze(ev)]
    ranks = {"critical": 0, "error": 1, "warning": 2, "info": 3}
    assert severities == sorted(severities, key=ranks.__getitem__)
    assert severities[0] == "critical"


def test_an_endpoint_that_is_gone_is_still_explained_by_its_errors() -> None:
    ev = Evidence(endpoint=EP, found=False, errors=[PING], window_start=0, window_end=600)
    result = report(ev)
    assert result.status is None
    assert [f.rule for f in result.findings] == ["ping-health-check"]


def test_logs_url_points_at_the_endpoint_group_and_stream() -> None:
    url = diagnosis.logs_url("eu-west-1", EP, "AllTraffic/i-0a/primary")
    assert url == (
        "https://console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logEventViewer:"
        f"group=/aws/sagemaker/Endpoints/{EP};stream=AllTraffic/i-0a/primary"
    )
