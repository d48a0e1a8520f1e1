"""The deployment flow's steps: what each task of `statemachines/deployment.asl.json` does.

The state machine orchestrates (order, waits, callbacks, retries with jitter, catches); every decision is
here. Each step takes the flow's state (`FlowState`) and returns it updated, with `next` naming the branch the
state machine takes. Steps are idempotent: a retried step (after a throttle, a timeout or a crashed Lambda)
finds its own earlier work done and carries on.

Errors a step raises reach the state machine by class name: `Retryable` (throttling, 5xx: retried with
backoff and jitter), `StopRequested` (an operator's abort or a rollback alarm: roll back), `DeploymentFailed`
(anything else, with a reason a user can act on). Every ending goes through `finish`, which records the
outcome, restores what the flow changed around the endpoint and releases the endpoint's lock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field

from inferops import analysis, metrics
from inferops.endpoints import read_endpoint, read_model
from inferops.errors import Conflict, NotFound
from inferops.model import Model
from inferops.planner import (
    ContainerModel,
    DeploymentRequest,
    ExistingModel,
    Managed,
    PackageModel,
    Plan,
    PlanResult,
    plan,
)
from inferops.storage import OperationStatus, Repository, WaitPurpose

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_stepfunctions import SFNClient

KIND = "deployment"
EVENT_SOURCE = "inferops"
EVENT_DETAIL_TYPE = "InferOps Deployment Finished"
LOCK_MARGIN_SECONDS = 3600
STEP_LEASE_SECONDS = 7 * 86400  # a managed step may wait for a human for up to APPROVAL_TIMEOUT_SECONDS
APPROVAL_TIMEOUT_SECONDS = 7 * 86400
RECHECK_SECONDS = 300  # after a missed event: how long until the next DescribeEndpoint
MAX_FAILURE_ROUNDS = 3
SETTLED = frozenset({"InService", "Failed", "UpdateRollbackFailed", "OutOfService"})
_RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalError",
    }
)


# ------------------------------------------------------------------------------------------------ errors
class StepError(Exception):
    """Base of the errors the state machine routes on (the Lambda error type is the class name)."""


class Retryable(StepError):
    """Throttled or a 5xx from AWS: the state machine retries the step with backoff and jitter."""


class StopRequested(StepError):
    """An operator aborted, or a rollback alarm fired: the flow rolls back."""


class DeploymentFailed(StepError):
    """A failure no retry will fix; the message is the reason shown to users."""


@contextmanager
def aws(what: str, failure: type[StepError] = DeploymentFailed) -> Iterator[None]:
    """Translate an AWS error into the step error the state machine knows how to handle: `Retryable` for
    throttling and 5xx, otherwise the flow's final error (`failure`)."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
        message = error.response.get("Error", {}).get("Message", str(error))
        if code in _RETRYABLE_CODES or status >= 500:
            raise Retryable(f"{what}: {code or status}: {message}") from error
        raise failure(f"{what} failed: {code}: {message}") from error


def error_code(error: ClientError) -> tuple[str, str]:
    err = error.response.get("Error", {})
    return err.get("Code", ""), err.get("Message", "")


# ------------------------------------------------------------------------------------------------ state
class _State(Model):
    model_config = ConfigDict(extra="ignore")


class Resources(_State):
    """What the flow created or changed, so that every ending can restore or report it."""

    model_name: str
    original_config: str
    target_config: str
    baseline_variant: str
    candidate_variant: str | None = Field(default=None, description="managed path: the variant that takes traffic")
    staging_config: str | None = Field(default=None, description="managed path: old and candidate variants")
    alarms: list[str] = Field(default_factory=list)
    scaling: dict[str, Any] | None = Field(default=None, description="autoscaling to restore after the rollout")


class Update(_State):
    """The UpdateEndpoint (or weights change) the flow is waiting for."""

    phase: Literal["deploy", "stage", "shift", "promote", "revert", "restore"]
    target_config: str
    started_at: float
    heartbeat_seconds: int
    resumed: bool = False


class Progress(_State):
    """Managed path: where the traffic shift stands."""

    index: int = -1
    share: int = 0
    shares: list[int]
    approvals: list[int] = Field(default_factory=list)
    bake_seconds: int
    bake_started_at: float | None = None
    extensions: int = 0
    pause_next: bool = Field(default=False, description="a Marginal verdict asked a human before going on")
    verdicts: list[dict[str, Any]] = Field(default_factory=list)


class Outcome(_State):
    status: OperationStatus
    reason: str
    endpoint_config: str | None = None
    endpoint_status: str | None = None


class FlowState(_State):
    """The state machine's state: the Lambda steps return it whole, the Choice states read `next`."""

    operation_id: str
    request: DeploymentRequest
    plan: Plan | None = None
    resources: Resources | None = None
    update: Update | None = None
    progress: Progress | None = None
    outcome: Outcome | None = None
    error: dict[str, Any] | None = Field(default=None, description="what a Catch caught: Error and Cause")
    failure_rounds: int = 0
    event: dict[str, Any] | None = Field(default=None, description="the detail of the closing EventBridge event")
    next: str = ""


@dataclass(frozen=True)
class Services:
    """The clients a step needs (injected: the Lambda builds real ones, tests and the twin their own)."""

    repo: Repository
    sagemaker: SageMakerClient
    autoscaling: ApplicationAutoScalingClient
    cloudwatch: CloudWatchClient
    stepfunctions: SFNClient


