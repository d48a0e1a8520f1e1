"""The deployment flow's steps one by one, against moto (DynamoDB, CloudWatch, SageMaker) and small fakes.

Where moto falls short, a thin wrapper fills in: `SageMaker` records every call, answers UpdateEndpoint (moto
has none) and UpdateEndpointWeightsAndCapacities itself, lets a test set what DescribeEndpoint reports (moto's
endpoints are always InService on their first config: status, config, FailureReason, pending deployment) and
raises errors on demand; `CloudWatch` applies DescribeAlarms' StateValue filter, which moto ignores when AlarmNames is
given. Step Functions is a recorder of SendTaskSuccess/SendTaskFailure.

Speed: moto is slow to return large DynamoDB items, so the tests of the later steps start from a state built
directly (`ready`, `baking`) rather than by running every earlier step, and keep the stored record small.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import config as moto_config

from inferops import analysis, rollout
from inferops.planner import DeploymentRequest, Plan
from inferops.rollout import (
    MAX_FAILURE_ROUNDS,
    RECHECK_SECONDS,
    DeploymentFailed,
    FlowState,
    Retryable,
    Services,
    StopRequested,
    Update,
    candidate_variant_name,
)
from inferops.storage import OperationStatus, Repository, WaitPurpose

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
OTHER_ROLE = f"arn:aws:iam::{ACCOUNT}:role/Other"
ENDPOINT = "fraud-scorer"
ALARM = "fraud-5xx"
OP = "op-test-1"
PACKAGE = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/fraud/3"
S = OperationStatus


def client_error(code: str, message: str = "boom", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Call"
    )


class SageMaker:
    """moto's client, plus what moto lacks (see the module docstring)."""

    RECORDED_ONLY = frozenset({"update_endpoint", "update_endpoint_weights_and_capacities"})

    def __init__(self, inner: Any, setup: Callable[[], None]) -> None:
        self.inner = inner
        self.setup: Callable[[], None] | None = setup  # makes the endpoint in moto, before the first call reaches it
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: dict[str, ClientError] = {}
        self.endpoint: dict[str, Any] | None = None
        self.before: dict[str, Callable[[], object]] = {}

    @property
    def exceptions(self) -> Any:
        return self.inner.exceptions

    def set_endpoint(
        self,
        status: str,
        config: str,
        *,
        failure: str | None = None,
        pending: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> None:
        described: dict[str, Any] = {
            "EndpointName": ENDPOINT,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}",
            "EndpointConfigName": config,
            "EndpointStatus": status,
            "ProductionVariants": [
                {"VariantName": name, "CurrentWeight": weight, "CurrentInstanceCount": 2}
                for name, weight in (weights or {"AllTraffic": 1.0}).items()
            ],
        }
        if failure:
            described["FailureReason"] = failure
        if pending:
            described["PendingDeploymentSummary"] = {"EndpointConfigName": pending}
        self.endpoint = described

    def called(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for method, kwargs in self.calls if method == name]

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            if name in self.before:
                self.before.pop(name)()
            if name in self.errors:
                raise self.errors[name]
            if name in self.RECORDED_ONLY:
                return {"EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}"}
            if name == "describe_endpoint" and self.endpoint is not None:
                return self.endpoint
            if self.setup is not None:
                self.setup, setup = None, self.setup
                setup()
            response = method(**kwargs)
            if name == "describe_endpoint_config" and response.get("DataCaptureConfig") == {}:
                del response["DataCaptureConfig"]  # moto reports an unset DataCaptureConfig as {}; SageMaker omits it
            return response

        return call


class CloudWatch:
    """moto's client, except that DescribeAlarms honours StateValue together with AlarmNames (moto drops it)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def inner(self) -> Any:
        return self.world.cloudwatch

    def describe_alarms(self, **kwargs: Any) -> dict[str, Any]:
        response: dict[str, Any] = self.inner.describe_alarms(**kwargs)
        state = kwargs.get("StateValue")
        if state:
            for kind in ("MetricAlarms", "CompositeAlarms"):
                response[kind] = [a for a in response.get(kind, []) if a["StateValue"] == state]
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class StepFunctions:
    """Records the task tokens the steps resume or fail."""

    class exceptions:
        ClientError = ClientError

    def __init__(self) -> None:
        self.successes: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, str, str]] = []

    def send_task_success(self, *, taskToken: str, output: str) -> dict[str, Any]:
        self.successes.append((taskToken, json.loads(output)))
        return {}

    def send_task_failure(self, *, taskToken: str, error: str = "", cause: str = "") -> dict[str, Any]:
        self.failures.append((taskToken, error, cause))
        return {}


@pytest.fixture(autouse=True)
def _keep_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto drops boto3's default session at every mock start, so each test's clients reload the service
    models (a tenth of a second for DynamoDB). The environment is the same fake one throughout: keep it."""
    monkeypatch.setitem(moto_config.default_user_config["core"], "reset_boto3_session", False)


@cache
def _client(service: str) -> Any:
    """One client per service for the whole module: moto intercepts clients made before its mock started,
    and a fresh client per test (moto resets boto3's default session) costs more than the test itself."""
    return boto3.session.Session().client(service, region_name="us-east-1")  # type: ignore[call-overload]


