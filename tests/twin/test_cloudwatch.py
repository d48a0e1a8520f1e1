"""The twin's traffic, metrics and alarms: names/units/dimensions, the bad-model knob, AWS's alarm rules,
the state-change event against AWS's published sample, SNS and step-scaling actions.

Time moves only when a test says so: a frozen VirtualClock (speed 0) that `advance()` moves, then `tick()`
processes every minute boundary passed, in order. One test runs the clock's own driver instead.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.cloudwatch.models import cloudwatch_backends

from twin.bus import ListSink
from twin.clock import VirtualClock
from twin.cloudwatch import CloudWatchModel, ModelProfile, ServingVariant
from twin.cloudwatch_alarms import java_double

ACCOUNT = "123456789012"
REGION = "us-east-1"
VARIANT_DIM = "sagemaker:variant:DesiredInstanceCount"

# AWS's published sample: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html
PUBLISHED_SAMPLE: dict[str, Any] = {
    "version": "0",
    "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
    "detail-type": "CloudWatch Alarm State Change",
    "source": "aws.cloudwatch",
    "account": "123456789012",
    "time": "2019-10-02T17:04:40Z",
    "region": "us-east-1",
    "resources": ["arn:aws:cloudwatch:us-east-1:123456789012:alarm:ServerCpuTooHigh"],
    "detail": {
        "alarmName": "ServerCpuTooHigh",
        "configuration": {
            "description": "Goes into alarm when server CPU utilization is too high!",
            "metrics": [
                {
                    "id": "30b6c6b2-a864-43a2-4877-c09a1afc3b87",
                    "metricStat": {
                        "metric": {
                            "dimensions": {"InstanceId": "i-12345678901234567"},
                            "name": "CPUUtilization",
                            "namespace": "AWS/EC2",
                        },
                        "period": 300,
                        "stat": "Average",
                    },
                    "returnData": True,
                }
            ],
        },
        "previousState": {
            "reason": "Threshold Crossed: 1 out of the last 1 datapoints [0.0666851903306472 (01/10/19 13:46:00)] was "
            "not greater than the threshold (50.0) (minimum 1 datapoint for ALARM -> OK transition).",
            "reasonData": '{"version":"1.0","queryDate":"2019-10-01T13:56:40.985+0000","startDate":"2019-10-01T13:46:00'
            '.000+0000","statistic":"Average","period":300,"recentDatapoints":[0.0666851903306472],"threshold":50.0}',
            "timestamp": "2019-10-01T13:56:40.987+0000",
            "value": "OK",
        },
        "state": {
            "reason": "Threshold Crossed: 1 out of the last 1 datapoints [99.50160229693434 (02/10/19 16:59:00)] was "
            "greater than the threshold (50.0) (minimum 1 datapoint for OK -> ALARM transition).",
            "reasonData": '{"version":"1.0","queryDate":"2019-10-02T17:04:40.985+0000","startDate":"2019-10-02T16:59:00'
            '.000+0000","statistic":"Average","period":300,"recentDatapoints":[99.50160229693434],"threshold":50.0}',
            "timestamp": "2019-10-02T17:04:40.989+0000",
            "value": "ALARM",
        },
    },
}
REASON = re.compile(
    r"^Threshold Crossed: \d+ out of the last \d+ datapoints \[([-\d.E]+ \(\d\d/\d\d/\d\d \d\d:\d\d:\d\d\)(, )?)*\] "
    r"(was|were) (not )?(greater|less) than (or equal to )?the threshold \([-\d.E]+\) "
    r"\(minimum \d+ datapoints? for (OK -> ALARM|ALARM -> OK) transition\)\.$"
)
_CLIENTS: dict[str, Any] = {}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")


# ---------------------------------------------------------------------------------------------- fixtures
@dataclass
class FakeTopology:
    """Stands in for the SageMaker simulator: fleets per endpoint; apply_capacity edits them."""

    fleets: dict[str, list[ServingVariant]] = field(default_factory=dict)
    applied: list[tuple[str, str, int]] = field(default_factory=list)

    def serving_variants(self, endpoint_name: str) -> Sequence[ServingVariant]:
        return list(self.fleets.get(endpoint_name, []))

    def apply_capacity(self, resource_id: str, dimension: str, capacity: int) -> None:
        self.applied.append((resource_id, dimension, capacity))
        kind, name, *rest = resource_id.split("/")
        for endpoint, fleets in self.fleets.items():
            for i, fleet in enumerate(fleets):
                if kind == "endpoint" and endpoint == name and fleet.variant_name == rest[-1]:
                    fleets[i] = replace(fleet, instance_count=capacity)
                elif kind == "inference-component" and fleet.inference_component_name == name:
                    fleets[i] = replace(fleet, copy_count=capacity)


@dataclass
class Twin:
    clock: VirtualClock
    sink: ListSink
    topology: FakeTopology
    cw: CloudWatchModel

    def run(self, minutes: float) -> None:
        self.clock.advance(minutes * 60)
        self.cw.tick()

    def client(self, service: str) -> Any:
        """Clients are reused across tests (creating one costs more than a test): moto's hook is global."""
        if service not in _CLIENTS:
            _CLIENTS[service] = boto3.client(service, region_name=REGION)  # type: ignore[call-overload]
        return _CLIENTS[service]

    def put(self, name: str, value: float, minute_offset: float = -0.5, namespace: str = "Test") -> None:
        """A datapoint inside the current minute (before the next boundary)."""
        stamp = datetime.fromtimestamp(self.clock.now() + 60 + minute_offset * 60, tz=UTC)
        self.client("cloudwatch").put_metric_data(
            Namespace=namespace, MetricData=[{"MetricName": name, "Value": value, "Timestamp": stamp}]
        )

    def alarm(self, name: str) -> dict[str, Any]:
        alarms: list[dict[str, Any]] = self.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
        return alarms[0]

    def state(self, name: str) -> str:
        return str(self.alarm(name)["StateValue"])

    def events(self) -> list[dict[str, Any]]:
        return self.sink.of_type("CloudWatch Alarm State Change")


