"""The shadow tests' interval judge: every analysis interval of a running shadow test judged once, on its own
window, by whoever comes first: the scheduled judge (`ShadowJudgeFunction`, every `ShadowJudgeMinutes` for the
whole fleet) or the test's own flow at the end of a phase (`inferops.shadow.phase_end`).

Why outside the execution: the flow waits out a whole phase in one parked task whose heartbeat timeout is the
phase's end (like a deployment's bake), so its state transitions and invocations do not grow with the test's
length. A test in a watched phase is listed in the table's index of due records (`Repository.commit_operation_state`,
gsi1 partition ``DUE#shadow``) at the instant its next interval's metrics are published; a run of the judge reads
what is due with one Query, judges each due interval on its own window exactly as the flow did, and moves the
test's listing to its next interval.

Exactly once: the test's progress record carries the markers `current` (the phase), `judged` (the phase's intervals
judged so far), `failing` (the Fail streak) and `failed`; they are the condition of the one TransactWriteItems that
writes the verdicts' timeline entries with the new markers. Whoever loses a race (a concurrent run, a retry, a
repeated schedule, the flow's PhaseEnd) writes nothing; a crash before the commit leaves the intervals to the next
run, after it they are done.

A failing verdict, confirmed (`CONFIRM_FAILS` in a row, or a critical error rate above its ceiling), is recorded as
`failed` in the same commit; then the flow's parked watch is failed with `AnalysisFailed` and the flow removes the
shadow. A flow that is not parked at that moment finds `failed` at its next step (its watch parks the token before
it reads the record). The judge also reads the guard alarms of the tests it judges (their event may be lost) and
ends a watch whose phase is over while it still waits (its end moved earlier by a PATCH).

What still grows with a test's length: one verdict (a timeline entry in DynamoDB) per interval, and for each run
with an interval due for the test: one GetMetricData (all its due intervals in one request), one UpdateItem (the
timeline's sequence numbers), one TransactWriteItems and, for the run's due tests together, one DescribeAlarms per
100 guard alarms. A run with nothing due costs the fleet one Query.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import boto3
from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict

from inferops import analysis, metrics
from inferops.errors import Conflict, InferOpsError
from inferops.planner import Analysis
from inferops.storage import Repository, TimelineNote, WaitPurpose

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_stepfunctions import SFNClient

KIND = "shadow_test"
PROGRESS = "shadow"
"""The name of a test's working record (`Repository.*_operation_state`): schedule, phases, markers, sampling."""
MAX_SAMPLING = 100
MAX_POINTS = 240
"""Most datapoints per series a verdict reads (a phase of days is judged on coarser datapoints)."""
CONFIRM_FAILS = 2
"""Failing interval verdicts in a row that stop a test early (one is enough above an error-rate ceiling)."""
METRIC_LAG_SECONDS = 60
"""An interval is judged this long after it ends: SageMaker publishes a minute's metrics after the minute."""
PHASE_END_GRACE_SECONDS = 120
"""The judge ends a watch still parked this long after its phase ended (the heartbeat timeout ends it first)."""
COMMIT_INTERVALS = 40
"""Interval verdicts per commit (TransactWriteItems takes 100 actions)."""
RUN_INTERVALS = 96
"""Most intervals of one test a run judges (a day of 15-minute intervals); the rest is left to the next run."""
READS_PER_REQUEST = 25
"""Tests judged from one GetMetricData request (10 to 20 queries each; a request takes 500)."""
BATCH_SPAN_SECONDS = 4 * 3600
"""Tests share a request when their windows lie within this span (a request returns 100,800 datapoints a page)."""