class World:
    """One test's AWS: the endpoint `fraud-scorer` (model fraud-v1, 2 x ml.g4dn.xlarge), model fraud-v2, alarm
    fraud-5xx, and the step services over them. SageMaker and CloudWatch are set up on first use only: many
    tests never reach them, and moto's calls are not free."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.sagemaker = SageMaker(_client("sagemaker"), self._make_endpoint)
        self.sfn = StepFunctions()
        self._alarm_made = False
        self.services = Services(
            repo=repo,
            sagemaker=self.sagemaker,  # type: ignore[arg-type]
            autoscaling=_client("application-autoscaling"),
            cloudwatch=CloudWatch(self),  # type: ignore[arg-type]
            stepfunctions=self.sfn,  # type: ignore[arg-type]
        )

    @property
    def cloudwatch(self) -> Any:
        """moto's CloudWatch client, with the rollback alarm made."""
        cloudwatch = _client("cloudwatch")
        if not self._alarm_made:
            self._alarm_made = True
            cloudwatch.put_metric_alarm(
                AlarmName=ALARM,
                Namespace="AWS/SageMaker",
                MetricName="Invocation5XXErrors",
                Statistic="Average",
                Period=60,
                EvaluationPeriods=1,
                Threshold=0.01,
                ComparisonOperator="GreaterThanThreshold",
            )
        return cloudwatch

    @staticmethod
    def _make_endpoint() -> None:
        sm = _client("sagemaker")
        for name, role in (("fraud-v1", ROLE), ("fraud-v2", OTHER_ROLE)):
            sm.create_model(
                ModelName=name,
                ExecutionRoleArn=role,
                PrimaryContainer={
                    "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/f:{name}",
                    "ModelDataUrl": "s3://m/1",
                },
            )
        sm.create_endpoint_config(
            EndpointConfigName="fraud-v1",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "fraud-v1",
                    "InitialInstanceCount": 2,
                    "InstanceType": "ml.g4dn.xlarge",
                    "ModelDataDownloadTimeoutInSeconds": 900,
                }
            ],
            KmsKeyId="alias/fraud",
        )
        sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="fraud-v1")

    def run(self, step: Callable[[FlowState, Services], FlowState], state: FlowState) -> FlowState:
        return step(state, self.services)

    def kinds(self, operation_id: str = OP) -> list[str]:
        return [e.kind for e in self.repo.timeline(operation_id)]


@pytest.fixture
def world(ddb_table: Repository) -> World:
    return World(ddb_table)


def native(**extra: Any) -> DeploymentRequest:
    body: dict[str, Any] = {
        "endpoint_name": ENDPOINT,
        "model": {"source": "existing", "model_name": "fraud-v2"},
        "strategy": {"type": "canary", "size": {"value": 50}, "bake_seconds": 600},
        "alarms": [ALARM],
        **extra,
    }
    return DeploymentRequest.model_validate(body)


def managed(**extra: Any) -> DeploymentRequest:
    body: dict[str, Any] = {
        "strategy": {"type": "managed", "steps": [10, 50, 100], "bake_seconds": 600},
        "analysis": {"min_requests": 50, "max_extensions": 2},
        **extra,
    }
    return native(**body)


def fresh(request: DeploymentRequest) -> FlowState:
    return FlowState(operation_id=OP, request=request)


_PLANS: dict[str, Plan] = {}


def plan_of(world: World, request: DeploymentRequest) -> Plan:
    """The plan pre-flight makes (every test's endpoint is the same, so it is computed once per request)."""
    key = request.model_dump_json()
    if key not in _PLANS:
        result = rollout.preflight(request, world.services.sagemaker, world.services.autoscaling)
        assert result.plan is not None, result.violations
        _PLANS[key] = result.plan
    return _PLANS[key]


def planned(world: World, request: DeploymentRequest) -> FlowState:
    """What pre-flight hands on: a PENDING operation and the plan.

    Built directly, without the plan in the stored record (pre-flight's own tests cover that): moto takes a long
    time to return big DynamoDB items, and the later steps never read the stored plan.
    """
    world.repo.create_operation(rollout.KIND, ENDPOINT, {"endpoint_name": ENDPOINT}, OP)
    return FlowState(operation_id=OP, request=request, plan=plan_of(world, request), next="lock")


def prepared(world: World, request: DeploymentRequest, *, until: str = "ensure_alarms") -> FlowState:
    """Run the real steps after pre-flight up to (and including) `until`."""
    state = planned(world, request)
    for name in ("acquire_lock", "create_model", "create_endpoint_config", "ensure_alarms"):
        state = rollout.STEPS[name](state, world.services)
        if name == until:
            break
    return state


def ready(world: World, request: DeploymentRequest) -> FlowState:
    """A RUNNING operation holding the endpoint's lock, its model and configs named: what StartUpdate receives."""
    state = planned(world, request)
    the_plan = plan_of(world, request)
    world.repo.transition(OP, S.RUNNING)
    world.repo.acquire_lock(ENDPOINT, OP, 3600)
    target = the_plan.new_endpoint_config_name
    resources = rollout.Resources(
        model_name="fraud-v2",
        original_config="fraud-v1",
        target_config=target,
        baseline_variant="AllTraffic",
        alarms=the_plan.alarms,
    )
    if the_plan.path == "managed":
        resources = resources.model_copy(
            update={"candidate_variant": "AllTraffic-green", "staging_config": rollout.staging_config_name(target)}
        )
    return state.model_copy(update={"resources": resources, "next": the_plan.path})


def baking(world: World, request: DeploymentRequest | None = None) -> FlowState:
    """A managed rollout after its first shift (10 %), the bake over: what Analyze receives."""
    state = ready(world, request or managed())
    state = rollout.next_step(state, world.services)
    progress = state.progress
    assert progress is not None
    started = world.repo.now() - progress.bake_seconds
    return state.model_copy(update={"progress": progress.model_copy(update={"bake_started_at": started})})


# ------------------------------------------------------------------------------------------------ aws()
@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("TooManyRequestsException", 400),
        ("InternalFailure", 500),
        ("SomethingNew", 503),
        ("", 502),
    ],
)
def test_aws_turns_throttling_and_5xx_into_retryable(code: str, status: int) -> None:
    with pytest.raises(Retryable, match="reading the endpoint"), rollout.aws("reading the endpoint"):
        raise client_error(code, "slow down", status)


