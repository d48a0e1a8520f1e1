"""The shadow test routes of the API function, in-process: API Gateway events in, status codes and JSON out.

The handler runs for real (routing, validation, Powertools idempotency on the table) against moto: SageMaker for
the eligibility check, DynamoDB, CloudWatch, and Step Functions without execution. moto has no inference
experiments: a thin wrapper answers DescribeInferenceExperiment and records UpdateInferenceExperiment. Task tokens
are parked directly in the table, as the flow's waits do; SendTaskSuccess/Failure are recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from api_kit import ENDPOINT, ROLE, StepFunctions, api_request, create_endpoint, create_state_machine
from api_kit import client as _client

from inferops import shadow_tests
from inferops.shadow import KIND, PROGRESS
from inferops.storage import OperationStatus, Repository, WaitPurpose
from twin.lambdas import load_function

pytestmark = pytest.mark.usefixtures("keep_boto3_session")
S = OperationStatus


class SageMaker:
    """moto's client plus the inference experiment calls the routes make."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.experiment: dict[str, Any] = {
            "Status": "Running",
            "ShadowModeConfig": {
                "SourceModelVariantName": "AllTraffic",
                "ShadowModelVariants": [{"ShadowModelVariantName": "AllTraffic-shadow", "SamplingPercentage": 100}],
            },
        }
        self.updates: list[dict[str, Any]] = []

    def describe_inference_experiment(self, **params: Any) -> dict[str, Any]:
        return self.experiment

    def update_inference_experiment(self, **params: Any) -> dict[str, Any]:
        self.updates.append(params)
        return {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _dt(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)


class Env:
    def __init__(self, api: ModuleType, repo: Repository, sm: SageMaker, sfn: StepFunctions, arn: str) -> None:
        self.api, self.repo, self.sm, self.sfn, self.arn = api, repo, sm, sfn, arn

    def call(self, method: str, path: str, **request: Any) -> tuple[int, Any, dict[str, str]]:
        return api_request(self.api, method, path, **request)

    def executions(self) -> list[dict[str, Any]]:
        return list(self.sfn.inner.list_executions(stateMachineArn=self.arn)["executions"])

    def running(self, *, sampling: list[tuple[float, int]], phases: int = 1, current: int = 0) -> str:
        """A shadow test as the flow leaves it once running: its record, the lock, its progress record."""
        record = self.repo.create_operation(KIND, ENDPOINT, body())
        self.repo.transition(record.id, S.RUNNING)
        self.repo.acquire_lock(ENDPOINT, record.id, 3600)
        now = self.repo.now()
        self.sm.experiment["Schedule"] = {"StartTime": _dt(now - 600), "EndTime": _dt(now + 86400)}
        self.repo.put_operation_state(
            record.id,
            PROGRESS,
            {
                "experiment": "fraud-scorer-shadow-x",
                "running_at": now - 600,
                "end_at": now + 86400,
                "analysis_end_at": now + 86400 - 300,
                "interval_seconds": 900,
                "phases": [
                    {"index": i, "sampling_percent": 100, "starts_at": now - 600 + i, "ends_at": now + 3600 * (i + 1)}
                    for i in range(phases)
                ],
                "current": current,
                "judged": 0,
                "sampling_history": [{"at": at, "percent": p, "by": "flow"} for at, p in sampling],
                "decision": None,
            },
        )
        return record.id


@pytest.fixture
def env(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    sm = _client("sagemaker")
    create_endpoint(sm)
    sfn = _client("stepfunctions")
    arn = create_state_machine("shadow-test")
    monkeypatch.setenv("TABLE_NAME", ddb_table.table_name)
    monkeypatch.setenv("DEPLOYMENT_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("SHADOW_TEST_STATE_MACHINE_ARN", arn)
    api = load_function("api")
    api.include_routes()
    routes = api.shadow_routes
    sagemaker = SageMaker(sm)
    steps = StepFunctions(sfn)
    clients = shadow_tests.Clients(
        repo=ddb_table,
        sagemaker=sagemaker,  # type: ignore[arg-type]
        autoscaling=_client("application-autoscaling"),
        cloudwatch=_client("cloudwatch"),
        stepfunctions=steps,  # type: ignore[arg-type]
        state_machine_arn=arn,
    )
    monkeypatch.setattr(routes, "_clients", lambda: clients)
    api.route_kit._idempotency_store.cache_clear()
    yield Env(api, ddb_table, sagemaker, steps, arn)
    api.route_kit._idempotency_store.cache_clear()


def body(**extra: Any) -> dict[str, Any]:
    return {
        "endpoint_name": ENDPOINT,
        "model": {"source": "existing", "model_name": "fraud-v2"},
        "role_arn": ROLE,
        "duration_hours": 24,
        **extra,
    }


# ------------------------------------------------------------------------------------------------ start
def test_start_answers_202_with_the_plan_locks_and_starts_the_flow(env: Env) -> None:
    status, reply, headers = env.call("POST", "/shadow-tests", body=body(sampling_steps=[10, 100]))
    assert status == 202, reply
    operation = reply["id"]
    assert headers["Location"] == f"/shadow-tests/{operation}"
    assert reply["status"] == "PENDING" and [p["sampling_percent"] for p in reply["plan"]["phases"]] == [10, 100]
    assert reply["plan"]["experiment_name"].endswith(operation.rsplit("-", 1)[-1])
    record = env.repo.get_operation(operation)
    assert (record.kind, record.status) == (KIND, S.PENDING)
    lock = env.repo.get_lock(ENDPOINT)
    assert lock is not None and lock.owner == operation
    [execution] = env.executions()
    assert execution["name"] == operation


def test_a_dry_run_plans_and_starts_nothing(env: Env) -> None:
    status, reply, _ = env.call("POST", "/shadow-tests", body=body(), query={"dryRun": "true"})
    assert (status, reply["status"], reply["id"]) == (200, "DRY_RUN", None)
    assert env.executions() == [] and env.repo.get_lock(ENDPOINT) is None


def test_broken_rules_come_back_at_once_as_422(env: Env) -> None:
    status, reply, _ = env.call("POST", "/shadow-tests", body=body(sampling_steps=[0, 50], action="promote"))
    assert status == 422
    assert {v["rule"] for v in reply["violations"]} == {"sampling_range", "promotion_needs_full_sampling"}
    assert reply["field"] == "sampling_steps.0"


def test_a_busy_endpoint_is_409_naming_the_holder(env: Env) -> None:
    holder = env.repo.create_operation("deployment", ENDPOINT, {})
    env.repo.acquire_lock(ENDPOINT, holder.id, 600)
    status, reply, _ = env.call("POST", "/shadow-tests", body=body())
    assert status == 409 and f"deployment {holder.id}" in reply["message"] and reply["field"] == "endpoint_name"


def test_a_retried_start_with_the_same_idempotency_key_gets_the_first_answer(env: Env) -> None:
    first = env.call("POST", "/shadow-tests", body=body(), headers={"Idempotency-Key": "k-1"})
    again = env.call("POST", "/shadow-tests", body=body(), headers={"Idempotency-Key": "k-1"})
    assert first[0] == again[0] == 202 and first[1]["id"] == again[1]["id"]
    assert len(env.executions()) == 1


# ------------------------------------------------------------------------------------------------ reading
def test_get_and_list(env: Env) -> None:
    operation = env.running(sampling=[(1.0, 10), (2.0, 100)])
    env.repo.append_timeline(operation, "verdict", "interval 1", {"scope": "interval", "result": "Pass", "metrics": []})
    other = env.repo.create_operation("deployment", ENDPOINT, {})
    status, view, _ = env.call("GET", f"/shadow-tests/{operation}")
    assert status == 200, view
    assert view["experiment"] == "fraud-scorer-shadow-x" and view["sampling_percent"] == 100
    assert [h["percent"] for h in view["sampling_history"]] == [10, 100]
    assert view["verdicts"] == [{"scope": "interval", "result": "Pass", "at": view["verdicts"][0]["at"]}]
    assert view["phase"]["index"] == 0 and view["waiting_for"] is None
    assert env.call("GET", f"/shadow-tests/{other.id}")[0] == 404  # a deployment is no shadow test
    assert env.call("GET", "/shadow-tests/op-nope")[0] == 404
    status, page, _ = env.call("GET", "/shadow-tests", query={"endpoint": ENDPOINT})
    assert status == 200 and [t["id"] for t in page["shadow_tests"]] == [operation]


# ------------------------------------------------------------------------------------------------ decisions
def test_promote_needs_the_last_phase_at_100_percent(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 10)], phases=2)
    status, reply, _ = env.call("POST", f"/shadow-tests/{operation}/promote")
    assert status == 409 and reply["field"] == "sampling"
    assert "phase 1/2 at 10 % sampling" in reply["message"]


def test_promote_in_the_last_phase_wakes_the_watch(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    env.repo.put_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH, "watch-1", operation, 900)
    status, view, _ = env.call("POST", f"/shadow-tests/{operation}/promote")
    assert status == 202, view
    [(token, output)] = env.sfn.successes
    assert token == "watch-1" and output["decision"] == "promote"
    assert view["decision"]["decision"] == "promote"
    again = env.call("POST", f"/shadow-tests/{operation}/discard")  # the promotion was decided first
    assert again[0] == 202 and env.repo.get_operation(operation).stop_request is not None


def test_approve_only_when_waiting_for_it(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    status, reply, _ = env.call("POST", f"/shadow-tests/{operation}/approve")
    assert status == 409 and "not waiting for an approval" in reply["message"]
    env.repo.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approve-1", operation, 900)
    status, view, _ = env.call("POST", f"/shadow-tests/{operation}/approve")
    assert status == 202, view
    assert [t for t, _ in env.sfn.successes] == ["approve-1"]
    assert env.call("POST", f"/shadow-tests/{operation}/discard")[0] == 202  # no wait parked any more: a stop


def test_discard_stops_a_running_test_and_fails_its_watch(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    env.repo.put_task_token(ENDPOINT, WaitPurpose.SHADOW_WATCH, "watch-1", operation, 900)
    status, view, _ = env.call("POST", f"/shadow-tests/{operation}/discard", body={"reason": "wrong data"})
    assert status == 202, view
    assert env.sfn.failures == [("watch-1", "StopRequested", "wrong data")]
    assert view["stop_request"]["kind"] == "abort"


def test_discard_at_the_approval_is_the_decision(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    env.repo.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approve-1", operation, 900)
    status, view, _ = env.call("POST", f"/shadow-tests/{operation}/discard")
    assert status == 202, view
    [(token, output)] = env.sfn.successes
    assert (token, output["decision"]) == ("approve-1", "discard")
    assert view["stop_request"] is None


def test_a_finished_test_takes_no_decision(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    env.repo.transition(operation, S.SUCCEEDED)
    for action in ("promote", "discard", "approve"):
        assert env.call("POST", f"/shadow-tests/{operation}/{action}")[0] == 409


# ------------------------------------------------------------------------------------------------ changes
def test_patch_changes_the_sampling_and_records_it(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    status, view, _ = env.call("PATCH", f"/shadow-tests/{operation}", body={"sampling_percent": 70})
    assert status == 200, view
    [update] = env.sm.updates
    assert update["ShadowModeConfig"]["ShadowModelVariants"][0] == {
        "ShadowModelVariantName": "AllTraffic-shadow",
        "SamplingPercentage": 70,
    }
    assert [h["percent"] for h in view["sampling_history"]] == [100, 70]
    assert view["timeline"][-1]["kind"] == "changed"


def test_patch_moves_the_end_and_the_phases(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)], phases=2)
    end = env.repo.now() + 7200
    status, view, _ = env.call("PATCH", f"/shadow-tests/{operation}", body={"end_time": _dt(end).isoformat()})
    assert status == 200, view
    assert env.sm.updates[0]["Schedule"]["EndTime"].timestamp() == pytest.approx(end)
    progress = env.repo.get_operation_state(operation, PROGRESS) or {}
    assert progress["end_at"] == pytest.approx(end)
    assert progress["phases"][-1]["ends_at"] == pytest.approx(end - 300)


@pytest.mark.parametrize(
    ("patch", "status", "field"),
    [
        ({}, 400, "body"),
        ({"sampling_percent": 0}, 422, "sampling_percent"),
        ({"end_time": "2099-06-01T00:00:00Z"}, 400, "end_time"),  # beyond 30 days from the start
        ({"end_time": "2020-01-01T00:00:00Z"}, 400, "end_time"),
        ({"bogus": 1}, 422, "bogus"),
    ],
)
def test_patch_refusals(env: Env, patch: dict[str, Any], status: int, field: str) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    got, reply, _ = env.call("PATCH", f"/shadow-tests/{operation}", body=patch)
    assert (got, reply["field"]) == (status, field), reply


def test_patch_needs_a_running_experiment(env: Env) -> None:
    operation = env.running(sampling=[(0.0, 100)])
    env.sm.experiment = {**env.sm.experiment, "Status": "Stopping"}
    status, reply, _ = env.call("PATCH", f"/shadow-tests/{operation}", body={"sampling_percent": 50})
    assert status == 409 and "Stopping" in reply["message"]
