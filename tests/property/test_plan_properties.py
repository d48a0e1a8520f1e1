"""Whatever a user asks for, an accepted plan never exceeds SageMaker's bounds or drops serving capacity."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from inferops.endpoints import EndpointSnapshot, VariantSnapshot
from inferops.planner import DeploymentRequest, plan

INSTANCE_TYPES = [
    "ml.m5.xlarge",
    "ml.c7g.large",
    "ml.g5.xlarge",
    "ml.g6e.xlarge",
    "ml.p4d.24xlarge",
    "ml.inf2.xlarge",
]

sizes = st.builds(
    lambda unit, value: {"unit": unit, "value": value},
    st.sampled_from(["percent", "instances"]),
    st.integers(min_value=1, max_value=100),
)
waits = st.integers(min_value=0, max_value=5000)
strategies = st.one_of(
    st.builds(lambda b: {"type": "all_at_once", "bake_seconds": b}, waits),
    st.builds(lambda s, b: {"type": "canary", "size": s, "bake_seconds": b}, sizes, waits),
    st.builds(lambda s, b: {"type": "linear", "step": s, "bake_seconds": b}, sizes, waits),
    st.builds(lambda s, b: {"type": "rolling", "batch": s, "bake_seconds": b}, sizes, waits),
)
requests = st.fixed_dictionaries(
    {
        "endpoint_name": st.just("ep"),
        "model": st.just({"source": "existing", "model_name": "m2"}),
        "strategy": strategies,
        "termination_wait_seconds": waits,
        "max_execution_timeout_seconds": st.one_of(st.none(), st.integers(min_value=0, max_value=40000)),
        "alarms": st.lists(st.sampled_from([f"alarm-{i}" for i in range(12)]), max_size=11, unique=True),
        "create_recommended_alarms": st.booleans(),
        "instance_count": st.one_of(st.none(), st.integers(min_value=1, max_value=20)),
    }
)


def snapshot(instance_type: str, count: int) -> EndpointSnapshot:
    return EndpointSnapshot(
        name="ep",
        status="InService",
        config_name="ep-v1",
        variants=(
            VariantSnapshot(name="AllTraffic", model_name="m1", instance_type=instance_type, instance_count=count),
        ),
    )


def _percent(size: dict[str, Any], fleet: int) -> float:
    return float(size["Value"]) if size["Type"] == "CAPACITY_PERCENT" else 100 * size["Value"] / fleet


@settings(max_examples=400, deadline=None)
@given(body=requests, instance_type=st.sampled_from(INSTANCE_TYPES), count=st.integers(min_value=1, max_value=20))
def test_accepted_plans_stay_within_sagemaker_bounds(body: dict[str, Any], instance_type: str, count: int) -> None:
    result = plan(DeploymentRequest.model_validate(body), snapshot(instance_type, count))
    if not result.ok:
        assert result.violations and all(v.field and v.message and v.fix for v in result.violations)
        return
    the_plan = result.plan
    assert the_plan is not None
    fleet = the_plan.target_instance_count
    config = the_plan.deployment_config
    assert config is not None
    policy = config.get("BlueGreenUpdatePolicy") or config["RollingUpdatePolicy"]
    timeout = policy["MaximumExecutionTimeoutInSeconds"]
    assert 600 <= timeout <= 28800
    assert the_plan.waits_seconds < timeout
    assert 0 <= policy.get("TerminationWaitInSeconds", 0) <= 3600
    if "AutoRollbackConfiguration" in config:
        assert 1 <= len(config["AutoRollbackConfiguration"]["Alarms"]) <= 10
    if "RollingUpdatePolicy" in config:
        assert 0 <= policy["WaitIntervalInSeconds"] <= 3600
        assert 5 <= _percent(policy["MaximumBatchSize"], fleet) <= 50
        return
    routing = policy["TrafficRoutingConfiguration"]
    assert 0 <= routing["WaitIntervalInSeconds"] <= 3600
    if routing["Type"] == "CANARY":
        assert 0 < _percent(routing["CanarySize"], fleet) <= 50
    if routing["Type"] == "LINEAR":
        assert 10 <= _percent(routing["LinearStepSize"], fleet) <= 50


@settings(max_examples=300, deadline=None)
@given(body=requests, instance_type=st.sampled_from(INSTANCE_TYPES), count=st.integers(min_value=1, max_value=20))
def test_blue_green_never_drops_below_the_serving_fleet(body: dict[str, Any], instance_type: str, count: int) -> None:
    result = plan(DeploymentRequest.model_validate(body), snapshot(instance_type, count))
    if not result.ok or result.plan is None:
        return
    the_plan = result.plan
    target = the_plan.target_instance_count
    for step in the_plan.steps:
        # A fleet that has traffic is complete: the old one until the switch, the new one from its first shift.
        if step.new_traffic_percent < 100 and step.action != "terminate":
            assert step.old_instances >= (count if the_plan.strategy != "rolling" else 0)
        if the_plan.strategy != "rolling" and step.new_traffic_percent > 0:
            assert step.new_instances == target
    assert the_plan.min_serving_instances >= min(count, target)
    starts = [s.at_seconds for s in the_plan.steps]
    assert starts == sorted(starts)
    assert the_plan.peak_instances <= count + target
