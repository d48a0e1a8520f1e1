"""Pre-flight rules and plans: each SageMaker rule refuses what it should, with a field and a fix."""

from __future__ import annotations

from typing import Any

import pytest

from inferops import catalog
from inferops.endpoints import EndpointSnapshot, ModelCheck, ScalingTarget, VariantSnapshot
from inferops.planner import DeploymentRequest, PlanResult, plan


def endpoint(
    instance_type: str | None = "ml.g5.xlarge",
    count: int = 4,
    *,
    variants: int = 1,
    status: str = "InService",
    serverless: bool = False,
    marketplace: bool = False,
    autoscaled: bool = False,
    model_name: str | None = "fraud-v1",
) -> EndpointSnapshot:
    return EndpointSnapshot(
        name="fraud-scorer",
        status=status,
        config_name="fraud-scorer-config-v1",
        variants=tuple(
            VariantSnapshot(
                name="AllTraffic" if i == 0 else f"Variant{i}",
                model_name=model_name,
                instance_type=None if serverless else instance_type,
                instance_count=0 if serverless else count,
                serverless=serverless,
                marketplace=marketplace,
                autoscaling=ScalingTarget(min_capacity=2, max_capacity=8) if autoscaled else None,
            )
            for i in range(variants)
        ),
    )


def request(**overrides: Any) -> DeploymentRequest:
    body: dict[str, Any] = {
        "endpoint_name": "fraud-scorer",
        "model": {"source": "existing", "model_name": "fraud-v2"},
        "strategy": {"type": "canary", "size": {"unit": "percent", "value": 25}, "bake_seconds": 600},
        "alarms": ["fraud-5xx"],
    }
    body.update(overrides)
    if overrides.get("variant_name") is None and "variant_name" in overrides:
        body.pop("variant_name")
    return DeploymentRequest.model_validate(body)


def violated(result: PlanResult) -> dict[str, str]:
    assert not result.ok
    assert result.plan is None
    return {v.rule: v.field for v in result.violations}


def test_canary_plan_sends_the_exact_deployment_config() -> None:
    result = plan(request(create_recommended_alarms=True, termination_wait_seconds=300), endpoint())

    assert result.ok, result.violations
    assert result.plan is not None
    the_plan = result.plan
    assert the_plan.path == "native"
    config = the_plan.deployment_config
    assert config is not None
    policy = config["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 600,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 25},
    }
    assert policy["TerminationWaitInSeconds"] == 300
    assert 600 <= policy["MaximumExecutionTimeoutInSeconds"] <= 28800
    assert policy["MaximumExecutionTimeoutInSeconds"] > the_plan.waits_seconds == 2 * 600 + 300
    assert [a["AlarmName"] for a in config["AutoRollbackConfiguration"]["Alarms"]] == [
        "fraud-5xx",
        "inferops-fraud-scorer-fleet-errors",
        "inferops-fraud-scorer-new-fleet-latency",
    ]
    latency = the_plan.recommended_alarms[1]
    assert latency.dimensions["EndpointConfigName"] == the_plan.new_endpoint_config_name
    assert (latency.metric_name, latency.period_seconds, latency.threshold) == ("ModelLatency", 300, 100000)
    assert [s.action for s in the_plan.steps] == [
        "provision",
        "shift",
        "bake",
        "shift",
        "bake",
        "wait",
        "terminate",
    ]
    assert the_plan.steps[1].new_traffic_percent == 25.0
    assert the_plan.peak_instances == 8
    assert the_plan.min_serving_instances == 4
    starts = [s.at_seconds for s in the_plan.steps]
    assert starts == sorted(starts)
    assert the_plan.total_seconds == the_plan.steps[-1].at_seconds


def test_plan_cost_comes_from_catalog_prices() -> None:
    result = plan(request(), endpoint("ml.g5.xlarge", 4))
    assert result.plan is not None
    cost = result.plan.cost
    price = catalog.get("ml.g5.xlarge").price_usd_per_hour
    if price is None:
        assert cost.rollout_usd is None
        assert cost.unpriced_instance_types == ["ml.g5.xlarge"]
    else:
        expected = sum(
            (s.old_instances + s.new_instances) * price * s.duration_seconds / 3600 for s in result.plan.steps
        )
        assert cost.rollout_usd == pytest.approx(expected, abs=1e-3)
        assert cost.peak_hourly_usd == pytest.approx(8 * price, abs=1e-3)
        assert cost.serving_hourly_usd == pytest.approx(4 * price, abs=1e-3)


def test_config_name_is_stable_for_the_same_request() -> None:
    first = plan(request(), endpoint()).plan
    again = plan(request(), endpoint()).plan
    other = plan(request(instance_count=6), endpoint()).plan
    assert first is not None and again is not None and other is not None
    assert first.new_endpoint_config_name == again.new_endpoint_config_name
    assert first.new_endpoint_config_name != other.new_endpoint_config_name
    assert len(first.new_endpoint_config_name) <= 63


