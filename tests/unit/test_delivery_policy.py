"""Delivery policies: freeze windows, template validation, and the planner's check of every stage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from inferops import delivery_policy
from inferops.delivery_policy import DeliveryPolicy, OnceFreeze, Stage, WeeklyFreeze, check, frozen_until
from inferops.endpoints import EndpointSnapshot, VariantSnapshot
from inferops.errors import NotFound

ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/fraud-scorer/7"
FRIDAY_18H = datetime(2026, 1, 9, 18, 0, tzinfo=UTC)  # 2026-01-09 is a Friday


def stage(name: str = "staging", endpoint: str = "fraud-staging", **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoint_name": endpoint, "deployment": {"strategy": {"type": "canary"}}, **extra}


# ------------------------------------------------------------------------------------------------ freeze windows
def test_evening_windows_span_midnight() -> None:
    evenings = WeeklyFreeze(days=["FRI", "SAT", "SUN"], start="16:00", end="08:00")
    assert frozen_until([evenings], FRIDAY_18H) == datetime(2026, 1, 10, 8, 0, tzinfo=UTC)  # Saturday 08:00
    assert frozen_until([evenings], FRIDAY_18H - timedelta(hours=3)) is None  # Friday 15:00
    assert frozen_until([evenings], datetime(2026, 1, 10, 8, 0, tzinfo=UTC)) is None  # the end is outside


def test_back_to_back_windows_chain_into_one_freeze() -> None:
    friday = WeeklyFreeze(days=["FRI"], start="16:00", end="00:00")
    weekend = WeeklyFreeze(days=["SAT", "SUN"], start="00:00", end="00:00")  # whole days
    monday = WeeklyFreeze(days=["MON"], start="00:00", end="08:00")
    assert frozen_until([friday, weekend, monday], FRIDAY_18H) == datetime(2026, 1, 12, 8, 0, tzinfo=UTC)


def test_a_window_that_started_yesterday_still_covers_the_early_hours() -> None:
    nights = WeeklyFreeze(days=["TUE"], start="22:00", end="06:00")
    wednesday_3h = datetime(2026, 1, 7, 3, 0, tzinfo=UTC)
    assert frozen_until([nights], wednesday_3h) == datetime(2026, 1, 7, 6, 0, tzinfo=UTC)
    assert frozen_until([nights], wednesday_3h + timedelta(days=1)) is None  # Thursday: not a start day


def test_one_off_windows_chain_with_weekly_ones() -> None:
    holiday = OnceFreeze(
        starts_at=datetime(2026, 1, 9, 12, 0, tzinfo=UTC), ends_at=datetime(2026, 1, 9, 17, 0, tzinfo=UTC)
    )
    evening = WeeklyFreeze(days=["FRI"], start="16:30", end="20:00")
    assert frozen_until([holiday, evening], datetime(2026, 1, 9, 13, 0, tzinfo=UTC)) == datetime(
        2026, 1, 9, 20, 0, tzinfo=UTC
    )
    assert frozen_until([], FRIDAY_18H) is None


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"kind": "weekly", "days": ["MON"], "start": "24:00", "end": "01:00"}, "HH:MM"),
        ({"kind": "weekly", "days": [], "start": "10:00", "end": "11:00"}, "at least 1"),
        ({"kind": "weekly", "days": ["MONDAY"], "start": "10:00", "end": "11:00"}, "MON"),
        ({"kind": "once", "starts_at": "2026-01-09T12:00:00Z", "ends_at": "2026-01-09T11:00:00Z"}, "after"),
        ({"kind": "once", "starts_at": "2026-01-09T12:00:00", "ends_at": "2026-01-09T13:00:00"}, "time zone"),
    ],
)
def test_bad_freeze_windows_are_refused(window: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeliveryPolicy.model_validate({"stages": [stage()], "freeze_windows": [window]})


# ------------------------------------------------------------------------------------------------ templates
def test_templates_become_requests_for_the_stage_and_the_version() -> None:
    spec = Stage.model_validate(
        stage(shadow_test={"role_arn": "arn:aws:iam::123456789012:role/Shadow", "action": "discard"})
    )
    deployment = spec.deployment_request(ARN)
    assert (deployment.endpoint_name, deployment.model.source, deployment.strategy.type) == (
        "fraud-staging",
        "package",
        "canary",
    )
    shadow = spec.shadow_test_request(ARN)
    assert shadow is not None and shadow.endpoint_name == "fraud-staging" and shadow.action == "discard"
    assert Stage.model_validate(stage()).shadow_test_request(ARN) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"deployment": {"endpoint_name": "other"}}, "must not set endpoint_name"),
        ({"deployment": {"model": {"source": "existing", "model_name": "m"}}}, "must not set model"),
        ({"deployment": {"strategy": {"type": "canary", "size": {"value": 0}}}}, r"deployment\.strategy\.canary"),
        ({"deployment": {"strategy": {"type": "teleport"}}}, r"deployment\.strategy"),
        ({"shadow_test": {"action": "promote"}}, r"shadow_test\.role_arn"),
        ({"name": "Prod!"}, "name"),
    ],
)
def test_bad_templates_name_the_field(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeliveryPolicy.model_validate({"stages": [{**stage(), **override}]})


def test_stages_need_their_own_names_and_endpoints() -> None:
    with pytest.raises(ValidationError, match="name 'staging'"):
        DeliveryPolicy.model_validate({"stages": [stage(), stage(endpoint="fraud-prod")]})
    with pytest.raises(ValidationError, match="endpoint_name 'fraud-staging'"):
        DeliveryPolicy.model_validate({"stages": [stage(), stage(name="production")]})
    with pytest.raises(ValidationError, match="at least 1"):
        DeliveryPolicy.model_validate({"stages": []})


# ------------------------------------------------------------------------------------------------ planner check
def _endpoint(name: str, *, serverless: bool = False) -> EndpointSnapshot:
    variant = VariantSnapshot(
        name="AllTraffic",
        model_name=f"{name}-v1",
        instance_type=None if serverless else "ml.c7g.large",
        instance_count=0 if serverless else 4,
        serverless=serverless,
    )
    return EndpointSnapshot(name=name, status="InService", config_name=f"{name}-v1", variants=(variant,))


def test_check_names_the_stage_its_endpoint_and_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = {"fraud-staging": _endpoint("fraud-staging"), "fraud-prod": _endpoint("fraud-prod", serverless=True)}

    def read(name: str, sagemaker: Any, autoscaling: Any) -> EndpointSnapshot:
        if name not in endpoints:
            raise NotFound(f"endpoint '{name}' does not exist", "endpoint_name")
        return endpoints[name]

    monkeypatch.setattr(delivery_policy, "read_endpoint", read)
    rolling = {"strategy": {"type": "rolling"}, "alarms": ["fraud-errors"]}
    policy = DeliveryPolicy.model_validate(
        {
            "stages": [
                {**stage(), "deployment": {"strategy": {"type": "all_at_once"}, "alarms": ["fraud-errors"]}},
                {"name": "production", "endpoint_name": "fraud-prod", "deployment": rolling},
                {"name": "dr", "endpoint_name": "fraud-dr"},
            ]
        }
    )
    found = check(policy, None, None)  # type: ignore[arg-type]

    assert [v.field.split(".")[0] for v in found] == ["stages[1]"] * (len(found) - 1) + ["stages[2]"]
    assert any(v.field.startswith("stages[1].deployment.strategy") for v in found)
    assert all("endpoint fraud-prod" in v.message for v in found[:-1])
    assert found[-1].rule == "endpoint-exists" and "fraud-dr" in found[-1].message
