"""Traffic, metrics and alarms of the local twin, on the virtual clock.

moto stores CloudWatch alarms and Application Auto Scaling policies but never evaluates or runs them, and
nothing produces SageMaker's metrics offline. `CloudWatchModel` closes that gap: every minute of virtual
time (every 10 s for high-resolution metrics) it

1. plays a load model per endpoint (`LoadProfile`, split over the serving variants by weight, with a
   per-model health knob `ModelProfile`) and writes SageMaker's metrics into moto with their real names,
   units and dimensions (AWS/SageMaker, /aws/sagemaker/Endpoints, EndpointConfigName per fleet,
   InferenceComponentName, async backlog metrics);
2. evaluates every metric alarm stored in moto (Period, EvaluationPeriods, DatapointsToAlarm, all four
   threshold operators, TreatMissingData, metric math) and, on a state change, sets the state in moto,
   emits AWS's "CloudWatch Alarm State Change" event and runs the alarm actions: SNS notifications and
   Application Auto Scaling step policies (see `twin/cloudwatch_scaling.py`);
3. applies target-tracking policies coarsely.

Not simulated (documented gaps): anomaly-detection and composite alarms (stored, never evaluated); Metrics
Insights queries and metric-math functions beyond arithmetic, METRICS(), SUM/AVG/MIN/MAX, FILL and ABS;
statistics other than the five basic ones and pNN (no tm99/wm99/IQM) and EvaluateLowSampleCountPercentile;
the evaluation range is fixed at EvaluationPeriods + 2 (AWS's example; the real count is unpublished);
metric-math target tracking and the 15-datapoint scale-in rule of target tracking; serverless and
multi-model metrics and the /aws/sagemaker/InferenceComponents namespace; alarms of other accounts/regions.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from twin.bus import EventSink
from twin.clock import Timer, VirtualClock
from twin.cloudwatch_alarms import (
    ALARM,
    INSUFFICIENT_DATA,
    OK,
    MetricIndex,
    StateSnapshot,
    aggregate,
    alarm_period,
    epoch_of,
    evaluate,
    history_state_data,
    naive_utc,
    sns_notification,
    state_change_detail,
)
from twin.cloudwatch_scaling import Scaler, ScalingActivity, describe_scaling_activities, dimensions_for
from twin.cloudwatch_traffic import (
    LoadProfile,
    ModelProfile,
    ProfileRegistry,
    ServingVariant,
    ServingVariantLike,
    TrafficModel,
)

__all__ = [
    "ActionRecord",
    "AlarmTransition",
    "CloudWatchModel",
    "EventSink",
    "LoadProfile",
    "ModelProfile",
    "ProfileRegistry",
    "ScalingActivity",
    "ServingVariant",
    "ServingVariantLike",
    "Topology",
]

DEFAULT_ACCOUNT_ID = "123456789012"  # moto's


# ---------------------------------------------------------------------------------------------- interfaces
class Topology(Protocol):
    """What the load model needs from the SageMaker simulator."""

    def serving_variants(self, endpoint_name: str) -> Sequence[ServingVariantLike]: ...

    def apply_capacity(self, resource_id: str, dimension: str, capacity: int) -> None: ...


# ---------------------------------------------------------------------------------------------- history
@dataclass(frozen=True)
class AlarmTransition:
    time: datetime
    alarm_name: str
    previous: str
    state: str
    reason: str


@dataclass(frozen=True)
class ActionRecord:
    time: datetime
    alarm_name: str
    action: str
    status: str  # Succeeded | Failed | Unsupported
    detail: str


HistoryRecord = AlarmTransition | ActionRecord | ScalingActivity


# ---------------------------------------------------------------------------------------------- the model
class CloudWatchModel:
    """Traffic -> metrics -> alarms -> actions for one account and region, driven by the virtual clock."""

    def __init__(
        self,
        clock: VirtualClock,
        sink: EventSink,
        topology: Topology,
        *,
        seed: int = 0,
        account_id: str = DEFAULT_ACCOUNT_ID,
        region: str = "us-east-1",
        target_tracking_interval: int = 180,
    ) -> None:
        self.clock = clock
        self.sink = sink
        self.topology = topology
        self.seed = seed
        self.account_id = account_id
        self.region = region
        self.target_tracking_interval = max(60, target_tracking_interval // 60 * 60)
        self.profiles = ProfileRegistry()
        self._lock = threading.RLock()
        self._index = MetricIndex()
        self._history: list[HistoryRecord] = []
        self.traffic = TrafficModel(self.profiles, seed)
        self._ic_endpoints: dict[str, str] = {}
        self._applied: dict[tuple[str, str], int] = {}
        self._ids = random.Random(f"{seed}|ids")
        self._timer: Timer | None = None
        self._installed = False
        self._next_boundary = 0.0
        self.scaler = Scaler(
            account_id=account_id,
            region=region,
            capacity_of=self._capacity_of,
            apply_capacity=self._apply_capacity,
            record=self._history.append,
            new_id=self._new_id,
        )

    # ------------------------------------------------------------------ lifecycle
    def install(self) -> None:
        """Patch moto (alarm states, history, activities) and start ticking on the clock."""
        with _PATCH_LOCK:
            key = (self.account_id, self.region)
            if _MODELS.get(key) not in (None, self):
                raise RuntimeError(f"another CloudWatchModel is installed for {key}")
            _MODELS[key] = self
            _apply_patches()
        with self._lock:
            if self._installed:
                return
            self._installed = True
            for alarm in list(self._cw_backend().alarms.values()):  # created before the patch: moto said OK
                if alarm.state_reason == "Unchecked: Initial alarm creation" and not alarm.history:
                    alarm.state_value = INSUFFICIENT_DATA
            now = self.clock.now()
            grain = 10 if self._needs_high_resolution() else 60
            self._next_boundary = math.floor(now / grain) * grain + grain
            self._schedule()

    def uninstall(self) -> None:
        with self._lock:
            self._installed = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        with _PATCH_LOCK:
            if _MODELS.get((self.account_id, self.region)) is self:
                del _MODELS[(self.account_id, self.region)]
            if not _MODELS:
                _remove_patches()

    def _schedule(self) -> None:
        self._timer = self.clock.call_at(self._next_boundary, self._on_timer, name="cloudwatch-tick")

    def _on_timer(self) -> None:
        self.tick()
        with self._lock:
            if self._installed:
                self._schedule()

    def tick(self) -> int:
        """Process every minute (or 10 s) boundary up to the clock's now, in order; returns how many."""
        done = 0
        with self._lock:
            if not self._installed:
                return 0
            now = self.clock.now()
            while self._next_boundary <= now:
                boundary = self._next_boundary
                self._process(boundary)
                grain = 10 if self._needs_high_resolution() else 60
                self._next_boundary = boundary + (grain - boundary % grain if boundary % grain else grain)
                done += 1
        return done

    # ------------------------------------------------------------------ knobs
    def set_load_profile(self, endpoint_name: str, profile: LoadProfile | None = None, **changes: Any) -> LoadProfile:
        """Start (or change) the traffic of an endpoint."""
        base = profile or self.profiles.load(endpoint_name) or LoadProfile()
        updated = replace(base, **changes)
        self.profiles.set_load(endpoint_name, updated)
        return updated

    def remove_load_profile(self, endpoint_name: str) -> None:
        self.profiles.remove_load(endpoint_name)

    def set_model_profile(self, model_name: str, profile: ModelProfile | None = None, **changes: Any) -> ModelProfile:
        """Make a model healthy, slow or failing (`ModelProfile.bad()`); applies to every fleet serving it."""
        base = profile or self.profiles.model(model_name)
        updated = replace(base, **changes)
        self.profiles.set_model(model_name, updated)
        return updated

    def add_async_backlog(self, endpoint_name: str, count: int) -> None:
        """Queue `count` async requests now (InvokeEndpointAsync calls the simulator received)."""
        with self._lock:
            self.traffic.add_backlog(endpoint_name, self.clock.now(), count)

    def async_backlog(self, endpoint_name: str) -> int:
        with self._lock:
            return self.traffic.backlog(endpoint_name)

    # ------------------------------------------------------------------ reading back
    def history(self) -> list[HistoryRecord]:
        """Alarm transitions, alarm actions and scaling activities, in virtual-time order."""
        with self._lock:
            return list(self._history)

    def transitions(self, alarm_name: str | None = None) -> list[AlarmTransition]:
        return [r for r in self.history() if isinstance(r, AlarmTransition) and alarm_name in (None, r.alarm_name)]

    def scaling_activities(self) -> list[ScalingActivity]:
        return [r for r in self.history() if isinstance(r, ScalingActivity)]

    def metric_series(
        self,
        namespace: str,
        metric_name: str,
        dimensions: Mapping[str, str],
        *,
        statistic: str = "Sum",
        period: int = 60,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[datetime, float]]:
        """A statistic per period (exact dimension set, as CloudWatch matches), periods without data left out."""
        with self._lock:
            self._index.sync(self._cw_backend().metric_data)
            last = epoch_of(end) if end else self.clock.now()
            first = epoch_of(start) if start else 0.0
            found = self._index.points(namespace, metric_name, dimensions, first, last)
            buckets: dict[float, list[Any]] = {}
            for point in found:
                buckets.setdefault(math.floor(point.ts / period) * period, []).append(point)
            series = []
            for bucket in sorted(buckets):
                value = aggregate(buckets[bucket], statistic)
                if value is not None:
                    series.append((datetime.fromtimestamp(bucket, tz=UTC), value))
            return series

    # ------------------------------------------------------------------ one boundary
    def _cw_backend(self) -> Any:
        from moto.cloudwatch.models import cloudwatch_backends

        return cloudwatch_backends[self.account_id][self.region]

    def _needs_high_resolution(self) -> bool:
        if any(profile.high_resolution for _, profile in self.profiles.endpoints()):
            return True
        return any((alarm_period(a) or 60) < 60 for a in list(self._cw_backend().alarms.values()))

    def _process(self, boundary: float) -> None:
        backend = self._cw_backend()
        minute = boundary % 60 == 0
        datums: list[Any] = []
        for endpoint, profile in self.profiles.endpoints():
            try:
                fleets = list(self.topology.serving_variants(endpoint))
                shadows = getattr(self.topology, "shadow_variants", None)  # shadow tests: mirrored requests
                if shadows is not None:
                    fleets += list(shadows(endpoint))
            except Exception:  # the endpoint is gone (or not created yet): no traffic
                fleets = []
            for fleet in fleets:
                if fleet.inference_component_name:
                    self._ic_endpoints[fleet.inference_component_name] = endpoint
            datums += self.traffic.datums(endpoint, profile, fleets, boundary, minute=minute)
        backend.metric_data.extend(datums)
        self._index.sync(backend.metric_data)
        self._evaluate_alarms(backend, boundary, short_periods_only=not minute)
        if minute and boundary % self.target_tracking_interval == 0:
            self.scaler.run_target_tracking(self._index, boundary, window=self.target_tracking_interval)

    # ------------------------------------------------------------------ alarms
    def _evaluate_alarms(self, backend: Any, boundary: float, *, short_periods_only: bool) -> None:
        for alarm in list(backend.alarms.values()):
            if short_periods_only and (alarm_period(alarm) or 60) >= 60:
                continue
            result = evaluate(alarm, self._index, boundary)
            if result is None:
                continue
            if result.state is not None and result.state != alarm.state_value:
                self._transition(
                    backend, alarm, result.state, result.reason, result.reason_data, boundary, result.present_values()
                )
            else:  # CloudWatch re-invokes Auto Scaling actions every minute the alarm stays in the state
                self._run_actions(alarm, alarm.state_value, result.present_values(), boundary, scaling_only=True)

    def _transition(
        self, backend: Any, alarm: Any, state: str, reason: str, data: str, when: float, values: list[float]
    ) -> None:
        previous = _snapshot(alarm)
        alarm.update_state(reason, data, state)
        self._after_state_change(backend, alarm, previous, when, values)

    def _after_state_change(
        self, backend: Any, alarm: Any, previous: StateSnapshot, when: float, values: list[float]
    ) -> None:
        """Everything CloudWatch does when an alarm changes state: timestamps, history, event, actions."""
        stamp = naive_utc(when)
        alarm.state_updated_timestamp = stamp
        alarm.state_transitioned_timestamp = stamp
        current = _snapshot(alarm)
        moment = datetime.fromtimestamp(when, tz=UTC)
        _history_items(backend).append(
            {
                "AlarmName": alarm.name,
                "AlarmType": "MetricAlarm",
                "Timestamp": stamp,
                "HistoryItemType": "StateUpdate",
                "HistorySummary": f"Alarm updated from {previous.value} to {current.value}",
                "HistoryData": history_state_data(previous, current),
            }
        )
        self._history.append(AlarmTransition(moment, alarm.name, previous.value, current.value, current.reason))
        self.sink.put(
            source="aws.cloudwatch",
            detail_type="CloudWatch Alarm State Change",
            detail=state_change_detail(alarm, previous, current),
            resources=[alarm.alarm_arn],
            time=moment,
        )
        self._run_actions(alarm, current.value, values, when, previous=previous, scaling_only=False)

    def _run_actions(
        self,
        alarm: Any,
        state: str,
        values: list[float],
        when: float,
        *,
        scaling_only: bool,
        previous: StateSnapshot | None = None,
    ) -> None:
        if not alarm.actions_enabled:
            return
        actions = {ALARM: alarm.alarm_actions, OK: alarm.ok_actions, INSUFFICIENT_DATA: alarm.insufficient_data_actions}
        for arn in list(actions.get(state) or []):
            if ":autoscaling:" in arn and ":scalingPolicy:" in arn:
                self.scaler.run_step_policy(
                    arn, alarm_name=alarm.name, state=state, values=values, threshold=float(alarm.threshold), now=when
                )
            elif scaling_only:
                continue
            elif arn.startswith("arn:aws:sns:") and previous is not None:
                self._notify(alarm, arn, previous, when)
            else:
                self._record_action(alarm, arn, when, "Unsupported", "the twin runs SNS and Auto Scaling actions only")

    def _notify(self, alarm: Any, topic_arn: str, previous: StateSnapshot, when: float) -> None:
        from moto.sns.models import sns_backends

        subject, message = sns_notification(alarm, previous, _snapshot(alarm), self.account_id, self.region)
        _, _, _, region, account, _ = (topic_arn.split(":", 5) + [""] * 6)[:6]
        try:
            sns_backends[account][region].publish(message, arn=topic_arn, subject=subject)
        except Exception as error:  # a deleted topic is a failed action in the alarm's history, as on AWS
            self._record_action(alarm, topic_arn, when, "Failed", str(error))
            return
        self._record_action(alarm, topic_arn, when, "Succeeded", message)

    def _record_action(self, alarm: Any, arn: str, when: float, status: str, detail: str) -> None:
        self._history.append(ActionRecord(datetime.fromtimestamp(when, tz=UTC), alarm.name, arn, status, detail))
        summary = f"Successfully executed action {arn}" if status == "Succeeded" else f"Failed to execute action {arn}"
        data = {"actionState": "Succeeded" if status == "Succeeded" else "Failed", "notificationResource": arn}
        if status == "Succeeded":
            data["publishedMessage"] = detail
        else:
            data["error"] = detail
        _history_items(self._cw_backend()).append(
            {
                "AlarmName": alarm.name,
                "AlarmType": "MetricAlarm",
                "Timestamp": naive_utc(when),
                "HistoryItemType": "Action",
                "HistorySummary": summary,
                "HistoryData": json.dumps(data),
            }
        )

    def _on_set_alarm_state(self, backend: Any, alarm: Any, previous: StateSnapshot) -> None:
        """SetAlarmState through the API: AWS emits the event and runs the actions too."""
        with self._lock:
            if alarm.state_value == previous.value:
                alarm.state_updated_timestamp = naive_utc(self.clock.now())
                return
            self._after_state_change(backend, alarm, previous, self.clock.now(), [])

    # ------------------------------------------------------------------ capacity
    def _capacity_of(self, resource_id: str, dimension: str) -> int | None:
        dims = dimensions_for(resource_id) or {}
        endpoint = dims.get("EndpointName") or self._ic_endpoints.get(dims.get("InferenceComponentName", ""))
        if endpoint:
            try:
                fleets = list(self.topology.serving_variants(endpoint))
            except Exception:
                fleets = []
            if "VariantName" in dims:
                counts = [f.instance_count for f in fleets if f.variant_name == dims["VariantName"]]
                if counts:
                    return max(counts)
            else:
                copies = [
                    f.copy_count or 0 for f in fleets if f.inference_component_name == dims["InferenceComponentName"]
                ]
                if copies:
                    return copies[0]
        return self._applied.get((resource_id, dimension))

    def _apply_capacity(self, resource_id: str, dimension: str, capacity: int) -> None:
        self.topology.apply_capacity(resource_id, dimension, capacity)
        self._applied[(resource_id, dimension)] = capacity

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))


