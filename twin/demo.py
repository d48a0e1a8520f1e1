"""`make demo`: play InferOps' scenarios on the local twin and show a readable, live timeline.

Scenarios run on virtual time (an hour of canary takes a second or two) against the real API handler, the
SageMaker simulator, the load model and alarm evaluation. Until the deployment flow lands, the rollout
scenarios drive SageMaker directly with the plan the API returns, as the flow will.

    python -m twin.demo                 # every scenario
    python -m twin.demo canary rollback  # some of them
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
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
# moto logs every Fail state as an ERROR; a deployment that ends ROLLED_BACK is not an error of the demo
logging.getLogger("moto.stepfunctions.parser.asl.component.eval_component").setLevel(logging.CRITICAL)


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
    return twin.wait_for(done, step, limit)


def create_ic_endpoint(twin: Twin, endpoint: str, component: str, *, rpm: float = 30, min_instances: int = 1) -> None:
    """An inference-component endpoint (ml.g5.xlarge, managed instance scaling) serving one copy of `component`."""
    sagemaker = twin.client("sagemaker")
    with twin.busy():
        create_model(twin, f"{component}-v1")
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"{endpoint}-config",
            ExecutionRoleArn=ROLE,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "InstanceType": "ml.g5.xlarge",
                    "InitialInstanceCount": 1,
                    "ManagedInstanceScaling": {
                        "Status": "ENABLED",
                        "MinInstanceCount": min_instances,
                        "MaxInstanceCount": 2,
                    },
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-config")
    wait_for(twin, lambda: sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService")
    sagemaker.create_inference_component(
        InferenceComponentName=component,
        EndpointName=endpoint,
        VariantName="AllTraffic",
        Specification={
            "ModelName": f"{component}-v1",
            "ComputeResourceRequirements": {"NumberOfAcceleratorDevicesRequired": 1, "MinMemoryRequiredInMb": 1024},
        },
        RuntimeConfig={"CopyCount": 1},
    )
    wait_for(twin, lambda: copies(twin, component) >= 1)
    twin.cloudwatch.set_load_profile(endpoint, LoadProfile(requests_per_minute=rpm))


def copies(twin: Twin, component: str) -> int:
    described = twin.client("sagemaker").describe_inference_component(InferenceComponentName=component)
    return int(described["RuntimeConfig"]["CurrentCopyCount"])


class Timeline:
    """Prints what SageMaker and CloudWatch report, in virtual time from the scenario's start."""

    def __init__(self, twin: Twin, *, watch: bool = True) -> None:
        self.twin = twin
        self.start = twin.clock.now()
        self._last: dict[str, str] = {}
        if watch:  # one endpoint's SageMaker and CloudWatch events
            twin.bus.subscribe({"source": ["aws.sagemaker", "aws.cloudwatch"]}, self.on_event, name="demo-timeline")

    def say(self, who: str, text: str, at: float | None = None) -> None:
        seconds = int((self.twin.clock.now() if at is None else at) - self.start)
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


def deploy(twin: Twin, timeline: Timeline, body: dict[str, Any]) -> dict[str, Any]:
    """POST /deployments, then follow the operation's own timeline until it ends (virtual time)."""
    timeline.say("operator", f"POST /deployments {body['strategy']['type']}")
    status, reply = twin.api_request("POST", "/deployments", body=body)
    if status != 202:
        raise RuntimeError(f"deployment refused: {reply}")
    operation = reply["id"]
    plan = reply["plan"]
    steps = ", ".join(f"{s['new_traffic_percent']:g}%" for s in plan["steps"] if s["action"] == "shift")
    timeline.say(
        "InferOps", f"{operation}: {plan['path']} {plan['strategy']} ({steps}), ~{plan['total_seconds'] // 60} min"
    )
    shown: set[int] = set()
    while True:
        twin.clock.sleep(90)  # each poll is a real API invocation: poll like a patient operator
        _, view = twin.api_request("GET", f"/deployments/{operation}")
        for entry in view["timeline"]:
            if entry["seq"] not in shown and entry["kind"] not in ("sagemaker", "requested", "finished", "diagnosis"):
                at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()
                timeline.say("InferOps", entry["message"], at=at)
            shown.add(entry["seq"])
        if view["status"] in ("SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"):
            colour = "green" if view["status"] == "SUCCEEDED" else "red"
            timeline.say("InferOps", f"[{colour}]{view['status']}[/{colour}]: {view['result']['reason']}")
            return dict(view)


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
        deploy(twin, timeline, _request({"type": "canary", "size": {"value": 25}, "bake_seconds": 900}))