def test_aws_turns_other_client_errors_into_a_deployment_failure_with_the_message() -> None:
    with pytest.raises(DeploymentFailed) as caught, rollout.aws("creating model m"):
        raise client_error("ValidationException", "Could not access model data at s3://m/1")
    assert str(caught.value) == "creating model m failed: ValidationException: Could not access model data at s3://m/1"
    assert isinstance(caught.value.__cause__, ClientError)


def test_aws_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), rollout.aws("x"):
        raise KeyError("not an AWS error")


# ------------------------------------------------------------------------------------------------ pre-flight
def test_preflight_plans_and_records_the_plan(world: World) -> None:
    state = world.run(rollout.plan_step, fresh(native()))

    assert state.next == "lock"
    assert state.plan is not None and state.plan.path == "native"
    record = world.repo.get_operation(OP)
    assert record.status is S.PENDING
    assert record.plan == state.plan.model_dump(mode="json")
    assert world.kinds() == ["planned"]


def test_preflight_refusal_records_every_violation_and_finishes(world: World) -> None:
    request = native(
        model={"source": "existing", "model_name": "no-such-model"},
        strategy={"type": "canary", "size": {"value": 60}, "bake_seconds": 600},
    )
    state = world.run(rollout.plan_step, fresh(request))

    assert state.next == "finish"
    assert state.outcome is not None and state.outcome.status is S.REFUSED
    assert state.outcome.reason.startswith("2 problem(s); ")
    record = world.repo.get_operation(OP)
    assert record.status is S.REFUSED
    assert record.result is not None
    assert {v["field"] for v in record.result["violations"]} == {"model.model_name", "strategy.size"}
    assert world.kinds() == ["refused"]


def test_preflight_honours_an_abort_that_came_first(world: World) -> None:
    world.repo.create_operation(rollout.KIND, ENDPOINT, {}, OP)
    world.repo.request_stop(OP, kind="abort", reason="wrong build", by="alice")

    state = world.run(rollout.plan_step, fresh(native()))

    assert state.next == "finish"
    assert state.outcome is not None and state.outcome.status is S.ABORTED
    assert "wrong build" in state.outcome.reason
    assert world.sagemaker.calls == []  # did not even read the endpoint


def test_preflight_throttled_is_retryable(world: World) -> None:
    world.sagemaker.errors["describe_endpoint"] = client_error("ThrottlingException", "Rate exceeded")
    with pytest.raises(Retryable, match="Rate exceeded"):
        world.run(rollout.plan_step, fresh(native()))


# ------------------------------------------------------------------------------------------------ lock
def test_acquire_lock_takes_the_lock_and_runs(world: World) -> None:
    state = world.run(rollout.acquire_lock, planned(world, native()))

    assert state.next == "prepare"
    assert world.repo.get_operation(OP).status is S.RUNNING
    lock = world.repo.get_lock(ENDPOINT)
    assert lock is not None and lock.owner == OP
    assert state.plan is not None
    expected = max(state.plan.max_execution_timeout_seconds, state.plan.total_seconds) + rollout.LOCK_MARGIN_SECONDS
    assert lock.lease_expires_at - world.repo.now() == pytest.approx(expected, abs=5)


def test_acquire_lock_refuses_when_another_operation_holds_it(world: World) -> None:
    world.repo.acquire_lock(ENDPOINT, "op-other", 3600)

    state = world.run(rollout.acquire_lock, planned(world, native()))

    assert state.next == "finish"
    assert state.outcome is not None and state.outcome.status is S.REFUSED
    assert "op-other" in state.outcome.reason
    record = world.repo.get_operation(OP)
    assert record.status is S.REFUSED
    assert record.result is not None and "op-other" in record.result["reason"]
    lock = world.repo.get_lock(ENDPOINT)
    assert lock is not None and lock.owner == "op-other"


def test_acquire_lock_retried_after_it_succeeded_carries_on(world: World) -> None:
    first = planned(world, native())
    world.run(rollout.acquire_lock, first)

    again = world.run(rollout.acquire_lock, first)

    assert again.next == "prepare"


# ------------------------------------------------------------------------------------------------ model
def test_create_model_uses_an_existing_model_as_is(world: World) -> None:
    state = prepared(world, native(), until="create_model")

    assert state.next == "config"
    assert world.sagemaker.called("create_model") == []
    res = state.resources
    assert res is not None
    assert (res.model_name, res.original_config, res.baseline_variant) == ("fraud-v2", "fraud-v1", "AllTraffic")
    assert res.candidate_variant is None and res.staging_config is None
    assert res.alarms == [ALARM]


def test_create_model_from_a_container(world: World) -> None:
    request = native(
        model={
            "source": "container",
            "image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/f:3",
            "model_data_url": "s3://models/3.tar.gz",
            "execution_role_arn": ROLE,
            "environment": {"WORKERS": "2"},
        }
    )
    state = prepared(world, request, until="create_model")

    assert state.plan is not None and state.resources is not None
    name = state.plan.new_endpoint_config_name
    assert state.resources.model_name == name
    [call] = world.sagemaker.called("create_model")
    assert call == {
        "ModelName": name,
        "ExecutionRoleArn": ROLE,
        "Containers": [
            {
                "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/f:3",
                "ModelDataUrl": "s3://models/3.tar.gz",
                "Environment": {"WORKERS": "2"},
            }
        ],
    }
    assert world.sagemaker.inner.describe_model(ModelName=name)["ExecutionRoleArn"] == ROLE
    assert "model" in world.kinds()


