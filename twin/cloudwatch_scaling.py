"""Application Auto Scaling for the twin: moto stores scaling policies but never runs them (local-tooling.md).

Step-scaling policies run when an alarm action names them (and again every minute the alarm stays in that
state, as CloudWatch re-invokes Auto Scaling actions); target-tracking policies are applied coarsely on a
timer. Capacity changes go to the SageMaker simulator through `apply_capacity`, and every change is kept
as a scaling activity, served by DescribeScalingActivities (which moto lacks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twin.cloudwatch_alarms import MetricIndex, aggregate

DEFAULT_COOLDOWN = 300  # seconds; Application Auto Scaling's default for SageMaker targets

_DIMENSION_NOUNS = {
    "sagemaker:variant:DesiredInstanceCount": "instance count",
    "sagemaker:inference-component:DesiredCopyCount": "copy count",
    "sagemaker:variant:DesiredProvisionedConcurrency": "provisioned concurrency",
}

# Predefined target-tracking metric -> (namespace, metric name, statistic, keyed by inference component?)
PREDEFINED_METRICS: dict[str, tuple[str, str, str]] = {
    "SageMakerVariantInvocationsPerInstance": ("AWS/SageMaker", "InvocationsPerInstance", "Sum"),
    "SageMakerInferenceComponentInvocationsPerCopy": ("AWS/SageMaker", "InvocationsPerCopy", "Sum"),
    "SageMakerVariantConcurrentRequestsPerModelHighResolution": (
        "AWS/SageMaker",
        "ConcurrentRequestsPerModel",
        "Average",
    ),
    "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution": (
        "AWS/SageMaker",
        "ConcurrentRequestsPerCopy",
        "Average",
    ),
}


@dataclass(frozen=True)
class ScalingActivity:
    """One capacity change (or failed attempt), as DescribeScalingActivities reports it."""

    time: datetime
    activity_id: str
    resource_id: str
    scalable_dimension: str
    policy_name: str
    from_capacity: int
    to_capacity: int
    status: str
    cause: str
    description: str
    message: str

    def as_api(self) -> dict[str, Any]:
        stamp = self.time.timestamp()
        return {
            "ActivityId": self.activity_id,
            "ServiceNamespace": "sagemaker",
            "ResourceId": self.resource_id,
            "ScalableDimension": self.scalable_dimension,
            "Description": self.description,
            "Cause": self.cause,
            "StartTime": stamp,
            "EndTime": stamp,
            "StatusCode": self.status,
            "StatusMessage": self.message,
        }


@dataclass
class _Cooldown:
    until: float
    before: int


def dimensions_for(resource_id: str) -> dict[str, str] | None:
    """CloudWatch dimensions of a SageMaker scalable resource id."""
    parts = resource_id.split("/")
    if len(parts) == 4 and parts[0] == "endpoint" and parts[2] == "variant":
        return {"EndpointName": parts[1], "VariantName": parts[3]}
    if len(parts) == 2 and parts[0] == "inference-component":
        return {"InferenceComponentName": parts[1]}
    return None


def pick_step(steps: list[Mapping[str, Any]], delta: float) -> Mapping[str, Any] | None:
    """The step whose interval holds `value - threshold` (lower bound inclusive above 0, upper below 0)."""

    def bound(step: Mapping[str, Any], key: str, default: float) -> float:
        value = step.get(key)
        return default if value is None else float(value)

    for step in steps:
        low = bound(step, "MetricIntervalLowerBound", -math.inf)
        high = bound(step, "MetricIntervalUpperBound", math.inf)
        if (delta >= 0 and low <= delta < high) or (delta < 0 and low < delta <= high):
            return step
    for step in steps:  # an interval ending exactly at the delta (e.g. upper bound 0 with delta 0)
        if (
            bound(step, "MetricIntervalLowerBound", -math.inf)
            <= delta
            <= bound(step, "MetricIntervalUpperBound", math.inf)
        ):
            return step
    return None


def adjusted_capacity(adjustment_type: str, current: int, adjustment: float, min_magnitude: int | None) -> int:
    """New capacity for one step adjustment, with Application Auto Scaling's rounding for percentages."""
    if adjustment_type == "ExactCapacity":
        return int(adjustment)
    if adjustment_type == "PercentChangeInCapacity":
        raw = current * adjustment / 100.0
        change = (
            math.floor(raw) if raw > 1 else math.ceil(raw) if raw < -1 else (1 if raw > 0 else -1 if raw < 0 else 0)
        )
        if min_magnitude and 0 < abs(change) < min_magnitude:
            change = min_magnitude if change > 0 else -min_magnitude
        return current + change
    return current + int(adjustment)