Step = Callable[[FlowState, Services], FlowState]
TokenStep = Callable[[FlowState, Services, str], FlowState]


def _now(services: Services) -> float:
    return services.repo.now()


def _timeline(services: Services, state: FlowState, kind: str, message: str, **data: Any) -> None:
    services.repo.append_timeline(state.operation_id, kind, message, data or None)


def _plan(state: FlowState) -> Plan:
    if state.plan is None:
        raise DeploymentFailed("the flow lost its plan (state without 'plan'): start a new deployment")
    return state.plan


def _resources(state: FlowState) -> Resources:
    if state.resources is None:
        raise DeploymentFailed("the flow lost its resources (state without 'resources'): start a new deployment")
    return state.resources


def _check_stop(state: FlowState, services: Services) -> None:
    stop = services.repo.get_operation(state.operation_id).stop_request
    if stop:
        raise StopRequested(str(stop.get("reason", "stop requested")))


# ------------------------------------------------------------------------------------------------ pre-flight
def preflight(
    request: DeploymentRequest, sagemaker: SageMakerClient, autoscaling: ApplicationAutoScalingClient
) -> PlanResult:
    """Read the endpoint and the model the request names, and plan (read-only; the API's /plans too)."""
    endpoint = read_endpoint(request.endpoint_name, sagemaker, autoscaling)
    spec = request.model
    name = spec.model_package_arn if isinstance(spec, PackageModel) else getattr(spec, "model_name", None)
    return plan(request, endpoint, read_model(spec.source, name, sagemaker))


def plan_step(state: FlowState, services: Services) -> FlowState:
    """Plan against the endpoint as it is now; a refusal ends the flow with every violation."""
    request = state.request
    repo = services.repo
    try:
        record = repo.get_operation(state.operation_id)
    except NotFound:
        record = repo.create_operation(KIND, request.endpoint_name, request.model_dump(mode="json"), state.operation_id)
    if record.terminal:
        raise DeploymentFailed(f"operation {state.operation_id} already ended as {record.status}")
    if record.stop_request:
        return _end(state, OperationStatus.ABORTED, f"aborted before it started: {record.stop_request['reason']}")
    with aws("reading the endpoint"):
        result = preflight(request, services.sagemaker, services.autoscaling)
    if not result.ok or result.plan is None:
        violations = [v.model_dump(mode="json") for v in result.violations]
        first = result.violations[0]
        reason = f"{len(violations)} problem(s); {first.field}: {first.message}"
        repo.transition(
            state.operation_id, OperationStatus.REFUSED, result={"reason": reason, "violations": violations}
        )
        _timeline(services, state, "refused", reason, violations=violations)
        return state.model_copy(
            update={"outcome": Outcome(status=OperationStatus.REFUSED, reason=reason), "next": "finish"}
        )
    repo.save_plan(state.operation_id, result.plan.model_dump(mode="json"))
    _timeline(
        services,
        state,
        "planned",
        f"{result.plan.strategy} on the {result.plan.path} path to {result.plan.new_endpoint_config_name}",
        warnings=result.warnings,
    )
    return state.model_copy(update={"plan": result.plan, "next": "lock"})


def lock_for_flow(services: Services, operation_id: str, endpoint: str, lease: float) -> str | None:
    """Take (or extend: the API took it for the start) the endpoint's lock for the flow's whole life and mark the
    operation RUNNING; None when held, else why it is refused (another operation holds the endpoint)."""
    repo = services.repo
    try:
        repo.acquire_lock(endpoint, operation_id, lease)
    except Conflict as busy:
        repo.transition(operation_id, OperationStatus.REFUSED, result={"reason": busy.message})
        repo.append_timeline(operation_id, "refused", busy.message)
        return busy.message
    if repo.get_operation(operation_id).status is OperationStatus.PENDING:  # not on a retry
        repo.transition(operation_id, OperationStatus.RUNNING, expected=OperationStatus.PENDING)
        repo.append_timeline(operation_id, "locked", f"endpoint {endpoint} locked for {lease:.0f} s")
    return None


def acquire_lock(state: FlowState, services: Services) -> FlowState:
    """One operation per endpoint: a held lock refuses this one (the API reports that as a 409 earlier)."""
    the_plan = _plan(state)
    lease = max(the_plan.max_execution_timeout_seconds, the_plan.total_seconds) + LOCK_MARGIN_SECONDS
    if the_plan.path == "managed":
        lease = max(lease, STEP_LEASE_SECONDS)
    refused = lock_for_flow(services, state.operation_id, the_plan.endpoint_name, lease)
    if refused is not None:
        return state.model_copy(
            update={"outcome": Outcome(status=OperationStatus.REFUSED, reason=refused), "next": "finish"}
        )
    return state.model_copy(update={"next": "prepare"})