# ------------------------------------------------------------------------------------------------ the subject
class Subject(BaseModel):
    """What judging a test needs, stored in its progress record when the experiment runs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    endpoint: str
    production: str
    shadow: str
    config: str
    alarms: list[str]
    analysis: Analysis


def current_sampling(progress: dict[str, Any]) -> int | None:
    history = progress.get("sampling_history") or []
    return int(history[-1]["percent"]) if history else None


def windows(phase: dict[str, Any], interval: int, now: float) -> list[tuple[int, float, float]]:
    """The analysis windows of a phase that have ended by `now`: (index, start, end), each `interval` long and
    ending `METRIC_LAG_SECONDS` before it is due (the first starts with the phase)."""
    start, ends = float(phase["starts_at"]), float(phase["ends_at"])
    out: list[tuple[int, float, float]] = []
    index = 0
    while True:
        end = start + (index + 1) * interval - METRIC_LAG_SECONDS
        if end + METRIC_LAG_SECONDS > now + 1e-6 or end > ends + 1e-6:  # not over, or its minutes not published
            return out
        out.append((index, max(start, end - interval), end))
        index += 1


def pending(progress: dict[str, Any], now: float) -> list[tuple[int, float, float]]:
    """The current phase's windows that ended by `now` and are not judged yet."""
    phase = progress["phases"][int(progress.get("current") or 0)]
    done = int(progress.get("judged") or 0)
    return [w for w in windows(phase, int(progress["interval_seconds"]), now) if w[0] >= done]


def next_due(progress: dict[str, Any]) -> float:
    """When the current phase's next interval is due; past its last one, the phase's end plus a grace."""
    phase = progress["phases"][int(progress.get("current") or 0)]
    start, ends = float(phase["starts_at"]), float(phase["ends_at"])
    end = start + (int(progress.get("judged") or 0) + 1) * int(progress["interval_seconds"]) - METRIC_LAG_SECONDS
    if end > ends + 1e-6:
        return ends + PHASE_END_GRACE_SECONDS
    return end + METRIC_LAG_SECONDS


# ------------------------------------------------------------------------------------------------ judging
def read_of(subject: Subject, spans: list[tuple[float, float]], *, utilisation: bool) -> analysis.ShadowRead:
    """What to read to judge `subject` over [start, end) spans: one datapoint a minute (`analysis.interval_seconds`),
    coarser over a long span so that a series has at most `MAX_POINTS` datapoints (a 10-day phase is judged on
    hourly datapoints)."""
    spec = subject.analysis
    longest = max((end - start for start, end in spans), default=0.0)
    coarse = math.ceil(longest / MAX_POINTS / 60) * 60
    if coarse > spec.interval_seconds:
        spec = spec.model_copy(update={"interval_seconds": min(3600, coarse)})
    return analysis.ShadowRead(
        spec=spec,
        endpoint=subject.endpoint,
        production=subject.production,
        shadow=subject.shadow,
        config=subject.config,
        windows=[(_dt(start), _dt(end)) for start, end in spans],
        utilisation=utilisation,
    )


def evaluate(cloudwatch: CloudWatchClient, reads: list[analysis.ShadowRead]) -> list[list[analysis.Verdict]]:
    """A verdict per window of each read, from one GetMetricData request."""
    try:
        return analysis.evaluate_shadows(cloudwatch, reads)
    except ClientError as error:
        raise InferOpsError(f"reading the variants' metrics: {error}") from error


def verdict_note(
    verdict: analysis.Verdict,
    scope: Literal["interval", "phase"],
    phase: int,
    percent: int,
    start: float,
    end: float,
    index: int | None = None,
) -> tuple[dict[str, Any], TimelineNote]:
    """A verdict as the flow keeps it (its summary) and as the timeline shows it (the API's `verdicts`)."""
    summary = {
        "scope": scope,
        "phase": phase,
        "interval": index,
        "sampling": percent,
        "start": _dt(start).isoformat(),
        "end": _dt(end).isoformat(),
        "result": verdict.result.value,
        "score": verdict.score,
        "reason": verdict.reason,
    }
    what = f"phase {phase + 1}" if scope == "phase" else f"interval {(index or 0) + 1} of phase {phase + 1}"
    data = {**summary, "metrics": storable([_metric(m, full=scope == "phase") for m in verdict.metrics])}
    return summary, TimelineNote("verdict", f"{what} at {percent} %: {verdict.result.value} ({verdict.reason})", data)