def test_create_model_from_a_package_reuses_the_current_models_role(world: World) -> None:
    before = planned(world, native())
    package = native(model={"source": "package", "model_package_arn": PACKAGE})
    state = world.run(rollout.create_model, before.model_copy(update={"request": package}))

    [call] = world.sagemaker.called("create_model")
    assert call["ExecutionRoleArn"] == ROLE  # fraud-v1's, the model the variant serves now
    assert call["Containers"] == [{"ModelPackageName": PACKAGE}]
    assert state.resources is not None and state.resources.model_name == call["ModelName"]


def test_create_model_retried_finds_its_model_already_there(world: World) -> None:
    request = native(
        model={
            "source": "container",
            "image": "img:1",
            "model_data_url": "s3://models/3.tar.gz",
            "execution_role_arn": ROLE,
        }
    )
    before = planned(world, request)
    world.sagemaker.errors["create_model"] = client_error(
        "ValidationException", f'Cannot create already existing model "arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/x".'
    )

    state = world.run(rollout.create_model, before)

    assert state.next == "config"
    assert state.resources is not None


def test_create_model_refused_by_sagemaker_fails_with_its_message(world: World) -> None:
    request = native(
        model={"source": "container", "image": "img:1", "model_data_url": "s3://models/3", "execution_role_arn": ROLE}
    )
    before = planned(world, request)
    world.sagemaker.errors["create_model"] = client_error("ValidationException", "Could not access model data")

    with pytest.raises(DeploymentFailed, match=r"creating model .* failed: ValidationException: Could not access"):
        world.run(rollout.create_model, before)


def test_create_model_managed_names_the_candidate_and_the_staging_config(world: World) -> None:
    state = prepared(world, managed(), until="create_model")

    assert state.plan is not None and state.resources is not None
    assert state.resources.candidate_variant == "AllTraffic-green"
    assert state.resources.staging_config == f"{state.plan.new_endpoint_config_name}-ab"


# ------------------------------------------------------------------------------------------------ config
def test_create_endpoint_config_native_copies_the_variant_and_swaps_model_and_instances(world: World) -> None:
    state = prepared(world, native(instance_type="ml.g4dn.2xlarge", instance_count=3), until="create_endpoint_config")

    assert state.next == "alarms"
    assert state.plan is not None
    config = world.sagemaker.inner.describe_endpoint_config(EndpointConfigName=state.plan.new_endpoint_config_name)
    assert config["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": "fraud-v2",
            "InitialInstanceCount": 3,
            "InstanceType": "ml.g4dn.2xlarge",
            "ModelDataDownloadTimeoutInSeconds": 900,
        }
    ]
    [call] = world.sagemaker.called("create_endpoint_config")
    assert call["KmsKeyId"] == "alias/fraud"


def test_create_endpoint_config_managed_stages_both_variants_then_the_candidate_alone(world: World) -> None:
    state = prepared(world, managed(), until="create_endpoint_config")

    res = state.resources
    assert res is not None and res.staging_config is not None
    staging = world.sagemaker.inner.describe_endpoint_config(EndpointConfigName=res.staging_config)
    weights = {v["VariantName"]: (v["ModelName"], v["InitialVariantWeight"]) for v in staging["ProductionVariants"]}
    assert weights == {"AllTraffic": ("fraud-v1", 1.0), "AllTraffic-green": ("fraud-v2", 0.0)}
    final = world.sagemaker.inner.describe_endpoint_config(EndpointConfigName=res.target_config)
    [only] = final["ProductionVariants"]
    assert (only["VariantName"], only["ModelName"], only["InstanceType"]) == (
        "AllTraffic-green",
        "fraud-v2",
        "ml.g4dn.xlarge",
    )


def test_create_endpoint_config_retried_accepts_its_own_config(world: World) -> None:
    before = prepared(world, native(), until="create_model")
    world.sagemaker.errors["create_endpoint_config"] = client_error(
        "ValidationException", 'Cannot create already existing endpoint configuration "arn:...".'
    )

    assert world.run(rollout.create_endpoint_config, before).next == "alarms"


@pytest.mark.parametrize(
    ("variant", "candidate"),
    [
        ("AllTraffic", "AllTraffic-green"),
        ("AllTraffic-green", "AllTraffic"),
        ("blue", "blue-green"),
        ("x" * 63, "x" * 57 + "-green"),
    ],
)
def test_candidate_variant_name_alternates(variant: str, candidate: str) -> None:
    assert candidate_variant_name(variant) == candidate
    assert len(candidate) <= 63
    assert candidate_variant_name(candidate) != candidate


