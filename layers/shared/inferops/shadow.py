"""Shadow tests: eligibility, the plan, and the steps of `statemachines/shadow_test.asl.json`.

A shadow test runs a SageMaker inference experiment (ShadowMode): a shadow variant with the candidate model gets
a copy of a sample of the production variant's requests; only production answers callers. The flow ramps the
sampling percentage phase by phase (e.g. 10 -> 50 -> 100 %), judges the shadow against production at every
analysis interval with the canary judge (`inferops.analysis`), stops early on a failing verdict or a guard alarm,
and at the end promotes the shadow (StopInferenceExperiment: shadow Promote, production Remove), discards it
(shadow Remove, production Retain) or waits for a human, as the request says.

As in `inferops.rollout`, the state machine orchestrates and every decision is here: each step takes the flow's
state and returns it with `next` naming the branch. Steps are idempotent. Errors reach the state machine by
class name: `Retryable` (retried with backoff and jitter), `StopRequested` (an operator's discard), and
`ShadowTestFailed` (anything else); the parked waits are failed with `AlarmTriggered` (a guard alarm) or
`AnalysisFailed` (a failing verdict). Every ending goes through `finish`, which records the outcome and releases
the endpoint's lock.

Orchestration cost: the flow's state transitions and invocations must not grow with the test's length (and a 30-day
test must stay far below Step Functions' 25,000 history events). Each phase is one parked task whose heartbeat
timeout is the phase's end (like the deployment's bake). Its analysis intervals are judged outside the execution
by the fleet-wide scheduled judge (`inferops.shadow_judge`), each on its own window and recorded once; a confirmed
failing verdict fails the parked task at once (`AnalysisFailed`), as a guard alarm (`AlarmTriggered`, from the
alarm-events function) or an operator does. The phase's end judges what is left, then the whole phase.
SageMaker sends no EventBridge event for inference experiments: the start and the end of an experiment are
waited for on the endpoint's own events (the experiment updates the endpoint), with a heartbeat that falls back to
one DescribeInferenceExperiment.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from botocore.exceptions import ClientError
from pydantic import ConfigDict, Field, StringConstraints

from inferops import analysis, catalog, metrics, rollout, shadow_judge
from inferops.endpoints import EndpointSnapshot, ModelCheck, read_endpoint, read_model
from inferops.errors import Conflict, InferOpsError, NotFound
from inferops.model import Model
from inferops.planner import (
    PROVISION_SECONDS,
    Analysis,
    ContainerModel,
    ExistingModel,
    ModelSpec,
    PackageModel,
    ResourceName,
    Violation,
)
from inferops.rollout import SETTLED, Retryable, Services, StepError, StopRequested, error_code
from inferops.shadow_judge import KIND as KIND  # noqa: PLC0414 (explicit re-export for callers)
from inferops.shadow_judge import MAX_SAMPLING, Subject
from inferops.shadow_judge import PROGRESS as PROGRESS  # noqa: PLC0414
from inferops.shadow_judge import current_sampling as current_sampling  # noqa: PLC0414
from inferops.storage import OperationStatus, WaitPurpose

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_sagemaker import SageMakerClient

EVENT_SOURCE = "inferops"
EVENT_DETAIL_TYPE = "InferOps Shadow Test Finished"

# SageMaker's bounds (reference/sagemaker-facts.md §4).
MIN_DURATION_SECONDS = 3600
MAX_DURATION_SECONDS = 30 * 86400
MIN_SAMPLING = 1
# InferOps' own.
MAX_SAMPLING_STEPS = 5
MIN_INTERVAL_MINUTES, MAX_INTERVAL_MINUTES = 5, 1440
MAX_GUARD_ALARMS = 10
CATCH_UP_INTERVALS = 96
"""Most intervals a phase's end judges in one step (the scheduled judge normally leaves it one or two)."""
DECISION_MARGIN_SECONDS = 300
"""The analysis ends this long before the experiment's scheduled end, so that a promotion happens before SageMaker
ends the test by itself (which returns the endpoint to its pre-test configuration)."""
EXPERIMENT_CREATE_SECONDS = 60
START_SLACK_SECONDS = 60
"""An experiment starts this long after it is created (unless scheduled later)."""
RECHECK_SECONDS = 300
LOCK_MARGIN_SECONDS = 3600
MAX_FAILURE_ROUNDS = 3
RUNNING = "Running"
ENDED = frozenset({"Completed", "Cancelled"})


# ------------------------------------------------------------------------------------------------ errors
# StepError, Retryable and StopRequested are the deployment flow's (the state machines route on the class names).
class ShadowTestFailed(StepError):
    """A failure no retry will fix; the message is the reason shown to users."""


@contextmanager
def aws(what: str) -> Iterator[None]:
    """rollout.aws, with ShadowTestFailed as the final error."""
    with rollout.aws(what, ShadowTestFailed):
        yield


# ------------------------------------------------------------------------------------------------ request
class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


RoleArn = Annotated[str, StringConstraints(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$", max_length=2048)]
AlarmName = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class DataCapture(_Strict):
    """Capture the requests and both variants' responses to S3 (CreateInferenceExperiment DataStorageConfig)."""

    destination: Annotated[str, StringConstraints(pattern=r"^s3://[a-z0-9.\-]{3,63}(/.*)?$", max_length=512)]
    kms_key: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    csv_content_types: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=10
    )
    json_content_types: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=10
    )


class ShadowTestRequest(_Strict):
    """POST /shadow-tests. Ranges SageMaker imposes (duration, sampling) are checked by `check`, which reports
    every broken rule at once, rather than by the schema."""

    endpoint_name: ResourceName
    model: ModelSpec = Field(description="the candidate: an existing model, a registry package or a container")
    role_arn: RoleArn = Field(description="the role SageMaker assumes to run the experiment (RoleArn)")
    shadow_variant_name: ResourceName | None = Field(default=None, description="default: <production>-shadow")
    instance_type: str | None = Field(default=None, description="shadow fleet; default: the production type")
    instance_count: int | None = Field(default=None, ge=1, le=1000, description="default: the production count")
    sampling_steps: list[int] = Field(
        default_factory=lambda: [100],
        min_length=1,
        max_length=MAX_SAMPLING_STEPS,
        description="sampling percentage per phase, e.g. [10, 50, 100]; promotion needs the last one at 100",
    )
    duration_hours: float = Field(default=168.0, description="SageMaker allows 1 hour to 30 days (720 h)")
    start_time: datetime | None = Field(default=None, description="schedule the start; default: now")
    analysis_interval_minutes: int = Field(default=15, description="how often the judge compares the variants")
    analysis: Analysis = Field(default_factory=Analysis, description="the judge's thresholds (period: 60 s)")
    action: Literal["promote", "discard", "approval"] = Field(
        default="approval", description="at the end, on a passing verdict: promote, keep production, or ask"
    )
    promote_instances: Literal["production", "shadow"] = Field(
        default="production", description="the promoted variant's instance type/count (production's: recommended)"
    )
    approval_timeout_hours: float = Field(default=24.0, gt=0, le=720)
    guard_alarms: list[AlarmName] = Field(default_factory=list, description="any of them in ALARM stops the test")
    data_capture: DataCapture | None = None
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None


# ------------------------------------------------------------------------------------------------ plan
class PhasePlan(_Strict):
    index: int
    sampling_percent: int
    seconds: int = Field(description="planned length; the first phase starts when the experiment is Running")
    intervals: int = Field(description="analysis intervals in the phase, each judged on its own")


class ShadowPlan(_Strict):
    endpoint_name: str
    experiment_name: str
    endpoint_config_name: str
    production_variant: str
    production_model: str
    production_instance_type: str
    production_instance_count: int
    shadow_variant: str
    shadow_instance_type: str
    shadow_instance_count: int
    starts_at: datetime
    ends_at: datetime
    analysis_ends_at: datetime
    running_at: datetime = Field(description="estimated (provisioning) until the flow sees the experiment Running")
    interval_seconds: int
    phases: list[PhasePlan]
    action: Literal["promote", "discard", "approval"]
    guard_alarms: list[str]
    data_capture: bool
    shadow_hourly_usd: float | None
    shadow_total_usd: float | None = Field(description="the shadow fleet for the whole schedule, on-demand")


class ShadowPlanResult(_Strict):
    ok: bool
    violations: list[Violation]
    plan: ShadowPlan | None
    warnings: list[str]


@dataclass(frozen=True)
class Facts:
    """What the eligibility check needs to know, read from AWS (see `read_facts`)."""

    endpoint: EndpointSnapshot
    production_modes: tuple[str, ...] = ()
    """The container Modes of the production model (`MultiModel` makes it a multi-model endpoint)."""
    candidate: ModelCheck | None = None
    missing_alarms: tuple[str, ...] = ()


class _Rules:
    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.warnings: list[str] = []

    def violate(self, field: str, rule: str, value: Any, message: str, fix: str) -> None:
        self.violations.append(Violation(field=field, rule=rule, value=value, message=message, fix=fix))


