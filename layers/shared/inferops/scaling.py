"""Scale to zero and wake: what each task of `statemachines/scaling.asl.json` does, and the cost report.

Three kinds of endpoint, three ways to reach zero (DESIGN.md §3, sagemaker-facts §6-8):

- **inference-component** endpoints: managed instance scaling with MinInstanceCount 0 on the variant, each
  component's copies registered with MinCapacity 0, target tracking on
  `SageMakerInferenceComponentInvocationsPerCopy` (TargetValue 1, cooldowns 300/300), and the step policy +
  `NoCapacityInvocationFailures` alarm that scale out from zero, all exactly as the guide prescribes.
- **async** endpoints: the variant registered with MinCapacity 0, target tracking on
  `ApproximateBacklogSizePerInstance` (TargetValue 5) and the `HasBacklogWithoutCapacity` alarm + step policy.
- **classic** real-time endpoints cannot go below one instance: they are *parked* (the exact config name, tags
  and autoscaling are recorded, then the endpoint is deleted) and *unparked* (recreated identically, scaling
  re-registered) on request, when idle, or outside the awake hours of their schedule.

Enabling records every setting it replaces, so disabling restores them exactly. A wake (the scale-from-zero alarm
or a request) scales out at once instead of waiting for the alarm-driven policy, waits until capacity serves and
records how long that took; many alarms at once start one wake (a conditional write claims it). A quota refusal
(`ResourceLimitExceeded`) is a `CapacityUnavailable` the state machine retries with backoff; a wake that fails
for good carries a diagnosis.

As in `inferops.rollout`, the state machine orchestrates and every decision is here.
"""

from __future__ import annotations

import itertools
import json
import math
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field, field_validator, model_validator

from inferops import catalog, flow_steps, metrics, rollout
from inferops.alarm_events import WAKE_ALARM_PREFIX
from inferops.errors import Conflict, InvalidInput, NotFound
from inferops.flow_steps import Clients as Clients  # noqa: PLC0414 (explicit re-export for callers)
from inferops.model import Model
from inferops.planner import PROVISION_SECONDS
from inferops.rollout import Retryable, Services, StepError
from inferops.storage import OperationRecord, OperationStatus, Repository, TimelineEntry, WaitPurpose

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_stepfunctions import SFNClient

KIND = "scaling"
IC_DIMENSION: Final = "sagemaker:inference-component:DesiredCopyCount"
VARIANT_DIMENSION: Final = "sagemaker:variant:DesiredInstanceCount"
LOCK_LEASE_SECONDS = 4 * 3600
WAKE_LEASE_SECONDS = 3 * 3600  # a crashed wake's claim lapses after this
RECHECK_SECONDS = 120
DELETE_SECONDS = 90  # DeleteEndpoint: Deleting -> gone (no event says so: the heartbeat looks)
COPY_RECHECK_SECONDS = 30  # copies send no event: from 3/4 of the expected load time, one look every 30 s
COPY_FIRST_LOOK = 0.75
GIVE_UP_FACTOR = 3  # a wait gives up after 3x the expected time (at least GIVE_UP_MIN_SECONDS): never stuck
GIVE_UP_MIN_SECONDS = 1800
COPY_LOAD_SECONDS = {"none": 90}  # a copy's model load once its instance runs, by accelerator kind
COPY_LOAD_ACCELERATED_SECONDS = 240
CAPACITY_LOG_DAYS = 31
TRACKING_POLICY = "InferOps-InvocationsPerCopy"
BACKLOG_POLICY = "InferOps-BacklogPerInstance"
IC_STEP_POLICY = "InferOps-ScaleOutFromZero"
ASYNC_STEP_POLICY = "HasBacklogWithoutCapacity-ScalingPolicy"
ASYNC_DEFAULT_MAX = 5  # the guide's example MaxCapacity for async endpoints
SCALE_CONFIG_SUFFIX = "-stz"
EVENT_SOURCE = "inferops"

# The scale-to-zero settings the guide prescribes (sagemaker-facts §7), copied exactly.
IC_TRACKING: dict[str, Any] = {
    "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerInferenceComponentInvocationsPerCopy"},
    "TargetValue": 1,
    "ScaleInCooldown": 300,
    "ScaleOutCooldown": 300,
}
IC_STEP: dict[str, Any] = {
    "AdjustmentType": "ChangeInCapacity",
    "MetricAggregationType": "Maximum",
    "Cooldown": 60,
    "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
}
IC_ALARM: dict[str, Any] = {
    "MetricName": "NoCapacityInvocationFailures",
    "Statistic": "Sum",
    "Period": 60,
    "EvaluationPeriods": 1,
    "DatapointsToAlarm": 1,
    "Threshold": 1,
    "ComparisonOperator": "GreaterThanThreshold",
}
ASYNC_TRACKING: dict[str, Any] = {
    "TargetValue": 5.0,
    "CustomizedMetricSpecification": {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Statistic": "Average",
    },
    "ScaleInCooldown": 600,
    "ScaleOutCooldown": 300,
}
ASYNC_STEP: dict[str, Any] = {**IC_STEP, "MetricAggregationType": "Average", "Cooldown": 300}
ASYNC_ALARM: dict[str, Any] = {
    "MetricName": "HasBacklogWithoutCapacity",
    "Statistic": "Average",
    "Period": 60,
    "EvaluationPeriods": 2,
    "DatapointsToAlarm": 2,
    "Threshold": 1,
    "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    "TreatMissingData": "missing",
}

# A scale-from-zero alarm evaluates datapoints up to this long before it changes (its periods, plus one period
# of metric delay): one that changes, or is delivered late, this soon after a wake served reports the gap that
# wake filled, not new demand.
WAKE_ALARM_LOOKBACK_SECONDS = max(a["Period"] * (a["EvaluationPeriods"] + 1) for a in (IC_ALARM, ASYNC_ALARM))

Action = Literal["enable", "disable", "wake", "park", "unpark"]
EndpointKind = Literal["inference-component", "async", "classic"]
Day = Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
DAYS: tuple[Day, ...] = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


# ------------------------------------------------------------------------------------------------ errors
class ScalingFailed(StepError):
    """A failure no retry will fix; the message is the reason shown to users."""


class CapacityUnavailable(StepError):
    """SageMaker refused the capacity (ResourceLimitExceeded): retried with backoff, then reported as a quota."""


@contextmanager
def aws(what: str) -> Iterator[None]:
    """rollout.aws's translation, with a quota refusal kept apart (the state machine retries it slowly)."""
    try:
        with rollout.aws(what):
            yield
    except rollout.DeploymentFailed as error:
        cause = error.__cause__
        if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ResourceLimitExceeded":
            message = cause.response.get("Error", {}).get("Message", "")
            raise CapacityUnavailable(f"{what}: quota reached (ResourceLimitExceeded): {message}") from cause
        raise ScalingFailed(str(error)) from cause


# ------------------------------------------------------------------------------------------------ requests
class Schedule(Model):
    """The hours an endpoint is awake; outside them a classic endpoint is parked (e.g. nights and weekends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: list[Day] = Field(default_factory=lambda: list(DAYS[:5]), min_length=1, description="awake days")
    start: str = Field(default="07:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, awake from")
    end: str = Field(default="20:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM, parked from")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @model_validator(mode="after")
    def _order(self) -> Schedule:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self

    def awake(self, at: float) -> bool:
        local = datetime.fromtimestamp(at, zoneinfo.ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        start, end = (int(p[:2]) * 60 + int(p[3:]) for p in (self.start, self.end))
        if start < end:
            return DAYS[local.weekday()] in self.days and start <= minute < end
        # overnight hours (e.g. 20:00-06:00) belong to the day they start on
        if minute >= start:
            return DAYS[local.weekday()] in self.days
        return minute < end and DAYS[(local.weekday() - 1) % 7] in self.days


class ScaleToZeroRequest(Model):
    """PUT /endpoints/{name}/scale-to-zero."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idle_minutes: int = Field(default=60, ge=15, le=10080, description="classic: park after this long without traffic")
    max_copies: int | None = Field(default=None, ge=1, le=1000, description="inference components: MaxCapacity")
    max_instances: int | None = Field(
        default=None, ge=1, le=1000, description="async: MaxCapacity; IC: managed MaxInstanceCount"
    )
    schedule: Schedule | None = Field(default=None, description="classic: awake hours; parked outside them")


