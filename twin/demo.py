"""`make demo`: play InferOps' scenarios offline and show what happens.

Today it shows the instance & accelerator catalog and plans deployments through the real API handler,
against an endpoint created in moto's SageMaker (no AWS account, nothing leaves 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "shared"))
sys.path.insert(0, str(ROOT))
for key, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "inferops",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(key, value)

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from inferops import catalog  # noqa: E402
from twin.lambdas import load_function  # noqa: E402

console = Console(width=120)
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"


def show_catalog() -> None:
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


def api_call(api: Any, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """Send an API Gateway proxy event to the real handler, as API Gateway would after SigV4 auth."""
    event = json.loads((ROOT / "events" / "api" / "create_plan.json").read_text())
    event.update(httpMethod=method, path=path, resource=path, body=json.dumps(body) if body else None)
    reply = api.handler(event, _Context())
    return reply["statusCode"], json.loads(reply["body"])


class _Context:
    function_name = "ApiFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:ApiFunction"
    aws_request_id = "demo-request"


def show_plan(status: int, reply: dict[str, Any], title: str) -> None:
    console.rule(f"[bold]{title}")
    if status != 200:
        console.print(f"[red]HTTP {status}[/red] {reply['message']}")
        for v in reply.get("violations", []):
            console.print(f"  [yellow]{v['field']}[/yellow]: {v['message']}\n    fix: {v['fix']}")
        return
    plan = reply["plan"]
    console.print(
        f"path [bold]{plan['path']}[/bold], {plan['strategy']}: {plan['current_instance_count']} x "
        f"{plan['current_instance_type']} -> {plan['target_instance_count']} x {plan['target_instance_type']}, "
        f"config {plan['new_endpoint_config_name']}"
    )
    table = Table("t+", "action", "new traffic", "old inst.", "new inst.", "what")
    for step in plan["steps"]:
        minutes, seconds = divmod(step["at_seconds"], 60)
        table.add_row(
            f"{minutes:3d}m{seconds:02d}s",
            step["action"],
            f"{step['new_traffic_percent']:g} %",
            str(step["old_instances"]),
            str(step["new_instances"]),
            step["description"],
        )
    console.print(table)
    cost = plan["cost"]
    console.print(
        f"total ~{plan['total_seconds'] // 60} min, timeout {plan['max_execution_timeout_seconds']} s; "
        f"peak {plan['peak_instances']} instances, never below {plan['min_serving_instances']} serving; "
        f"rollout ${cost['rollout_usd']} (peak ${cost['peak_hourly_usd']}/h, after ${cost['serving_hourly_usd']}/h)"
    )
    for warning in reply["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if plan["deployment_config"]:
        console.print("DeploymentConfig sent to UpdateEndpoint:")
        console.print_json(json.dumps(plan["deployment_config"]))


def plan_scenarios() -> None:
    with mock_aws():
        sagemaker = boto3.client("sagemaker")
        sagemaker.create_model(
            ModelName="fraud-scorer-v1",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={
                "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/fraud:1",
                "ModelDataUrl": "s3://models/fraud/v1.tar.gz",
            },
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName="fraud-scorer-v1",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "fraud-scorer-v1",
                    "InitialInstanceCount": 4,
                    "InstanceType": "ml.g4dn.xlarge",
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName="fraud-scorer", EndpointConfigName="fraud-scorer-v1")
        console.rule("[bold]Endpoint fraud-scorer: 4 x ml.g4dn.xlarge (moto)")
        api = load_function("api")
        model = {"source": "existing", "model_name": "fraud-scorer-v1"}
        canary = {
            "endpoint_name": "fraud-scorer",
            "model": model,
            "strategy": {"type": "canary", "size": {"unit": "percent", "value": 25}, "bake_seconds": 600},
            "termination_wait_seconds": 300,
            "create_recommended_alarms": True,
        }
        show_plan(*api_call(api, "POST", "/plans", canary), "POST /plans: canary 25 %, recommended alarms")
        move = {
            **canary,
            "instance_type": "ml.g6.xlarge",
            "strategy": {"type": "linear", "step": {"value": 25}, "bake_seconds": 300},
            "model_size_gb": 14,
        }
        show_plan(*api_call(api, "POST", "/plans", move), "POST /plans: move to ml.g6.xlarge (L4), linear 25 %")
        refused = {
            **canary,
            "strategy": {"type": "canary", "size": {"value": 60}, "bake_seconds": 4000},
            "alarms": [],
            "create_recommended_alarms": False,
            "model_size_gb": 40,
        }
        show_plan(*api_call(api, "POST", "/plans", refused), "POST /plans: a request that breaks the rules")


def main() -> int:
    show_catalog()
    plan_scenarios()
    return 0


if __name__ == "__main__":
    sys.exit(main())