# ------------------------------------------------------------------------------------------------ resources
def create_model(state: FlowState, services: Services) -> FlowState:
    """Make the model the new config will serve (a named model is used as is)."""
    the_plan = _plan(state)
    spec = state.request.model
    sm = services.sagemaker
    with aws("reading the endpoint's configuration"):
        endpoint = sm.describe_endpoint(EndpointName=the_plan.endpoint_name)
        config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    baseline = next(v for v in config["ProductionVariants"] if v["VariantName"] == the_plan.variant_name)
    if isinstance(spec, ExistingModel):
        model_name = spec.model_name
    else:
        model_name = the_plan.new_endpoint_config_name
        if isinstance(spec, ContainerModel):
            role = spec.execution_role_arn
            container: dict[str, Any] = {"Image": spec.image, "ModelDataUrl": spec.model_data_url}
            if spec.environment:
                container["Environment"] = spec.environment
        else:
            assert isinstance(spec, PackageModel)
            role = _current_role(sm, baseline.get("ModelName"))
            container = {"ModelPackageName": spec.model_package_arn}
        try:
            sm.create_model(ModelName=model_name, ExecutionRoleArn=role, Containers=[container])  # type: ignore[list-item]
        except ClientError as error:
            code, message = error_code(error)
            if not (code == "ValidationException" and "already exist" in message):  # a retried step
                with aws(f"creating model {model_name}"):
                    raise
        _timeline(services, state, "model", f"model {model_name} created")
    original = endpoint["EndpointConfigName"]
    resources = Resources(
        model_name=model_name,
        original_config=original,
        target_config=the_plan.new_endpoint_config_name,
        baseline_variant=the_plan.variant_name,
        alarms=list(the_plan.alarms),
    )
    if the_plan.path == "managed":
        resources = resources.model_copy(
            update={
                "candidate_variant": candidate_variant_name(the_plan.variant_name),
                "staging_config": staging_config_name(the_plan.new_endpoint_config_name),
            }
        )
    return state.model_copy(update={"resources": resources, "next": "config"})


def _current_role(sm: SageMakerClient, model_name: str | None) -> str:
    """A package needs an execution role: reuse the one of the model it replaces."""
    if not model_name:
        raise DeploymentFailed("a model package needs an execution role and the current variant has no model")
    with aws(f"reading model {model_name}"):
        return sm.describe_model(ModelName=model_name)["ExecutionRoleArn"]


def candidate_variant_name(variant: str) -> str:
    """Managed path: the new variant's name; alternating `-green` keeps the next rollout's names distinct."""
    if variant.endswith("-green"):
        return variant.removesuffix("-green") or "green"
    return f"{variant[:57]}-green"


def staging_config_name(target: str) -> str:
    return f"{target[:60]}-ab"


def create_endpoint_config(state: FlowState, services: Services) -> FlowState:
    """Copy the current config, swap in the new model (and instance type/count); managed: the A/B config too."""
    the_plan, res = _plan(state), _resources(state)
    sm = services.sagemaker
    with aws("reading the endpoint's configuration"):
        current = sm.describe_endpoint_config(EndpointConfigName=res.original_config)
    variants = [dict(v) for v in current["ProductionVariants"]]
    baseline = next(v for v in variants if v["VariantName"] == res.baseline_variant)
    new = {**baseline, "ModelName": res.model_name}
    if the_plan.target_instance_type and "ServerlessConfig" not in baseline:
        new["InstanceType"] = the_plan.target_instance_type
        new["InitialInstanceCount"] = the_plan.target_instance_count
    described: dict[str, Any] = dict(current)
    extra: dict[str, Any] = {
        k: described[k]
        for k in ("DataCaptureConfig", "AsyncInferenceConfig", "KmsKeyId", "ShadowProductionVariants")
        if k in described
    }
    if res.candidate_variant is None:
        final = [new if v is baseline else v for v in variants]
        _create_config(sm, res.target_config, final, extra)
    else:
        candidate = {**new, "VariantName": res.candidate_variant, "InitialVariantWeight": 1.0}
        assert res.staging_config is not None
        staged_old = {**baseline, "InitialVariantWeight": 1.0}
        _create_config(sm, res.staging_config, [staged_old, {**candidate, "InitialVariantWeight": 0.0}], extra)
        _create_config(sm, res.target_config, [candidate], extra)
    _timeline(services, state, "config", f"endpoint config {res.target_config} created")
    return state.model_copy(update={"next": "alarms"})


def _create_config(sm: SageMakerClient, name: str, variants: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    keep = {k: v for k, v in extra.items() if not (k == "ShadowProductionVariants" and len(variants) > 1)}
    try:
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=variants, **keep)  # type: ignore[arg-type]
    except ClientError as error:
        code, message = error_code(error)
        if code == "ValidationException" and "already exist" in message:
            return  # a retried step: deterministic names make the earlier attempt's config ours
        with aws(f"creating endpoint config {name}"):
            raise


def ensure_alarms(state: FlowState, services: Services) -> FlowState:
    """Create the recommended rollback alarms when asked; every named alarm must exist."""
    the_plan, res = _plan(state), _resources(state)
    cw = services.cloudwatch
    for spec in the_plan.recommended_alarms:
        dimensions = dict(spec.dimensions)
        if res.candidate_variant is not None:  # managed: watch the candidate variant, not the whole endpoint
            dimensions["VariantName"] = res.candidate_variant
            if "EndpointConfigName" in dimensions and res.staging_config:
                dimensions["EndpointConfigName"] = res.staging_config
        with aws(f"creating alarm {spec.name}"):
            cw.put_metric_alarm(
                AlarmName=spec.name,
                Namespace="AWS/SageMaker",
                MetricName=spec.metric_name,
                Statistic=spec.statistic,  # type: ignore[arg-type]
                Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
                Period=spec.period_seconds,
                EvaluationPeriods=spec.evaluation_periods,
                Threshold=spec.threshold,
                ComparisonOperator=spec.comparison,  # type: ignore[arg-type]
                TreatMissingData=spec.treat_missing_data,
                AlarmDescription=f"InferOps rollback alarm for endpoint {the_plan.endpoint_name}",
            )
    found: set[str] = set()
    names = list(res.alarms)
    with aws("reading the rollback alarms"):
        for start in range(0, len(names), 100):
            response = cw.describe_alarms(
                AlarmNames=names[start : start + 100], AlarmTypes=["MetricAlarm", "CompositeAlarm"]
            )
            found |= {a["AlarmName"] for a in response.get("MetricAlarms", [])}
            found |= {a["AlarmName"] for a in response.get("CompositeAlarms", [])}
    missing = [n for n in names if n not in found]
    if missing:
        raise DeploymentFailed(f"rollback alarm(s) {missing} do not exist: create them or drop them from 'alarms'")
    if res.candidate_variant is not None:
        ttl = STEP_LEASE_SECONDS + the_plan.total_seconds
        for name in names:
            services.repo.put_alarm_watch(name, the_plan.endpoint_name, state.operation_id, ttl)
    if names:
        _timeline(services, state, "alarms", f"watching {len(names)} rollback alarm(s): {', '.join(names)}")
    return state.model_copy(update={"next": the_plan.path})


