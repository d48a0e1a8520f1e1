"""The deployment routes of the API function, in-process: API Gateway events in, status codes and JSON out.

The handler runs for real (routing, validation, Powertools idempotency on the table) against moto: SageMaker
for pre-flight, DynamoDB, CloudWatch, and Step Functions without execution (moto records the executions a
start makes). Task tokens are parked directly in the table, as the flow's wait steps do; SendTaskSuccess and
SendTaskFailure are recorded rather than sent, since those tokens never came from a real execution.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from api_kit import ACCOUNT, ENDPOINT, StepFunctions, api_request, create_endpoint, create_state_machine
from api_kit import client as _client
from botocore.exceptions import ClientError

from inferops import deployments
from inferops.planner import DeploymentRequest
from inferops.rollout import KIND, FlowState, preflight
from inferops.storage import OperationStatus, Repository, WaitPurpose
from twin.lambdas import load_function

pytestmark = pytest.mark.usefixtures("keep_boto3_session")
CALLER = f"arn:aws:sts::{ACCOUNT}:assumed-role/MlPlatform/ml-platform"  # the sample event's identity
ALARM = "fraud-5xx"
S = OperationStatus


class Recording:
    """Delegates to a client and records the names of the API methods called."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if callable(target) and not name.startswith(("get_paginator", "get_waiter")):
            self.calls.append(name)
        return target


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Call")


_PLANS: dict[str, dict[str, Any]] = {}


