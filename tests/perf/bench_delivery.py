"""Benchmark: what one registry-driven delivery costs on the twin, and that a freeze does not grow its history.

Not a pytest test. Run: .venv/bin/python tests/perf/bench_delivery.py. It prints figures and PASS/MISS against the
goals; it asserts nothing.

A model package version approved in the registry is delivered to two endpoints (staging, production; each an
all-at-once deployment with a 5-minute bake) under a freeze window that covers the approval: 1 hour, then 72 hours.
For each: the delivery execution's Step Functions state transitions (`*StateEntered` events of its history: what
AWS bills), goal <= 40 and 72 h / 1 h <= 1.05 (a freeze is one parked task, not a Wait loop); the virtual time from
the approval event to the delivery's end; and the wall time of the whole run.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "flows"))
sys.path.insert(0, str(ROOT / "layers" / "shared"))

from flowkit import TERMINAL  # noqa: E402
from test_delivery_flow import GROUP, delivery, policy, set_approval, set_up  # noqa: E402

from twin.runtime import Twin  # noqa: E402

GOAL_TRANSITIONS = 40
GOAL_RATIO = 1.05


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Delivered:
    status: str
    transitions: int
    invocations: Counter[str]  # Lambda invocations per function from the approval to the delivery's end
    approved_at: float
    ended_at: float
    wall_seconds: float


def run(freeze_hours: float) -> Delivered:
    started = time.perf_counter()
    with Twin(parameters={"LogLevel": "WARNING"}) as twin:
        now = twin.clock.now()
        window = {"kind": "once", "starts_at": _iso(now - 60), "ends_at": _iso(now + freeze_hours * 3600)}
        (arn,) = set_up(twin, policy(freeze_windows=[window]))
        approved_at = twin.clock.now()
        set_approval(twin, arn, "Approved")
        twin.clock.sleep(5)  # the event reaches the handler
        the_id = f"dlv-{GROUP}-1"
        twin.wait_for(lambda: delivery(twin, the_id)["status"] in TERMINAL, 1800, (freeze_hours + 12) * 3600)
        twin.clock.sleep(1)
        view = delivery(twin, the_id)
        ended = datetime.fromisoformat(view["updated_at"].replace("Z", "+00:00")).timestamp()
        history = twin.history(str(view["execution_arn"]))
        invocations = Counter(i.function for i in twin.lambdas.invocations if approved_at <= i.started <= ended)
    transitions = sum(1 for e in history if str(e.get("type", "")).endswith("StateEntered"))
    return Delivered(str(view["status"]), transitions, invocations, approved_at, ended, time.perf_counter() - started)


def main() -> int:
    results = {}
    for hours in (1.0, 72.0):
        with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            results[hours] = run(hours)
        done = results[hours]
        verdict = "PASS" if done.transitions <= GOAL_TRANSITIONS and done.status == "SUCCEEDED" else "MISS"
        print(
            f"delivery, 2 stages, {hours:g} h freeze: {done.status}, {done.transitions} state transitions "
            f"(goal <= {GOAL_TRANSITIONS}: {verdict}), {(done.ended_at - done.approved_at) / 3600:.2f} h virtual, "
            f"{done.wall_seconds:.1f} s wall"
        )
    ratio = results[72.0].transitions / results[1.0].transitions
    verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
    print(f"state transitions, 72 h / 1 h freeze: {ratio:.2f} (goal <= {GOAL_RATIO}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