@pytest.fixture
def twin() -> Iterator[Twin]:
    with mock_aws():
        clock = VirtualClock(speed=0.0, auto_advance=False)
        sink = ListSink(now=clock.utcnow)
        topology = FakeTopology()
        cw = CloudWatchModel(clock, sink, topology, seed=7)
        cw.install()
        try:
            yield Twin(clock, sink, topology, cw)
        finally:
            cw.uninstall()


def one_variant(
    endpoint: str = "ep", model: str = "model-a", instances: int = 2, itype: str = "ml.m5.xlarge"
) -> list[ServingVariant]:
    return [ServingVariant("AllTraffic", f"{endpoint}-cfg-1", model, itype, instances, 1.0)]


def put_alarm(twin: Twin, name: str, **overrides: Any) -> None:
    params: dict[str, Any] = {
        "AlarmName": name,
        "Namespace": "Test",
        "MetricName": "m",
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 5.0,
        "ComparisonOperator": "GreaterThanThreshold",
    } | overrides
    twin.client("cloudwatch").put_metric_alarm(**{k: v for k, v in params.items() if v is not None})


def dims(endpoint: str, variant: str = "AllTraffic", **extra: str) -> dict[str, str]:
    return {"EndpointName": endpoint, "VariantName": variant} | extra


# ---------------------------------------------------------------------------------------------- metrics
def test_metric_names_units_and_dimensions(twin: Twin) -> None:
    twin.topology.fleets["cpu-ep"] = one_variant("cpu-ep")
    twin.topology.fleets["gpu-ep"] = one_variant("gpu-ep", itype="ml.g5.xlarge")
    twin.cw.set_load_profile("cpu-ep", requests_per_minute=600)
    twin.cw.set_load_profile("gpu-ep", requests_per_minute=60)
    twin.run(2)

    seen = {
        (d.namespace, d.name, tuple(sorted(str(x.name) for x in d.dimensions)), d.unit)
        for d in cloudwatch_backends[ACCOUNT][REGION].metric_data
    }
    variant, fleet = ("EndpointName", "VariantName"), ("EndpointConfigName", "EndpointName", "VariantName")
    for keys in (variant, fleet):
        for name, unit in (
            ("Invocations", "None"),
            ("InvocationsPerInstance", "None"),
            ("ModelLatency", "Microseconds"),
            ("OverheadLatency", "Microseconds"),
            ("Invocation4XXErrors", "None"),
            ("Invocation5XXErrors", "None"),
            ("InvocationModelErrors", "None"),
        ):
            assert ("AWS/SageMaker", name, keys, unit) in seen
    for name in ("CPUUtilization", "MemoryUtilization", "DiskUtilization", "GPUUtilization", "GPUMemoryUtilization"):
        assert ("/aws/sagemaker/Endpoints", name, variant, "Percent") in seen
    gpu_on_cpu = [d for d in cloudwatch_backends[ACCOUNT][REGION].metric_data if d.name == "GPUUtilization"]
    assert {x.value for d in gpu_on_cpu for x in d.dimensions} >= {"gpu-ep"}
    assert "cpu-ep" not in {x.value for d in gpu_on_cpu for x in d.dimensions}

    # The product reads them through the API: exact dimension sets, no double counting of the fleet copies.
    cw = twin.client("cloudwatch")
    window = {"StartTime": datetime(2026, 1, 5, 9, 0, tzinfo=UTC), "EndTime": datetime(2026, 1, 5, 9, 2, tzinfo=UTC)}
    per_variant = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=[{"Name": "EndpointName", "Value": "cpu-ep"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        Period=60,
        Statistics=["Sum"],
        **window,
    )["Datapoints"]
    per_fleet = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=[
            {"Name": "EndpointName", "Value": "cpu-ep"},
            {"Name": "VariantName", "Value": "AllTraffic"},
            {"Name": "EndpointConfigName", "Value": "cpu-ep-cfg-1"},
        ],
        Period=60,
        Statistics=["Sum"],
        **window,
    )["Datapoints"]
    assert len(per_variant) == 2
    assert sorted(p["Sum"] for p in per_variant) == sorted(p["Sum"] for p in per_fleet)
    assert all(450 < p["Sum"] < 750 for p in per_variant)
    latency = twin.cw.metric_series("AWS/SageMaker", "ModelLatency", dims("cpu-ep"), statistic="Average")
    assert all(20_000 < value < 60_000 for _, value in latency)  # p50 25 ms, in microseconds
    per_instance = twin.cw.metric_series("AWS/SageMaker", "InvocationsPerInstance", dims("cpu-ep"))
    invocations = twin.cw.metric_series("AWS/SageMaker", "Invocations", dims("cpu-ep"))
    assert [v * 2 for _, v in per_instance] == pytest.approx([v for _, v in invocations])  # 1/N per request


