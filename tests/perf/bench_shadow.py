"""Benchmark: what a shadow test's execution history costs as the test gets longer (the 25,000-event cap).

Not a pytest test (pytest collects test_*.py only). Run: .venv/bin/python tests/perf/bench_shadow.py
(`--quick`: 1 day only; `--week`: add a 7-day test; `--days D`, repeatable: these lengths instead;
`--judge-minutes N`: the scheduled judge's period, default the template's 5 minutes; the twin plays every run of
it, 8,640 for a 30-day test, and the flow's figures do not depend on it). It prints figures and PASS/MISS
against the goals; it asserts nothing. The 30-day test plays a month of traffic and ~2,900 interval verdicts:
tens of minutes of wall time.

Shadow tests of 1 and 30 days (and 7 with `--week`), judged every 15 minutes, sampling 10 -> 50 -> 100 %,
promoted at the end, on the twin with real traffic (the CloudWatch model mirrors production's requests to the
shadow variant):
- history events (`get_execution_history`, all of them; Step Functions caps an execution at 25,000) and state
  transitions (the `*StateEntered` events, what AWS bills); goal < 5,000 events for the 30-day test;
- watch tasks (entries of the `Watch` task: one per phase) and verdicts recorded (interval verdicts, by the
  scheduled judge `ShadowJudgeFunction` or the phase's end, and phase verdicts: in the operation's timeline, not
  in the execution's history);
- Lambda invocations by function during the test (the judge's runs are fleet-wide: every run of the schedule
  counts, whether this test had an interval due or not), virtual duration and wall time.

Twin limitation worked around here: moto answers GetMetricData by scanning every datapoint it holds, so a month
of one-minute metrics (millions) would make each analysis scan them all. The benchmark drops datapoints older
than `KEEP_METRICS_HOURS` once a virtual hour (CloudWatch itself keeps them 15 months): an interval verdict reads
the last judge run's minutes only; a phase verdict then covers the phase's last hours instead of all of it.
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
sys.path.insert(0, str(ROOT / "layers" / "shared"))

from flowkit import ENDPOINT, ROLE, create_endpoint  # noqa: E402

from inferops import shadow_tests  # noqa: E402
from inferops.storage import Repository  # noqa: E402
from twin.runtime import Twin  # noqa: E402

GOAL_EVENTS_30_DAYS = 5_000
CAP = 25_000
KEEP_METRICS_HOURS = 6
INTERVAL_MINUTES = 15
FUNCTIONS = (
    "ShadowStepsFunction",
    "ShadowJudgeFunction",
    "EndpointEventsFunction",
    "ApiFunction",
    "AlarmEventsFunction",
)


@dataclass
class Measured:
    days: float
    status: str
    reason: str
    history_events: int
    transitions: int
    states: Counter[str]
    watches: int
    interval_verdicts: int
    phase_verdicts: list[str]
    invocations: Counter[str]
    virtual_seconds: float
    wall_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _prune(twin: Twin, keep_seconds: float) -> None:
    """Forget datapoints older than `keep_seconds` (see the module docstring); moto keeps them in one list."""
    from datetime import UTC, datetime

    from moto.cloudwatch.models import cloudwatch_backends

    backend = cloudwatch_backends["123456789012"]["us-east-1"]
    horizon = datetime.fromtimestamp(twin.clock.now() - keep_seconds, UTC).replace(tzinfo=None)
    backend.metric_data[:] = [d for d in backend.metric_data if _naive(d.timestamp) >= horizon]


def _naive(stamp: Any) -> Any:
    return stamp.replace(tzinfo=None) if getattr(stamp, "tzinfo", None) else stamp


def run(days: float, judge_minutes: int | None = None) -> Measured:
    w0 = time.perf_counter()
    parameters = {"ShadowJudgeMinutes": str(judge_minutes)} if judge_minutes else None
    with Twin(parameters=parameters) as twin:
        create_endpoint(twin, count=2, rpm=600)
        request = {
            "endpoint_name": ENDPOINT,
            "model": {"source": "existing", "model_name": f"{ENDPOINT}-v2"},
            "role_arn": ROLE,
            "duration_hours": days * 24,
            "analysis_interval_minutes": INTERVAL_MINUTES,
            "sampling_steps": [10, 50, 100],
            "action": "promote",
        }
        t0 = twin.clock.now()
        status, reply = twin.api_request("POST", "/shadow-tests", body=request)
        assert status == 202, reply
        operation = reply["id"]
        _, view = twin.api_request("GET", f"/shadow-tests/{operation}")
        arn = view["execution_arn"]
        sfn = twin.client("stepfunctions")
        while sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            if twin.clock.now() - t0 > (days + 2) * 86400:
                raise TimeoutError(f"the {days}-day test did not end")
            twin.clock.sleep(3600)
            _prune(twin, KEEP_METRICS_HOURS * 3600)
        described = sfn.describe_execution(executionArn=arn)
        stopped = described["stopDate"].timestamp()
        twin.clock.sleep(5)
        history = twin.history(arn)
        # GET /shadow-tests/{id}'s own code, called in-process: a month of timeline read through moto takes longer
        # than the API function's 29-s timeout on the twin (DynamoDB answers that query in well under a second)
        table = twin.template.physical("OperationsTable").ref
        repo = Repository(table, client=twin.client("dynamodb"), clock=twin.clock.now)
        view = shadow_tests.get(operation, repo).model_dump(mode="json")
        invocations = Counter(i.function for i in twin.lambdas.invocations if t0 <= i.started <= stopped)
    entered = [e for e in history if e["type"].endswith("StateEntered")]
    states = Counter(e["stateEnteredEventDetails"]["name"] for e in entered)
    verdicts = view["verdicts"]
    return Measured(
        days=days,
        status=view["status"],
        reason=str((view.get("result") or {}).get("reason", ""))[:140],
        history_events=len(history),
        transitions=len(entered),
        states=states,
        watches=states["Watch"],
        interval_verdicts=sum(1 for v in verdicts if v["scope"] == "interval"),
        phase_verdicts=[f"{v['sampling']} %: {v['result']}" for v in verdicts if v["scope"] == "phase"],
        invocations=invocations,
        virtual_seconds=stopped - described["startDate"].timestamp(),
        wall_seconds=time.perf_counter() - w0,
        extra={"largest_event_bytes": max(len(json.dumps(e, default=str)) for e in history)},
    )


def _pf(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: list[Measured]) -> None:
    rows: list[tuple[str, list[str]]] = [
        ("outcome (GET /shadow-tests)", [m.status for m in results]),
        ("history events (all)", [str(m.history_events) for m in results]),
        ("  share of the 25,000-event cap", [f"{100 * m.history_events / CAP:.1f} %" for m in results]),
        ("state transitions (*StateEntered)", [str(m.transitions) for m in results]),
        ("watch tasks (Watch entered)", [str(m.watches) for m in results]),
        ("interval verdicts recorded", [str(m.interval_verdicts) for m in results]),
        ("phase verdicts", [", ".join(m.phase_verdicts) or "-" for m in results]),
    ]
    for fn in FUNCTIONS:
        rows.append((f"Lambda {fn}", [str(m.invocations[fn]) for m in results]))
    rows += [
        ("virtual duration", [f"{m.virtual_seconds / 86400:.2f} d" for m in results]),
        ("wall time (incl. twin set-up)", [f"{m.wall_seconds:.1f} s" for m in results]),
    ]
    width = max(len(r[0]) for r in rows)
    col = max(14, *(len(v) for _, vals in rows[:1] for v in vals))
    print(f"Shadow tests judged every {INTERVAL_MINUTES} min, sampling 10/50/100 %, promote; 2 x ml.c7g.large, 600 rpm")
    print(f"  {'':<{width}}  " + "  ".join(f"{f'{m.days:g} day(s)':>{col}}" for m in results))
    for name, values in rows:
        if name == "phase verdicts":
            print(f"  {name:<{width}}  " + " | ".join(values))
            continue
        print(f"  {name:<{width}}  " + "  ".join(f"{v:>{col}}" for v in values))
    for m in results:
        if m.status != "SUCCEEDED":
            print(f"  {m.days:g} d: {m.reason}")
    month = next((m for m in results if m.days >= 30), None)
    if month is not None:
        print(
            f"  30-day test: {month.history_events} history events (goal < {GOAL_EVENTS_30_DAYS}): "
            f"{_pf(month.history_events < GOAL_EVENTS_30_DAYS)}; "
            f"{month.interval_verdicts} interval verdicts kept in DynamoDB, not in the history"
        )
    print("  states entered (longest test): " + ", ".join(f"{s} x{n}" for s, n in results[-1].states.most_common()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 1-day test only (skip the 30-day test)")
    parser.add_argument("--week", action="store_true", help="add a 7-day test")
    parser.add_argument("--days", type=float, action="append", help="these test lengths instead (repeatable)")
    parser.add_argument(
        "--judge-minutes", type=int, help="the scheduled judge's period (template ShadowJudgeMinutes; default 5)"
    )
    parser.add_argument("--logs", action="store_true", help="let the handlers' logs through (stdout)")
    args = parser.parse_args()
    w0 = time.perf_counter()
    sink = sys.stdout if args.logs else open(os.devnull, "w")  # noqa: SIM115
    days = args.days or [1.0, *([7.0] if args.week else []), *([] if args.quick else [30.0])]
    with redirect_stdout(sink), redirect_stderr(sink if not args.logs else sys.stderr):
        results = [run(d, args.judge_minutes) for d in days]
    report(results)
    print(f"\ntotal wall time {time.perf_counter() - w0:.1f} s")


if __name__ == "__main__":
    main()
