"""Chaos suite: every flow on the twin under randomized faults, with invariants checked after each run.

    python tests/chaos/chaos.py [--runs N] [--budget SECONDS] [--seed S] [--flow NAME ...] [--workers W]

Each run is one flow (`FLOWS`, a registry: `@scenario(...)` adds one) in a fresh twin, with faults drawn from
one seeded RNG (`FaultPlan.draw`, printed with the run's seed, so `--seed S --runs 1 --flow F` replays it: the
fault schedule is the same, thread interleavings may differ):
- SageMaker: 20 % throttling on every operation, plus 5xx (InternalFailure / ServiceUnavailable) on two of the
  flow's state-changing operations;
- events on the bus: duplicated (up to x3), reordered, 10 % lost;
- one Lambda crash (Runtime.ExitError) of one of the flow's functions at a random moment;
- sometimes an unhealthy model (it fails its health check), sometimes an alarm forced into ALARM at a random
  moment (a deployment's rollback alarm, a shadow test's guard alarm; the scale-to-zero flows have none: their
  own alarm is what wakes them); in a scale-to-zero run the unhealthy model is the one the wake brings back;
- clients retry what is throttled, and send the same request again (same Idempotency-Key) up to twice.

Invariants (`Run.violations` names each broken one):
- no side effect twice: InferOps' state-changing SageMaker calls that SageMaker accepted never repeat with the
  same parameters in one run (no second UpdateEndpoint to one config, no second weights change, promotion or
  experiment start/stop); one request starts one execution; one wake per burst of requests (the client's
  repeated wake requests and the scale-from-zero alarm's events);
- every operation reaches a terminal state before its deadline (the lock lease it took), its execution ends;
- the endpoint always serves a known config (sampled every poll: the original or one the operation created,
  never Failed; a parked classic endpoint serves none), and at the end the one the outcome says;
- the endpoint's lock is released;
- shadow test: each verdict (per interval, judged by the scheduled judge or the flow's phase end, and per phase)
  recorded once; a candidate with errors (drawn for 30 % of the runs) never promoted;
- async results: every accepted request's result is indexed and counted exactly once, none dead-lettered;
- delivery: one delivery per approval (its event up to x3 on the bus), its stages all succeed or stop at the
  failed one, each endpoint serving what its stage says.

Not a pytest test; `tests/chaos/test_chaos.py` runs a fixed small seed set in `make test`, `make chaos` the
full suite. Exit status 1 when any run broke an invariant.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "shared", ROOT / "tests" / "flows"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from botocore.exceptions import ClientError  # noqa: E402
from flowkit import (  # noqa: E402
    ENDPOINT,
    create_async_endpoint,
    create_endpoint,
    create_guard_alarm,
    shadow_request,
)
from flowkit import request as deployment_request  # noqa: E402
from test_delivery_flow import GROUP as DELIVERY_GROUP  # noqa: E402
from test_delivery_flow import PACKAGE_EVENT, PRODUCTION, STAGING, set_up  # noqa: E402
from test_delivery_flow import policy as delivery_policy  # noqa: E402
from test_scaling_flow import ASYNC_ENDPOINT as ASYNC_SCALED  # noqa: E402
from test_scaling_flow import CLASSIC, IC, IC_ENDPOINT, async_endpoint, scaling_operations  # noqa: E402

from inferops.delivery_policy import Stage  # noqa: E402
from inferops.planner import new_config_name  # noqa: E402
from inferops.storage import Repository  # noqa: E402
from twin.calls import SageMakerCalls  # noqa: E402
from twin.cloudwatch_traffic import ModelProfile  # noqa: E402
from twin.demo import create_ic_endpoint  # noqa: E402
from twin.faults import EventFaults  # noqa: E402
from twin.runtime import Twin  # noqa: E402

TERMINAL = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "REFUSED", "ABORTED"}
THROTTLING = 0.2
SERVER_ERROR_RATE = 0.1
LOSE = 0.1
MAX_COPIES = 3
UNHEALTHY_SHARE = 0.2
ALARM_SHARE = 0.4
POLL_SECONDS = 60.0
MUTATING = ("Create", "Update", "Delete", "Stop", "Start")


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Scenario:
    name: str
    play: Callable[[Run], None]
    functions: tuple[str, ...]  # Lambdas one of which crashes once
    mutating: tuple[str, ...]  # SageMaker operations that may answer 5xx
    limit_seconds: float  # virtual time after which a run that has not ended is a violation
    alarms: bool = True  # the flow watches an alarm the scenario can force into ALARM
    requests: bool = True  # the flow starts from one API request a client may repeat


FLOWS: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    functions: tuple[str, ...],
    mutating: tuple[str, ...],
    limit_seconds: float,
    alarms: bool = True,
    requests: bool = True,
) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    """Register a flow's scenario: a function that sets the flow up, starts it and drives it to its end."""

    def register(play: Callable[[Run], None]) -> Callable[[Run], None]:
        FLOWS[name] = Scenario(name, play, functions, mutating, limit_seconds, alarms, requests)
        return play

    return register


