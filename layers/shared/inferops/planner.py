"""Pre-flight: check a deployment request against SageMaker's rules and turn it into a plan.

Every refusal is a `Violation` naming the field, the rule, the value and the fix, and all of them are
reported at once. A plan lists the traffic steps with their start times, the capacity and cost during the
rollout, and the exact `DeploymentConfig` the deployment flow will send to `UpdateEndpoint`. Pure: the
caller reads the endpoint (inferops.endpoints) and passes a snapshot in.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from inferops import catalog
from inferops.endpoints import EndpointSnapshot, ModelCheck, VariantSnapshot
from inferops.errors import InferOpsError
from inferops.model import Model

# SageMaker's bounds (reference/sagemaker-facts.md §2, botocore's sagemaker model).
CANARY_MAX_PERCENT = 50
LINEAR_MIN_PERCENT, LINEAR_MAX_PERCENT = 10, 50
ROLLING_MIN_PERCENT, ROLLING_MAX_PERCENT = 5, 50
WAIT_MAX_SECONDS = 3600
TIMEOUT_MIN_SECONDS, TIMEOUT_MAX_SECONDS = 600, 28800
ALARMS_MAX = 10
MODEL_MEMORY_OVERHEAD = 0.2
# Planning estimates of how long SageMaker takes to bring instances into service. Not a SageMaker figure:
# GPU and accelerator instances pull larger images and load bigger models.
PROVISION_SECONDS = {"none": 300, "gpu": 600, "inferentia": 600, "trainium": 600}
SERVERLESS_PROVISION_SECONDS = 180

# SageMaker's name pattern, whose hyphen runs are unbounded, and its length limit (a longer name is its 400)
ResourceName = Annotated[str, StringConstraints(max_length=63, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")]


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- request
class ExistingModel(_Strict):
    source: Literal["existing"] = "existing"
    model_name: ResourceName


class PackageModel(_Strict):
    source: Literal["package"] = "package"
    model_package_arn: Annotated[
        str,
        StringConstraints(pattern=r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:model-package/[^/]{1,63}/\d+$"),
    ]


class ContainerModel(_Strict):
    source: Literal["container"] = "container"
    image: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\S]+$")]
    model_data_url: Annotated[str, StringConstraints(pattern=r"^s3://[a-z0-9.\-]{3,63}/.*$", max_length=1024)]
    execution_role_arn: Annotated[str, StringConstraints(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")]
    environment: dict[str, str] = Field(default_factory=dict, max_length=100)


ModelSpec = Annotated[ExistingModel | PackageModel | ContainerModel, Field(discriminator="source")]


class Size(_Strict):
    """A step size: a percentage of the new fleet's capacity or a number of instances."""

    unit: Literal["percent", "instances"] = "percent"
    value: int = Field(ge=1)


class AllAtOnce(_Strict):
    type: Literal["all_at_once"] = "all_at_once"
    bake_seconds: int = Field(default=0, ge=0, description="final baking period (WaitIntervalInSeconds)")


class Canary(_Strict):
    type: Literal["canary"] = "canary"
    size: Size = Size(value=10)
    bake_seconds: int = Field(default=600, ge=0, description="canary and final baking periods")


class Linear(_Strict):
    type: Literal["linear"] = "linear"
    step: Size = Size(value=20)
    bake_seconds: int = Field(default=300, ge=0, description="baking period after each step")


class Rolling(_Strict):
    type: Literal["rolling"] = "rolling"
    batch: Size = Size(value=25)
    bake_seconds: int = Field(default=300, ge=0, description="baking period after each batch")
    rollback_batch: Size | None = None


class Managed(_Strict):
    """InferOps shifts weights between two variants itself and gates each step on analysis."""

    type: Literal["managed"] = "managed"
    steps: list[int] = Field(default_factory=lambda: [10, 50, 100], min_length=1, max_length=20)
    bake_seconds: int = Field(default=600, ge=0, description="analysis window after each step")
    approval_before: list[int] = Field(default_factory=list, description="steps that wait for a human")


Strategy = Annotated[AllAtOnce | Canary | Linear | Rolling | Managed, Field(discriminator="type")]


PLACEHOLDERS = ("endpoint", "variant", "config")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_BASIC_STATS = ("Average", "Sum", "Minimum", "Maximum", "SampleCount")
_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d{1,2})?|100(\.0{1,2})?)$")  # CloudWatch's pNN.NN, p0 to p100