# ------------------------------------------------------------------------------------------------ updates
def start_update(state: FlowState, services: Services) -> FlowState:
    """Call UpdateEndpoint for the current phase (native: with the full DeploymentConfig)."""
    the_plan, res = _plan(state), _resources(state)
    phase: Literal["deploy", "stage", "promote", "restore"]
    if the_plan.path == "native":
        phase, target = "deploy", res.target_config
    elif state.next == "revert_done":
        phase, target = "restore", res.original_config
    elif state.progress is None:
        phase, target = "stage", res.staging_config or res.target_config
    else:
        phase, target = "promote", res.target_config
    if phase in ("deploy", "stage"):
        _check_stop(state, services)
    sm = services.sagemaker
    with aws("reading the endpoint"):
        endpoint = sm.describe_endpoint(EndpointName=the_plan.endpoint_name)
    pending = (endpoint.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    already = endpoint["EndpointConfigName"] == target or pending == target
    if not already:
        scaling = state.resources.scaling if state.resources else None
        if phase in ("deploy", "stage") and the_plan.autoscaling == "deregister_and_restore" and scaling is None:
            scaling = _deregister_scaling(services, state)
            res = res.model_copy(update={"scaling": scaling})
        kwargs: dict[str, Any] = {"EndpointName": the_plan.endpoint_name, "EndpointConfigName": target}
        if phase == "deploy" and the_plan.deployment_config:
            kwargs["DeploymentConfig"] = the_plan.deployment_config
        if phase == "deploy" and the_plan.autoscaling == "deregister_and_restore":
            kwargs["RetainAllVariantProperties"] = True  # keep the fleet size autoscaling had reached
            if state.request.instance_count is not None:  # ... unless the request sets it
                kwargs["ExcludeRetainedVariantProperties"] = [{"VariantPropertyType": "DesiredInstanceCount"}]
        with aws(f"UpdateEndpoint to {target}"):
            sm.update_endpoint(**kwargs)
        _timeline(services, state, "update", f"UpdateEndpoint to {target} ({phase})", phase=phase)
    expected = the_plan.total_seconds if phase == "deploy" else the_plan.steps[0].duration_seconds
    update = Update(
        phase=phase,
        target_config=target,
        started_at=_now(services),
        heartbeat_seconds=_heartbeat(expected),
    )
    return state.model_copy(update={"resources": res, "update": update, "next": "await"})


def _heartbeat(expected_seconds: float) -> int:
    """How long to wait for SageMaker's event before one DescribeEndpoint: the expected time plus slack."""
    return math.ceil(expected_seconds * 1.25) + RECHECK_SECONDS


def _deregister_scaling(services: Services, state: FlowState) -> dict[str, Any]:
    """Blue/green with autoscaling: deregister first (SageMaker requires it), remember it to restore after."""
    the_plan = _plan(state)
    resource_id = f"endpoint/{the_plan.endpoint_name}/variant/{the_plan.variant_name}"
    aas = services.autoscaling
    dimension: Final = "sagemaker:variant:DesiredInstanceCount"
    with aws("reading the variant's autoscaling"):
        targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource_id])
        policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource_id)
    if not targets["ScalableTargets"]:
        return {}
    target = targets["ScalableTargets"][0]
    saved = {
        "resource_id": resource_id,
        "min_capacity": target["MinCapacity"],
        "max_capacity": target["MaxCapacity"],
        "policies": [
            {
                k: v
                for k, v in p.items()
                if k in ("PolicyName", "PolicyType", "TargetTrackingScalingPolicyConfiguration")
            }
            for p in policies["ScalingPolicies"]
        ],
    }
    with aws("deregistering the variant's autoscaling"):
        aas.deregister_scalable_target(
            ServiceNamespace="sagemaker", ResourceId=resource_id, ScalableDimension=dimension
        )
    _timeline(services, state, "autoscaling", "autoscaling deregistered for the rollout; restored at the end")
    return saved