def experiment_name(endpoint: str, operation_id: str) -> str:
    """Unique per test (1-120 characters, letters, digits and hyphens): the endpoint and the operation's suffix."""
    suffix = operation_id.rsplit("-", 1)[-1][:8] or "test"
    return f"{endpoint[:100]}-shadow-{suffix}"


def shadow_variant_name(production: str) -> str:
    """Default shadow variant name; alternating `-shadow` keeps a promoted variant's successor distinct."""
    if production.endswith("-shadow"):
        return production.removesuffix("-shadow") or "shadow"
    return f"{production[:56]}-shadow"


def schedule_phases(analysis_seconds: float, interval_seconds: int, steps: list[int]) -> list[PhasePlan] | None:
    """Split the analysis time into the sampling phases, in whole analysis intervals; None when it holds fewer
    intervals than phases. The last phase (the one a promotion is judged on) takes the remainder."""
    intervals = math.floor(max(0.0, analysis_seconds) / interval_seconds)
    if intervals < len(steps):
        return None
    each = intervals // len(steps)
    counts = [each] * len(steps)
    counts[-1] += intervals - each * len(steps)
    return [
        PhasePlan(index=i, sampling_percent=percent, seconds=n * interval_seconds, intervals=n)
        for i, (percent, n) in enumerate(zip(steps, counts, strict=True))
    ]


def scheduled_start(request: ShadowTestRequest, now: float) -> float:
    """The experiment's StartTime: the requested time, or `START_SLACK_SECONDS` from now. Always explicit, so the
    duration SageMaker checks (EndTime - StartTime) is exactly the requested one, however long the call takes."""
    soonest = now + START_SLACK_SECONDS
    return max(soonest, request.start_time.timestamp()) if request.start_time else soonest


def provision_estimate(instance_type: str) -> int:
    """Planning estimate of how long SageMaker takes to bring the shadow fleet up (not a SageMaker figure)."""
    try:
        kind = str(catalog.get(instance_type).accelerator.kind)
    except InferOpsError:
        kind = "none"
    return PROVISION_SECONDS.get(kind, PROVISION_SECONDS["gpu"])


def check(request: ShadowTestRequest, facts: Facts, *, now: float, operation_id: str = "op-new") -> ShadowPlanResult:
    """Every eligibility rule (sagemaker-facts.md §4) and InferOps' own; all violations, or the plan."""
    rules = _Rules()
    endpoint = facts.endpoint
    _check_endpoint(rules, endpoint, facts)
    production = endpoint.variants[0] if len(endpoint.variants) == 1 else None
    shadow_type = request.instance_type or (production.instance_type if production else None)
    _check_instance_types(rules, request, production, shadow_type)
    _check_candidate(rules, request, facts.candidate)
    _check_schedule(rules, request, now)
    _check_sampling(rules, request)
    for name in facts.missing_alarms:
        rules.violate(
            "guard_alarms",
            "alarm_exists",
            name,
            f"guard alarm '{name}' does not exist",
            "create it first (CloudWatch PutMetricAlarm) or drop it from guard_alarms",
        )
    if len(request.guard_alarms) > MAX_GUARD_ALARMS:
        rules.violate(
            "guard_alarms",
            "guard_alarms_count",
            len(request.guard_alarms),
            f"{len(request.guard_alarms)} guard alarms; InferOps watches up to {MAX_GUARD_ALARMS}",
            "combine them into a composite alarm",
        )
    if production is not None:
        shadow = request.shadow_variant_name or shadow_variant_name(production.name)
        if shadow == production.name:
            rules.violate(
                "shadow_variant_name",
                "distinct_variant_names",
                shadow,
                "the shadow variant needs a name different from the production variant's",
                f"pick another name than '{production.name}'",
            )
    if rules.violations or production is None or shadow_type is None or production.instance_type is None:
        return ShadowPlanResult(ok=False, violations=rules.violations, plan=None, warnings=rules.warnings)
    assert production.model_name is not None
    start = scheduled_start(request, now)
    end = start + request.duration_hours * 3600
    count = request.instance_count or max(1, production.instance_count)
    running = start + EXPERIMENT_CREATE_SECONDS + provision_estimate(shadow_type)
    analysis_end = end - DECISION_MARGIN_SECONDS
    interval = request.analysis_interval_minutes * 60
    phases = schedule_phases(analysis_end - running, interval, request.sampling_steps)
    if phases is None:
        rules.violate(
            "duration_hours",
            "phases_fit_duration",
            request.duration_hours,
            f"after provisioning (~{running - start:.0f} s) and the decision margin ({DECISION_MARGIN_SECONDS} s) the "
            f"test leaves fewer {request.analysis_interval_minutes}-minute analysis intervals than its "
            f"{len(request.sampling_steps)} sampling phase(s)",
            "lengthen the test, shorten the analysis interval or use fewer sampling steps",
        )
        return ShadowPlanResult(ok=False, violations=rules.violations, plan=None, warnings=rules.warnings)
    if request.action == "approval" and end + request.approval_timeout_hours * 3600 > start + MAX_DURATION_SECONDS:
        rules.warnings.append(
            "the approval window cannot extend the experiment past 30 days from its start: it is shortened to "
            "what is left"
        )
    if shadow_type != production.instance_type or count != production.instance_count:
        rules.warnings.append(
            f"the shadow fleet ({count} x {shadow_type}) differs from production ({production.instance_count} x "
            f"{production.instance_type}): validate it at 100 % sampling before promoting it"
        )
    hourly = catalog.fleet_price(shadow_type, count) if _known(shadow_type) else None
    plan = ShadowPlan(
        endpoint_name=endpoint.name,
        experiment_name=experiment_name(endpoint.name, operation_id),
        endpoint_config_name=endpoint.config_name,
        production_variant=production.name,
        production_model=production.model_name,
        production_instance_type=production.instance_type,
        production_instance_count=max(1, production.instance_count),
        shadow_variant=request.shadow_variant_name or shadow_variant_name(production.name),
        shadow_instance_type=shadow_type,
        shadow_instance_count=count,
        starts_at=_dt(start),
        ends_at=_dt(end),
        analysis_ends_at=_dt(analysis_end),
        running_at=_dt(running),
        interval_seconds=interval,
        phases=phases,
        action=request.action,
        guard_alarms=list(request.guard_alarms),
        data_capture=request.data_capture is not None,
        shadow_hourly_usd=round(hourly, 4) if hourly is not None else None,
        shadow_total_usd=round(hourly * request.duration_hours, 2) if hourly is not None else None,
    )
    return ShadowPlanResult(ok=True, violations=[], plan=plan, warnings=rules.warnings)


def _known(instance_type: str) -> bool:
    try:
        catalog.get(instance_type)
    except InferOpsError:
        return False
    return True


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _check_endpoint(rules: _Rules, endpoint: EndpointSnapshot, facts: Facts) -> None:
    fix_other = "shadow-test another endpoint, or deploy the candidate with a guarded deployment (POST /deployments)"
    if endpoint.status != "InService":
        rules.violate(
            "endpoint_name",
            "endpoint_in_service",
            endpoint.status,
            f"endpoint {endpoint.name} is {endpoint.status}, not InService",
            "wait until the endpoint is InService",
        )
    if len(endpoint.variants) != 1:
        rules.violate(
            "endpoint_name",
            "single_production_variant",
            [v.name for v in endpoint.variants],
            f"endpoint {endpoint.name} has {len(endpoint.variants)} production variants; a shadow test needs exactly "
            "one (SageMaker allows one production variant beside a shadow)",
            "reduce the endpoint to one production variant first (UpdateEndpoint)",
        )
    if endpoint.shadow_variant_names:
        rules.violate(
            "endpoint_name",
            "no_existing_shadow",
            list(endpoint.shadow_variant_names),
            f"endpoint {endpoint.name} already has a shadow variant; SageMaker allows one",
            "finish or remove the running shadow test first",
        )
    if endpoint.is_async:
        rules.violate(
            "endpoint_name",
            "not_async",
            True,
            "asynchronous inference endpoints do not support shadow tests",
            fix_other,
        )
    for variant in endpoint.variants:
        if variant.serverless:
            rules.violate(
                "endpoint_name",
                "not_serverless",
                variant.name,
                f"variant {variant.name} is serverless: serverless endpoints do not support shadow tests",
                fix_other,
            )
        elif variant.model_name is None:
            rules.violate(
                "endpoint_name",
                "not_inference_components",
                variant.name,
                f"variant {variant.name} hosts inference components: such endpoints do not support shadow tests",
                fix_other,
            )
        if variant.container_count > 1:
            rules.violate(
                "endpoint_name",
                "not_multi_container",
                variant.container_count,
                f"variant {variant.name} runs {variant.container_count} containers: multi-container endpoints do "
                "not support shadow tests",
                fix_other,
            )
        if variant.marketplace:
            rules.violate(
                "endpoint_name",
                "not_marketplace",
                variant.model_name,
                f"variant {variant.name} serves an AWS Marketplace model: Marketplace containers do not support "
                "shadow tests",
                fix_other,
            )
    if "MultiModel" in facts.production_modes:
        rules.violate(
            "endpoint_name",
            "not_multi_model",
            "MultiModel",
            f"endpoint {endpoint.name} is a multi-model endpoint: multi-model endpoints do not support shadow tests",
            fix_other,
        )