class Env:
    """One test's API: the handler, the table (its client records the calls), and Step Functions."""

    def __init__(self, api: ModuleType, repo: Repository, table: Recording, sfn: StepFunctions, arn: str) -> None:
        self.api, self.repo, self.table, self.sfn, self.state_machine_arn = api, repo, table, sfn, arn
        self.cloudwatch = _client("cloudwatch")

    def call(self, method: str, path: str, **request: Any) -> tuple[int, Any, dict[str, str]]:
        return api_request(self.api, method, path, **request)

    def start(self, request: dict[str, Any] | None = None, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return self.call("POST", "/deployments", body=request or native(), **kwargs)

    def started(self, request: dict[str, Any] | None = None) -> str:
        status, body, _ = self.start(request)
        assert status == 202, body
        return str(body["id"])

    def recorded(self, request: dict[str, Any]) -> str:
        """A deployment as the flow leaves it once running: its record with the plan, holding the lock.

        Quicker than POST /deployments for the tests of abort and approve, which don't test starting.
        """
        key = json.dumps(request, sort_keys=True)
        if key not in _PLANS:  # every test's endpoint is the same, so is the plan
            result = preflight(
                DeploymentRequest.model_validate(request), _client("sagemaker"), _client("application-autoscaling")
            )
            assert result.plan is not None, result.violations
            _PLANS[key] = result.plan.model_dump(mode="json")
        record = self.repo.create_operation(KIND, ENDPOINT, request, plan=_PLANS[key])
        self.repo.transition(record.id, S.RUNNING)
        self.repo.acquire_lock(ENDPOINT, record.id, 3600)
        return record.id

    def operations(self) -> list[str]:
        records, _ = self.repo.page_operations(ENDPOINT, limit=100)
        return [r.id for r in records]

    def executions(self) -> list[dict[str, Any]]:
        return list(self.sfn.inner.list_executions(stateMachineArn=self.state_machine_arn)["executions"])


@pytest.fixture
def env(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    sm = _client("sagemaker")
    create_endpoint(sm)
    _client("cloudwatch").put_metric_alarm(
        AlarmName=ALARM,
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=0.01,
        ComparisonOperator="GreaterThanThreshold",
    )
    sfn = _client("stepfunctions")
    arn = create_state_machine("deployment")
    monkeypatch.setenv("TABLE_NAME", ddb_table.table_name)
    monkeypatch.setenv("DEPLOYMENT_STATE_MACHINE_ARN", arn)

    api = load_function("api")
    table = Recording(ddb_table.client)
    repo = Repository(ddb_table.table_name, client=table)  # type: ignore[arg-type]
    steps = StepFunctions(sfn)
    clients = deployments.Clients(
        repo=repo,
        sagemaker=sm,
        autoscaling=_client("application-autoscaling"),
        cloudwatch=_client("cloudwatch"),
        stepfunctions=steps,  # type: ignore[arg-type]
        state_machine_arn=arn,
    )
    monkeypatch.setattr(api, "_clients", lambda: clients)
    api.route_kit._idempotency_store.cache_clear()  # its client and table name are the test's
    yield Env(api, repo, table, steps, arn)
    api.route_kit._idempotency_store.cache_clear()


def native(**extra: Any) -> dict[str, Any]:
    return {
        "endpoint_name": ENDPOINT,
        "model": {"source": "existing", "model_name": "fraud-v2"},
        "strategy": {"type": "canary", "size": {"value": 50}, "bake_seconds": 600},
        "alarms": [ALARM],
        **extra,
    }


def managed() -> dict[str, Any]:
    return native(strategy={"type": "managed", "steps": [10, 100], "bake_seconds": 600, "approval_before": [100]})


# ------------------------------------------------------------------------------------------------ start
def test_start_answers_202_with_the_id_the_plan_and_a_location(env: Env) -> None:
    status, body, headers = env.start()

    assert status == 202, body
    operation = body["id"]
    assert headers["Location"] == f"/deployments/{operation}"
    assert body["status"] == "PENDING" and body["dry_run"] is False
    assert body["plan"]["path"] == "native" and body["plan"]["strategy"] == "canary"
    record = env.repo.get_operation(operation)
    assert (record.kind, record.status, record.plan) == (KIND, S.PENDING, body["plan"])
    lock = env.repo.get_lock(ENDPOINT)
    assert lock is not None and lock.owner == operation
    [execution] = env.executions()
    assert execution["name"] == operation
    assert record.execution_arn == execution["executionArn"]
    described = env.sfn.inner.describe_execution(executionArn=execution["executionArn"])
    assert FlowState.model_validate_json(described["input"]).operation_id == operation
    assert [e.kind for e in env.repo.timeline(operation)] == ["requested"]


def test_dry_run_returns_the_plan_and_starts_nothing(env: Env) -> None:
    status, body, headers = env.start(query={"dryRun": "true"})

    assert status == 200, body
    assert (body["id"], body["status"], body["dry_run"]) == (None, "DRY_RUN", True)
    assert body["plan"]["endpoint_name"] == ENDPOINT
    assert "Location" not in headers
    assert env.operations() == []
    assert env.repo.get_lock(ENDPOINT) is None
    assert env.executions() == []


def test_the_same_idempotency_key_gets_the_first_answer(env: Env) -> None:
    key = {"Idempotency-Key": "deploy-42"}
    first = env.start(headers=key)
    second = env.start(headers=key)

    assert first[0] == second[0] == 202, (first, second)
    assert first[1] == second[1]
    assert second[2]["Location"] == f"/deployments/{first[1]['id']}"
    assert len(env.executions()) == 1
    assert len(env.operations()) == 1


def test_the_same_idempotency_key_with_another_body_is_422(env: Env) -> None:
    key = {"Idempotency-Key": "deploy-42"}
    assert env.start(headers=key)[0] == 202

    status, body, _ = env.start(native(strategy={"type": "all_at_once"}), headers=key)

    assert status == 422, body
    assert body["field"] == "Idempotency-Key"
    assert len(env.executions()) == 1


def test_a_dry_run_does_not_use_up_the_idempotency_key(env: Env) -> None:
    key = {"Idempotency-Key": "deploy-42"}
    assert env.start(headers=key, query={"dryRun": "true"})[0] == 200

    status, body, headers = env.start(headers=key)

    assert status == 202, body
    assert body["id"] is not None and body["dry_run"] is False
    assert headers["Location"] == f"/deployments/{body['id']}"
    assert len(env.executions()) == 1


def test_a_refused_request_is_422_with_every_violation_and_starts_nothing(env: Env) -> None:
    request = native(
        model={"source": "existing", "model_name": "no-such-model"},
        strategy={"type": "canary", "size": {"value": 60}, "bake_seconds": 600},
    )

    status, body, _ = env.start(request)

    assert status == 422, body
    assert {v["field"] for v in body["violations"]} == {"model.model_name", "strategy.size"}
    assert body["message"].startswith("2 problem(s)")
    assert env.operations() == []
    assert env.repo.get_lock(ENDPOINT) is None
    assert env.executions() == []


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"model": {"source": "existing", "model_name": "fraud-v2"}}, "endpoint_name"),
        (native(strategy={"type": "canary", "size": {"value": 0}}), "strategy"),
        (native(instance_count=0), "instance_count"),
        (native(surprise=True), "surprise"),
        ("{not json", "body"),
    ],
)
def test_a_malformed_request_is_422_naming_the_field(env: Env, request_body: Any, field: str) -> None:
    status, body, _ = env.call("POST", "/deployments", body=request_body)

    assert status == 422, body
    assert body["field"].startswith(field), body
    assert env.executions() == []


def test_a_second_deployment_while_the_endpoint_is_locked_is_409_naming_the_holder(env: Env) -> None:
    first = env.started()

    status, body, _ = env.start(native(strategy={"type": "all_at_once"}))

    assert status == 409, body
    assert body["field"] == "endpoint_name"
    assert first in body["message"]
    assert len(env.executions()) == 1
    assert env.operations() == [first]