class CustomMetric(_Strict):
    """A CloudWatch metric compared per variant, like ModelLatency, for what the built-in metrics miss.

    Dimension values may name the variant being read: `{endpoint}`, `{variant}` and `{config}` (its
    EndpointConfigName) are filled in for the baseline and for the canary.
    """

    namespace: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^:].*$")]
    metric_name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    stat: str = Field(default="Average", description="Average, Sum, Minimum, Maximum, SampleCount or pNN.NN")
    dimensions: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=255)],
        Annotated[str, StringConstraints(min_length=1, max_length=1024)],
    ] = Field(default_factory=dict, max_length=30, description="CloudWatch allows 30 dimensions per metric")
    bad: Literal["increase", "decrease"] = Field(description="the direction in which the canary is worse")
    tolerance_percent: float = Field(default=10.0, ge=0, description="relative median shift allowed")
    critical: bool = Field(default=False, description="a failure of this metric fails the analysis alone")

    @field_validator("stat")
    @classmethod
    def _known_stat(cls, value: str) -> str:
        if value in _BASIC_STATS or _PERCENTILE.match(value):
            return value
        raise ValueError(f"unknown statistic {value!r}: use {', '.join(_BASIC_STATS)} or a percentile like p99.9")

    @field_validator("dimensions")
    @classmethod
    def _known_placeholders(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
        for key, text in value.items():
            rest = _PLACEHOLDER.sub("", text)
            if "{" in rest or "}" in rest:
                raise ValueError(f"dimension {key}={text!r}: the only placeholders are {allowed}")
        return value

    def dimensions_for(self, *, endpoint: str, variant: str, config: str) -> dict[str, str]:
        """The dimensions of one variant's series, placeholders filled."""
        values = {"endpoint": endpoint, "variant": variant, "config": config}
        return {key: _PLACEHOLDER.sub(lambda m: values[m.group(1)], text) for key, text in self.dimensions.items()}


class Analysis(_Strict):
    """Canary analysis gates for the managed path (the deployment flow runs them between steps).

    Each analysis compares the canary variant with the baseline variant over the bake window, one
    datapoint per `interval_seconds`; too little data extends the bake rather than passing it.
    """

    interval_seconds: int = Field(
        default=60, ge=10, le=3600, description="CloudWatch period; SageMaker publishes 1-minute metrics"
    )
    min_requests: int = Field(default=100, ge=0, description="requests per variant before error rates are judged")
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="canary 5XX rate that fails on its own")
    max_latency_increase_percent: float = Field(default=20.0, ge=0)
    min_samples: int = Field(default=5, ge=3, description="datapoints per variant before a distribution is judged")
    metrics: list[CustomMetric] = Field(default_factory=list, max_length=10, description="custom metrics to compare")
    max_extensions: int = Field(default=3, ge=0, le=10, description="bake extensions on Inconclusive before failing")
    on_marginal: Literal["rollback", "continue", "pause"] = "rollback"

    @field_validator("interval_seconds")
    @classmethod
    def _whole_minutes(cls, value: int) -> int:
        if value % 60:
            raise ValueError(
                f"{value} is not a multiple of 60: SageMaker publishes one datapoint a minute, "
                "so a shorter or fractional period has nothing to aggregate"
            )
        return value


class DeploymentRequest(_Strict):
    endpoint_name: ResourceName
    model: ModelSpec
    strategy: Strategy = Canary()
    variant_name: ResourceName | None = Field(default=None, description="default: the only production variant")
    instance_type: str | None = Field(default=None, description="change the instance type (e.g. ml.g5.xlarge)")
    instance_count: int | None = Field(default=None, ge=1, le=1000)
    model_size_gb: float | None = Field(default=None, gt=0, le=2000, description="weights, for the fit check")
    tensor_parallel_degree: int = Field(default=1, ge=1, le=64)
    termination_wait_seconds: int = Field(default=0, ge=0)
    max_execution_timeout_seconds: int | None = Field(default=None, ge=0)
    alarms: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=50
    )
    create_recommended_alarms: bool = False
    deregister_autoscaling: bool = False
    analysis: Analysis | None = None


# ---------------------------------------------------------------- result
class Violation(_Strict):
    field: str
    rule: str
    value: Any = None
    message: str
    fix: str


class TrafficStep(_Strict):
    index: int
    at_seconds: int = Field(description="offset from the start of the rollout")
    duration_seconds: int
    action: Literal["provision", "shift", "bake", "approve", "terminate", "wait"]
    description: str
    new_traffic_percent: float
    old_instances: int
    new_instances: int


class Cost(_Strict):
    currency: Literal["USD"] = "USD"
    serving_hourly_usd: float | None = Field(description="the fleet after the rollout")
    peak_hourly_usd: float | None = Field(description="both fleets at their largest")
    rollout_usd: float | None = Field(description="instance hours during the rollout, both fleets")
    price_region: str
    price_as_of: str
    unpriced_instance_types: list[str]


class AlarmSpec(_Strict):
    """A recommended rollback alarm (sagemaker-facts.md §2) that the deployment flow creates."""

    name: str
    metric_name: str
    statistic: str
    dimensions: dict[str, str]
    period_seconds: int
    evaluation_periods: int
    threshold: float
    comparison: str
    treat_missing_data: str