def _check_instance_types(rules: _Rules, request: ShadowTestRequest, production: Any, shadow_type: str | None) -> None:
    types = [("instance_type", shadow_type)]
    if production is not None and production.instance_type and production.instance_type != shadow_type:
        types.append(("endpoint_name", production.instance_type))
    for field, name in types:
        if not name:
            continue
        try:
            instance = catalog.get(name)
        except InferOpsError as unknown:
            rules.violate(field, "instance_type_known", name, unknown.message, "use a SageMaker hosting instance type")
            continue
        if name.startswith("ml.inf1.") or not instance.features.shadow_tests:
            rules.violate(
                field,
                "not_inf1",
                name,
                f"{name}: Inf1 instances do not support shadow tests",
                "use another instance type (Inf2 supports shadow tests)",
            )


def _check_candidate(rules: _Rules, request: ShadowTestRequest, candidate: ModelCheck | None) -> None:
    spec = request.model
    if candidate is None:
        return
    if isinstance(spec, ExistingModel) and not candidate.found:
        rules.violate(
            "model.model_name",
            "model_exists",
            spec.model_name,
            f"model '{spec.model_name}' does not exist",
            "create the model first, or pass an image and artifact (source: container)",
        )
    if isinstance(spec, PackageModel):
        if not candidate.found:
            rules.violate(
                "model.model_package_arn",
                "package_exists",
                spec.model_package_arn,
                "model package not found",
                "check the ARN (arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)",
            )
        elif candidate.approval_status not in (None, "Approved") and request.action == "promote":
            rules.violate(
                "model.model_package_arn",
                "package_approved",
                candidate.approval_status,
                f"model package is {candidate.approval_status}: it cannot be promoted",
                "approve the version in the model registry, or use action discard/approval",
            )
    if candidate.marketplace:
        rules.violate(
            "model",
            "not_marketplace",
            True,
            "the candidate is an AWS Marketplace model: Marketplace containers do not support shadow tests",
            "shadow-test a model you own",
        )


def _check_schedule(rules: _Rules, request: ShadowTestRequest, now: float) -> None:
    seconds = request.duration_hours * 3600
    if not MIN_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS:
        rules.violate(
            "duration_hours",
            "duration_range",
            request.duration_hours,
            f"duration {request.duration_hours} h is outside SageMaker's 1 hour to 30 days (720 h)",
            "use a duration between 1 and 720 hours",
        )
    if request.start_time is not None:
        if request.start_time.tzinfo is None:
            rules.violate(
                "start_time", "start_time_zone", str(request.start_time), "start_time needs a time zone", "add Z"
            )
        elif request.start_time.timestamp() < now - 300:
            rules.violate(
                "start_time",
                "start_time_future",
                request.start_time.isoformat(),
                "start_time is in the past",
                "omit start_time to start now, or schedule a future time",
            )
    minutes = request.analysis_interval_minutes
    if not MIN_INTERVAL_MINUTES <= minutes <= MAX_INTERVAL_MINUTES:
        rules.violate(
            "analysis_interval_minutes",
            "analysis_interval_range",
            minutes,
            f"analysis interval {minutes} min is outside {MIN_INTERVAL_MINUTES}-{MAX_INTERVAL_MINUTES} min",
            f"use {MIN_INTERVAL_MINUTES} to {MAX_INTERVAL_MINUTES} minutes",
        )
    if request.analysis.interval_seconds != 60:
        rules.warnings.append(
            f"analysis.interval_seconds {request.analysis.interval_seconds}: each datapoint aggregates that many "
            "seconds (the analysis interval is analysis_interval_minutes)"
        )


def _check_sampling(rules: _Rules, request: ShadowTestRequest) -> None:
    steps = request.sampling_steps
    for index, percent in enumerate(steps):
        if not MIN_SAMPLING <= percent <= MAX_SAMPLING:
            rules.violate(
                f"sampling_steps.{index}",
                "sampling_range",
                percent,
                f"sampling {percent} % is outside SageMaker's {MIN_SAMPLING}-{MAX_SAMPLING} %",
                f"use a percentage between {MIN_SAMPLING} and {MAX_SAMPLING}",
            )
    if any(b < a for a, b in itertools.pairwise(steps)):
        rules.violate(
            "sampling_steps",
            "sampling_ramps_up",
            steps,
            "the sampling ramp goes down",
            "list the percentages in increasing order, e.g. [10, 50, 100]",
        )
    if request.action == "promote" and steps[-1] != MAX_SAMPLING:
        rules.violate(
            "sampling_steps",
            "promotion_needs_full_sampling",
            steps[-1],
            f"action promote needs the last phase at 100 % sampling (it is {steps[-1]} %): a shadow that never saw "
            "the full load is not promoted",
            "end the ramp at 100, or use action approval/discard",
        )


