"""`make demo`: play InferOps' scenarios on the local twin and show a readable, live timeline.

Scenarios run on virtual time (an hour of canary takes a second or two) against the real API handler, the
SageMaker simulator, the load model and alarm evaluation. Until the deployment flow lands, the rollout
scenarios drive SageMaker directly with the plan the API returns, as the flow will.

    python -m twin.demo                 # every scenario
    python -m twin.demo canary rollback  # some of them
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "shared"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from inferops import catalog  # noqa: E402
from twin.cloudwatch_traffic import LoadProfile, ModelProfile  # noqa: E402
from twin.runtime import Twin  # noqa: E402

console = Console(width=120, highlight=False)
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
ENDPOINT = "fraud-scorer"
QUIET = {"LogLevel": "WARNING"}  # the handlers' INFO logs would drown the timeline


# ---------------------------------------------------------------- catalog
def scenario_catalog() -> None:
    started = time.perf_counter()
    types = catalog.all_types()
    elapsed_ms = (time.perf_counter() - started) * 1000
    snapshot = catalog.snapshot()
    priced = sum(1 for t in types if t.price_usd_per_hour is not None)
    console.rule("[bold]Instance & accelerator catalog")
    console.print(
        f"{len(types)} SageMaker hosting instance types, loaded in {elapsed_ms:.1f} ms; "
        f"{priced} priced ({snapshot.region}, snapshot of {snapshot.as_of})"
    )
    table = Table("accelerator", "vendor", "types", "memory each (GB)", "cheapest $/h")
    groups: dict[tuple[str, str, str], list[catalog.InstanceType]] = {}
    for t in types:
        acc = t.accelerator
        groups.setdefault((acc.kind, acc.vendor or "-", acc.model or "-"), []).append(t)
    for (kind, vendor, model), members in sorted(groups.items()):
        memory = {m.accelerator.memory_gib_each for m in members if m.accelerator.memory_gib_each}
        prices = [m.price_usd_per_hour for m in members if m.price_usd_per_hour is not None]
        table.add_row(
            f"{kind} {model}" if kind != "none" else "none (CPU)",
            vendor,
            str(len(members)),
            ", ".join(f"{x:g}" for x in sorted(memory)) or "-",
            f"{min(prices):.3f}" if prices else "-",
        )
    console.print(table)
    arch = Counter(t.architecture for t in types)
    console.print("architectures: " + ", ".join(f"{k} {v}" for k, v in sorted(arch.items())))
    fits = catalog.fit(70, tensor_parallel=4)[:3]
    console.print(
        "a 70 GB model over 4 accelerators fits first on: "
        + ", ".join(f"{f.instance_type} (${f.price_usd_per_hour}/h)" for f in fits)
    )


# ---------------------------------------------------------------- helpers on the twin
def create_endpoint(twin: Twin, instance_type: str = "ml.g5.xlarge", count: int = 4) -> None:
    sagemaker = twin.client("sagemaker")
    create_model(twin, "fraud-v1")
    sagemaker.create_endpoint_config(
        EndpointConfigName="fraud-v1",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "fraud-v1",
                "InitialInstanceCount": count,
                "InstanceType": instance_type,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="fraud-v1")
    twin.cloudwatch.set_load_profile(ENDPOINT, LoadProfile(requests_per_minute=1200))
    wait_for(twin, lambda: sagemaker.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"] == "InService")
    twin.clock.sleep(5)  # let the state-change event reach the timeline before the next step


def create_model(twin: Twin, name: str) -> None:
    twin.client("sagemaker").create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/fraud:{name}",
            "ModelDataUrl": f"s3://models/fraud/{name}.tar.gz",
        },
    )


def wait_for(twin: Twin, done: Callable[[], bool], step: float = 30.0, limit: float = 6 * 3600) -> float:
    """Let virtual time pass in steps until `done()`; returns the virtual seconds it took."""
    start = twin.clock.now()
    while not done():
        if twin.clock.now() - start > limit:
            raise TimeoutError("scenario did not settle in virtual time")
        twin.clock.sleep(step)
    return twin.clock.now() - start


class Timeline:
    """Prints what SageMaker and CloudWatch report, in virtual time from the scenario's start."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.start = twin.clock.now()
        self._last: dict[str, str] = {}
        twin.bus.subscribe({"source": ["aws.sagemaker", "aws.cloudwatch"]}, self.on_event, name="demo-timeline")

    def say(self, who: str, text: str) -> None:
        seconds = int(self.twin.clock.now() - self.start)
        clock = f"t+{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        console.print(f"[dim]{clock}[/dim]  [bold]{who:<10}[/bold] {text}")

    def on_event(self, event: Any) -> None:
        detail = event["detail"]
        kind = event["detail-type"]
        if kind == "SageMaker Endpoint State Change":
            self._once("status", f"endpoint {detail['EndpointStatus']} on {detail['EndpointConfigName']}", "SageMaker")
        elif kind == "SageMaker Endpoint Deployment State Change":
            pending = detail.get("PendingDeploymentSummary", {})
            for variant in pending.get("ProductionVariants", []):
                status = variant.get("VariantStatus", [{}])[-1]
                text = f"new fleet: {status.get('Status', 'serving')} - {status.get('StatusMessage', '')}".rstrip(" -")
                self._once(f"green-{variant['VariantName']}", text, "SageMaker")
            if pending:
                self._once("traffic", f"traffic to the new fleet: {self.new_fleet_share():.0f} %", "traffic")
        elif kind == "CloudWatch Alarm State Change":
            state = detail["state"]["value"]
            previous = detail["previousState"]["value"]
            if state == "ALARM" or previous == "ALARM":
                self.say("CloudWatch", f"alarm {detail['alarmName']}: {previous} -> [red]{state}[/red]")

    def new_fleet_share(self) -> float:
        fleets = self.twin.sagemaker.serving_variants(ENDPOINT)
        return 100.0 * float(sum(f.weight_share for f in fleets if f.is_new_fleet))

    def _once(self, key: str, text: str, who: str) -> None:
        if self._last.get(key) != text:
            self._last[key] = text
            self.say(who, text)