class Scaler:
    """Runs the scaling policies stored in moto's Application Auto Scaling backend."""

    def __init__(
        self,
        *,
        account_id: str,
        region: str,
        capacity_of: Callable[[str, str], int | None],
        apply_capacity: Callable[[str, str, int], None],
        record: Callable[[ScalingActivity], None],
        new_id: Callable[[], str],
    ) -> None:
        self._account_id = account_id
        self._region = region
        self._capacity_of = capacity_of
        self._apply = apply_capacity
        self._record = record
        self._new_id = new_id
        self._cooldowns: dict[tuple[str, str], _Cooldown] = {}
        self._tracking_last: dict[tuple[str, str], tuple[float, str]] = {}

    # ------------------------------------------------------------------ moto access
    def backend(self) -> Any:
        from moto.applicationautoscaling.models import applicationautoscaling_backends

        return applicationautoscaling_backends[self._account_id][self._region]

    def find_policy(self, arn: str) -> Any | None:
        return next((p for p in list(self.backend().policies.values()) if p.policy_arn == arn), None)

    def _target(self, resource_id: str, dimension: str) -> Any | None:
        return self.backend().targets.get(dimension, {}).get(resource_id)

    # ------------------------------------------------------------------ step scaling
    def run_step_policy(
        self, policy_arn: str, *, alarm_name: str, state: str, values: list[float], threshold: float, now: float
    ) -> ScalingActivity | None:
        """Execute a step-scaling policy invoked by an alarm; None when nothing changes (cooldown, no step)."""
        policy = self.find_policy(policy_arn)
        if policy is None or policy.policy_type != "StepScaling":
            return None
        config: Mapping[str, Any] = policy.step_scaling_policy_configuration or {}
        aggregation = config.get("MetricAggregationType") or "Average"
        if values:
            reducer = {"Minimum": min, "Maximum": max}.get(aggregation)
            metric = reducer(values) if reducer else sum(values) / len(values)
        else:
            metric = threshold  # SetAlarmState or all-missing data: the breach sits at the threshold
        step = pick_step(list(config.get("StepAdjustments") or []), metric - threshold)
        target = self._target(policy.resource_id, policy.scalable_dimension)
        if step is None or target is None:
            return None
        current = self._current(policy.resource_id, policy.scalable_dimension, target)
        adjustment_type = config.get("AdjustmentType") or "ChangeInCapacity"
        magnitude = config.get("MinAdjustmentMagnitude")
        adjustment = float(step.get("ScalingAdjustment", 0))
        desired = self._clamp(target, adjusted_capacity(adjustment_type, current, adjustment, magnitude))
        key = (policy.resource_id, policy.scalable_dimension)
        cooldown = self._cooldowns.get(key)
        if cooldown is not None and now < cooldown.until:
            if desired <= current:
                return None  # scale-in waits for the cooldown; a repeated scale-out is already under way
            # During a scale-out cooldown, the capacity added by the initiating activity counts towards the next.
            desired = self._clamp(target, adjusted_capacity(adjustment_type, cooldown.before, adjustment, magnitude))
            if desired <= current:
                return None
        if desired == current or self._suspended(target, scaling_out=desired > current):
            return None
        cause = f"monitor alarm {alarm_name} in state {state} triggered policy {policy.policy_name}"
        activity = self._change(policy, current, desired, cause, now)
        if activity.status == "Successful" and (cooldown is None or now >= cooldown.until):
            seconds = config.get("Cooldown")
            self._cooldowns[key] = _Cooldown(now + (DEFAULT_COOLDOWN if seconds is None else int(seconds)), current)
        return activity

    # ------------------------------------------------------------------ target tracking
    def run_target_tracking(self, index: MetricIndex, now: float, window: int = 180) -> list[ScalingActivity]:
        """Move each target-tracking target toward TargetValue from the metric's recent average (coarse)."""
        activities = []
        for policy in list(self.backend().policies.values()):
            if policy.service_namespace != "sagemaker" or policy.policy_type != "TargetTrackingScaling":
                continue
            activity = self._track(policy, index, now, window)
            if activity is not None:
                activities.append(activity)
        return activities

    def _track(self, policy: Any, index: MetricIndex, now: float, window: int) -> ScalingActivity | None:
        config: Mapping[str, Any] = policy.target_tracking_scaling_policy_configuration or {}
        spec = self._tracked_metric(config, policy.resource_id)
        target = self._target(policy.resource_id, policy.scalable_dimension)
        if spec is None or target is None or not config.get("TargetValue"):
            return None
        namespace, name, dims, statistic = spec
        end = math.floor(now / 60) * 60
        values = [
            aggregate(index.points(namespace, name, dims, s, s + 60), statistic) for s in range(end - window, end, 60)
        ]
        present = [v for v in values if v is not None]
        if not present:
            return None
        metric = sum(present) / len(present)
        goal = float(config["TargetValue"])
        current = self._current(policy.resource_id, policy.scalable_dimension, target)
        if current == 0:
            wanted = math.ceil(metric / goal) if metric > goal else 0
        else:
            wanted = math.ceil(current * metric / goal - 1e-9)
        desired = self._clamp(target, wanted)
        if desired == current or self._suspended(target, scaling_out=desired > current):
            return None
        key = (policy.resource_id, policy.scalable_dimension)
        last_time, _ = self._tracking_last.get(key, (-math.inf, ""))
        if desired < current:
            if config.get("DisableScaleIn"):
                return None
            wait = config.get("ScaleInCooldown")
        else:
            wait = config.get("ScaleOutCooldown")
        if now - last_time < (DEFAULT_COOLDOWN if wait is None else int(wait)):
            return None
        direction = "AlarmHigh" if desired > current else "AlarmLow"
        alarm = f"TargetTracking-{policy.resource_id}-{direction}-{policy._guid}"
        cause = f"monitor alarm {alarm} in state ALARM triggered policy {policy.policy_name}"
        activity = self._change(policy, current, desired, cause, now)
        self._tracking_last[key] = (now, direction)
        return activity

    @staticmethod
    def _tracked_metric(config: Mapping[str, Any], resource_id: str) -> tuple[str, str, dict[str, str], str] | None:
        predefined = config.get("PredefinedMetricSpecification")
        if predefined:
            found = PREDEFINED_METRICS.get(predefined.get("PredefinedMetricType", ""))
            dims = dimensions_for(resource_id)
            if found is None or dims is None:
                return None
            return found[0], found[1], dims, found[2]
        custom = config.get("CustomizedMetricSpecification")
        if custom and custom.get("MetricName"):
            dims = {str(d["Name"]): str(d["Value"]) for d in custom.get("Dimensions") or []}
            return str(custom["Namespace"]), str(custom["MetricName"]), dims, str(custom.get("Statistic") or "Average")
        return None  # metric-math target tracking is not simulated

    # ------------------------------------------------------------------ shared
    def _current(self, resource_id: str, dimension: str, target: Any) -> int:
        known = self._capacity_of(resource_id, dimension)
        if known is not None:
            return known
        return int(target.min_capacity or 0)

    @staticmethod
    def _clamp(target: Any, capacity: int) -> int:
        low = int(target.min_capacity) if target.min_capacity is not None else 0
        high = int(target.max_capacity) if target.max_capacity is not None else capacity
        return max(low, min(high, capacity))

    @staticmethod
    def _suspended(target: Any, *, scaling_out: bool) -> bool:
        state = target.suspended_state or {}
        if isinstance(state, str):
            state = json.loads(state or "{}")
        return bool(state.get("DynamicScalingOutSuspended" if scaling_out else "DynamicScalingInSuspended"))

    def _change(self, policy: Any, current: int, desired: int, cause: str, now: float) -> ScalingActivity:
        noun = _DIMENSION_NOUNS.get(policy.scalable_dimension, "capacity")
        status, message = (
            "Successful",
            f"Successfully set desired {noun} to {desired}. Change successfully fulfilled by sagemaker.",
        )
        try:
            self._apply(policy.resource_id, policy.scalable_dimension, desired)
        except Exception as error:  # the simulator refusing (quota, endpoint updating) is a Failed activity
            status, message = "Failed", f"Failed to set desired {noun} to {desired}. Reason: {error}"
        activity = ScalingActivity(
            time=datetime.fromtimestamp(now, tz=UTC),
            activity_id=self._new_id(),
            resource_id=policy.resource_id,
            scalable_dimension=policy.scalable_dimension,
            policy_name=policy.policy_name,
            from_capacity=current,
            to_capacity=desired if status == "Successful" else current,
            status=status,
            cause=cause,
            description=f"Setting desired {noun} to {desired}.",
            message=message,
        )
        activities = self.backend().__dict__.setdefault("_twin_scaling_activities", [])
        activities.append(activity)
        self._record(activity)
        return activity


def describe_scaling_activities(response: Any) -> str:
    """DescribeScalingActivities for moto's Application Auto Scaling response class (moto lacks it)."""
    from moto.applicationautoscaling.models import applicationautoscaling_backends

    backend = applicationautoscaling_backends[response.current_account][response.region]
    namespace = response._get_param("ServiceNamespace")
    resource_id = response._get_param("ResourceId")
    dimension = response._get_param("ScalableDimension")
    limit = response._get_int_param("MaxResults") or 50
    start = int(response._get_param("NextToken") or 0)
    found = [
        a.as_api()
        for a in reversed(backend.__dict__.get("_twin_scaling_activities", []))
        if namespace == "sagemaker"
        and (not resource_id or a.resource_id == resource_id)
        and (not dimension or a.scalable_dimension == dimension)
    ]
    page = found[start : start + limit]
    token = str(start + limit) if start + limit < len(found) else None
    body: dict[str, Any] = {"ScalingActivities": page}
    if token:
        body["NextToken"] = token
    return json.dumps(body)
