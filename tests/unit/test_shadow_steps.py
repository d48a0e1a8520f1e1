"""The shadow test flow's steps one by one: DynamoDB in moto, small fakes for SageMaker, CloudWatch and Step
Functions (moto has no inference experiments), and a canned judge where a step's verdict is what is tested."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from inferops import analysis, shadow, shadow_judge
from inferops.endpoints import EndpointSnapshot, ModelCheck, VariantSnapshot
from inferops.shadow import (
    PROGRESS,
    Conclusion,
    Facts,
    FlowState,
    Resources,
    Retryable,
    Services,
    ShadowTestRequest,
    StopRequested,
    Wait,
    Watch,
)
from inferops.storage import OperationStatus, Repository, WaitPurpose

ENDPOINT = "fraud-scorer"
OP = "op-20260105090000-abcd1234"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExperiments"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()
S = OperationStatus


def client_error(code: str, message: str = "boom") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "X")


class SageMaker:
    """Records calls; answers what the steps read (an experiment, the endpoint and its configs)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.experiment: dict[str, Any] | None = None
        self.endpoint: dict[str, Any] = {
            "EndpointStatus": "InService",
            "EndpointConfigName": "cfg-shadow",
            "ProductionVariants": [{"VariantName": "AllTraffic"}],
            "ShadowProductionVariants": [{"VariantName": "AllTraffic-shadow"}],
        }
        self.configs: dict[str, list[str]] = {"cfg-shadow": ["fraud-v1"], "cfg-final": ["fraud-v2"]}
        self.errors: dict[str, ClientError] = {}
        self.meta = type("Meta", (), {"region_name": "us-east-1"})()

    def _call(self, name: str, params: dict[str, Any]) -> None:
        self.calls.append((name, params))
        if name in self.errors:
            raise self.errors.pop(name)

    def describe_inference_experiment(self, **params: Any) -> dict[str, Any]:
        self._call("describe_inference_experiment", params)
        if self.experiment is None:
            raise client_error("ResourceNotFound", "Could not find inference experiment")
        return self.experiment

    def create_inference_experiment(self, **params: Any) -> dict[str, Any]:
        self._call("create_inference_experiment", params)
        return {}

    def update_inference_experiment(self, **params: Any) -> dict[str, Any]:
        self._call("update_inference_experiment", params)
        return {}

    def stop_inference_experiment(self, **params: Any) -> dict[str, Any]:
        self._call("stop_inference_experiment", params)
        return {}

    def describe_endpoint(self, **params: Any) -> dict[str, Any]:
        return self.endpoint

    def describe_endpoint_config(self, EndpointConfigName: str) -> dict[str, Any]:
        return {"ProductionVariants": [{"ModelName": m} for m in self.configs[EndpointConfigName]]}

    def calls_of(self, name: str) -> list[dict[str, Any]]:
        return [p for n, p in self.calls if n == name]


class CloudWatch:
    def __init__(self) -> None:
        self.in_alarm: list[str] = []

    def describe_alarms(self, **params: Any) -> dict[str, Any]:
        return {"MetricAlarms": [{"AlarmName": n} for n in self.in_alarm if n in params["AlarmNames"]]}


class StepFunctions:
    def __init__(self) -> None:
        self.successes: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, str, str]] = []
        self.errors: list[ClientError] = []
        """Raised by the next sends, one each (a throttle, a wait that is over)."""

    def send_task_success(self, *, taskToken: str, output: str) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.successes.append((taskToken, json.loads(output)))

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> None:
        if self.errors:
            raise self.errors.pop(0)
        self.failures.append((taskToken, error, cause))


class Env:
    def __init__(self, repo: Repository) -> None:
        self.clock = [NOW]
        self.repo = Repository(repo.table_name, client=repo.client, clock=lambda: self.clock[0])
        self.sm, self.cw, self.sfn = SageMaker(), CloudWatch(), StepFunctions()
        self.services = Services(
            repo=self.repo, sagemaker=self.sm, autoscaling=None, cloudwatch=self.cw, stepfunctions=self.sfn
        )  # type: ignore[arg-type]
        self.verdicts: list[analysis.Result] = []

        self.reads: list[list[tuple[float, float]]] = []
        self.requests = 0
        self.judge = shadow_judge.Clients(repo=self.repo, cloudwatch=self.cw, stepfunctions=self.sfn)  # type: ignore[arg-type]

    def evaluate(self, cloudwatch: Any, reads: list[analysis.ShadowRead]) -> list[list[analysis.Verdict]]:
        """One GetMetricData request for the reads: a canned verdict per window (Pass unless `verdicts` says)."""
        self.requests += 1
        out = []
        for read in reads:
            self.reads.append([(start.timestamp(), end.timestamp()) for start, end in read.windows])
            results = [self.verdicts.pop(0) if self.verdicts else analysis.Result.PASS for _ in read.windows]
            out.append([self.canned(result) for result in results])
        return out

    @staticmethod
    def canned(result: analysis.Result) -> analysis.Verdict:
        score = 100.0 if result is analysis.Result.PASS else 40.0
        return analysis.Verdict(result=result, score=score, reason=f"canned {result.value}", metrics=[])

    def progress(self) -> dict[str, Any]:
        return self.repo.get_operation_state(OP, PROGRESS) or {}

    def verdicts_recorded(self) -> list[tuple[str, int | None, str]]:
        return [
            (e.data["scope"], e.data["interval"], e.data["result"])
            for e in self.repo.timeline(OP)
            if e.kind == "verdict"
        ]

    def due(self, now: float) -> list[str]:
        return [op for op, _ in self.repo.due_operation_states(PROGRESS, now)]


