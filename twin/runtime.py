"""The local twin: InferOps' whole backend on one machine, no AWS account, nothing leaves 127.0.0.1.

`Twin` (a context manager) starts moto (Step Functions execution on), one virtual clock, the event bus
and the faults; creates every resource of template.yaml in moto (tables with their exact keys, GSIs and
TTL, buckets, queues with their DLQs, topics, log groups, alarms, roles, functions, state machines with
their substituted definitions); runs the real handlers in-process; wires every EventBridge rule, SNS
subscription, SQS event source and schedule of the template; and installs the SageMaker simulator and the
CloudWatch model when their modules exist (`twin/sagemaker.py`, `twin/cloudwatch.py`).

    with Twin() as twin:                                   # the repo's template.yaml
        status, body = twin.api_request("GET", "/catalog/instances", query={"accelerator_kind": "gpu"})
        arn = twin.start_execution("DeploymentStateMachine", {"endpoint": "fraud-scorer"})
        done = twin.wait_execution(arn)                    # status, output, virtual_duration
        twin.advance(3600)                                 # let an hour of virtual time pass

Time: the clock jumps whenever nothing is busy and something waits on it (see `twin.clock`). A test
thread that only polls does not pull time; call `twin.advance(seconds)` to let time pass, and wrap steps
that must happen "at the same instant" (reading a task token, then answering it) in `with twin.busy():`,
or a waiting execution's timeout may fire in between.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import threading
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import boto3

from twin.bus import ACCOUNT, REGION, Bus, Rule, RuleTarget, envelope, format_event_time
from twin.clock import DEFAULT_START, ActivityThread, VirtualClock, set_time_source
from twin.faults import Faults
from twin.lambdas import ROOT, FunctionError, Invocation, LambdaRuntime, MotoLambdaBridge, Patches
from twin.stepfunctions import StepFunctionsOnClock, stop_running_executions, virtual_duration
from twin.template import EventSourceSpec, FunctionSpec, ScheduleSpec, TargetSpec, Template

DEFAULT_TEMPLATE = ROOT / "template.yaml"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
UNSET_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
SIMULATORS = (
    ("sagemaker", "twin.sagemaker", "SageMakerSimulator"),
    ("cloudwatch", "twin.cloudwatch", "CloudWatchModel"),
)


# ---------------------------------------------------------------------- targets (rules, schedules)
@dataclass
class LambdaTarget:
    runtime: LambdaRuntime
    logical_id: str
    source: str

    @property
    def name(self) -> str:
        return self.logical_id

    def deliver(self, payload: Any, event: Mapping[str, Any]) -> None:
        self.runtime.invoke_async(self.logical_id, payload, source=self.source)


@dataclass
class ServiceTarget:
    """A rule target that is an AWS call with the event as its body: a state machine, a queue, a topic."""

    twin: Twin
    logical_id: str
    service: str
    operation: str
    key: str  # the parameter naming the resource, e.g. QueueUrl
    resource: str
    body_key: str  # the parameter carrying the event, e.g. MessageBody

    @property
    def name(self) -> str:
        return self.logical_id

    def deliver(self, payload: Any, event: Mapping[str, Any]) -> None:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        getattr(self.twin.client(self.service), self.operation)(**{self.key: self.resource, self.body_key: body})


@dataclass
class BusTarget:
    bus: Bus
    bus_name: str

    @property
    def name(self) -> str:
        return f"bus:{self.bus_name}"

    def deliver(self, payload: Any, event: Mapping[str, Any]) -> None:
        self.bus.put_event(dict(event), bus_name=self.bus_name)


# ---------------------------------------------------------------------- schedules
class ScheduleError(ValueError):
    """A schedule expression EventBridge would refuse (or that the twin cannot evaluate)."""


_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
_MONTHS = {
    m: i for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}


def _cron_field(text: str, low: int, high: int, names: Mapping[str, int] | None = None) -> set[int] | None:
    """The values of one cron field (None for `?`); supports `*`, lists, ranges, steps and names."""
    if text == "?":
        return None
    values: set[int] = set()
    for part in text.split(","):
        if any(c in part for c in "LW#"):
            raise ScheduleError(f"cron {part!r}: L, W and # are not supported by the twin")
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            start, stop = low, high
        else:
            first, _, last = base.partition("-")
            start = _cron_value(first, names)
            stop = _cron_value(last, names) if last else (high if step_text else start)
        if not (low <= start <= high and low <= stop <= high):
            raise ScheduleError(f"cron field {text!r} out of range {low}-{high}")
        values.update(range(start, stop + 1, step))
    return values


def _cron_value(text: str, names: Mapping[str, int] | None) -> int:
    if names and text.upper() in names:
        return names[text.upper()]
    return int(text)


def next_fire(expression: str, after: float, *, tz: str = "UTC", created: float | None = None) -> float | None:
    """When a schedule next fires strictly after `after` (epoch seconds); None when it never will again."""
    rate = _RATE.match(expression.strip())
    if rate:
        period = int(rate.group(1)) * _UNIT[rate.group(2)]
        origin = after if created is None else created
        steps = int((after - origin) // period) + 1
        return origin + steps * period
    if expression.startswith("at(") and expression.endswith(")"):
        when = datetime.fromisoformat(expression[3:-1]).replace(tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()
        return when if when > after else None
    if expression.startswith("cron(") and expression.endswith(")"):
        return _next_cron(expression[5:-1].split(), after, zoneinfo.ZoneInfo(tz))
    raise ScheduleError(f"unsupported schedule expression {expression!r}")


def _next_cron(fields: list[str], after: float, tz: zoneinfo.ZoneInfo) -> float | None:
    if len(fields) != 6:
        raise ScheduleError("cron needs 6 fields: minutes hours day-of-month month day-of-week year")
    minutes = _cron_field(fields[0], 0, 59) or set(range(60))
    hours = _cron_field(fields[1], 0, 23) or set(range(24))
    days = _cron_field(fields[2], 1, 31)
    months = _cron_field(fields[3], 1, 12, _MONTHS) or set(range(1, 13))
    weekdays = _cron_field(fields[4], 1, 7, _DAYS)
    years = _cron_field(fields[5], 1970, 2199)
    if (days is None) == (weekdays is None):
        raise ScheduleError("cron: exactly one of day-of-month and day-of-week must be '?'")
    start = datetime.fromtimestamp(after, tz).replace(second=0, microsecond=0)
    day = start.date()
    for _ in range(366 * 5):
        weekday = (day.isoweekday() % 7) + 1  # cron: 1 = Sunday
        if (
            day.month in months
            and (years is None or day.year in years)
            and (days is None or day.day in days)
            and (weekdays is None or weekday in weekdays)
        ):
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    fire = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()
                    if fire > after:
                        return fire
        day += timedelta(days=1)
    return None


# ---------------------------------------------------------------------- SQS event sources
class QueuePoller:
    """Lambda's SQS poller for one event source, driven by the clock instead of long polling.

    A message arriving (moto's `Queue.add_message`) kicks a poll; the poll takes up to `BatchSize` messages
    (hidden for 12 hours so moto's wall-clock visibility never interferes), invokes the function in its own
    thread and deletes what succeeded. With `ReportBatchItemFailures`, the listed `batchItemFailures` - and
    on any function error, the whole batch - become visible again after the queue's VisibilityTimeout of
    *virtual* time; after `maxReceiveCount` receives, moto moves them to the DLQ on the next poll.
    """

    HIDE_SECONDS = 43_200
    POLL_LATENCY = 0.1

    def __init__(self, twin: Twin, spec: EventSourceSpec, url: str, visibility_timeout: int) -> None:
        self.twin = twin
        self.spec = spec
        self.url = url
        self.visibility_timeout = visibility_timeout
        self._lock = threading.Lock()
        self._scheduled = False
        self._busy = False
        self._again = False
        self.batches: list[dict[str, Any]] = []

    def kick(self, delay: float | None = None) -> None:
        with self._lock:
            if self._busy:
                self._again = True
                return
            if self._scheduled:
                return
            self._scheduled = True
        wait = self.POLL_LATENCY + self.spec.window if delay is None else delay
        self.twin.clock.call_later(wait, self._poll, name=f"poll {self.spec.queue_logical_id}")

    def _poll(self) -> None:
        with self._lock:
            self._scheduled = False
            if self._busy:
                self._again = True
                return
            self._busy = True
        messages = self._receive()
        if not messages:
            self._done(more=False)
            return
        ActivityThread(target=self._process, args=(messages,), daemon=True, clock=self.twin.clock).start()

    def _receive(self) -> list[dict[str, Any]]:
        sqs = self.twin.client("sqs")
        found: list[dict[str, Any]] = []
        while len(found) < self.spec.batch_size:
            reply = sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, self.spec.batch_size - len(found)),
                VisibilityTimeout=self.HIDE_SECONDS,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            )
            batch = reply.get("Messages", [])
            if not batch:
                break
            found.extend(batch)
        return found

    def _process(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m) for m in messages]}
        record = self.twin.lambdas.invoke(self.spec.function, event, source=f"sqs:{self.spec.queue_logical_id}")
        by_id = {m["MessageId"]: m for m in messages}
        failed: set[str] = set(by_id) if record.error is not None else set()
        if record.error is None and self.spec.report_failures:
            failed = self._reported_failures(record.payload, set(by_id))
        self.batches.append({"size": len(messages), "failed": sorted(failed), "error": record.error})
        sqs = self.twin.client("sqs")
        succeeded = [m for mid, m in by_id.items() if mid not in failed]
        for start in range(0, len(succeeded), 10):
            chunk = succeeded[start : start + 10]
            sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        for message_id in failed:
            handle = by_id[message_id]["ReceiptHandle"]
            self._release_later(handle, message_id)
        self._done(more=len(messages) >= self.spec.batch_size)

    def _release_later(self, receipt_handle: str, message_id: str) -> None:
        self.twin.clock.call_later(
            self.visibility_timeout, lambda: self._release(receipt_handle), name=f"visible {message_id}"
        )

    @staticmethod
    def _reported_failures(payload: Any, ids: set[str]) -> set[str]:
        """Lambda's rules: a malformed response or an unknown id fails the whole batch."""
        if payload is None or (isinstance(payload, dict) and not payload.get("batchItemFailures")):
            return set()
        try:
            listed = {str(item["itemIdentifier"]) for item in payload["batchItemFailures"]}
        except (TypeError, KeyError):
            return ids
        return listed if listed <= ids and "" not in listed else ids

    def _release(self, receipt_handle: str) -> None:
        with contextlib.suppress(Exception):  # deleted or moved meanwhile: nothing to release
            self.twin.client("sqs").change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=0
            )
        self.kick(delay=0.0)

    def _done(self, *, more: bool) -> None:
        with self._lock:
            self._busy = False
            again = self._again or more
            self._again = False
        if again:
            self.kick()

    def _record(self, message: Mapping[str, Any]) -> dict[str, Any]:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        for value in attributes.values():
            if value["binaryValue"] is None:
                del value["binaryValue"]
        record = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.spec.queue_arn,
            "awsRegion": REGION,
        }
        if message.get("MD5OfMessageAttributes"):
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        return record