def read_facts(
    request: ShadowTestRequest,
    sagemaker: SageMakerClient,
    autoscaling: ApplicationAutoScalingClient,
    cloudwatch: CloudWatchClient,
) -> Facts:
    """Read the endpoint, its production model, the candidate and the guard alarms (read-only calls)."""
    endpoint = read_endpoint(request.endpoint_name, sagemaker, autoscaling)
    modes: tuple[str, ...] = ()
    if len(endpoint.variants) == 1 and endpoint.variants[0].model_name:
        model = sagemaker.describe_model(ModelName=endpoint.variants[0].model_name)
        containers = [model["PrimaryContainer"]] if model.get("PrimaryContainer") else model.get("Containers", [])
        modes = tuple(str(c.get("Mode", "SingleModel")) for c in containers)
    spec = request.model
    name = spec.model_package_arn if isinstance(spec, PackageModel) else getattr(spec, "model_name", None)
    candidate = read_model(spec.source, name, sagemaker)
    missing: tuple[str, ...] = ()
    if request.guard_alarms:
        names = list(dict.fromkeys(request.guard_alarms))[:100]
        found = cloudwatch.describe_alarms(AlarmNames=names, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        present = {a["AlarmName"] for a in found.get("MetricAlarms", [])}
        present |= {a["AlarmName"] for a in found.get("CompositeAlarms", [])}
        missing = tuple(n for n in names if n not in present)
    return Facts(endpoint=endpoint, production_modes=modes, candidate=candidate, missing_alarms=missing)


def preflight(
    request: ShadowTestRequest,
    sagemaker: SageMakerClient,
    autoscaling: ApplicationAutoScalingClient,
    cloudwatch: CloudWatchClient,
    *,
    now: float,
    operation_id: str = "op-new",
) -> ShadowPlanResult:
    """Read what the rules need and check them (read-only; the API's POST /shadow-tests and the flow both do)."""
    return check(request, read_facts(request, sagemaker, autoscaling, cloudwatch), now=now, operation_id=operation_id)


# ------------------------------------------------------------------------------------------------ state
class _State(Model):
    model_config = ConfigDict(extra="ignore")


class Resources(_State):
    experiment_name: str
    model_name: str
    production_variant: str
    shadow_variant: str
    alarms: list[str] = Field(default_factory=list)
    start_at: float
    end_at: float


class Wait(_State):
    """The flow waits for the experiment to start (Running) or to stop (Completed/Cancelled)."""

    purpose: Literal["start", "stop"]
    started_at: float
    heartbeat_seconds: int


class Watch(_State):
    """The flow watches a phase: one parked task until the phase's end (its heartbeat timeout)."""

    phase: int = 0
    heartbeat_seconds: int = 0


class Conclusion(_State):
    """What the flow decided: SageMaker carries it out (StopInferenceExperiment), then the test ends as `status`."""

    decision: Literal["promote", "discard"]
    status: OperationStatus
    reason: str
    early: bool = False


class Outcome(_State):
    status: OperationStatus
    reason: str
    decision: str | None = None
    endpoint_config: str | None = None
    endpoint_status: str | None = None


class FlowState(_State):
    """The state machine's state: the Lambda steps return it whole, the Choice states read `next`."""

    operation_id: str
    request: ShadowTestRequest
    plan: ShadowPlan | None = None
    resources: Resources | None = None
    wait: Wait | None = None
    watch: Watch | None = None
    conclusion: Conclusion | None = None
    outcome: Outcome | None = None
    verdicts: list[dict[str, Any]] = Field(default_factory=list, description="one per finished phase")
    approval_timeout_seconds: int | None = None
    resumed: dict[str, Any] | None = Field(default=None, description="what resumed a parked wait (its output)")
    approval: dict[str, Any] | None = Field(default=None, description="the approval wait's output")
    heartbeat: dict[str, Any] | None = Field(default=None, description="a heartbeat timeout the flow caught")
    error: dict[str, Any] | None = Field(default=None, description="what a Catch caught: Error and Cause")
    failure_rounds: int = 0
    event: dict[str, Any] | None = None
    next: str = ""


Step = Callable[[FlowState, Services], FlowState]
TokenStep = Callable[[FlowState, Services, str], FlowState]


def _timeline(services: Services, state: FlowState, kind: str, message: str, **data: Any) -> None:
    services.repo.append_timeline(state.operation_id, kind, message, data or None)


def _plan(state: FlowState) -> ShadowPlan:
    if state.plan is None:
        raise ShadowTestFailed("the flow lost its plan (state without 'plan'): start a new shadow test")
    return state.plan


def _resources(state: FlowState) -> Resources:
    if state.resources is None:
        raise ShadowTestFailed("the flow lost its resources (state without 'resources'): start a new shadow test")
    return state.resources


def _end(state: FlowState, status: OperationStatus, reason: str) -> FlowState:
    return state.model_copy(update={"outcome": Outcome(status=status, reason=reason), "next": "finish"})


def _reason(state: FlowState) -> str:
    """A caught error's message: a Lambda's Cause is its error payload as JSON."""
    error = state.error or {}
    cause = error.get("Cause")
    if isinstance(cause, str) and cause.startswith("{"):
        with suppress(ValueError):
            cause = json.loads(cause).get("errorMessage", cause)
    if error.get("Error") == "States.Timeout" and not cause:
        cause = "no decision within the approval window"
    return str(cause or error.get("Error") or "stopped")


def _describe(services: Services, name: str) -> dict[str, Any] | None:
    """DescribeInferenceExperiment; None when SageMaker has no such experiment (never created, or deleted)."""
    try:
        return dict(services.sagemaker.describe_inference_experiment(Name=name))
    except ClientError as error:
        code, message = error_code(error)
        if code == "ResourceNotFound" or "could not find" in message.lower():
            return None
        with aws(f"reading inference experiment {name}"):
            raise


def _progress(services: Services, state: FlowState) -> dict[str, Any]:
    found = services.repo.get_operation_state(state.operation_id, PROGRESS)
    if found is None:
        raise ShadowTestFailed("the test's progress record is missing: start a new shadow test")
    return found


def full_sampling_since(progress: dict[str, Any], since: float) -> bool:
    """Promotion gate: the sampling stayed at 100 % from `since` (the last phase's start) until now."""
    history = sorted(progress.get("sampling_history") or [], key=lambda h: float(h["at"]))
    in_effect = [h for h in history if float(h["at"]) <= since + 1e-6][-1:]
    later = [h for h in history if float(h["at"]) > since + 1e-6]
    percents = [int(h["percent"]) for h in [*in_effect, *later]]
    return bool(in_effect) and all(p == MAX_SAMPLING for p in percents)


# ------------------------------------------------------------------------------------------------ pre-flight
def preflight_step(state: FlowState, services: Services) -> FlowState:
    """Check the request against the endpoint as it is now; a refusal ends the flow with every violation."""
    request, repo = state.request, services.repo
    try:
        record = repo.get_operation(state.operation_id)
    except NotFound:
        record = repo.create_operation(KIND, request.endpoint_name, request.model_dump(mode="json"), state.operation_id)
    if record.terminal:
        raise ShadowTestFailed(f"operation {state.operation_id} already ended as {record.status}")
    if record.stop_request:
        return _end(state, OperationStatus.ABORTED, f"discarded before it started: {record.stop_request['reason']}")
    with aws("reading the endpoint"):
        result = preflight(
            request,
            services.sagemaker,
            services.autoscaling,
            services.cloudwatch,
            now=repo.now(),
            operation_id=state.operation_id,
        )
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
    steps = " -> ".join(f"{p.sampling_percent} %" for p in result.plan.phases)
    _timeline(
        services,
        state,
        "planned",
        f"experiment {result.plan.experiment_name}: sampling {steps}, judged every "
        f"{request.analysis_interval_minutes} min, then {request.action}",
        warnings=result.warnings,
    )
    return state.model_copy(update={"plan": result.plan, "next": "lock"})


def acquire_lock(state: FlowState, services: Services) -> FlowState:
    """One operation per endpoint for the whole test (a deployment waits for it, and it for a deployment)."""
    the_plan, request = _plan(state), state.request
    lease = (
        (the_plan.ends_at - the_plan.starts_at).total_seconds()
        + max(0.0, the_plan.starts_at.timestamp() - services.repo.now())
        + (request.approval_timeout_hours * 3600 if request.action == "approval" else 0)
        + LOCK_MARGIN_SECONDS
    )
    refused = rollout.lock_for_flow(services, state.operation_id, the_plan.endpoint_name, lease)
    if refused is not None:
        return state.model_copy(
            update={"outcome": Outcome(status=OperationStatus.REFUSED, reason=refused), "next": "finish"}
        )
    return state.model_copy(update={"next": "create"})


# ------------------------------------------------------------------------------------------------ the experiment
def create_experiment(state: FlowState, services: Services) -> FlowState:
    """Make the candidate model if needed, then CreateInferenceExperiment (ShadowMode) and watch the guard alarms."""
    the_plan, request, repo = _plan(state), state.request, services.repo
    stop = repo.get_operation(state.operation_id).stop_request
    if stop:
        return _end(state, OperationStatus.ABORTED, f"discarded before the experiment started: {stop.get('reason')}")
    model_name = _candidate_model(state, services)
    res = state.resources
    if res is None:
        now = repo.now()
        start = scheduled_start(request, now)
        res = Resources(
            experiment_name=the_plan.experiment_name,
            model_name=model_name,
            production_variant=the_plan.production_variant,
            shadow_variant=the_plan.shadow_variant,
            alarms=list(dict.fromkeys(request.guard_alarms)),
            start_at=start,
            end_at=start + request.duration_hours * 3600,
        )
    params: dict[str, Any] = {
        "Name": res.experiment_name,
        "Type": "ShadowMode",
        "Schedule": {"StartTime": _dt(res.start_at), "EndTime": _dt(res.end_at)},
        "Description": request.description or f"InferOps shadow test {state.operation_id}",
        "RoleArn": request.role_arn,
        "EndpointName": the_plan.endpoint_name,
        "ModelVariants": [
            _model_variant(
                the_plan.production_model,
                res.production_variant,
                the_plan.production_instance_type,
                the_plan.production_instance_count,
            ),
            _model_variant(
                res.model_name, res.shadow_variant, the_plan.shadow_instance_type, the_plan.shadow_instance_count
            ),
        ],
        "ShadowModeConfig": {
            "SourceModelVariantName": res.production_variant,
            "ShadowModelVariants": [
                {"ShadowModelVariantName": res.shadow_variant, "SamplingPercentage": request.sampling_steps[0]}
            ],
        },
    }
    capture = request.data_capture
    if capture is not None:
        storage: dict[str, Any] = {"Destination": capture.destination}
        if capture.kms_key:
            storage["KmsKey"] = capture.kms_key
        if capture.csv_content_types or capture.json_content_types:
            storage["ContentType"] = {
                k: v
                for k, v in (
                    ("CsvContentTypes", capture.csv_content_types),
                    ("JsonContentTypes", capture.json_content_types),
                )
                if v
            }
        params["DataStorageConfig"] = storage
    try:
        services.sagemaker.create_inference_experiment(**params)
    except ClientError as error:
        code, message = error_code(error)
        if not (code == "ResourceInUse" and res.experiment_name in message and "already exists" in message):
            with aws(f"CreateInferenceExperiment {res.experiment_name}"):
                raise
    ttl = res.end_at - repo.now() + request.approval_timeout_hours * 3600 + LOCK_MARGIN_SECONDS
    for alarm in res.alarms:
        repo.put_alarm_watch(alarm, the_plan.endpoint_name, state.operation_id, ttl)
    _timeline(
        services,
        state,
        "experiment",
        f"inference experiment {res.experiment_name} created: {res.shadow_variant} ({res.model_name}) shadows "
        f"{res.production_variant} at {request.sampling_steps[0]} %"
        + (f"; watching guard alarm(s) {', '.join(res.alarms)}" if res.alarms else ""),
        experiment=res.experiment_name,
    )
    until_start = max(0.0, res.start_at - repo.now())
    expected = until_start + EXPERIMENT_CREATE_SECONDS + provision_estimate(the_plan.shadow_instance_type)
    wait = Wait(purpose="start", started_at=repo.now(), heartbeat_seconds=math.ceil(expected * 1.25) + RECHECK_SECONDS)
    return state.model_copy(update={"resources": res, "wait": wait, "next": "await"})


def _model_variant(model: str, variant: str, instance_type: str, count: int) -> dict[str, Any]:
    return {
        "ModelName": model,
        "VariantName": variant,
        "InfrastructureConfig": {
            "InfrastructureType": "RealTimeInference",
            "RealTimeInferenceConfig": {"InstanceType": instance_type, "InstanceCount": count},
        },
    }


def _candidate_model(state: FlowState, services: Services) -> str:
    """The model the shadow variant serves: a named model as is; a package or a container becomes a model."""
    spec, the_plan = state.request.model, _plan(state)
    if isinstance(spec, ExistingModel):
        return spec.model_name
    name = the_plan.experiment_name[:63].rstrip("-")
    sm = services.sagemaker
    if isinstance(spec, ContainerModel):
        role = spec.execution_role_arn
        container: dict[str, Any] = {"Image": spec.image, "ModelDataUrl": spec.model_data_url}
        if spec.environment:
            container["Environment"] = spec.environment
    else:
        with aws(f"reading model {the_plan.production_model}"):
            role = sm.describe_model(ModelName=the_plan.production_model)["ExecutionRoleArn"]
        container = {"ModelPackageName": spec.model_package_arn}
    try:
        sm.create_model(ModelName=name, ExecutionRoleArn=role, Containers=[container])  # type: ignore[list-item]
    except ClientError as error:
        code, message = error_code(error)
        if not (code == "ValidationException" and "already exist" in message):  # a retried step
            with aws(f"creating model {name}"):
                raise
    return name


def await_experiment(state: FlowState, services: Services, token: str) -> FlowState:
    """Park the token under the endpoint: the endpoint events the experiment causes resume the flow.

    SageMaker sends no event for inference experiments, but starting one (the shadow variant joins the
    endpoint) and stopping one (promote/remove) update the endpoint, whose settled event resumes the flow. If the
    experiment already got there (a fast stop, a retried step), resume at once: the token is taken atomically.
    """
    the_plan, res, wait = _plan(state), _resources(state), state.wait
    assert wait is not None
    endpoint = the_plan.endpoint_name
    services.repo.put_task_token(
        endpoint, WaitPurpose.ENDPOINT_UPDATE, token, state.operation_id, wait.heartbeat_seconds + RECHECK_SECONDS
    )
    described = _describe(services, res.experiment_name)
    status = described["Status"] if described else "Missing"
    arrived = status in ENDED or status == "Missing" or (wait.purpose == "start" and status == RUNNING)
    if arrived:
        mine = services.repo.take_task_token(endpoint, WaitPurpose.ENDPOINT_UPDATE)
        if mine is not None and mine.token == token:
            with aws("resuming the flow"):
                services.stepfunctions.send_task_success(
                    taskToken=token, output=json.dumps({"source": "DescribeInferenceExperiment", "status": status})
                )
    return state


def check_experiment(state: FlowState, services: Services) -> FlowState:
    """After an endpoint event or a heartbeat: one DescribeInferenceExperiment decides where the flow goes."""
    res, wait, repo = _resources(state), state.wait, services.repo
    assert wait is not None
    by_heartbeat = state.heartbeat is not None
    state = state.model_copy(update={"resumed": None, "heartbeat": None})
    described = _describe(services, res.experiment_name)
    status = described["Status"] if described else "Missing"
    if by_heartbeat:
        _timeline(
            services,
            state,
            "heartbeat",
            f"no endpoint event within {wait.heartbeat_seconds} s; DescribeInferenceExperiment says {status}",
            status=status,
        )
    if wait.purpose == "stop":
        if status in ENDED or status == "Missing":
            return _stopped(state, services, described)
        if status == RUNNING and state.failure_rounds < MAX_FAILURE_ROUNDS and state.conclusion is not None:
            again = state.failure_rounds + 1  # the stop did not take: ask again
            return state.model_copy(update={"failure_rounds": again, "next": state.conclusion.decision})
        return _wait_again(state, services, wait)
    if status == RUNNING:
        return _running(state, services, described or {})
    if status in ENDED or status == "Missing":
        reason = (described or {}).get("StatusReason") or f"the experiment is {status}"
        return _end(state, OperationStatus.FAILED, f"the inference experiment never ran: {reason}")
    stop = repo.get_operation(state.operation_id).stop_request
    if stop:  # discarded (or a guard alarm) while SageMaker was still setting the test up
        why = f"stopped before the test ran: {stop.get('reason')}"
        aborted = OperationStatus.ABORTED if stop.get("kind") == "abort" else OperationStatus.FAILED
        conclusion = Conclusion(decision="discard", status=aborted, reason=why, early=True)
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    return _wait_again(state, services, wait)


def _wait_again(state: FlowState, services: Services, wait: Wait) -> FlowState:
    res = _resources(state)
    seconds = RECHECK_SECONDS
    if wait.purpose == "start" and res.start_at > services.repo.now():  # scheduled: wake when it should be up
        seconds = math.ceil(res.start_at - services.repo.now()) + RECHECK_SECONDS
    return state.model_copy(update={"wait": wait.model_copy(update={"heartbeat_seconds": seconds}), "next": "await"})


def _running(state: FlowState, services: Services, described: dict[str, Any]) -> FlowState:
    """The experiment runs: schedule the phases from now and write the test's progress record."""
    the_plan, res, request, repo = _plan(state), _resources(state), state.request, services.repo
    now = repo.now()
    end = _end_time(described) or res.end_at
    analysis_end = end - DECISION_MARGIN_SECONDS
    phases = schedule_phases(analysis_end - now, the_plan.interval_seconds, request.sampling_steps)
    if phases is None:
        reason = (
            f"the experiment started too late ({_dt(now):%Y-%m-%dT%H:%M:%SZ}) to run its "
            f"{len(request.sampling_steps)} phase(s) before {_dt(analysis_end):%Y-%m-%dT%H:%M:%SZ}"
        )
        conclusion = Conclusion(decision="discard", status=OperationStatus.FAILED, reason=reason, early=True)
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    starts, at = [], now
    for phase in phases:
        starts.append(
            {
                "index": phase.index,
                "sampling_percent": phase.sampling_percent,
                "starts_at": at,
                "ends_at": at + phase.seconds,
            }
        )
        at += phase.seconds
    starts[-1]["ends_at"] = analysis_end
    plan = the_plan.model_copy(
        update={
            "running_at": _dt(now),
            "analysis_ends_at": _dt(analysis_end),
            "ends_at": _dt(end),
            "phases": phases,
        }
    )
    repo.save_plan(state.operation_id, plan.model_dump(mode="json"))
    progress = {
        "experiment": res.experiment_name,
        "running_at": now,
        "end_at": end,
        "analysis_end_at": analysis_end,
        "interval_seconds": plan.interval_seconds,
        "phases": starts,
        "subject": Subject(
            endpoint=plan.endpoint_name,
            production=res.production_variant,
            shadow=res.shadow_variant,
            config=plan.endpoint_config_name,
            alarms=res.alarms,
            analysis=request.analysis,
        ).model_dump(mode="json"),
        "started": 0,
        "current": 0,
        "judged": 0,
        "failing": 0,
        "failed": None,
        "phases_judged": 0,
        "sampling_history": [{"at": now, "percent": request.sampling_steps[0], "by": "flow"}],
        "last_verdict": None,
        "decision": None,
    }
    repo.put_operation_state(state.operation_id, PROGRESS, progress)
    _timeline(
        services,
        state,
        "running",
        f"experiment {res.experiment_name} is Running; {len(phases)} phase(s) until "
        f"{_dt(analysis_end):%Y-%m-%dT%H:%M:%SZ}, each {request.analysis_interval_minutes}-minute interval judged",
    )
    return state.model_copy(update={"plan": plan, "watch": Watch(phase=0), "wait": None, "next": "phase"})


def _end_time(described: dict[str, Any]) -> float | None:
    end = (described.get("Schedule") or {}).get("EndTime")
    return end.timestamp() if isinstance(end, datetime) else None


# ------------------------------------------------------------------------------------------------ phases
def start_phase(state: FlowState, services: Services) -> FlowState:
    """Set the phase's sampling percentage (UpdateInferenceExperiment), put the test on the judge's due list and
    watch the phase. A retried step finds the phase started (`started`) and starts it once."""
    res, watch_, repo = _resources(state), state.watch, services.repo
    assert watch_ is not None
    stop = repo.get_operation(state.operation_id).stop_request
    if stop:
        raise StopRequested(str(stop.get("reason", "stop requested")))
    progress = _progress(services, state)
    phases = progress["phases"]
    phase = phases[watch_.phase]
    percent = int(phase["sampling_percent"])
    now = repo.now()
    if current_sampling(progress) != percent:
        with aws(f"UpdateInferenceExperiment (sampling {percent} %)"):
            services.sagemaker.update_inference_experiment(
                Name=res.experiment_name,
                ShadowModeConfig={
                    "SourceModelVariantName": res.production_variant,
                    "ShadowModelVariants": [
                        {"ShadowModelVariantName": res.shadow_variant, "SamplingPercentage": percent}
                    ],
                },
            )
        repo.update_operation_state(
            state.operation_id, PROGRESS, append={"sampling_history": [{"at": now, "percent": percent, "by": "flow"}]}
        )
    if int(progress.get("started") or 0) == watch_.phase:
        if watch_.phase > 0:  # the phase starts now; its end keeps its planned length (the last one: the analysis end)
            length = float(phase["ends_at"]) - float(phase["starts_at"])
            last = watch_.phase == len(phases) - 1
            phases[watch_.phase] = {
                **phase,
                "starts_at": now,
                "ends_at": progress["analysis_end_at"] if last else now + length,
            }
        fields = {"phases": phases, "current": watch_.phase, "judged": 0, "failing": 0, "started": watch_.phase + 1}
        started = repo.commit_operation_state(
            state.operation_id,
            PROGRESS,
            expect={"started": watch_.phase},
            fields=fields,
            due=shadow_judge.next_due({**progress, **fields}),
        )
        if started:
            _timeline(
                services,
                state,
                "phase",
                f"phase {watch_.phase + 1}/{len(phases)}: {percent} % of production requests mirrored to "
                f"{res.shadow_variant} until {_dt(float(phases[watch_.phase]['ends_at'])):%Y-%m-%dT%H:%M:%SZ}",
                phase=watch_.phase,
                sampling=percent,
            )
        progress = {**progress, **fields} if started else _progress(services, state)
    watching = progress["phases"][watch_.phase]
    return state.model_copy(
        update={"watch": watch_.model_copy(update={"heartbeat_seconds": _heartbeat(watching, now)}), "next": "watch"}
    )


def _heartbeat(phase: dict[str, Any], now: float) -> int:
    """The watch's heartbeat timeout: the end of the phase."""
    return max(1, math.ceil(float(phase["ends_at"]) - now))


def watch(state: FlowState, services: Services, token: str) -> FlowState:
    """Watch a phase: park the token until the phase ends (the task's heartbeat timeout).

    The token is parked first, so that whoever arrives meanwhile fails or resumes it: a guard alarm
    (`AlarmTriggered`), the scheduled judge on a confirmed failing verdict (`AnalysisFailed`), an operator
    (`StopRequested`, or a promotion). Then what already happened ends the wait at once: a stop, a guard alarm
    whose event was lost, a failing verdict, an operator's promotion, a phase already over.
    """
    res, watch_, repo = _resources(state), state.watch, services.repo
    assert watch_ is not None
    endpoint = _plan(state).endpoint_name
    repo.put_task_token(
        endpoint, WaitPurpose.SHADOW_WATCH, token, state.operation_id, watch_.heartbeat_seconds + RECHECK_SECONDS
    )
    stop = repo.get_operation(state.operation_id).stop_request
    if stop:
        error = "AlarmTriggered" if stop.get("kind") == "alarm" else "StopRequested"
        return _end_wait(state, services, token, failure=(error, str(stop.get("reason"))))
    with aws("reading the guard alarms"):
        tripped = shadow_judge.alarms_in_alarm(services.cloudwatch, res.alarms)
    if tripped:  # the alarm's event was lost or is late: the watch finds it
        reason = f"guard alarm(s) {', '.join(tripped)} in ALARM"
        with suppress(Conflict):
            repo.request_stop(state.operation_id, kind="alarm", reason=reason, by=f"alarm:{tripped[0]}")
        return _end_wait(state, services, token, failure=("AlarmTriggered", reason))
    progress = _progress(services, state)
    if progress.get("failed"):
        return _end_wait(state, services, token, failure=("AnalysisFailed", str(progress["failed"])))
    decision = progress.get("decision")
    if decision and decision.get("decision") == "promote":  # an operator promoted while no wait was parked
        return _end_wait(state, services, token, success={"decision": "promote", "by": decision.get("by")})
    now = repo.now()
    if now >= float(progress["phases"][watch_.phase]["ends_at"]):
        return _end_wait(state, services, token, success={"phase": "done", "at": now})
    return state


def _end_wait(
    state: FlowState,
    services: Services,
    token: str,
    *,
    success: dict[str, Any] | None = None,
    failure: tuple[str, str] | None = None,
) -> FlowState:
    """End our own parked wait (if nobody else took the token first: then they are delivering)."""
    mine = services.repo.take_task_token(_plan(state).endpoint_name, WaitPurpose.SHADOW_WATCH)
    if mine is None or mine.token != token:
        if mine is not None:
            services.repo.put_back_task_token(mine)
        return state
    with aws("resuming the flow"):
        if failure is not None:
            services.stepfunctions.send_task_failure(taskToken=token, error=failure[0], cause=failure[1][:32000])
        else:
            services.stepfunctions.send_task_success(taskToken=token, output=json.dumps(success or {}))
    return state


def phase_end(state: FlowState, services: Services) -> FlowState:
    """A phase ended (or an operator asked to promote, or the judge found a failing verdict): judge the intervals
    the scheduled judge left, then the whole phase; the next phase, the end, or an early stop."""
    watch_, repo = state.watch, services.repo
    assert watch_ is not None
    resumed = state.resumed or {}
    state = state.model_copy(update={"resumed": None})
    progress = _progress(services, state)
    phases = progress["phases"]
    phase = phases[watch_.phase]
    now = repo.now()
    decision = resumed if resumed.get("decision") else progress.get("decision") or {}
    promote = decision.get("decision") == "promote"
    if not promote and not progress.get("failed") and now < float(phase["ends_at"]) - 1:
        # the phase got longer (PATCH end_time) while it was watched: watch the rest
        heartbeat = _heartbeat(phase, now)
        return state.model_copy(
            update={"watch": watch_.model_copy(update={"heartbeat_seconds": heartbeat}), "next": "watch"}
        )
    _unlist(services, state)  # then read: what the judge recorded until now is in it
    progress = _progress(services, state)
    with aws("reading the variants' metrics"):
        judged = shadow_judge.judge_pending(
            state.operation_id, progress, services.cloudwatch, repo, now, listed=False, budget=CATCH_UP_INTERVALS
        )
    if judged.raced:
        raise Retryable("another writer recorded this phase's intervals meanwhile")
    if judged.failed:
        conclusion = Conclusion(
            decision="discard", status=OperationStatus.FAILED, reason=f"stopped early: {judged.failed}", early=True
        )
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    if judged.left:  # the scheduled judge fell behind: judge the rest first
        return state.model_copy(update={"next": "phase_end"})
    if judged.recorded:
        progress = _progress(services, state)
    percent = current_sampling(progress) or int(phase["sampling_percent"])
    summary, verdict = _phase_verdict(state, services, progress, percent, now)
    state = state.model_copy(update={"verdicts": [*state.verdicts, summary]})
    last = watch_.phase == len(phases) - 1
    if promote:
        return _promote_if_gated(state, services, progress, f"promotion requested by {decision.get('by')}", verdict)
    if verdict.result is analysis.Result.FAIL:
        reason = f"phase {watch_.phase + 1} verdict Fail at {percent} % sampling: {verdict.reason}"
        conclusion = Conclusion(decision="discard", status=OperationStatus.FAILED, reason=reason, early=not last)
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    if not last:
        return state.model_copy(
            update={"watch": watch_.model_copy(update={"phase": watch_.phase + 1}), "next": "phase"}
        )
    return _final(state, services, progress, verdict)


def _unlist(services: Services, state: FlowState) -> None:
    """Take the test off the scheduled judge's due list (no record yet: nothing to do)."""
    services.repo.commit_operation_state(state.operation_id, PROGRESS, expect={}, due=None)


def _phase_verdict(
    state: FlowState, services: Services, progress: dict[str, Any], percent: int, now: float
) -> tuple[dict[str, Any], analysis.Verdict]:
    """The whole phase's verdict, recorded once (`phases_judged`): a retried step finds it recorded."""
    index = _watch(state).phase
    recorded = progress.get("phase_verdict") or {}
    if int(progress.get("phases_judged") or 0) > index and recorded.get("phase") == index:
        return recorded, _verdict_of(recorded)
    phase = progress["phases"][index]
    start, end = float(phase["starts_at"]), min(now, float(phase["ends_at"]))
    subject = Subject.model_validate(progress["subject"])
    with aws("reading the variants' metrics"):
        read = shadow_judge.read_of(subject, [(start, end)], utilisation=percent == MAX_SAMPLING)
        [[verdict]] = shadow_judge.evaluate(services.cloudwatch, [read])
    summary, note = shadow_judge.verdict_note(verdict, "phase", index, percent, start, end)
    if not services.repo.commit_operation_state(
        state.operation_id,
        PROGRESS,
        expect={"phases_judged": index},
        fields={"phases_judged": index + 1, "phase_verdict": summary},
        notes=[note],
    ):
        raise Retryable(f"phase {index + 1}'s verdict was recorded meanwhile")
    metrics.verdict(KIND, verdict.result.value)
    return summary, verdict


def _verdict_of(summary: dict[str, Any]) -> analysis.Verdict:
    """A recorded verdict's summary as the decisions read it (result, score, reason)."""
    return analysis.Verdict(
        result=analysis.Result(summary.get("result", analysis.Result.PASS.value)),
        score=summary.get("score"),
        reason=str(summary.get("reason", "")),
        metrics=[],
    )


def _watch(state: FlowState) -> Watch:
    if state.watch is None:
        raise ShadowTestFailed("the flow lost its watch (state without 'watch'): start a new shadow test")
    return state.watch


def _final(state: FlowState, services: Services, progress: dict[str, Any], verdict: analysis.Verdict) -> FlowState:
    """The last phase's verdict is the final verdict; the request's action decides what follows."""
    request = state.request
    result = verdict.result
    action: str = request.action
    if result is analysis.Result.MARGINAL:
        action = {"rollback": "fail", "continue": action, "pause": "approval"}[request.analysis.on_marginal]
    elif result is not analysis.Result.PASS:
        action = "fail"
    why = f"final verdict {result.value}: {verdict.reason}"
    if action == "fail":
        conclusion = Conclusion(decision="discard", status=OperationStatus.FAILED, reason=why)
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    if action == "discard":
        conclusion = Conclusion(
            decision="discard", status=OperationStatus.SUCCEEDED, reason=f"{why}; production kept, as requested"
        )
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    if action == "promote":
        return _promote_if_gated(state, services, progress, why, verdict)
    return _ask(state, services, progress, why)


def _promote_if_gated(
    state: FlowState, services: Services, progress: dict[str, Any], why: str, verdict: analysis.Verdict
) -> FlowState:
    """Promotion requires the last phase at 100 % sampling, throughout."""
    watch_ = state.watch
    assert watch_ is not None
    phases = progress["phases"]
    last = watch_.phase == len(phases) - 1
    since = float(phases[watch_.phase]["starts_at"])
    if not last or not full_sampling_since(progress, since):
        percent = current_sampling(progress)
        reason = (
            f"{why}; not promoted: promotion requires the last phase at 100 % sampling "
            f"(phase {watch_.phase + 1}/{len(phases)} at {percent} %)"
        )
        conclusion = Conclusion(decision="discard", status=OperationStatus.FAILED, reason=reason)
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    if verdict.result is analysis.Result.FAIL:
        conclusion = Conclusion(
            decision="discard", status=OperationStatus.FAILED, reason=f"{why}; but {verdict.reason}"
        )
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    conclusion = Conclusion(decision="promote", status=OperationStatus.SUCCEEDED, reason=why)
    return state.model_copy(update={"conclusion": conclusion, "next": "promote"})


def _ask(state: FlowState, services: Services, progress: dict[str, Any], why: str) -> FlowState:
    """Wait for a human: extend the experiment so that it still runs for the approval window."""
    res, request, repo = _resources(state), state.request, services.repo
    now = repo.now()
    end = float(progress["end_at"])
    wanted = now + request.approval_timeout_hours * 3600 + DECISION_MARGIN_SECONDS
    limit = res.start_at + MAX_DURATION_SECONDS
    new_end = min(wanted, limit)
    if new_end > end + 60:
        with aws("UpdateInferenceExperiment (end time for the approval window)"):
            services.sagemaker.update_inference_experiment(Name=res.experiment_name, Schedule={"EndTime": _dt(new_end)})
        repo.update_operation_state(state.operation_id, PROGRESS, fields={"end_at": new_end})
        end = new_end
    timeout = max(60, math.floor(end - DECISION_MARGIN_SECONDS - now))
    _timeline(
        services,
        state,
        "approval",
        f"{why}; waiting up to {timeout / 3600:.1f} h for POST /shadow-tests/{state.operation_id}/approve (or "
        "/promote, /discard)",
    )
    return state.model_copy(update={"approval_timeout_seconds": timeout, "next": "approve"})


def await_approval(state: FlowState, services: Services, token: str) -> FlowState:
    """Pause until an operator approves (promote) or discards; a decision recorded meanwhile resumes at once."""
    the_plan, repo = _plan(state), services.repo
    timeout = state.approval_timeout_seconds or 3600
    repo.put_task_token(
        the_plan.endpoint_name, WaitPurpose.APPROVAL, token, state.operation_id, timeout + RECHECK_SECONDS
    )
    record = repo.get_operation(state.operation_id)
    if record.status is OperationStatus.RUNNING:
        repo.transition(state.operation_id, OperationStatus.PAUSED, expected=OperationStatus.RUNNING)
    decision = _progress(services, state).get("decision")
    stop = record.stop_request
    if decision or stop:
        mine = repo.take_task_token(the_plan.endpoint_name, WaitPurpose.APPROVAL)
        if mine is not None and mine.token == token:
            with aws("resuming the flow"):
                if decision:
                    services.stepfunctions.send_task_success(taskToken=token, output=json.dumps(decision))
                else:
                    error = "AlarmTriggered" if (stop or {}).get("kind") == "alarm" else "StopRequested"
                    services.stepfunctions.send_task_failure(
                        taskToken=token, error=error, cause=str((stop or {}).get("reason"))
                    )
    return state


def decide(state: FlowState, services: Services) -> FlowState:
    """After the approval wait: promote or discard, as the operator said."""
    repo = services.repo
    record = repo.get_operation(state.operation_id)
    if record.status is OperationStatus.PAUSED:
        repo.transition(state.operation_id, OperationStatus.RUNNING, expected=OperationStatus.PAUSED)
    decision = state.approval or _progress(services, state).get("decision") or {}
    state = state.model_copy(update={"approval": None})
    who = decision.get("by") or "an operator"
    if decision.get("decision") == "promote":
        progress = _progress(services, state)
        verdict = _verdict_of(state.verdicts[-1] if state.verdicts else {})
        return _promote_if_gated(state, services, progress, f"approved by {who}", verdict)
    reason = f"discarded by {who}" + (f": {decision['reason']}" if decision.get("reason") else "")
    conclusion = Conclusion(decision="discard", status=OperationStatus.SUCCEEDED, reason=reason)
    return state.model_copy(update={"conclusion": conclusion, "next": "discard"})


# ------------------------------------------------------------------------------------------------ endings
def promote(state: FlowState, services: Services) -> FlowState:
    """StopInferenceExperiment: shadow Promote, production Remove (instances as the request says)."""
    the_plan, res, request, repo = _plan(state), _resources(state), state.request, services.repo
    conclusion = state.conclusion or Conclusion(decision="promote", status=OperationStatus.SUCCEEDED, reason="promoted")
    described = _describe(services, res.experiment_name)
    status = described["Status"] if described else "Missing"
    if status == RUNNING:
        _require_settled_endpoint(services, the_plan.endpoint_name)
        if request.promote_instances == "production":
            instance_type, count = the_plan.production_instance_type, the_plan.production_instance_count
        else:
            instance_type, count = the_plan.shadow_instance_type, the_plan.shadow_instance_count
        with aws(f"StopInferenceExperiment {res.experiment_name} (promote)"):
            services.sagemaker.stop_inference_experiment(
                Name=res.experiment_name,
                ModelVariantActions={res.shadow_variant: "Promote", res.production_variant: "Remove"},
                DesiredModelVariants=[_model_variant(res.model_name, res.shadow_variant, instance_type, count)],  # type: ignore[list-item]
                DesiredState="Completed",
                Reason=conclusion.reason[:1024],
            )
        _timeline(
            services,
            state,
            "promote",
            f"promoting {res.shadow_variant} ({res.model_name}, {count} x {instance_type}); removing "
            f"{res.production_variant}: {conclusion.reason}",
        )
    elif status not in ENDED and status != "Stopping":
        raise Retryable(f"the experiment is {status}: promoting once it runs")
    wait = Wait(purpose="stop", started_at=repo.now(), heartbeat_seconds=_stop_heartbeat(the_plan))
    return state.model_copy(update={"conclusion": conclusion, "wait": wait, "next": "await"})


def discard(state: FlowState, services: Services) -> FlowState:
    """StopInferenceExperiment: shadow Remove, production Retain (Cancelled when the test ends early)."""
    the_plan, res, repo = _plan(state), _resources(state), services.repo
    conclusion = state.conclusion or _conclusion_from_error(state, services)
    _unlist(services, state)
    described = _describe(services, res.experiment_name)
    status = described["Status"] if described else "Missing"
    if status in ("Creating", "Created", RUNNING):
        if status == RUNNING:
            _require_settled_endpoint(services, the_plan.endpoint_name)
        with aws(f"StopInferenceExperiment {res.experiment_name} (remove the shadow)"):
            services.sagemaker.stop_inference_experiment(
                Name=res.experiment_name,
                ModelVariantActions={res.shadow_variant: "Remove", res.production_variant: "Retain"},
                DesiredState="Cancelled" if conclusion.early else "Completed",
                Reason=conclusion.reason[:1024],
            )
        _timeline(
            services,
            state,
            "discard",
            f"removing {res.shadow_variant}; {res.production_variant} keeps serving: {conclusion.reason}",
            early=conclusion.early,
        )
    elif status not in ENDED and status not in ("Stopping", "Missing"):
        raise Retryable(f"the experiment is {status}: removing the shadow once it settles")
    wait = Wait(purpose="stop", started_at=repo.now(), heartbeat_seconds=_stop_heartbeat(the_plan))
    return state.model_copy(update={"conclusion": conclusion, "wait": wait, "next": "await", "error": None})


def _conclusion_from_error(state: FlowState, services: Services) -> Conclusion:
    """The flow got here from a Catch: a failing interval verdict, a guard alarm, an operator, the approval timeout."""
    error = (state.error or {}).get("Error", "")
    reason = _reason(state)
    stop = services.repo.get_operation(state.operation_id).stop_request or {}
    if error == "AnalysisFailed":
        return Conclusion(
            decision="discard", status=OperationStatus.FAILED, reason=f"stopped early: {reason}", early=True
        )
    if error == "AlarmTriggered" or stop.get("kind") == "alarm":
        return Conclusion(
            decision="discard",
            status=OperationStatus.FAILED,
            reason=f"stopped early: {stop.get('reason') or reason}",
            early=True,
        )
    if error == "States.Timeout":
        return Conclusion(decision="discard", status=OperationStatus.ABORTED, reason=reason, early=False)
    return Conclusion(
        decision="discard",
        status=OperationStatus.ABORTED,
        reason=f"discarded: {stop.get('reason') or reason}",
        early=True,
    )


def _require_settled_endpoint(services: Services, endpoint: str) -> None:
    with aws("reading the endpoint"):
        status = services.sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]
    if status != "InService":
        raise Retryable(f"the endpoint is {status}: SageMaker changes an experiment's variants once it is InService")