@pytest.mark.parametrize(
    ("strategy", "rule", "field"),
    [
        ({"type": "canary", "size": {"value": 60}}, "canary_size_range", "strategy.size"),
        ({"type": "canary", "size": {"unit": "instances", "value": 3}}, "canary_size_range", "strategy.size"),
        ({"type": "linear", "step": {"value": 5}}, "linear_step_range", "strategy.step"),
        ({"type": "linear", "step": {"value": 60}}, "linear_step_range", "strategy.step"),
        ({"type": "rolling", "batch": {"value": 75}}, "rolling_batch_range", "strategy.batch"),
        ({"type": "canary", "bake_seconds": 3601}, "bake_seconds_range", "strategy.bake_seconds"),
    ],
)
def test_sizes_and_waits_outside_sagemaker_bounds_are_refused(strategy: dict[str, Any], rule: str, field: str) -> None:
    result = plan(request(strategy=strategy), endpoint(count=4))
    assert violated(result)[rule] == field
    violation = next(v for v in result.violations if v.rule == rule)
    assert violation.fix
    assert field.rsplit(".", 1)[-1].split("_", maxsplit=1)[0] in violation.message or "%" in violation.message


def test_termination_wait_and_timeout_bounds() -> None:
    assert "termination_wait_seconds_range" in violated(plan(request(termination_wait_seconds=4000), endpoint()))
    assert "max_execution_timeout_seconds_range" in violated(
        plan(request(max_execution_timeout_seconds=500), endpoint())
    )
    rules = violated(plan(request(max_execution_timeout_seconds=1100), endpoint()))
    assert rules["timeout_exceeds_waits"] == "max_execution_timeout_seconds"


def test_linear_waits_add_up_past_the_eight_hour_cap() -> None:
    result = plan(request(strategy={"type": "linear", "step": {"value": 10}, "bake_seconds": 3600}), endpoint(count=10))
    assert violated(result)["waits_within_execution_cap"] == "strategy.bake_seconds"


def test_linear_steps_are_whole_instances_of_the_new_fleet() -> None:
    result = plan(request(strategy={"type": "linear", "step": {"value": 20}, "bake_seconds": 60}), endpoint(count=10))
    assert result.plan is not None
    shifts = [s.new_traffic_percent for s in result.plan.steps if s.action == "shift"]
    assert shifts == [20.0, 40.0, 60.0, 80.0, 100.0]
    assert result.plan.waits_seconds == 5 * 60


def test_rolling_exclusions() -> None:
    rolling = {"type": "rolling", "batch": {"value": 25}}
    assert (
        violated(plan(request(strategy=rolling, variant_name="AllTraffic"), endpoint(variants=2)))[
            "rolling_single_variant"
        ]
        == "strategy.type"
    )
    assert "rolling_not_serverless" in violated(plan(request(strategy=rolling), endpoint(serverless=True)))
    assert "rolling_guardrails_supported" in violated(plan(request(strategy=rolling), endpoint("ml.inf1.xlarge")))