# ---------------------------------------------------------------------- faults
@dataclass
class FaultPlan:
    seed: int
    server_errors: dict[str, str]
    duplicate: float
    reorder: float
    crash: str
    crash_at: float  # virtual seconds after the flow starts
    unhealthy: bool
    alarm_at: float | None
    repeats: int  # extra copies of the client's request (same Idempotency-Key)

    @classmethod
    def draw(cls, flow: Scenario, seed: int) -> FaultPlan:
        rng = random.Random(seed)
        failing = rng.sample(flow.mutating, k=min(2, len(flow.mutating)))
        crash = rng.choice(flow.functions)
        crash_at = rng.uniform(0, 900)
        return cls(
            seed=seed,
            server_errors={op: rng.choice(("InternalFailure", "ServiceUnavailable")) for op in failing},
            duplicate=rng.uniform(0.2, 0.6),
            reorder=rng.uniform(0.2, 0.6),
            crash=crash,
            crash_at=0.0 if crash == "ApiFunction" else crash_at,  # the API runs at the start: crash the POST
            unhealthy=rng.random() < UNHEALTHY_SHARE,
            alarm_at=rng.uniform(60, 1800) if rng.random() < ALARM_SHARE and flow.alarms else None,
            repeats=rng.randint(0, 2) if flow.requests else 0,
        )

    def describe(self) -> str:
        parts = [
            f"throttle {THROTTLING:.0%}",
            "5xx " + ",".join(f"{op}:{code}" for op, code in self.server_errors.items()),
            f"events dup {self.duplicate:.0%} (<= x{MAX_COPIES}) reorder {self.reorder:.0%} lost {LOSE:.0%}",
            f"crash {self.crash} @{self.crash_at:.0f}s",
        ]
        if self.unhealthy:
            parts.append("unhealthy model")
        if self.alarm_at is not None:
            parts.append(f"alarm @{self.alarm_at:.0f}s")
        if self.repeats:
            parts.append(f"request x{self.repeats + 1}")
        return "; ".join(parts)