def _stop_heartbeat(the_plan: ShadowPlan) -> int:
    return math.ceil(provision_estimate(the_plan.shadow_instance_type) * 1.25) + RECHECK_SECONDS


def _stopped(state: FlowState, services: Services, described: dict[str, Any] | None) -> FlowState:
    """The experiment ended: the outcome comes from the endpoint itself, not from the experiment's status."""
    the_plan, res = _plan(state), _resources(state)
    conclusion = state.conclusion or Conclusion(
        decision="discard", status=OperationStatus.FAILED, reason=(described or {}).get("StatusReason") or "ended"
    )
    with aws("reading the endpoint"):
        endpoint = services.sagemaker.describe_endpoint(EndpointName=the_plan.endpoint_name)
    status, config = endpoint["EndpointStatus"], endpoint["EndpointConfigName"]
    if status not in SETTLED:
        raise Retryable(f"the endpoint is still {status}")
    variants = {v["VariantName"] for v in endpoint.get("ProductionVariants", [])}
    shadows = {v["VariantName"] for v in endpoint.get("ShadowProductionVariants", [])}
    served = _served_models(services, config)
    if conclusion.decision == "promote":
        if status == "InService" and res.model_name in served and res.production_variant not in variants:
            outcome = Outcome(
                status=OperationStatus.SUCCEEDED,
                reason=f"promoted: {res.model_name} serves {the_plan.endpoint_name} on {config} ({conclusion.reason})",
                decision="promoted",
                endpoint_config=config,
                endpoint_status=status,
            )
        else:
            why = endpoint.get("FailureReason") or (described or {}).get("StatusReason") or "no reason given"
            outcome = Outcome(
                status=OperationStatus.FAILED,
                reason=f"the promotion did not take: the endpoint is {status} on {config}: {why}",
                decision="none",
                endpoint_config=config,
                endpoint_status=status,
            )
    else:
        clean = status == "InService" and res.shadow_variant not in shadows and res.production_variant in variants
        reason = (
            conclusion.reason
            if clean
            else (
                f"{conclusion.reason}; but the endpoint is {status} on {config}"
                + (f" with shadow {', '.join(sorted(shadows))}" if shadows else "")
            )
        )
        outcome = Outcome(
            status=conclusion.status if clean else OperationStatus.FAILED,
            reason=reason,
            decision="discarded",
            endpoint_config=config,
            endpoint_status=status,
        )
    return state.model_copy(update={"outcome": outcome, "wait": None, "next": "finish"})