def test_traffic_is_deterministic_for_a_seed() -> None:
    def series(seed: int) -> list[tuple[datetime, float]]:
        with mock_aws():
            clock = VirtualClock(speed=0.0, auto_advance=False)
            topology = FakeTopology({"ep": one_variant()})
            cw = CloudWatchModel(clock, ListSink(now=clock.utcnow), topology, seed=seed)
            cw.install()
            try:
                cw.set_load_profile("ep")
                clock.advance(300)
                cw.tick()
                return cw.metric_series("AWS/SageMaker", "ModelLatency", dims("ep"), statistic="p99")
            finally:
                cw.uninstall()

    assert series(1) == series(1)
    assert series(1) != series(2)


def test_bad_model_raises_latency_and_5xx_on_its_variant_only(twin: Twin) -> None:
    twin.topology.fleets["ab"] = [
        ServingVariant("A", "ab-cfg", "model-a", "ml.m5.xlarge", 1, 0.5),
        ServingVariant("B", "ab-cfg", "model-b", "ml.m5.xlarge", 1, 0.5),
    ]
    twin.cw.set_load_profile("ab", requests_per_minute=1000)
    twin.cw.set_model_profile("model-b", ModelProfile.bad())
    twin.run(5)

    def total(name: str, variant: str, statistic: str = "Sum", namespace: str = "AWS/SageMaker") -> float:
        return sum(v for _, v in twin.cw.metric_series(namespace, name, dims("ab", variant), statistic=statistic))

    assert total("Invocation5XXErrors", "A") == 0
    assert total("Invocation5XXErrors", "B") > 0.1 * total("Invocations", "B")
    assert total("ModelLatency", "B", "Average") > 4 * total("ModelLatency", "A", "Average")
    assert 0.4 < total("Invocations", "A") / (total("Invocations", "A") + total("Invocations", "B")) < 0.6
    cpu = {v: total("CPUUtilization", v, "Average", "/aws/sagemaker/Endpoints") for v in "AB"}
    assert cpu["B"] > cpu["A"]


def test_no_capacity_invocation_failures_at_zero_copies(twin: Twin) -> None:
    twin.topology.fleets["ic-ep"] = [
        ServingVariant(
            "AllTraffic", "ic-cfg", None, "ml.g5.xlarge", 1, 0.5, inference_component_name="ic-a", copy_count=0
        ),
        ServingVariant(
            "AllTraffic", "ic-cfg", None, "ml.g5.xlarge", 1, 0.5, inference_component_name="ic-b", copy_count=2
        ),
    ]
    twin.cw.set_load_profile("ic-ep", requests_per_minute=200)
    put_alarm(
        twin,
        "ic-a-scale-from-zero",
        Namespace="AWS/SageMaker",
        MetricName="NoCapacityInvocationFailures",
        Dimensions=[{"Name": "InferenceComponentName", "Value": "ic-a"}],
        Statistic="Sum",
        Threshold=1.0,
    )
    twin.run(2)

    failures = twin.cw.metric_series(
        "AWS/SageMaker", "NoCapacityInvocationFailures", {"InferenceComponentName": "ic-a"}
    )
    assert len(failures) == 2 and all(v > 50 for _, v in failures)
    assert (
        twin.cw.metric_series("AWS/SageMaker", "NoCapacityInvocationFailures", {"InferenceComponentName": "ic-b"}) == []
    )
    assert twin.cw.metric_series("AWS/SageMaker", "Invocations", {"InferenceComponentName": "ic-a"}) == []
    per_copy = twin.cw.metric_series("AWS/SageMaker", "InvocationsPerCopy", {"InferenceComponentName": "ic-b"})
    served = twin.cw.metric_series("AWS/SageMaker", "Invocations", {"InferenceComponentName": "ic-b"})
    assert [v * 2 for _, v in per_copy] == pytest.approx([v for _, v in served])
    assert twin.state("ic-a-scale-from-zero") == "ALARM"