# ---------------------------------------------------------------------- one run
@dataclass
class Run:
    flow: Scenario
    plan: FaultPlan
    twin: Twin
    calls: SageMakerCalls
    rng: random.Random
    violations: list[str] = field(default_factory=list)
    outcome: str = ""
    reason: str = ""
    started: float = 0.0
    samples: int = 0

    def check(self, ok: bool, invariant: str, detail: str) -> None:
        if not ok:
            self.violations.append(f"{invariant}: {detail}")

    def arm(self) -> None:
        """Turn the faults on (after the set-up, which a real team does on a good day) and schedule the rest."""
        faults = self.twin.faults
        self.storm()
        self.started = self.twin.clock.now()
        crash = self.plan.crash
        if self.plan.crash_at <= 0:
            faults.crash_once(crash)
        else:
            self.at(self.plan.crash_at, lambda: faults.crash_once(crash), "chaos crash")

    def storm(self) -> None:
        """SageMaker and event faults on (again, for a scenario that drives several operations in turn)."""
        faults = self.twin.faults
        faults.sagemaker_errors = {"*": ("ThrottlingException", THROTTLING)}
        faults.sagemaker_errors.update({op: (code, SERVER_ERROR_RATE) for op, code in self.plan.server_errors.items()})
        faults.events = EventFaults(
            lose=LOSE, duplicate=self.plan.duplicate, max_copies=MAX_COPIES, reorder=self.plan.reorder
        )

    def calm(self) -> None:
        """Faults off: the end-of-run reads are the harness's, not part of the scenario."""
        self.twin.faults.sagemaker_errors = {}
        self.twin.faults.events = EventFaults()

    def at(self, offset: float, action: Callable[[], None], name: str) -> None:
        self.twin.clock.call_at(self.started + offset, action, name=name)

    # ------------------------------------------------------------------ reads that survive the faults
    def sagemaker(self, operation: str, **params: Any) -> dict[str, Any]:
        """A harness read, retried like an SDK would when throttled."""
        client = self.twin.client("sagemaker")
        for attempt in range(20):
            try:
                result: dict[str, Any] = getattr(client, operation)(**params)
                return result
            except ClientError as error:
                if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400) < 500 and error.response[
                    "Error"
                ]["Code"] not in ("ThrottlingException",):
                    raise
                time.sleep(0.001 * attempt)
        raise TimeoutError(f"{operation} kept failing")

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """An API call retried on 5xx (throttled downstream: 503; a crashed function: 502), as the CLI does."""
        for _ in range(10):
            status, reply = self.twin.api_request(method, path, body=body, headers=headers, query=query)
            if status < 500:
                return status, reply
        return status, reply

    def post(self, path: str, body: dict[str, Any]) -> str:
        """Start an operation; the client sends the same request `repeats` more times (one Idempotency-Key)."""
        headers = {"Idempotency-Key": f"chaos-{self.plan.seed}"}
        ids = []
        for _ in range(1 + self.plan.repeats):
            status, reply = self.api("POST", path, body, headers)
            self.check(status == 202, "request accepted", f"POST {path} -> {status} {reply}")
            if status == 202:
                ids.append(str(reply["id"]))
        self.check(len(set(ids)) <= 1, "one operation per request", f"the same request got ids {ids}")
        if not ids:
            raise Abandoned(f"POST {path} never accepted")
        return ids[0]

    def repo(self) -> Repository:
        table = self.twin.template.physical("OperationsTable").ref
        return Repository(table, client=self.twin.client("dynamodb"), clock=self.twin.clock.now)

    # ------------------------------------------------------------------ driving an operation to its end
    def drive(
        self,
        operation_id: str,
        serving: Callable[[], str],
        known: Callable[[], set[str]],
        *,
        endpoint: str = ENDPOINT,
        executions: int = 1,
    ) -> dict[str, Any]:
        """Poll until the operation is terminal, sampling what the endpoint serves and the lock's lease.

        `executions`: how many executions of the flow's state machine the run has started by then (one per
        operation: a scale-to-zero run has an enable's and a wake's)."""
        repo = self.repo()
        deadline = 0.0
        terminal_at = None
        seen: list[tuple[float, float]] = []  # (when, lease end) at each change: the evidence of a late ending
        # each poll reads at one instant (time held): once the sleep ends, the clock waits for this thread instead of
        # jumping to the flow's next deadline (a heartbeat an hour away) before the poll has read anything
        with self.twin.busy():
            while True:
                lock = repo.get_lock(endpoint)
                if lock is not None and lock.owner == operation_id:
                    deadline = max(deadline, lock.lease_expires_at)
                    if not seen or seen[-1][1] != lock.lease_expires_at:
                        seen.append((self.twin.clock.now(), lock.lease_expires_at))
                served = serving()
                self.samples += 1
                self.check(served in known(), "serves a known config", f"{served} at +{self._elapsed():.0f}s")
                record = repo.get_operation(operation_id)
                if record.terminal:
                    terminal_at = self.twin.clock.now()
                    break
                if self._elapsed() > self.flow.limit_seconds:
                    break
                self.twin.clock.sleep(POLL_SECONDS)
        self.check(terminal_at is not None, "terminal", f"{record.status} after {self._elapsed():.0f}s")
        if terminal_at is not None and deadline and terminal_at > deadline + POLL_SECONDS:
            began = record.created_at.timestamp()
            trace = "; ".join(
                f"+{e.at.timestamp() - began:.0f}s {e.kind}: {e.message[:80]}" for e in repo.timeline(operation_id)
            )
            leases = ", ".join(f"+{t - began:.0f}s->+{lease - began:.0f}s" for t, lease in seen)
            self.check(
                False,
                "terminal before its deadline",
                f"ended {terminal_at - deadline:.0f}s after its lease (leases seen {leases}); timeline {trace}",
            )
        self.twin.clock.sleep(POLL_SECONDS)  # closing events, the lock release
        self.calm()
        self.twin.clock.sleep(5)
        self.outcome = str(record.status)
        self.reason = str((record.result or {}).get("reason", ""))
        self._check_execution(record.execution_arn, executions)
        lock = repo.get_lock(endpoint)
        self.check(lock is None, "lock released", f"{lock}")
        return record.model_dump(mode="json")

    def _check_execution(self, arn: str | None, expected: int) -> None:
        if arn is None:
            return
        sfn = self.twin.client("stepfunctions")
        status = sfn.describe_execution(executionArn=arn)["status"]
        self.check(status != "RUNNING", "execution ended", f"{arn} still RUNNING")
        machine = arn.split(":execution:")[1].split(":")[0]
        machine_arn = arn.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]
        started = sfn.list_executions(stateMachineArn=machine_arn)["executions"]
        self.check(len(started) == expected, "one execution per request", f"{len(started)} executions of {machine}")

    def _elapsed(self) -> float:
        return self.twin.clock.now() - self.started

    # ------------------------------------------------------------------ side effects
    def check_side_effects(self) -> None:
        """Each accepted state-changing call once. An endpoint deleted, recreated and deleted again (parked, a wake
        whose recreation failed, cleaned up) is three lives: Create/DeleteEndpoint count per life of the name."""
        seen: Counter[str] = Counter()
        lives: dict[str, tuple[str, int]] = {}  # endpoint name -> (last Create/DeleteEndpoint, how many switches)
        for call in self.calls.calls:
            if call.function is None or call.status >= 400 or not call.operation.startswith(MUTATING):
                continue
            key = call.operation + " " + json.dumps(call.params, sort_keys=True)
            if call.operation in ("CreateEndpoint", "DeleteEndpoint"):
                name = str((call.params or {}).get("EndpointName"))
                last, switches = lives.get(name, (call.operation, 0))
                lives[name] = (call.operation, switches + (last != call.operation))
                key += f" life {lives[name][1]}"
            seen[key] += 1
        for key, n in seen.items():
            self.check(n == 1, "no side effect twice", f"{n} x {key[:160]}")


class Abandoned(Exception):
    """The scenario could not go on (reported as a violation, the run ends)."""


@dataclass
class Result:
    flow: str
    seed: int
    faults: str
    injected: dict[str, int]
    violations: list[str]
    outcome: str
    reason: str
    virtual_seconds: float
    wall_seconds: float
    samples: int


@contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """The handlers log JSON to stdout: keep the report readable."""
    if not enabled:
        yield
        return
    with open(os.devnull, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
        yield


def run_one(flow_name: str, seed: int, *, quiet: bool = True) -> Result:
    flow = FLOWS[flow_name]
    plan = FaultPlan.draw(flow, seed)
    w0 = time.perf_counter()
    with _quiet(quiet), Twin(seed=seed, parameters={"LogLevel": "WARNING"}) as twin:
        with SageMakerCalls(twin).installed() as calls:
            run = Run(flow, plan, twin, calls, random.Random(seed ^ 0x5EED))
            try:
                flow.play(run)
            except (Abandoned, TimeoutError) as gave_up:  # a wait that never ended is the run's finding, not a crash
                run.check(False, "scenario", str(gave_up))
            run.check_side_effects()
        injected = twin.faults.report()
        virtual = twin.clock.now() - run.started
    return Result(
        flow_name,
        seed,
        plan.describe(),
        injected,
        run.violations,
        run.outcome,
        run.reason,
        virtual,
        time.perf_counter() - w0,
        run.samples,
    )


# ---------------------------------------------------------------------- scenarios
def _endpoint_config(run: Run) -> str:
    return str(run.sagemaker("describe_endpoint", EndpointName=ENDPOINT)["EndpointConfigName"])


def _created_configs(run: Run) -> set[str]:
    return {f"{ENDPOINT}-v1"} | {
        str((c.params or {}).get("EndpointConfigName")) for c in run.calls.effective("CreateEndpointConfig")
    }


def _deployment(run: Run, strategy: dict[str, Any]) -> None:
    twin = run.twin
    create_endpoint(twin)
    if run.plan.unhealthy:
        twin.sagemaker.set_model_health(f"{ENDPOINT}-v2", healthy=False)
    run.arm()
    operation = run.post("/deployments", deployment_request(strategy))
    status, view = run.api("GET", f"/deployments/{operation}")
    alarms = list((view.get("plan") or {}).get("alarms") or []) if status == 200 else []
    if run.plan.alarm_at is not None and alarms:
        alarm = run.rng.choice(alarms)
        cloudwatch = twin.client("cloudwatch")
        run.at(
            run.plan.alarm_at,
            lambda: cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="chaos"),
            "chaos alarm",
        )
    record = run.drive(operation, lambda: _endpoint_config(run), lambda: _created_configs(run))
    described = run.sagemaker("describe_endpoint", EndpointName=ENDPOINT)
    target = (record.get("plan") or {}).get("new_endpoint_config_name")
    expected = target if record["status"] == "SUCCEEDED" else f"{ENDPOINT}-v1"
    served = (described["EndpointStatus"], described["EndpointConfigName"])
    run.check(served == ("InService", expected), "serves what the outcome says", f"{record['status']} but {served}")


@scenario(
    "deployment-native",
    functions=("DeploymentStepsFunction", "EndpointEventsFunction", "ApiFunction"),
    mutating=("UpdateEndpoint", "CreateEndpointConfig", "CreateModel"),
    limit_seconds=6 * 3600,
)
def deployment_native(run: Run) -> None:
    strategy = {
        "type": "canary",
        "size": {"value": run.rng.choice([10, 25, 50])},
        "bake_seconds": run.rng.choice([300, 600, 1200]),
    }
    _deployment(run, strategy)


@scenario(
    "deployment-managed",
    functions=("DeploymentStepsFunction", "EndpointEventsFunction", "AlarmEventsFunction", "ApiFunction"),
    mutating=("UpdateEndpoint", "UpdateEndpointWeightsAndCapacities", "CreateEndpointConfig"),
    limit_seconds=8 * 3600,
)
def deployment_managed(run: Run) -> None:
    strategy = {
        "type": "managed",
        "steps": run.rng.choice([[10, 100], [25, 50, 100]]),
        "bake_seconds": run.rng.choice([300, 600, 900]),
    }
    _deployment(run, strategy)


GUARD = f"{ENDPOINT}-shadow-guard"
ERRING_SHARE = 0.3
"""Shadow runs whose candidate answers 30 % 5xx: stopped by a failing interval verdict (or an earlier fault)."""


def _production_models(run: Run) -> str:
    described = run.sagemaker("describe_endpoint", EndpointName=ENDPOINT)
    config = run.sagemaker("describe_endpoint_config", EndpointConfigName=described["EndpointConfigName"])
    if described["EndpointStatus"] == "Failed":
        return "Failed"
    return ",".join(sorted(v["ModelName"] for v in config["ProductionVariants"]))