def _snapshot(alarm: Any) -> StateSnapshot:
    stamp = alarm.state_updated_timestamp
    moment = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
    return StateSnapshot(alarm.state_value, alarm.state_reason, alarm.state_reason_data, moment)


def _history_items(backend: Any) -> list[dict[str, Any]]:
    """DescribeAlarmHistory items live on the backend, so moto's reset wipes them with the alarms."""
    items: list[dict[str, Any]] = backend.__dict__.setdefault("_twin_alarm_history", [])
    return items


# ---------------------------------------------------------------------------------------------- moto patches
_PATCH_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], CloudWatchModel] = {}
_ORIGINALS: dict[str, Any] = {}


def _model_for(backend: Any) -> CloudWatchModel | None:
    return _MODELS.get((backend.account_id, backend.region_name))


def _virtual_now(backend: Any) -> float:
    model = _model_for(backend)
    return model.clock.now() if model else datetime.now(tz=UTC).timestamp()


def _put_metric_alarm(self: Any, *args: Any, **kwargs: Any) -> Any:
    """New alarms start in INSUFFICIENT_DATA (moto: OK); an update keeps the state and history, as on AWS."""
    name = kwargs["name"] if "name" in kwargs else args[0]
    old = self.alarms.get(name)
    alarm = _ORIGINALS["put_metric_alarm"](self, *args, **kwargs)
    stamp = naive_utc(_virtual_now(self))
    if old is not None and old is not alarm:
        for attribute in ("state_value", "state_reason", "state_reason_data", "state_updated_timestamp", "history"):
            setattr(alarm, attribute, getattr(old, attribute))
    elif old is None:
        alarm.state_value = INSUFFICIENT_DATA
        alarm.state_updated_timestamp = stamp
    alarm.configuration_updated_timestamp = stamp
    _history_items(self).append(
        {
            "AlarmName": name,
            "AlarmType": "MetricAlarm",
            "Timestamp": stamp,
            "HistoryItemType": "ConfigurationUpdate",
            "HistorySummary": f'Alarm "{name}" {"updated" if old is not None else "created"}',
            "HistoryData": json.dumps({"version": "1.0", "type": "Update" if old is not None else "Create"}),
        }
    )
    return alarm