# ------------------------------------------------------------------------------------------------ alarms
def test_ensure_alarms_creates_the_recommended_alarms(world: World) -> None:
    state = prepared(world, native(alarms=[], create_recommended_alarms=True))

    assert state.next == "native"
    assert state.plan is not None
    names = [f"inferops-{ENDPOINT}-fleet-errors", f"inferops-{ENDPOINT}-new-fleet-latency"]
    alarms = {a["AlarmName"]: a for a in world.cloudwatch.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    assert set(alarms) == set(names)
    latency = alarms[names[1]]
    assert latency["MetricName"] == "ModelLatency"
    assert {d["Name"]: d["Value"] for d in latency["Dimensions"]} == {
        "EndpointName": ENDPOINT,
        "VariantName": "AllTraffic",
        "EndpointConfigName": state.plan.new_endpoint_config_name,
    }
    assert world.repo.alarm_watches(names[0]) == []  # native: SageMaker watches them


def test_ensure_alarms_refuses_a_missing_alarm_by_name(world: World) -> None:
    before = prepared(world, native(alarms=[ALARM, "no-such-alarm"]), until="create_endpoint_config")

    with pytest.raises(DeploymentFailed, match="no-such-alarm") as caught:
        world.run(rollout.ensure_alarms, before)
    assert ALARM not in str(caught.value)


def test_ensure_alarms_managed_watches_the_alarms_for_the_candidate(world: World) -> None:
    state = prepared(world, managed(create_recommended_alarms=True))

    assert state.next == "managed"
    res = state.resources
    assert res is not None
    assert res.alarms == [ALARM, f"inferops-{ENDPOINT}-fleet-errors", f"inferops-{ENDPOINT}-new-fleet-latency"]
    for name in res.alarms:
        assert [w.operation_id for w in world.repo.alarm_watches(name)] == [OP]
    [latency] = world.cloudwatch.describe_alarms(AlarmNames=[res.alarms[2]])["MetricAlarms"]
    dimensions = {d["Name"]: d["Value"] for d in latency["Dimensions"]}
    assert dimensions["VariantName"] == "AllTraffic-green"
    assert dimensions["EndpointConfigName"] == res.staging_config


# ------------------------------------------------------------------------------------------------ updates
def test_start_update_native_sends_the_full_deployment_config(world: World) -> None:
    state = world.run(rollout.start_update, ready(world, native()))

    assert state.plan is not None and state.update is not None
    [call] = world.sagemaker.called("update_endpoint")
    assert call == {
        "EndpointName": ENDPOINT,
        "EndpointConfigName": state.plan.new_endpoint_config_name,
        "DeploymentConfig": state.plan.deployment_config,
    }
    assert call["DeploymentConfig"]["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": ALARM}]}
    assert (state.next, state.update.phase) == ("await", "deploy")
    assert state.update.heartbeat_seconds == math.ceil(state.plan.total_seconds * 1.25) + RECHECK_SECONDS
    assert "update" in world.kinds()


@pytest.mark.parametrize("where", ["current", "pending"])
def test_start_update_retried_does_not_update_twice(world: World, where: str) -> None:
    state = ready(world, native())
    assert state.plan is not None
    target = state.plan.new_endpoint_config_name
    if where == "current":
        world.sagemaker.set_endpoint("InService", target)
    else:
        world.sagemaker.set_endpoint("Updating", "fraud-v1", pending=target)

    after = world.run(rollout.start_update, state)

    assert world.sagemaker.called("update_endpoint") == []
    assert after.next == "await"
    assert after.update is not None and after.update.target_config == target


def test_start_update_stops_before_deploying_when_asked(world: World) -> None:
    state = ready(world, native())
    world.repo.request_stop(OP, kind="abort", reason="changed my mind", by="alice")

    with pytest.raises(StopRequested, match="changed my mind"):
        world.run(rollout.start_update, state)
    assert world.sagemaker.called("update_endpoint") == []


def test_start_update_managed_phases(world: World) -> None:
    state = ready(world, managed())
    res = state.resources
    assert res is not None

    staged = world.run(rollout.start_update, state)
    assert staged.update is not None and (staged.update.phase, staged.update.target_config) == (
        "stage",
        res.staging_config,
    )
    assert "DeploymentConfig" not in world.sagemaker.called("update_endpoint")[-1]

    promoted = world.run(rollout.start_update, rollout.next_step(state, world.services))
    assert promoted.update is not None and (promoted.update.phase, promoted.update.target_config) == (
        "promote",
        res.target_config,
    )

    world.sagemaker.set_endpoint("InService", res.staging_config or "")
    restored = world.run(rollout.start_update, state.model_copy(update={"next": "revert_done"}))
    assert restored.update is not None and (restored.update.phase, restored.update.target_config) == (
        "restore",
        "fraud-v1",
    )
    assert [c["EndpointConfigName"] for c in world.sagemaker.called("update_endpoint")] == [
        res.staging_config,
        res.target_config,
        "fraud-v1",
    ]


def updating(world: World, **update: Any) -> FlowState:
    state = ready(world, native())
    assert state.plan is not None
    fields: dict[str, Any] = {
        "phase": "deploy",
        "target_config": state.plan.new_endpoint_config_name,
        "started_at": world.repo.now(),
        "heartbeat_seconds": 900,
        **update,
    }
    return state.model_copy(update={"update": Update(**fields), "next": "await"})


def test_await_update_parks_the_token_while_the_endpoint_updates(world: World) -> None:
    state = updating(world)
    world.sagemaker.set_endpoint("Updating", "fraud-v1")

    rollout.await_update(state, world.services, "token-1")

    stored = world.repo.get_task_token(ENDPOINT, WaitPurpose.ENDPOINT_UPDATE)
    assert stored is not None and (stored.token, stored.operation_id) == ("token-1", OP)
    assert world.sfn.successes == []


def test_await_update_resumes_itself_once_when_the_endpoint_already_settled(world: World) -> None:
    state = updating(world)
    assert state.update is not None
    world.sagemaker.set_endpoint("InService", state.update.target_config)

    rollout.await_update(state, world.services, "token-1")

    assert world.sfn.successes == [("token-1", {"source": "DescribeEndpoint", "status": "InService"})]
    assert world.repo.get_task_token(ENDPOINT, WaitPurpose.ENDPOINT_UPDATE) is None


def test_await_update_leaves_the_resume_to_the_event_handler_that_took_the_token(world: World) -> None:
    state = updating(world)
    assert state.update is not None
    world.sagemaker.set_endpoint("InService", state.update.target_config)
    # the endpoint-events handler takes the token between our put and our DescribeEndpoint
    world.sagemaker.before["describe_endpoint"] = lambda: world.repo.take_task_token(
        ENDPOINT, WaitPurpose.ENDPOINT_UPDATE
    )

    rollout.await_update(state, world.services, "token-1")

    assert world.sfn.successes == []