# ------------------------------------------------------------------------------------------------ records
class _Model(Model):
    model_config = ConfigDict(extra="ignore")


class SavedTarget(_Model):
    """An Application Auto Scaling target as it was (min None: it was not registered) and its policies."""

    resource_id: str
    dimension: str
    min_capacity: int | None = None
    max_capacity: int | None = None
    policies: list[dict[str, Any]] = Field(default_factory=list)
    capacity: int | None = Field(default=None, description="copies or instances when scale to zero was enabled")


class Parked(_Model):
    """What recreating a parked classic endpoint needs: its exact config, tags and autoscaling."""

    config_name: str
    tags: list[dict[str, str]] = Field(default_factory=list)
    targets: list[SavedTarget] = Field(default_factory=list)
    parked_at: float
    by: str


class LastWake(_Model):
    operation_id: str
    trigger: str
    requested_at: float
    serving_at: float
    seconds: float


class Settings(_Model):
    """An endpoint's scale-to-zero record: what was asked, what it replaced, where the endpoint stands."""

    endpoint: str
    kind: EndpointKind
    request: ScaleToZeroRequest
    enabled_at: float
    instance_type: str | None = None
    awake_instances: int = Field(default=1, description="instances when awake: what an hour at zero saves")
    variant: str | None = None
    components: list[str] = Field(default_factory=list)
    previous_config: str | None = Field(default=None, description="IC: the config before MinInstanceCount 0")
    scale_config: str | None = Field(default=None, description="IC: the config with MinInstanceCount 0")
    previous_targets: list[SavedTarget] = Field(default_factory=list)
    alarms: list[str] = Field(default_factory=list)
    parked: Parked | None = None
    capacity_log: list[tuple[float, int]] = Field(default_factory=list, description="(time, instances) changes")
    last_wake: LastWake | None = None


# ------------------------------------------------------------------------------------------------ flow state
class Wait(_Model):
    """What the flow waits for: the endpoint to settle on `config` (or to exist), copies, instances, or a parked
    endpoint's deletion to end (a wake right after a park: it is recreated once it is gone)."""

    expect: Literal["endpoint", "copies", "instances", "gone"]
    config: str | None = None
    started_at: float
    heartbeat_seconds: int
    give_up_at: float = Field(description="not serving by then: the operation fails (with its diagnosis)")


class Outcome(_Model):
    status: OperationStatus
    reason: str


class FlowState(_Model):
    operation_id: str
    endpoint_name: str
    action: Action
    trigger: str = "request"
    requested_at: float
    request: ScaleToZeroRequest | None = None
    wait: Wait | None = None
    outcome: Outcome | None = None
    error: dict[str, Any] | None = None
    next: str = ""


Step = Callable[[FlowState, Services], FlowState]
TokenStep = Callable[[FlowState, Services, str], FlowState]


def _timeline(services: Services, state: FlowState, kind: str, message: str, **data: Any) -> None:
    services.repo.append_timeline(state.operation_id, kind, message, data or None)


def _end(state: FlowState, status: OperationStatus, reason: str) -> FlowState:
    return state.model_copy(update={"outcome": Outcome(status=status, reason=reason), "next": "finish"})


def load_settings(repo: Repository, endpoint: str) -> Settings | None:
    item = repo.get_scaling_settings(endpoint)
    return Settings.model_validate(item["data"]) if item and item.get("data") else None


def _save(services: Services, settings: Settings) -> None:
    services.repo.put_scaling_settings(settings.endpoint, settings.model_dump(mode="json"))


def _settings(services: Services, state: FlowState) -> Settings:
    found = load_settings(services.repo, state.endpoint_name)
    if found is None:
        raise ScalingFailed(f"endpoint {state.endpoint_name} is not under scale-to-zero")
    return found


def log_capacity(settings: Settings, at: float, instances: int) -> Settings:
    """Append a capacity change (and forget changes older than the cost report can ask about)."""
    log = [entry for entry in settings.capacity_log if entry[0] >= at - CAPACITY_LOG_DAYS * 86400]
    if log and log[-1][1] == instances:
        return settings
    return settings.model_copy(update={"capacity_log": [*log, (at, instances)]})


# ------------------------------------------------------------------------------------------------ reading
def _missing(error: ClientError) -> bool:
    message = error.response.get("Error", {}).get("Message", "").lower()
    return "could not find" in message or "does not exist" in message


def describe_endpoint(sm: SageMakerClient, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when the endpoint does not exist (a parked endpoint)."""
    try:
        return dict(sm.describe_endpoint(EndpointName=name))
    except ClientError as error:
        if _missing(error):
            return None
        with aws(f"reading endpoint {name}"):
            raise


def components_of(sm: SageMakerClient, endpoint: str) -> list[dict[str, Any]]:
    """The endpoint's inference components, described (copy counts, status)."""
    names: list[str] = []
    with aws("listing the inference components"):
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"EndpointNameEquals": endpoint, "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = sm.list_inference_components(**kwargs)
            names += [c["InferenceComponentName"] for c in page["InferenceComponents"]]
            token = page.get("NextToken")
            if not token:
                break
        return [dict(sm.describe_inference_component(InferenceComponentName=n)) for n in sorted(names)]


def detect_kind(sm: SageMakerClient, endpoint: dict[str, Any], config: dict[str, Any]) -> EndpointKind:
    variants = config["ProductionVariants"]
    if "AsyncInferenceConfig" in config:
        return "async"
    if any(not v.get("ModelName") and "ServerlessConfig" not in v for v in variants) and components_of(
        sm, endpoint["EndpointName"]
    ):
        return "inference-component"
    if any("ServerlessConfig" in v for v in variants):
        raise InvalidInput("serverless endpoints already scale to zero on their own", "name")
    return "classic"


def _saved_target(aas: ApplicationAutoScalingClient, resource_id: str, dimension: str) -> SavedTarget:
    with aws(f"reading the autoscaling of {resource_id}"):
        targets = aas.describe_scalable_targets(
            ServiceNamespace="sagemaker",
            ResourceIds=[resource_id],
            ScalableDimension=dimension,  # type: ignore[arg-type]
        )["ScalableTargets"]
        if not targets:
            return SavedTarget(resource_id=resource_id, dimension=dimension)
        policies = aas.describe_scaling_policies(
            ServiceNamespace="sagemaker",
            ResourceId=resource_id,
            ScalableDimension=dimension,  # type: ignore[arg-type]
        )["ScalingPolicies"]
    keep = ("PolicyName", "PolicyType", "TargetTrackingScalingPolicyConfiguration", "StepScalingPolicyConfiguration")
    return SavedTarget(
        resource_id=resource_id,
        dimension=dimension,
        min_capacity=targets[0]["MinCapacity"],
        max_capacity=targets[0]["MaxCapacity"],
        policies=[json.loads(json.dumps({k: p[k] for k in keep if k in p}, default=str)) for p in policies],  # type: ignore[literal-required]
    )


def _restore_target(aas: ApplicationAutoScalingClient, saved: SavedTarget, ours: list[str]) -> None:
    """Put a target back as it was: its own policies and limits, or unregistered (ours go either way)."""
    with aws(f"restoring the autoscaling of {saved.resource_id}"):
        for name in ours:
            with suppress(ClientError):  # already gone
                aas.delete_scaling_policy(
                    PolicyName=name,
                    ServiceNamespace="sagemaker",
                    ResourceId=saved.resource_id,
                    ScalableDimension=saved.dimension,  # type: ignore[arg-type]
                )
        if saved.min_capacity is None:
            with suppress(ClientError):
                aas.deregister_scalable_target(
                    ServiceNamespace="sagemaker",
                    ResourceId=saved.resource_id,
                    ScalableDimension=saved.dimension,  # type: ignore[arg-type]
                )
            return
        register(aas, saved)


def register(aas: ApplicationAutoScalingClient, saved: SavedTarget) -> None:
    """Register a saved target and put its policies (a re-registration after unparking, or a restore)."""
    with aws(f"registering the autoscaling of {saved.resource_id}"):
        aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=saved.resource_id,
            ScalableDimension=saved.dimension,  # type: ignore[arg-type]
            MinCapacity=int(saved.min_capacity or 0),
            MaxCapacity=int(saved.max_capacity or 0),
        )
        for policy in saved.policies:
            aas.put_scaling_policy(
                ServiceNamespace="sagemaker",
                ResourceId=saved.resource_id,
                ScalableDimension=saved.dimension,  # type: ignore[arg-type]
                **policy,
            )