def shift(state: FlowState, services: Services) -> FlowState:
    """Managed path: set the candidate's weight to the current step's share."""
    the_plan, res, progress = _plan(state), _resources(state), state.progress
    assert progress is not None and res.candidate_variant is not None
    _check_stop(state, services)
    record = services.repo.get_operation(state.operation_id)
    if record.status is OperationStatus.PAUSED:
        services.repo.transition(state.operation_id, OperationStatus.RUNNING, expected=OperationStatus.PAUSED)
    services.repo.renew_lock(the_plan.endpoint_name, state.operation_id, STEP_LEASE_SECONDS)
    share = progress.share
    _set_weights(services, the_plan.endpoint_name, res, share)
    _timeline(services, state, "shift", f"{share} % of traffic to {res.candidate_variant}", share=share)
    update = Update(
        phase="shift",
        target_config=res.staging_config or res.target_config,
        started_at=_now(services),
        heartbeat_seconds=_heartbeat(60),
    )
    return state.model_copy(update={"update": update, "next": "await"})


def _set_weights(services: Services, endpoint: str, res: Resources, share: int) -> None:
    assert res.candidate_variant is not None
    with aws(f"UpdateEndpointWeightsAndCapacities ({share} % to the candidate)"):
        services.sagemaker.update_endpoint_weights_and_capacities(
            EndpointName=endpoint,
            DesiredWeightsAndCapacities=[
                {"VariantName": res.baseline_variant, "DesiredWeight": float(100 - share)},
                {"VariantName": res.candidate_variant, "DesiredWeight": float(share)},
            ],
        )


def await_update(state: FlowState, services: Services, token: str) -> FlowState:
    """Park the flow's task token; the endpoint-events handler resumes it when the endpoint settles.

    If the endpoint already settled (a fast weights change, a retried step), resume at once ourselves: the
    token is taken atomically, so exactly one of us delivers it.
    """
    the_plan, update = _plan(state), state.update
    assert update is not None
    endpoint = the_plan.endpoint_name
    ttl = update.heartbeat_seconds + RECHECK_SECONDS
    services.repo.put_task_token(endpoint, WaitPurpose.ENDPOINT_UPDATE, token, state.operation_id, ttl)
    with aws("reading the endpoint"):
        described = services.sagemaker.describe_endpoint(EndpointName=endpoint)
    if described["EndpointStatus"] in SETTLED and not described.get("PendingDeploymentSummary"):
        mine = services.repo.take_task_token(endpoint, WaitPurpose.ENDPOINT_UPDATE)
        if mine is not None and mine.token == token:
            with aws("resuming the flow"):
                services.stepfunctions.send_task_success(
                    taskToken=token,
                    output=json.dumps({"source": "DescribeEndpoint", "status": described["EndpointStatus"]}),
                )
    return state


def check_update(state: FlowState, services: Services) -> FlowState:
    """No event within the heartbeat: one DescribeEndpoint decides whether to wait again or go on."""
    the_plan, update = _plan(state), state.update
    assert update is not None
    with aws("reading the endpoint"):
        described = services.sagemaker.describe_endpoint(EndpointName=the_plan.endpoint_name)
    status = described["EndpointStatus"]
    settled = status in SETTLED and not described.get("PendingDeploymentSummary")
    _timeline(
        services,
        state,
        "heartbeat",
        f"no endpoint event within {update.heartbeat_seconds} s; DescribeEndpoint says {status}",
        status=status,
    )
    if settled:
        return state.model_copy(update={"update": update.model_copy(update={"resumed": True}), "next": "settled"})
    again = update.model_copy(update={"heartbeat_seconds": RECHECK_SECONDS})
    return state.model_copy(update={"update": again, "next": "await"})


def updated(state: FlowState, services: Services) -> FlowState:
    """The endpoint settled after an update: route on the phase (the final one goes to reconcile)."""
    the_plan, res, update = _plan(state), _resources(state), state.update
    assert update is not None
    with aws("reading the endpoint"):
        described = services.sagemaker.describe_endpoint(EndpointName=the_plan.endpoint_name)
    config, status = described["EndpointConfigName"], described["EndpointStatus"]
    if update.phase in ("deploy", "promote", "restore"):
        return _reconciled(state, services, described)
    if update.phase == "stage":
        if config != res.staging_config:
            reason = described.get("FailureReason") or f"the endpoint is {status} on {config}"
            return _end(state, OperationStatus.FAILED, f"adding the candidate variant failed: {reason}")
        _timeline(
            services, state, "staged", f"candidate variant {res.candidate_variant} in service with 0 % of traffic"
        )
        return next_step(state, services)
    if update.phase == "revert":
        return state.model_copy(update={"next": "revert_done"})
    # shift: bake (or go on at once when there is nothing to wait for)
    assert state.progress is not None
    progress = state.progress.model_copy(update={"bake_started_at": _now(services), "extensions": 0})
    return state.model_copy(update={"progress": progress, "next": "bake" if progress.bake_seconds > 0 else "analyze"})


# ------------------------------------------------------------------------------------------------ managed path
def next_step(state: FlowState, services: Services) -> FlowState:
    """Managed path: move to the next traffic share; ask for approval first where the request says so."""
    the_plan = _plan(state)
    progress = state.progress
    if progress is None:
        strategy = state.request.strategy
        shares = [int(s.new_traffic_percent) for s in the_plan.steps if s.action == "shift"]
        approvals = strategy.approval_before if isinstance(strategy, Managed) else []
        progress = Progress(shares=shares, approvals=approvals, bake_seconds=strategy.bake_seconds)
    index = progress.index + 1
    if index >= len(progress.shares):
        if not progress.pause_next:
            return state.model_copy(update={"progress": progress, "next": "promote"})
        index -= 1  # a Marginal final step: after approval, shift again (a no-op) and bake once more
    share = progress.shares[index]
    pause = progress.pause_next or share in progress.approvals
    progress = progress.model_copy(
        update={"index": index, "share": share, "bake_started_at": None, "pause_next": False}
    )
    return state.model_copy(update={"progress": progress, "next": "approve" if pause else "shift"})