def scenario_rollback() -> None:
    console.rule("[bold]Canary 25 %: the new model is slow and fails (SageMaker's auto-rollback)")
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin)
        create_endpoint(twin)
        create_model(twin, "fraud-v2")
        twin.cloudwatch.set_model_profile("fraud-v2", ModelProfile.bad())
        timeline.say("operator", "fraud-v2 is a bad model: 6x latency, 20 % 5xx")
        view = deploy(twin, timeline, _request({"type": "canary", "size": {"value": 25}, "bake_seconds": 900}))
        show_diagnosis(view.get("diagnosis"))


def show_diagnosis(found: dict[str, Any] | None) -> None:
    """What a failed deployment carries: each finding's cause, two pieces of evidence and the fix."""
    if not found:
        return
    console.print(f"[bold]diagnosis[/bold] ({'; '.join(found.get('checked', [])[:3])}...)")
    for finding in found["findings"][:3]:
        console.print(f"  [red]{finding['severity']}[/red] {finding['title']}\n    cause: {finding['cause']}")
        seen = [e for e in finding["evidence"] if e["kind"] not in ("failure_reason", "error")]  # the reason was shown
        for item in (seen or finding["evidence"])[:3]:
            console.print(f"    [dim]{item['kind']}: {item['text'][:140]}[/dim]")
        console.print(f"    fix: {finding['fix'][:230]}{'...' if len(finding['fix']) > 230 else ''}")


def scenario_managed() -> None:
    console.rule("[bold]Managed path, analysis-gated 10 % -> 50 % -> 100 %: the canary judge catches a bad model")
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin)
        create_endpoint(twin)
        create_model(twin, "fraud-v2")
        twin.cloudwatch.set_model_profile("fraud-v2", ModelProfile(latency_multiplier=1.6))
        timeline.say("operator", "fraud-v2 is 60 % slower: no alarm fires, the judge must see it")
        body = {
            **_request({"type": "managed", "steps": [10, 50, 100], "bake_seconds": 600}),
            "create_recommended_alarms": False,
            "analysis": {"max_latency_increase_percent": 20},
        }
        view = deploy(twin, timeline, body)
        for verdict in view["verdicts"]:
            for metric in verdict["metrics"]:
                timeline.say("judge", f"{metric['name']}: {metric['outcome']} - {metric['reason']}")


# ---------------------------------------------------------------- shadow tests
SKIP = ("verdict", "sagemaker", "requested", "finished")