# ---------------------------------------------------------------------- API Gateway events
def api_event(
    *,
    method: str,
    path: str,
    resource: str,
    path_parameters: Mapping[str, str] | None,
    query: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    body: str | None,
    api_id: str,
    stage: str,
    now: datetime,
    source_ip: str = "127.0.0.1",
    access_key: str = "ASIAEXAMPLEKEY",
) -> dict[str, Any]:
    """An API Gateway REST (proxy integration) event, shaped like events/api/create_plan.json."""
    single_query = {k: (v[-1] if isinstance(v, list) else str(v)) for k, v in (query or {}).items()}
    multi_query = {k: ([str(x) for x in v] if isinstance(v, list) else [str(v)]) for k, v in (query or {}).items()}
    header_map = dict(headers or {})
    user_agent = next((v for k, v in header_map.items() if k.lower() == "user-agent"), "twin")
    domain = f"{api_id}.execute-api.{REGION}.amazonaws.com"
    header_map.setdefault("Host", domain)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": header_map,
        "multiValueHeaders": {k: [v] for k, v in header_map.items()},
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": api_id,
            "extendedRequestId": uuid.uuid4().hex[:16],
            "httpMethod": method,
            "identity": {
                "accessKey": access_key,
                "accountId": ACCOUNT,
                "caller": "AROAEXAMPLEROLEID:twin",
                "sourceIp": source_ip,
                "user": "AROAEXAMPLEROLEID:twin",
                "userAgent": user_agent,
                "userArn": f"arn:aws:sts::{ACCOUNT}:assumed-role/Twin/twin",
            },
            "path": f"/{stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "resourceId": uuid.uuid5(uuid.NAMESPACE_URL, resource).hex[:6],
            "resourcePath": resource,
            "stage": stage,
        },
        "body": body,
        "isBase64Encoded": False,
    }