def _set_alarm_state(self: Any, alarm_name: str, reason: str, reason_data: str, state_value: str) -> None:
    """Under the model's lock: an evaluation on the clock's thread between moto's change and the check below
    would put the alarm back first, and the state change's event would be lost (AWS emits both)."""
    model = _model_for(self)
    with model._lock if model is not None else contextlib.nullcontext():
        alarm = self.alarms.get(alarm_name)
        previous = _snapshot(alarm) if alarm is not None else None
        _ORIGINALS["set_alarm_state"](self, alarm_name, reason, reason_data, state_value)
        if model is not None and previous is not None:
            model._on_set_alarm_state(self, self.alarms[alarm_name], previous)


def _get_metric_statistics(self: Any, *args: Any, **kwargs: Any) -> Any:
    """CloudWatch matches the exact dimension set; moto matches subsets (which would double-count the
    EndpointConfigName-dimensioned copies of the same invocations)."""
    result = _ORIGINALS["get_metric_statistics"](self, *args, **kwargs)
    dimensions = kwargs.get("dimensions", args[6] if len(args) > 6 else [])
    wanted = {(d["Name"], d.get("Value")) for d in dimensions or []}
    kept = []
    for stats in result:
        stats.metric_data = [md for md in stats.metric_data if {(d.name, d.value) for d in md.dimensions} == wanted]
        if stats.metric_data:
            kept.append(stats)
    return kept


