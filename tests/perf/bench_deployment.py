"""Benchmark: what one guarded deployment costs on the twin, and how fast the managed path rolls back.

Not a pytest test (pytest collects test_*.py only). Run: .venv/bin/python tests/perf/bench_deployment.py
(`--quick`: the two native canaries only). It prints figures and PASS/MISS against the goals; it asserts nothing.

1. A native canary (25 %, recommended alarms) with a 10-minute and a 60-minute bake, same endpoint:
   - Step Functions state transitions: the `*StateEntered` events of `get_execution_history` (what AWS bills);
     goal <= 40 per deployment, and 60-min/10-min <= 1.05 (transitions must not grow with the bake);
   - Lambda invocations by function: `twin.lambdas.invocations` started between the POST and the execution's end;
   - SageMaker API calls by operation made by InferOps: moto's `SageMakerResponse.call_action` (the simulator's
     entry point for every SageMaker request) is wrapped from here for the run; a call counts when the thread
     making it is inside a Lambda invocation (its thread-local `AWS_LAMBDA_FUNCTION_NAME`), so the benchmark's own
     set-up and reads are left out;
   - virtual duration (execution start to stop) and wall time.
2. Managed path, bad new model: virtual and real time from the rollback alarm's "CloudWatch Alarm State Change"
   (ALARM) event to InferOps' `UpdateEndpointWeightsAndCapacities` sending all traffic back to the old variant.

The benchmark polls Step Functions (not the API) while a deployment runs, so the API invocations counted are the
deployment's own; it reads GET /deployments/{id} once the counts are taken.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "flows"))

from flowkit import ENDPOINT, create_endpoint, deployment, request, start  # noqa: E402

from twin.calls import Call, SageMakerCalls  # noqa: E402
from twin.cloudwatch_traffic import ModelProfile  # noqa: E402
from twin.runtime import Twin  # noqa: E402

GOAL_TRANSITIONS = 40
GOAL_RATIO = 1.05
FUNCTIONS = ("DeploymentStepsFunction", "EndpointEventsFunction", "ApiFunction", "AlarmEventsFunction")
TRAILING_SECONDS = 60.0  # after the execution ends: closing events still land (counted apart)


# ---------------------------------------------------------------------- running one deployment
def execution_arn(twin: Twin, operation_id: str) -> str:
    machine = twin.template.state_machines["DeploymentStateMachine"].arn
    sfn = twin.client("stepfunctions")
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=machine):
        for execution in page["executions"]:
            if execution["name"] == operation_id:
                return str(execution["executionArn"])
    raise LookupError(f"no execution named {operation_id}")


def run_to_end(twin: Twin, arn: str, *, step: float = 60.0, limit: float = 8 * 3600) -> dict[str, Any]:
    """Let virtual time pass until the execution stops (polls Step Functions only)."""
    sfn = twin.client("stepfunctions")
    began = twin.clock.now()
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        if twin.clock.now() - began > limit:
            raise TimeoutError(f"{arn} still RUNNING after {limit:.0f} virtual seconds")
        twin.clock.sleep(step)


@dataclass
class Measured:
    label: str
    status: str
    execution_status: str
    transitions: int
    history_events: int
    states: Counter[str]
    lambda_tasks: int  # Task states backed by lambda:invoke (each one invocation unless retried)
    invocations: Counter[str]
    invocation_errors: Counter[str]
    trailing: Counter[str]
    sagemaker: Counter[str]
    sagemaker_by_function: Counter[str]
    not_inferops: int
    by_step: list[tuple[str, Counter[str]]]
    repeated_reads: Counter[str]
    virtual_seconds: float
    wall_seconds: float
    total_wall_seconds: float
    view: dict[str, Any]
    posted_at: float  # virtual time of the POST
    entered_at: dict[str, float]  # virtual time each state was first entered
    extra: dict[str, Any] = field(default_factory=dict)


def measure(
    twin: Twin,
    calls: SageMakerCalls,
    body: dict[str, Any],
    label: str,
    *,
    poll: float = 60.0,
    limit: float = 8 * 3600,
) -> tuple[Measured, str]:
    lambda_states = _lambda_task_states()
    first_call = len(calls.calls)
    t0 = twin.clock.now()
    w0 = time.perf_counter()
    operation = start(twin, body)
    arn = execution_arn(twin, operation)
    described = run_to_end(twin, arn, step=poll, limit=limit)
    wall = time.perf_counter() - w0
    stopped = described["stopDate"].timestamp()
    twin.clock.sleep(TRAILING_SECONDS)
    history = twin.history(arn)
    entered = [e for e in history if e["type"].endswith("StateEntered")]
    states = Counter(e["stateEnteredEventDetails"]["name"] for e in entered)
    entered_at: dict[str, float] = {}
    for e in entered:
        entered_at.setdefault(e["stateEnteredEventDetails"]["name"], e["timestamp"].timestamp())
    during = [i for i in list(twin.lambdas.invocations) if t0 <= i.started <= stopped]
    after = [i for i in list(twin.lambdas.invocations) if stopped < i.started]
    ours = [c for c in calls.calls[first_call:] if c.virtual >= t0]
    inferops = [c for c in ours if c.function is not None and c.virtual <= stopped]
    _attribute(inferops, during)
    view = deployment(twin, operation)
    return (
        Measured(
            label=label,
            status=str(view["status"]),
            execution_status=str(described["status"]),
            transitions=len(entered),
            history_events=len(history),
            states=states,
            lambda_tasks=sum(n for s, n in states.items() if s in lambda_states),
            invocations=Counter(i.function for i in during),
            invocation_errors=Counter(i.function for i in during if i.error is not None),
            trailing=Counter(i.function for i in after),
            sagemaker=Counter(c.operation for c in inferops),
            sagemaker_by_function=Counter(c.function or "" for c in inferops),
            not_inferops=sum(1 for c in ours if c.function is None),
            by_step=_by_step(inferops),
            repeated_reads=_repeated_reads(inferops),
            virtual_seconds=stopped - described["startDate"].timestamp(),
            wall_seconds=wall,
            total_wall_seconds=0.0,
            view=view,
            posted_at=t0,
            entered_at=entered_at,
        ),
        arn,
    )


def _attribute(calls: list[Call], invocations: list[Any]) -> None:
    """Name the invocation behind each call: invocations of one function are serialised (one warm container),
    so it is the latest one of that function started at or before the call."""
    for call in calls:
        started = [i for i in invocations if i.function == call.function and i.started <= call.virtual + 1e-6]
        if not started:
            continue
        invocation = max(started, key=lambda i: i.started)
        event = invocation.event
        if isinstance(event, dict) and "action" in event:
            call.step = str(event["action"])
        else:
            call.step = invocation.source.removeprefix("apigateway:")


def _by_step(calls: list[Call]) -> list[tuple[str, Counter[str]]]:
    """SageMaker operations per step, in the order the steps first called SageMaker."""
    steps: dict[str, Counter[str]] = {}
    for call in calls:
        steps.setdefault(f"{call.function}:{call.step}", Counter())[call.operation] += 1
    return list(steps.items())


def _resource(call: Call) -> str:
    params = call.params or {}
    for key in ("EndpointName", "EndpointConfigName", "ModelName", "InferenceComponentName"):
        if key in params:
            return str(params[key])
    return ""


def _repeated_reads(calls: list[Call], window: float = 5.0) -> Counter[str]:
    """Reads that repeat an identical read made < `window` virtual seconds before, with no SageMaker write
    in between: the answer cannot have changed (SageMaker only changes state on its own over minutes)."""
    repeated: Counter[str] = Counter()
    seen: dict[str, tuple[float, str]] = {}
    for call in calls:
        if not call.operation.startswith(("Describe", "List")):
            seen.clear()
            continue
        key = call.operation + json.dumps(call.params, sort_keys=True)
        where = f"{call.step}" if call.function == "DeploymentStepsFunction" else f"{call.function}:{call.step}"
        if key in seen and call.virtual - seen[key][0] < window:
            repeated[f"{call.operation}({_resource(call)}) in {where}, after {seen[key][1]}"] += 1
        seen[key] = (call.virtual, where)
    return repeated


def _lambda_task_states() -> set[str]:
    definition = json.loads((ROOT / "statemachines" / "deployment.asl.json").read_text())
    return {
        name
        for name, state in definition["States"].items()
        if state["Type"] == "Task" and str(state.get("Resource", "")).startswith("arn:aws:states:::lambda:invoke")
    }


def native_canary(bake_seconds: int) -> Measured:
    w0 = time.perf_counter()
    with Twin() as twin:
        create_endpoint(twin)
        with SageMakerCalls(twin).installed() as calls:
            strategy = {"type": "canary", "size": {"value": 25}, "bake_seconds": bake_seconds}
            result, _ = measure(twin, calls, request(strategy), f"canary 25 %, bake {bake_seconds // 60} min")
    result.total_wall_seconds = time.perf_counter() - w0
    return result


# ---------------------------------------------------------------------- managed path: alarm -> rollback
def managed_rollback() -> Measured:
    w0 = time.perf_counter()
    alarm_events: list[dict[str, Any]] = []
    with Twin() as twin:
        create_endpoint(twin)
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile.bad())

        def on_alarm(event: Any) -> None:
            alarm_events.append({"event": event, "virtual": twin.clock.now(), "wall": time.perf_counter()})

        twin.bus.subscribe(
            {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"]}, on_alarm, name="bench"
        )
        with SageMakerCalls(twin).installed() as calls:
            strategy = {"type": "managed", "steps": [10, 50, 100], "bake_seconds": 1800}
            result, _ = measure(twin, calls, request(strategy), "managed 10/50/100, bake 30 min, bad model", poll=30.0)
            weights = [c for c in calls.calls if c.operation == "UpdateEndpointWeightsAndCapacities"]
            puts = {r.event_id: r.at for r in twin.bus.records("put")}
    result.total_wall_seconds = time.perf_counter() - w0

    view = result.view
    plan = view.get("plan") or {}
    alarm_names = set(plan.get("alarms") or [])
    baseline = plan.get("variant_name", "AllTraffic")
    started = result.posted_at
    shifts = [(e["data"] or {}).get("share") for e in view["timeline"] if e["kind"] == "shift"]
    firing = [
        a
        for a in alarm_events
        if a["event"]["detail"]["state"]["value"] == "ALARM"
        and (not alarm_names or a["event"]["detail"]["alarmName"] in alarm_names)
    ]
    rollback_calls = [
        c
        for c in weights
        if c.function is not None
        and c.params
        and all(
            float(w["DesiredWeight"]) == (100.0 if w["VariantName"] == baseline else 0.0)
            for w in c.params.get("DesiredWeightsAndCapacities", [])
        )
    ]
    extra: dict[str, Any] = {
        "alarms": sorted(alarm_names),
        "alarm_events": [
            (
                a["event"]["detail"]["alarmName"],
                a["event"]["detail"]["previousState"]["value"],
                a["event"]["detail"]["state"]["value"],
                a["virtual"] - started,
            )
            for a in alarm_events
        ],
        "shifts": shifts,
        "weights_calls": [(c.function, c.virtual - started, c.params) for c in weights],
        "timeline": [(round(e_at - started), e["kind"], e["message"]) for e, e_at in _timeline(view)],
    }
    if "AwaitBake" in result.entered_at:
        extra["bake_at"] = result.entered_at["AwaitBake"] - started
    if firing:
        alarm = firing[0]
        extra["alarm"] = alarm["event"]["detail"]["alarmName"]
        extra["alarm_put_at"] = puts.get(alarm["event"]["id"], alarm["virtual"]) - started
        extra["alarm_at"] = alarm["virtual"] - started
        after = [c for c in rollback_calls if c.virtual >= alarm["virtual"]]
        if after:
            extra["rollback_at"] = after[0].virtual - started
            extra["virtual_s"] = after[0].virtual - alarm["virtual"]
            extra["virtual_from_put_s"] = after[0].virtual - puts.get(alarm["event"]["id"], alarm["virtual"])
            extra["real_ms"] = (after[0].wall - alarm["wall"]) * 1000
    if rollback_calls and "rollback_at" not in extra:
        extra["rollback_at"] = rollback_calls[0].virtual - started
    result.extra = extra
    return result


def _timeline(view: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    from datetime import datetime

    out = []
    for entry in view["timeline"]:
        when = entry.get("at") or entry.get("time") or entry.get("created_at")
        try:
            at = datetime.fromisoformat(str(when).replace("Z", "+00:00")).timestamp()
        except ValueError:
            at = 0.0
        out.append((entry, at))
    return out


# ---------------------------------------------------------------------- printing
def _pf(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_native(short: Measured, long: Measured) -> None:
    rows: list[tuple[str, str, str]] = [
        ("outcome (GET /deployments)", short.status, long.status),
        ("execution status", short.execution_status, long.execution_status),
        ("state transitions (*StateEntered)", str(short.transitions), str(long.transitions)),
        ("history events (all)", str(short.history_events), str(long.history_events)),
        ("lambda:invoke task states entered", str(short.lambda_tasks), str(long.lambda_tasks)),
    ]
    for fn in FUNCTIONS:
        errors = (short.invocation_errors[fn], long.invocation_errors[fn])
        suffix = [f" ({e} err)" if e else "" for e in errors]
        rows.append((f"Lambda {fn}", f"{short.invocations[fn]}{suffix[0]}", f"{long.invocations[fn]}{suffix[1]}"))
    others = sorted((set(short.invocations) | set(long.invocations)) - set(FUNCTIONS))
    for fn in others:
        rows.append((f"Lambda {fn}", str(short.invocations[fn]), str(long.invocations[fn])))
    rows.append(
        ("Lambda invocations (total)", str(sum(short.invocations.values())), str(sum(long.invocations.values())))
    )
    for op in sorted(set(short.sagemaker) | set(long.sagemaker)):
        rows.append((f"SageMaker {op}", str(short.sagemaker[op]), str(long.sagemaker[op])))
    rows.append(
        ("SageMaker calls by InferOps (total)", str(sum(short.sagemaker.values())), str(sum(long.sagemaker.values())))
    )
    for fn in sorted(set(short.sagemaker_by_function) | set(long.sagemaker_by_function)):
        rows.append((f"  ... made by {fn}", str(short.sagemaker_by_function[fn]), str(long.sagemaker_by_function[fn])))
    rows += [
        ("virtual duration", _dur(short.virtual_seconds), _dur(long.virtual_seconds)),
        ("wall time (POST -> execution end)", f"{short.wall_seconds:.1f} s", f"{long.wall_seconds:.1f} s"),
        (
            "wall time (incl. twin + endpoint set-up)",
            f"{short.total_wall_seconds:.1f} s",
            f"{long.total_wall_seconds:.1f} s",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print("1. Native canary, 25 %, recommended alarms, 4 x ml.c7g.large, 1200 rpm")
    print(f"  {'':<{width}}  {'bake 10 min':>14}  {'bake 60 min':>14}")
    for name, a, b in rows:
        print(f"  {name:<{width}}  {a:>14}  {b:>14}")
    ratio = long.transitions / short.transitions if short.transitions else float("inf")
    worst = max(short.transitions, long.transitions)
    print(
        f"  transitions: {short.transitions} and {long.transitions} per deployment (goal <= {GOAL_TRANSITIONS}): "
        f"{_pf(worst <= GOAL_TRANSITIONS)}"
    )
    print(f"  ratio 60-min/10-min transitions: {ratio:.2f} (goal <= {GOAL_RATIO}): {_pf(ratio <= GOAL_RATIO)}")
    grew = {
        s: (short.states[s], long.states[s])
        for s in sorted(set(short.states) | set(long.states))
        if short.states[s] != long.states[s]
    }
    if grew:
        print(
            "  states entered a different number of times (10 min -> 60 min): "
            + ", ".join(f"{s} {a}->{b}" for s, (a, b) in grew.items())
        )
    print("  states entered (bake 60 min): " + ", ".join(f"{s} x{n}" for s, n in long.states.most_common()))
    print(
        "  SageMaker calls by step (bake 60 min; the 10-min run "
        + ("is the same" if short.by_step == long.by_step else "differs")
        + "):"
    )
    for step, ops in long.by_step:
        print(f"    {step:<40} " + ", ".join(f"{op}" + (f" x{n}" if n > 1 else "") for op, n in ops.items()))
    repeated = sum(long.repeated_reads.values())
    print(
        f"  repeated reads (identical read < 5 s after the same read, no write between): {repeated} of "
        f"{sum(long.sagemaker.values())} calls (bake 60 min; bake 10 min: {sum(short.repeated_reads.values())})"
    )
    for what, n in long.repeated_reads.items():
        print(f"    {what}" + (f" x{n}" if n > 1 else ""))
    for m in (short, long):
        steps = m.invocations["DeploymentStepsFunction"]
        if steps != m.lambda_tasks:
            print(f"  {m.label}: {steps} DeploymentStepsFunction invocations for {m.lambda_tasks} lambda task states")
        if m.trailing:
            print(
                f"  {m.label}: after the execution ended (<= {TRAILING_SECONDS:.0f} s): "
                + ", ".join(f"{fn} x{n}" for fn, n in sorted(m.trailing.items()))
            )
        if m.not_inferops:
            print(f"  {m.label}: {m.not_inferops} SageMaker call(s) made outside Lambda (benchmark, left out)")
        if m.status != "SUCCEEDED":
            print(f"  {m.label}: result {m.view.get('result')}")


def print_managed(m: Measured) -> None:
    x = m.extra
    print()
    print("2. Managed path, steps 10/50/100, bake 30 min, recommended alarms, bad new model")
    rows = [
        ("outcome (GET /deployments)", m.status),
        ("reason", str((m.view.get("result") or {}).get("reason", ""))[:100]),
        ("rollback alarms", ", ".join(x["alarms"]) or "-"),
        ("traffic shifts reached", ", ".join(f"{s} %" for s in x["shifts"]) or "-"),
        ("verdicts", ", ".join(f"{v.get('share')} %: {v.get('result')}" for v in m.view.get("verdicts", [])) or "-"),
    ]
    if "alarm" in x:
        rows += [
            ("alarm in ALARM", x["alarm"]),
            ("  event put on the bus (virtual, after POST)", f"{x['alarm_put_at']:.1f} s"),
            ("  event delivered (virtual, after POST)", f"{x['alarm_at']:.1f} s"),
        ]
        if "bake_at" in x:
            into = x["alarm_at"] - x["bake_at"]
            rows.append(("first bake (AwaitBake entered, after POST)", f"{x['bake_at']:.1f} s"))
            rows.append(
                (
                    "  alarm delivered into the 1800-s bake",
                    f"{into:.1f} s ({'within' if 0 <= into <= 1800 else 'outside'} the bake)",
                )
            )
    else:
        rows.append(("alarm in ALARM", "none of the deployment's alarms fired"))
    if "rollback_at" in x:
        rows.append(("rollback weights call (virtual, after POST)", f"{x['rollback_at']:.1f} s"))
    else:
        rows.append(("rollback weights call", "none"))
    if "virtual_s" in x:
        rows += [
            ("alarm event delivered -> rollback call (virtual)", f"{x['virtual_s']:.2f} s"),
            ("alarm event put -> rollback call (virtual)", f"{x['virtual_from_put_s']:.2f} s"),
            ("alarm event delivered -> rollback call (real)", f"{x['real_ms']:.0f} ms"),
        ]
    rows += [
        ("state transitions / history events", f"{m.transitions} / {m.history_events}"),
        ("Lambda invocations", ", ".join(f"{fn} {n}" for fn, n in sorted(m.invocations.items()))),
        ("SageMaker calls by InferOps", ", ".join(f"{op} {n}" for op, n in sorted(m.sagemaker.items()))),
        ("virtual duration / wall (POST -> end)", f"{_dur(m.virtual_seconds)} / {m.wall_seconds:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(
        f"  expected ROLLED_BACK: {_pf(m.status == 'ROLLED_BACK')}; rolled back by the alarm: {_pf('virtual_s' in x)}"
    )
    print(
        "  alarm state changes seen (virtual s after POST): "
        + (", ".join(f"{name} {prev}->{state} @{at:.0f}" for name, prev, state, at in x["alarm_events"]) or "none")
    )
    print("  timeline (s after POST): " + "; ".join(f"{at} {kind}" for at, kind, _ in x["timeline"]))


def _dur(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two native canaries only (skip the managed path)")
    parser.add_argument("--logs", action="store_true", help="let the handlers' logs through (stdout)")
    args = parser.parse_args()
    w0 = time.perf_counter()
    # The handlers log JSON to stdout (Powertools binds the stream when a function is first loaded): keep the
    # table readable by sending everything printed while the twin runs to /dev/null (left open for the loggers).
    sink = sys.stdout if args.logs else open(os.devnull, "w")  # noqa: SIM115
    with redirect_stdout(sink), redirect_stderr(sink if not args.logs else sys.stderr):
        short = native_canary(600)
        long = native_canary(3600)
        managed = None if args.quick else managed_rollback()
    print_native(short, long)
    if managed is not None:
        print_managed(managed)
    print(f"\ntotal wall time {time.perf_counter() - w0:.1f} s")


if __name__ == "__main__":
    main()
