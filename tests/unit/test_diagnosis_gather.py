"""Evidence gathering (bounded, never failing on what it cannot read), the API route and the flow's attachment.

The fake AWS answers with the response shapes of the real APIs (botocore's output shapes; the scaling activity
is the guide's own example) so the parsing is what runs against AWS.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from api_kit import api_request
from botocore.exceptions import ClientError

from inferops import deployments, diagnosis, rollout
from inferops.errors import InvalidInput, NotFound
from inferops.planner import DeploymentRequest
from inferops.rollout import FlowState, Outcome, Services
from inferops.storage import OperationStatus, Repository
from twin.lambdas import load_function

ROOT = Path(__file__).resolve().parents[2]
EP = "fraud-scorer"
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp()
PING = (
    "The primary container for production variant AllTraffic did not pass the ping health check. Please check "
    "CloudWatch logs for this endpoint."
)
STREAM = "AllTraffic/i-0179208609ff7e488"


def _when(offset: float) -> datetime:
    return datetime.fromtimestamp(NOW + offset, tz=UTC)


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}, operation
    )


class FakeAWS:
    """SageMaker, CloudWatch, Application Auto Scaling, CloudWatch Logs and S3 in one recorded-shape fake."""

    def __init__(self, **overrides: Any) -> None:
        self.meta = SimpleNamespace(region_name="us-east-1")
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.deny: set[str] = set(overrides.pop("deny", ()))
        self.endless_logs = bool(overrides.pop("endless_logs", False))
        self.status = overrides.pop("status", "Failed")
        self.failure_reason = overrides.pop("failure_reason", PING)
        self.async_config = overrides.pop("async_config", None)
        self.alarms = overrides.pop("alarms", [])
        self.activities = overrides.pop("activities", [])
        self.events = overrides.pop(
            "events",
            [
                "[2026-01-05 09:50:02 +0000] [13] [ERROR] Exception in worker process",
                "Traceback (most recent call last):",
                "ModuleNotFoundError: No module named 'xgboost'",
                '10.32.0.2 - - [05/Jan/2026:09:50:07 +0000] "GET /ping HTTP/1.1" 502 182 "-" "AHC/2.0"',
                "[2026-01-05 09:50:01 +0000] [9] [INFO] Starting gunicorn 22.0.0",
            ],
        )
        self.values = overrides.pop("values", {})
        assert not overrides, overrides

    def _call(self, name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((name, kwargs))
        if name in self.deny:
            raise client_error("AccessDeniedException", f"not authorized to perform: {name}", name)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for call, kwargs in self.calls if call == name]

    # SageMaker
    def describe_endpoint(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_endpoint", kw)
        if kw["EndpointName"] != EP:
            arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{kw['EndpointName']}"
            raise client_error("ValidationException", f'Could not find endpoint "{arn}".', "DescribeEndpoint")
        out: dict[str, Any] = {
            "EndpointName": EP,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{EP}",
            "EndpointConfigName": f"{EP}-v1",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "DeployedImages": [
                        {
                            "SpecifiedImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:v1",
                            "ResolvedImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud@sha256:0f1e",
                            "ResolutionTime": _when(-3600),
                        }
                    ],
                    "CurrentWeight": 1.0,
                    "DesiredWeight": 1.0,
                    "CurrentInstanceCount": 2,
                    "DesiredInstanceCount": 2,
                }
            ],
            "EndpointStatus": self.status,
            "CreationTime": _when(-3600),
            "LastModifiedTime": _when(-600),
            "LastDeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "fraud-5xx"}]},
            },
        }
        if self.failure_reason:
            out["FailureReason"] = self.failure_reason
        if self.async_config:
            out["AsyncInferenceConfig"] = self.async_config
        return out

    def describe_endpoint_config(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_endpoint_config", kw)
        return {
            "EndpointConfigName": kw["EndpointConfigName"],
            "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{kw['EndpointConfigName']}",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "fraud-v1",
                    "InitialInstanceCount": 2,
                    "InstanceType": "ml.m5.xlarge",
                    "InitialVariantWeight": 1.0,
                }
            ],
            "CreationTime": _when(-4000),
        }

    def describe_model(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_model", kw)
        return {
            "ModelName": kw["ModelName"],
            "PrimaryContainer": {
                "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:v1",
                "Mode": "SingleModel",
                "ModelDataUrl": "s3://models/fraud/v1.tar.gz",
            },
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/SageMakerExecution",
            "CreationTime": _when(-4000),
            "ModelArn": f"arn:aws:sagemaker:us-east-1:123456789012:model/{kw['ModelName']}",
        }

    # Application Auto Scaling
    def describe_scalable_targets(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_scalable_targets", kw)
        return {"ScalableTargets": []}

    def describe_scaling_activities(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_scaling_activities", kw)
        return {"ScalingActivities": self.activities}

    # CloudWatch
    def get_metric_data(self, **kw: Any) -> dict[str, Any]:
        self._call("get_metric_data", kw)
        results = []
        for query in kw["MetricDataQueries"]:
            stat = query["MetricStat"]
            key = (stat["Metric"]["MetricName"], stat["Stat"])
            if key in self.values:
                results.append(
                    {
                        "Id": query["Id"],
                        "Label": key[0],
                        "Timestamps": [kw["StartTime"]],
                        "Values": [self.values[key]],
                        "StatusCode": "Complete",
                    }
                )
            else:
                results.append(
                    {"Id": query["Id"], "Label": key[0], "Timestamps": [], "Values": [], "StatusCode": "Complete"}
                )
        return {"MetricDataResults": results, "Messages": []}

    def describe_alarms(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_alarms", kw)
        alarms = self.alarms
        if "AlarmNames" in kw:
            alarms = [a for a in alarms if a["AlarmName"] in kw["AlarmNames"]]
        if "StateValue" in kw:
            alarms = [a for a in alarms if a["StateValue"] == kw["StateValue"]]
        return {"MetricAlarms": alarms, "CompositeAlarms": []}

    # CloudWatch Logs
    def describe_log_streams(self, **kw: Any) -> dict[str, Any]:
        self._call("describe_log_streams", kw)
        return {
            "logStreams": [
                {
                    "logStreamName": STREAM,
                    "creationTime": int((NOW - 700) * 1000),
                    "firstEventTimestamp": int((NOW - 600) * 1000),
                    "lastEventTimestamp": int((NOW - 590) * 1000),
                    "lastIngestionTime": int((NOW - 589) * 1000),
                    "uploadSequenceToken": "4959735862839",
                    "arn": f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/{EP}:log-stream:"
                    f"{STREAM}",
                    "storedBytes": 0,
                }
            ]
        }

    def filter_log_events(self, **kw: Any) -> dict[str, Any]:
        self._call("filter_log_events", kw)
        events = [
            {
                "logStreamName": STREAM,
                "timestamp": int((NOW - 600 + i) * 1000),
                "message": message,
                "ingestionTime": int((NOW - 599 + i) * 1000),
                "eventId": f"3791{i:04d}",
            }
            for i, message in enumerate(self.events)
        ]
        page: dict[str, Any] = {
            "events": events,
            "searchedLogStreams": [{"logStreamName": STREAM, "searchedCompletely": True}],
        }
        if self.endless_logs:
            page["nextToken"] = f"token-{len(self.named('filter_log_events'))}"
        return page

    # S3
    def list_objects_v2(self, **kw: Any) -> dict[str, Any]:
        self._call("list_objects_v2", kw)
        return {
            "Contents": [
                {"Key": f"{kw['Prefix']}/4b1c-old.out", "LastModified": _when(-90_000), "Size": 120},
                {"Key": f"{kw['Prefix']}/9e2f.out", "LastModified": _when(-300), "Size": 133},
            ],
            "KeyCount": 2,
        }


def clients(fake: FakeAWS) -> diagnosis.Clients:
    return diagnosis.Clients(sagemaker=fake, cloudwatch=fake, autoscaling=fake, logs=fake, s3=fake)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ gathering
def test_a_failed_endpoint_is_explained_from_its_logs_and_failure_reason() -> None:
    fake = FakeAWS()
    result = diagnosis.diagnose(EP, clients(fake), minutes=60, now=NOW)

    assert result.status == "Failed" and result.failure_reason == PING
    assert result.findings[0].rule == "ping-health-check"
    texts = [e.text for e in result.findings[0].evidence]
    assert "ModuleNotFoundError: No module named 'xgboost'" in texts
    assert all("Starting gunicorn" not in t for t in texts)  # only lines that say something went wrong
    assert result.window.minutes == 60 and result.window.end == "2026-01-05T10:00:00Z"
    assert result.log_group == f"/aws/sagemaker/Endpoints/{EP}"
    assert result.gaps == []
    assert any(
        c.startswith("CloudWatch Logs /aws/sagemaker/Endpoints/fraud-scorer: 1 stream(s)") for c in result.checked
    )


def test_reads_are_bounded_in_calls_and_volume() -> None:
    fake = FakeAWS(endless_logs=True)
    diagnosis.diagnose(EP, clients(fake), minutes=1440, now=NOW)

    (metrics,) = fake.named("get_metric_data")
    assert len(metrics["MetricDataQueries"]) <= 500
    assert {q["MetricStat"]["Period"] for q in metrics["MetricDataQueries"]} == {86400}  # one summary per series
    assert metrics["EndTime"] - metrics["StartTime"] == (_when(0) - _when(-86400))
    streams = fake.named("describe_log_streams")
    assert streams == [
        {"logGroupName": f"/aws/sagemaker/Endpoints/{EP}", "orderBy": "LastEventTime", "descending": True, "limit": 50}
    ]
    searches = fake.named("filter_log_events")
    assert len(searches) == diagnosis.MAX_LOG_PAGES  # a never-ending search stops
    assert all(s["limit"] <= 500 and len(s["logStreamNames"]) <= 50 for s in searches)
    assert searches[0]["startTime"] == int((NOW - 86400) * 1000) and searches[0]["endTime"] == int(NOW * 1000)
    assert searches[0]["filterPattern"].startswith("?Traceback")  # narrowed server-side on AWS
    assert fake.named("describe_scaling_activities")[0]["MaxResults"] == diagnosis.MAX_ACTIVITIES


def test_what_cannot_be_read_is_a_gap_not_an_error() -> None:
    fake = FakeAWS(deny={"filter_log_events", "describe_log_streams", "get_metric_data"}, status="InService")
    fake.failure_reason = None
    result = diagnosis.diagnose(EP, clients(fake), now=NOW)

    assert result.findings == []
    assert any(
        g.startswith("CloudWatch Logs /aws/sagemaker/Endpoints/fraud-scorer: AccessDeniedException")
        for g in result.gaps
    )
    assert any(g.startswith("CloudWatch metrics: AccessDeniedException") for g in result.gaps)
    assert "Could not check: CloudWatch metrics: AccessDeniedException" in result.summary


def test_a_spent_time_budget_skips_the_remaining_reads() -> None:
    fake = FakeAWS()
    result = diagnosis.diagnose(EP, clients(fake), now=NOW, budget_seconds=0)

    assert fake.named("get_metric_data") == [] and fake.named("filter_log_events") == []
    assert any("skipped, the 0 s time budget was used up" in g for g in result.gaps)
    assert result.findings[0].rule == "ping-health-check"  # DescribeEndpoint alone still explains it


def test_unknown_endpoint_is_not_found_and_bad_input_names_the_field() -> None:
    with pytest.raises(NotFound) as missing:
        diagnosis.diagnose("nope", clients(FakeAWS()), now=NOW)
    assert missing.value.field == "name"
    with pytest.raises(InvalidInput) as bad:
        diagnosis.diagnose(EP, clients(FakeAWS()), minutes=2, now=NOW)
    assert bad.value.field == "minutes"
    with pytest.raises(InvalidInput) as bad_name:
        diagnosis.diagnose("under_score", clients(FakeAWS()), now=NOW)
    assert bad_name.value.field == "name"


def test_firing_alarms_are_kept_only_when_they_watch_this_endpoint() -> None:
    def alarm(name: str, endpoint: str) -> dict[str, Any]:
        return {
            "AlarmName": name,
            "StateValue": "ALARM",
            "StateReason": "Threshold Crossed: 1 datapoint [0.2 (05/01/26 09:58:00)] was greater than the threshold "
            "(0.01).",
            "StateUpdatedTimestamp": _when(-120),
            "MetricName": "Invocation5XXErrors",
            "Namespace": "AWS/SageMaker",
            "Dimensions": [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}],
        }

    fake = FakeAWS(
        status="InService", failure_reason=None, alarms=[alarm("fraud-5xx", EP), alarm("other-5xx", "other")]
    )
    result = diagnosis.diagnose(EP, clients(fake), now=NOW)

    (finding,) = [f for f in result.findings if f.rule == "alarm-in-alarm"]
    assert [e.source for e in finding.evidence] == ["fraud-5xx"]


def test_failed_scaling_activities_in_the_guides_shape() -> None:
    activity = {
        "ActivityId": "activity-id",
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{EP}/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "Description": "Setting desired instance count to 110.",
        "Cause": "minimum capacity was set to 110",
        "StartTime": _when(-900),
        "EndTime": _when(-899),
        "StatusCode": "Failed",
        "StatusMessage": "Failed to set desired instance count to 110. Reason: The account-level service limit "
        "'ml.xx.xxxxxx for endpoint usage' is 1000 Instances, with current utilization of 997 Instances and a request "
        "delta of 20 Instances. Please contact AWS support to request an increase for this limit. (Service: "
        "AmazonSageMaker; Status Code: 400; Error Code: ResourceLimitExceeded; Request ID: request-id).",
    }
    old = {**activity, "ActivityId": "older", "StartTime": _when(-90_000)}
    fake = FakeAWS(status="InService", failure_reason=None, activities=[activity, old], events=[])
    result = diagnosis.diagnose(EP, clients(fake), now=NOW)

    (finding,) = result.findings
    assert finding.rule == "resource-limit-exceeded"
    assert "'ml.xx.xxxxxx for endpoint usage' is 1000 instance(s), 997 in use" in finding.cause
    assert [e.source for e in finding.evidence] == [f"endpoint/{EP}/variant/AllTraffic activity activity-id"]


def test_async_endpoint_metrics_and_failure_objects() -> None:
    async_config = {
        "OutputConfig": {
            "S3OutputPath": "s3://async-out/fraud",
            "S3FailurePath": "s3://async-out/fraud-failures",
        }
    }
    fake = FakeAWS(
        status="InService",
        failure_reason=None,
        async_config=async_config,
        events=[],
        values={("ExpiredRequests", "Sum"): 12.0, ("HasBacklogWithoutCapacity", "Maximum"): 1.0},
    )
    result = diagnosis.diagnose(EP, clients(fake), now=NOW)

    rules = [f.rule for f in result.findings]
    assert rules == ["async-expired-requests", "async-backlog-without-capacity", "async-invocation-failures"]
    assert fake.named("list_objects_v2") == [{"Bucket": "async-out", "Prefix": "fraud-failures", "MaxKeys": 50}]
    failures = result.findings[-1].evidence
    assert [e.text for e in failures] == ["s3://async-out/fraud-failures/9e2f.out"]  # the old one is out of the window
    queried = {q["MetricStat"]["Metric"]["MetricName"] for q in fake.named("get_metric_data")[0]["MetricDataQueries"]}
    assert {"ExpiredRequests", "ApproximateBacklogSize", "InvocationFailures"} <= queried
    assert "Invocations" not in queried  # async endpoints do not publish it


def test_for_operation_never_raises() -> None:
    class Broken(FakeAWS):
        def describe_endpoint(self, **kw: Any) -> dict[str, Any]:
            raise RuntimeError("socket closed")

    found = diagnosis.for_operation(EP, clients(Broken()), since=NOW - 600, errors=[PING])
    assert found["unavailable"] is True
    assert found["summary"] == "diagnosis unavailable: RuntimeError: socket closed"


def test_for_operation_on_a_deleted_endpoint_explains_the_reported_error() -> None:
    found = diagnosis.for_operation("gone", clients(FakeAWS()), since=NOW - 600, errors=[PING])
    assert found["status"] is None
    assert [f["rule"] for f in found["findings"]] == ["ping-health-check"]


# ------------------------------------------------------------------------------------------------ the API route
@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TABLE_NAME", "inferops-test")
    monkeypatch.setenv("DEPLOYMENT_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:none")
    module = load_function("api")
    module.include_routes()
    monkeypatch.setattr(sys.modules["diagnosis_routes"], "_clients", lambda: clients(FakeAWS()))
    return module


def call(api: Any, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    status, reply, _ = api_request(api, "GET", path, query=query)
    return status, reply


def test_api_diagnosis_shape(api: Any) -> None:
    status, body = call(api, f"/endpoints/{EP}/diagnosis", {"minutes": "30", "error": PING})
    assert status == 200, body
    assert set(body) == {
        "endpoint", "status", "failure_reason", "generated_at", "window", "summary", "findings", "checked", "gaps",
        "log_group", "logs_url",
    }  # fmt: skip
    assert body["window"]["minutes"] == 30
    finding = body["findings"][0]
    assert set(finding) == {"rule", "title", "severity", "cause", "fix", "guide", "evidence", "logs_url"}
    assert set(finding["evidence"][0]) == {"kind", "source", "text", "at"}
    assert "1 reported error message(s)" in body["checked"]


@pytest.mark.parametrize(
    ("path", "query", "status", "field"),
    [
        ("/endpoints/nope/diagnosis", None, 404, "name"),
        ("/endpoints/bad_name/diagnosis", None, 422, "name"),
        (f"/endpoints/{EP}/diagnosis", {"minutes": "4"}, 422, "minutes"),
        (f"/endpoints/{EP}/diagnosis", {"minutes": "1441"}, 422, "minutes"),
        (f"/endpoints/{EP}/diagnosis", {"minutes": "an hour"}, 422, "minutes"),
        (f"/endpoints/{EP}/diagnosis", {"error": "x" * 2001}, 422, "error"),
    ],
)
def test_api_refusals_name_the_field(
    api: Any, path: str, query: dict[str, str] | None, status: int, field: str
) -> None:
    got, body = call(api, path, query)
    assert (got, body["field"]) == (status, field), body


# ------------------------------------------------------------------------------------------------ the flow's finish
QUOTA = (
    "UpdateEndpoint to fraud-io-1 failed: ResourceLimitExceeded: The account-level service limit 'ml.g5.xlarge for "
    "endpoint usage' is 4 Instances, with current utilization of 4 Instances and a request delta of 4 Instances. "
    "Please contact AWS support to request an increase for this limit."
)


def _finish(repo: Repository, status: OperationStatus, reason: str) -> dict[str, Any]:
    repo.create_operation(rollout.KIND, EP, {}, "op-1")
    repo.transition("op-1", OperationStatus.RUNNING)
    services = Services(
        repo=repo,
        sagemaker=boto3.client("sagemaker", region_name="us-east-1"),
        autoscaling=boto3.client("application-autoscaling", region_name="us-east-1"),
        cloudwatch=boto3.client("cloudwatch", region_name="us-east-1"),
        stepfunctions=boto3.client("stepfunctions", region_name="us-east-1"),
    )
    request = DeploymentRequest.model_validate(
        {
            "endpoint_name": EP,
            "model": {"source": "existing", "model_name": "fraud-v2"},
            "strategy": {"type": "canary", "size": {"value": 50}, "bake_seconds": 600},
        }
    )
    state = FlowState(operation_id="op-1", request=request, outcome=Outcome(status=status, reason=reason))
    rollout.finish(state, services)
    record = repo.get_operation("op-1")
    view = deployments.view(record, repo.timeline("op-1"))
    return view.model_dump(mode="json")


def test_a_failed_deployment_carries_its_diagnosis(ddb_table: Repository) -> None:
    view = _finish(ddb_table, OperationStatus.FAILED, QUOTA)

    assert view["status"] == "FAILED"
    assert view["diagnosis"]["findings"][0]["rule"] == "resource-limit-exceeded"
    assert "diagnosis" not in view["result"]  # shown once, beside the result
    assert [e["kind"] for e in view["timeline"]] == ["diagnosis", "finished"]


def test_a_diagnosis_that_fails_never_fails_the_flow(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(diagnosis, "default_clients", boom)
    view = _finish(ddb_table, OperationStatus.ROLLED_BACK, "SageMaker rolled back")

    assert view["status"] == "ROLLED_BACK"
    assert view["diagnosis"]["summary"] == "diagnosis unavailable: boom"


def test_a_successful_deployment_has_no_diagnosis(ddb_table: Repository) -> None:
    view = _finish(ddb_table, OperationStatus.SUCCEEDED, "fraud-v2 in service")
    assert view["diagnosis"] is None
    assert [e["kind"] for e in view["timeline"]] == ["finished"]