# ------------------------------------------------------------------------------------------------ steps
def begin(state: FlowState, services: Services) -> FlowState:
    """Take the endpoint's lock for the flow's length (re-entrant: the API took it first) and start."""
    repo = services.repo
    record = repo.get_operation(state.operation_id)
    if record.terminal:
        raise ScalingFailed(f"operation {state.operation_id} already ended as {record.status}")
    try:
        repo.acquire_lock(state.endpoint_name, state.operation_id, LOCK_LEASE_SECONDS)
    except Conflict as busy:
        return _end(state, OperationStatus.REFUSED, busy.message)
    if record.status is OperationStatus.PENDING:
        repo.transition(state.operation_id, OperationStatus.RUNNING, expected=OperationStatus.PENDING)
    return state.model_copy(update={"next": "apply"})


def apply(state: FlowState, services: Services) -> FlowState:
    """Make the change the action asks for; `next` says whether to wait for SageMaker."""
    return {"enable": _enable, "disable": _disable, "wake": _wake, "park": _park, "unpark": _unpark}[state.action](
        state, services
    )


# --- enable
def _enable(state: FlowState, services: Services) -> FlowState:
    request = state.request or ScaleToZeroRequest()
    sm = services.sagemaker
    endpoint = describe_endpoint(sm, state.endpoint_name)
    existing = load_settings(services.repo, state.endpoint_name)
    if endpoint is None:
        if existing is not None and existing.parked is not None:  # enabled and parked: just new parameters
            _save(services, existing.model_copy(update={"request": request}))
            return _end(state, OperationStatus.SUCCEEDED, "settings updated; the endpoint stays parked")
        raise ScalingFailed(f"endpoint {state.endpoint_name} does not exist")
    if endpoint["EndpointStatus"] != "InService":
        raise Retryable(f"the endpoint is {endpoint['EndpointStatus']}: enabling once it is InService")
    with aws("reading the endpoint config"):
        config: dict[str, Any] = dict(sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"]))
    kind = detect_kind(sm, endpoint, config)
    variant = config["ProductionVariants"][0]
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    now = services.repo.now()
    instances = int(live.get(variant["VariantName"], {}).get("CurrentInstanceCount", 0))
    settings = existing or Settings(
        endpoint=state.endpoint_name,
        kind=kind,
        request=request,
        enabled_at=now,
        instance_type=variant.get("InstanceType"),
        awake_instances=max(1, instances),
        variant=variant["VariantName"],
    )
    settings = log_capacity(settings.model_copy(update={"request": request}), now, instances)
    if kind == "inference-component":
        return _enable_components(state, services, settings, endpoint, config)
    if kind == "async":
        settings = _enable_async(services, settings, request, instances)
        _save(services, settings)
        _timeline(services, state, "enabled", "async endpoint: MinCapacity 0, backlog tracking, scale-from-zero alarm")
        return _end(state, OperationStatus.SUCCEEDED, "scale to zero enabled (async)")
    _save(services, settings)
    what = f"parked after {request.idle_minutes} idle minutes"
    if request.schedule:
        what += f" and outside {','.join(request.schedule.days)} {request.schedule.start}-{request.schedule.end}"
    _timeline(services, state, "enabled", f"classic endpoint: {what}")
    return _end(state, OperationStatus.SUCCEEDED, f"scale to zero enabled (classic: {what})")


def _enable_components(
    state: FlowState, services: Services, settings: Settings, endpoint: dict[str, Any], config: dict[str, Any]
) -> FlowState:
    sm, aas = services.sagemaker, services.autoscaling
    request = settings.request
    components = components_of(sm, state.endpoint_name)
    first = not settings.previous_targets
    saved = settings.previous_targets or [
        _saved_target(aas, f"inference-component/{c['InferenceComponentName']}", IC_DIMENSION).model_copy(
            update={"capacity": int(c["RuntimeConfig"]["DesiredCopyCount"])}
        )
        for c in components
    ]
    alarms: list[str] = []
    for component, before in zip(components, saved, strict=False):
        name = component["InferenceComponentName"]
        copies = int(component["RuntimeConfig"]["DesiredCopyCount"])
        high = request.max_copies or before.max_capacity or max(copies, 1)
        alarms.append(
            _scale_from_zero(
                services,
                state.endpoint_name,
                before,
                high,
                (TRACKING_POLICY, IC_TRACKING),
                (IC_STEP_POLICY, IC_STEP),
                (wake_alarm_name(name, "NoCapacityInvocationFailures"), IC_ALARM, {"InferenceComponentName": name}),
            )
        )
    variant = config["ProductionVariants"][0]
    managed = variant.get("ManagedInstanceScaling") or {}
    high = request.max_instances or int(managed.get("MaxInstanceCount") or max(settings.awake_instances, 1))
    wanted = {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": high}
    settings = settings.model_copy(
        update={"components": [c["InferenceComponentName"] for c in components], "previous_targets": saved}
    )
    settings = settings.model_copy(update={"alarms": sorted(set(settings.alarms) | set(alarms))})
    current = endpoint["EndpointConfigName"]
    if {k: managed.get(k) for k in wanted} == wanted:
        _save(services, settings)
        _timeline(services, state, "enabled", f"{len(components)} inference component(s) can scale to zero")
        return _end(state, OperationStatus.SUCCEEDED, "scale to zero enabled (inference components)")
    target = f"{current[: 63 - len(SCALE_CONFIG_SUFFIX)]}{SCALE_CONFIG_SUFFIX}"
    if current.endswith(SCALE_CONFIG_SUFFIX):
        target = f"{current[: 63 - len(SCALE_CONFIG_SUFFIX) - 2]}{SCALE_CONFIG_SUFFIX}-2"
    new_variant = {**variant, "ManagedInstanceScaling": {**managed, **wanted}}
    extra = {k: config[k] for k in ("ExecutionRoleArn", "KmsKeyId", "DataCaptureConfig", "Tags") if k in config}
    with aws(f"creating endpoint config {target}"):
        try:
            sm.create_endpoint_config(EndpointConfigName=target, ProductionVariants=[new_variant], **extra)  # type: ignore[list-item]
        except ClientError as error:
            if "already exist" not in error.response.get("Error", {}).get("Message", ""):
                raise
        sm.update_endpoint(EndpointName=state.endpoint_name, EndpointConfigName=target)
    if first:
        settings = settings.model_copy(update={"previous_config": current, "scale_config": target})
    _save(services, settings)
    _timeline(
        services,
        state,
        "update",
        f"UpdateEndpoint to {target}: managed instance scaling MinInstanceCount 0 (was {managed or 'not enabled'})",
    )
    return _await(state, services, "endpoint", config=target, seconds=_provision(settings.instance_type))


def _scale_from_zero(
    services: Services,
    endpoint: str,
    target: SavedTarget,
    high: int,
    tracking: tuple[str, dict[str, Any]],
    step: tuple[str, dict[str, Any]],
    alarm: tuple[str, dict[str, Any], dict[str, str]],
) -> str:
    """Register the target with MinCapacity 0, put the tracking and step policies, and the alarm that runs the
    step policy (remembered as this endpoint's wake alarm). Returns the alarm's name."""
    aas = services.autoscaling
    where = {"ServiceNamespace": "sagemaker", "ResourceId": target.resource_id, "ScalableDimension": target.dimension}
    with aws(f"registering {target.resource_id} with MinCapacity 0"):
        aas.register_scalable_target(**where, MinCapacity=0, MaxCapacity=high)  # type: ignore[arg-type]
        aas.put_scaling_policy(
            **where,  # type: ignore[arg-type]
            PolicyName=tracking[0],
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=tracking[1],  # type: ignore[arg-type]
        )
        policy = aas.put_scaling_policy(
            **where,  # type: ignore[arg-type]
            PolicyName=step[0],
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration=step[1],  # type: ignore[arg-type]
        )
    name, spec, dimensions = alarm
    with aws(f"creating alarm {name}"):
        services.cloudwatch.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=f"InferOps scale-from-zero alarm of endpoint {endpoint}",
            Namespace="AWS/SageMaker",
            Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
            AlarmActions=[policy["PolicyARN"]],
            **spec,
        )
    services.repo.put_wake_alarm(name, endpoint)
    return name


def wake_alarm_name(resource: str, metric: str) -> str:
    """`InferOps-<resource>-<metric>`: the alarm-events handler looks only these up in the table."""
    return f"{WAKE_ALARM_PREFIX}{resource}-{metric}"[:255]


def _enable_async(services: Services, settings: Settings, request: ScaleToZeroRequest, instances: int) -> Settings:
    aas = services.autoscaling
    resource = f"endpoint/{settings.endpoint}/variant/{settings.variant}"
    before = (
        settings.previous_targets[0]
        if settings.previous_targets
        else _saved_target(aas, resource, VARIANT_DIMENSION).model_copy(update={"capacity": instances})
    )
    high = request.max_instances or before.max_capacity or max(ASYNC_DEFAULT_MAX, instances)
    tracking = {
        **ASYNC_TRACKING,
        "CustomizedMetricSpecification": {
            **ASYNC_TRACKING["CustomizedMetricSpecification"],
            "Dimensions": [{"Name": "EndpointName", "Value": settings.endpoint}],
        },
    }
    alarm = _scale_from_zero(
        services,
        settings.endpoint,
        before,
        high,
        (BACKLOG_POLICY, tracking),
        (ASYNC_STEP_POLICY, ASYNC_STEP),
        (
            wake_alarm_name(settings.endpoint, "HasBacklogWithoutCapacity"),
            ASYNC_ALARM,
            {"EndpointName": settings.endpoint},
        ),
    )
    return settings.model_copy(update={"previous_targets": [before], "alarms": [alarm]})


# --- disable
def _disable(state: FlowState, services: Services) -> FlowState:
    settings = _settings(services, state)
    if settings.kind == "classic":
        if settings.parked is not None:
            return _recreate(state, services, settings)
        return _end(state, OperationStatus.SUCCEEDED, "scale to zero disabled (the endpoint was not parked)")
    sm = services.sagemaker
    ours = (
        [TRACKING_POLICY, IC_STEP_POLICY]
        if settings.kind == "inference-component"
        else [
            BACKLOG_POLICY,
            ASYNC_STEP_POLICY,
        ]
    )
    with aws("deleting the scale-from-zero alarms"):
        if settings.alarms:
            services.cloudwatch.delete_alarms(AlarmNames=settings.alarms)
    for alarm in settings.alarms:
        services.repo.delete_wake_alarm(alarm)
    for saved in settings.previous_targets:
        _restore_target(services.autoscaling, saved, ours)
        _raise_to_min(services, settings, saved)
    _timeline(services, state, "restored", f"autoscaling restored on {len(settings.previous_targets)} target(s)")
    endpoint = describe_endpoint(sm, state.endpoint_name)
    if settings.previous_config and endpoint and endpoint["EndpointConfigName"] != settings.previous_config:
        if endpoint["EndpointStatus"] != "InService":
            raise Retryable(f"the endpoint is {endpoint['EndpointStatus']}: restoring its config once it settles")
        with aws(f"UpdateEndpoint back to {settings.previous_config}"):
            sm.update_endpoint(EndpointName=state.endpoint_name, EndpointConfigName=settings.previous_config)
        _timeline(services, state, "update", f"UpdateEndpoint back to {settings.previous_config}")
        return _await(
            state, services, "endpoint", config=settings.previous_config, seconds=_provision(settings.instance_type)
        )
    return _end(state, OperationStatus.SUCCEEDED, "scale to zero disabled; the previous settings are restored")


def _raise_to_min(services: Services, settings: Settings, saved: SavedTarget) -> None:
    """A target restored with MinCapacity above its current capacity gets that capacity now; without a target, the
    copies or instances it had when scale to zero was enabled."""
    low = int(saved.min_capacity if saved.min_capacity is not None else saved.capacity or 0)
    if low < 1:
        return
    sm = services.sagemaker
    with aws(f"raising {saved.resource_id} back to {low}"):
        if saved.dimension == IC_DIMENSION:
            name = saved.resource_id.split("/", 1)[1]
            described = sm.describe_inference_component(InferenceComponentName=name)
            if int(described["RuntimeConfig"]["DesiredCopyCount"]) < low:
                sm.update_inference_component_runtime_config(
                    InferenceComponentName=name, DesiredRuntimeConfig={"CopyCount": low}
                )
        else:
            endpoint = describe_endpoint(sm, settings.endpoint) or {}
            live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
            variant = saved.resource_id.rsplit("/", 1)[1]
            if int(live.get(variant, {}).get("DesiredInstanceCount", low)) < low:
                sm.update_endpoint_weights_and_capacities(
                    EndpointName=settings.endpoint,
                    DesiredWeightsAndCapacities=[{"VariantName": variant, "DesiredInstanceCount": low}],
                )


# --- wake
def _wake(state: FlowState, services: Services) -> FlowState:
    """Scale out directly, instead of waiting for the alarm's step policy to act."""
    settings = _settings(services, state)
    sm = services.sagemaker
    if settings.kind == "classic":
        if settings.parked is None:
            return _end(state, OperationStatus.SUCCEEDED, "already serving (the endpoint is not parked)")
        return _recreate(state, services, settings)
    if settings.kind == "inference-component":
        raised = []
        instances = _instances(services, state.endpoint_name)
        if instances == 0:  # the scale-from-zero alarm fired: it has been at zero since the last sweep at least
            _save(services, log_capacity(settings, services.repo.now(), 0))
        for component in components_of(sm, state.endpoint_name):
            name = component["InferenceComponentName"]
            if int(component["RuntimeConfig"]["DesiredCopyCount"]) >= 1:
                continue
            if component["InferenceComponentStatus"] not in ("InService", "Failed"):
                continue  # already changing (the alarm's policy acted first): wait for it
            with aws(f"scaling {name} out to 1 copy"):
                sm.update_inference_component_runtime_config(
                    InferenceComponentName=name, DesiredRuntimeConfig={"CopyCount": 1}
                )
            raised.append(name)
        if raised:
            _timeline(services, state, "scale-out", f"1 copy of {', '.join(raised)} requested")
        expected = _copy_load(settings.instance_type) + (_provision(settings.instance_type) if instances == 0 else 0)
        return _await(state, services, "copies", seconds=expected)
    endpoint = describe_endpoint(sm, state.endpoint_name)
    if endpoint is None:
        raise ScalingFailed(f"endpoint {state.endpoint_name} does not exist")
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    variant = settings.variant or next(iter(live))
    if int(live.get(variant, {}).get("CurrentInstanceCount", 0)) == 0:
        _save(services, log_capacity(settings, services.repo.now(), 0))
    if int(live.get(variant, {}).get("DesiredInstanceCount", 0)) < 1:
        if endpoint["EndpointStatus"] != "InService":
            raise Retryable(f"the endpoint is {endpoint['EndpointStatus']}: scaling out once it settles")
        with aws("scaling the async variant out to 1 instance"):
            sm.update_endpoint_weights_and_capacities(
                EndpointName=state.endpoint_name,
                DesiredWeightsAndCapacities=[{"VariantName": variant, "DesiredInstanceCount": 1}],
            )
        _timeline(services, state, "scale-out", f"1 instance of {variant} requested")
    return _await(state, services, "instances", seconds=_provision(settings.instance_type))


# --- park / unpark (classic)
def _park(state: FlowState, services: Services) -> FlowState:
    """Record the exact config, tags and autoscaling, then delete the endpoint."""
    settings = _settings(services, state)
    if settings.kind != "classic":
        raise ScalingFailed(f"only classic endpoints are parked; {state.endpoint_name} is {settings.kind}")
    if settings.parked is not None:
        return _finish_parking(state, services, settings.parked)
    if state.trigger in ("schedule", "idle") and decide(settings, services, services.repo.now())[0] != "park":
        # the sweep decided on what it read before this flow took the lock: a wake may have ended in between
        return _end(state, OperationStatus.SUCCEEDED, "not parked: woken or in demand since the sweep decided")
    sm = services.sagemaker
    endpoint = describe_endpoint(sm, state.endpoint_name)
    if endpoint is None:
        raise ScalingFailed(f"endpoint {state.endpoint_name} does not exist")
    if endpoint["EndpointStatus"] != "InService":
        raise Retryable(f"the endpoint is {endpoint['EndpointStatus']}: parking once it settles")
    with aws("reading the endpoint's tags"):
        tags = [
            {"Key": t["Key"], "Value": t["Value"]} for t in sm.list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]
        ]
    targets = [
        _saved_target(
            services.autoscaling, f"endpoint/{state.endpoint_name}/variant/{v['VariantName']}", VARIANT_DIMENSION
        )
        for v in endpoint.get("ProductionVariants", [])
    ]
    parked = Parked(
        config_name=endpoint["EndpointConfigName"],
        tags=tags,
        targets=[t for t in targets if t.min_capacity is not None],
        parked_at=services.repo.now(),
        by=state.trigger,
    )
    instances = sum(int(v.get("CurrentInstanceCount", 0)) for v in endpoint.get("ProductionVariants", []))
    settings = settings.model_copy(update={"parked": parked, "awake_instances": max(1, instances)})
    _save(services, log_capacity(settings, parked.parked_at, 0))  # recorded before the delete: never lost
    with aws(f"deleting endpoint {state.endpoint_name}"):
        sm.delete_endpoint(EndpointName=state.endpoint_name)
    _timeline(
        services,
        state,
        "parked",
        f"endpoint deleted; {parked.config_name}, {len(tags)} tag(s), {len(parked.targets)} scaling target(s) recorded",
        by=state.trigger,
    )
    return _end(state, OperationStatus.SUCCEEDED, f"parked ({state.trigger}); config {parked.config_name} kept")