@scenario(
    "shadow-test",
    functions=(
        "ShadowStepsFunction",
        "ShadowJudgeFunction",
        "EndpointEventsFunction",
        "AlarmEventsFunction",
        "ApiFunction",
    ),
    mutating=("CreateInferenceExperiment", "UpdateInferenceExperiment", "StopInferenceExperiment", "CreateModel"),
    limit_seconds=8 * 3600,
)
def shadow_test(run: Run) -> None:
    twin = run.twin
    create_endpoint(twin, count=2)
    create_guard_alarm(twin, GUARD)
    if run.plan.unhealthy:
        twin.sagemaker.set_model_health(f"{ENDPOINT}-v2", healthy=False)
    run.arm()
    action = run.rng.choice(["promote", "discard"])
    body = shadow_request(
        sampling_steps=run.rng.choice([[100], [10, 100], [10, 50, 100]]), action=action, guard_alarms=[GUARD]
    )
    erring = run.rng.random() < ERRING_SHARE  # a candidate with errors: the judge's verdicts must stop it
    if erring:
        twin.cloudwatch.set_model_profile(f"{ENDPOINT}-v2", ModelProfile(error_5xx_rate=0.3, model_error_rate=0.1))
    operation = run.post("/shadow-tests", body)
    if run.plan.alarm_at is not None:
        cloudwatch = twin.client("cloudwatch")
        run.at(
            run.plan.alarm_at,
            lambda: cloudwatch.set_alarm_state(AlarmName=GUARD, StateValue="ALARM", StateReason="chaos"),
            "chaos alarm",
        )
    known = {f"{ENDPOINT}-v1", f"{ENDPOINT}-v2"}
    record = run.drive(operation, lambda: _production_models(run), lambda: known)
    promoted = record["status"] == "SUCCEEDED" and (record.get("result") or {}).get("decision") == "promoted"
    expected = f"{ENDPOINT}-v2" if promoted else f"{ENDPOINT}-v1"
    served = _production_models(run)
    run.check(served == expected, "serves what the outcome says", f"{record['status']} but {served}")
    experiments = run.calls.effective("StopInferenceExperiment")
    run.check(len(experiments) <= 1, "one promotion or discard", f"{len(experiments)} StopInferenceExperiment")
    run.check(not (erring and promoted), "a candidate with errors is never promoted", str(record.get("result")))
    if erring:
        run.reason = f"(candidate with errors) {run.reason}"
    judged = [
        (e.data["scope"], e.data["phase"], e.data["interval"])
        for e in run.repo().timeline(operation)
        if e.kind == "verdict"
    ]
    twice = sorted({v for v in judged if judged.count(v) > 1})
    run.check(not twice, "each verdict recorded once", f"recorded twice: {twice}")


ASYNC_ENDPOINT = "doc-ocr-async"
ASYNC_BUCKET = "acme-ml-async"


@scenario(
    "async-results",
    functions=("AsyncResultsFunction",),
    mutating=("InvokeEndpointAsync",),
    limit_seconds=3 * 3600,
    alarms=False,
    requests=False,
)
def async_results(run: Run) -> None:
    twin = run.twin
    s3, sns = twin.client("s3"), twin.client("sns")
    requests = run.rng.randint(8, 20)
    with twin.busy():
        s3.create_bucket(Bucket=ASYNC_BUCKET)
        for n in range(requests):
            s3.put_object(Bucket=ASYNC_BUCKET, Key=f"input/{n}.json", Body=json.dumps({"page": n}).encode())
        create_async_endpoint(twin, ASYNC_ENDPOINT, ASYNC_BUCKET)
    twin.clock.sleep(60)
    received = _notifications(twin)
    run.arm()
    if run.plan.unhealthy:  # the model fails its health check for a while: those requests fail, still indexed
        run.at(run.rng.uniform(0, 120), lambda: twin.sagemaker.set_model_health("ocr-v1", healthy=False), "sick")
        run.at(run.rng.uniform(180, 600), lambda: twin.sagemaker.set_model_health("ocr-v1", healthy=True), "well")
    runtime = twin.client("sagemaker-runtime")
    accepted = []
    for n in range(requests):
        for _ in range(20):  # the client retries throttling and 5xx with the same InferenceId
            try:
                runtime.invoke_endpoint_async(
                    EndpointName=ASYNC_ENDPOINT,
                    InputLocation=f"s3://{ASYNC_BUCKET}/input/{n}.json",
                    InferenceId=f"r{n}",
                )
            except ClientError:
                continue
            accepted.append(f"r{n}")
            break
        twin.clock.sleep(run.rng.uniform(0, 20))
    twin.clock.sleep(300)
    # SNS delivers at least once and in any order: each notification again, up to twice more, shuffled
    success, failure = (twin.template.physical(t).ref for t in ("AsyncSuccessTopic", "AsyncErrorTopic"))
    again = [b for b in _notifications(twin)[len(received) :] for _ in range(run.rng.randint(0, MAX_COPIES - 1))]
    run.rng.shuffle(again)
    for body in again:
        topic = success if body.get("invocationStatus") == "Completed" else failure
        sns.publish(TopicArn=topic, Message=json.dumps(body))
        twin.clock.sleep(run.rng.uniform(0, 5))
    run.twin.faults.counts["sns.redelivered"] += len(again)
    twin.clock.sleep(3 * 180 + 120)  # a crashed batch comes back after the visibility timeout
    run.calm()
    lost = [i for i in accepted if run.api("GET", f"/async-results/{i}")[0] != 200]
    run.check(not lost, "no async result lost", f"{len(lost)} of {len(accepted)}: {lost[:5]}")
    status, stats = run.api("GET", f"/endpoints/{ASYNC_ENDPOINT}/async-stats", query={"hours": "6"})
    counted = (stats.get("completed", 0) + stats.get("failed", 0)) if status == 200 else -1
    run.check(counted == len(accepted), "each result counted once", f"{counted} counted for {len(accepted)}")
    dead = twin.template.queues["AsyncResultsDeadLetters"].url
    letters = twin.client("sqs").get_queue_attributes(QueueUrl=dead, AttributeNames=["ApproximateNumberOfMessages"])
    n_dead = int(letters["Attributes"]["ApproximateNumberOfMessages"])
    run.check(n_dead == 0, "nothing dead-lettered", f"{n_dead} SageMaker notification(s) in the dead-letter queue")
    run.outcome = f"{len(accepted)} results, {stats.get('failed', '?')} failed"