@pytest.mark.parametrize(
    ("status", "pending", "settled"),
    [("InService", None, True), ("Failed", None, True), ("Updating", None, False), ("InService", "next", False)],
)
def test_check_update_decides_with_one_describe(world: World, status: str, pending: str | None, settled: bool) -> None:
    state = updating(world)
    world.sagemaker.set_endpoint(status, "fraud-v1", pending=pending)
    world.sagemaker.calls.clear()

    after = world.run(rollout.check_update, state)

    assert after.update is not None
    if settled:
        assert (after.next, after.update.resumed) == ("settled", True)
    else:
        assert (after.next, after.update.heartbeat_seconds) == ("await", RECHECK_SECONDS)
    assert world.kinds()[-1] == "heartbeat"
    assert world.sagemaker.calls == [("describe_endpoint", {"EndpointName": ENDPOINT})]


# ------------------------------------------------------------------------------------------------ waits
def test_await_approval_pauses_and_parks_the_token(world: World) -> None:
    state = rollout.next_step(ready(world, managed()), world.services)

    rollout.await_approval(state, world.services, "approve-token")

    assert world.repo.get_operation(OP).status is S.PAUSED
    stored = world.repo.get_task_token(ENDPOINT, WaitPurpose.APPROVAL)
    assert stored is not None and stored.token == "approve-token"
    assert world.sfn.failures == []


@pytest.mark.parametrize(("kind", "error"), [("abort", "StopRequested"), ("alarm", "AlarmTriggered")])
def test_a_stop_that_came_before_the_bake_fails_it_at_once(world: World, kind: Any, error: str) -> None:
    state = baking(world)
    world.repo.request_stop(OP, kind=kind, reason="stop now", by="test")

    rollout.await_bake(state, world.services, "bake-token")

    assert world.sfn.failures == [("bake-token", error, "stop now")]
    assert world.repo.get_task_token(ENDPOINT, WaitPurpose.BAKE) is None


# ------------------------------------------------------------------------------------------------ analyze
def verdict(result: analysis.Result, reason: str = "because") -> analysis.Verdict:
    return analysis.Verdict(result=result, score=50.0, reason=reason, metrics=[])


class Judge:
    """Stands in for `analysis.evaluate`: answers queued verdicts and records what it was asked."""

    def __init__(self) -> None:
        self.answers: list[analysis.Verdict] = []
        self.calls: list[dict[str, Any]] = []

    def __call__(self, cloudwatch: Any, spec: Any, **window: Any) -> analysis.Verdict:
        self.calls.append(window)
        return self.answers.pop(0)


@pytest.fixture
def judge(monkeypatch: pytest.MonkeyPatch) -> Judge:
    fake = Judge()
    monkeypatch.setattr(analysis, "evaluate", fake)
    return fake


def test_analyze_pass_continues_and_records_the_verdict(world: World, judge: Judge) -> None:
    judge.answers.append(verdict(analysis.Result.PASS, "all good"))
    state = baking(world)

    after = world.run(rollout.analyze, state)

    assert after.next == "continue"
    assert after.progress is not None
    assert after.progress.verdicts == [{"share": 10, "result": "Pass", "score": 50.0, "reason": "all good"}]
    [call] = judge.calls
    res = state.resources
    assert res is not None and state.progress is not None
    assert (call["baseline"].variant_name, call["canary"].variant_name) == ("AllTraffic", "AllTraffic-green")
    assert call["canary"].endpoint_config_name == res.staging_config
    assert call["start"].timestamp() == pytest.approx(state.progress.bake_started_at)
    assert world.kinds()[-1] == "verdict"


def test_analyze_inconclusive_extends_the_bake(world: World, judge: Judge) -> None:
    judge.answers.append(verdict(analysis.Result.INCONCLUSIVE, "too few requests"))

    after = world.run(rollout.analyze, baking(world))

    assert after.next == "bake"
    assert after.progress is not None and after.progress.extensions == 1


def test_analyze_inconclusive_after_every_extension_rolls_back(world: World, judge: Judge) -> None:
    judge.answers.append(verdict(analysis.Result.INCONCLUSIVE, "too few requests"))
    state = baking(world)
    assert state.progress is not None
    state = state.model_copy(update={"progress": state.progress.model_copy(update={"extensions": 2})})

    after = world.run(rollout.analyze, state)

    assert after.next == "rollback"
    assert after.error is not None and after.error["Error"] == "AnalysisFailed"
    assert after.error["Cause"] == "analysis Inconclusive at 10 %: too few requests (after 2 extension(s) of the bake)"


def test_analyze_fail_rolls_back(world: World, judge: Judge) -> None:
    judge.answers.append(verdict(analysis.Result.FAIL, "latency +80 %"))

    after = world.run(rollout.analyze, baking(world))

    assert after.next == "rollback"
    assert after.error == {"Error": "AnalysisFailed", "Cause": "analysis Fail at 10 %: latency +80 %"}


@pytest.mark.parametrize(("on_marginal", "branch"), [("rollback", "rollback"), ("continue", "continue")])
def test_analyze_marginal_follows_the_request(world: World, judge: Judge, on_marginal: str, branch: str) -> None:
    judge.answers.append(verdict(analysis.Result.MARGINAL))
    request = managed().model_copy(
        update={"analysis": managed().analysis.model_copy(update={"on_marginal": on_marginal})}  # type: ignore[union-attr]
    )

    after = world.run(rollout.analyze, baking(world, request))

    assert after.next == branch
    assert after.progress is not None and not after.progress.pause_next


def test_analyze_marginal_with_pause_asks_for_approval_before_the_next_step(world: World, judge: Judge) -> None:
    judge.answers.append(verdict(analysis.Result.MARGINAL))
    request = managed(analysis={"min_requests": 50, "on_marginal": "pause"})

    after = world.run(rollout.analyze, baking(world, request))

    assert after.next == "continue"
    assert after.progress is not None and after.progress.pause_next
    following = world.run(rollout.next_step, after)
    assert following.next == "approve"
    assert following.progress is not None
    assert (following.progress.share, following.progress.pause_next) == (50, False)