def _served_models(services: Services, config: str) -> set[str]:
    with aws(f"reading endpoint config {config}"):
        described = services.sagemaker.describe_endpoint_config(EndpointConfigName=config)
    return {str(v.get("ModelName")) for v in described.get("ProductionVariants", [])}


def handle_failure(state: FlowState, services: Services) -> FlowState:
    """A step failed for good: remove the shadow variant if the experiment runs, then finish."""
    error = state.error or {}
    rounds = state.failure_rounds + 1
    state = state.model_copy(update={"failure_rounds": rounds})
    cause = _reason(state)
    with suppress(NotFound):
        _timeline(services, state, "error", f"{error.get('Error', 'error')}: {cause}", **error)
    if state.plan is None or state.resources is None or rounds > MAX_FAILURE_ROUNDS:
        return _end(state, OperationStatus.FAILED, cause if rounds <= MAX_FAILURE_ROUNDS else f"gave up: {cause}")
    described = _describe(services, state.resources.experiment_name)
    status = described["Status"] if described else "Missing"
    if status in ("Creating", "Created", RUNNING):
        conclusion = Conclusion(decision="discard", status=OperationStatus.FAILED, reason=cause, early=True)
        return state.model_copy(update={"conclusion": conclusion, "next": "discard"})
    if status == "Stopping":
        wait = Wait(purpose="stop", started_at=services.repo.now(), heartbeat_seconds=RECHECK_SECONDS)
        return state.model_copy(update={"wait": wait, "next": "await"})
    if state.conclusion is not None and status in ENDED:
        return _stopped(state, services, described)
    return _end(state, OperationStatus.FAILED, cause)