def _notifications(twin: Twin) -> list[dict[str, Any]]:
    """SageMaker's notifications (not TestNotification) the results function received, first receipt only."""
    found: dict[str, dict[str, Any]] = {}
    for invocation in twin.lambdas.of("AsyncResultsFunction"):
        for record in invocation.event["Records"]:
            try:
                body = json.loads(record["body"])
                message = json.loads(body["Message"]) if "Message" in body else body
            except (ValueError, KeyError):
                continue
            if message.get("inferenceId"):
                found.setdefault(str(message["inferenceId"]), message)
    return list(found.values())


# ---------------------------------------------------------------------- scale to zero
def _instances(run: Run, endpoint: str) -> int:
    variants = run.sagemaker("describe_endpoint", EndpointName=endpoint)["ProductionVariants"]
    return sum(int(v.get("CurrentInstanceCount", 0)) for v in variants)


def _copies(run: Run, component: str) -> int:
    described = run.sagemaker("describe_inference_component", InferenceComponentName=component)
    return int(described["RuntimeConfig"]["CurrentCopyCount"])


def _served_config(run: Run, endpoint: str) -> str:
    """The config the endpoint serves, "parked" while a parked classic endpoint does not exist."""
    try:
        described = run.sagemaker("describe_endpoint", EndpointName=endpoint)
    except ClientError:
        return "parked"
    return "Failed" if described["EndpointStatus"] == "Failed" else str(described["EndpointConfigName"])


def _scaling_operation(run: Run, endpoint: str, action: str, waited: float = 3 * 3600) -> str:
    """The id of the endpoint's one `action` operation (waiting for the alarm or the sweep to start it)."""
    run.twin.wait_for(lambda: any(o["action"] == action for o in scaling_operations(run.twin, endpoint)), 30, waited)
    found = [o["id"] for o in scaling_operations(run.twin, endpoint) if o["action"] == action]
    if not found:
        raise Abandoned(f"no {action} operation on {endpoint}")
    run.check(len(found) == 1, f"one {action}", f"{len(found)} {action} operations: {found}")
    return found[-1]


def _scale_to_zero(
    run: Run,
    endpoint: str,
    settings: dict[str, Any],
    *,
    at_zero: Callable[[], bool],
    arrive: Callable[[], None],
    serving: Callable[[], bool],
    model: str,
) -> None:
    """Enable -> traffic stops -> zero (or parked) -> traffic arrives and the client asks for a wake, up to x3
    at once -> exactly one wake -> serving the config it served before, everything under the run's faults.
    With an unhealthy model the wake fails (its capacity fails the health check) and leaves the endpoint at
    rest: at zero on its config, or parked (a recreated classic endpoint that failed is deleted again)."""
    twin = run.twin
    original = _served_config(run, endpoint)

    def known() -> set[str]:  # the original config, one the enable created (minimum 0), or none while parked
        created = run.calls.effective("CreateEndpointConfig")
        failed = {"Failed"} if run.plan.unhealthy else set()  # a recreated classic endpoint, until it is deleted
        return {original, "parked"} | failed | {str((c.params or {}).get("EndpointConfigName")) for c in created}

    run.arm()
    status, reply = run.api("PUT", f"/endpoints/{endpoint}/scale-to-zero", settings)
    run.check(status in (202, 409), "request accepted", f"PUT scale-to-zero -> {status} {reply}")  # 409: a retry
    enabled = run.drive(
        _scaling_operation(run, endpoint, "enable", 600),
        lambda: _served_config(run, endpoint),
        known,
        endpoint=endpoint,
    )
    if enabled["status"] != "SUCCEEDED":  # the enable failed cleanly: the endpoint must still serve as before
        run.check(_served_config(run, endpoint) == original, "serves what the outcome says", enabled["status"])
        return
    config = _served_config(run, endpoint)  # what it serves under scale to zero
    run.storm()  # the enable's end turned the faults off: idling, parking and the wake run under them too
    twin.cloudwatch.set_load_profile(endpoint, requests_per_minute=0)
    twin.wait_for(at_zero, 300, 6 * 3600)
    if not at_zero():
        raise Abandoned(f"{endpoint} never reached zero")
    if run.plan.unhealthy:
        twin.sagemaker.set_model_health(model, healthy=False)
    rest = _served_config(run, endpoint)  # where a failed wake must leave it
    arrive()
    twin.clock.sleep(run.rng.uniform(0, 120))  # the client's wake requests race the alarm's
    answers = [run.api("POST", f"/endpoints/{endpoint}/wake") for _ in range(1 + run.plan.repeats)]
    woken = {str((reply.get("operation") or {}).get("id")) for status, reply in answers if status in (200, 202)}
    started = [reply for status, reply in answers if status == 202 and reply.get("started")]
    run.check(len(started) <= 1, "one wake per request burst", f"{len(started)} wake requests started one")
    wake = _scaling_operation(run, endpoint, "wake")
    run.check(woken <= {wake}, "one wake per request burst", f"requests saw wakes {woken}, the endpoint {wake}")
    operations = len(scaling_operations(twin, endpoint))  # enable, (park,) wake: one execution each
    record = run.drive(wake, lambda: _served_config(run, endpoint), known, endpoint=endpoint, executions=operations)
    _scaling_operation(run, endpoint, "wake", 0)  # still one, once the burst and the alarm have settled
    woke = record["status"] == "SUCCEEDED"
    served = (_served_config(run, endpoint), not woke or serving())
    expected = (config if woke else rest, True)
    run.check(served == expected, "serves what the outcome says", f"{record['status']}: {served}")