def test_analyze_stops_on_a_rollback_alarm_before_judging(world: World, judge: Judge) -> None:
    world.cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="errors")

    with pytest.raises(StopRequested, match=f"{ALARM} in ALARM after the 10 % step"):
        world.run(rollout.analyze, baking(world))
    assert judge.calls == []  # never judged


def test_analyze_stops_on_an_abort(world: World, judge: Judge) -> None:
    state = baking(world)
    world.repo.request_stop(OP, kind="abort", reason="wrong build", by="alice")

    with pytest.raises(StopRequested, match="wrong build"):
        world.run(rollout.analyze, state)


def test_analyze_without_an_analysis_spec_continues(world: World, judge: Judge) -> None:
    request = managed().model_copy(update={"analysis": None})

    assert world.run(rollout.analyze, baking(world, request)).next == "continue"
    assert judge.calls == []


# ------------------------------------------------------------------------------------------------ rollback
def test_rollback_sends_the_traffic_back_then_waits(world: World) -> None:
    state = baking(world).model_copy(update={"error": {"Error": "AnalysisFailed", "Cause": "bad"}})
    res = state.resources
    assert res is not None and res.staging_config is not None
    world.sagemaker.set_endpoint(
        "InService", res.staging_config, weights={"AllTraffic": 90.0, "AllTraffic-green": 10.0}
    )

    after = world.run(rollout.rollback, state)

    assert after.next == "await"
    assert after.update is not None and after.update.phase == "revert"
    [call] = world.sagemaker.called("update_endpoint_weights_and_capacities")
    assert call["DesiredWeightsAndCapacities"] == [
        {"VariantName": "AllTraffic", "DesiredWeight": 100.0},
        {"VariantName": "AllTraffic-green", "DesiredWeight": 0.0},
    ]


def test_rollback_with_no_traffic_on_the_candidate_restores_the_old_config(world: World) -> None:
    state = baking(world).model_copy(update={"error": {"Error": "StopRequested", "Cause": "x"}})
    res = state.resources
    assert res is not None and res.staging_config is not None
    world.sagemaker.set_endpoint("InService", res.staging_config, weights={"AllTraffic": 1.0, "AllTraffic-green": 0.0})

    assert world.run(rollout.rollback, state).next == "revert_done"
    assert world.sagemaker.called("update_endpoint_weights_and_capacities") == []


# ------------------------------------------------------------------------------------------------ reconcile
def test_reconcile_target_config_in_service_succeeds(world: World) -> None:
    state = updating(world)
    assert state.update is not None
    world.sagemaker.set_endpoint("InService", state.update.target_config)

    after = world.run(rollout.reconcile, state)

    assert after.next == "finish"
    assert after.outcome is not None
    assert (after.outcome.status, after.outcome.endpoint_config) == (S.SUCCEEDED, state.update.target_config)


def test_reconcile_old_config_after_an_alarm_is_rolled_back(world: World) -> None:
    failure = f"Deployment was rolled back: alarm {ALARM} went into ALARM during the canary bake"
    state = updating(world)
    world.sagemaker.set_endpoint("InService", "fraud-v1", failure=failure)

    after = world.run(rollout.reconcile, state)

    assert after.outcome is not None and after.outcome.status is S.ROLLED_BACK
    assert failure in after.outcome.reason and "fraud-v1" in after.outcome.reason


def test_reconcile_old_config_after_a_failed_health_check_is_failed(world: World) -> None:
    failure = "The primary container for production variant AllTraffic did not pass the ping health check."
    state = updating(world)
    world.sagemaker.set_endpoint("InService", "fraud-v1", failure=failure)

    after = world.run(rollout.reconcile, state)

    assert after.outcome is not None and after.outcome.status is S.FAILED
    assert "ping health check" in after.outcome.reason


def test_reconcile_after_an_abort_is_aborted(world: World) -> None:
    state = updating(world)
    world.repo.request_stop(OP, kind="abort", reason="wrong build", by="alice")
    world.sagemaker.set_endpoint("InService", "fraud-v1", failure=f"rolled back: alarm {ALARM}")

    after = world.run(rollout.reconcile, state)

    assert after.outcome is not None and after.outcome.status is S.ABORTED
    assert "wrong build" in after.outcome.reason and "fraud-v1" in after.outcome.reason


def test_reconcile_while_still_updating_is_retryable(world: World) -> None:
    state = updating(world)
    world.sagemaker.set_endpoint("Updating", "fraud-v1")

    with pytest.raises(Retryable, match="still Updating"):
        world.run(rollout.reconcile, state)


def test_reconcile_a_failed_endpoint_is_failed(world: World) -> None:
    state = updating(world)
    world.sagemaker.set_endpoint("Failed", "fraud-v1", failure="quota exceeded")

    after = world.run(rollout.reconcile, state)

    assert after.outcome is not None and after.outcome.status is S.FAILED
    assert "Failed" in after.outcome.reason and "quota exceeded" in after.outcome.reason


# ------------------------------------------------------------------------------------------------ failures
def lambda_error(error: str, message: str) -> dict[str, str]:
    """What a Catch puts in $.error for a Lambda that raised."""
    return {"Error": error, "Cause": json.dumps({"errorMessage": message, "errorType": error, "stackTrace": []})}