def finish(state: FlowState, services: Services) -> FlowState:
    """Record the outcome, forget the alarm watches, release the lock."""
    repo = services.repo
    outcome = state.outcome or Outcome(status=OperationStatus.FAILED, reason=_reason(state))
    try:
        record = repo.get_operation(state.operation_id)
    except NotFound:
        request = state.request.model_dump(mode="json")
        record = repo.create_operation(KIND, state.request.endpoint_name, request, state.operation_id)
    progress = repo.get_operation_state(state.operation_id, PROGRESS) or {}
    result: dict[str, Any] = {
        "status": outcome.status.value,
        "reason": outcome.reason,
        "decision": outcome.decision,
        "experiment": state.resources.experiment_name if state.resources else None,
        "endpoint_config": outcome.endpoint_config,
        "endpoint_status": outcome.endpoint_status,
        "verdicts": state.verdicts,
        "final_verdict": state.verdicts[-1] if state.verdicts else None,
        "sampling_history": progress.get("sampling_history", []),
    }
    if state.resources is not None:
        repo.delete_alarm_watches(state.operation_id, state.resources.alarms)
        _unlist(services, state)
    if not record.terminal and outcome.status is OperationStatus.FAILED and state.resources is not None:
        result["diagnosis"] = _diagnosis(state, services, record.created_at.timestamp(), outcome.reason)
    if not record.terminal:
        if record.status is OperationStatus.PAUSED and outcome.status is OperationStatus.SUCCEEDED:
            repo.transition(state.operation_id, OperationStatus.RUNNING, expected=OperationStatus.PAUSED)
        if record.status is OperationStatus.PENDING and outcome.status is OperationStatus.SUCCEEDED:
            repo.transition(state.operation_id, OperationStatus.RUNNING, expected=OperationStatus.PENDING)
        repo.transition(state.operation_id, outcome.status, result=result)
        _timeline(services, state, "finished", f"{outcome.status.value}: {outcome.reason}")
        metrics.operation_finished(KIND, outcome.status.value)
    repo.release_lock(state.request.endpoint_name, state.operation_id)
    done = state.model_copy(update={"outcome": outcome, "next": "announce"})
    return done.model_copy(update={"event": announcement(done)})