@scenario(
    "scale-to-zero-components",
    functions=("ScalingStepsFunction", "AlarmEventsFunction", "ApiFunction"),
    mutating=("UpdateInferenceComponentRuntimeConfig", "UpdateEndpoint", "CreateEndpointConfig"),
    limit_seconds=10 * 3600,
    alarms=False,  # the flow's own alarm (no capacity) is what wakes it
)
def scale_to_zero_components(run: Run) -> None:
    create_ic_endpoint(run.twin, IC_ENDPOINT, IC)
    _scale_to_zero(
        run,
        IC_ENDPOINT,
        {"max_copies": run.rng.choice([1, 2])},
        at_zero=lambda: _copies(run, IC) == 0 and _instances(run, IC_ENDPOINT) == 0,
        arrive=lambda: run.twin.cloudwatch.set_load_profile(IC_ENDPOINT, requests_per_minute=30),
        serving=lambda: _copies(run, IC) >= 1,
        model=f"{IC}-v1",
    )


@scenario(
    "scale-to-zero-async",
    functions=("ScalingStepsFunction", "AlarmEventsFunction", "ApiFunction"),
    mutating=("UpdateEndpointWeightsAndCapacities", "UpdateEndpoint", "CreateEndpointConfig"),
    limit_seconds=10 * 3600,
    alarms=False,
)
def scale_to_zero_async(run: Run) -> None:
    async_endpoint(run.twin)
    _scale_to_zero(
        run,
        ASYNC_SCALED,
        {},
        at_zero=lambda: _instances(run, ASYNC_SCALED) == 0,
        arrive=lambda: run.twin.cloudwatch.set_load_profile(ASYNC_SCALED, requests_per_minute=10),
        serving=lambda: _instances(run, ASYNC_SCALED) >= 1,
        model="ocr-v1",
    )


@scenario(
    "scale-to-zero-classic",
    functions=("ScalingStepsFunction", "ScalingSweepFunction", "ApiFunction"),
    mutating=("DeleteEndpoint", "CreateEndpoint"),
    limit_seconds=10 * 3600,
    alarms=False,
)
def scale_to_zero_classic(run: Run) -> None:
    """A classic endpoint parked by the sweep once idle (deleted, its settings kept), woken on request."""
    create_endpoint(run.twin, count=2, name=CLASSIC, rpm=600)
    _scale_to_zero(
        run,
        CLASSIC,
        {"idle_minutes": run.rng.choice([15, 30])},
        at_zero=lambda: _served_config(run, CLASSIC) == "parked",
        arrive=lambda: run.twin.cloudwatch.set_load_profile(CLASSIC, requests_per_minute=600),
        serving=lambda: _instances(run, CLASSIC) == 2,
        model=f"{CLASSIC}-v1",
    )


