"""Delivery policies: where an approved model package version goes, in which order, how, and when not.

A policy belongs to a model package group. Its stages name an endpoint each and carry a deployment request
template (the body of POST /deployments without `endpoint_name` and `model`: the delivery fills those in with
the endpoint and the approved version) and, optionally, a shadow test template (POST /shadow-tests without the
same two fields) that runs first. A stage may wait for a human before it starts. Freeze windows defer any
stage that would start inside them. Saving a policy checks every stage with the deployment planner against the
endpoint as it is now, so a policy that a rollout would be refused for is refused when it is saved.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from inferops.endpoints import read_endpoint
from inferops.errors import InferOpsError, first_problem
from inferops.model import Model
from inferops.planner import DeploymentRequest, PackageModel, ResourceName, Violation, plan
from inferops.shadow import ShadowTestRequest

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_sagemaker import SageMakerClient

MAX_STAGES = 10
MAX_FREEZE_WINDOWS = 20
DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_FILLED = frozenset({"endpoint_name", "model"})
"""What a delivery fills into a stage's templates: the stage's endpoint and the approved version."""
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_PLACEHOLDER_PACKAGE = "arn:aws:sagemaker:us-east-1:000000000000:model-package/policy-check/1"

Day = Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]
GroupName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")]


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeeklyFreeze(_Strict):
    """Every week on `days`, from `start` to `end` (UTC, HH:MM); an `end` at or before `start` ends the next day."""

    kind: Literal["weekly"] = "weekly"
    days: list[Day] = Field(min_length=1, max_length=7, description="the days a window starts on")
    start: str = Field(description="HH:MM, UTC")
    end: str = Field(description="HH:MM, UTC; at or before `start`: the next day")
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"must be HH:MM (00:00 to 23:59), got {value!r}")
        return value

    def covering(self, at: datetime) -> datetime | None:
        """The end of the occurrence containing `at`, or None when `at` is outside every occurrence."""
        start_h, start_m = (int(p) for p in self.start.split(":"))
        end_h, end_m = (int(p) for p in self.end.split(":"))
        length = timedelta(hours=end_h - start_h, minutes=end_m - start_m)
        if length <= timedelta(0):
            length += timedelta(days=1)
        for back in (1, 0):  # an occurrence lasts less than a day or exactly one: it started today or yesterday
            day = (at - timedelta(days=back)).date()
            if DAYS[day.weekday()] not in self.days:
                continue
            begins = datetime(day.year, day.month, day.day, start_h, start_m, tzinfo=UTC)
            if begins <= at < begins + length:
                return begins + length
        return None


class OnceFreeze(_Strict):
    """One period, e.g. a holiday or a launch: from `starts_at` to `ends_at`."""

    kind: Literal["once"] = "once"
    starts_at: datetime
    ends_at: datetime
    reason: Annotated[str, StringConstraints(max_length=200)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> OnceFreeze:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a time zone (e.g. 2026-12-24T00:00:00Z)")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    def covering(self, at: datetime) -> datetime | None:
        return self.ends_at.astimezone(UTC) if self.starts_at <= at < self.ends_at else None


FreezeWindow = Annotated[WeeklyFreeze | OnceFreeze, Field(discriminator="kind")]


def frozen_until(windows: list[WeeklyFreeze | OnceFreeze], at: datetime) -> datetime | None:
    """When the freeze that covers `at` lifts (following windows that start where another ends), or None."""
    until: datetime | None = None
    now = at.astimezone(UTC)
    for _ in range(len(windows) * 8 + 1):  # back-to-back windows: each hop moves past one occurrence
        ends = [end for end in (w.covering(now) for w in windows) if end is not None]
        if not ends:
            return until
        until = now = max(ends)
    return until


def _template(value: dict[str, Any], request: type[BaseModel], what: str) -> dict[str, Any]:
    """Check a template as the request it becomes (with a placeholder endpoint and model) and keep it whole."""
    filled = sorted(_FILLED & value.keys())
    if filled:
        raise ValueError(f"{what} must not set {', '.join(filled)}: the delivery fills them in")
    try:
        request.model_validate(
            {
                **value,
                "endpoint_name": "policy-check",
                "model": {"model_package_arn": _PLACEHOLDER_PACKAGE, "source": "package"},
            }
        )
    except ValidationError as error:
        field, message = first_problem(error)
        raise ValueError(f"{what}.{field}: {message}") from None
    return value


class Stage(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")] = Field(
        description="e.g. staging, production (lower case, digits, '-')"
    )
    endpoint_name: ResourceName
    deployment: dict[str, Any] = Field(
        default_factory=dict,
        description="POST /deployments without endpoint_name and model (strategy, bakes, alarms, analysis...)",
    )
    shadow_test: dict[str, Any] | None = Field(
        default=None,
        description="POST /shadow-tests without endpoint_name and model: runs first; a promoting test ends the "
        "stage, a passing test that keeps production is followed by the deployment, any other ending stops",
    )
    approval: bool = Field(default=False, description="a human approves (POST /deliveries/{id}/approve) first")

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _template(value, DeploymentRequest, "deployment")

    @field_validator("shadow_test")
    @classmethod
    def _shadow_test(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _template(value, ShadowTestRequest, "shadow_test")

    def deployment_request(self, model_package_arn: str) -> DeploymentRequest:
        model = PackageModel(model_package_arn=model_package_arn)
        return DeploymentRequest.model_validate(
            {**self.deployment, "endpoint_name": self.endpoint_name, "model": model}
        )

    def shadow_test_request(self, model_package_arn: str) -> ShadowTestRequest | None:
        if self.shadow_test is None:
            return None
        model = {"source": "package", "model_package_arn": model_package_arn}
        return ShadowTestRequest.model_validate(
            {**self.shadow_test, "endpoint_name": self.endpoint_name, "model": model}
        )


class DeliveryPolicy(_Strict):
    """PUT /delivery-policies/{group}."""

    stages: list[Stage] = Field(min_length=1, max_length=MAX_STAGES, description="in order; the last is production")
    freeze_windows: list[FreezeWindow] = Field(default_factory=list, max_length=MAX_FREEZE_WINDOWS)
    approval_timeout_hours: float = Field(default=168.0, gt=0, le=720, description="a stage's approval wait")
    description: Annotated[str, StringConstraints(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> DeliveryPolicy:
        for attribute in ("name", "endpoint_name"):
            seen: set[str] = set()
            for stage in self.stages:
                value = getattr(stage, attribute)
                if value in seen:
                    raise ValueError(f"two stages have the {attribute} {value!r}: each stage needs its own")
                seen.add(value)
        return self


class PolicyRefused(InferOpsError):
    """A stage would be refused for its endpoint: every violation, each naming the stage's endpoint and rule."""

    status_code = 422

    def __init__(self, violations: list[Violation]) -> None:
        first = violations[0]
        super().__init__(f"{len(violations)} problem(s); {first.field}: {first.message}", first.field)
        self.violations = violations