class Plan(_Strict):
    endpoint_name: str
    variant_name: str
    path: Literal["native", "managed"]
    strategy: str
    current_instance_type: str | None
    current_instance_count: int
    target_instance_type: str | None
    target_instance_count: int
    new_endpoint_config_name: str
    steps: list[TrafficStep]
    total_seconds: int
    waits_seconds: int
    max_execution_timeout_seconds: int
    serving_instances: int
    peak_instances: int
    min_serving_instances: int
    cost: Cost
    deployment_config: dict[str, Any] | None
    alarms: list[str]
    recommended_alarms: list[AlarmSpec]
    autoscaling: Literal["none", "kept", "deregister_and_restore"]
    warnings: list[str]


class PlanResult(_Strict):
    ok: bool
    violations: list[Violation]
    plan: Plan | None
    warnings: list[str]


# ---------------------------------------------------------------- planning
class _Rules:
    """Collects violations and warnings while the checks run, so a user sees every problem at once."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.warnings: list[str] = []

    def violate(self, field: str, rule: str, value: Any, message: str, fix: str) -> None:
        self.violations.append(Violation(field=field, rule=rule, value=value, message=message, fix=fix))

    def within(self, field: str, value: int, low: int, high: int, what: str, unit: str = "s") -> None:
        if not low <= value <= high:
            self.violate(
                field,
                f"{field.rsplit('.', 1)[-1]}_range",
                value,
                f"{what} {value} {unit} is outside SageMaker's {low}-{high} {unit}",
                f"use a value between {low} and {high} {unit}",
            )


def new_config_name(request: DeploymentRequest) -> str:
    """Deterministic per request, so a retried deployment reuses the config instead of making another."""
    digest = hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:8]
    return f"{request.endpoint_name[:45]}-io-{digest}"


def _percent_of(size: Size, fleet: int) -> float:
    return float(size.value) if size.unit == "percent" else 100.0 * size.value / max(fleet, 1)


def _instances_of(size: Size, fleet: int) -> int:
    """SageMaker sizes steps in whole instances of the new fleet; at least one."""
    if size.unit == "instances":
        return min(size.value, fleet)
    return max(1, min(fleet, math.floor(fleet * size.value / 100)))


def _check_size(rules: _Rules, field: str, size: Size, fleet: int, low: float, high: float, what: str) -> None:
    percent = _percent_of(size, fleet)
    if not low <= percent <= high:
        shown = f"{size.value} %" if size.unit == "percent" else f"{size.value} of {fleet} instances"
        rules.violate(
            field,
            f"{what.replace(' ', '_')}_range",
            size.value,
            f"{what} {shown} ({percent:.0f} % of the new fleet) is outside SageMaker's {low:.0f}-{high:.0f} %",
            f"choose a {what} between {low:.0f} % and {high:.0f} % of the new fleet",
        )


def plan(
    request: DeploymentRequest,
    endpoint: EndpointSnapshot,
    model: ModelCheck | None = None,
) -> PlanResult:
    """Check every pre-flight rule; return all violations, or the plan the deployment flow will follow."""
    rules = _Rules()
    variant = _target_variant(rules, request, endpoint)
    if variant is None:
        return PlanResult(ok=False, violations=rules.violations, plan=None, warnings=rules.warnings)

    target_type = request.instance_type or variant.instance_type
    target_count = request.instance_count or variant.instance_count or 1
    instance = _check_instance_type(rules, request, target_type)
    _check_endpoint(rules, endpoint, variant)
    _check_model(rules, request, model, target_type)
    if instance is not None:
        _check_fit(rules, request, instance)

    excluded = _guardrail_exclusion(request, endpoint, variant, model, target_type)
    path = _choose_path(rules, request, endpoint, excluded)
    strategy = request.strategy
    _check_strategy(rules, request, strategy, endpoint, variant, target_count, path)
    _check_alarms(rules, request, strategy, path)
    autoscaling = _check_autoscaling(rules, request, variant, target_type, path)

    steps = _steps(request, variant, target_type, target_count, path)
    waits = _waits(strategy, request.termination_wait_seconds, target_count, path)
    total = max((s.at_seconds + s.duration_seconds for s in steps), default=0)
    timeout = _check_timeout(rules, request, waits, total, path)

    if rules.violations:
        return PlanResult(ok=False, violations=rules.violations, plan=None, warnings=rules.warnings)

    config_name = new_config_name(request)
    recommended = (
        _recommended_alarms(endpoint.name, variant.name, config_name) if request.create_recommended_alarms else []
    )
    alarm_names = [*request.alarms, *(a.name for a in recommended)]
    the_plan = Plan(
        endpoint_name=endpoint.name,
        variant_name=variant.name,
        path=path,
        strategy=strategy.type,
        current_instance_type=variant.instance_type,
        current_instance_count=variant.instance_count,
        target_instance_type=target_type,
        target_instance_count=target_count,
        new_endpoint_config_name=config_name,
        steps=steps,
        total_seconds=total,
        waits_seconds=waits,
        max_execution_timeout_seconds=timeout,
        serving_instances=variant.instance_count,
        peak_instances=max(s.old_instances + s.new_instances for s in steps),
        min_serving_instances=_min_serving(steps),
        cost=_cost(steps, variant.instance_type, target_type, target_count),
        deployment_config=(
            _deployment_config(strategy, request, target_count, timeout, alarm_names) if path == "native" else None
        ),
        alarms=alarm_names,
        recommended_alarms=recommended,
        autoscaling=autoscaling,
        warnings=rules.warnings,
    )
    return PlanResult(ok=True, violations=[], plan=the_plan, warnings=rules.warnings)


def _target_variant(rules: _Rules, request: DeploymentRequest, endpoint: EndpointSnapshot) -> VariantSnapshot | None:
    names = [v.name for v in endpoint.variants]
    if request.variant_name is not None:
        found = endpoint.variant(request.variant_name)
        if found is None:
            rules.violate(
                "variant_name",
                "variant_exists",
                request.variant_name,
                f"endpoint '{endpoint.name}' has no production variant '{request.variant_name}'",
                f"use one of: {', '.join(names)}",
            )
        return found
    if len(endpoint.variants) == 1:
        return endpoint.variants[0]
    rules.violate(
        "variant_name",
        "variant_required",
        None,
        f"endpoint '{endpoint.name}' has {len(names)} production variants; say which one to update",
        f"set variant_name to one of: {', '.join(names)}",
    )
    return None


def _check_instance_type(
    rules: _Rules, request: DeploymentRequest, target_type: str | None
) -> catalog.InstanceType | None:
    if target_type is None:
        return None
    try:
        return catalog.get(target_type)
    except InferOpsError as error:
        rules.violate(
            "instance_type",
            "instance_type_known",
            target_type,
            error.message,
            "use a SageMaker hosting instance type (GET /catalog/instances lists them)",
        )
        return None


def _check_endpoint(rules: _Rules, endpoint: EndpointSnapshot, variant: VariantSnapshot) -> None:
    if endpoint.status != "InService":
        fix = (
            "call UpdateEndpoint with a known-good config first (the endpoint is serving mixed configs)"
            if endpoint.status == "UpdateRollbackFailed"
            else "wait until the endpoint is InService"
            if endpoint.status in {"Creating", "Updating", "SystemUpdating", "RollingBack"}
            else "delete and recreate the endpoint (only DeleteEndpoint is allowed in this state)"
        )
        rules.violate(
            "endpoint_name",
            "endpoint_in_service",
            endpoint.status,
            f"endpoint '{endpoint.name}' is {endpoint.status}, not InService"
            + (f" ({endpoint.failure_reason})" if endpoint.failure_reason else ""),
            fix,
        )
    if variant.model_name is None:
        rules.violate(
            "endpoint_name",
            "no_inference_components",
            endpoint.name,
            f"endpoint '{endpoint.name}' hosts inference components; their models roll with "
            "UpdateInferenceComponent, not with an endpoint deployment",
            "update the inference component instead",
        )


def _check_model(rules: _Rules, request: DeploymentRequest, model: ModelCheck | None, target_type: str | None) -> None:
    spec = request.model
    if isinstance(spec, ExistingModel) and model is not None and not model.found:
        rules.violate(
            "model.model_name",
            "model_exists",
            spec.model_name,
            f"model '{spec.model_name}' does not exist",
            "create the model first, or pass an image and artifact (source: container)",
        )
    if isinstance(spec, PackageModel) and model is not None:
        if not model.found:
            rules.violate(
                "model.model_package_arn",
                "package_exists",
                spec.model_package_arn,
                "model package not found",
                "check the ARN (arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)",
            )
        elif model.approval_status != "Approved":
            rules.violate(
                "model.model_package_arn",
                "package_approved",
                model.approval_status,
                f"model package is {model.approval_status}, not Approved",
                "approve the version in the model registry (ModelApprovalStatus=Approved) first",
            )
        if model.supported_instance_types and target_type and target_type not in model.supported_instance_types:
            rules.violate(
                "instance_type",
                "package_supports_instance_type",
                target_type,
                f"the model package does not list {target_type} among its real-time instance types",
                f"use one of: {', '.join(model.supported_instance_types)}",
            )


def _check_fit(rules: _Rules, request: DeploymentRequest, instance: catalog.InstanceType) -> None:
    if request.model_size_gb is None:
        return
    size, degree = request.model_size_gb, request.tensor_parallel_degree
    accelerator = instance.accelerator
    if accelerator.kind == "none":
        needed = size * (1 + MODEL_MEMORY_OVERHEAD)
        if needed > instance.memory_gib:
            rules.violate(
                "model_size_gb",
                "model_fits_memory",
                size,
                f"a {size:g} GB model needs about {needed:.1f} GB with overhead; {instance.name} has "
                f"{instance.memory_gib:g} GiB of memory and no accelerator",
                _fit_suggestion(size, degree),
            )
        return
    if degree > accelerator.count:
        rules.violate(
            "tensor_parallel_degree",
            "tensor_parallel_fits_accelerators",
            degree,
            f"tensor-parallel degree {degree} needs {degree} accelerators; {instance.name} has {accelerator.count}",
            f"use a degree of at most {accelerator.count}, or a larger instance",
        )
        return
    if not catalog.fits(instance, size, tensor_parallel=degree, overhead=MODEL_MEMORY_OVERHEAD):
        per_device = size * (1 + MODEL_MEMORY_OVERHEAD) / degree
        rules.violate(
            "model_size_gb",
            "model_fits_accelerator_memory",
            size,
            f"a {size:g} GB model over {degree} accelerator(s) needs {per_device:.1f} GB each with overhead; "
            f"{instance.name} has {accelerator.memory_gib_each:g} GB per {accelerator.model}",
            _fit_suggestion(size, degree),
        )


def _fit_suggestion(size: float, degree: int) -> str:
    fits = catalog.fit(size, tensor_parallel=degree, overhead=MODEL_MEMORY_OVERHEAD)
    if not fits:
        return "no SageMaker instance type holds this model at this tensor-parallel degree; raise the degree"
    return "instance types that fit: " + ", ".join(f.instance_type for f in fits[:3])


def _guardrail_exclusion(
    request: DeploymentRequest,
    endpoint: EndpointSnapshot,
    variant: VariantSnapshot,
    model: ModelCheck | None,
    target_type: str | None,
) -> str | None:
    """Why SageMaker would silently ignore a guardrail policy here (it falls back to all-at-once)."""
    types = {t for t in (variant.instance_type, target_type) if t}
    if any(t.startswith("ml.inf1.") for t in types):
        return "Inf1 instances"
    if variant.marketplace or (model is not None and model.marketplace):
        return "AWS Marketplace containers"
    return None


def _choose_path(
    rules: _Rules, request: DeploymentRequest, endpoint: EndpointSnapshot, excluded: str | None
) -> Literal["native", "managed"]:
    strategy = request.strategy
    if isinstance(strategy, Managed):
        return "managed"
    if excluded and isinstance(strategy, Canary | Linear):
        rules.warnings.append(
            f"SageMaker ignores deployment guardrails for {excluded} (it would shift all traffic at once with "
            f"no bake); InferOps runs this {strategy.type} rollout itself on the managed path"
        )
        return "managed"
    if excluded and isinstance(strategy, AllAtOnce) and strategy.bake_seconds:
        rules.warnings.append(
            f"SageMaker ignores deployment guardrails for {excluded}: no bake and no auto-rollback will happen"
        )
    return "native"


def _check_strategy(
    rules: _Rules,
    request: DeploymentRequest,
    strategy: AllAtOnce | Canary | Linear | Rolling | Managed,
    endpoint: EndpointSnapshot,
    variant: VariantSnapshot,
    fleet: int,
    path: str,
) -> None:
    wait_limit = WAIT_MAX_SECONDS if path == "native" else 86400
    rules.within("strategy.bake_seconds", strategy.bake_seconds, 0, wait_limit, "bake wait")
    rules.within("termination_wait_seconds", request.termination_wait_seconds, 0, WAIT_MAX_SECONDS, "termination wait")
    if isinstance(strategy, Canary):
        _check_size(rules, "strategy.size", strategy.size, fleet, 1, CANARY_MAX_PERCENT, "canary size")
    elif isinstance(strategy, Linear):
        _check_size(
            rules,
            "strategy.step",
            strategy.step,
            fleet,
            LINEAR_MIN_PERCENT,
            LINEAR_MAX_PERCENT,
            "linear step",
        )
    elif isinstance(strategy, Rolling):
        _check_rolling(rules, strategy, endpoint, variant, fleet, request)
    elif isinstance(strategy, Managed):
        _check_managed(rules, strategy, endpoint)


def _check_rolling(
    rules: _Rules,
    strategy: Rolling,
    endpoint: EndpointSnapshot,
    variant: VariantSnapshot,
    fleet: int,
    request: DeploymentRequest,
) -> None:
    _check_size(
        rules,
        "strategy.batch",
        strategy.batch,
        fleet,
        ROLLING_MIN_PERCENT,
        ROLLING_MAX_PERCENT,
        "rolling batch",
    )
    rollback = strategy.rollback_batch
    if rollback is not None and _percent_of(rollback, fleet) > 100:
        rules.violate(
            "strategy.rollback_batch",
            "rollback_batch_within_fleet",
            rollback.value,
            f"a rollback batch of {rollback.value} {rollback.unit} is larger than the {fleet}-instance fleet",
            "use at most 100 % of the fleet, or omit it for a full blue/green rollback",
        )
    if variant.serverless:
        rules.violate(
            "strategy.type",
            "rolling_not_serverless",
            "rolling",
            "rolling deployments do not support serverless endpoints",
            "use all_at_once, canary or linear",
        )
    if len(endpoint.variants) > 1:
        rules.violate(
            "strategy.type",
            "rolling_single_variant",
            "rolling",
            f"rolling deployments need a single production variant; '{endpoint.name}' has {len(endpoint.variants)}",
            "use a blue/green strategy (all_at_once, canary, linear)",
        )
    if variant.marketplace or any(
        t.startswith("ml.inf1.") for t in (variant.instance_type or "", request.instance_type or "")
    ):
        rules.violate(
            "strategy.type",
            "rolling_guardrails_supported",
            "rolling",
            "SageMaker does not support rolling deployments on Inf1 instances or Marketplace containers",
            "use canary or linear: InferOps then shifts traffic itself on the managed path",
        )


def _check_managed(rules: _Rules, strategy: Managed, endpoint: EndpointSnapshot) -> None:
    steps = strategy.steps
    if any(not 1 <= s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
        rules.violate(
            "strategy.steps",
            "managed_steps_increasing_to_100",
            steps,
            "managed steps must be strictly increasing traffic percentages between 1 and 100, ending at 100",
            "e.g. [10, 50, 100]",
        )
    unknown = [s for s in strategy.approval_before if s not in steps]
    if unknown:
        rules.violate(
            "strategy.approval_before",
            "approval_on_a_step",
            unknown,
            f"approval requested before {unknown}, which are not steps",
            f"use values from {steps}",
        )
    if len(endpoint.variants) > 1:
        rules.violate(
            "strategy.type",
            "managed_single_variant",
            "managed",
            "the managed path adds a second variant and needs the endpoint to have exactly one",
            "use a native blue/green strategy on multi-variant endpoints",
        )


def _check_alarms(
    rules: _Rules,
    request: DeploymentRequest,
    strategy: AllAtOnce | Canary | Linear | Rolling | Managed,
    path: str,
) -> None:
    count = len(request.alarms) + (2 if request.create_recommended_alarms else 0)
    duplicates = sorted({a for a in request.alarms if request.alarms.count(a) > 1})
    if duplicates:
        rules.violate("alarms", "alarms_unique", duplicates, f"alarms listed twice: {duplicates}", "list each once")
    if count > ALARMS_MAX:
        rules.violate(
            "alarms",
            "alarms_max_10",
            count,
            f"{count} rollback alarms (including recommended ones) exceed SageMaker's limit of {ALARMS_MAX}",
            "combine alarms with a composite or metric-math alarm",
        )
    gated = path == "native" and (not isinstance(strategy, AllAtOnce) or strategy.bake_seconds > 0)
    if count == 0 and gated:
        rules.violate(
            "alarms",
            "alarms_required",
            [],
            f"a {strategy.type} rollout without alarms has nothing to watch while baking: SageMaker would never "
            "roll back",
            "name 1-10 CloudWatch alarms or set create_recommended_alarms: true",
        )
    if count == 0 and not gated and path == "native":
        rules.warnings.append("no rollback alarms: a bad model will only be caught by the final reconciliation")


def _check_autoscaling(
    rules: _Rules, request: DeploymentRequest, variant: VariantSnapshot, target_type: str | None, path: str
) -> Literal["none", "kept", "deregister_and_restore"]:
    if variant.autoscaling is None:
        return "none"
    blocking = target_type != variant.instance_type or path == "managed"
    if not blocking:
        rules.warnings.append("autoscaling stays registered; SageMaker pauses scaling while the endpoint updates")
        return "kept"
    if not request.deregister_autoscaling:
        why = "the instance type changes" if target_type != variant.instance_type else "the variant is replaced"
        rules.violate(
            "deregister_autoscaling",
            "autoscaled_variant",
            False,
            f"variant '{variant.name}' is autoscaled and {why}: SageMaker rejects such an UpdateEndpoint",
            "set deregister_autoscaling: true (InferOps deregisters the target, updates with "
            "RetainAllVariantProperties, then registers it again)",
        )
    return "deregister_and_restore"


def _provision_seconds(instance_type: str | None) -> int:
    if instance_type is None:
        return SERVERLESS_PROVISION_SECONDS
    return PROVISION_SECONDS[catalog.get(instance_type).accelerator.kind]


def _safe_provision_seconds(instance_type: str | None) -> int:
    try:
        return _provision_seconds(instance_type)
    except InferOpsError:
        return PROVISION_SECONDS["none"]


class _Timeline:
    """Builds consecutive steps while tracking both fleets and the traffic split."""

    def __init__(self, old: int) -> None:
        self.steps: list[TrafficStep] = []
        self.clock = 0
        self.old, self.new, self.traffic = old, 0, 0.0

    def add(self, action: Any, duration: int, description: str) -> None:
        self.steps.append(
            TrafficStep(
                index=len(self.steps),
                at_seconds=self.clock,
                duration_seconds=duration,
                action=action,
                description=description,
                new_traffic_percent=round(self.traffic, 2),
                old_instances=self.old,
                new_instances=self.new,
            )
        )
        self.clock += duration


def _steps(
    request: DeploymentRequest,
    variant: VariantSnapshot,
    target_type: str | None,
    fleet: int,
    path: str,
) -> list[TrafficStep]:
    strategy = request.strategy
    provision = _safe_provision_seconds(target_type)
    old = variant.instance_count
    line = _Timeline(old)
    bake = strategy.bake_seconds
    if isinstance(strategy, Rolling):
        batch = _instances_of(strategy.batch, fleet)
        done = 0
        while done < fleet:
            size = min(batch, fleet - done)
            line.new += size
            line.add("provision", provision, f"provision a batch of {size} new instance(s)")
            done += size
            line.traffic = 100.0 * done / fleet
            line.add("shift", 0, f"shift {line.traffic:.0f} % of traffic to the new instances")
            line.add("bake", bake, "bake: watch the alarms")
            line.old = max(0, old - round(old * done / fleet))
            line.add("terminate", 0, f"remove old instances ({line.old} left)")
        return line.steps

    line.new = fleet
    line.add("provision", provision, f"provision the new fleet: {fleet} x {target_type or 'serverless'}")
    if path == "managed":
        shares = strategy.steps if isinstance(strategy, Managed) else _managed_shares(strategy, fleet)
        approvals = strategy.approval_before if isinstance(strategy, Managed) else []
        for share in shares:
            if share in approvals:
                line.add("approve", 0, f"wait for an operator to approve {share} %")
            line.traffic = float(share)
            line.add("shift", 0, f"set weights: {share} % to the new variant")
            line.add("bake", bake, "analysis: compare new against old, watch the alarms")
        line.add("terminate", provision // 2, "remove the old variant (UpdateEndpoint to the new config)")
        line.old = 0
        return line.steps

    if isinstance(strategy, Canary):
        canary = _instances_of(strategy.size, fleet)
        line.traffic = 100.0 * canary / fleet
        line.add("shift", 0, f"canary: {canary} instance(s), {line.traffic:.0f} % of traffic, to the new fleet")
        line.add("bake", bake, "canary bake: watch the alarms")
    elif isinstance(strategy, Linear):
        step = _instances_of(strategy.step, fleet)
        enabled = 0
        while enabled + step < fleet:
            enabled += step
            line.traffic = 100.0 * enabled / fleet
            line.add("shift", 0, f"linear step: {line.traffic:.0f} % of traffic to the new fleet")
            line.add("bake", bake, "bake: watch the alarms")
    line.traffic = 100.0
    line.add("shift", 0, "shift all traffic to the new fleet")
    line.add("bake", bake, "final bake: watch the alarms")
    line.add("wait", request.termination_wait_seconds, "termination wait (old fleet kept for instant rollback)")
    line.old = 0
    line.add("terminate", 0, "terminate the old fleet")
    return line.steps


def _managed_shares(strategy: AllAtOnce | Canary | Linear | Rolling, fleet: int) -> list[int]:
    """Canary/linear sizes as weight steps when InferOps shifts traffic itself."""
    if isinstance(strategy, Canary):
        return [round(_percent_of(strategy.size, fleet)), 100]
    if isinstance(strategy, Linear):
        step = max(1, round(_percent_of(strategy.step, fleet)))
        return [*range(step, 100, step), 100]
    return [100]


def _waits(strategy: AllAtOnce | Canary | Linear | Rolling | Managed, termination: int, fleet: int, path: str) -> int:
    """The waits SageMaker counts against MaximumExecutionTimeoutInSeconds."""
    bake = strategy.bake_seconds
    if path == "managed":
        shares = strategy.steps if isinstance(strategy, Managed) else _managed_shares(strategy, fleet)
        return bake * len(shares)
    if isinstance(strategy, Rolling):
        return bake * math.ceil(fleet / _instances_of(strategy.batch, fleet))
    if isinstance(strategy, Canary):
        return 2 * bake + termination
    if isinstance(strategy, Linear):
        step = _instances_of(strategy.step, fleet)
        return bake * math.ceil(fleet / step) + termination
    return bake + termination


def _check_timeout(rules: _Rules, request: DeploymentRequest, waits: int, total: int, path: str) -> int:
    if path == "managed":
        return request.max_execution_timeout_seconds or total + 3600
    if waits >= TIMEOUT_MAX_SECONDS:
        rules.violate(
            "strategy.bake_seconds",
            "waits_within_execution_cap",
            waits,
            f"the waits add up to {waits} s, beyond SageMaker's {TIMEOUT_MAX_SECONDS} s execution cap",
            "shorten the bake or use larger steps",
        )
        return TIMEOUT_MAX_SECONDS
    given = request.max_execution_timeout_seconds
    if given is None:
        wanted = math.ceil(max(total * 1.5, waits + 600) / 60) * 60
        return min(TIMEOUT_MAX_SECONDS, max(TIMEOUT_MIN_SECONDS, wanted))
    rules.within(
        "max_execution_timeout_seconds",
        given,
        TIMEOUT_MIN_SECONDS,
        TIMEOUT_MAX_SECONDS,
        "maximum execution timeout",
    )
    if given <= waits:
        rules.violate(
            "max_execution_timeout_seconds",
            "timeout_exceeds_waits",
            given,
            f"timeout {given} s is not larger than the {waits} s of bakes and termination wait",
            f"use more than {waits} s (the plan estimates {total} s in all), or omit it to let InferOps choose",
        )
    elif given < total:
        rules.warnings.append(
            f"timeout {given} s is shorter than the estimated {total} s rollout including provisioning; "
            "SageMaker rolls back when it runs out"
        )
    return given


def _min_serving(steps: list[TrafficStep]) -> int:
    """Instances taking traffic at the worst moment: a fleet serves while it has a share of the traffic."""
    return min(
        (s.old_instances if s.new_traffic_percent < 100 else 0) + (s.new_instances if s.new_traffic_percent > 0 else 0)
        for s in steps
    )


def _cost(steps: list[TrafficStep], old_type: str | None, new_type: str | None, fleet: int) -> Cost:
    """Instance hours of both fleets at the snapshot's on-demand prices; None where a price is unknown."""
    snapshot = catalog.snapshot()
    old_price, new_price = _hourly(old_type), _hourly(new_type)
    unpriced = sorted({t or "serverless" for t, p in ((old_type, old_price), (new_type, new_price)) if p is None})
    rollout = peak = None
    if old_price is not None and new_price is not None:
        rates = [s.old_instances * old_price + s.new_instances * new_price for s in steps]
        rollout = round(sum(r * s.duration_seconds / 3600 for r, s in zip(rates, steps, strict=True)), 4)
        peak = round(max(rates), 4)
    return Cost(
        serving_hourly_usd=round(new_price * fleet, 4) if new_price is not None else None,
        peak_hourly_usd=peak,
        rollout_usd=rollout,
        price_region=snapshot.region,
        price_as_of=str(snapshot.as_of),
        unpriced_instance_types=unpriced,
    )