# ---------------------------------------------------------------------- registry-driven delivery
@scenario(
    "delivery",
    functions=("DeliveryEventsFunction", "DeliveryStepsFunction", "DeploymentStepsFunction", "EndpointEventsFunction"),
    mutating=("UpdateEndpoint", "CreateEndpointConfig", "CreateModel"),
    limit_seconds=8 * 3600,
    alarms=False,
    requests=False,  # the registry's approval event starts it, not a request
)
def delivery(run: Run) -> None:
    """A package approved in the registry, its event on the bus up to x3 (SageMaker's, EventBridge's copies and the
    suite's duplicates): one delivery, whose stages complete or stop cleanly, each endpoint serving what it says."""
    twin = run.twin
    (package,) = set_up(twin, delivery_policy())
    if run.plan.unhealthy:  # the staging stage's new config fails its health check: production is not touched
        staging = Stage.model_validate(delivery_policy()["stages"][0]).deployment_request(package)
        twin.sagemaker.set_model_health(new_config_name(staging), healthy=False)
    run.arm()
    run.sagemaker("update_model_package", ModelPackageArn=package, ModelApprovalStatus="Approved")
    twin.clock.sleep(1)
    approved = [e for e in twin.bus.events if e.get("detail-type") == PACKAGE_EVENT][-1]
    for _ in range(run.rng.randint(0, MAX_COPIES - 1)):
        twin.bus.put_event(dict(approved))
    the_id = f"dlv-{DELIVERY_GROUP}-1"
    endpoints = (STAGING, PRODUCTION)
    view: dict[str, Any] = {}
    with twin.busy():  # each poll reads at one instant (see Run.drive)
        while run._elapsed() <= run.flow.limit_seconds:
            status, view = run.api("GET", f"/deliveries/{the_id}")
            for endpoint in endpoints:
                served = _served_config(run, endpoint)
                run.samples += 1
                known = {f"{endpoint}-v1"} | {
                    str((c.params or {}).get("EndpointConfigName")) for c in run.calls.effective("CreateEndpointConfig")
                }
                run.check(served in known, "serves a known config", f"{endpoint}: {served}")
            if status == 200 and view["status"] in TERMINAL:
                break
            twin.clock.sleep(POLL_SECONDS)
    twin.clock.sleep(POLL_SECONDS)
    run.calm()
    twin.clock.sleep(5)
    run.outcome = str(view.get("status"))
    run.reason = str(view.get("reason") or "")
    run.check(view.get("status") in TERMINAL, "terminal", f"{view.get('status')} after {run._elapsed():.0f}s")
    status, listed = run.api("GET", "/deliveries", query={"group": DELIVERY_GROUP})
    ids = [d["id"] for d in listed.get("deliveries", [])] if status == 200 else []
    run.check(ids == [the_id], "one delivery per approval", f"deliveries {ids}")
    stages = [s["status"] for s in view.get("stages", [])]
    run.check(
        stages == ["SUCCEEDED", "SUCCEEDED"] if view.get("status") == "SUCCEEDED" else "SUCCEEDED" not in stages[1:],
        "stages complete or stop cleanly",
        f"{view.get('status')} with stages {stages}",
    )
    for endpoint, stage in zip(endpoints, stages + ["PENDING"] * 2, strict=False):
        described = run.sagemaker("describe_endpoint", EndpointName=endpoint)
        served = (described["EndpointStatus"], described["EndpointConfigName"] != f"{endpoint}-v1")
        run.check(served == ("InService", stage == "SUCCEEDED"), "serves what the outcome says", f"{stage}: {served}")
        lock = run.repo().get_lock(endpoint)
        run.check(lock is None, "lock released", f"{endpoint}: {lock}")


# ---------------------------------------------------------------------- the suite
def _seeds(flows: list[str], base: int, runs: int) -> list[tuple[str, int]]:
    return [(flows[i % len(flows)], base + i) for i in range(runs)]


def suite(flows: list[str], base: int, runs: int, budget: float, workers: int) -> list[Result]:
    """Run up to `runs` scenarios (flows in turn), starting none after `budget` wall seconds."""
    began = time.perf_counter()
    todo = _seeds(flows, base, runs)
    results: list[Result] = []
    if workers <= 1:
        for flow, seed in todo:
            if time.perf_counter() - began > budget:
                break
            results.append(_report(run_one(flow, seed)))
        return results
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending: set[Future[Result]] = set()
        while todo or pending:
            while todo and len(pending) < workers and time.perf_counter() - began <= budget:
                flow, seed = todo.pop(0)
                pending.add(pool.submit(run_one, flow, seed))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            results += [_report(f.result()) for f in done]
    return results


def _report(result: Result) -> Result:
    mark = "ok  " if not result.violations else "FAIL"
    print(
        f"{mark} {result.flow:<19} seed {result.seed:<6} {result.outcome:<24} "
        f"{result.virtual_seconds / 60:5.0f} min virtual {result.wall_seconds:5.1f} s wall | {result.faults}",
        flush=True,
    )
    if result.reason:
        print(f"     reason: {result.reason[:150]}", flush=True)
    for violation in result.violations:
        print(f"     violation: {violation}", flush=True)
    return result


def summarize(results: list[Result], wall: float) -> None:
    print()
    print(f"{'flow':<20} {'runs':>5} {'violations':>10}  outcomes")
    for flow in sorted({r.flow for r in results}):
        mine = [r for r in results if r.flow == flow]
        outcomes = Counter(r.outcome.split(" ")[0] if r.flow != "async-results" else "indexed" for r in mine)
        bad = sum(len(r.violations) for r in mine)
        print(f"{flow:<20} {len(mine):>5} {bad:>10}  " + ", ".join(f"{k} {n}" for k, n in outcomes.most_common()))
    injected: Counter[str] = Counter()
    for r in results:
        for key, n in r.injected.items():
            family = key.split(".")[0] + "." + key.split(".")[-1] if key.startswith("sagemaker.") else key
            injected[family] += n
    print("faults injected: " + ", ".join(f"{k} {n}" for k, n in sorted(injected.items())))
    violations = sum(len(r.violations) for r in results)
    failed = sum(1 for r in results if r.violations)
    print(f"{len(results)} runs, {failed} with violations, {violations} violations, {wall:.0f} s wall")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--budget", type=float, default=1800, help="start no run after this many wall seconds")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: drawn and printed)")
    parser.add_argument("--flow", action="append", choices=sorted(FLOWS), help="repeatable; default: every flow")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    base = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    flows = args.flow or sorted(FLOWS)
    print(f"chaos: seed {base}, {args.runs} runs over {', '.join(flows)}, budget {args.budget:.0f} s")
    print(f"  replay run i: python tests/chaos/chaos.py --seed {base}+i --runs 1 --flow <its flow>")
    w0 = time.perf_counter()
    results = suite(flows, base, args.runs, args.budget, args.workers)
    summarize(results, time.perf_counter() - w0)
    return 1 if any(r.violations for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