def await_approval(state: FlowState, services: Services, token: str) -> FlowState:
    """Pause until an operator approves (POST /deployments/{id}/approve) or aborts."""
    the_plan, progress = _plan(state), state.progress
    assert progress is not None
    services.repo.put_task_token(
        the_plan.endpoint_name, WaitPurpose.APPROVAL, token, state.operation_id, APPROVAL_TIMEOUT_SECONDS + 3600
    )
    record = services.repo.get_operation(state.operation_id)
    if record.status is OperationStatus.RUNNING:
        services.repo.transition(state.operation_id, OperationStatus.PAUSED, expected=OperationStatus.RUNNING)
    _timeline(services, state, "approval", f"waiting for approval to send {progress.share} % of traffic")
    _fail_if_stopped(state, services, WaitPurpose.APPROVAL, token)
    return state


def await_bake(state: FlowState, services: Services, token: str) -> FlowState:
    """Bake: park the token; its heartbeat timeout is the end of the bake, an alarm or an abort ends it early."""
    the_plan, progress = _plan(state), state.progress
    assert progress is not None
    ttl = progress.bake_seconds + RECHECK_SECONDS
    services.repo.put_task_token(the_plan.endpoint_name, WaitPurpose.BAKE, token, state.operation_id, ttl)
    _fail_if_stopped(state, services, WaitPurpose.BAKE, token)
    return state


def _fail_if_stopped(state: FlowState, services: Services, purpose: WaitPurpose, token: str) -> None:
    """A stop that arrived before the token was parked would otherwise wait out the whole bake."""
    stop = services.repo.get_operation(state.operation_id).stop_request
    if not stop:
        return
    mine = services.repo.take_task_token(_plan(state).endpoint_name, purpose)
    if mine is not None and mine.token == token:
        error = "AlarmTriggered" if stop.get("kind") == "alarm" else "StopRequested"
        with aws("stopping the flow"):
            services.stepfunctions.send_task_failure(taskToken=token, error=error, cause=str(stop.get("reason")))


def analyze(state: FlowState, services: Services) -> FlowState:
    """After a bake: alarms, then the canary judge; promote, extend the bake, pause, or roll back."""
    the_plan, res, progress = _plan(state), _resources(state), state.progress
    assert progress is not None and res.candidate_variant is not None
    _check_stop(state, services)
    tripped = _alarms_in_alarm(services, res.alarms)
    if tripped:
        raise StopRequested(f"rollback alarm(s) {', '.join(tripped)} in ALARM after the {progress.share} % step")
    spec = state.request.analysis
    if spec is None:
        return state.model_copy(update={"next": "continue"})
    end = _now(services)
    start = progress.bake_started_at or end - progress.bake_seconds
    if progress.share >= 100:  # the old variant serves nothing now: compare with its last bake before the shift
        start -= progress.bake_seconds
    with aws("reading the canary's metrics"):
        verdict = analysis.evaluate(
            services.cloudwatch,
            spec,
            endpoint=the_plan.endpoint_name,
            baseline=analysis.VariantWindow(
                variant_name=res.baseline_variant, endpoint_config_name=res.staging_config or ""
            ),
            canary=analysis.VariantWindow(
                variant_name=res.candidate_variant, endpoint_config_name=res.staging_config or ""
            ),
            start=datetime.fromtimestamp(start, UTC),
            end=datetime.fromtimestamp(end, UTC),
        )
    metrics.verdict(KIND, verdict.result.value)
    summary = {
        "share": progress.share,
        "result": verdict.result.value,
        "score": verdict.score,
        "reason": verdict.reason,
    }
    _timeline(
        services,
        state,
        "verdict",
        f"{progress.share} %: {verdict.result.value} ({verdict.reason})",
        **summary,
        metrics=[m.model_dump(mode="json") for m in verdict.metrics],
    )
    progress = progress.model_copy(update={"verdicts": [*progress.verdicts, summary]})
    result = verdict.result
    if result is analysis.Result.INCONCLUSIVE and progress.extensions < spec.max_extensions:
        progress = progress.model_copy(update={"extensions": progress.extensions + 1})
        return state.model_copy(update={"progress": progress, "next": "bake"})
    decision = {
        analysis.Result.PASS: "continue",
        analysis.Result.MARGINAL: {"continue": "continue", "pause": "pause", "rollback": "rollback"}[spec.on_marginal],
    }.get(result, "rollback")
    if decision == "pause":
        decision = "continue"
        progress = progress.model_copy(update={"pause_next": True})
    if decision == "rollback":
        why = f"analysis {result.value} at {progress.share} %: {verdict.reason}"
        if result is analysis.Result.INCONCLUSIVE:
            why += f" (after {progress.extensions} extension(s) of the bake)"
        state = state.model_copy(update={"progress": progress, "error": {"Error": "AnalysisFailed", "Cause": why}})
        return state.model_copy(update={"next": "rollback"})
    return state.model_copy(update={"progress": progress, "next": decision})