def check(
    policy: DeliveryPolicy, sagemaker: SageMakerClient, autoscaling: ApplicationAutoScalingClient
) -> list[Violation]:
    """Plan every stage's deployment against its endpoint as it is now (read-only); all violations, in order.

    The model is not known yet (it is the next approved version), so the model's own checks wait for the
    delivery, which plans again with the version; everything about the endpoint and the strategy is checked.
    """
    found: list[Violation] = []
    for index, stage in enumerate(policy.stages):
        where = f"stages[{index}]"
        try:
            endpoint = read_endpoint(stage.endpoint_name, sagemaker, autoscaling)
        except InferOpsError as error:
            found.append(
                Violation(
                    field=f"{where}.endpoint_name",
                    rule="endpoint-exists",
                    value=stage.endpoint_name,
                    message=f"stage {stage.name}: {error.message}",
                    fix="create the endpoint first, or name an existing one",
                )
            )
            continue
        result = plan(stage.deployment_request(_PLACEHOLDER_PACKAGE), endpoint, None)
        for violation in result.violations:
            found.append(
                violation.model_copy(
                    update={
                        "field": f"{where}.deployment.{violation.field}",
                        "message": f"stage {stage.name}, endpoint {stage.endpoint_name}: {violation.message}",
                    }
                )
            )
    return found