def _finish_parking(state: FlowState, services: Services, parked: Parked) -> FlowState:
    """Recorded as parked: done if the endpoint is gone (or going). Still there, this is a retry of a park whose
    DeleteEndpoint failed after the record was written (throttled, a 5xx): delete it now."""
    endpoint = describe_endpoint(services.sagemaker, state.endpoint_name)
    if endpoint is None or endpoint["EndpointStatus"] == "Deleting":
        return _end(state, OperationStatus.SUCCEEDED, "already parked")
    if endpoint["EndpointStatus"] != "InService":
        raise Retryable(f"the endpoint is {endpoint['EndpointStatus']}: parking once it settles")
    with aws(f"deleting endpoint {state.endpoint_name}"):
        services.sagemaker.delete_endpoint(EndpointName=state.endpoint_name)
    _timeline(services, state, "parked", f"endpoint deleted; {parked.config_name} kept", by=state.trigger)
    return _end(state, OperationStatus.SUCCEEDED, f"parked ({state.trigger}); config {parked.config_name} kept")


def _unpark(state: FlowState, services: Services) -> FlowState:
    settings = _settings(services, state)
    if settings.parked is None:
        return _end(state, OperationStatus.SUCCEEDED, "not parked")
    return _recreate(state, services, settings)


def _recreate(state: FlowState, services: Services, settings: Settings) -> FlowState:
    parked = settings.parked
    assert parked is not None
    sm = services.sagemaker
    endpoint = describe_endpoint(sm, state.endpoint_name)
    if endpoint is not None and endpoint["EndpointStatus"] == "Failed":  # an earlier recreation failed: start over
        _delete_failed(state, services)
        endpoint = describe_endpoint(sm, state.endpoint_name)
    if endpoint is not None and endpoint["EndpointStatus"] == "Deleting":
        _timeline(services, state, "waiting", "the parked endpoint is being deleted: recreating it once it is gone")
        return _await(state, services, "gone", seconds=DELETE_SECONDS)
    if endpoint is None:
        kwargs: dict[str, Any] = {"EndpointName": state.endpoint_name, "EndpointConfigName": parked.config_name}
        if parked.tags:
            kwargs["Tags"] = parked.tags
        with aws(f"recreating endpoint {state.endpoint_name} from {parked.config_name}"):
            sm.create_endpoint(**kwargs)
        _timeline(services, state, "unpark", f"CreateEndpoint from {parked.config_name}", by=state.trigger)
    return _await(state, services, "endpoint", config=parked.config_name, seconds=_provision(settings.instance_type))