def _describe_alarm_history(response: Any) -> Any:
    """DescribeAlarmHistory (moto lacks it): state updates, actions and configuration updates."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core.responses import ActionResult

    backend = cloudwatch_backends[response.current_account][response.region]
    name = response._get_param("AlarmName")
    types = response._get_param("AlarmTypes") or []
    item_type = response._get_param("HistoryItemType")
    start, end = response._get_param("StartDate"), response._get_param("EndDate")
    limit = response._get_int_param("MaxRecords") or 100
    offset = int(response._get_param("NextToken") or 0)
    items = [
        item
        for item in _history_items(backend)
        if (not name or item["AlarmName"] == name)
        and (not types or item["AlarmType"] in types)
        and (not item_type or item["HistoryItemType"] == item_type)
        and (start is None or epoch_of(item["Timestamp"]) >= epoch_of(start))
        and (end is None or epoch_of(item["Timestamp"]) <= epoch_of(end))
    ]
    items.sort(key=lambda item: item["Timestamp"], reverse=response._get_param("ScanBy") != "TimestampAscending")
    page = items[offset : offset + limit]
    result: dict[str, Any] = {"AlarmHistoryItems": page}
    if offset + limit < len(items):
        result["NextToken"] = str(offset + limit)
    return ActionResult(result)


def _describe_alarms(response: Any) -> Any:
    """DescribeAlarms with every filter applied together, as CloudWatch does (moto uses only the first of
    ActionPrefix, AlarmNamePrefix, AlarmNames, StateValue, so a named alarm came back whatever its state)."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.core.responses import ActionResult

    backend = cloudwatch_backends[response.current_account][response.region]
    action_prefix = response._get_param("ActionPrefix")
    name_prefix = response._get_param("AlarmNamePrefix")
    names = set(response._get_param("AlarmNames", []) or [])
    state = response._get_param("StateValue")
    types = set(response._get_param("AlarmTypes", []) or []) or {"MetricAlarm", "CompositeAlarm"}
    alarms = [
        alarm
        for alarm in backend.describe_alarms()
        if (not names or alarm.name in names)
        and (not name_prefix or alarm.name.startswith(name_prefix))
        and (not action_prefix or any(str(a).startswith(action_prefix) for a in alarm.alarm_actions))
        and (not state or alarm.state_value == state)
    ]
    result = {
        "MetricAlarms": [a for a in alarms if a.rule is None] if "MetricAlarm" in types else [],
        "CompositeAlarms": [a for a in alarms if a.rule is not None] if "CompositeAlarm" in types else [],
    }
    return ActionResult(result)


