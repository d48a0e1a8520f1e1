"""What shadow tests add to the table: an operation's working records, and the judge's shadow metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from inferops import analysis
from inferops.errors import NotFound
from inferops.planner import Analysis
from inferops.storage import Repository, WaitPurpose


# ---------------------------------------------------------------------- operation state records
def test_a_working_record_lives_beside_its_operation(ddb_table: Repository) -> None:
    ddb_table.create_operation("shadow_test", "scorer", {}, operation_id="op-1")
    assert ddb_table.get_operation_state("op-1", "shadow") is None
    assert ddb_table.put_operation_state("op-1", "shadow", {"current": 0, "history": [{"at": 1.5, "percent": 10}]})
    assert ddb_table.get_operation_state("op-1", "shadow") == {"current": 0, "history": [{"at": 1.5, "percent": 10}]}
    assert ddb_table.timeline("op-1") == []  # not a timeline entry
    assert ddb_table.get_operation("op-1").kind == "shadow_test"


def test_updates_set_fields_and_append_without_undoing_each_other(ddb_table: Repository) -> None:
    ddb_table.put_operation_state("op-1", "shadow", {"current": 0, "judged": 3})
    assert ddb_table.update_operation_state("op-1", "shadow", fields={"judged": 4})
    assert ddb_table.update_operation_state("op-1", "shadow", append={"history": [{"percent": 50}]})
    assert ddb_table.update_operation_state("op-1", "shadow", append={"history": [{"percent": 70}]}, fields={"x": None})
    assert ddb_table.get_operation_state("op-1", "shadow") == {
        "current": 0,
        "judged": 4,
        "history": [{"percent": 50}, {"percent": 70}],
        "x": None,
    }


def test_the_first_decision_wins(ddb_table: Repository) -> None:
    ddb_table.put_operation_state("op-1", "shadow", {"decision": None})
    assert ddb_table.update_operation_state("op-1", "shadow", fields={"decision": {"by": "a"}}, unless_set="decision")
    assert not ddb_table.update_operation_state(
        "op-1", "shadow", fields={"decision": {"by": "b"}}, unless_set="decision"
    )
    assert ddb_table.get_operation_state("op-1", "shadow") == {"decision": {"by": "a"}}


def test_updating_a_missing_record_is_not_found(ddb_table: Repository) -> None:
    with pytest.raises(NotFound):
        ddb_table.update_operation_state("op-9", "shadow", fields={"a": 1})
    with pytest.raises(NotFound):
        ddb_table.update_operation_state("op-9", "shadow", fields={"a": 1}, unless_set="a")


def test_only_the_first_put_wins_when_asked(ddb_table: Repository) -> None:
    assert ddb_table.put_operation_state("op-1", "decision", {"d": 1}, if_absent=True)
    assert not ddb_table.put_operation_state("op-1", "decision", {"d": 2}, if_absent=True)
    assert ddb_table.get_operation_state("op-1", "decision") == {"d": 1}


def test_a_shadow_watch_is_a_wait_purpose_of_its_own(ddb_table: Repository) -> None:
    ddb_table.put_task_token("scorer", WaitPurpose.SHADOW_WATCH, "t-1", "op-1", ttl_seconds=60)
    assert ddb_table.get_task_token("scorer", WaitPurpose.BAKE) is None
    token = ddb_table.take_task_token("scorer", WaitPurpose.SHADOW_WATCH)
    assert token is not None and (token.purpose, token.token) == ("shadow-watch", "t-1")


# ---------------------------------------------------------------------- shadow metrics
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _put(cw: Any, variant: str, minutes: int, *, latency: float, errors: float, model_errors: float = 0.0) -> None:
    data: list[Any] = []
    for minute in range(minutes):
        at = START + timedelta(minutes=minute)
        dims = [{"Name": "EndpointName", "Value": "scorer"}, {"Name": "VariantName", "Value": variant}]
        data += [
            {"MetricName": "Invocations", "Dimensions": dims, "Timestamp": at, "Value": 200.0},
            {"MetricName": "ModelLatency", "Dimensions": dims, "Timestamp": at, "Value": latency + minute % 3},
            {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Timestamp": at, "Value": errors},
            {"MetricName": "Invocation4XXErrors", "Dimensions": dims, "Timestamp": at, "Value": 0.0},
            {"MetricName": "InvocationModelErrors", "Dimensions": dims, "Timestamp": at, "Value": model_errors},
        ]
        cw.put_metric_data(
            Namespace="/aws/sagemaker/Endpoints",
            MetricData=[
                {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": at, "Value": 40.0 + minute % 2}
            ],
        )
    for start in range(0, len(data), 500):
        cw.put_metric_data(Namespace="AWS/SageMaker", MetricData=data[start : start + 500])


def _verdict(cw: Any, *, utilisation: bool) -> analysis.Verdict:
    return analysis.evaluate_shadow(
        cw,
        Analysis(min_requests=100),
        endpoint="scorer",
        production="AllTraffic",
        shadow="AllTraffic-shadow",
        config="cfg",
        start=START,
        end=START + timedelta(minutes=10),
        utilisation=utilisation,
    )


def test_a_healthy_shadow_passes_and_utilisation_is_judged_where_present() -> None:
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        _put(cw, "AllTraffic", 10, latency=20_000, errors=0)
        _put(cw, "AllTraffic-shadow", 10, latency=20_000, errors=0)
        verdict = _verdict(cw, utilisation=True)
        without = _verdict(cw, utilisation=False)
    names = [m.name for m in verdict.metrics]
    assert verdict.result is analysis.Result.PASS, verdict.reason
    assert names == [
        "ModelLatency",
        "Invocation5XXErrors",
        "InvocationModelErrors",
        "Invocation4XXErrors",
        "CPUUtilization",
    ]
    assert "GPUUtilization" not in names  # no datapoints on a CPU instance: left out, not "no data"
    assert [m.name for m in without.metrics] == names[:-1]


def test_model_errors_fail_the_shadow_on_their_own() -> None:
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        _put(cw, "AllTraffic", 10, latency=20_000, errors=0)
        _put(cw, "AllTraffic-shadow", 10, latency=20_000, errors=0, model_errors=20)
        verdict = _verdict(cw, utilisation=False)
    assert verdict.result is analysis.Result.FAIL
    assert verdict.reason.startswith("critical metric failed: InvocationModelErrors")
