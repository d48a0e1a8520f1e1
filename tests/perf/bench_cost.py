"""Benchmark: what orchestration costs per flow as the bake, test, idle period or freeze grows (goal: flat), on
the twin.

Not a pytest test. Run: .venv/bin/python tests/perf/bench_cost.py (`--quick`: the two shortest durations per
flow). For each flow (`FLOWS`: one row builder per flow, reusing bench_deployment's, bench_shadow's,
bench_scaling's and bench_delivery's runs; the duration is a deployment's bake, a shadow test's length, how long
an endpoint stayed idle at zero before a wake, a delivery's freeze window) and
duration it prints Step Functions state transitions (the `*StateEntered` events AWS bills), Lambda invocations,
AWS API calls made by InferOps' functions (every service, counted at botocore's client entry point:
`twin.calls.ApiCalls`; Step Functions' own service integrations are not Lambda calls and are left out), and the
Step Functions cost of one operation at $25 per million transitions (Standard workflows, us-east-1 list price;
the free tier ignored). Invocations and calls are the operation's own: the functions on a timer run for the whole
fleet (`NOT_THE_FLOW`); the shadow row says under it what the scheduled shadow judge did meanwhile, and how many
of its calls judged that test. Durations beyond a flow's limits are skipped and said so: a native bake is at most
3600 s (SageMaker's WaitIntervalInSeconds), a shadow test at least 1 hour; the idle and freeze rows start at 1 hour.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "tests" / "perf", ROOT / "tests" / "flows", ROOT / "layers" / "shared"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bench_delivery  # noqa: E402
import bench_deployment  # noqa: E402
import bench_scaling  # noqa: E402
import bench_shadow  # noqa: E402
from flowkit import create_endpoint, request  # noqa: E402

from twin.calls import ApiCalls, SageMakerCalls  # noqa: E402
from twin.runtime import Twin  # noqa: E402

PRICE_PER_TRANSITION = 25 / 1_000_000
DURATIONS = (600, 3600, 6 * 3600, 24 * 3600)
GOAL_GROWTH = 1.05
# A row that counts every invocation in its window leaves out the functions on a timer (template.yaml Schedule
# events: they run for the whole fleet whatever the operations do) and the API, which the benchmark polls
NOT_THE_FLOW = frozenset(
    {"ScalingSweepFunction", "DeliveryReconcileFunction", "PriceRefreshFunction", "ShadowJudgeFunction", "ApiFunction"}
)
JUDGE = "ShadowJudgeFunction"
"""The fleet-wide shadow judge (a schedule): reported beside the shadow row, for the runs that judged its test."""


@dataclass
class Row:
    flow: str
    seconds: int
    outcome: str
    transitions: int
    invocations: int
    api_calls: int
    wall_seconds: float
    note: str = ""

    @property
    def cost(self) -> float:
        return self.transitions * PRICE_PER_TRANSITION


def _deployment(flow: str, strategy: dict[str, object], seconds: int) -> Row:
    """One deployment through bench_deployment's measurement (its transitions and invocations), API calls counted."""
    w0 = time.perf_counter()
    with ApiCalls().installed() as api, Twin() as twin:
        create_endpoint(twin)
        with SageMakerCalls(twin).installed() as calls:
            limit = 4 * seconds + 4 * 3600
            measured, _ = bench_deployment.measure(
                twin, calls, request(strategy), flow, poll=max(60.0, seconds / 20), limit=limit
            )
    # from the POST to the execution's end, as bench_deployment counts invocations (not the final GET)
    counted = api.between(measured.posted_at, measured.posted_at + measured.virtual_seconds + 1)
    return Row(
        flow,
        seconds,
        measured.status,
        measured.transitions,
        sum(measured.invocations.values()),
        len(counted),
        time.perf_counter() - w0,
    )


def native_canary(seconds: int) -> Row | None:
    if seconds > 3600:
        return None
    strategy = {"type": "canary", "size": {"value": 25}, "bake_seconds": seconds}
    return _deployment("deployment: native canary 25 %", strategy, seconds)


def managed_canary(seconds: int) -> Row | None:
    strategy = {"type": "managed", "steps": [25, 100], "bake_seconds": seconds}
    return _deployment("deployment: managed canary 25 % + analysis", strategy, seconds)


def shadow_test(seconds: int) -> Row | None:
    if seconds < 3600:
        return None
    w0 = time.perf_counter()
    with ApiCalls().installed() as api:
        measured = bench_shadow.run(seconds / 86400)
    flow = [c for c in api.calls if c.function not in NOT_THE_FLOW]
    judge = [c for c in api.calls if c.function == JUDGE]
    judging = [c for c in judge if c.operation != "Query"]  # a run with nothing due makes one Query, fleet-wide
    return Row(
        "shadow test, 10/50/100 %, promote",
        seconds,
        measured.status,
        measured.transitions,
        _operation_only(measured.invocations),
        len(flow),
        time.perf_counter() - w0,
        note=f"scheduled judge (fleet-wide, not in the row): {measured.invocations[JUDGE]} runs, "
        f"{len(judge)} AWS calls, of which {len(judging)} judged this test "
        f"({', '.join(f'{op} {n}' for op, n in Counter(c.operation for c in judging).most_common())})",
    )