def _apply_patches() -> None:
    if _ORIGINALS:
        return
    from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse
    from moto.cloudwatch.models import CloudWatchBackend
    from moto.cloudwatch.responses import CloudWatchResponse

    for name, replacement in (
        ("put_metric_alarm", _put_metric_alarm),
        ("set_alarm_state", _set_alarm_state),
        ("get_metric_statistics", _get_metric_statistics),
    ):
        _ORIGINALS[name] = getattr(CloudWatchBackend, name)
        setattr(CloudWatchBackend, name, replacement)
    for name, handler in (("describe_alarm_history", _describe_alarm_history), ("describe_alarms", _describe_alarms)):
        _ORIGINALS[name] = CloudWatchResponse.__dict__.get(name)
        setattr(CloudWatchResponse, name, handler)
    _ORIGINALS["describe_scaling_activities"] = ApplicationAutoScalingResponse.__dict__.get(
        "describe_scaling_activities"
    )
    if _ORIGINALS["describe_scaling_activities"] is None:
        setattr(ApplicationAutoScalingResponse, "describe_scaling_activities", describe_scaling_activities)  # noqa: B010


def _remove_patches() -> None:
    if not _ORIGINALS:
        return
    from moto.applicationautoscaling.responses import ApplicationAutoScalingResponse
    from moto.cloudwatch.models import CloudWatchBackend
    from moto.cloudwatch.responses import CloudWatchResponse

    for name in ("put_metric_alarm", "set_alarm_state", "get_metric_statistics"):
        setattr(CloudWatchBackend, name, _ORIGINALS[name])
    for cls, name in (
        (CloudWatchResponse, "describe_alarm_history"),
        (CloudWatchResponse, "describe_alarms"),
        (ApplicationAutoScalingResponse, "describe_scaling_activities"),
    ):
        if _ORIGINALS[name] is None:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, _ORIGINALS[name])
    _ORIGINALS.clear()
