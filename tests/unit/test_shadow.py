"""Shadow tests' eligibility, plan and scheduling (pure: no AWS)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from inferops import shadow
from inferops.endpoints import EndpointSnapshot, ModelCheck, VariantSnapshot
from inferops.shadow import (
    MAX_DURATION_SECONDS,
    Facts,
    ShadowTestRequest,
    check,
    schedule_phases,
    shadow_variant_name,
)
from inferops.shadow_judge import storable

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()
ROLE = "arn:aws:iam::123456789012:role/SageMakerExperiments"


def request(**extra: Any) -> ShadowTestRequest:
    return ShadowTestRequest.model_validate(
        {
            "endpoint_name": "fraud-scorer",
            "model": {"source": "existing", "model_name": "fraud-v2"},
            "role_arn": ROLE,
            **extra,
        }
    )


def variant(**extra: Any) -> VariantSnapshot:
    fields: dict[str, Any] = {
        "name": "AllTraffic",
        "model_name": "fraud-v1",
        "instance_type": "ml.g5.xlarge",
        "instance_count": 2,
    }
    return VariantSnapshot(**{**fields, **extra})


def facts(*variants: VariantSnapshot, **extra: Any) -> Facts:
    endpoint_fields = {k: extra.pop(k) for k in ("status", "is_async", "shadow_variant_names") if k in extra}
    endpoint = EndpointSnapshot(
        name="fraud-scorer",
        status=endpoint_fields.get("status", "InService"),
        config_name="fraud-v1",
        is_async=endpoint_fields.get("is_async", False),
        variants=variants or (variant(),),
        shadow_variant_names=endpoint_fields.get("shadow_variant_names", ()),
    )
    return Facts(endpoint=endpoint, candidate=extra.pop("candidate", ModelCheck(found=True)), **extra)


def rules(result: shadow.ShadowPlanResult) -> set[str]:
    return {v.rule for v in result.violations}


# ---------------------------------------------------------------------- the plan
def test_an_eligible_endpoint_gets_a_plan_with_production_defaults() -> None:
    result = check(request(sampling_steps=[10, 50, 100], duration_hours=24), facts(), now=NOW, operation_id="op-1-abcd")
    assert result.ok and result.violations == []
    plan = result.plan
    assert plan is not None
    assert (plan.production_variant, plan.shadow_variant) == ("AllTraffic", "AllTraffic-shadow")
    assert (plan.shadow_instance_type, plan.shadow_instance_count) == ("ml.g5.xlarge", 2)  # same as production
    assert plan.experiment_name == "fraud-scorer-shadow-abcd"
    assert [p.sampling_percent for p in plan.phases] == [10, 50, 100]
    assert plan.interval_seconds == 900 and sum(p.intervals for p in plan.phases) == 94
    assert plan.starts_at.timestamp() == NOW + shadow.START_SLACK_SECONDS
    assert (plan.ends_at - plan.starts_at).total_seconds() == 24 * 3600
    assert plan.analysis_ends_at.timestamp() == plan.ends_at.timestamp() - shadow.DECISION_MARGIN_SECONDS
    assert sum(p.seconds for p in plan.phases) <= (plan.analysis_ends_at - plan.running_at).total_seconds()
    assert plan.shadow_hourly_usd is not None and plan.shadow_total_usd == pytest.approx(
        plan.shadow_hourly_usd * 24, 0.01
    )
    assert result.warnings == []


def test_a_different_shadow_fleet_is_planned_with_a_warning() -> None:
    result = check(request(instance_type="ml.g6.xlarge", instance_count=1), facts(), now=NOW)
    assert result.plan is not None
    assert (result.plan.shadow_instance_type, result.plan.shadow_instance_count) == ("ml.g6.xlarge", 1)
    assert any("differs from production" in w for w in result.warnings)


def test_a_month_at_15_minutes_judges_every_interval() -> None:
    result = check(request(duration_hours=720), facts(), now=NOW)
    assert result.plan is not None
    assert sum(p.intervals for p in result.plan.phases) == 2878  # each judged on its own; the flow waits per phase
    assert [p.seconds for p in result.plan.phases] == [p.intervals * 900 for p in result.plan.phases]
    assert not any("interval" in w for w in result.warnings)  # no later early stop for a long test


@pytest.mark.parametrize(
    ("seconds", "interval", "steps", "expected"),
    [
        (3600, 600, [100], [6]),
        (3600, 600, [10, 50, 100], [2, 2, 2]),
        (3700, 600, [10, 100], [3, 3]),
        (7 * 600 + 599, 600, [10, 50, 100], [2, 2, 3]),  # the last phase (the one judged for promotion) is longest
        (30 * 86400, 900, [10, 50, 100], [960, 960, 960]),
        (600 * 2, 600, [10, 50, 100], None),  # fewer intervals than phases
    ],
)
def test_schedule_phases(seconds: float, interval: int, steps: list[int], expected: list[int] | None) -> None:
    phases = schedule_phases(seconds, interval, steps)
    if expected is None:
        assert phases is None
        return
    assert phases is not None
    assert [p.intervals for p in phases] == expected
    assert [p.seconds for p in phases] == [p.intervals * interval for p in phases]
    assert sum(p.seconds for p in phases) <= seconds


def test_names() -> None:
    assert shadow_variant_name("AllTraffic") == "AllTraffic-shadow"
    assert shadow_variant_name("AllTraffic-shadow") == "AllTraffic"  # a promoted shadow's successor
    assert len(shadow_variant_name("v" * 63)) <= 63
    name = shadow.experiment_name("e" * 63, "op-20260105090000-0123abcd")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,119}", name) and name.endswith("-shadow-0123abcd")


# ---------------------------------------------------------------------- eligibility
@pytest.mark.parametrize(
    ("endpoint", "rule"),
    [
        (facts(variant(), variant(name="B")), "single_production_variant"),
        (facts(variant(serverless=True, instance_type=None)), "not_serverless"),
        (facts(is_async=True), "not_async"),
        (facts(variant(container_count=3)), "not_multi_container"),
        (facts(production_modes=("MultiModel",)), "not_multi_model"),
        (facts(variant(instance_type="ml.inf1.xlarge")), "not_inf1"),
        (facts(variant(marketplace=True)), "not_marketplace"),
        (facts(variant(model_name=None)), "not_inference_components"),
        (facts(shadow_variant_names=("old-shadow",)), "no_existing_shadow"),
        (facts(status="Updating"), "endpoint_in_service"),
        (facts(candidate=ModelCheck(found=False)), "model_exists"),
        (facts(candidate=ModelCheck(found=True, marketplace=True)), "not_marketplace"),
        (facts(missing_alarms=("gone",)), "alarm_exists"),
    ],
)
def test_an_ineligible_endpoint_names_the_rule(endpoint: Facts, rule: str) -> None:
    result = check(request(), endpoint, now=NOW)
    assert not result.ok and result.plan is None
    assert rule in rules(result), result.violations
    assert all(v.fix and v.message and v.field for v in result.violations)


@pytest.mark.parametrize(
    ("extra", "rule", "field"),
    [
        ({"duration_hours": 0.5}, "duration_range", "duration_hours"),
        ({"duration_hours": 721}, "duration_range", "duration_hours"),
        ({"sampling_steps": [0]}, "sampling_range", "sampling_steps.0"),
        ({"sampling_steps": [50, 101]}, "sampling_range", "sampling_steps.1"),
        ({"sampling_steps": [50, 10]}, "sampling_ramps_up", "sampling_steps"),
        ({"sampling_steps": [10, 50], "action": "promote"}, "promotion_needs_full_sampling", "sampling_steps"),
        ({"analysis_interval_minutes": 2}, "analysis_interval_range", "analysis_interval_minutes"),
        ({"instance_type": "ml.inf1.2xlarge"}, "not_inf1", "instance_type"),
        ({"instance_type": "ml.nope.xlarge"}, "instance_type_known", "instance_type"),
        ({"start_time": "2026-01-01T00:00:00Z"}, "start_time_future", "start_time"),
        ({"shadow_variant_name": "AllTraffic"}, "distinct_variant_names", "shadow_variant_name"),
        ({"guard_alarms": [f"a{i}" for i in range(11)]}, "guard_alarms_count", "guard_alarms"),
        (
            {"duration_hours": 1, "sampling_steps": [1, 2, 3, 4, 100], "analysis_interval_minutes": 15},
            "phases_fit_duration",
            "duration_hours",
        ),
    ],
)
def test_request_rules(extra: dict[str, Any], rule: str, field: str) -> None:
    result = check(request(**extra), facts(), now=NOW)
    matching = [v for v in result.violations if v.rule == rule]
    assert matching and matching[0].field == field, result.violations


def test_every_violation_is_reported_at_once() -> None:
    result = check(
        request(sampling_steps=[0, 50], duration_hours=1000, action="promote"),
        facts(variant(), variant(name="B"), is_async=True),
        now=NOW,
    )
    assert {"single_production_variant", "not_async", "sampling_range", "duration_range"} <= rules(result)
    assert "promotion_needs_full_sampling" in rules(result)


def test_an_unapproved_package_cannot_be_promoted_but_may_be_shadowed() -> None:
    package = {"source": "package", "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/f/3"}
    pending = facts(candidate=ModelCheck(found=True, approval_status="PendingManualApproval"))
    assert "package_approved" in rules(check(request(model=package, action="promote"), pending, now=NOW))
    assert check(request(model=package, action="approval"), pending, now=NOW).ok


def test_a_scheduled_start_moves_the_whole_schedule() -> None:
    later = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
    result = check(request(start_time=later.isoformat(), duration_hours=2), facts(), now=NOW)
    assert result.plan is not None
    assert result.plan.starts_at == later
    assert result.plan.ends_at.timestamp() == later.timestamp() + 7200


def test_a_thirty_day_approval_window_is_shortened_with_a_warning() -> None:
    result = check(request(duration_hours=MAX_DURATION_SECONDS / 3600), facts(), now=NOW)
    assert any("approval window" in w for w in result.warnings)


# ---------------------------------------------------------------------- helpers of the flow
def test_the_promotion_gate_needs_100_percent_throughout_the_last_phase() -> None:
    history = [{"at": 0, "percent": 10}, {"at": 100, "percent": 100}]
    assert shadow.full_sampling_since({"sampling_history": history}, 100)
    assert shadow.full_sampling_since({"sampling_history": history}, 150)  # at 100 % since before the phase
    lowered = [*history, {"at": 200, "percent": 80}]
    assert not shadow.full_sampling_since({"sampling_history": lowered}, 100)
    assert not shadow.full_sampling_since({"sampling_history": history}, 50)
    assert not shadow.full_sampling_since({}, 0)


def test_storable_keeps_what_dynamodb_can_hold() -> None:
    assert storable({"p": 1e-300, "x": [math.inf, 0.5, -2e-120], "s": "x"}) == {
        "p": 0.0,
        "x": [None, 0.5, 0.0],
        "s": "x",
    }