@dataclass
class Route:
    method: str
    template: str
    function: str
    auth: str
    api_id: str
    stage: str
    pattern: re.Pattern[str]


def _route_pattern(template: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{[^}]+\})", template):
        if piece.startswith("{") and piece.endswith("}"):
            name = piece[1:-1]
            greedy = name.endswith("+")
            name = name.rstrip("+")
            parts.append(f"(?P<{re.sub(r'[^A-Za-z0-9_]', '_', name)}>{'.+' if greedy else '[^/]+'})")
        else:
            parts.append(re.escape(piece))
    return re.compile("^" + "".join(parts) + "/?$")


# ---------------------------------------------------------------------- the twin
class Twin:
    """The whole backend offline (see the module docstring).

    `template` (default: the repo's template.yaml) and `root` (what CodeUri/ContentUri/DefinitionUri are
    relative to; default: the template's folder). `speed`: virtual seconds per wall second while something
    is busy (1.0 keeps Lambda timeouts honest; idle time jumps anyway). `seed`: the faults' RNG.
    `schedules` / `simulators`: arm the template's schedules / install twin.sagemaker and twin.cloudwatch.

    Attributes: `clock`, `bus`, `faults`, `lambdas` (the in-process runtime and its `invocations`),
    `template`, `sagemaker` / `cloudwatch` (None when absent), `pollers` (SQS event sources), `executions`
    (virtual start/stop of the executions started through the twin), `warnings`.
    """

    def __init__(
        self,
        template: str | Path | None = None,
        root: str | Path | None = None,
        *,
        speed: float = 1.0,
        auto_advance: bool = True,
        start: float = DEFAULT_START,
        seed: int = 0,
        parameters: Mapping[str, str] | None = None,
        event_latency: float = 0.5,
        schedules: bool = True,
        simulators: bool = True,
    ) -> None:
        template_path = Path(template) if template is not None else DEFAULT_TEMPLATE
        self.template = Template(template_path, root, parameters=parameters)  # paths: relative to root or the template
        self.clock = VirtualClock(start=start, speed=speed, auto_advance=auto_advance)
        self.faults = Faults(seed=seed)
        self.bus = Bus(self.clock, faults=self.faults, latency=event_latency)
        self.lambdas = LambdaRuntime(self.template, self.clock, self.faults)
        self.stepfunctions = StepFunctionsOnClock(self.clock)
        self.sagemaker: Any = None
        self.cloudwatch: Any = None
        self.pollers: dict[str, QueuePoller] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self._with_schedules = schedules
        self._with_simulators = simulators
        self._bridge = MotoLambdaBridge(self.lambdas)
        self.lambdas.on_failure = self._async_failed
        self._patches = Patches()
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._mock: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._simulators: list[Any] = []
        self.warnings: list[str] = list(self.template.unsupported)
        self._schedule_timers: list[Any] = []
        self._running = False

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> Twin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    _active: ClassVar[Twin | None] = None

    def start(self) -> None:
        if self._running:
            return
        if Twin._active is not None:
            raise RuntimeError("another Twin is running in this process: moto's mock and the clock shims are global")
        from moto import mock_aws

        self._set_env()
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        self._running = True
        Twin._active = self
        try:
            set_time_source(self.clock)
            self.stepfunctions.install()
            self.lambdas.install()
            self._bridge.install()
            self._patch_moto()
            self._create_resources()
            if self._with_simulators:
                self._install_simulators()
            self._wire()
            self.clock.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        with contextlib.suppress(Exception):
            stop_running_executions(self.client("stepfunctions"))
        # let in-flight work (an invocation, a delivery) finish against moto, not against the network
        if not self.clock.wait_quiet(timeout_real=5.0):
            self.warnings.append("stopped while work was still running")
        for simulator in reversed(self._simulators):
            with contextlib.suppress(Exception):
                simulator.uninstall()
        self._simulators.clear()
        self.clock.stop()
        self._patches.restore()
        self._bridge.uninstall()
        self.lambdas.uninstall()
        self.stepfunctions.uninstall()
        set_time_source(None)
        self._mock.stop()
        self._clients.clear()
        self._restore_env()
        Twin._active = None

    def _set_env(self) -> None:
        for name in (*FAKE_ENV, *UNSET_ENV):
            self._saved_env[name] = os.environ.get(name)
        for name in UNSET_ENV:
            os.environ.pop(name, None)
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
            self._saved_env[name] = os.environ.pop(name)
        os.environ.update(FAKE_ENV)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    # -------------------------------------------------------------- moto patches owned by the runtime
    def _patch_moto(self) -> None:
        from moto.events.models import EventsBackend
        from moto.sqs.models import Queue

        twin = self
        original_add = Queue.add_message

        def put_events(backend: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [twin._put_entry(entry) for entry in events]

        def add_message(queue: Any, message: Any) -> None:
            original_add(queue, message)
            for poller in twin.pollers.values():
                if poller.spec.queue_arn == queue.queue_arn:
                    poller.kick()

        self._patches.set(EventsBackend, "put_events", put_events)
        self._patches.set(Queue, "add_message", add_message)

    def _put_entry(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """PutEvents, as EventBridge validates it, into the twin's bus."""
        source, detail_type, detail = entry.get("Source"), entry.get("DetailType"), entry.get("Detail")
        if not source:
            return {
                "ErrorCode": "InvalidArgument",
                "ErrorMessage": "Parameter Source is not valid. Reason: Source is a required argument.",
            }
        if not detail_type:
            return {
                "ErrorCode": "InvalidArgument",
                "ErrorMessage": "Parameter DetailType is not valid. Reason: DetailType is a required argument.",
            }
        if str(source).startswith("aws."):
            return {"ErrorCode": "NotAuthorizedForSourceException", "ErrorMessage": "Not authorized for the source."}
        try:
            parsed = json.loads(detail) if detail else None
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
        when = entry.get("Time")
        if isinstance(when, int | float):
            when = datetime.fromtimestamp(when, UTC)
        elif isinstance(when, str):
            when = (
                datetime.fromisoformat(when)
                if not when.replace(".", "").isdigit()
                else datetime.fromtimestamp(float(when), UTC)
            )
        bus_name = str(entry.get("EventBusName") or "default").rsplit("/", 1)[-1]
        event = envelope(
            source=str(source),
            detail_type=str(detail_type),
            detail=parsed,
            resources=list(entry.get("Resources") or []),
            time=when if isinstance(when, datetime) else self.clock.utcnow(),
        )
        return {"EventId": self.bus.put_event(event, bus_name=bus_name)}

    # -------------------------------------------------------------- resources
    def _async_failed(self, spec: FunctionSpec, record: Invocation, attempts: int) -> None:
        """Lambda's OnFailure destination for an async invocation out of retries: an SQS queue gets the
        invocation record (request payload, the function's error), as Lambda sends it."""
        if spec.on_failure is None:
            return
        found = self.template.by_arn(spec.on_failure)
        if found is None or found[0] != "sqs":
            self.warnings.append(f"{spec.logical_id}: OnFailure destination {spec.on_failure} is not an SQS queue")
            return
        body = {
            "version": "1.0",
            "timestamp": format_event_time(self.clock.utcnow()),
            "requestContext": {
                "requestId": record.request_id,
                "functionArn": f"{spec.arn}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": record.event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": record.payload,
        }
        queue = self.template.queues[found[1]].url
        self.client("sqs").send_message(QueueUrl=queue, MessageBody=json.dumps(body, default=str))

    def client(self, service: str) -> Any:
        """A boto3 client bound to the twin (moto), cached per service."""
        with self._clients_lock:
            if service not in self._clients:
                session: Any = _session()
                self._clients[service] = session.client(service, region_name=REGION)
            return self._clients[service]

    def _create_resources(self) -> None:
        t = self.template
        for table in t.tables:
            self._create_table(table.name, table.properties)
        s3 = self.client("s3")
        for bucket in t.buckets:
            s3.create_bucket(Bucket=bucket.name)
            versioning = (bucket.properties.get("VersioningConfiguration") or {}).get("Status")
            if versioning:
                s3.put_bucket_versioning(Bucket=bucket.name, VersioningConfiguration={"Status": versioning})
        sqs = self.client("sqs")
        for queue in t.queues.values():
            sqs.create_queue(QueueName=queue.name, Attributes=queue.attributes)
        for queue in t.queues.values():
            if queue.redrive_target:
                policy = {
                    "deadLetterTargetArn": t.queues[queue.redrive_target].arn,
                    "maxReceiveCount": queue.max_receive_count,
                }
                sqs.set_queue_attributes(QueueUrl=queue.url, Attributes={"RedrivePolicy": json.dumps(policy)})
        sns = self.client("sns")
        for topic in t.topics.values():
            sns.create_topic(Name=topic.name, Attributes=topic.attributes)
        logs = self.client("logs")
        for group in t.log_groups:
            with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
                logs.create_log_group(logGroupName=group)
        events = self.client("events")
        for bus in t.buses:
            events.create_event_bus(Name=bus)
        iam = self.client("iam")
        for role in t.roles.values():
            iam.create_role(
                RoleName=role, AssumeRolePolicyDocument=_trust("lambda.amazonaws.com", "states.amazonaws.com")
            )
        self.lambdas.register_in_moto(iam, self.client("lambda"))
        sfn = self.client("stepfunctions")
        for machine in t.state_machines.values():
            sfn.create_state_machine(
                name=machine.name, definition=machine.definition, roleArn=machine.role_arn, type=machine.type
            )
        cloudwatch = self.client("cloudwatch")
        for alarm in t.alarms:
            cloudwatch.put_metric_alarm(**_alarm_arguments(alarm))

    def _create_table(self, name: str, props: Mapping[str, Any]) -> None:
        ddb = self.client("dynamodb")
        if "PrimaryKey" in props or "KeySchema" not in props:  # AWS::Serverless::SimpleTable
            key = props.get("PrimaryKey") or {"Name": "id", "Type": "String"}
            kind = {"String": "S", "Number": "N", "Binary": "B"}[key.get("Type", "String")]
            props = {
                "AttributeDefinitions": [{"AttributeName": key["Name"], "AttributeType": kind}],
                "KeySchema": [{"AttributeName": key["Name"], "KeyType": "HASH"}],
                "BillingMode": "PAY_PER_REQUEST",
            }
        args: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        if args["BillingMode"] == "PROVISIONED":
            args["ProvisionedThroughput"] = props.get("ProvisionedThroughput") or {
                "ReadCapacityUnits": 5,
                "WriteCapacityUnits": 5,
            }
        for key in (
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "StreamSpecification",
            "SSESpecification",
            "Tags",
        ):
            if props.get(key):
                args[key] = props[key]
        if "SSESpecification" in args:
            args["SSESpecification"] = {"Enabled": bool(args["SSESpecification"].get("SSEEnabled", False))}
        if "StreamSpecification" in args:
            args["StreamSpecification"] = {"StreamEnabled": True, **args["StreamSpecification"]}
        ddb.create_table(**args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
            )

    # -------------------------------------------------------------- simulators
    def _install_simulators(self) -> None:
        """Compose the SageMaker simulator and the CloudWatch model when their modules exist.

        Each is built as `Class(clock, bus, **what it asks for)`: `faults`, `seed`, `region`, `account` /
        `account_id`, `template`, `twin`, and `topology` (the SageMaker simulator, for the CloudWatch model).
        """
        for attribute, module_name, class_name in SIMULATORS:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name == module_name:
                    continue
                raise
            available: dict[str, Any] = {
                "faults": self.faults,
                "seed": self.faults.seed,
                "twin": self,
                "template": self.template,
                "region": REGION,
                "account": ACCOUNT,
                "account_id": ACCOUNT,
                "topology": self.sagemaker,
            }
            cls = getattr(module, class_name)
            parameters = list(inspect.signature(cls).parameters.values())[2:]
            kwargs: dict[str, Any] = {}
            missing = []
            for parameter in parameters:
                if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                    continue
                if available.get(parameter.name) is not None:
                    kwargs[parameter.name] = available[parameter.name]
                elif parameter.default is parameter.empty:
                    missing.append(parameter.name)
            if missing:
                self.warnings.append(f"{class_name} not installed: nothing to pass for {', '.join(missing)}")
                continue
            instance = cls(self.clock, self.bus, **kwargs)
            instance.install()
            self._simulators.append(instance)
            setattr(self, attribute, instance)

    # -------------------------------------------------------------- wiring
    def _target(self, spec: TargetSpec, source: str) -> Any:
        t = self.template
        if spec.kind == "lambda":
            return LambdaTarget(self.lambdas, spec.logical_id, source)
        if spec.kind == "statemachine":
            arn = t.state_machines[spec.logical_id].arn
            return ServiceTarget(
                self, spec.logical_id, "stepfunctions", "start_execution", "stateMachineArn", arn, "input"
            )
        if spec.kind == "sqs":
            url = t.queues[spec.logical_id].url
            return ServiceTarget(self, spec.logical_id, "sqs", "send_message", "QueueUrl", url, "MessageBody")
        if spec.kind == "sns":
            arn = t.topics[spec.logical_id].arn
            return ServiceTarget(self, spec.logical_id, "sns", "publish", "TopicArn", arn, "Message")
        if spec.kind == "bus":
            return BusTarget(
                self.bus, spec.logical_id if spec.logical_id == "default" else str(t.physical(spec.logical_id).ref)
            )
        return None

    def _wire(self) -> None:
        t = self.template
        for rule in t.rules:
            targets = [
                RuleTarget(target, spec.input, spec.target_id)
                for spec in rule.targets
                if (target := self._target(spec, f"events:{rule.logical_id}")) is not None
            ]
            self.bus.add_rule(Rule(rule.name, rule.pattern, targets, rule.bus_name, rule.enabled, rule.logical_id))
        sns = self.client("sns")
        for sub in t.subscriptions:
            attributes: dict[str, str] = {}
            if sub.raw:
                attributes["RawMessageDelivery"] = "true"
            if sub.filter_policy:
                attributes["FilterPolicy"] = json.dumps(sub.filter_policy)
                attributes["FilterPolicyScope"] = sub.filter_scope
            sns.subscribe(TopicArn=sub.topic_arn, Protocol=sub.protocol, Endpoint=sub.endpoint, Attributes=attributes)
        for source in t.event_sources:
            if source.enabled:
                queue = t.queues[source.queue_logical_id]
                self.pollers[source.logical_id] = QueuePoller(self, source, queue.url, queue.visibility_timeout)
        if self._with_schedules:
            for schedule in t.schedules:
                if schedule.enabled:
                    self._arm(schedule, created=self.clock.now())

    def _arm(self, schedule: ScheduleSpec, *, created: float) -> None:
        when = next_fire(schedule.expression, self.clock.now(), tz=schedule.timezone, created=created)
        if when is None:
            return
        target = self._target(schedule.target, f"schedule:{schedule.logical_id}")
        if target is None:
            return

        def fire() -> None:
            if schedule.kind == "rule":
                rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{self.template.stack_name}-{schedule.logical_id}"
                event = envelope(
                    source="aws.events",
                    detail_type="Scheduled Event",
                    detail={},
                    resources=[rule_arn],
                    time=self.clock.utcnow(),
                )
                payload = schedule.target.input.render(event)
            else:
                payload = json.loads(schedule.input) if schedule.input else {}
            target.deliver(payload, {})
            self._arm(schedule, created=created)

        self._schedule_timers.append(self.clock.call_at(when, fire, name=f"schedule {schedule.logical_id}"))

    # -------------------------------------------------------------- using the twin
    def invoke(self, logical_id: str, event: Any) -> Any:
        """Invoke a function synchronously; its result, or `FunctionError` if it failed."""
        return self.lambdas.call(logical_id, event)

    def start_execution(self, state_machine: str, input: Any = None, *, name: str | None = None) -> str:
        """Start an execution of a template state machine (logical id, name or ARN); its ARN."""
        arn = self._machine_arn(state_machine)
        body = input if isinstance(input, str) else json.dumps({} if input is None else input)
        args = {"stateMachineArn": arn, "input": body, **({"name": name} if name else {})}
        execution_arn = str(self.client("stepfunctions").start_execution(**args)["executionArn"])
        self.executions[execution_arn] = {"state_machine": state_machine, "started_virtual": self.clock.now()}
        return execution_arn

    def _machine_arn(self, state_machine: str) -> str:
        if state_machine.startswith("arn:"):
            return state_machine
        for spec in self.template.state_machines.values():
            if state_machine in (spec.logical_id, spec.name):
                return spec.arn
        raise KeyError(f"no state machine {state_machine!r}; have {sorted(self.template.state_machines)}")

    def wait_execution(self, execution_arn: str, *, timeout_real: float = 10.0) -> dict[str, Any]:
        """Wait (wall time) for an execution to end; its description plus `virtual_duration` (seconds)."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout_real
        pause = 0.001
        while True:
            description: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{execution_arn} still RUNNING after {timeout_real}s wall")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.02)  # poll gently: the interpreter's threads need the GIL more than we do
        description["virtual_duration"] = virtual_duration(description)
        info = self.executions.setdefault(execution_arn, {})
        info["stopped_virtual"] = description["stopDate"].timestamp()
        return description

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        """The execution's history events (virtual timestamps), all pages."""
        pages = self.client("stepfunctions").get_paginator("get_execution_history").paginate(executionArn=execution_arn)
        return [event for page in pages for event in page["events"]]

    def advance(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass, everything due firing in order on the way (jumps when idle)."""
        if self.clock.auto_advance:
            self.clock.sleep(seconds)
        else:
            self.clock.advance(seconds)

    def wait_for(self, done: Callable[[], bool], step: float = 30.0, limit: float = 12 * 3600) -> float:
        """Let virtual time pass in steps until `done()`; the virtual seconds it took.

        `done()` runs with time held: once a step's sleep ends, the clock waits for this thread (it does not jump
        to the next deadline, say a flow's heartbeat an hour away, while `done()` has not looked yet)."""
        start = self.clock.now()
        with self.clock.activity():
            while not done():
                if self.clock.now() - start > limit:
                    raise TimeoutError(f"not done after {limit:.0f} s of virtual time")
                self.clock.sleep(step)
        return self.clock.now() - start

    # -------------------------------------------------------------- the API
    def routes(self) -> list[Route]:
        t = self.template
        found = []
        for route in t.routes:
            api = t.apis.get(route.api)
            api_id = api.api_id if api else str(t.physical(route.api).ref)
            stage = api.stage if api else "Prod"
            found.append(
                Route(route.method, route.path, route.function, route.auth, api_id, stage, _route_pattern(route.path))
            )
        return found

    def match_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes():
            matched = route.pattern.match(path)
            if matched and route.method in (method.upper(), "ANY"):
                return route, dict(matched.groupdict())
        return None

    def api_request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send an API Gateway proxy event to the function serving this route; (status, parsed body)."""
        response = self.api_call(method, path, body, query, headers)
        text = response.get("body") or ""
        try:
            return int(response["statusCode"]), json.loads(text) if text else None
        except ValueError:
            return int(response["statusCode"]), text

    def api_call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        source_ip: str = "127.0.0.1",
        access_key: str = "ASIAEXAMPLEKEY",
    ) -> dict[str, Any]:
        """The raw proxy response (statusCode, headers, body), API Gateway's own errors included."""
        found = self.match_route(method, path)
        if found is None:
            return _gateway_error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
        route, parameters = found
        text = body if body is None or isinstance(body, str) else json.dumps(body)
        event = api_event(
            method=method.upper(),
            path=path,
            resource=route.template,
            path_parameters=parameters,
            query=query,
            headers={"Content-Type": "application/json", **(headers or {})},
            body=text,
            api_id=route.api_id,
            stage=route.stage,
            now=self.clock.utcnow(),
            source_ip=source_ip,
            access_key=access_key,
        )
        record = self.lambdas.invoke(route.function, event, source=f"apigateway:{route.method} {route.template}")
        if record.error is not None or not isinstance(record.payload, dict) or "statusCode" not in record.payload:
            return _gateway_error(502, "Internal server error", "InternalServerErrorException")
        return dict(record.payload)

    # -------------------------------------------------------------- holding time
    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Keep virtual time still while the block runs (e.g. a test preparing several resources)."""
        with self.clock.activity():
            yield


_SESSIONS: list[boto3.session.Session] = []


def _session() -> boto3.session.Session:
    """One boto3 session per process: its loader caches botocore's service models across twins (moto
    resets boto3's default session on every start, which would reload them: ~50 ms per client)."""
    if not _SESSIONS:
        _SESSIONS.append(boto3.session.Session(region_name=REGION))
    return _SESSIONS[0]


def _gateway_error(status: int, message: str, kind: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "x-amzn-ErrorType": kind},
        "body": json.dumps({"message": message}),
    }


def _trust(*services: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": list(services)}, "Action": "sts:AssumeRole"}],
        }
    )


_ALARM_KEYS = (
    "AlarmName",
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
    "Tags",
    "ThresholdMetricId",
)


def _alarm_arguments(props: Mapping[str, Any]) -> dict[str, Any]:
    """AWS::CloudWatch::Alarm properties as PutMetricAlarm arguments (numbers as numbers)."""
    args = {k: props[k] for k in _ALARM_KEYS if k in props}
    for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
        if key in args:
            args[key] = int(args[key])
    if "Threshold" in args:
        args["Threshold"] = float(args["Threshold"])
    if "ActionsEnabled" in args:
        args["ActionsEnabled"] = str(args["ActionsEnabled"]).lower() == "true"
    return args


__all__ = ["FunctionError", "Twin", "api_event", "next_fire"]