def plan_through_api(twin: Twin, timeline: Timeline, body: dict[str, Any]) -> dict[str, Any]:
    timeline.say("operator", f"POST /plans {body['strategy']}")
    status, reply = twin.api_request("POST", "/plans", body=body)
    if status != 200:
        raise RuntimeError(f"plan refused: {reply}")
    plan: dict[str, Any] = reply["plan"]
    steps = ", ".join(f"{s['action']} {s['new_traffic_percent']:g}%" for s in plan["steps"] if s["action"] == "shift")
    timeline.say("InferOps", f"plan: {plan['path']} {plan['strategy']}, {steps}; ~{plan['total_seconds'] // 60} min")
    return plan


def roll_out(twin: Twin, timeline: Timeline, plan: dict[str, Any]) -> str:
    """What the deployment flow will do on the native path: config, alarms, UpdateEndpoint, reconcile."""
    sagemaker, cloudwatch = twin.client("sagemaker"), twin.client("cloudwatch")
    target = plan["new_endpoint_config_name"]
    sagemaker.create_endpoint_config(
        EndpointConfigName=target,
        ProductionVariants=[
            {
                "VariantName": plan["variant_name"],
                "ModelName": "fraud-v2",
                "InitialInstanceCount": plan["target_instance_count"],
                "InstanceType": plan["target_instance_type"],
            }
        ],
    )
    for alarm in plan["recommended_alarms"]:
        cloudwatch.put_metric_alarm(
            AlarmName=alarm["name"],
            Namespace="AWS/SageMaker",
            MetricName=alarm["metric_name"],
            Statistic=alarm["statistic"],
            Dimensions=[{"Name": k, "Value": v} for k, v in alarm["dimensions"].items()],
            Period=alarm["period_seconds"],
            EvaluationPeriods=alarm["evaluation_periods"],
            Threshold=alarm["threshold"],
            ComparisonOperator=alarm["comparison"],
            TreatMissingData=alarm["treat_missing_data"],
        )
    timeline.say("InferOps", f"UpdateEndpoint -> {target} with the plan's DeploymentConfig")
    sagemaker.update_endpoint(
        EndpointName=ENDPOINT, EndpointConfigName=target, DeploymentConfig=plan["deployment_config"]
    )

    def settled() -> bool:
        described = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
        return described["EndpointStatus"] == "InService" and "PendingDeploymentSummary" not in described

    took = wait_for(twin, settled)
    final = sagemaker.describe_endpoint(EndpointName=ENDPOINT)
    outcome = "deployed" if final["EndpointConfigName"] == target else "rolled back"
    colour = "green" if outcome == "deployed" else "red"
    timeline.say(
        "InferOps",
        f"reconciled: InService on {final['EndpointConfigName']} -> [{colour}]{outcome}[/{colour}] "
        f"after {took / 60:.0f} virtual min",
    )
    return outcome