def _alarms_in_alarm(services: Services, names: list[str]) -> list[str]:
    tripped: list[str] = []
    with aws("reading the rollback alarms"):
        for start in range(0, len(names), 100):
            response = services.cloudwatch.describe_alarms(
                AlarmNames=names[start : start + 100], StateValue="ALARM", AlarmTypes=["MetricAlarm", "CompositeAlarm"]
            )
            tripped += [a["AlarmName"] for a in response.get("MetricAlarms", [])]
            tripped += [a["AlarmName"] for a in response.get("CompositeAlarms", [])]
    return tripped


def rollback(state: FlowState, services: Services) -> FlowState:
    """Managed path: all traffic back to the old variant at once, then remove the candidate."""
    the_plan, res = _plan(state), _resources(state)
    reason = _reason(state)
    sm = services.sagemaker
    with aws("reading the endpoint"):
        described = sm.describe_endpoint(EndpointName=the_plan.endpoint_name)
    variants = {v["VariantName"]: v for v in described.get("ProductionVariants", [])}
    if described["EndpointStatus"] not in SETTLED:
        raise Retryable(f"the endpoint is {described['EndpointStatus']}: rolling back once it settles")
    _timeline(services, state, "rollback", f"rolling back: {reason}", reason=reason)
    if res.candidate_variant in variants and float(variants[res.candidate_variant].get("CurrentWeight", 0)) > 0:
        _set_weights(services, the_plan.endpoint_name, res, 0)
        update = Update(
            phase="revert",
            target_config=described["EndpointConfigName"],
            started_at=_now(services),
            heartbeat_seconds=_heartbeat(60),
        )
        return state.model_copy(update={"update": update, "next": "await"})
    return state.model_copy(update={"next": "revert_done"})


# ------------------------------------------------------------------------------------------------ endings
def reconcile(state: FlowState, services: Services) -> FlowState:
    """Decide the outcome from the endpoint itself: SageMaker's rollback ends InService on the *old* config."""
    with aws("reading the endpoint"):
        described = services.sagemaker.describe_endpoint(EndpointName=_plan(state).endpoint_name)
    return _reconciled(state, services, described)


def _reconciled(state: FlowState, services: Services, described: Mapping[str, Any]) -> FlowState:
    the_plan, res = _plan(state), _resources(state)
    config, status = described["EndpointConfigName"], described["EndpointStatus"]
    failure = described.get("FailureReason")
    stop = services.repo.get_operation(state.operation_id).stop_request
    if status not in SETTLED:
        raise Retryable(f"the endpoint is still {status}")
    if config == res.target_config and status == "InService":
        verdict, reason = OperationStatus.SUCCEEDED, f"{config} in service"
        if stop:  # e.g. the abort's alarm was reset by CloudWatch before SageMaker looked at it
            reason += f" (a stop was requested - {stop.get('reason')} - but the update completed first)"
    elif status == "InService":
        if stop and stop.get("kind") == "abort":
            verdict = OperationStatus.ABORTED
            reason = f"aborted: {stop.get('reason')}; the endpoint is back on {config}"
        elif the_plan.path == "managed" and state.error:
            verdict, reason = OperationStatus.ROLLED_BACK, f"{_reason(state)}; the endpoint is back on {config}"
        elif failure and _rolled_back_by_guardrail(failure):
            verdict, reason = OperationStatus.ROLLED_BACK, f"SageMaker rolled back to {config}: {failure}"
        else:
            verdict = OperationStatus.FAILED
            reason = f"the update failed and the endpoint still serves {config}: {failure or 'no FailureReason given'}"
    else:
        verdict, reason = (
            OperationStatus.FAILED,
            f"the endpoint is {status} on {config}: {failure or 'no reason given'}",
        )
    outcome = Outcome(status=verdict, reason=reason, endpoint_config=config, endpoint_status=status)
    return state.model_copy(update={"outcome": outcome, "next": "finish"})


def _rolled_back_by_guardrail(failure: str) -> bool:
    text = failure.lower()
    return "alarm" in text or "maximumexecutiontimeout" in text or "rolled back" in text


def _reason(state: FlowState) -> str:
    """A caught error's message: a Lambda's Cause is its error payload as JSON."""
    error = state.error or {}
    cause = error.get("Cause")
    if isinstance(cause, str) and cause.startswith("{"):
        with suppress(ValueError):
            cause = json.loads(cause).get("errorMessage", cause)
    if error.get("Error") == "States.Timeout" and not cause:
        cause = "no approval within the approval timeout"
    return str(cause or error.get("Error") or "rollback requested")


def _end(state: FlowState, status: OperationStatus, reason: str) -> FlowState:
    return state.model_copy(update={"outcome": Outcome(status=status, reason=reason), "next": "finish"})


def handle_failure(state: FlowState, services: Services) -> FlowState:
    """A step failed for good (or a stop arrived): leave the endpoint serving a known config, then finish."""
    the_plan = state.plan
    error = state.error or {}
    rounds = state.failure_rounds + 1
    state = state.model_copy(update={"failure_rounds": rounds})
    cause = _reason(state)
    with suppress(NotFound):  # failed before the operation was recorded: finish records it
        _timeline(services, state, "error", f"{error.get('Error', 'error')}: {cause}", **error)
    if the_plan is None or state.resources is None or rounds > MAX_FAILURE_ROUNDS:
        return _end(state, OperationStatus.FAILED, cause if rounds <= MAX_FAILURE_ROUNDS else f"gave up: {cause}")
    with aws("reading the endpoint"):
        described = services.sagemaker.describe_endpoint(EndpointName=the_plan.endpoint_name)
    status = described["EndpointStatus"]
    if status not in SETTLED:
        update = state.update or Update(
            phase="deploy", target_config=state.resources.target_config, started_at=_now(services), heartbeat_seconds=0
        )
        update = update.model_copy(update={"heartbeat_seconds": RECHECK_SECONDS})
        return state.model_copy(update={"update": update, "next": "await"})  # SageMaker is still at work
    variants = {v["VariantName"] for v in described.get("ProductionVariants", [])}
    candidate = state.resources.candidate_variant
    if (
        candidate is not None
        and candidate in variants
        and described["EndpointConfigName"] != state.resources.target_config
    ):
        return state.model_copy(update={"next": "rollback"})
    if state.update is not None:
        return state.model_copy(update={"next": "reconcile"})
    stop = error.get("Error") in ("StopRequested", "AlarmTriggered")
    return _end(state, OperationStatus.ABORTED if stop else OperationStatus.FAILED, cause)