def test_rolling_plan_keeps_capacity_and_batches_whole_instances() -> None:
    result = plan(request(strategy={"type": "rolling", "batch": {"value": 25}, "bake_seconds": 120}), endpoint(count=8))
    assert result.plan is not None
    config = result.plan.deployment_config
    assert config is not None
    assert config["RollingUpdatePolicy"]["MaximumBatchSize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}
    assert result.plan.peak_instances == 8 + 2
    assert result.plan.min_serving_instances >= 8
    assert sum(1 for s in result.plan.steps if s.action == "provision") == 4


@pytest.mark.parametrize("excluded", [{"instance_type": "ml.inf1.xlarge"}, {"marketplace": True}])
def test_guardrail_exclusions_move_canary_to_the_managed_path(excluded: dict[str, Any]) -> None:
    result = plan(request(), endpoint(**excluded))
    assert result.ok, result.violations
    assert result.plan is not None
    assert result.plan.path == "managed"
    assert result.plan.deployment_config is None
    assert any("ignores deployment guardrails" in w for w in result.warnings)
    assert [s.new_traffic_percent for s in result.plan.steps if s.action == "shift"] == [25.0, 100.0]


def test_alarms_are_required_for_gated_rollouts_and_capped_at_ten() -> None:
    assert violated(plan(request(alarms=[]), endpoint()))["alarms_required"] == "alarms"
    assert "alarms_max_10" in violated(
        plan(request(alarms=[f"a{i}" for i in range(9)], create_recommended_alarms=True), endpoint())
    )
    assert "alarms_unique" in violated(plan(request(alarms=["x", "x"]), endpoint()))
    plain = plan(request(alarms=[], strategy={"type": "all_at_once"}), endpoint())
    assert plain.ok
    assert plain.plan is not None and plain.plan.deployment_config is not None
    assert "AutoRollbackConfiguration" not in plain.plan.deployment_config


def test_autoscaled_variant_needs_deregistering_for_an_instance_type_change() -> None:
    refused = plan(request(instance_type="ml.g6.xlarge"), endpoint(autoscaled=True))
    assert violated(refused)["autoscaled_variant"] == "deregister_autoscaling"

    allowed = plan(request(instance_type="ml.g6.xlarge", deregister_autoscaling=True), endpoint(autoscaled=True))
    assert allowed.plan is not None and allowed.plan.autoscaling == "deregister_and_restore"

    model_only = plan(request(), endpoint(autoscaled=True))
    assert model_only.plan is not None and model_only.plan.autoscaling == "kept"


def test_model_must_fit_accelerator_memory() -> None:
    too_big = plan(request(model_size_gb=70), endpoint("ml.g5.xlarge"))
    violation = next(v for v in too_big.violations if v.rule == "model_fits_accelerator_memory")
    assert violation.field == "model_size_gb"
    assert "A10G" in violation.message
    assert "instance types that fit" in violation.fix

    sharded = plan(request(model_size_gb=70, tensor_parallel_degree=8), endpoint("ml.p4d.24xlarge", 2))
    assert sharded.ok, sharded.violations

    too_wide = plan(request(model_size_gb=70, tensor_parallel_degree=16), endpoint("ml.p4d.24xlarge", 2))
    assert violated(too_wide)["tensor_parallel_fits_accelerators"] == "tensor_parallel_degree"


def test_cpu_instances_check_host_memory() -> None:
    assert "model_fits_memory" in violated(plan(request(model_size_gb=50), endpoint("ml.c5.large")))
    assert plan(request(model_size_gb=1), endpoint("ml.c5.large")).ok


def test_model_package_must_be_approved() -> None:
    package = {
        "source": "package",
        "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/fraud/7",
    }
    pending = plan(request(model=package), endpoint(), ModelCheck(found=True, approval_status="PendingManualApproval"))
    assert violated(pending)["package_approved"] == "model.model_package_arn"
    approved = plan(request(model=package), endpoint(), ModelCheck(found=True, approval_status="Approved"))
    assert approved.ok
    missing = plan(request(model=package), endpoint(), ModelCheck(found=False))
    assert "package_exists" in violated(missing)


def test_unknown_instance_type_names_close_matches() -> None:
    result = plan(request(instance_type="ml.g5.xlarg"), endpoint())
    violation = next(v for v in result.violations if v.rule == "instance_type_known")
    assert "ml.g5.xlarge" in violation.message


def test_endpoint_state_and_shape_rules() -> None:
    assert violated(plan(request(), endpoint(status="Updating")))["endpoint_in_service"] == "endpoint_name"
    assert "no_inference_components" in violated(plan(request(), endpoint(model_name=None)))
    assert violated(plan(request(), endpoint(variants=2)))["variant_required"] == "variant_name"
    assert "variant_exists" in violated(plan(request(variant_name="Nope"), endpoint()))


def test_every_violation_is_reported_at_once() -> None:
    result = plan(
        request(
            strategy={"type": "canary", "size": {"value": 80}, "bake_seconds": 5000},
            termination_wait_seconds=9999,
            alarms=[],
            instance_type="ml.g5.xlarg",
        ),
        endpoint(status="Updating"),
    )
    assert {
        "canary_size_range",
        "bake_seconds_range",
        "termination_wait_seconds_range",
        "alarms_required",
        "instance_type_known",
        "endpoint_in_service",
    } <= set(violated(result))


def test_managed_steps_must_increase_to_100() -> None:
    bad = plan(request(strategy={"type": "managed", "steps": [50, 10]}), endpoint())
    assert violated(bad)["managed_steps_increasing_to_100"] == "strategy.steps"
    good = plan(request(strategy={"type": "managed", "steps": [5, 25, 100], "approval_before": [25]}), endpoint())
    assert good.plan is not None
    actions = [s.action for s in good.plan.steps]
    assert actions.count("approve") == 1
    assert actions.index("approve") < next(i for i, s in enumerate(good.plan.steps) if s.new_traffic_percent == 25)


def test_names_longer_than_sagemaker_allows_are_refused_even_when_the_pattern_matches() -> None:
    """The pattern's hyphen runs are unbounded; SageMaker also caps names at 63 (found by the API fuzzer)."""
    from pydantic import TypeAdapter, ValidationError

    from inferops.planner import ResourceName

    names = TypeAdapter(ResourceName)
    assert names.validate_python("a" + "-" * 61 + "b") == "a" + "-" * 61 + "b"
    with pytest.raises(ValidationError, match="at most 63 characters"):
        names.validate_python("P0r-----AX----------Y----------y----------4X---O--------------D--6")