def _request(strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "endpoint_name": ENDPOINT,
        "model": {"source": "existing", "model_name": "fraud-v2"},
        "strategy": strategy,
        "termination_wait_seconds": 300,
        "create_recommended_alarms": True,
    }


# ---------------------------------------------------------------- scenarios on the twin
def scenario_plans() -> None:
    console.rule("[bold]Plans through the real API handler (4 x ml.g5.xlarge)")
    with Twin(parameters=QUIET) as twin:
        create_endpoint(twin)
        create_model(twin, "fraud-v2")
        refused = {
            **_request({"type": "canary", "size": {"value": 60}, "bake_seconds": 4000}),
            "create_recommended_alarms": False,
            "model_size_gb": 40,
        }
        status, reply = twin.api_request("POST", "/plans", body=refused)
        console.print(f"a request that breaks the rules -> [red]HTTP {status}[/red] {reply['message']}")
        for v in reply.get("violations", []):
            console.print(f"  [yellow]{v['field']}[/yellow]: {v['message']}\n    fix: {v['fix']}")
        moved = {
            **_request({"type": "linear", "step": {"value": 25}, "bake_seconds": 300}),
            "instance_type": "ml.g6.xlarge",
        }
        status, reply = twin.api_request("POST", "/plans", body=moved)
        plan = reply["plan"]
        cost = plan["cost"]
        console.print(
            f"move to ml.g6.xlarge, linear 25 % -> HTTP {status}: {len(plan['steps'])} steps, "
            f"~{plan['total_seconds'] // 60} min, peak {plan['peak_instances']} instances, "
            f"rollout ${cost['rollout_usd']}, after ${cost['serving_hourly_usd']}/h"
        )


def scenario_canary() -> None:
    console.rule("[bold]Canary 25 % with the recommended rollback alarms: a healthy model")
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin)
        create_endpoint(twin)
        create_model(twin, "fraud-v2")
        plan = plan_through_api(
            twin, timeline, _request({"type": "canary", "size": {"value": 25}, "bake_seconds": 900})
        )
        roll_out(twin, timeline, plan)


def scenario_rollback() -> None:
    console.rule("[bold]Canary 25 %: the new model is slow and fails (SageMaker's auto-rollback)")
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin)
        create_endpoint(twin)
        create_model(twin, "fraud-v2")
        twin.cloudwatch.set_model_profile("fraud-v2", ModelProfile.bad())
        timeline.say("operator", "fraud-v2 is a bad model: 6x latency, 20 % 5xx")
        plan = plan_through_api(
            twin, timeline, _request({"type": "canary", "size": {"value": 25}, "bake_seconds": 900})
        )
        roll_out(twin, timeline, plan)


SCENARIOS: dict[str, Callable[[], None]] = {
    "catalog": scenario_catalog,
    "plans": scenario_plans,
    "canary": scenario_canary,
    "rollback": scenario_rollback,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], help="default: all")
    args = parser.parse_args(argv)
    for name in args.scenarios or SCENARIOS:
        started = time.perf_counter()
        SCENARIOS[name]()
        console.print(f"[dim]({name}: {time.perf_counter() - started:.1f} s wall)[/dim]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
