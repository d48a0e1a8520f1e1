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
from inferops.storage import Repository, TimelineNote, WaitPurpose


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


def test_a_commit_writes_its_fields_and_timeline_entries_all_or_nothing(ddb_table: Repository) -> None:
    ddb_table.create_operation("shadow_test", "scorer", {}, operation_id="op-1")
    ddb_table.append_timeline("op-1", "phase", "phase 1")
    ddb_table.put_operation_state("op-1", "shadow", {"judged": 0})
    notes = [TimelineNote("verdict", f"interval {n}", {"interval": n}) for n in (0, 1)]
    assert ddb_table.commit_operation_state(
        "op-1", "shadow", expect={"judged": 0, "failed": None}, fields={"judged": 2}, notes=notes
    )
    assert not ddb_table.commit_operation_state(
        "op-1", "shadow", expect={"judged": 0}, fields={"judged": 2}, notes=notes
    )
    assert ddb_table.get_operation_state("op-1", "shadow") == {"judged": 2}
    entries = ddb_table.timeline("op-1")
    assert [(e.kind, e.seq) for e in entries] == [("phase", 1), ("verdict", 2), ("verdict", 3)]  # the loser: a gap
    assert [e.data for e in entries[1:]] == [{"interval": 0}, {"interval": 1}]
    assert not ddb_table.commit_operation_state("op-9", "shadow", expect={}, fields={"a": 1})  # no record


def test_the_due_list_holds_what_is_due_until_taken_off(ddb_table: Repository) -> None:
    for op in ("op-1", "op-2"):
        ddb_table.create_operation("shadow_test", "scorer", {}, operation_id=op)
        ddb_table.put_operation_state(op, "shadow", {"op": op})
    assert ddb_table.commit_operation_state("op-1", "shadow", expect={}, due=100.0)
    assert ddb_table.commit_operation_state("op-2", "shadow", expect={}, due=200.0)
    assert ddb_table.due_operation_states("shadow", 99.0) == []
    assert ddb_table.due_operation_states("shadow", 150.0) == [("op-1", {"op": "op-1"})]
    assert [op for op, _ in ddb_table.due_operation_states("shadow", 200.0)] == ["op-1", "op-2"]
    assert ddb_table.commit_operation_state("op-1", "shadow", expect={}, due=None)
    assert not ddb_table.commit_operation_state("op-1", "shadow", expect={}, fields={"x": 1}, indexed=True)
    assert [op for op, _ in ddb_table.due_operation_states("shadow", 1e9)] == ["op-2"]


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
    [[verdict]] = analysis.evaluate_shadows(cw, [_read([(START, START + timedelta(minutes=10))], utilisation)])
    return verdict


def _read(windows: list[tuple[datetime, datetime]], utilisation: bool, shadow: str = "AllTraffic-shadow") -> Any:
    return analysis.ShadowRead(
        spec=Analysis(min_requests=100, min_samples=3),
        endpoint="scorer",
        production="AllTraffic",
        shadow=shadow,
        config="cfg",
        windows=windows,
        utilisation=utilisation,
    )


def test_one_request_judges_each_window_of_each_read_on_its_own_datapoints() -> None:
    halves = [(START, START + timedelta(minutes=5)), (START + timedelta(minutes=5), START + timedelta(minutes=10))]
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        _put(cw, "AllTraffic", 10, latency=20_000, errors=0)
        _put(cw, "AllTraffic-shadow", 10, latency=20_000, errors=0)
        _put(cw, "AllTraffic-broken", 10, latency=20_000, errors=0, model_errors=20)
        together = analysis.collect_shadows(cw, [_read(halves, False), _read(halves, False, "AllTraffic-broken")])
        alone = [analysis.collect_shadows(cw, [_read([half], False)])[0][0] for half in halves]
    assert together[0] == alone  # the same datapoints per window as a request of its own
    [errors] = [m for m in together[1][0] if m.name == "InvocationModelErrors"]
    assert isinstance(errors, analysis.RateMetric) and (errors.canary_events, errors.canary_trials) == (100, 1000)


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