@pytest.fixture
def env(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> Env:
    the_env = Env(ddb_table)
    monkeypatch.setattr(shadow_judge, "evaluate", the_env.evaluate)
    return the_env


def request(**extra: Any) -> ShadowTestRequest:
    return ShadowTestRequest.model_validate(
        {
            "endpoint_name": ENDPOINT,
            "model": {"source": "existing", "model_name": "fraud-v2"},
            "role_arn": ROLE,
            "duration_hours": 24,
            "guard_alarms": ["guard"],
            **extra,
        }
    )


def state(env: Env, **extra: Any) -> FlowState:
    req = request(**extra)
    snapshot = EndpointSnapshot(
        name=ENDPOINT,
        status="InService",
        config_name="fraud-v1",
        variants=(
            VariantSnapshot(name="AllTraffic", model_name="fraud-v1", instance_type="ml.g5.xlarge", instance_count=2),
        ),
    )
    result = shadow.check(req, Facts(endpoint=snapshot, candidate=ModelCheck(found=True)), now=NOW, operation_id=OP)
    assert result.plan is not None, result.violations
    env.repo.create_operation(
        shadow.KIND, ENDPOINT, req.model_dump(mode="json"), OP, plan=result.plan.model_dump(mode="json")
    )
    env.repo.transition(OP, S.RUNNING)
    resources = Resources(
        experiment_name=result.plan.experiment_name,
        model_name="fraud-v2",
        production_variant="AllTraffic",
        shadow_variant="AllTraffic-shadow",
        alarms=["guard"],
        start_at=NOW,
        end_at=NOW + 86400,
    )
    return FlowState(operation_id=OP, request=req, plan=result.plan, resources=resources)


def running(env: Env, the_state: FlowState, phases: list[tuple[int, float, float]], current: int = 0) -> FlowState:
    """The test's progress record, as `check_experiment` and `start_phase` write it, the test on the judge's due
    list, and the flow watching phase `current`."""
    progress = {
        "experiment": the_state.resources.experiment_name if the_state.resources else "",
        "running_at": NOW,
        "end_at": NOW + 86400,
        "analysis_end_at": NOW + 86400 - 300,
        "interval_seconds": 900,
        "phases": [
            {"index": i, "sampling_percent": p, "starts_at": s, "ends_at": e} for i, (p, s, e) in enumerate(phases)
        ],
        "subject": {
            "endpoint": ENDPOINT,
            "production": "AllTraffic",
            "shadow": "AllTraffic-shadow",
            "config": "fraud-v1",
            "alarms": ["guard"],
            "analysis": the_state.request.analysis.model_dump(mode="json"),
        },
        "started": current + 1,
        "current": current,
        "judged": 0,
        "failing": 0,
        "failed": None,
        "phases_judged": current,
        "sampling_history": [{"at": phases[0][1], "percent": phases[0][0], "by": "flow"}]
        + [{"at": s, "percent": p, "by": "flow"} for p, s, _ in phases[1 : current + 1]],
        "decision": None,
    }
    env.repo.put_operation_state(OP, PROGRESS, progress)
    env.repo.commit_operation_state(OP, PROGRESS, expect={}, due=shadow_judge.next_due(progress))
    env.sm.experiment = {"Status": "Running", "Schedule": {"EndTime": datetime.fromtimestamp(NOW + 86400, UTC)}}
    heartbeat = math.ceil(phases[current][2] - env.clock[0])
    return the_state.model_copy(update={"watch": Watch(phase=current, heartbeat_seconds=heartbeat)})


# ---------------------------------------------------------------------- create
def test_create_sends_the_experiment_with_the_exact_schedule_and_watches_the_guards(env: Env) -> None:
    the_state = state(
        env, data_capture={"destination": "s3://capture/fraud", "json_content_types": ["application/json"]}
    )
    the_state = the_state.model_copy(update={"resources": None})
    out = shadow.create_experiment(the_state, env.services)

    [params] = env.sm.calls_of("create_inference_experiment")
    schedule = params["Schedule"]
    assert (schedule["EndTime"] - schedule["StartTime"]).total_seconds() == 24 * 3600
    assert schedule["StartTime"].timestamp() == NOW + shadow.START_SLACK_SECONDS
    assert [v["VariantName"] for v in params["ModelVariants"]] == ["AllTraffic", "AllTraffic-shadow"]
    assert params["ModelVariants"][1]["InfrastructureConfig"]["RealTimeInferenceConfig"] == {
        "InstanceType": "ml.g5.xlarge",
        "InstanceCount": 2,
    }
    assert params["ShadowModeConfig"]["ShadowModelVariants"] == [
        {"ShadowModelVariantName": "AllTraffic-shadow", "SamplingPercentage": 100}
    ]
    assert params["DataStorageConfig"] == {
        "Destination": "s3://capture/fraud",
        "ContentType": {"JsonContentTypes": ["application/json"]},
    }
    assert (out.next, out.wait and out.wait.purpose) == ("await", "start")
    assert [w.operation_id for w in env.repo.alarm_watches("guard")] == [OP]


def test_create_retried_after_the_experiment_exists_carries_on(env: Env) -> None:
    the_state = state(env)
    name = the_state.resources.experiment_name if the_state.resources else ""
    env.sm.errors["create_inference_experiment"] = client_error(
        "ResourceInUse", f'Inference experiment "{name}" already exists.'
    )
    assert shadow.create_experiment(the_state, env.services).next == "await"


# ---------------------------------------------------------------------- waiting for SageMaker
def test_running_schedules_the_phases_and_records_the_progress(env: Env) -> None:
    the_state = state(env, sampling_steps=[10, 100]).model_copy(
        update={"wait": Wait(purpose="start", started_at=NOW, heartbeat_seconds=600)}
    )
    env.sm.experiment = {"Status": "Running", "Schedule": {"EndTime": datetime.fromtimestamp(NOW + 86400, UTC)}}
    out = shadow.check_experiment(the_state, env.services)

    progress = env.repo.get_operation_state(OP, PROGRESS)
    assert progress is not None
    assert (out.next, out.watch and out.watch.phase) == ("phase", 0)
    assert [p["sampling_percent"] for p in progress["phases"]] == [10, 100]
    assert progress["phases"][-1]["ends_at"] == NOW + 86400 - shadow.DECISION_MARGIN_SECONDS
    assert progress["sampling_history"] == [{"at": NOW, "percent": 10, "by": "flow"}]


def test_a_discard_before_the_experiment_runs_cancels_it(env: Env) -> None:
    the_state = state(env).model_copy(update={"wait": Wait(purpose="start", started_at=NOW, heartbeat_seconds=600)})
    env.sm.experiment = {"Status": "Created"}
    env.repo.request_stop(OP, kind="abort", reason="wrong model", by="alice")
    out = shadow.check_experiment(the_state, env.services)
    assert out.next == "discard" and out.conclusion is not None
    assert (out.conclusion.status, out.conclusion.early) == (S.ABORTED, True)


def test_an_experiment_sagemaker_cancelled_fails_the_test(env: Env) -> None:
    the_state = state(env).model_copy(update={"wait": Wait(purpose="start", started_at=NOW, heartbeat_seconds=600)})
    env.sm.experiment = {"Status": "Cancelled", "StatusReason": "capacity"}
    out = shadow.check_experiment(the_state, env.services)
    assert out.outcome is not None and (out.outcome.status, out.next) == (S.FAILED, "finish")
    assert "capacity" in out.outcome.reason


def test_a_stopped_promotion_is_checked_on_the_endpoint(env: Env) -> None:
    the_state = state(env).model_copy(
        update={
            "wait": Wait(purpose="stop", started_at=NOW, heartbeat_seconds=600),
            "conclusion": Conclusion(decision="promote", status=S.SUCCEEDED, reason="final verdict Pass"),
        }
    )
    env.sm.experiment = {"Status": "Completed"}
    env.sm.endpoint = {
        "EndpointStatus": "InService",
        "EndpointConfigName": "cfg-final",
        "ProductionVariants": [{"VariantName": "AllTraffic-shadow"}],
    }
    out = shadow.check_experiment(the_state, env.services)
    assert out.outcome is not None and (out.outcome.status, out.outcome.decision) == (S.SUCCEEDED, "promoted")

    env.sm.endpoint = {
        **env.sm.endpoint,
        "EndpointConfigName": "cfg-shadow",
        "ProductionVariants": [{"VariantName": "AllTraffic"}],
    }
    out = shadow.check_experiment(the_state, env.services)
    assert out.outcome is not None and out.outcome.status is S.FAILED  # Completed, yet production still serves


# ---------------------------------------------------------------------- the watch (one parked task per phase)
def test_the_watch_parks_the_token_until_the_phase_ends(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.clock[0] = NOW + 10
    shadow.watch(the_state, env.services, "tok-1")
    token = env.repo.get_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH)
    assert token is not None and token.token == "tok-1"
    assert the_state.watch is not None and the_state.watch.heartbeat_seconds == 3600  # the phase's end
    assert env.sfn.successes == env.sfn.failures == [] and env.reads == []  # the watch judges nothing itself


def test_a_watch_entered_after_its_phase_ended_ends_at_once(env: Env) -> None:
    the_state = running(env, state(env), [(10, NOW, NOW + 900), (100, NOW + 900, NOW + 1800)])
    env.clock[0] = NOW + 900
    shadow.watch(the_state, env.services, "tok-1")
    assert [(t, o["phase"]) for t, o in env.sfn.successes] == [("tok-1", "done")]


def test_a_failing_verdict_recorded_before_the_watch_parked_fails_it(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.repo.update_operation_state(OP, PROGRESS, fields={"failed": "interval verdict Fail at 100 % sampling: x"})
    shadow.watch(the_state, env.services, "tok-1")
    assert [(t, e) for t, e, _ in env.sfn.failures] == [("tok-1", "AnalysisFailed")]


@pytest.mark.parametrize(("kind", "error"), [("abort", "StopRequested"), ("alarm", "AlarmTriggered")])
def test_a_recorded_stop_fails_the_wait(env: Env, kind: str, error: str) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.repo.request_stop(OP, kind=kind, reason="stop it", by="x")  # type: ignore[arg-type]
    shadow.watch(the_state, env.services, "tok-1")
    assert env.sfn.failures == [("tok-1", error, "stop it")]


def test_an_alarm_whose_event_was_lost_is_found_at_the_wake(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.cw.in_alarm = ["guard"]
    shadow.watch(the_state, env.services, "tok-1")
    assert [(t, e) for t, e, _ in env.sfn.failures] == [("tok-1", "AlarmTriggered")]
    stop = env.repo.get_operation(OP).stop_request
    assert stop is not None and stop["kind"] == "alarm"


def test_a_promotion_recorded_meanwhile_resumes_the_flow(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.repo.update_operation_state(OP, PROGRESS, fields={"decision": {"decision": "promote", "by": "bob"}})
    shadow.watch(the_state, env.services, "tok-1")
    assert env.sfn.successes == [("tok-1", {"decision": "promote", "by": "bob"})]


def test_a_token_someone_else_took_is_theirs_to_deliver(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.repo.request_stop(OP, kind="abort", reason="stop", by="x")
    original = env.repo.take_task_token
    env.repo.take_task_token = lambda endpoint, purpose: None  # type: ignore[method-assign]  # the API got it first
    shadow.watch(the_state, env.services, "tok-1")
    env.repo.take_task_token = original  # type: ignore[method-assign]
    assert env.sfn.failures == []


# ---------------------------------------------------------------------- the scheduled judge
def park(env: Env, token: str = "tok-1") -> None:
    """The flow's watch, parked for the phase."""
    env.repo.put_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH, token, OP, 7200)


def test_the_judge_judges_each_ended_interval_once_on_its_own_window(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    park(env)
    assert env.due(NOW + 899) == []  # nothing due before the first interval's metrics are published
    env.clock[0] = NOW + 2 * 900  # two intervals over
    done = shadow_judge.run(env.judge, env.clock[0])
    assert [(d.action, d.recorded) for d in done.decisions] == [("judged", 2)] and done.failures == {}
    assert env.reads == [[(NOW, NOW + 900 - 60), (NOW + 900 - 60, NOW + 1800 - 60)]]  # both in one request
    assert env.verdicts_recorded() == [("interval", 0, "Pass"), ("interval", 1, "Pass")]
    assert env.progress()["judged"] == 2
    assert env.due(env.clock[0]) == [] and env.due(NOW + 3 * 900) == [OP]  # listed again for the third interval
    assert shadow_judge.run(env.judge, env.clock[0]).decisions == []  # a repeated schedule: nothing twice
    assert env.verdicts_recorded() == [("interval", 0, "Pass"), ("interval", 1, "Pass")]
    assert env.sfn.successes == env.sfn.failures == []  # passing verdicts leave the flow parked


def test_one_request_reads_the_due_intervals_of_several_tests(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    other = "op-20260105090000-ffff0000"
    env.repo.create_operation(shadow.KIND, "other-endpoint", {}, other)
    progress = {**env.progress(), "subject": {**env.progress()["subject"], "endpoint": "other-endpoint"}}
    env.repo.put_operation_state(other, PROGRESS, progress)
    env.repo.commit_operation_state(other, PROGRESS, expect={}, due=shadow_judge.next_due(progress))
    env.clock[0] = NOW + 900
    done = shadow_judge.run(env.judge, env.clock[0])
    assert sorted((d.operation_id, d.recorded) for d in done.decisions) == [(OP, 1), (other, 1)]
    assert env.requests == 1 and len(env.reads) == 2  # both tests' windows in one GetMetricData request


def test_concurrent_runs_record_each_interval_once(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    env.clock[0] = NOW + 900
    [(operation, listed)] = env.repo.due_operation_states(PROGRESS, env.clock[0])  # both runs read the same list
    [first], _ = shadow_judge.judge_tests([(operation, listed)], env.judge, env.clock[0], set())
    [second], _ = shadow_judge.judge_tests([(operation, listed)], env.judge, env.clock[0], set())
    assert (first.action, second.action) == ("judged", "raced")
    assert env.verdicts_recorded() == [("interval", 0, "Pass")]


def test_a_run_that_crashes_before_its_commit_leaves_the_interval_to_the_next(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    env.clock[0] = NOW + 900
    commit = env.repo.commit_operation_state

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise client_error("InternalServerError")

    monkeypatch.setattr(env.repo, "commit_operation_state", crash)
    assert list(shadow_judge.run(env.judge, env.clock[0]).failures) == [OP]
    monkeypatch.setattr(env.repo, "commit_operation_state", commit)
    assert env.verdicts_recorded() == [] and env.due(env.clock[0]) == [OP]
    shadow_judge.run(env.judge, env.clock[0] + 300)
    assert env.verdicts_recorded() == [("interval", 0, "Pass")]


def test_a_failing_verdict_confirmed_by_the_next_fails_the_parked_watch(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    park(env)
    env.verdicts = [analysis.Result.FAIL, analysis.Result.PASS, analysis.Result.FAIL, analysis.Result.FAIL]
    env.clock[0] = NOW + 2 * 900
    shadow_judge.run(env.judge, env.clock[0])  # Fail, then Pass: chance, not a reason to stop
    assert env.sfn.failures == [] and env.progress()["failing"] == 0
    env.clock[0] = NOW + 4 * 900
    [decision] = shadow_judge.run(env.judge, env.clock[0]).decisions  # Fail, Fail
    [(token, error, cause)] = env.sfn.failures
    assert (token, error) == ("tok-1", "AnalysisFailed") and "(2 intervals in a row)" in cause
    assert (decision.action, decision.watch) == ("failed", "delivered")
    assert env.progress()["failed"] == cause and env.due(env.clock[0] + 86400) == []  # off the list
    assert env.repo.get_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH) is None


def test_an_error_rate_above_its_ceiling_stops_the_test_at_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    park(env)
    errors = analysis.MetricVerdict(
        name="Invocation5XXErrors", outcome=analysis.Outcome.FAIL, reason="30 %", canary=0.3, critical=True
    )
    failing = analysis.Verdict(result=analysis.Result.FAIL, score=0.0, reason="5xx", metrics=[errors])
    monkeypatch.setattr(shadow_judge, "evaluate", lambda *a, **k: [[failing]])
    env.clock[0] = NOW + 900
    shadow_judge.run(env.judge, env.clock[0])
    assert [(t, e) for t, e, _ in env.sfn.failures] == [("tok-1", "AnalysisFailed")]


def test_a_failing_verdict_while_no_watch_is_parked_waits_for_the_flow(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    env.verdicts = [analysis.Result.FAIL, analysis.Result.FAIL]
    env.clock[0] = NOW + 2 * 900
    [decision] = shadow_judge.run(env.judge, env.clock[0]).decisions  # the flow is between two steps
    assert (decision.action, decision.watch) == ("failed", "not parked")
    shadow.watch(the_state, env.services, "tok-2")  # its watch parks, then reads the record
    assert [(t, e) for t, e, _ in env.sfn.failures] == [("tok-2", "AnalysisFailed")]


def test_a_watch_whose_wait_is_over_or_throttled_is_told_once(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    park(env)
    env.verdicts = [analysis.Result.FAIL, analysis.Result.FAIL]
    env.sfn.errors = [client_error("ThrottlingException")]
    env.clock[0] = NOW + 2 * 900
    assert list(shadow_judge.run(env.judge, env.clock[0]).failures) == [OP]  # the token is put back, still listed
    assert env.repo.get_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH) is not None
    env.sfn.errors = [client_error("TaskTimedOut")]  # meanwhile the heartbeat ended the wait: the flow reads it
    [decision] = shadow_judge.run(env.judge, env.clock[0] + 300).decisions
    assert (decision.action, decision.watch) == ("failed", "gone (TaskTimedOut)")
    assert len(env.verdicts_recorded()) == 2 and env.due(env.clock[0] + 86400) == []


def test_a_guard_alarm_found_by_the_judge_stops_the_test(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    park(env)
    env.cw.in_alarm = ["guard"]
    env.clock[0] = NOW + 900
    [decision] = shadow_judge.run(env.judge, env.clock[0]).decisions
    assert decision.action == "stopped" and [(t, e) for t, e, _ in env.sfn.failures] == [("tok-1", "AlarmTriggered")]
    stop = env.repo.get_operation(OP).stop_request
    assert stop is not None and stop["kind"] == "alarm"


def test_the_judge_ends_a_watch_still_parked_after_its_phase(env: Env) -> None:
    running(env, state(env), [(10, NOW, NOW + 900), (100, NOW + 900, NOW + 1800)])
    park(env)
    env.clock[0] = NOW + 900  # the interval is judged; the heartbeat should end the watch now
    assert [d.action for d in shadow_judge.run(env.judge, env.clock[0]).decisions] == ["judged"]
    assert env.due(env.clock[0]) == [] and env.sfn.successes == []
    env.clock[0] = NOW + 900 + shadow_judge.PHASE_END_GRACE_SECONDS  # it did not (the phase was shortened)
    [decision] = shadow_judge.run(env.judge, env.clock[0]).decisions
    assert (decision.action, decision.watch) == ("phase_over", "delivered")
    assert [(t, o["phase"]) for t, o in env.sfn.successes] == [("tok-1", "done")]


def test_a_phase_made_longer_is_listed_again_at_its_next_interval(env: Env) -> None:
    running(env, state(env), [(100, NOW, NOW + 900)])
    env.clock[0] = NOW + 900
    shadow_judge.run(env.judge, env.clock[0])  # its only interval: listed for the phase's end (plus a grace)
    longer = [{**env.progress()["phases"][0], "ends_at": NOW + 3600}]
    env.repo.update_operation_state(OP, PROGRESS, fields={"phases": longer})  # PATCH end_time
    env.clock[0] = NOW + 900 + shadow_judge.PHASE_END_GRACE_SECONDS
    assert [d.action for d in shadow_judge.run(env.judge, env.clock[0]).decisions] == ["waiting"]
    assert env.due(env.clock[0]) == [] and env.due(NOW + 1800) == [OP] and env.sfn.successes == []


def test_a_test_that_ended_is_not_judged(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    done = the_state.model_copy(update={"outcome": shadow.Outcome(status=S.ABORTED, reason="discarded")})
    shadow.finish(done, env.services)
    env.clock[0] = NOW + 4 * 900
    assert env.due(env.clock[0]) == [] and shadow_judge.run(env.judge, env.clock[0]).decisions == []
    assert env.verdicts_recorded() == []


def test_the_phase_end_judges_what_the_judge_left_and_the_phase_once(env: Env) -> None:
    the_state = running(
        env, state(env, sampling_steps=[10, 100]), [(10, NOW, NOW + 4 * 900), (100, NOW + 3600, NOW + 7200)]
    )
    env.clock[0] = NOW + 2 * 900
    shadow_judge.run(env.judge, env.clock[0])  # the judge took the first two intervals
    env.clock[0] = NOW + 4 * 900  # the heartbeat: the phase's end
    out = shadow.phase_end(the_state, env.services)
    assert (out.next, out.watch and out.watch.phase) == ("phase", 1)
    assert env.verdicts_recorded() == [
        ("interval", 0, "Pass"),
        ("interval", 1, "Pass"),
        ("interval", 2, "Pass"),
        ("interval", 3, "Pass"),
        ("phase", None, "Pass"),
    ]
    assert env.due(env.clock[0] + 86400) == []  # off the judge's list until the next phase starts
    again = shadow.phase_end(the_state, env.services)  # a retried step: the phase's verdict is not judged twice
    assert again.next == "phase" and len(env.verdicts_recorded()) == 5 and again.verdicts == out.verdicts


def test_the_phase_end_stops_on_a_failing_verdict_the_judge_recorded(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 4 * 900)])
    env.verdicts = [analysis.Result.FAIL, analysis.Result.FAIL]
    env.clock[0] = NOW + 2 * 900
    shadow_judge.run(env.judge, env.clock[0])
    out = shadow.phase_end(the_state, env.services)  # e.g. the heartbeat fired as the judge failed the watch
    assert out.next == "discard" and out.conclusion is not None
    assert (out.conclusion.status, out.conclusion.early) == (S.FAILED, True)
    assert out.conclusion.reason.startswith("stopped early: interval verdict Fail")


def test_a_phase_end_far_behind_the_judge_catches_up_in_steps(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shadow, "CATCH_UP_INTERVALS", 3)
    phases = [(10, NOW, NOW + 4 * 900), (100, NOW + 3600, NOW + 7200)]
    the_state = running(env, state(env, sampling_steps=[10, 100]), phases)
    env.clock[0] = NOW + 4 * 900  # the judge never ran (its schedule was off)
    out = shadow.phase_end(the_state, env.services)
    assert out.next == "phase_end" and [i for _, i, _ in env.verdicts_recorded()] == [0, 1, 2]
    out = shadow.phase_end(out, env.services)
    assert out.next == "phase" and [i for _, i, _ in env.verdicts_recorded()] == [0, 1, 2, 3, None]


def test_a_phase_made_longer_is_watched_on(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 7200)])
    env.clock[0] = NOW + 3600  # the heartbeat of the phase's first end; a PATCH moved it an hour later
    out = shadow.phase_end(the_state, env.services)
    assert (out.next, out.watch and out.watch.heartbeat_seconds) == ("watch", 3600)
    assert env.verdicts_recorded() == []


# ---------------------------------------------------------------------- the end of a phase
@pytest.mark.parametrize(
    ("action", "result", "on_marginal", "expected"),
    [
        ("promote", analysis.Result.PASS, "rollback", ("promote", S.SUCCEEDED)),
        ("discard", analysis.Result.PASS, "rollback", ("discard", S.SUCCEEDED)),
        ("approval", analysis.Result.PASS, "rollback", ("approve", None)),
        ("promote", analysis.Result.MARGINAL, "pause", ("approve", None)),
        ("promote", analysis.Result.MARGINAL, "continue", ("promote", S.SUCCEEDED)),
        ("promote", analysis.Result.MARGINAL, "rollback", ("discard", S.FAILED)),
        ("promote", analysis.Result.INCONCLUSIVE, "rollback", ("discard", S.FAILED)),
        ("promote", analysis.Result.FAIL, "continue", ("discard", S.FAILED)),
    ],
)
def test_the_final_verdict_and_the_action_decide(
    env: Env, action: str, result: analysis.Result, on_marginal: str, expected: tuple[str, OperationStatus | None]
) -> None:
    the_state = running(env, state(env, action=action, analysis={"on_marginal": on_marginal}), [(100, NOW, NOW + 3600)])
    env.verdicts = [analysis.Result.PASS] * 4 + [result]  # the phase's four intervals, then the phase
    env.clock[0] = NOW + 3600
    out = shadow.phase_end(the_state, env.services)
    assert (out.next, out.conclusion.status if out.conclusion else None) == expected
    assert [v["scope"] for v in out.verdicts] == ["phase"]
    if out.next == "approve":  # the experiment is extended for the approval window
        [update] = env.sm.calls_of("update_inference_experiment")
        assert update["Schedule"]["EndTime"].timestamp() == NOW + 3600 + 24 * 3600 + shadow.DECISION_MARGIN_SECONDS
        assert out.approval_timeout_seconds == 24 * 3600


def test_an_earlier_phase_passing_goes_to_the_next_and_failing_stops_early(env: Env) -> None:
    phases = [(10, NOW, NOW + 900), (100, NOW + 900, NOW + 1800)]
    the_state = running(env, state(env, sampling_steps=[10, 100], action="promote"), phases)
    env.clock[0] = NOW + 900
    out = shadow.phase_end(the_state, env.services)
    assert (out.next, out.watch and out.watch.phase) == ("phase", 1)
    the_state = running(env, the_state, phases)  # the same phase again, with a failing phase verdict
    env.verdicts = [analysis.Result.PASS, analysis.Result.FAIL]
    out = shadow.phase_end(the_state, env.services)
    assert out.next == "discard" and out.conclusion is not None and out.conclusion.early


def test_promotion_is_refused_without_100_percent_in_the_last_phase(env: Env) -> None:
    the_state = running(env, state(env, action="promote"), [(100, NOW, NOW + 3600)])
    env.repo.update_operation_state(
        OP, PROGRESS, append={"sampling_history": [{"at": NOW + 60, "percent": 40, "by": "ops"}]}
    )
    env.clock[0] = NOW + 3600
    out = shadow.phase_end(the_state, env.services)
    assert out.next == "discard" and out.conclusion is not None
    assert "promotion requires the last phase at 100 % sampling" in out.conclusion.reason


def test_start_phase_sets_the_sampling_and_refuses_a_stopped_test(env: Env) -> None:
    phases = [(10, NOW, NOW + 900), (100, NOW + 900, NOW + 1800)]
    the_state = running(env, state(env, sampling_steps=[10, 100]), phases)
    env.clock[0] = NOW + 950
    out = shadow.start_phase(the_state.model_copy(update={"watch": Watch(phase=1, wake_seconds=900)}), env.services)
    [update] = env.sm.calls_of("update_inference_experiment")
    assert update["ShadowModeConfig"]["ShadowModelVariants"][0]["SamplingPercentage"] == 100
    progress = env.repo.get_operation_state(OP, PROGRESS) or {}
    assert [h["percent"] for h in progress["sampling_history"]] == [10, 100]
    assert progress["phases"][1]["starts_at"] == NOW + 950 and out.next == "watch"
    env.repo.request_stop(OP, kind="abort", reason="enough", by="x")
    with pytest.raises(StopRequested):
        shadow.start_phase(out, env.services)


# ---------------------------------------------------------------------- endings
@pytest.mark.parametrize(
    ("error", "stop", "status", "early"),
    [
        ("AnalysisFailed", None, S.FAILED, True),
        ("AlarmTriggered", "alarm", S.FAILED, True),
        ("StopRequested", "abort", S.ABORTED, True),
        ("States.Timeout", None, S.ABORTED, False),
    ],
)
def test_discard_after_a_catch_says_why(
    env: Env, error: str, stop: str | None, status: OperationStatus, early: bool
) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    if stop:
        env.repo.request_stop(OP, kind=stop, reason="because", by="x")  # type: ignore[arg-type]
    out = shadow.discard(the_state.model_copy(update={"error": {"Error": error, "Cause": "c"}}), env.services)
    assert out.conclusion is not None and (out.conclusion.status, out.conclusion.early) == (status, early)
    [stopped] = env.sm.calls_of("stop_inference_experiment")
    assert stopped["ModelVariantActions"] == {"AllTraffic-shadow": "Remove", "AllTraffic": "Retain"}
    assert stopped["DesiredState"] == ("Cancelled" if early else "Completed")
    assert (out.next, out.wait and out.wait.purpose, out.error) == ("await", "stop", None)


def test_promote_keeps_production_instances_and_waits_for_an_updating_endpoint(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)]).model_copy(
        update={"conclusion": Conclusion(decision="promote", status=S.SUCCEEDED, reason="Pass")}
    )
    env.sm.endpoint = {**env.sm.endpoint, "EndpointStatus": "Updating"}
    with pytest.raises(Retryable):
        shadow.promote(the_state, env.services)
    env.sm.endpoint = {**env.sm.endpoint, "EndpointStatus": "InService"}
    out = shadow.promote(the_state, env.services)
    [stopped] = env.sm.calls_of("stop_inference_experiment")
    assert stopped["ModelVariantActions"] == {"AllTraffic-shadow": "Promote", "AllTraffic": "Remove"}
    assert stopped["DesiredModelVariants"][0]["InfrastructureConfig"]["RealTimeInferenceConfig"] == {
        "InstanceType": "ml.g5.xlarge",
        "InstanceCount": 2,
    }
    assert out.next == "await"


def test_a_failure_removes_a_running_shadow_then_finishes(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    failed = the_state.model_copy(update={"error": {"Error": "ShadowTestFailed", "Cause": "boom"}})
    assert shadow.handle_failure(failed, env.services).next == "discard"
    env.sm.experiment = None
    out = shadow.handle_failure(failed, env.services)
    assert out.outcome is not None and (out.outcome.status, out.next) == (S.FAILED, "finish")


def test_finish_records_releases_and_announces(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    env.repo.acquire_lock(ENDPOINT, OP, 3600)
    env.repo.put_alarm_watch("guard", ENDPOINT, OP, 3600)
    done = the_state.model_copy(
        update={
            "outcome": shadow.Outcome(status=S.SUCCEEDED, reason="promoted", decision="promoted"),
            "verdicts": [{"scope": "phase", "result": "Pass"}],
        }
    )
    out = shadow.STEPS["finish"](done, env.services)
    record = env.repo.get_operation(OP)
    assert record.status is S.SUCCEEDED and record.result is not None
    assert record.result["decision"] == "promoted" and record.result["final_verdict"] == {
        "scope": "phase",
        "result": "Pass",
    }
    assert env.repo.get_lock(ENDPOINT) is None and env.repo.alarm_watches("guard") == []
    assert out.event is not None and (out.event["status"], out.event["finalVerdict"]) == ("SUCCEEDED", "Pass")
    assert out.next == "announce"


def test_no_step_passes_on_what_resumed_an_earlier_wait(env: Env) -> None:
    the_state = running(env, state(env), [(100, NOW, NOW + 3600)])
    stale = the_state.model_copy(
        update={"heartbeat": {"Error": "States.HeartbeatTimeout"}, "resumed": {"phase": "done"}}
    )
    out = shadow.STEPS["discard"](stale, env.services)
    assert (out.heartbeat, out.resumed) == (None, None)