# ------------------------------------------------------------------------------------------------ read
def test_get_an_unknown_deployment_is_404(env: Env) -> None:
    status, body, _ = env.call("GET", "/deployments/op-20260101000000-deadbeef")

    assert status == 404, body
    assert "op-20260101000000-deadbeef" in body["message"]


def test_an_operation_of_another_kind_is_not_a_deployment(env: Env) -> None:
    env.repo.create_operation("shadow_test", ENDPOINT, {}, "op-shadow")

    for method, path in (("GET", "/deployments/op-shadow"), ("POST", "/deployments/op-shadow/abort")):
        status, body, _ = env.call(method, path)
        assert status == 404, (path, body)
        assert "not a deployment" in body["message"]


def test_get_returns_the_plan_the_timeline_and_the_verdicts(env: Env) -> None:
    operation = env.started()
    verdict = {"share": 10, "result": "Pass", "score": 100.0, "reason": "all metrics pass"}
    env.repo.append_timeline(operation, "verdict", "10 %: Pass", verdict)

    status, body, _ = env.call("GET", f"/deployments/{operation}")

    assert status == 200, body
    assert (body["id"], body["endpoint"], body["status"]) == (operation, ENDPOINT, "PENDING")
    assert body["plan"]["endpoint_name"] == ENDPOINT
    assert body["request"]["model"] == {"source": "existing", "model_name": "fraud-v2"}
    assert [e["kind"] for e in body["timeline"]] == ["requested", "verdict"]
    assert body["verdicts"] == [verdict]
    assert body["execution_arn"] == env.executions()[0]["executionArn"]


def test_list_requires_the_endpoint(env: Env) -> None:
    status, body, _ = env.call("GET", "/deployments")

    assert status == 422, body
    assert body["field"] == "endpoint"


def test_list_filters_by_status_and_pages_with_a_token_without_scanning(env: Env) -> None:
    ids = []
    for n in range(5):
        record = env.repo.create_operation(KIND, ENDPOINT, {"strategy": {"type": "canary"}}, f"op-{n}")
        ids.append(record.id)
        if n % 2 == 0:
            env.repo.transition(record.id, S.REFUSED, result={"reason": f"refused {n}"})
    env.repo.create_operation("shadow_test", ENDPOINT, {}, "op-shadow")
    env.repo.create_operation(KIND, "other-endpoint", {}, "op-elsewhere")
    env.table.calls.clear()

    seen, token, pages = [], None, 0
    while True:
        query = {"endpoint": ENDPOINT, "limit": "2", **({"nextToken": token} if token else {})}
        status, body, _ = env.call("GET", "/deployments", query=query)
        assert status == 200, body
        pages += 1
        seen += [d["id"] for d in body["deployments"]]
        token = body["next_token"]
        if token is None:
            break
    status, refused, _ = env.call("GET", "/deployments", query={"endpoint": ENDPOINT, "status": "REFUSED"})

    assert seen == ids[::-1]  # newest first, every deployment once, nothing of other kinds or endpoints
    assert pages == 3
    assert status == 200, refused
    assert [(d["id"], d["status"], d["reason"]) for d in refused["deployments"]] == [
        ("op-4", "REFUSED", "refused 4"),
        ("op-2", "REFUSED", "refused 2"),
        ("op-0", "REFUSED", "refused 0"),
    ]
    assert refused["deployments"][0]["strategy"] == "canary"
    assert refused["next_token"] is None
    assert "scan" not in env.table.calls
    assert "query" in env.table.calls


def test_list_rejects_an_unknown_status(env: Env) -> None:
    status, body, _ = env.call("GET", "/deployments", query={"endpoint": ENDPOINT, "status": "DONE"})

    assert status == 422, body
    assert body["field"] == "status"


# ------------------------------------------------------------------------------------------------ abort
def test_abort_a_finished_deployment_is_409(env: Env) -> None:
    operation = env.recorded(native())
    env.repo.transition(operation, S.SUCCEEDED, result={"reason": "done"})

    status, body, _ = env.call("POST", f"/deployments/{operation}/abort")

    assert status == 409, body
    assert "SUCCEEDED" in body["message"]
    assert env.repo.get_operation(operation).stop_request is None


def test_abort_during_a_bake_fails_the_parked_token_at_once(env: Env) -> None:
    operation = env.recorded(managed())
    env.repo.put_task_token(ENDPOINT, WaitPurpose.BAKE, "bake-token", operation, 600)

    status, body, _ = env.call("POST", f"/deployments/{operation}/abort", body={"reason": "wrong build"})

    assert status == 202, body
    assert env.sfn.failures == [("bake-token", "StopRequested", "wrong build")]
    stop = env.repo.get_operation(operation).stop_request
    assert stop is not None and (stop["kind"], stop["reason"], stop["by"]) == ("abort", "wrong build", CALLER)
    assert body["stop_request"]["reason"] == "wrong build"
    assert env.repo.get_task_token(ENDPOINT, WaitPurpose.BAKE) is None
    assert "abort" in [e["kind"] for e in body["timeline"]]