def _delete_failed(state: FlowState, services: Services) -> None:
    """A recreated endpoint that failed (say its model fails the health check) holds nothing but its name: delete it,
    so the endpoint is parked again (config, tags and scaling kept) and the next wake recreates it."""
    with aws(f"deleting the failed endpoint {state.endpoint_name}"):
        services.sagemaker.delete_endpoint(EndpointName=state.endpoint_name)
    _timeline(services, state, "parked", "the recreated endpoint failed: deleted; it stays parked, a wake retries")


def _copy_load(instance_type: str | None) -> int:
    kind = catalog.get(instance_type).accelerator.kind if instance_type else "none"
    return COPY_LOAD_SECONDS.get(kind, COPY_LOAD_ACCELERATED_SECONDS)


def _provision(instance_type: str | None) -> int:
    kind = catalog.get(instance_type).accelerator.kind if instance_type else "none"
    return PROVISION_SECONDS.get(kind, PROVISION_SECONDS["none"])


# --- waiting
def _await(
    state: FlowState,
    services: Services,
    expect: Literal["endpoint", "copies", "instances", "gone"],
    *,
    seconds: int,
    config: str | None = None,
) -> FlowState:
    wait = Wait(
        expect=expect,
        config=config,
        started_at=services.repo.now(),
        # events resume the other waits: their heartbeat is a fallback with slack; copies send no event, so the
        # first look is a little before they are due, then one every COPY_RECHECK_SECONDS
        heartbeat_seconds=math.ceil(seconds * (COPY_FIRST_LOOK if expect == "copies" else 1.25)),
        give_up_at=services.repo.now() + max(GIVE_UP_FACTOR * seconds, GIVE_UP_MIN_SECONDS),
    )
    return state.model_copy(update={"wait": wait, "next": "await"})


def await_ready(state: FlowState, services: Services, token: str) -> FlowState:
    """Park the token under the endpoint: its state-change event resumes the flow; if it already serves, resume now."""
    wait = state.wait
    assert wait is not None
    repo = services.repo
    repo.put_task_token(
        state.endpoint_name,
        WaitPurpose.ENDPOINT_UPDATE,
        token,
        state.operation_id,
        wait.heartbeat_seconds + RECHECK_SECONDS,
    )
    if _serving(state, services)[0]:
        mine = repo.take_task_token(state.endpoint_name, WaitPurpose.ENDPOINT_UPDATE)
        if mine is not None and mine.token == token:
            with aws("resuming the flow"):
                services.stepfunctions.send_task_success(taskToken=token, output=json.dumps({"source": "Describe"}))
    return state


def _serving(state: FlowState, services: Services) -> tuple[bool, str]:
    """Whether what the flow waits for is there, and what stands in the way (for the timeline)."""
    wait = state.wait
    assert wait is not None
    sm = services.sagemaker
    endpoint = describe_endpoint(sm, state.endpoint_name)
    if wait.expect == "gone":
        return endpoint is None or endpoint["EndpointStatus"] != "Deleting", "the parked endpoint is being deleted"
    if endpoint is None:
        return False, "the endpoint does not exist yet"
    status = endpoint["EndpointStatus"]
    if status in ("Failed", "UpdateRollbackFailed", "OutOfService"):
        raise ScalingFailed(f"the endpoint is {status}: {endpoint.get('FailureReason') or 'no reason given'}")
    if wait.expect == "copies":
        components = components_of(sm, state.endpoint_name)
        failed = [c for c in components if c["InferenceComponentStatus"] == "Failed"]
        if failed:
            name, why = failed[0]["InferenceComponentName"], failed[0].get("FailureReason", "")
            raise ScalingFailed(f"inference component {name} failed: {why}")
        short = [c["InferenceComponentName"] for c in components if int(c["RuntimeConfig"]["CurrentCopyCount"]) < 1]
        return not short, f"no copy of {', '.join(short)} serves yet"
    if status != "InService" or endpoint.get("PendingDeploymentSummary"):
        return False, f"the endpoint is {status}"
    if wait.expect == "instances":
        variants = endpoint.get("ProductionVariants", [])
        if sum(int(v.get("CurrentInstanceCount", 0)) for v in variants) >= 1:
            return True, ""
        if endpoint.get("FailureReason") and all(int(v.get("DesiredInstanceCount", 0)) < 1 for v in variants):
            # SageMaker undid the scale-out (its instances failed): waiting longer brings nothing
            raise ScalingFailed(f"the scale-out was rolled back: {endpoint['FailureReason']}")
        return False, "no instance serves yet"
    if wait.config and endpoint["EndpointConfigName"] != wait.config:
        raise ScalingFailed(
            f"the endpoint settled on {endpoint['EndpointConfigName']}, not {wait.config}: the update was rolled back"
        )
    return True, ""