# ---------------------------------------------------------------------------------------------- alarm rules
@pytest.mark.parametrize(
    ("operator", "threshold", "expected"),
    [
        ("GreaterThanThreshold", 5.0, "OK"),
        ("GreaterThanThreshold", 4.0, "ALARM"),
        ("GreaterThanOrEqualToThreshold", 5.0, "ALARM"),
        ("GreaterThanOrEqualToThreshold", 6.0, "OK"),
        ("LessThanThreshold", 5.0, "OK"),
        ("LessThanThreshold", 6.0, "ALARM"),
        ("LessThanOrEqualToThreshold", 5.0, "ALARM"),
        ("LessThanOrEqualToThreshold", 4.0, "OK"),
    ],
)
def test_each_comparison_operator(twin: Twin, operator: str, threshold: float, expected: str) -> None:
    put_alarm(twin, "cmp", ComparisonOperator=operator, Threshold=threshold)
    assert twin.state("cmp") == "INSUFFICIENT_DATA"  # as AWS creates alarms (moto would say OK)
    twin.put("m", 5.0)
    twin.run(1)
    assert twin.state("cmp") == expected


@pytest.mark.parametrize(("datapoints_to_alarm", "expected"), [(2, "ALARM"), (3, "OK"), (1, "ALARM")])
def test_m_out_of_n_datapoints(twin: Twin, datapoints_to_alarm: int, expected: str) -> None:
    put_alarm(twin, "m-of-n", EvaluationPeriods=3, DatapointsToAlarm=datapoints_to_alarm)
    for value in (10.0, 0.0, 10.0):  # breaching, fine, breaching
        twin.put("m", value)
        twin.run(1)
    assert twin.state("m-of-n") == expected
    if datapoints_to_alarm == 2:  # (1 of 3 alarms at the first minute already)
        reason = twin.alarm("m-of-n")["StateReason"]
        assert reason.startswith("Threshold Crossed: 2 out of the last 3 datapoints [10.0 (05/01/26 09:02:00), 10.0")
        assert f"(minimum {datapoints_to_alarm} datapoint" in reason