def _diagnosis(state: FlowState, services: Services, since: float, reason: str) -> dict[str, Any]:
    """Every failed operation carries its diagnosis: bounded and best effort, it never fails the flow."""
    from inferops import diagnosis

    try:
        return diagnosis.for_operation(
            state.request.endpoint_name,
            diagnosis.default_clients(services.sagemaker.meta.region_name),  # short timeouts, read-only
            since=since,
            errors=[reason],
            configs=[],
            alarm_names=state.resources.alarms if state.resources else [],
            budget_seconds=diagnosis.OPERATION_BUDGET_SECONDS,
        )
    except Exception as error:
        import logging

        logging.getLogger(__name__).warning("diagnosis unavailable", exc_info=error)
        return diagnosis.unavailable(state.request.endpoint_name, str(error))


def announcement(state: FlowState) -> dict[str, Any]:
    """The detail of the `InferOps Shadow Test Finished` event."""
    outcome = state.outcome
    final = state.verdicts[-1] if state.verdicts else None
    return {
        "operationId": state.operation_id,
        "endpointName": state.request.endpoint_name,
        "status": outcome.status.value if outcome else "FAILED",
        "reason": outcome.reason if outcome else _reason(state),
        "decision": outcome.decision if outcome else None,
        "experimentName": state.resources.experiment_name if state.resources else None,
        "endpointConfigName": outcome.endpoint_config if outcome else None,
        "finalVerdict": final.get("result") if final else None,
    }


def _consumed(step: Step) -> Step:
    """A step's output never carries what resumed an earlier wait: a Catch's ResultPath or a callback's output
    stays in the state until a step drops it, and the next wait's check must not mistake it for its own."""

    def run(state: FlowState, services: Services) -> FlowState:
        return step(state, services).model_copy(update={"resumed": None, "heartbeat": None})

    run.__doc__ = step.__doc__
    return run


STEPS: dict[str, Step] = {
    name: _consumed(step)
    for name, step in {
        "preflight": preflight_step,
        "acquire_lock": acquire_lock,
        "create_experiment": create_experiment,
        "check_experiment": check_experiment,
        "start_phase": start_phase,
        "phase_end": phase_end,
        "decide": decide,
        "promote": promote,
        "discard": discard,
        "handle_failure": handle_failure,
        "finish": finish,
    }.items()
}
TOKEN_STEPS: dict[str, TokenStep] = {
    "await_experiment": await_experiment,
    "watch": watch,
    "await_approval": await_approval,
}