def _metric(metric: analysis.MetricVerdict, *, full: bool) -> dict[str, Any]:
    """A metric's verdict as the timeline keeps it: whole for a phase, the gist for an interval (a 30-day test
    records thousands of interval verdicts; their reasons are in the verdict's own reason)."""
    if full:
        return metric.model_dump(mode="json")
    return metric.model_dump(mode="json", include={"name", "outcome", "effect", "p_value"})


def storable(value: Any) -> Any:
    """What DynamoDB can store: a p-value of 1e-300 underflows its numbers (1e-130 and up), inf is no number."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return 0.0 if abs(value) < 1e-100 else value
    if isinstance(value, dict):
        return {k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _over_ceiling(verdict: analysis.Verdict, ceiling: float) -> bool:
    """A critical error rate failed above its ceiling (the judge's `max_rate`)."""
    return any(
        m.critical and m.outcome is analysis.Outcome.FAIL and m.canary is not None and m.canary > ceiling
        for m in verdict.metrics
        if m.name in ("Invocation5XXErrors", "InvocationModelErrors")
    )


class Judged(NamedTuple):
    recorded: int
    """Interval verdicts this call recorded."""
    failed: str | None
    """Why the test must stop (recorded now or earlier), else None."""
    left: int
    """Intervals due but not judged by this call (its budget)."""
    raced: bool = False
    """Someone else moved the markers first: nothing more was written."""


class Due(NamedTuple):
    """A test's intervals to judge now, and what to read for them."""

    windows: list[tuple[int, float, float]]
    left: int
    """Due intervals left for later (the budget)."""
    read: analysis.ShadowRead


def due_now(progress: dict[str, Any], now: float, budget: int = RUN_INTERVALS) -> Due | None:
    """The current phase's intervals that ended and are not judged yet (at most `budget`); None when there are none
    or the test already failed."""
    due = [] if progress.get("failed") else pending(progress, now)
    if not due:
        return None
    phase = progress["phases"][int(progress.get("current") or 0)]
    percent = current_sampling(progress) or int(phase["sampling_percent"])
    subject = Subject.model_validate(progress["subject"])
    taken = due[:budget]
    read = read_of(subject, [(s, e) for _, s, e in taken], utilisation=percent == MAX_SAMPLING)
    return Due(taken, len(due) - len(taken), read)


def judge_pending(
    operation_id: str,
    progress: dict[str, Any],
    cloudwatch: CloudWatchClient,
    repo: Repository,
    now: float,
    *,
    listed: bool,
    budget: int = RUN_INTERVALS,
) -> Judged:
    """Judge the current phase's intervals that ended and are not judged yet, and record them (`record`)."""
    if progress.get("failed"):
        return Judged(0, str(progress["failed"]), 0)
    due = due_now(progress, now, budget)
    if due is None:
        return Judged(0, None, 0)
    [verdicts] = evaluate(cloudwatch, [due.read])
    return record(operation_id, progress, due, verdicts, repo, now, listed=listed)


def record(
    operation_id: str,
    progress: dict[str, Any],
    due: Due,
    verdicts: list[analysis.Verdict],
    repo: Repository,
    now: float,
    *,
    listed: bool,
) -> Judged:
    """Record the interval verdicts of `due`, each once (see the module docstring); why the test must stop, if it
    must.

    A month of 15-minute intervals is thousands of looks at the same data stream: at the judge's 5 % level some
    would fail a healthy shadow by chance (the 30-day benchmark saw one in ~1,000). So a Fail stops the test when
    the next interval confirms it (`CONFIRM_FAILS` in a row), or at once when a critical error rate is above its
    ceiling (`analysis.max_error_rate`: as plain as an alarm, and what a broken candidate shows).

    `listed`: the scheduled judge, which writes only while the test is on the due list and moves it to its next
    interval; the flow's PhaseEnd takes it off the list first.
    """
    subject = Subject.model_validate(progress["subject"])
    current = int(progress.get("current") or 0)
    phase = progress["phases"][current]
    percent = current_sampling(progress) or int(phase["sampling_percent"])
    judged, streak = int(progress.get("judged") or 0), int(progress.get("failing") or 0)
    recorded = 0
    for offset in range(0, len(due.windows), COMMIT_INTERVALS):
        expect = {"current": current, "judged": judged, "failing": streak, "failed": None}
        notes: list[TimelineNote] = []
        results: list[str] = []
        failed: str | None = None
        last: dict[str, Any] = {}
        for (index, start, end), verdict in zip(
            due.windows[offset : offset + COMMIT_INTERVALS],
            verdicts[offset : offset + COMMIT_INTERVALS],
            strict=True,
        ):
            last, note = verdict_note(verdict, "interval", current, percent, start, end, index)
            notes.append(note)
            results.append(verdict.result.value)
            judged = index + 1
            streak = streak + 1 if verdict.result is analysis.Result.FAIL else 0
            if streak >= CONFIRM_FAILS or (streak and _over_ceiling(verdict, subject.analysis.max_error_rate)):
                confirmed = f" ({streak} intervals in a row)" if streak > 1 else ""
                failed = f"interval verdict Fail at {percent} % sampling{confirmed}: {verdict.reason}"
                break
        fields = {"judged": judged, "failing": streak, "last_verdict": last, "failed": failed}
        after = {**progress, **fields}
        committed = repo.commit_operation_state(
            operation_id,
            PROGRESS,
            expect=expect,
            fields=fields,
            notes=notes,
            indexed=listed,
            **({"due": now if failed else next_due(after)} if listed else {}),
        )
        if not committed:
            return Judged(recorded, None, 0, raced=True)
        recorded += len(notes)
        for result in results:
            metrics.verdict(KIND, result)
        if failed:
            return Judged(recorded, failed, 0)
    return Judged(recorded, None, due.left)


# ------------------------------------------------------------------------------------------------ the flow's wait
def end_watch(
    repo: Repository,
    stepfunctions: SFNClient,
    endpoint: str,
    operation_id: str,
    *,
    output: dict[str, Any] | None = None,
    error: str = "",
    cause: str = "",
) -> str:
    """Resume (`output`) or fail (`error`) the test's parked watch: "delivered", "gone (...)" when its wait is over
    (the flow moved on), "not parked" when no token is stored. Throttled: the token is put back and it raises."""
    token = repo.take_own_task_token(endpoint, WaitPurpose.SHADOW_WATCH, operation_id)
    if token is None:
        return "not parked"
    gone = repo.send_to_task_token(stepfunctions, token, output=output, error=error, cause=cause)
    return f"gone ({gone})" if gone else "delivered"


def alarms_in_alarm(cloudwatch: CloudWatchClient, names: list[str]) -> list[str]:
    """Which of the guard alarms `names` are in ALARM (one DescribeAlarms per 100 names)."""
    tripped: list[str] = []
    unique = list(dict.fromkeys(names))
    for offset in range(0, len(unique), 100):
        response = cloudwatch.describe_alarms(
            AlarmNames=unique[offset : offset + 100], StateValue="ALARM", AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        )
        tripped += [a["AlarmName"] for a in response.get("MetricAlarms", [])]
        tripped += [a["AlarmName"] for a in response.get("CompositeAlarms", [])]
    return [n for n in tripped if n in unique]


# ------------------------------------------------------------------------------------------------ the scheduled run
@dataclass(frozen=True)
class Clients:
    repo: Repository
    cloudwatch: CloudWatchClient
    stepfunctions: SFNClient


def clients_from_env() -> Clients:
    return Clients(
        repo=Repository(os.environ["TABLE_NAME"]),
        cloudwatch=boto3.client("cloudwatch"),
        stepfunctions=boto3.client("stepfunctions"),
    )


class Decision(BaseModel):
    """What a run did for one test."""

    model_config = ConfigDict(frozen=True)

    operation_id: str
    action: Literal["judged", "failed", "stopped", "phase_over", "raced", "waiting"]
    recorded: int = 0
    watch: str | None = None
    """What became of the flow's parked watch when the run ended it."""
    why: str = ""


class Run(BaseModel):
    model_config = ConfigDict(frozen=True)

    decisions: list[Decision]
    failures: dict[str, str]
    """Tests the run could not judge (throttled, no access): the next run tries again."""


def run(clients: Clients, now: float) -> Run:
    """Judge every shadow test with an interval due; one test's failure does not stop the others."""
    listed = clients.repo.due_operation_states(PROGRESS, now)
    alarms = [name for _, progress in listed for name in (progress.get("subject") or {}).get("alarms", [])]
    failures: dict[str, str] = {}
    try:
        tripped = set(alarms_in_alarm(clients.cloudwatch, alarms))
    except ClientError as error:  # the alarms' events are the first line; their check waits for the next run
        tripped = set()
        failures["guard alarms"] = str(error)
    decisions, missed = judge_tests(listed, clients, now, tripped)
    return Run(decisions=decisions, failures={**failures, **missed})


def judge_tests(
    listed: list[tuple[str, dict[str, Any]]], clients: Clients, now: float, tripped: set[str]
) -> tuple[list[Decision], dict[str, str]]:
    """The due tests: their guard alarms, their due intervals (several tests' from one GetMetricData request),
    then what each flow's parked watch must learn. The decisions, and the tests that failed (by id)."""
    decisions: list[Decision] = []
    failures: dict[str, str] = {}
    reads: dict[str, Due] = {}
    progress_of = dict(listed)
    for operation_id, progress in listed:
        try:
            due = due_now(progress, now)
            if due is not None and not _tripped(progress, tripped):
                reads[operation_id] = due
            else:
                decisions.append(_without_verdicts(operation_id, progress, clients, now, tripped))
        except (ClientError, InferOpsError) as error:
            failures[operation_id] = str(error)
    for batch in _batches(reads):
        try:
            verdicts = evaluate(clients.cloudwatch, [reads[op].read for op in batch])
        except InferOpsError as error:
            failures |= dict.fromkeys(batch, str(error))
            continue
        for operation_id, judged in zip(batch, verdicts, strict=True):
            try:
                decisions.append(
                    _judged(operation_id, progress_of[operation_id], reads[operation_id], judged, clients, now)
                )
            except (ClientError, InferOpsError) as error:
                failures[operation_id] = str(error)
    return decisions, failures


def _tripped(progress: dict[str, Any], tripped: set[str]) -> list[str]:
    return [name for name in (progress.get("subject") or {}).get("alarms", []) if name in tripped]


def _batches(reads: dict[str, Due]) -> list[list[str]]:
    """Tests whose reads go in one GetMetricData request: up to `READS_PER_REQUEST`, over a span (from the first
    window's start to the last one's end) of at most `BATCH_SPAN_SECONDS` or the longest single read."""

    def span(due: Due) -> tuple[float, float]:
        return due.windows[0][1], due.windows[-1][2]

    batches: list[list[str]] = []
    first = last = 0.0
    for operation_id in sorted(reads, key=lambda op: span(reads[op])):
        start, end = span(reads[operation_id])
        limit = max(BATCH_SPAN_SECONDS, end - start)
        if batches and len(batches[-1]) < READS_PER_REQUEST and max(last, end) - first <= limit:
            batches[-1].append(operation_id)
            last = max(last, end)
        else:
            batches.append([operation_id])
            first, last = start, end
    return batches


def _without_verdicts(
    operation_id: str, progress: dict[str, Any], clients: Clients, now: float, tripped: set[str]
) -> Decision:
    """A listed test with nothing to judge now: a guard alarm, a failure to deliver again, a phase over, or a
    listing to move (its phase got longer)."""
    repo = clients.repo
    subject = Subject.model_validate(progress["subject"])
    alarms = _tripped(progress, tripped)
    if alarms:  # the alarm's event was lost or is late: stop as the alarm-events function would
        reason = f"guard alarm(s) {', '.join(alarms)} in ALARM"
        try:
            repo.request_stop(operation_id, kind="alarm", reason=reason, by=f"alarm:{alarms[0]}")
        except Conflict:
            return _unlist(repo, operation_id, "stopped", why="the test already ended")
        watch = end_watch(
            repo, clients.stepfunctions, subject.endpoint, operation_id, error="AlarmTriggered", cause=reason
        )
        return _unlist(repo, operation_id, "stopped", watch=watch, why=reason)
    if progress.get("failed"):  # an earlier run recorded it, then could not tell the flow
        return _fail_watch(operation_id, subject, str(progress["failed"]), 0, clients)
    if not _phase_over(progress, now):  # listed too early (its phase got longer): list it at its next interval
        marks = {"current": progress.get("current"), "judged": progress.get("judged")}
        repo.commit_operation_state(operation_id, PROGRESS, expect=marks, due=next_due(progress), indexed=True)
        return Decision(operation_id=operation_id, action="waiting")
    fresh = repo.get_operation_state(operation_id, PROGRESS)  # the listing may be stale: what did the flow do?
    if fresh is None or fresh.get("current") != progress.get("current") or not _phase_over(fresh, now):
        return Decision(operation_id=operation_id, action="waiting")
    watch = end_watch(repo, clients.stepfunctions, subject.endpoint, operation_id, output={"phase": "done", "at": now})
    return _unlist(repo, operation_id, "phase_over", watch=watch)


def _judged(
    operation_id: str,
    progress: dict[str, Any],
    due: Due,
    verdicts: list[analysis.Verdict],
    clients: Clients,
    now: float,
) -> Decision:
    """Record a test's verdicts; a confirmed failing one fails the flow's parked watch."""
    judged = record(operation_id, progress, due, verdicts, clients.repo, now, listed=True)
    if judged.raced:
        return Decision(operation_id=operation_id, action="raced", why="another writer recorded these intervals")
    if judged.failed:
        subject = Subject.model_validate(progress["subject"])
        return _fail_watch(operation_id, subject, judged.failed, judged.recorded, clients)
    return Decision(operation_id=operation_id, action="judged", recorded=judged.recorded)


def _fail_watch(operation_id: str, subject: Subject, why: str, recorded: int, clients: Clients) -> Decision:
    watch = end_watch(
        clients.repo, clients.stepfunctions, subject.endpoint, operation_id, error="AnalysisFailed", cause=why
    )
    return _unlist(clients.repo, operation_id, "failed", recorded=recorded, watch=watch, why=why)


def _phase_over(progress: dict[str, Any], now: float) -> bool:
    """The current phase ended a grace ago and has nothing left to judge: its watch should be over."""
    phase = progress["phases"][int(progress.get("current") or 0)]
    return now >= float(phase["ends_at"]) + PHASE_END_GRACE_SECONDS and not pending(progress, now)


def _unlist(
    repo: Repository,
    operation_id: str,
    action: Literal["failed", "stopped", "phase_over"],
    *,
    recorded: int = 0,
    watch: str | None = None,
    why: str = "",
) -> Decision:
    """The flow knows (or will find at its next step) what the run found: the test leaves the due list."""
    repo.commit_operation_state(operation_id, PROGRESS, expect={}, due=None)
    return Decision(operation_id=operation_id, action=action, recorded=recorded, watch=watch, why=why)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