def check(state: FlowState, services: Services) -> FlowState:
    """Resumed (event or heartbeat): one look decides whether it serves; then what follows serving."""
    serving, why = _serving(state, services)
    wait = state.wait
    assert wait is not None
    if not serving:
        if services.repo.now() >= wait.give_up_at:
            waited = services.repo.now() - wait.started_at
            raise ScalingFailed(f"not serving {waited:.0f} s after the change ({why}): capacity did not come")
        _timeline(services, state, "waiting", f"not serving yet: {why}")
        recheck = COPY_RECHECK_SECONDS if wait.expect == "copies" else RECHECK_SECONDS
        again = wait.model_copy(update={"heartbeat_seconds": recheck})
        return state.model_copy(update={"wait": again, "next": "await"})
    if wait.expect == "gone":
        return _recreate(state, services, _settings(services, state))
    return _served(state, services)


def _served(state: FlowState, services: Services) -> FlowState:
    settings = load_settings(services.repo, state.endpoint_name)
    now = services.repo.now()
    if settings is None:
        return _end(state, OperationStatus.SUCCEEDED, "the endpoint serves")
    if settings.parked is not None and state.action in ("wake", "unpark", "disable"):
        for target in settings.parked.targets:
            register(services.autoscaling, target)
        _timeline(
            services,
            state,
            "unparked",
            f"serving again; {len(settings.parked.targets)} scaling target(s) re-registered",
        )
        settings = settings.model_copy(update={"parked": None})
    instances = _instances(services, state.endpoint_name)
    settings = log_capacity(settings, now, instances)
    reason = "the endpoint serves"
    if state.action in ("wake", "unpark"):
        seconds = round(now - state.requested_at, 1)
        wake = LastWake(
            operation_id=state.operation_id,
            trigger=state.trigger,
            requested_at=state.requested_at,
            serving_at=now,
            seconds=seconds,
        )
        settings = settings.model_copy(update={"last_wake": wake})
        reason = f"serving {seconds:g} s after the wake request ({state.trigger})"
        metrics.wake_duration(state.endpoint_name, seconds)
        _timeline(services, state, "serving", reason, seconds=seconds)
    elif state.action == "enable":
        reason = "scale to zero enabled (inference components: managed instance scaling MinInstanceCount 0)"
    elif state.action == "disable":
        reason = "scale to zero disabled; the previous settings are restored"
    _save(services, settings)
    return _end(state, OperationStatus.SUCCEEDED, reason)


def _instances(services: Services, endpoint_name: str) -> int:
    endpoint = describe_endpoint(services.sagemaker, endpoint_name)
    if endpoint is None:
        return 0
    return sum(int(v.get("CurrentInstanceCount", 0)) for v in endpoint.get("ProductionVariants", []))


# --- endings
def handle_failure(state: FlowState, services: Services) -> FlowState:
    """A step failed for good: the reason, a quota named as such. The endpoint keeps serving what it serves."""
    reason = rollout._reason(rollout.FlowState.model_construct(error=state.error))  # type: ignore[call-arg]
    if (state.error or {}).get("Error") == "CapacityUnavailable":
        reason = f"no capacity after retries with backoff: {reason}"
    with suppress(NotFound):
        _timeline(services, state, "error", reason, **(state.error or {}))
    return _end(state, OperationStatus.FAILED, reason)


def finish(state: FlowState, services: Services) -> FlowState:
    """Record the outcome (a failure with its diagnosis), forget a disabled endpoint, release claim and lock."""
    repo = services.repo
    outcome = state.outcome or Outcome(status=OperationStatus.FAILED, reason="the flow ended without an outcome")
    record = repo.get_operation(state.operation_id)
    result: dict[str, Any] = {"status": outcome.status.value, "reason": outcome.reason, "action": state.action}
    if outcome.status is OperationStatus.SUCCEEDED and state.action == "disable":
        settings = load_settings(repo, state.endpoint_name)
        for alarm in settings.alarms if settings else []:
            repo.delete_wake_alarm(alarm)
        repo.delete_scaling_settings(state.endpoint_name)
    settings = load_settings(repo, state.endpoint_name)
    if settings is not None and settings.last_wake and settings.last_wake.operation_id == state.operation_id:
        result["wake_seconds"] = settings.last_wake.seconds
    if not record.terminal and outcome.status is OperationStatus.FAILED:
        result["diagnosis"] = _diagnosis(state, services, record, outcome.reason)
        _timeline(services, state, "diagnosis", str(result["diagnosis"].get("summary", ""))[:1000])
    if not record.terminal:
        repo.transition(state.operation_id, outcome.status, result=result)
        _timeline(services, state, "finished", f"{outcome.status.value}: {outcome.reason}")
        metrics.operation_finished(KIND, outcome.status.value)
    if state.action == "wake":
        with suppress(NotFound):
            repo.release_wake(state.endpoint_name, state.operation_id)
    repo.release_lock(state.endpoint_name, state.operation_id)
    if outcome.status is OperationStatus.FAILED and settings is not None and settings.parked is not None:
        # after the diagnosis read it; throttled or a 5xx raises and the state machine retries this step (the
        # record is terminal and the lock released by then: a retry only cleans up)
        described = describe_endpoint(services.sagemaker, state.endpoint_name)
        if described is not None and described["EndpointStatus"] == "Failed":
            _delete_failed(state, services)
    return state.model_copy(update={"outcome": outcome, "next": "done"})


def _diagnosis(state: FlowState, services: Services, record: OperationRecord, reason: str) -> dict[str, Any]:
    from inferops import diagnosis  # every failed scaling operation (a failed wake above all) carries its diagnosis

    try:
        return diagnosis.for_operation(
            state.endpoint_name,
            diagnosis.default_clients(services.sagemaker.meta.region_name),
            since=record.created_at.timestamp(),
            errors=[reason],
            budget_seconds=diagnosis.OPERATION_BUDGET_SECONDS,
        )
    except Exception as error:  # bounded and best effort: a diagnosis never fails the flow it explains
        import logging

        logging.getLogger(__name__).warning("diagnosis unavailable", exc_info=error)
        return diagnosis.unavailable(state.endpoint_name, str(error))


STEPS: dict[str, Step] = {
    "begin": begin,
    "apply": apply,
    "check": check,
    "handle_failure": handle_failure,
    "finish": finish,
}
TOKEN_STEPS: dict[str, TokenStep] = {"await_ready": await_ready}


# ------------------------------------------------------------------------------------------------ starting


class OperationView(Model):
    """A scaling operation as the API shows it (POST/PUT/DELETE replies and GET /endpoints/{name})."""

    model_config = ConfigDict(frozen=True)

    id: str
    endpoint: str
    action: str
    trigger: str
    status: OperationStatus
    created_at: str
    updated_at: str
    result: dict[str, Any] | None = None
    timeline: list[dict[str, Any]] = Field(default_factory=list)


def view(record: OperationRecord, timeline: list[TimelineEntry] | None = None) -> OperationView:
    return OperationView(
        id=record.id,
        endpoint=record.endpoint,
        action=str(record.request.get("action", "")),
        trigger=str(record.request.get("trigger", "request")),
        status=record.status,
        created_at=record.model_dump(mode="json")["created_at"],
        updated_at=record.model_dump(mode="json")["updated_at"],
        result=record.result,
        timeline=[e.model_dump(mode="json", exclude={"operation_id", "expires_at"}) for e in timeline or []],
    )


def start(
    action: Action,
    endpoint: str,
    clients: Clients,
    *,
    request: ScaleToZeroRequest | None = None,
    trigger: str = "request",
    requested_at: float | None = None,
) -> OperationView:
    """Record the operation, take the endpoint's lock (409 when another operation holds it), start the flow."""
    repo = clients.repo
    flow_steps.refuse_when_locked(repo, endpoint, "name")
    body = {"action": action, "trigger": trigger, "request": request.model_dump(mode="json") if request else None}
    record = repo.create_operation(KIND, endpoint, body)
    return _launch(record, clients, action, request, trigger, requested_at)