def _operation_only(invocations: Counter[str]) -> int:
    return sum(n for function, n in invocations.items() if function not in NOT_THE_FLOW)


def wake_after_idle(seconds: int) -> Row | None:
    """A requested wake of an inference-component endpoint idle at zero for `seconds` (bench_scaling's run):
    the wake operation's execution, and the Lambda invocations and AWS calls from the request to its end."""
    if seconds < 3600:
        return None
    w0 = time.perf_counter()
    with ApiCalls().installed() as api:
        woke = bench_scaling.run("inference-component", bench_scaling.MODES[2], idle_seconds=seconds)
    return Row(
        "scale to zero: wake after idle (IC endpoint)",
        seconds,
        "SUCCEEDED" if woke["recorded"] else "no wake",
        woke["transitions"],
        _operation_only(woke["invocations"]),
        sum(1 for c in api.between(*woke["window"]) if c.function not in NOT_THE_FLOW),
        time.perf_counter() - w0,
    )


def delivery(seconds: int) -> Row | None:
    """A registry approval delivered to two stages under a freeze of `seconds` (bench_delivery's run)."""
    if seconds < 3600:
        return None
    w0 = time.perf_counter()
    with ApiCalls().installed() as api:
        done = bench_delivery.run(seconds / 3600)
    return Row(
        "delivery: 2 stages, freeze",
        seconds,
        done.status,
        done.transitions,
        _operation_only(done.invocations),
        sum(1 for c in api.between(done.approved_at, done.ended_at + 1) if c.function not in NOT_THE_FLOW),
        time.perf_counter() - w0,
    )


FLOWS: dict[str, Callable[[int], Row | None]] = {
    "native": native_canary,
    "managed": managed_canary,
    "shadow": shadow_test,
    "scale-to-zero": wake_after_idle,
    "delivery": delivery,
}


def _duration(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"


def report(rows: list[Row], skipped: list[str]) -> None:
    print(
        "Orchestration cost per operation as the bake (deployments), the test (shadow), the idle period before a "
        "wake or the freeze (delivery) grows"
    )
    print(
        f"  {'flow':<44} {'duration':>8} {'outcome':>10} {'transitions':>11} {'Lambda inv.':>11} "
        f"{'AWS calls':>9} {'SFN cost':>10} {'wall':>7}"
    )
    for row in rows:
        print(
            f"  {row.flow:<44} {_duration(row.seconds):>8} {row.outcome:>10} {row.transitions:>11} "
            f"{row.invocations:>11} {row.api_calls:>9} {'$' + format(row.cost, '.6f'):>10} {row.wall_seconds:>6.0f}s"
        )
        if row.note:
            print(f"  {'':<44} {row.note}")
    for flow in dict.fromkeys(r.flow for r in rows):
        mine = [r for r in rows if r.flow == flow]
        if len(mine) < 2:
            continue
        growth = mine[-1].transitions / mine[0].transitions if mine[0].transitions else float("inf")
        verdict = "PASS" if growth <= GOAL_GROWTH else "MISS"
        print(
            f"  {flow}: transitions {_duration(mine[-1].seconds)} / {_duration(mine[0].seconds)} = {growth:.2f} "
            f"(goal <= {GOAL_GROWTH}, flat): {verdict}; Lambda invocations {mine[0].invocations} -> "
            f"{mine[-1].invocations}, AWS calls {mine[0].api_calls} -> {mine[-1].api_calls}"
        )
    for note in skipped:
        print(f"  skipped: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two shortest durations per flow")
    parser.add_argument("--flow", action="append", choices=sorted(FLOWS), help="repeatable; default: every flow")
    args = parser.parse_args()
    w0 = time.perf_counter()
    rows: list[Row] = []
    skipped: list[str] = []
    sink = open(os.devnull, "w")  # noqa: SIM115 - the handlers' loggers keep the stream they were given
    with redirect_stdout(sink), redirect_stderr(sink):
        for name in args.flow or list(FLOWS):
            done = 0
            for seconds in DURATIONS:
                if args.quick and done == 2:
                    break
                row = FLOWS[name](seconds)
                if row is None:
                    skipped.append(f"{name} at {_duration(seconds)} (outside the flow's limits)")
                    continue
                rows.append(row)
                done += 1
    report(rows, skipped)
    print(f"\ntotal wall time {time.perf_counter() - w0:.1f} s")


if __name__ == "__main__":
    main()