def finish(state: FlowState, services: Services) -> FlowState:
    """Record the outcome, restore autoscaling, forget the alarm watches, release the lock."""
    repo = services.repo
    outcome = state.outcome or Outcome(status=OperationStatus.FAILED, reason=_reason(state))
    try:
        record = repo.get_operation(state.operation_id)
    except NotFound:  # started directly and failed before pre-flight recorded it
        request = state.request.model_dump(mode="json")
        record = repo.create_operation(KIND, state.request.endpoint_name, request, state.operation_id)
    result: dict[str, Any] = {
        "status": outcome.status.value,
        "reason": outcome.reason,
        "endpoint_config": outcome.endpoint_config,
        "endpoint_status": outcome.endpoint_status,
    }
    if state.progress is not None:
        result["verdicts"] = state.progress.verdicts
    if state.plan is not None and state.resources is not None:
        if state.resources.scaling:
            _restore_scaling(services, state.resources.scaling)
        if state.resources.candidate_variant is not None:
            repo.delete_alarm_watches(state.operation_id, state.resources.alarms)
    if not record.terminal and outcome.status in (OperationStatus.FAILED, OperationStatus.ROLLED_BACK):
        from inferops import diagnosis  # every failed or rolled-back deployment carries its diagnosis

        try:
            res = state.resources
            result["diagnosis"] = diagnosis.for_operation(
                state.request.endpoint_name,
                diagnosis.default_clients(services.sagemaker.meta.region_name),  # short timeouts, read-only
                since=record.created_at.timestamp(),
                errors=list(dict.fromkeys([outcome.reason, _reason(state)] if state.error else [outcome.reason])),
                configs=[c for c in (res.target_config, res.staging_config) if c] if res else [],
                alarm_names=res.alarms if res else [],
                budget_seconds=diagnosis.OPERATION_BUDGET_SECONDS,
            )
        except Exception as error:  # bounded and best effort: a diagnosis never fails the flow it explains
            import logging

            logging.getLogger(__name__).warning("diagnosis unavailable", exc_info=error)
            result["diagnosis"] = diagnosis.unavailable(state.request.endpoint_name, str(error))
        _timeline(services, state, "diagnosis", str(result["diagnosis"].get("summary", ""))[:1000])
    if not record.terminal:
        repo.transition(state.operation_id, outcome.status, result=result)
        _timeline(services, state, "finished", f"{outcome.status.value}: {outcome.reason}")
        metrics.operation_finished(KIND, outcome.status.value)
    repo.release_lock(state.request.endpoint_name, state.operation_id)  # the API may have taken it before a plan
    done = state.model_copy(update={"outcome": outcome, "next": "announce"})
    return done.model_copy(update={"event": announcement(done)})


def _restore_scaling(services: Services, saved: dict[str, Any]) -> None:
    aas = services.autoscaling
    dimension: Final = "sagemaker:variant:DesiredInstanceCount"
    with aws("restoring the variant's autoscaling"):
        aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=saved["resource_id"],
            ScalableDimension=dimension,
            MinCapacity=saved["min_capacity"],
            MaxCapacity=saved["max_capacity"],
        )
        for policy in saved["policies"]:
            aas.put_scaling_policy(
                ServiceNamespace="sagemaker", ResourceId=saved["resource_id"], ScalableDimension=dimension, **policy
            )


def announcement(state: FlowState) -> dict[str, Any]:
    """The detail of the `InferOps Deployment Finished` event."""
    outcome = state.outcome
    return {
        "operationId": state.operation_id,
        "endpointName": state.request.endpoint_name,
        "status": outcome.status.value if outcome else "FAILED",
        "reason": outcome.reason if outcome else _reason(state),
        "endpointConfigName": outcome.endpoint_config if outcome else None,
        "strategy": state.plan.strategy if state.plan else state.request.strategy.type,
        "path": state.plan.path if state.plan else None,
    }


STEPS: dict[str, Step] = {
    "preflight": plan_step,
    "acquire_lock": acquire_lock,
    "create_model": create_model,
    "create_endpoint_config": create_endpoint_config,
    "ensure_alarms": ensure_alarms,
    "start_update": start_update,
    "check_update": check_update,
    "updated": updated,
    "next_step": next_step,
    "shift": shift,
    "analyze": analyze,
    "rollback": rollback,
    "reconcile": reconcile,
    "handle_failure": handle_failure,
    "finish": finish,
}
TOKEN_STEPS: dict[str, TokenStep] = {
    "await_update": await_update,
    "await_bake": await_bake,
    "await_approval": await_approval,
}