def test_handle_failure_while_sagemaker_updates_goes_back_to_waiting(world: World) -> None:
    state = ready(world, native()).model_copy(update={"error": lambda_error("DeploymentFailed", "oops")})
    world.sagemaker.set_endpoint("Updating", "fraud-v1")

    after = world.run(rollout.handle_failure, state)

    assert after.next == "await"
    assert after.update is not None and after.update.heartbeat_seconds == RECHECK_SECONDS
    assert after.failure_rounds == 1
    entry = world.repo.timeline(OP)[-1]
    assert (entry.kind, entry.message) == ("error", "DeploymentFailed: oops")


def test_handle_failure_with_the_candidate_on_the_endpoint_rolls_back(world: World) -> None:
    state = baking(world).model_copy(update={"error": lambda_error("DeploymentFailed", "oops")})
    res = state.resources
    assert res is not None and res.staging_config is not None
    world.sagemaker.set_endpoint(
        "InService", res.staging_config, weights={"AllTraffic": 90.0, "AllTraffic-green": 10.0}
    )

    assert world.run(rollout.handle_failure, state).next == "rollback"


def test_handle_failure_after_an_update_reconciles(world: World) -> None:
    state = updating(world).model_copy(update={"error": lambda_error("DeploymentFailed", "oops")})
    world.sagemaker.set_endpoint("InService", "fraud-v1")

    assert world.run(rollout.handle_failure, state).next == "reconcile"


@pytest.mark.parametrize(("error", "status"), [("DeploymentFailed", S.FAILED), ("StopRequested", S.ABORTED)])
def test_handle_failure_before_anything_started_finishes(world: World, error: str, status: S) -> None:
    state = ready(world, native()).model_copy(update={"error": lambda_error(error, "no model data")})
    world.sagemaker.set_endpoint("InService", "fraud-v1")

    after = world.run(rollout.handle_failure, state)

    assert after.next == "finish"
    assert after.outcome is not None
    assert (after.outcome.status, after.outcome.reason) == (status, "no model data")


def test_handle_failure_before_the_plan_finishes_failed(world: World) -> None:
    state = fresh(native()).model_copy(update={"error": {"Error": "States.TaskFailed", "Cause": "lambda gone"}})

    after = world.run(rollout.handle_failure, state)

    assert after.outcome is not None and (after.outcome.status, after.outcome.reason) == (S.FAILED, "lambda gone")
    assert world.sagemaker.calls == []


def test_handle_failure_gives_up_after_the_last_round(world: World) -> None:
    state = ready(world, native()).model_copy(
        update={"error": lambda_error("Retryable", "throttled"), "failure_rounds": MAX_FAILURE_ROUNDS}
    )
    world.sagemaker.set_endpoint("Updating", "fraud-v1")
    world.sagemaker.calls.clear()

    after = world.run(rollout.handle_failure, state)

    assert after.next == "finish"
    assert after.outcome is not None
    assert (after.outcome.status, after.outcome.reason) == (S.FAILED, "gave up: throttled")
    assert world.sagemaker.calls == []


# ------------------------------------------------------------------------------------------------ finish
def test_finish_records_the_outcome_releases_the_lock_and_announces(world: World) -> None:
    state = updating(world)
    assert state.update is not None and state.plan is not None
    world.sagemaker.set_endpoint("InService", state.update.target_config)
    reconciled = world.run(rollout.reconcile, state)

    done = world.run(rollout.finish, reconciled)

    record = world.repo.get_operation(OP)
    assert record.status is S.SUCCEEDED
    assert record.result is not None and record.result["endpoint_config"] == state.update.target_config
    assert world.repo.get_lock(ENDPOINT) is None
    assert done.next == "announce"
    assert done.event == {
        "operationId": OP,
        "endpointName": ENDPOINT,
        "status": "SUCCEEDED",
        "reason": f"{state.update.target_config} in service",
        "endpointConfigName": state.update.target_config,
        "strategy": "canary",
        "path": "native",
    }

    again = world.run(rollout.finish, reconciled)

    assert again.event == done.event
    assert world.kinds().count("finished") == 1
    assert world.repo.get_operation(OP).version == record.version


def test_finish_managed_forgets_its_alarm_watches(world: World) -> None:
    state = world.run(rollout.ensure_alarms, ready(world, managed()))
    assert world.repo.alarm_watches(ALARM) != []

    world.run(rollout.finish, rollout._end(state, S.ROLLED_BACK, "analysis Fail"))

    assert world.repo.alarm_watches(ALARM) == []
    assert world.repo.get_operation(OP).status is S.ROLLED_BACK


def test_finish_does_not_release_another_operations_lock(world: World) -> None:
    world.repo.acquire_lock(ENDPOINT, "op-other", 3600)
    refused = world.run(rollout.acquire_lock, planned(world, native()))

    world.run(rollout.finish, refused)

    lock = world.repo.get_lock(ENDPOINT)
    assert lock is not None and lock.owner == "op-other"
    assert world.repo.get_operation(OP).status is S.REFUSED


def test_finish_records_an_operation_that_failed_before_it_was_recorded(world: World) -> None:
    state = fresh(native()).model_copy(update={"error": {"Error": "States.TaskFailed", "Cause": "lambda gone"}})

    done = world.run(rollout.finish, state)

    record = world.repo.get_operation(OP)
    assert record.status is S.FAILED
    assert record.result is not None and record.result["reason"] == "lambda gone"
    assert done.event is not None and done.event["status"] == "FAILED"


def test_finish_before_a_plan_releases_the_lock_the_api_took(world: World) -> None:
    world.repo.create_operation(rollout.KIND, ENDPOINT, {}, OP)
    world.repo.acquire_lock(ENDPOINT, OP, 900)  # as deployments.start does
    request = native(strategy={"type": "canary", "size": {"value": 60}, "bake_seconds": 600})
    refused = world.run(rollout.plan_step, fresh(request))
    assert refused.plan is None

    world.run(rollout.finish, refused)

    assert world.repo.get_lock(ENDPOINT) is None