def scenario_shadow() -> None:
    console.rule("[bold]Shadow test, sampling 10 % -> 50 % -> 100 %, judged every 10 min: the candidate is promoted")
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin)
        create_endpoint(twin)
        create_model(twin, "fraud-v2")
        body = {
            "endpoint_name": ENDPOINT,
            "model": {"source": "existing", "model_name": "fraud-v2"},
            "role_arn": ROLE,
            "sampling_steps": [10, 50, 100],
            "duration_hours": 2,
            "analysis_interval_minutes": 10,
            "action": "promote",
        }
        timeline.say("operator", "POST /shadow-tests fraud-v2 on fraud-scorer, promote if it passes")
        status, reply = twin.api_request("POST", "/shadow-tests", body=body)
        if status != 202:
            raise RuntimeError(f"shadow test refused: {reply}")
        operation, plan = reply["id"], reply["plan"]
        phases = ", ".join(f"{p['sampling_percent']} % for ~{p['seconds'] // 60} min" for p in plan["phases"])
        timeline.say("InferOps", f"{operation}: experiment {plan['experiment_name']}: {phases}")
        shown: set[str] = set()
        while True:
            twin.clock.sleep(300)  # each poll is a real API invocation
            _, view = twin.api_request("GET", f"/shadow-tests/{operation}")
            said = [(e["at"], "InferOps", e["message"]) for e in view["timeline"] if e["kind"] not in SKIP]
            for v in view["verdicts"]:
                what = f"interval {v['interval'] + 1} of phase" if v["scope"] == "interval" else "phase"
                text = f"{what} {v['phase'] + 1} at {v['sampling']} %: {v['result']} ({v['reason']})"
                said.append((v["at"], "judge", text))
            for at, who, text in sorted(said):
                if at + text not in shown:
                    timeline.say(who, text[:150], at=datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
                shown.add(at + text)
            if view["status"] in ("SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"):
                break
        intervals = [v for v in view["verdicts"] if v["scope"] == "interval"]
        passed = sum(1 for v in intervals if v["result"] == "Pass")
        timeline.say(
            "judge",
            f"{len(intervals)} interval verdicts ({passed} Pass), sampling history "
            + " -> ".join(f"{h['percent']} %" for h in view["sampling_history"]),
        )
        colour = "green" if view["status"] == "SUCCEEDED" else "red"
        timeline.say("InferOps", f"[{colour}]{view['status']}[/{colour}]: {view['result']['reason']}")
        variants = twin.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["ProductionVariants"]
        timeline.say("SageMaker", "serving: " + ", ".join(v["VariantName"] for v in variants))


# ---------------------------------------------------------------- registry-driven delivery
STAGING = f"{ENDPOINT}-staging"


def scenario_registry() -> None:
    console.rule("[bold]Model registry approval -> staging -> (freeze, human approval) -> production, by policy")
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin, watch=False)
        sagemaker = twin.client("sagemaker")
        twin.bus.subscribe(
            {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"]},
            lambda e: timeline.say(
                "Registry",
                f"{e['detail']['ModelPackageGroupName']} v{e['detail']['ModelPackageVersion']}: "
                f"{e['detail']['ModelApprovalStatus']} (EventBridge)",
            ),
            name="demo-registry",
        )
        create_model(twin, "fraud-v1")
        for name, count in ((STAGING, 2), (ENDPOINT, 4)):
            sagemaker.create_endpoint_config(
                EndpointConfigName=f"{name}-v1",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": "fraud-v1",
                        "InitialInstanceCount": count,
                        "InstanceType": "ml.g5.xlarge",
                    }
                ],
            )
            sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-v1")
            twin.cloudwatch.set_load_profile(name, LoadProfile(requests_per_minute=600 * count))
        wait_for(
            twin,
            lambda: all(
                sagemaker.describe_endpoint(EndpointName=n)["EndpointStatus"] == "InService"
                for n in (STAGING, ENDPOINT)
            ),
        )
        sagemaker.create_model_package_group(ModelPackageGroupName=ENDPOINT)
        arn = sagemaker.create_model_package(
            ModelPackageGroupName=ENDPOINT,
            ModelApprovalStatus="PendingManualApproval",
            InferenceSpecification={
                "Containers": [
                    {
                        "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/fraud:v2",
                        "ModelDataUrl": "s3://models/fraud/v2.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
        )["ModelPackageArn"]
        freeze_end = datetime.fromtimestamp(twin.clock.now() + 1800).astimezone()
        deployment = {"termination_wait_seconds": 300, "create_recommended_alarms": True}
        policy: dict[str, Any] = {
            "stages": [
                {
                    "name": "staging",
                    "endpoint_name": STAGING,
                    "deployment": {
                        **deployment,
                        "strategy": {"type": "canary", "size": {"value": 50}, "bake_seconds": 600},
                    },
                },
                {
                    "name": "production",
                    "endpoint_name": ENDPOINT,
                    "approval": True,
                    "deployment": {
                        **deployment,
                        "strategy": {"type": "linear", "step": {"value": 25}, "bake_seconds": 300},
                    },
                },
            ],
            "freeze_windows": [
                {
                    "kind": "once",
                    "starts_at": datetime.fromtimestamp(twin.clock.now() - 60).astimezone().isoformat(),
                    "ends_at": freeze_end.isoformat(),
                    "reason": "release freeze",
                }
            ],
        }
        refused = {
            **policy,
            "stages": [{**policy["stages"][0], "deployment": {"strategy": {"type": "canary", "size": {"value": 80}}}}],
        }
        status, reply = twin.api_request("PUT", f"/delivery-policies/{ENDPOINT}", body=refused)
        timeline.say("operator", f"PUT /delivery-policies/{ENDPOINT} with a 80 % canary -> [red]HTTP {status}[/red]")
        for v in reply.get("violations", [])[:2]:
            console.print(f"  [yellow]{v['field']}[/yellow]: {v['message']}")
        status, reply = twin.api_request("PUT", f"/delivery-policies/{ENDPOINT}", body=policy)
        timeline.say(
            "operator",
            f"PUT /delivery-policies/{ENDPOINT}: staging canary 50 %, then production linear "
            f"25 % after a human approves; frozen for 30 min -> HTTP {status}",
        )
        timeline.say("data team", "approves version 1 in the model registry (twice: SageMaker sends two events)")
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
        sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
        the_id = f"dlv-{ENDPOINT}-1"
        shown: set[int] = set()
        approved = False
        while True:
            twin.clock.sleep(300)  # each poll is a real API invocation
            _, view = twin.api_request("GET", f"/deliveries/{the_id}")
            for entry in view["timeline"]:
                if entry["seq"] not in shown and entry["kind"] not in ("heartbeat", "finished"):
                    at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).timestamp()
                    timeline.say("InferOps", entry["message"][:150], at=at)
                shown.add(entry["seq"])
            if view["waiting_for"] == "approval" and not approved:
                approved = True
                staging = view["stages"][0]["operations"][0]
                timeline.say(
                    "operator", f"staging {staging['id']} {staging['status']}; POST /deliveries/{the_id}/approve"
                )
                twin.api_request("POST", f"/deliveries/{the_id}/approve")
            if view["status"] in ("SUCCEEDED", "FAILED", "ABORTED"):
                break
        _, page = twin.api_request("GET", "/deliveries", query={"group": ENDPOINT})
        colour = "green" if view["status"] == "SUCCEEDED" else "red"
        timeline.say(
            "InferOps",
            f"[{colour}]{view['status']}[/{colour}]: {view['reason']} "
            f"({len(page['deliveries'])} delivery for 2 approval events)",
        )
        for stage in view["stages"]:
            timeline.say(
                "InferOps", f"  {stage['name']}: {stage['status']} {stage['started_at']} -> {stage['ended_at']}"
            )


# ---------------------------------------------------------------- async inference results
class _JsonTap:
    """stdout during a scenario: the functions' JSON lines (EMF metrics, logs) are kept, everything else passes."""

    def __init__(self, out: Any) -> None:
        import threading

        self.out = out
        self.documents: list[dict[str, Any]] = []
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        import json

        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            for line in lines:
                if line.startswith('{"'):
                    self.documents.append(json.loads(line))
                else:
                    self.out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return bool(self.out.isatty())

    def metric(self, name: str) -> float:
        return sum(sum(d.get(name, [])) for d in self.documents if "_aws" in d and "ErrorCategory" not in d)


def scenario_async() -> None:
    import json

    import boto3

    console.rule("[bold]Async inference: results indexed by inference id, counted per endpoint, failures explained")
    endpoint, bucket, requests = "doc-ocr-async", "acme-ml-async", 40
    tap = _JsonTap(sys.stdout)
    writes: list[int] = []
    sys.stdout = tap
    try:
        with Twin(parameters=QUIET) as twin:
            timeline = Timeline(twin)
            boto3._get_default_session().events.register(  # the functions' clients: count the table writes
                "provide-client-params.dynamodb.BatchWriteItem",
                lambda params, **_: writes.append(len(params["RequestItems"][twin.template.tables[0].name])),
            )
            sagemaker, s3, sqs = twin.client("sagemaker"), twin.client("s3"), twin.client("sqs")
            topics = {kind: twin.template.physical(f"Async{kind}Topic").ref for kind in ("Success", "Error")}
            with twin.busy():
                s3.create_bucket(Bucket=bucket)
                for n in range(requests):
                    s3.put_object(Bucket=bucket, Key=f"input/scan-{n}.json", Body=json.dumps({"page": n}).encode())
                create_model(twin, "ocr-v1")
                sagemaker.create_endpoint_config(
                    EndpointConfigName="ocr-async-v1",
                    ProductionVariants=[
                        {
                            "VariantName": "AllTraffic",
                            "ModelName": "ocr-v1",
                            "InitialInstanceCount": 2,
                            "InstanceType": "ml.g5.xlarge",
                        }
                    ],
                    AsyncInferenceConfig={
                        "OutputConfig": {
                            "S3OutputPath": f"s3://{bucket}/output",
                            "S3FailurePath": f"s3://{bucket}/failures",
                            "NotificationConfig": {"SuccessTopic": topics["Success"], "ErrorTopic": topics["Error"]},
                        },
                        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
                    },
                )
                sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName="ocr-async-v1")
            timeline.say("operator", f"async endpoint {endpoint}: notifications to InferOps' success and error topics")
            wait_for(twin, lambda: sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"] == "InService")
            twin.clock.sleep(30)
            timeline.say("InferOps", f"SageMaker's TestNotifications dropped: {tap.metric('AsyncTestNotifications'):g}")

            def stats() -> dict[str, Any]:
                reply = twin.api_request("GET", f"/endpoints/{endpoint}/async-stats", query={"hours": "2"})[1]
                return dict(reply)

            runtime = twin.client("sagemaker-runtime")
            with twin.busy():
                for n in range(requests):
                    missing = n % 20 == 7  # a client that uploads after invoking: the input is not there
                    runtime.invoke_endpoint_async(
                        EndpointName=endpoint,
                        InputLocation=f"s3://{bucket}/input/{'missing' if missing else 'scan'}-{n}.json",
                        ContentType="application/json",
                        InferenceId=f"scan-{n}",
                    )
            timeline.say("operator", f"{requests} InvokeEndpointAsync requests (2 name an input not in S3)")
            took = wait_for(twin, lambda: stats()["total"] >= requests, step=15)
            timeline.say("InferOps", f"{requests} results indexed within {took:.0f} s of virtual time")

            twin.sagemaker.set_model_health("ocr-v1", healthy=False)
            timeline.say("operator", "ocr-v1 starts crashing (HTTP 500 from the container): 5 more requests")
            for n in range(requests, requests + 5):
                runtime.invoke_endpoint_async(
                    EndpointName=endpoint, InputLocation=f"s3://{bucket}/input/scan-0.json", InferenceId=f"scan-{n}"
                )
            wait_for(twin, lambda: stats()["total"] >= requests + 5, step=15)
            twin.sagemaker.set_model_health("ocr-v1", healthy=True)

            before = stats()
            sns = twin.client("sns")
            for n in (1, 2, 3):  # SNS delivers at least once: the same notifications again
                result = twin.api_request("GET", f"/async-results/scan-{n}")[1]
                notification = {
                    "awsRegion": "us-east-1",
                    "eventTime": result["completed_at"].replace("000Z", "Z"),
                    "receivedTime": result["received_at"].replace("000Z", "Z"),
                    "invocationStatus": "Completed",
                    "requestParameters": {"endpointName": endpoint, "inputLocation": result["input_location"]},
                    "responseParameters": {"outputLocation": result["output_location"]},
                    "inferenceId": f"scan-{n}",
                    "eventVersion": "1.0",
                    "eventSource": "aws:sagemaker",
                    "eventName": "InferenceResult",
                }
                sns.publish(TopicArn=topics["Success"], Message=json.dumps(notification))
            queue = twin.template.queues["AsyncResultsQueue"].url
            sqs.send_message(QueueUrl=queue, MessageBody='{"inferenceId": "scan-99", "invocationStatus": "Compl')
            timeline.say("operator", "3 notifications delivered again, and a truncated message from another producer")
            twin.clock.sleep(3 * 180 + 120)
            after = stats()
            same = {**after, "until": None} == {**before, "until": None}
            timeline.say("InferOps", f"repeats: {tap.metric('AsyncNotificationsRepeated'):g}, stats unchanged: {same}")
            rejected = [d for d in tap.documents if str(d.get("message", "")).startswith("rejected message")]
            dead = twin.template.queues["AsyncResultsDeadLetters"].url
            letters = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages"])
            if rejected:
                last = rejected[-1]
                timeline.say(
                    "InferOps",
                    f"rejected {len(rejected)} times ({last['reason'].split(' (')[0]}); "
                    f"dead-letter queue: {letters['Attributes']['ApproximateNumberOfMessages']} message",
                )

            console.print()
            for inference_id in ("scan-3", "scan-7", "scan-42"):
                _, view = twin.api_request("GET", f"/async-results/{inference_id}")
                line = f"GET /async-results/{inference_id} -> {view['status']} ({view['latency_seconds']} s end to end)"
                if view["classification"]:
                    found = view["classification"]
                    line += f"\n    [yellow]{found['category']}[/yellow]: {found['cause']}\n    fix: {found['action']}"
                else:
                    line += f"\n    output: {view['output_location']}"
                console.print(line)
            table = Table("completed", "failed", "failure rate", "p50 s", "p90 s", "p99 s", "failures by category")
            latency = after["latency_seconds"]
            table.add_row(
                str(after["completed"]),
                str(after["failed"]),
                f"{after['failure_rate']:.1%}",
                f"{latency['p50']:g}",
                f"{latency['p90']:g}",
                f"{latency['p99']:g}",
                ", ".join(f"{k} {v}" for k, v in after["failures_by_category"].items()),
            )
            console.print(f"GET /endpoints/{endpoint}/async-stats?hours=2")
            console.print(table)
            batches = twin.lambdas.of("AsyncResultsFunction")
            records = sum(len(b.event["Records"]) for b in batches)
            console.print(
                f"{records} SQS records in {len(batches)} batches; {len(writes)} BatchWriteItem calls "
                f"({sum(writes)} items: results and per-hour stats shards); EMF: "
                f"AsyncInferenceCompleted {tap.metric('AsyncInferenceCompleted'):g}, "
                f"AsyncInferenceFailed {tap.metric('AsyncInferenceFailed'):g}"
            )
    finally:
        sys.stdout = tap.out


def scenario_scale_to_zero() -> None:
    console.rule("[bold]Scale to zero: an inference-component endpoint goes to zero when idle and wakes on traffic")
    endpoint, component = "chat", "chat-llm"
    with Twin(parameters=QUIET) as twin:
        timeline = Timeline(twin)
        create_ic_endpoint(twin, endpoint, component)
        timeline.say("operator", f"{endpoint}: 1 copy of {component} on 1 ml.g5.xlarge, 30 requests/min")

        def view() -> dict[str, Any]:
            return dict(twin.api_request("GET", f"/endpoints/{endpoint}")[1])

        def until_done(operation_id: str) -> dict[str, Any]:
            wait_for(twin, lambda: (view()["operation"] or {}).get("status") in ("SUCCEEDED", "FAILED"), step=15)
            operation = view()["operation"]
            assert operation["id"] == operation_id
            return dict(operation)

        status, started = twin.api_request("PUT", f"/endpoints/{endpoint}/scale-to-zero", body={"max_copies": 2})
        timeline.say("operator", f"PUT /endpoints/{endpoint}/scale-to-zero -> {status}")
        enabled = until_done(started["id"])
        timeline.say("InferOps", f"{enabled['status']}: {enabled['result']['reason']}")
        for entry in enabled["timeline"]:
            if entry["kind"] in ("update", "enabled"):
                timeline.say("InferOps", entry["message"])

        twin.cloudwatch.set_load_profile(endpoint, requests_per_minute=0)
        timeline.say("operator", "traffic stops")
        wait_for(twin, lambda: view()["capacity"]["instances"] == 0, step=60)
        timeline.say("SageMaker", f"0 copies, 0 instances: {view()['capacity']}")

        twin.cloudwatch.set_load_profile(endpoint, requests_per_minute=30)
        arrived = twin.clock.now()
        timeline.say("operator", "traffic arrives (callers retry while there is no capacity)")
        wait_for(twin, lambda: (view()["operation"] or {}).get("action") == "wake", step=10)
        woke = until_done(view()["operation"]["id"])
        serving = view()
        timeline.say("InferOps", f"wake {woke['status']} ({woke['trigger']}): {woke['result']['reason']}")
        timeline.say(
            "InferOps",
            f"serving {serving['capacity']} {twin.clock.now() - arrived:.0f} s after the first request; "
            f"last wake {serving['last_wake_seconds']:g} s",
        )
        cost = serving["idle_cost"]
        console.print(
            f"GET /endpoints/{endpoint}: kind {serving['kind']}, {cost['zero_hours']:g} h at zero saved "
            f"${cost['saved_usd']:.2f} at ${cost['price_usd_per_hour']:g}/h; idle cost ${cost['idle_cost_usd']:.2f}"
        )


SCENARIOS: dict[str, Callable[[], None]] = {
    "catalog": scenario_catalog,
    "plans": scenario_plans,
    "canary": scenario_canary,
    "rollback": scenario_rollback,
    "managed": scenario_managed,
    "shadow": scenario_shadow,
    "registry": scenario_registry,
    "async": scenario_async,
    "scale-to-zero": scenario_scale_to_zero,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], help="default: all")
    args = parser.parse_args(argv)
    for name in args.scenarios or SCENARIOS:
        started = time.perf_counter()
        tap = _JsonTap(sys.stdout)  # the functions' EMF lines are for CloudWatch, not for the timeline
        sys.stdout = tap
        try:
            SCENARIOS[name]()
        finally:
            sys.stdout = tap.out
        console.print(f"[dim]({name}: {time.perf_counter() - started:.1f} s wall)[/dim]\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