def _launch(
    record: OperationRecord,
    clients: Clients,
    action: Action,
    request: ScaleToZeroRequest | None,
    trigger: str,
    requested_at: float | None,
) -> OperationView:
    repo = clients.repo
    state = FlowState(
        operation_id=record.id,
        endpoint_name=record.endpoint,
        action=action,
        trigger=trigger,
        requested_at=repo.now() if requested_at is None else requested_at,
        request=request,
    )
    arn = flow_steps.start_execution(
        repo,
        clients.stepfunctions,
        clients.state_machine_arn,
        record,
        state,
        lease_seconds=flow_steps.START_LEASE_SECONDS,
        field="name",
    )
    repo.append_timeline(record.id, "requested", f"{action} requested ({trigger})", {"execution": arn})
    metrics.operation_started(KIND)
    return view(repo.get_operation(record.id))


def clients_from_env() -> Clients:
    """The API's and the sweep's clients: the table, AWS, and the scaling state machine from the environment."""
    return flow_steps.clients_from_env("SCALING_STATE_MACHINE_ARN")


def enable(endpoint: str, request: ScaleToZeroRequest, clients: Clients) -> OperationView:
    sm = clients.sagemaker
    described = describe_endpoint(sm, endpoint)
    if described is None and load_settings(clients.repo, endpoint) is None:
        raise NotFound(f"endpoint '{endpoint}' does not exist", "name")
    if described is not None:
        with aws("reading the endpoint config"):
            config: dict[str, Any] = dict(
                sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
            )
        kind = detect_kind(sm, described, config)
        if kind == "classic" and request.max_copies is not None:
            raise InvalidInput("max_copies applies to inference-component endpoints only", "max_copies")
        if kind != "classic" and request.schedule is not None:
            raise InvalidInput(
                f"schedule parks classic endpoints; {endpoint} is {kind} and scales to zero itself", "schedule"
            )
    return start("enable", endpoint, clients, request=request)


def disable(endpoint: str, clients: Clients) -> OperationView:
    if load_settings(clients.repo, endpoint) is None:
        raise NotFound(f"endpoint {endpoint} is not under scale-to-zero", "name")
    return start("disable", endpoint, clients)


def park(endpoint: str, clients: Clients) -> OperationView:
    """Park a classic endpoint under scale-to-zero now (the sweep or a wake unparks it)."""
    settings = load_settings(clients.repo, endpoint)
    if settings is None:
        raise NotFound(f"endpoint {endpoint} is not under scale-to-zero", "name")
    if settings.kind != "classic":
        raise InvalidInput(
            f"only classic endpoints are parked; {endpoint} is {settings.kind} and scales itself", "name"
        )
    if settings.parked is not None:
        raise Conflict(f"endpoint {endpoint} is already parked", "name")
    return start("park", endpoint, clients)


class WakeStarted(Model):
    model_config = ConfigDict(frozen=True)

    started: bool
    operation: OperationView | None
    reason: str


def wake(
    endpoint: str, clients: Clients, *, trigger: str = "request", requested_at: float | None = None
) -> WakeStarted:
    """Start one wake: the first claim wins; later requests and alarms get the wake in flight."""
    repo = clients.repo
    item = repo.get_scaling_settings(endpoint)
    if not item or not item.get("data"):
        raise NotFound(f"endpoint {endpoint} is not under scale-to-zero", "name")
    lock = repo.get_lock(endpoint)
    if lock is not None and not lock.expired and lock.owner != item.get("waking"):
        raise Conflict(f"endpoint {endpoint} already has an operation in flight: {lock.owner}", "name")
    operation_id = repo.new_operation_id()
    holder = repo.claim_wake(endpoint, operation_id, WAKE_LEASE_SECONDS)
    if holder:
        with suppress(NotFound):
            return WakeStarted(
                started=False, operation=view(repo.get_operation(holder)), reason=f"wake {holder} already in flight"
            )
        return WakeStarted(started=False, operation=None, reason=f"wake {holder} already in flight")
    body = {"action": "wake", "trigger": trigger, "request": None}
    record = repo.create_operation(KIND, endpoint, body, operation_id)
    try:
        started = _launch(record, clients, "wake", None, trigger, requested_at)
    except Exception:
        repo.release_wake(endpoint, operation_id)
        raise
    return WakeStarted(started=True, operation=started, reason="waking")


def wake_on_alarm(
    alarm_name: str, changed_at: float, repo: Repository, stepfunctions: SFNClient, state_machine_arn: str
) -> dict[str, Any] | None:
    """The alarm-events handler's hook: a scale-from-zero alarm in ALARM wakes its endpoint (None: not ours)."""
    endpoint = repo.wake_alarm_endpoint(alarm_name)
    if endpoint is None:
        return None
    settings = load_settings(repo, endpoint)
    woken = settings.last_wake if settings is not None else None
    if woken is not None and changed_at <= woken.serving_at + WAKE_ALARM_LOOKBACK_SECONDS:
        return {"action": "already_awake", "endpoint": endpoint, "operation": woken.operation_id}
    clients = Clients(
        repo=repo,
        sagemaker=None,  # type: ignore[arg-type]  # a wake's start needs only the table and Step Functions
        autoscaling=None,  # type: ignore[arg-type]
        cloudwatch=None,  # type: ignore[arg-type]
        stepfunctions=stepfunctions,
        state_machine_arn=state_machine_arn,
    )
    try:
        started = wake(endpoint, clients, trigger=f"alarm:{alarm_name}", requested_at=changed_at)
    except Conflict as busy:  # another operation holds the endpoint (a deployment, a disable)
        return {"action": "ignored", "endpoint": endpoint, "reason": busy.message}
    except NotFound as gone:
        return {"action": "ignored", "endpoint": endpoint, "reason": gone.message}
    return {
        "action": "wake" if started.started else "already_waking",
        "endpoint": endpoint,
        "operation": started.operation.id if started.operation else None,
    }


# ------------------------------------------------------------------------------------------------ sweep
def sweep(clients: Clients, now: float) -> list[dict[str, Any]]:
    """The scheduled job: log capacity, park idle or off-hours classic endpoints, unpark them in awake hours."""
    decisions: list[dict[str, Any]] = []
    services = Services(clients.repo, clients.sagemaker, clients.autoscaling, clients.cloudwatch, clients.stepfunctions)
    for item in clients.repo.scaling_endpoints():
        if not item.get("data"):
            continue
        settings = Settings.model_validate(item["data"])
        action, why = decide(settings, services, now)
        if action is None:
            continue
        try:
            started = start(action, settings.endpoint, clients, trigger=why)
        except Conflict as busy:
            decisions.append({"endpoint": settings.endpoint, "action": "skipped", "reason": busy.message})
            continue
        decisions.append({"endpoint": settings.endpoint, "action": action, "reason": why, "operation": started.id})
    return decisions


def decide(settings: Settings, services: Services, now: float) -> tuple[Action | None, str]:
    """What the sweep does to one endpoint, and why (asked again by a park the sweep started, under the lock)."""
    if settings.kind != "classic":
        instances = _instances(services, settings.endpoint)
        logged = log_capacity(settings, now, instances)
        if logged is not settings:
            services.repo.update_scaling_settings(
                settings.endpoint, {"capacity_log": logged.model_dump(mode="json")["capacity_log"]}
            )
        return None, ""
    schedule = settings.request.schedule
    awake_hours = schedule is None or schedule.awake(now)
    if settings.parked is not None:
        if schedule is not None and awake_hours and settings.parked.by == "schedule":
            return "unpark", "schedule"
        return None, ""
    window = settings.request.idle_minutes * 60
    since = max(settings.enabled_at, (settings.last_wake.serving_at if settings.last_wake else 0.0))
    woken = settings.last_wake is not None and now - settings.last_wake.serving_at < window
    if not awake_hours and not woken:  # a wake outside the awake hours keeps it up for one idle window
        return "park", "schedule"
    if now - since < window:
        return None, ""
    if demand(services.cloudwatch, settings, now - window, now) == 0:
        return "park", "idle"
    return None, ""