# AWS's two tables ("How alarm state is evaluated when data is missing", awsdocs/amazon-cloudwatch-user-guide,
# doc_source/AlarmThatSendsEmail.md): 5 retrieved points, 0 = fine, X = breaching, - = missing; None = retain.
MISSING_DATA_TABLES = [
    (3, "0 - X - X", ("OK", "OK", "OK", "OK")),
    (3, "0 - - - -", ("OK", "OK", "OK", "OK")),
    (3, "- - - - -", ("INSUFFICIENT_DATA", None, "ALARM", "OK")),
    (3, "0 X X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (3, "- - - - X", ("INSUFFICIENT_DATA", None, "ALARM", "OK")),
    (3, "X - - - -", ("ALARM", None, "ALARM", "OK")),
    (2, "0 - X - X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, "0 0 X 0 X", ("ALARM", "ALARM", "ALARM", "ALARM")),
    (2, "0 - X - -", ("OK", "OK", "ALARM", "OK")),
    (2, "- - - - 0", ("OK", "OK", "ALARM", "OK")),
    (2, "- - - - X", ("INSUFFICIENT_DATA", None, "ALARM", "OK")),
]


@pytest.mark.parametrize(("to_alarm", "points", "expected"), MISSING_DATA_TABLES)
def test_treat_missing_data_follows_the_aws_tables(
    twin: Twin, to_alarm: int, points: str, expected: tuple[str | None, ...]
) -> None:
    for mode, outcome in zip(("missing", "ignore", "breaching", "notBreaching"), expected, strict=True):
        name = f"gaps-{mode}"
        put_alarm(twin, name, EvaluationPeriods=3, DatapointsToAlarm=to_alarm, TreatMissingData=mode, MetricName=name)
        # An ignore alarm starts from INSUFFICIENT_DATA; "retain" must keep exactly that.
        for point in points.split():
            if point != "-":
                twin.put(name, 10.0 if point == "X" else 0.0)
            twin.clock.advance(60)
        twin.cw.tick()
        assert twin.state(name) == (outcome or "INSUFFICIENT_DATA"), (mode, points)


def test_missing_data_reasons(twin: Twin) -> None:
    put_alarm(twin, "dark", EvaluationPeriods=2, TreatMissingData="breaching")
    put_alarm(twin, "quiet", EvaluationPeriods=1, TreatMissingData="notBreaching")
    put_alarm(twin, "unknown", EvaluationPeriods=2, MetricName="later")
    twin.run(1)
    assert twin.alarm("dark")["StateReason"] == (
        "Threshold Crossed: no datapoints were received for 2 periods and 2 missing datapoints were treated as "
        "[Breaching]."
    )
    assert twin.alarm("quiet")["StateReason"] == (
        "Threshold Crossed: no datapoints were received for 1 period and 1 missing datapoint was treated as "
        "[NonBreaching]."
    )
    assert twin.state("unknown") == "INSUFFICIENT_DATA"
    twin.put("later", 0.0)
    twin.run(1)
    assert twin.state("unknown") == "OK"
    twin.put("later", 10.0)
    twin.run(1)
    assert twin.alarm("unknown")["StateReason"] == (
        "Threshold Crossed: 1 out of the last 2 datapoints [0.0 (05/01/26 09:01:00)] was not greater than the "
        "threshold (5.0) (minimum 1 datapoint for ALARM -> OK transition)."
    )
    assert twin.state("unknown") == "OK"
    twin.put("later", 10.0)
    twin.run(1)
    assert twin.state("unknown") == "ALARM"
    assert twin.alarm("unknown")["StateReason"] == (
        "Threshold Crossed: 2 out of the last 2 datapoints [10.0 (05/01/26 09:03:00), 10.0 (05/01/26 09:02:00)] were "
        "greater than the threshold (5.0) (minimum 2 datapoints for OK -> ALARM transition)."
    )


def test_ignore_keeps_ok_until_enough_bad_points(twin: Twin) -> None:
    put_alarm(twin, "ign", EvaluationPeriods=3, TreatMissingData="ignore")
    for _ in range(3):
        twin.put("m", 0.0)
        twin.run(1)
    assert twin.state("ign") == "OK"
    twin.run(5)
    twin.put("m", 10.0)
    twin.run(1)  # - - - - X: too few real points, the state stays
    assert twin.state("ign") == "OK"
    for _ in range(2):
        twin.put("m", 10.0)
        twin.run(1)
    assert twin.state("ign") == "ALARM"


def test_percentile_and_metric_math_alarms(twin: Twin) -> None:
    twin.topology.fleets["ep"] = one_variant()
    twin.cw.set_load_profile("ep", requests_per_minute=600, error_5xx_rate=0.05)
    base = {"Namespace": "AWS/SageMaker", "Dimensions": [{"Name": k, "Value": v} for k, v in dims("ep").items()]}
    put_alarm(
        twin, "p99", MetricName="ModelLatency", Statistic=None, ExtendedStatistic="p99", Threshold=60_000.0, **base
    )
    metric = {"Namespace": "AWS/SageMaker", "Dimensions": base["Dimensions"]}
    cw = twin.client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName="error-rate",
        Metrics=[
            {"Id": "rate", "Expression": "100 * errors / FILL(calls, 1)", "Label": "5xx %", "ReturnData": True},
            {
                "Id": "errors",
                "MetricStat": {"Metric": metric | {"MetricName": "Invocation5XXErrors"}, "Period": 60, "Stat": "Sum"},
                "ReturnData": False,
            },
            {
                "Id": "calls",
                "MetricStat": {"Metric": metric | {"MetricName": "Invocations"}, "Period": 60, "Stat": "Sum"},
                "ReturnData": False,
            },
        ],
        EvaluationPeriods=2,
        Threshold=2.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    twin.run(2)
    assert twin.state("p99") == "ALARM"  # p99 ~90 ms
    assert twin.state("error-rate") == "ALARM"  # ~5% of calls
    math_event = next(e for e in twin.events() if e["detail"]["alarmName"] == "error-rate")
    assert [m["id"] for m in math_event["detail"]["configuration"]["metrics"]] == ["rate", "errors", "calls"]
    assert set(math_event["detail"]["configuration"]["metrics"][0]) == {"expression", "id", "label", "returnData"}
    assert "statistic" not in json.loads(math_event["detail"]["state"]["reasonData"])  # as AWS's math sample


def test_endpoint_config_dimension_alarm_sees_only_the_new_fleet(twin: Twin) -> None:
    twin.topology.fleets["ep"] = [
        ServingVariant("AllTraffic", "cfg-blue", "model-blue", "ml.m5.xlarge", 2, 0.7),
        ServingVariant("AllTraffic", "cfg-green", "model-green", "ml.m5.xlarge", 1, 0.3, is_new_fleet=True),
    ]
    twin.cw.set_load_profile("ep", requests_per_minute=600)
    twin.cw.set_model_profile("model-green", latency_multiplier=8.0)
    for fleet in ("cfg-green", "cfg-blue"):
        put_alarm(
            twin,
            f"latency-{fleet}",
            Namespace="AWS/SageMaker",
            MetricName="ModelLatency",
            Dimensions=[{"Name": k, "Value": v} for k, v in dims("ep", EndpointConfigName=fleet).items()],
            Period=300,
            EvaluationPeriods=2,
            Threshold=100_000.0,  # the guide's 100 ms new-fleet alarm
        )
    twin.run(10)
    assert twin.state("latency-cfg-green") == "ALARM"
    assert twin.state("latency-cfg-blue") == "OK"
    fleet_wide = twin.cw.metric_series("AWS/SageMaker", "Invocations", dims("ep"))
    green = twin.cw.metric_series("AWS/SageMaker", "Invocations", dims("ep", EndpointConfigName="cfg-green"))
    assert 0.2 < sum(v for _, v in green) / sum(v for _, v in fleet_wide) < 0.4


# ---------------------------------------------------------------------------------------------- event shape
def _keys(node: Any) -> Any:
    """The key structure of a JSON value (values dropped, lists reduced to their first element); the metric's
    `dimensions` map is data, not structure."""
    if isinstance(node, dict):
        return {k: "map" if k == "dimensions" else _keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_keys(node[0])] if node else []
    return type(node).__name__


def test_state_change_event_matches_the_published_sample(twin: Twin) -> None:
    put_alarm(
        twin,
        "ServerCpuTooHigh",
        AlarmDescription="Goes into alarm when server CPU utilization is too high!",
        Namespace="/aws/sagemaker/Endpoints",
        MetricName="CPUUtilization",
        Dimensions=[{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        Period=300,
        Threshold=50.0,
    )
    twin.topology.fleets["ep"] = one_variant(instances=1)
    twin.cw.set_load_profile("ep", requests_per_minute=600, cpu_percent_per_rps=10.0)  # ~104% CPU
    twin.run(5)
    twin.cw.set_load_profile("ep", requests_per_minute=0)
    twin.run(5)

    events = twin.events()
    assert [(e["detail"]["previousState"]["value"], e["detail"]["state"]["value"]) for e in events] == [
        ("INSUFFICIENT_DATA", "ALARM"),
        ("ALARM", "OK"),
    ]
    to_ok = events[1]
    assert _keys(to_ok) == _keys(PUBLISHED_SAMPLE)  # every key, at every level, and value types
    assert list(to_ok["detail"]) == list(PUBLISHED_SAMPLE["detail"])
    assert list(to_ok["detail"]["state"]) == list(PUBLISHED_SAMPLE["detail"]["state"])
    assert to_ok["resources"] == [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:ServerCpuTooHigh"]
    assert to_ok["time"] == "2026-01-05T09:08:00Z"  # the 5-minute average fell under 50: 2 busy + 3 idle minutes
    first = events[0]["detail"]
    assert set(first["previousState"]) == {"reason", "timestamp", "value"}  # as the sample after creation
    assert first["previousState"]["reason"] == "Unchecked: Initial alarm creation"
    metric = to_ok["detail"]["configuration"]["metrics"][0]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", metric["id"])
    assert metric["metricStat"] == {
        "metric": {
            "dimensions": {"EndpointName": "ep", "VariantName": "AllTraffic"},
            "name": "CPUUtilization",
            "namespace": "/aws/sagemaker/Endpoints",
        },
        "period": 300,
        "stat": "Average",
    }
    for state in (to_ok["detail"]["state"], to_ok["detail"]["previousState"], first["state"]):
        assert TIMESTAMP.match(state["timestamp"])
        assert REASON.match(state["reason"]), state["reason"]
        data = json.loads(state["reasonData"])
        sample = json.loads(PUBLISHED_SAMPLE["detail"]["state"]["reasonData"])
        assert list(data) == list(sample)
        assert TIMESTAMP.match(data["queryDate"]) and TIMESTAMP.match(data["startDate"])
        assert data["period"] == 300 and data["threshold"] == 50.0 and data["statistic"] == "Average"
    assert first["state"]["reason"].endswith(
        "was greater than the threshold (50.0) (minimum 1 datapoint for OK -> ALARM transition)."
    )
    # The first 5-minute window to hold data ended at 09:01 (the first evaluation), as AWS's startDate shows.
    assert json.loads(first["state"]["reasonData"])["startDate"] == "2026-01-05T08:56:00.000+0000"
    assert to_ok["detail"]["state"]["reason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints [")
    assert (
        "was not greater than the threshold (50.0) (minimum 1 datapoint for ALARM -> OK"
        in to_ok["detail"]["state"]["reason"]
    )

    # DescribeAlarms and DescribeAlarmHistory show the same transitions.
    assert twin.alarm("ServerCpuTooHigh")["StateReason"] == to_ok["detail"]["state"]["reason"]
    history = twin.client("cloudwatch").describe_alarm_history(
        AlarmName="ServerCpuTooHigh", HistoryItemType="StateUpdate"
    )
    summaries = [item["HistorySummary"] for item in history["AlarmHistoryItems"]]
    assert summaries == ["Alarm updated from ALARM to OK", "Alarm updated from INSUFFICIENT_DATA to ALARM"]
    data = json.loads(history["AlarmHistoryItems"][0]["HistoryData"])
    assert data["newState"]["stateValue"] == "OK" and data["oldState"]["stateValue"] == "ALARM"


@pytest.mark.parametrize(
    ("value", "text"),
    [(50, "50.0"), (99.50160229693434, "99.50160229693434"), (100000, "100000.0"), (1e7, "1.0E7"), (0.0001, "1.0E-4")],
)
def test_numbers_are_written_as_java_does(value: float, text: str) -> None:
    assert java_double(value) == text


# ---------------------------------------------------------------------------------------------- actions
def test_sns_action_reaches_a_subscribed_queue(twin: Twin) -> None:
    sns, sqs = twin.client("sns"), twin.client("sqs")
    topic = sns.create_topic(Name="alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="alarm-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    put_alarm(twin, "high", AlarmActions=[topic], OKActions=[topic], DatapointsToAlarm=1, TreatMissingData="missing")
    twin.put("m", 9.0)
    twin.run(1)

    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])
    assert envelope["Subject"] == 'ALARM: "high" in US East (N. Virginia)'
    body = json.loads(envelope["Message"])
    assert list(body) == [
        "AlarmName",
        "AlarmDescription",
        "AWSAccountId",
        "AlarmConfigurationUpdatedTimestamp",
        "NewStateValue",
        "NewStateReason",
        "StateChangeTime",
        "Region",
        "AlarmArn",
        "OldStateValue",
        "OKActions",
        "AlarmActions",
        "InsufficientDataActions",
        "Trigger",
    ]
    assert (body["OldStateValue"], body["NewStateValue"], body["Region"]) == (
        "INSUFFICIENT_DATA",
        "ALARM",
        "US East (N. Virginia)",
    )
    assert REASON.match(body["NewStateReason"]) and TIMESTAMP.match(body["StateChangeTime"])
    assert body["Trigger"] | {"Dimensions": []} == {
        "MetricName": "m",
        "Namespace": "Test",
        "StatisticType": "Statistic",
        "Statistic": "AVERAGE",
        "Unit": None,
        "Dimensions": [],
        "Period": 60,
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 5.0,
        "TreatMissingData": "missing",
        "EvaluateLowSampleCountPercentile": "",
    }
    actions = twin.client("cloudwatch").describe_alarm_history(AlarmName="high", HistoryItemType="Action")
    assert actions["AlarmHistoryItems"][0]["HistorySummary"] == f"Successfully executed action {topic}"


def test_set_alarm_state_runs_actions_and_emits_the_event(twin: Twin) -> None:
    sns, sqs = twin.client("sns"), twin.client("sqs")
    topic = sns.create_topic(Name="alarms")["TopicArn"]
    queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    put_alarm(twin, "forced", AlarmActions=[topic])
    twin.client("cloudwatch").set_alarm_state(AlarmName="forced", StateValue="ALARM", StateReason="testing actions")
    assert [e["detail"]["state"]["reason"] for e in twin.events()] == ["testing actions"]
    body = json.loads(sqs.receive_message(QueueUrl=queue)["Messages"][0]["Body"])
    assert body["NewStateReason"] == "testing actions"


def _scaling_setup(twin: Twin, alarm: dict[str, Any], cooldown: int, max_capacity: int = 3) -> None:
    twin.topology.fleets["async-ep"] = one_variant("async-ep", instances=0)
    aas = twin.client("application-autoscaling")
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/async-ep/variant/AllTraffic",
        ScalableDimension=VARIANT_DIM,
        MinCapacity=0,
        MaxCapacity=max_capacity,
    )
    policy = aas.put_scaling_policy(
        PolicyName="HasBacklogWithoutCapacity-ScalingPolicy",
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/async-ep/variant/AllTraffic",
        ScalableDimension=VARIANT_DIM,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": cooldown,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )["PolicyARN"]
    put_alarm(
        twin,
        "scale-out",
        Namespace="AWS/SageMaker",
        Dimensions=[{"Name": "EndpointName", "Value": "async-ep"}],
        AlarmActions=[policy],
        **alarm,
    )


def test_step_scaling_scales_an_async_variant_from_zero(twin: Twin) -> None:
    # The guide's scale-from-zero pair: HasBacklogWithoutCapacity alarm (2 of 2, >= 1) + step policy +1.
    _scaling_setup(
        twin,
        {
            "MetricName": "HasBacklogWithoutCapacity",
            "Statistic": "Average",
            "EvaluationPeriods": 2,
            "DatapointsToAlarm": 2,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "missing",
        },
        cooldown=300,
    )
    twin.cw.set_load_profile("async-ep", async_inference=True, requests_per_minute=0)
    twin.cw.add_async_backlog("async-ep", 5)
    twin.run(2)

    assert twin.topology.applied == [("endpoint/async-ep/variant/AllTraffic", VARIANT_DIM, 1)]
    (activity,) = twin.cw.scaling_activities()
    assert (activity.from_capacity, activity.to_capacity, activity.status) == (0, 1, "Successful")
    api = twin.client("application-autoscaling").describe_scaling_activities(ServiceNamespace="sagemaker")
    (listed,) = api["ScalingActivities"]
    assert listed["Description"] == "Setting desired instance count to 1."
    assert listed["Cause"].startswith(
        "monitor alarm scale-out in state ALARM triggered policy HasBacklogWithoutCapacity"
    )
    assert listed["StatusCode"] == "Successful"
    twin.run(2)  # the instance drains the queue; the alarm clears
    assert twin.cw.async_backlog("async-ep") == 0
    assert twin.state("scale-out") == "OK"
    backlog = twin.cw.metric_series(
        "AWS/SageMaker", "ApproximateBacklogSize", {"EndpointName": "async-ep"}, statistic="Maximum"
    )
    assert [v for _, v in backlog] == [5.0, 5.0, 0.0, 0.0]


def test_step_scaling_respects_the_cooldown(twin: Twin) -> None:
    _scaling_setup(
        twin,
        {
            "MetricName": "ApproximateBacklogSize",
            "Statistic": "Average",
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        },
        cooldown=300,
    )
    twin.cw.set_load_profile(
        "async-ep", async_inference=True, requests_per_minute=0, async_requests_per_instance_per_minute=1
    )
    twin.cw.add_async_backlog("async-ep", 10_000)  # the alarm stays in ALARM: re-invoked every minute
    twin.run(15)

    changes = [(a.time.timestamp(), a.to_capacity) for a in twin.cw.scaling_activities()]
    assert [capacity for _, capacity in changes] == [1, 2, 3]  # MaxCapacity 3
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(changes)]
    assert gaps == [300.0, 300.0]


def test_target_tracking_moves_capacity_toward_the_target(twin: Twin) -> None:
    twin.topology.fleets["tt"] = one_variant("tt", instances=2)
    aas = twin.client("application-autoscaling")
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/tt/variant/AllTraffic",
        ScalableDimension=VARIANT_DIM,
        MinCapacity=1,
        MaxCapacity=4,
    )
    aas.put_scaling_policy(
        PolicyName="invocations",
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/tt/variant/AllTraffic",
        ScalableDimension=VARIANT_DIM,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 100.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        },
    )
    twin.cw.set_load_profile("tt", requests_per_minute=600)  # 300 per instance: wants 6, max 4
    twin.run(4)
    assert twin.topology.fleets["tt"][0].instance_count == 4
    twin.cw.set_load_profile("tt", requests_per_minute=50)
    twin.run(12)
    assert twin.topology.fleets["tt"][0].instance_count == 1


def test_driven_by_the_clock_thread() -> None:
    """On an auto-advancing clock the model's own timer drives it: an hour of metrics in well under a second."""
    with mock_aws():
        clock = VirtualClock(speed=60.0, auto_advance=True)
        topology = FakeTopology({"ep": one_variant()})
        sink = ListSink(now=clock.utcnow)
        cw = CloudWatchModel(clock, sink, topology, seed=3)
        cw.install()
        cw.set_load_profile("ep", requests_per_minute=120)
        start = clock.now()
        clock.start()
        wall = time.monotonic()
        try:
            clock.sleep(3600)  # the clock jumps from tick to tick while this thread waits
            assert clock.now() >= start + 3600
            assert time.monotonic() - wall < 30  # an hour of real waiting would take 3,600 s
        finally:
            clock.stop()
            cw.uninstall()
        assert clock.errors == []
        assert len(cw.metric_series("AWS/SageMaker", "Invocations", dims("ep"))) >= 60


def test_describe_alarms_applies_every_filter_together(twin: Twin) -> None:
    """CloudWatch ANDs AlarmNames and StateValue; moto alone returned a named alarm whatever its state."""
    put_alarm(twin, "quiet")
    put_alarm(twin, "firing")
    cloudwatch = twin.client("cloudwatch")
    cloudwatch.set_alarm_state(AlarmName="firing", StateValue="ALARM", StateReason="test")

    def names(**filters: Any) -> list[str]:
        return sorted(a["AlarmName"] for a in cloudwatch.describe_alarms(**filters)["MetricAlarms"])

    assert names(AlarmNames=["quiet", "firing"], StateValue="ALARM") == ["firing"]
    assert names(AlarmNames=["quiet"], StateValue="ALARM") == []
    assert names(AlarmNamePrefix="fir", StateValue="OK") == []
    assert names(AlarmNames=["quiet", "firing"]) == ["firing", "quiet"]
    assert names(AlarmNames=["firing"], AlarmTypes=["CompositeAlarm"]) == []