def _hourly(instance_type: str | None) -> float | None:
    if instance_type is None:
        return None
    try:
        return catalog.get(instance_type).price_usd_per_hour
    except InferOpsError:
        return None


def _size_config(size: Size) -> dict[str, Any]:
    return {"Type": "CAPACITY_PERCENT" if size.unit == "percent" else "INSTANCE_COUNT", "Value": size.value}


def _deployment_config(
    strategy: AllAtOnce | Canary | Linear | Rolling | Managed,
    request: DeploymentRequest,
    fleet: int,
    timeout: int,
    alarms: list[str],
) -> dict[str, Any]:
    """The exact `DeploymentConfig` for UpdateEndpoint (botocore shape)."""
    config: dict[str, Any] = {}
    if isinstance(strategy, Rolling):
        policy: dict[str, Any] = {
            "MaximumBatchSize": _size_config(strategy.batch),
            "WaitIntervalInSeconds": strategy.bake_seconds,
            "MaximumExecutionTimeoutInSeconds": timeout,
        }
        if strategy.rollback_batch is not None:
            policy["RollbackMaximumBatchSize"] = _size_config(strategy.rollback_batch)
        config["RollingUpdatePolicy"] = policy
    else:
        routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": strategy.bake_seconds}
        if isinstance(strategy, Canary):
            routing = {"Type": "CANARY", "WaitIntervalInSeconds": strategy.bake_seconds}
            routing["CanarySize"] = _size_config(strategy.size)
        elif isinstance(strategy, Linear):
            routing = {"Type": "LINEAR", "WaitIntervalInSeconds": strategy.bake_seconds}
            routing["LinearStepSize"] = _size_config(strategy.step)
        config["BlueGreenUpdatePolicy"] = {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": request.termination_wait_seconds,
            "MaximumExecutionTimeoutInSeconds": timeout,
        }
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return config


def _recommended_alarms(endpoint: str, variant: str, config_name: str) -> list[AlarmSpec]:
    """The guide's two rollback alarms: fleet-wide errors and the new fleet's model latency."""
    return [
        AlarmSpec(
            name=f"inferops-{endpoint}-fleet-errors",
            metric_name="Invocation5XXErrors",
            statistic="Average",
            dimensions={"EndpointName": endpoint, "VariantName": variant},
            period_seconds=600,
            evaluation_periods=2,
            # The guide's example says 1, which an Average of a 0/1-per-request metric never exceeds: 1 % errors.
            threshold=0.01,
            comparison="GreaterThanThreshold",
            treat_missing_data="notBreaching",
        ),
        AlarmSpec(
            name=f"inferops-{endpoint}-new-fleet-latency",
            metric_name="ModelLatency",
            statistic="Average",
            dimensions={"EndpointName": endpoint, "VariantName": variant, "EndpointConfigName": config_name},
            period_seconds=300,
            evaluation_periods=2,
            threshold=100000,
            comparison="GreaterThanThreshold",
            treat_missing_data="notBreaching",
        ),
    ]