def demand(cw: CloudWatchClient, settings: Settings, start: float, end: float) -> float:
    """Requests that reached the endpoint in [start, end) (served or not): Invocations, failures, backlog."""
    return sum(hourly_demand(cw, settings, start, end, period=max(60, int(end - start) // 60 * 60)).values())


def demand_queries(settings: Settings) -> list[dict[str, Any]]:
    def query(n: int, name: str, dims: dict[str, str], stat: str) -> dict[str, Any]:
        return {
            "Id": f"m{n}",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/SageMaker",
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                },
                "Period": 3600,
                "Stat": stat,
            },
        }

    ep = settings.endpoint
    if settings.kind == "inference-component":
        specs = [
            (m, {"InferenceComponentName": c}, "Sum")
            for c in settings.components
            for m in ("Invocations", "NoCapacityInvocationFailures")
        ]
    elif settings.kind == "async":
        specs = [("ApproximateBacklogSize", {"EndpointName": ep}, "Maximum")]
        if settings.variant:
            specs.append(("InvocationsProcesssed", {"EndpointName": ep, "VariantName": settings.variant}, "Sum"))
    else:
        specs = [("Invocations", {"EndpointName": ep, "VariantName": settings.variant or "AllTraffic"}, "Sum")]
    return [query(n, name, dims, stat) for n, (name, dims, stat) in enumerate(specs)]


def hourly_demand(
    cw: CloudWatchClient, settings: Settings, start: float, end: float, *, period: int = 3600
) -> dict[float, float]:
    """Demand per period start (GetMetricData, one call per page)."""
    queries = [{**q, "MetricStat": {**q["MetricStat"], "Period": period}} for q in demand_queries(settings)]
    found: dict[float, float] = {}
    if not queries:
        return found
    kwargs: dict[str, Any] = {
        "MetricDataQueries": queries,
        "StartTime": datetime.fromtimestamp(start, UTC),
        "EndTime": datetime.fromtimestamp(end, UTC),
    }
    with aws("reading the endpoint's traffic"):
        while True:
            response = cw.get_metric_data(**kwargs)
            for result in response["MetricDataResults"]:
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    key = stamp.timestamp()
                    found[key] = found.get(key, 0.0) + float(value)
            token = response.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
    return found


# ------------------------------------------------------------------------------------------------ cost
class EndpointCost(Model):
    model_config = ConfigDict(frozen=True)

    endpoint: str
    kind: EndpointKind
    instance_type: str | None
    price_usd_per_hour: float | None
    hours: float
    idle_hours: float = Field(description="hours with capacity running and no requests")
    idle_cost_usd: float | None = Field(description="what those idle hours cost")
    zero_hours: float = Field(description="hours at zero capacity (scaled to zero or parked)")
    saved_usd: float | None = Field(description="zero hours x the awake fleet's price")
    instance_hours: float


class CostReport(Model):
    model_config = ConfigDict(frozen=True)

    days: int
    start: str
    end: str
    price_snapshot: str
    endpoints: list[EndpointCost]
    idle_cost_usd: float
    saved_usd: float


def capacity_at(log: list[tuple[float, int]], at: float, default: int) -> int:
    current = default
    for when, instances in log:
        if when > at:
            break
        current = instances
    return current


def account(
    log: list[tuple[float, int]],
    demand_by_hour: dict[float, float],
    *,
    start: float,
    end: float,
    before: int,
) -> tuple[float, float, float, float]:
    """(instance-hours, idle instance-hours, zero hours, hours) over [start, end), hour by hour.

    Capacity is integrated exactly between the logged changes; an hour counts as idle when nothing reached the
    endpoint in it. `before` is the capacity before the first logged change.
    """
    points = sorted(log)
    hour = math.floor(start / 3600) * 3600
    instance_hours = idle = zero = 0.0
    while hour < end:
        lo, hi = max(hour, start), min(hour + 3600, end)
        edges = [lo] + [t for t, _ in points if lo < t < hi] + [hi]
        used = at_zero = 0.0
        for a, b in itertools.pairwise(edges):
            instances = capacity_at(points, a, before)
            used += instances * (b - a) / 3600
            if instances == 0:
                at_zero += (b - a) / 3600
        instance_hours += used
        zero += at_zero
        if demand_by_hour.get(float(hour), 0.0) == 0:
            idle += used
        hour += 3600
    return instance_hours, idle, zero, (end - start) / 3600


def endpoint_cost(settings: Settings, cw: CloudWatchClient, start: float, end: float) -> EndpointCost:
    price = catalog.get(settings.instance_type).price_usd_per_hour if settings.instance_type else None
    begin_at = max(start, settings.enabled_at)
    by_hour = hourly_demand(cw, settings, math.floor(begin_at / 3600) * 3600, end)
    used, idle, zero, hours = account(
        settings.capacity_log,
        by_hour,
        start=begin_at,
        end=end,
        before=settings.awake_instances,
    )
    return EndpointCost(
        endpoint=settings.endpoint,
        kind=settings.kind,
        instance_type=settings.instance_type,
        price_usd_per_hour=price,
        hours=round(hours, 3),
        idle_hours=round(idle, 3),
        idle_cost_usd=None if price is None else round(idle * price, 2),
        zero_hours=round(zero, 3),
        saved_usd=None if price is None else round(zero * settings.awake_instances * price, 2),
        instance_hours=round(used, 3),
    )


def cost_report(repo: Repository, cw: CloudWatchClient, days: int) -> CostReport:
    if not 1 <= days <= CAPACITY_LOG_DAYS:
        raise InvalidInput(f"days must be 1-{CAPACITY_LOG_DAYS}, got {days}", "days")
    end = repo.now()
    start = end - days * 86400
    costs = [
        endpoint_cost(Settings.model_validate(item["data"]), cw, start, end)
        for item in repo.scaling_endpoints()
        if item.get("data")
    ]
    return CostReport(
        days=days,
        start=datetime.fromtimestamp(start, UTC).isoformat(),
        end=datetime.fromtimestamp(end, UTC).isoformat(),
        price_snapshot=catalog.snapshot().as_of.isoformat(),
        endpoints=costs,
        idle_cost_usd=round(sum(c.idle_cost_usd or 0.0 for c in costs), 2),
        saved_usd=round(sum(c.saved_usd or 0.0 for c in costs), 2),
    )


# ------------------------------------------------------------------------------------------------ endpoint view
class EndpointView(Model):
    """GET /endpoints/{name}: kind, capacity, scale-to-zero state, last wake, idle cost of the last 7 days."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: EndpointKind | None
    status: str
    capacity: dict[str, Any]
    scale_to_zero: dict[str, Any] | None
    last_wake_seconds: float | None
    last_wake: dict[str, Any] | None
    idle_cost: EndpointCost | None
    operation: OperationView | None


def endpoint_view(name: str, clients: Clients) -> EndpointView:
    sm = clients.sagemaker
    settings = load_settings(clients.repo, name)
    described = describe_endpoint(sm, name)
    if described is None and settings is None:
        raise NotFound(f"endpoint '{name}' does not exist", "name")
    kind: EndpointKind | None = settings.kind if settings else None
    capacity: dict[str, Any] = {"instances": 0}
    if described is not None:
        capacity["instances"] = sum(
            int(v.get("CurrentInstanceCount", 0)) for v in described.get("ProductionVariants", [])
        )
        if kind is None:
            with aws("reading the endpoint config"):
                config: dict[str, Any] = dict(
                    sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
                )
            with suppress(InvalidInput):
                kind = detect_kind(sm, described, config)
        if kind == "inference-component":
            capacity["copies"] = {
                c["InferenceComponentName"]: int(c["RuntimeConfig"]["CurrentCopyCount"])
                for c in components_of(sm, name)
            }
    status = described["EndpointStatus"] if described else ("Parked" if settings and settings.parked else "Deleted")
    records, _ = clients.repo.page_operations(name, kind=KIND, limit=1)
    operation = view(records[0], clients.repo.timeline(records[0].id)) if records else None
    stz: dict[str, Any] | None = None
    cost = None
    if settings is not None:
        stz = {
            "enabled": True,
            "enabled_at": datetime.fromtimestamp(settings.enabled_at, UTC).isoformat(),
            "parked": settings.parked.model_dump(mode="json") if settings.parked else None,
            "at_zero": capacity["instances"] == 0 and not any(capacity.get("copies", {}).values()),
            "settings": settings.request.model_dump(mode="json"),
            "alarms": settings.alarms,
        }
        now = clients.repo.now()
        with suppress(StepError):
            cost = endpoint_cost(settings, clients.cloudwatch, now - 7 * 86400, now)
    return EndpointView(
        name=name,
        kind=kind,
        status=status,
        capacity=capacity,
        scale_to_zero=stz,
        last_wake_seconds=settings.last_wake.seconds if settings and settings.last_wake else None,
        last_wake=settings.last_wake.model_dump(mode="json") if settings and settings.last_wake else None,
        idle_cost=cost,
        operation=operation,
    )