def test_abort_a_native_update_without_alarms_is_409_and_says_why(env: Env) -> None:
    operation = env.recorded(native(strategy={"type": "all_at_once"}, alarms=[]))
    env.repo.put_task_token(ENDPOINT, WaitPurpose.ENDPOINT_UPDATE, "update-token", operation, 3600)

    status, body, _ = env.call("POST", f"/deployments/{operation}/abort")

    assert status == 409, body
    assert "no call to cancel an update" in body["message"] and "no rollback alarms" in body["message"]
    assert env.repo.get_operation(operation).stop_request is None
    assert env.sfn.failures == []


def test_abort_a_native_update_sets_its_first_rollback_alarm(env: Env) -> None:
    operation = env.recorded(native(alarms=[ALARM]))
    env.repo.put_task_token(ENDPOINT, WaitPurpose.ENDPOINT_UPDATE, "update-token", operation, 3600)

    status, body, _ = env.call("POST", f"/deployments/{operation}/abort")

    assert status == 202, body
    [alarm] = env.cloudwatch.describe_alarms(AlarmNames=[ALARM])["MetricAlarms"]
    assert alarm["StateValue"] == "ALARM"
    assert operation in alarm["StateReason"]
    assert env.repo.get_operation(operation).stop_request is not None
    assert env.repo.get_task_token(ENDPOINT, WaitPurpose.ENDPOINT_UPDATE) is not None  # the flow still waits for it
    assert env.sfn.failures == []


def test_abort_keeps_the_token_when_step_functions_is_throttled(env: Env) -> None:
    operation = env.recorded(managed())
    env.repo.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approval-token", operation, 3600)
    env.sfn.error = client_error("ThrottlingException")

    status, _, _ = env.call("POST", f"/deployments/{operation}/abort")

    assert status == 503
    token = env.repo.get_task_token(ENDPOINT, WaitPurpose.APPROVAL)
    assert token is not None and token.token == "approval-token"  # a retried abort can still deliver it

    env.sfn.error = None
    assert env.call("POST", f"/deployments/{operation}/abort")[0] == 202
    assert env.sfn.failures == [("approval-token", "StopRequested", f"aborted by {CALLER}")]


# ------------------------------------------------------------------------------------------------ approve
def test_approve_when_not_waiting_for_an_approval_is_409(env: Env) -> None:
    operation = env.recorded(managed())

    status, body, _ = env.call("POST", f"/deployments/{operation}/approve")

    assert status == 409, body
    assert "not waiting for an approval" in body["message"]
    assert env.sfn.successes == []


def test_approve_resumes_the_parked_approval(env: Env) -> None:
    operation = env.recorded(managed())
    env.repo.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approval-token", operation, 3600)

    status, body, _ = env.call("POST", f"/deployments/{operation}/approve")

    assert status == 200, body
    assert env.sfn.successes == [("approval-token", {"approved_by": CALLER})]
    assert body["timeline"][-1]["kind"] == "approved"
    assert CALLER in body["timeline"][-1]["message"]
    assert env.repo.get_task_token(ENDPOINT, WaitPurpose.APPROVAL) is None
    assert env.call("POST", f"/deployments/{operation}/approve")[0] == 409  # once


def test_approving_the_wrong_deployment_leaves_the_waiting_one_alone(env: Env) -> None:
    old = env.recorded(managed())
    env.repo.transition(old, S.FAILED, result={"reason": "test"})
    env.repo.release_lock(ENDPOINT, old)
    waiting = env.recorded(managed())
    env.repo.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approval-token", waiting, 3600)

    status, body, _ = env.call("POST", f"/deployments/{old}/approve")

    assert status == 409, body
    token = env.repo.get_task_token(ENDPOINT, WaitPurpose.APPROVAL)
    assert token is not None and (token.token, token.operation_id) == ("approval-token", waiting)
    assert env.call("POST", f"/deployments/{waiting}/approve")[0] == 200


def test_approve_after_the_flow_stopped_waiting_is_409(env: Env) -> None:
    operation = env.recorded(managed())
    env.repo.put_task_token(ENDPOINT, WaitPurpose.APPROVAL, "approval-token", operation, 3600)
    env.sfn.error = client_error("TaskTimedOut")

    status, body, _ = env.call("POST", f"/deployments/{operation}/approve")

    assert status == 409, body
    assert "stopped waiting" in body["message"]
