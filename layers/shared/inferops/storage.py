"""Single-table DynamoDB storage for operations, timelines, endpoint locks, task tokens and alarm watches.

Why one table: every request path reads by key (no Scan), the records of one operation live under one
partition, and conditional writes give us the concurrency guarantees the flows rely on (one operation per
endpoint, one resume per task token, no lost status update).

Table: key ``pk`` (S, HASH) + ``sk`` (S, RANGE); GSI ``gsi1`` on ``gsi1pk`` (S) + ``gsi1sk`` (S),
projection ALL; TTL attribute ``expires_at`` (epoch seconds, N). Timestamps in keys are fixed-width UTC ISO
strings (``2025-01-31T12:00:00.000000Z``) so that string order is time order.

==============  ======================  ==============================  =================================
record          pk                      sk                              gsi1pk / gsi1sk
==============  ======================  ==============================  =================================
operation       ``OP#<id>``             ``META``                        ``EP#<endpoint>`` /
                                                                        ``OP#<created_at>#<id>``
timeline entry  ``OP#<id>``             ``TL#<at>#<seq, 8 digits>``     -
endpoint lock   ``LOCK#<endpoint>``     ``LOCK``                        -
task token      ``TOKEN#<endpoint>``    ``<purpose>``                   -
endpoint state  ``EPSTATE#<endpoint>``  ``endpoint`` | ``deployment``   -
alarm watch     ``ALARM#<alarm name>``  ``<operation id>``              -
operation state ``OP#<id>``             ``STATE#<name>``                ``DUE#<name>`` / ``<due>#<id>``
                                                                        (only while listed as due)
scale to zero   ``SCALE#<endpoint>``    ``SETTINGS``                    ``SCALING`` / ``<endpoint>``
wake alarm      ``WAKEALARM#<alarm>``   ``WAKE``                        -
async result    ``ASYNC#<inference>``   ``RESULT``                      -
async stats     ``ASYNCSTATS#<ep>``     ``<hour>#<message>.<try>``      -
delivery policy ``POLICY#<group>``      ``POLICY``                      ``POLICIES`` / ``<group>``
==============  ======================  ==============================  =================================

A delivery (registry-driven, `inferops.delivery`) is an operation whose ``endpoint`` is its model package group:
the group's deliveries are listed like an endpoint's operations; its lock is ``LOCK#group:<group>``.

Alarm names may contain ``#`` (CloudWatch allows any printable character): harmless, because an alarm watch's
``pk`` is only ever matched whole, never by prefix.

Attributes besides the keys:

- operation: id, kind, endpoint, status, created_at, updated_at, request (map), result (map, optional),
  version (N, optimistic counter), timeline_seq (N, last timeline sequence number), expires_at (N, set when
  the operation reaches a terminal status: then + ``TERMINAL_RETENTION_DAYS``), plan (map, optional),
  execution_arn (optional), stop_request (map: kind, reason, by, at; optional, written once).
- timeline entry: operation_id, at, seq, kind, message, data (map), expires_at (the operation's when it is
  terminal, else ``TIMELINE_RETENTION_DAYS`` from the write).
- endpoint lock: endpoint, owner (operation id), acquired_at, lease_expires_at (N, epoch seconds),
  expires_at (lease expiry + ``LOCK_TTL_GRACE_SECONDS``, so stale locks eventually disappear).
- task token: endpoint, purpose, token, operation_id, created_at, expires_at.
- alarm watch: alarm_name, endpoint, operation_id, created_at, expires_at.
- scale to zero (one per endpoint under scale-to-zero): endpoint, data (map: the settings and what they
  replaced, see inferops.scaling), waking (operation id of the wake in flight, optional), wake_lease (N),
  updated_at. The gsi1 partition ``SCALING`` lists them for the scheduled sweep and the cost report.
- wake alarm: alarm_name, endpoint (the scale-from-zero alarm InferOps created for that endpoint).
- delivery policy: group, policy (map), created_at (the first write's), updated_at, updated_by. The gsi1
  partition ``POLICIES`` lists them for the scheduled reconciliation.
- async result (one per inference id, SageMaker's async notification): inference_id, endpoint, status
  (COMPLETED | FAILED), invocation_status, completed_at, received_at, latency_seconds, input_location,
  output_location, failure_location, failure_reason, content_type, region, classification (map: category,
  cause, action, retryable, matched), message_id, stats_shard (the sk of the stats shard that counted it),
  recorded_at, expires_at (completed_at + ``ASYNC_RESULT_RETENTION_DAYS``).
- async stats shard (what one batch added to an endpoint's numbers for one UTC clock hour ``<hour>`` =
  ``YYYY-MM-DDTHH``, keyed by the batch's first message and a random attempt id so that a redelivery never
  overwrites it; the stats API sums an endpoint's shards with one Query on ``sk >= <first hour>``):
  endpoint, hour, shard, completed, failed, latency_count, latency_sum, latency_min, latency_max, histogram
  (map: bucket upper bound in seconds or ``inf`` -> count), categories (map: error category -> count),
  expires_at (hour + ``ASYNC_STATS_RETENTION_DAYS``).

Time comes only from the injected clock: the local twin drives it virtually.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from types import EllipsisType, MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import AfterValidator, ConfigDict, Field, PlainSerializer
from pydantic_core import to_jsonable_python

from inferops.errors import Conflict, InvalidInput, NotFound
from inferops.model import Model

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_stepfunctions import SFNClient

__all__ = [
    "ALARM_NAME_MAX_LENGTH",
    "ALLOWED_TRANSITIONS",
    "DEFAULT_LIST_LIMIT",
    "GSI1_NAME",
    "LOCK_TTL_GRACE_SECONDS",
    "TERMINAL_RETENTION_DAYS",
    "TERMINAL_STATUSES",
    "TIMELINE_RETENTION_DAYS",
    "TOKEN_GONE",
    "AlarmWatch",
    "EndpointLock",
    "OperationRecord",
    "OperationStatus",
    "Repository",
    "TaskToken",
    "TimelineEntry",
    "TimelineNote",
    "WaitPurpose",
    "format_timestamp",
]

TERMINAL_RETENTION_DAYS = 90
"""How long a finished operation (and its timeline) is kept before TTL removes it."""
TIMELINE_RETENTION_DAYS = 90
"""TTL of a timeline entry written while its operation is still running."""
TOKEN_GONE = ("TaskDoesNotExist", "InvalidToken", "TaskTimedOut")
"""What Step Functions answers for a token whose wait is over: nothing to resume, nothing to retry."""

LOCK_TTL_GRACE_SECONDS = 86_400
"""A lock item outlives its lease by this much, so a crashed owner's lock is eventually removed."""
DEFAULT_LIST_LIMIT = 20
GSI1_NAME = "gsi1"
ALARM_NAME_MAX_LENGTH = 255
"""CloudWatch's limit; alarm names are otherwise free text, so they are not held to the key-part rules."""

_DAY = 86_400
_SEQ_WIDTH = 8
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_CONDITION_FAILED = "ConditionalCheckFailedException"


class OperationStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    REFUSED = "REFUSED"
    ABORTED = "ABORTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


class WaitPurpose(StrEnum):
    """What a flow waits for when it stores a task token under an endpoint (the token item's sort key)."""

    ENDPOINT_UPDATE = "endpoint-update"
    BAKE = "bake"
    APPROVAL = "approval"
    SHADOW_WATCH = "shadow-watch"
    """A shadow test watching a phase: the heartbeat (the phase's end) ends the wait; a failing verdict (the scheduled
    judge), a guard alarm or an operator fails it."""
    DELIVERY_STAGE = "delivery-stage"
    """A delivery waits for its stage's deployment or shadow test on this endpoint to end (its Finished event)."""
    DELIVERY_HOLD = "delivery-hold"
    """Keyed by delivery id: a stage waits for a human's approval or for a freeze window to end."""


_S = OperationStatus
TERMINAL_STATUSES: frozenset[OperationStatus] = frozenset(
    {_S.SUCCEEDED, _S.FAILED, _S.ROLLED_BACK, _S.REFUSED, _S.ABORTED}
)
ALLOWED_TRANSITIONS: Mapping[OperationStatus, frozenset[OperationStatus]] = MappingProxyType(
    {
        _S.PENDING: frozenset({_S.RUNNING, _S.REFUSED, _S.FAILED, _S.ABORTED}),
        _S.RUNNING: frozenset({_S.PAUSED, _S.SUCCEEDED, _S.FAILED, _S.ROLLED_BACK, _S.ABORTED}),
        _S.PAUSED: frozenset({_S.RUNNING, _S.ABORTED, _S.FAILED, _S.ROLLED_BACK}),
        **{status: frozenset() for status in TERMINAL_STATUSES},
    }
)


# --- time ---------------------------------------------------------------------------------------------


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """Fixed-width UTC ISO string, microsecond precision: sorts lexicographically in time order."""
    return _to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


Timestamp = Annotated[datetime, AfterValidator(_to_utc), PlainSerializer(format_timestamp, return_type=str)]


# --- records ------------------------------------------------------------------------------------------


class _Record(Model):
    model_config = ConfigDict(frozen=True, extra="ignore", ser_json_inf_nan="constants")


class OperationRecord(_Record):
    """One user-visible operation (a deployment, a shadow test, ...) and its current status."""

    id: str
    kind: str
    endpoint: str
    status: OperationStatus
    created_at: Timestamp
    updated_at: Timestamp
    request: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] | None = None
    version: int = 1
    expires_at: int | None = None
    plan: dict[str, Any] | None = None
    execution_arn: str | None = None
    stop_request: dict[str, Any] | None = None
    """Who asked the flow to stop, why and when (kind, reason, by, at): the first request wins."""

    @property
    def terminal(self) -> bool:
        return self.status.terminal


class TimelineEntry(_Record):
    """Something that happened during an operation, in order."""

    operation_id: str
    at: Timestamp
    seq: int
    kind: str
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    expires_at: int | None = None


class EndpointLock(_Record):
    """Only one operation may change an endpoint at a time. `expired` is as seen by the reader's clock."""

    endpoint: str
    owner: str
    acquired_at: Timestamp
    lease_expires_at: float
    expires_at: int
    expired: bool = False

    def is_expired(self, now: float) -> bool:
        return self.lease_expires_at <= now


class TaskToken(_Record):
    """A Step Functions task token waiting for an event about `endpoint`."""

    endpoint: str
    purpose: str
    token: str
    operation_id: str
    created_at: Timestamp
    expires_at: int


class TimelineNote(NamedTuple):
    """A timeline entry to write (`Repository.commit_operation_state` writes them with a working record)."""

    kind: str
    message: str
    data: dict[str, Any] | None = None


class AlarmWatch(_Record):
    """The flow of `operation_id` watches `alarm_name`: the alarm going into ALARM stops the operation."""

    alarm_name: str
    endpoint: str
    operation_id: str
    created_at: Timestamp
    expires_at: int


# --- (de)serialisation --------------------------------------------------------------------------------

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_dynamo_value(value: Any) -> Any:
    """JSON-like value -> what TypeSerializer accepts (floats become Decimals; NaN/inf are refused)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"DynamoDB cannot store the number {value}")
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): _to_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo_value(v) for v in value]
    return value


def _from_dynamo_value(value: Any) -> Any:
    """Decimals back to int (no fractional digits) or float; sets to sorted lists."""
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo_value(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_from_dynamo_value(v) for v in value)
    return value


def _serialize(attributes: Mapping[str, Any]) -> dict[str, Any]:
    plain = _to_dynamo_value(to_jsonable_python(dict(attributes)))
    return {k: _serializer.serialize(v) for k, v in plain.items() if v is not None}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo_value(_deserializer.deserialize(v)) for k, v in item.items()}


def _policy_record(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored delivery policy without its keys (`created_at` falls back to `updated_at` for older records)."""
    record = {k: v for k, v in _deserialize(item).items() if k not in ("pk", "sk", "gsi1pk", "gsi1sk")}
    record.setdefault("created_at", record.get("updated_at"))
    return record


def _number(value: float) -> dict[str, Any]:
    if isinstance(value, int):
        return {"N": str(value)}
    return {"N": str(_to_dynamo_value(float(value)))}


def _string(value: str) -> dict[str, Any]:
    return {"S": value}


def _condition_failed(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") == _CONDITION_FAILED


def _transaction_condition_failed(err: ClientError) -> bool:
    """A TransactWriteItems cancelled because a condition failed (not a conflict with another transaction)."""
    if err.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    return any(r.get("Code") == "ConditionalCheckFailed" for r in err.response.get("CancellationReasons", []))


def _old_item(err: ClientError) -> dict[str, Any] | None:
    """The item as it was when a condition failed (ReturnValuesOnConditionCheckFailure=ALL_OLD)."""
    response: Mapping[str, Any] = err.response
    item = response.get("Item")
    return _deserialize(item) if item else None


def _check_key_part(value: str, field: str) -> str:
    if not value or "#" in value:
        raise InvalidInput(f"{field} must be a non-empty string without '#', got {value!r}", field)
    return value


def _check_alarm_name(value: str) -> str:
    if not 1 <= len(value) <= ALARM_NAME_MAX_LENGTH:
        raise InvalidInput(
            f"alarm_name must be 1-{ALARM_NAME_MAX_LENGTH} characters, got {len(value)}: {value[:40]!r}", "alarm_name"
        )
    return value


def _check_ttl(ttl_seconds: float) -> None:
    if not ttl_seconds > 0:
        raise InvalidInput(f"ttl_seconds must be positive, got {ttl_seconds}", "ttl_seconds")


# One condition for "the operation is still running", shared by the writes that only make sense until it ends.
_TERMINAL_VALUES = {f":terminal{n}": _string(status) for n, status in enumerate(sorted(TERMINAL_STATUSES))}
_NOT_TERMINAL = f"NOT #status IN ({', '.join(_TERMINAL_VALUES)})"


# --- repository ---------------------------------------------------------------------------------------


class Repository:
    """All reads and writes of the InferOps table. Thread-safe; one instance per Lambda container is fine."""

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.table_name = table_name
        self._client = client
        self._client_lock = threading.Lock()
        self._clock: Callable[[], float] = clock or time.time

    @property
    def client(self) -> DynamoDBClient:
        """Created on first use, not at import or construction, so cold starts and tests stay cheap."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.client("dynamodb")
        return self._client

    def now(self) -> float:
        return self._clock()

    # --- operations -----------------------------------------------------------------------------------

    def new_operation_id(self) -> str:
        """`op-<yyyymmddHHMMSS>-<8 hex>`: sorts by creation second, unique enough to never collide."""
        return f"op-{_datetime(self.now()).strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"

    def create_operation(
        self,
        kind: str,
        endpoint: str,
        request: dict[str, Any],
        operation_id: str | None = None,
        *,
        plan: dict[str, Any] | None = None,
    ) -> OperationRecord:
        """Store a new PENDING operation; an existing id is a Conflict (the API's idempotency key)."""
        _check_key_part(endpoint, "endpoint")
        if not kind:
            raise InvalidInput("kind must not be empty", "kind")
        if operation_id is None:
            operation_id = self.new_operation_id()
        elif not _ID_RE.match(operation_id):
            raise InvalidInput(
                f"operation id {operation_id!r} must be 1-128 letters, digits or . _ : - characters",
                "operation_id",
            )
        created = _datetime(self.now())
        record = OperationRecord(
            id=operation_id,
            kind=kind,
            endpoint=endpoint,
            status=OperationStatus.PENDING,
            created_at=created,
            updated_at=created,
            request=request,
            version=1,
            plan=plan,
        )
        item = _serialize(
            {
                "pk": f"OP#{operation_id}",
                "sk": "META",
                "gsi1pk": f"EP#{endpoint}",
                "gsi1sk": f"OP#{format_timestamp(created)}#{operation_id}",
                **record.model_dump(mode="json", exclude_none=True),
            }
        )
        try:
            self.client.put_item(TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as err:
            if _condition_failed(err):
                raise Conflict(f"operation {operation_id} already exists", "operation_id") from err
            raise
        return record

    def get_operation(self, operation_id: str) -> OperationRecord:
        response = self.client.get_item(
            TableName=self.table_name,
            Key=self._op_key(operation_id),
            ConsistentRead=True,
        )
        item = response.get("Item")
        if not item:
            raise NotFound(f"operation {operation_id} does not exist", "operation_id")
        return OperationRecord.model_validate(_deserialize(item))

    def transition(
        self,
        operation_id: str,
        to_status: OperationStatus,
        *,
        expected: OperationStatus | Iterable[OperationStatus] | None = None,
        result: dict[str, Any] | None = None,
    ) -> OperationRecord:
        """Move an operation to `to_status` if the transition map allows it from its current status.

        The write is guarded on the status and version that were read, so a concurrent change between our read
        and our write is reported as a Conflict naming the status the other writer left behind.
        """
        to_status = _status(to_status)
        current = self.get_operation(operation_id)
        allowed_from = _expected_statuses(expected)
        if allowed_from is not None and current.status not in allowed_from:
            wanted = " or ".join(sorted(allowed_from))
            raise Conflict(
                f"operation {operation_id} is {current.status}, expected {wanted} before moving to {to_status}",
                "status",
            )
        _check_transition(operation_id, current.status, to_status)

        now = self.now()
        names = {"#status": "status", "#version": "version", "#updated_at": "updated_at"}
        values: dict[str, Any] = {
            ":to": _string(to_status),
            ":from": _string(current.status),
            ":version": _number(current.version),
            ":next_version": _number(current.version + 1),
            ":updated_at": _string(format_timestamp(_datetime(now))),
        }
        sets = ["#status = :to", "#version = :next_version", "#updated_at = :updated_at"]
        if result is not None:
            names["#result"] = "result"
            values[":result"] = _serialize({"result": result})["result"]
            sets.append("#result = :result")
        if to_status.terminal:
            names["#expires_at"] = "expires_at"
            values[":expires_at"] = _number(math.ceil(now) + TERMINAL_RETENTION_DAYS * _DAY)
            sets.append("#expires_at = :expires_at")
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._op_key(operation_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="#status = :from AND #version = :version",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            old = _old_item(err)
            if old is None:
                raise NotFound(f"operation {operation_id} does not exist", "operation_id") from err
            actual = OperationRecord.model_validate(old)
            raise Conflict(
                f"operation {operation_id} is {actual.status}, cannot move to {to_status} "
                f"(it changed concurrently: version {current.version} -> {actual.version})",
                "status",
            ) from err
        return OperationRecord.model_validate(_deserialize(response["Attributes"]))

    def save_plan(self, operation_id: str, plan: dict[str, Any]) -> OperationRecord:
        """Store (or replace) the plan the flow follows; a finished operation's plan is history: Conflict."""
        record, written = self._set_on_operation(
            operation_id, {"plan": plan}, condition=_NOT_TERMINAL, names={"#status": "status"}, values=_TERMINAL_VALUES
        )
        if not written:
            raise _ended(record)
        return record

    def set_execution(self, operation_id: str, execution_arn: str) -> OperationRecord:
        """Record the Step Functions execution driving the operation: one per operation, repeating it is fine."""
        if not execution_arn:
            raise InvalidInput("execution_arn must not be empty", "execution_arn")
        record, written = self._set_on_operation(
            operation_id,
            {"execution_arn": execution_arn},
            condition="attribute_not_exists(#execution_arn) OR #execution_arn = :execution_arn",
        )
        if not written:
            raise Conflict(
                f"operation {operation_id} is already driven by execution {record.execution_arn}", "execution_arn"
            )
        return record

    def request_stop(
        self, operation_id: str, *, kind: Literal["abort", "alarm"], reason: str, by: str
    ) -> OperationRecord:
        """Ask a running operation's flow to stop (roll back); the flow honours it at its next step.

        One conditional write: the first request wins and later ones return the record unchanged (an operator
        and an alarm may both ask, events repeat). An operation that already ended is a Conflict.
        """
        if kind not in ("abort", "alarm"):
            raise InvalidInput(f"kind must be abort or alarm, got {kind!r}", "kind")
        if not reason:
            raise InvalidInput("reason must not be empty", "reason")
        if not by:
            raise InvalidInput("by must not be empty", "by")
        stop = {"kind": kind, "reason": reason, "by": by, "at": format_timestamp(_datetime(self.now()))}
        record, written = self._set_on_operation(
            operation_id,
            {"stop_request": stop},
            condition=f"attribute_not_exists(#stop_request) AND {_NOT_TERMINAL}",
            names={"#status": "status"},
            values=_TERMINAL_VALUES,
        )
        if not written and record.terminal:
            raise _ended(record)
        return record

    def page_operations(
        self,
        endpoint: str,
        *,
        kind: str | None = None,
        status: OperationStatus | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        cursor: str | None = None,
    ) -> tuple[list[OperationRecord], str | None]:
        """One page of an endpoint's operations, newest first, and the cursor of the next page (None: last).

        A Query on gsi1 (eventually consistent, never a Scan). Filters apply after DynamoDB reads a page, so
        the cursor is the last *returned* record's key: no record is skipped or repeated between pages.
        """
        _check_key_part(endpoint, "endpoint")
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}", "limit")
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": GSI1_NAME,
            "KeyConditionExpression": "gsi1pk = :pk AND begins_with(gsi1sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _string(f"EP#{endpoint}"), ":prefix": _string("OP#")},
            "ScanIndexForward": False,
            # Limit counts items read before the filter: read bigger pages when filtering.
            "Limit": limit + 1 if kind is None and status is None else max(limit + 1, 100),
        }
        filters, names = [], {}
        if kind is not None:
            filters.append("#kind = :kind")
            names["#kind"] = "kind"
            kwargs["ExpressionAttributeValues"][":kind"] = _string(kind)
        if status is not None:
            filters.append("#status = :status")
            names["#status"] = "status"
            kwargs["ExpressionAttributeValues"][":status"] = _string(_status(status))
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
            kwargs["ExpressionAttributeNames"] = names
        if cursor:
            kwargs["ExclusiveStartKey"] = self._cursor_key(endpoint, cursor)
        records: list[OperationRecord] = []
        for item in self._query(kwargs):
            if len(records) == limit:  # one more exists: the page ends at the last record returned
                last = records[-1]
                token = f"{format_timestamp(last.created_at)}#{last.id}"
                return records, base64.urlsafe_b64encode(token.encode()).decode()
            records.append(OperationRecord.model_validate(_deserialize(item)))
        return records, None

    @staticmethod
    def _cursor_key(endpoint: str, cursor: str) -> dict[str, Any]:
        try:
            created, operation_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("#", 1)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidInput("nextToken is not a token this API returned", "nextToken") from error
        if not _ID_RE.match(operation_id):
            raise InvalidInput("nextToken is not a token this API returned", "nextToken")
        return {
            "gsi1pk": _string(f"EP#{endpoint}"),
            "gsi1sk": _string(f"OP#{created}#{operation_id}"),
            "pk": _string(f"OP#{operation_id}"),
            "sk": _string("META"),
        }

    # --- timeline -------------------------------------------------------------------------------------

    def append_timeline(
        self, operation_id: str, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> TimelineEntry:
        """Add an entry. A per-operation counter (one atomic ADD) orders entries that share a timestamp.

        The same write proves the operation exists and tells us its expiry, so a finished operation's late
        entries expire with it.
        """
        note = TimelineNote(kind, message, data)
        _serialize({"data": data})  # refuse what DynamoDB cannot store before taking a sequence number
        [(entry, item)] = self._timeline_items(operation_id, [note])
        self.client.put_item(TableName=self.table_name, Item=item)
        return entry

    def _timeline_items(
        self, operation_id: str, notes: Sequence[TimelineNote]
    ) -> list[tuple[TimelineEntry, dict[str, Any]]]:
        """Reserve sequence numbers for `notes` (one atomic ADD on the operation; NotFound when it does not exist)
        and make their timeline entries and items, not written yet. A reserved number never written is a gap in
        the sequence, which only orders entries."""
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._op_key(operation_id),
                UpdateExpression="ADD #seq :n",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#seq": "timeline_seq"},
                ExpressionAttributeValues={":n": _number(len(notes))},
                ReturnValues="ALL_NEW",
            )
        except ClientError as err:
            if _condition_failed(err):
                raise NotFound(f"operation {operation_id} does not exist", "operation_id") from err
            raise
        operation = _deserialize(response["Attributes"])
        last = int(operation["timeline_seq"])
        now = self.now()
        if OperationStatus(operation["status"]).terminal and operation.get("expires_at") is not None:
            expires_at = int(operation["expires_at"])
        else:
            expires_at = math.ceil(now) + TIMELINE_RETENTION_DAYS * _DAY
        made = []
        for seq, note in enumerate(notes, start=last - len(notes) + 1):
            entry = TimelineEntry(
                operation_id=operation_id,
                at=_datetime(now),
                seq=seq,
                kind=note.kind,
                message=note.message,
                data=note.data or {},
                expires_at=expires_at,
            )
            item = _serialize(
                {
                    "pk": f"OP#{operation_id}",
                    "sk": f"TL#{format_timestamp(entry.at)}#{seq:0{_SEQ_WIDTH}d}",
                    **entry.model_dump(mode="json", exclude_none=True),
                }
            )
            made.append((entry, item))
        return made

    def timeline(self, operation_id: str) -> list[TimelineEntry]:
        """All entries of an operation, oldest first (empty when the operation has none or doesn't exist)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _string(f"OP#{operation_id}"), ":prefix": _string("TL#")},
            "ScanIndexForward": True,
            "ConsistentRead": True,
        }
        return [TimelineEntry.model_validate(_deserialize(item)) for item in self._query(kwargs)]

    # --- endpoint locks -------------------------------------------------------------------------------

    def acquire_lock(self, endpoint: str, owner: str, lease_seconds: float) -> EndpointLock:
        """Take the endpoint's lock in one conditional write.

        Succeeds when nobody holds it, when `owner` already holds it (re-entrant: the lease is extended), or
        when the holder's lease has expired (stolen). Otherwise Conflict names the holder and its lease.
        """
        _check_key_part(endpoint, "endpoint")
        _check_lease(lease_seconds)
        now = self.now()
        lock = self._new_lock(endpoint, owner, acquired=now, lease_until=now + lease_seconds)
        item = _serialize({**self._lock_key_attrs(endpoint), **lock.model_dump(mode="json", exclude={"expired"})})
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR #owner = :owner OR #lease <= :now",
                ExpressionAttributeNames={"#owner": "owner", "#lease": "lease_expires_at"},
                ExpressionAttributeValues={":owner": _string(owner), ":now": _number(now)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            raise self._lock_conflict(endpoint, _old_item(err), now) from err
        return lock

    def renew_lock(self, endpoint: str, owner: str, lease_seconds: float) -> EndpointLock:
        """Extend the lease of a lock `owner` holds (even a lapsed lease, as long as nobody took it)."""
        _check_key_part(endpoint, "endpoint")
        _check_lease(lease_seconds)
        now = self.now()
        lease_until = now + lease_seconds
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key={"pk": _string(f"LOCK#{endpoint}"), "sk": _string("LOCK")},
                UpdateExpression="SET #lease = :lease, #expires_at = :expires_at",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={
                    "#owner": "owner",
                    "#lease": "lease_expires_at",
                    "#expires_at": "expires_at",
                },
                ExpressionAttributeValues={
                    ":owner": _string(owner),
                    ":lease": _number(lease_until),
                    ":expires_at": _number(_lock_ttl(lease_until)),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            old = _old_item(err)
            if old is None:
                raise Conflict(f"{owner} cannot renew the lock on endpoint {endpoint}: nobody holds it") from err
            raise self._lock_conflict(endpoint, old, now) from err
        return self._lock_from_item(_deserialize(response["Attributes"]), now)

    def release_lock(self, endpoint: str, owner: str) -> bool:
        """Delete the lock if `owner` holds it. Anyone else's lock is left alone: returns False."""
        _check_key_part(endpoint, "endpoint")
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": _string(f"LOCK#{endpoint}"), "sk": _string("LOCK")},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": _string(owner)},
            )
        except ClientError as err:
            if _condition_failed(err):
                return False
            raise
        return True

    def get_lock(self, endpoint: str) -> EndpointLock | None:
        """The endpoint's lock, if an item exists; `expired` tells whether its lease has lapsed."""
        _check_key_part(endpoint, "endpoint")
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": _string(f"LOCK#{endpoint}"), "sk": _string("LOCK")},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return self._lock_from_item(_deserialize(item), self.now()) if item else None

    # --- task tokens ----------------------------------------------------------------------------------

    def put_task_token(
        self,
        endpoint: str,
        purpose: str,
        token: str,
        operation_id: str,
        ttl_seconds: float,
        *,
        created_at: datetime | None = None,
    ) -> TaskToken:
        """Store (or replace: a retried wait task has a new token) the token an event will resume.

        `created_at` keeps the original time when a handler puts back a token it could not deliver.
        """
        _check_key_part(endpoint, "endpoint")
        _check_key_part(purpose, "purpose")
        _check_ttl(ttl_seconds)
        now = self.now()
        record = TaskToken(
            endpoint=endpoint,
            purpose=purpose,
            token=token,
            operation_id=operation_id,
            created_at=created_at or _datetime(now),
            expires_at=math.ceil(now + ttl_seconds),
        )
        item = _serialize({**self._token_key_attrs(endpoint, purpose), **record.model_dump(mode="json")})
        self.client.put_item(TableName=self.table_name, Item=item)
        return record

    def take_task_token(self, endpoint: str, purpose: str) -> TaskToken | None:
        """Get and delete in one DeleteItem, so of two handlers seeing the same event only one resumes.

        An expired token (TTL deletion lags by up to days) is deleted and reported as absent.
        """
        _check_key_part(endpoint, "endpoint")
        _check_key_part(purpose, "purpose")
        response = self.client.delete_item(
            TableName=self.table_name,
            Key=self._token_key(endpoint, purpose),
            ReturnValues="ALL_OLD",
        )
        return self._live_token(response.get("Attributes"))

    def take_own_task_token(self, endpoint: str, purpose: str, operation_id: str) -> TaskToken | None:
        """Take the token parked for this operation's wait; another operation's is put back and None returned."""
        token = self.take_task_token(endpoint, purpose)
        if token is not None and token.operation_id != operation_id:
            self.put_back_task_token(token)
            return None
        return token

    def put_back_task_token(self, token: TaskToken) -> None:
        """Restore a token taken but not delivered, with its creation time and expiry (one that expired meanwhile
        stays gone, as TTL would have removed it)."""
        remaining = token.expires_at - math.ceil(self.now())
        if remaining > 0:
            self.put_task_token(
                token.endpoint, token.purpose, token.token, token.operation_id, remaining, created_at=token.created_at
            )

    def send_to_task_token(
        self,
        stepfunctions: SFNClient,
        token: TaskToken,
        *,
        output: Mapping[str, Any] | str | None = None,
        error: str = "",
        cause: str = "",
    ) -> str | None:
        """Resume (`output`) or fail (`error`) a wait parked under a token taken from the table.

        None when delivered; the error code when the wait is gone (its flow moved on: heartbeat, abort, timeout).
        Throttled or a 5xx: the token is put back, so a retry finds it, and the error is raised.
        """
        try:
            if output is not None:
                body = output if isinstance(output, str) else json.dumps(output)
                stepfunctions.send_task_success(taskToken=token.token, output=body)
            else:
                stepfunctions.send_task_failure(taskToken=token.token, error=error, cause=cause[:32000])
        except ClientError as failure:
            code = failure.response.get("Error", {}).get("Code", "")
            if code in TOKEN_GONE:
                return code
            self.put_back_task_token(token)
            raise
        return None

    def get_task_token(self, endpoint: str, purpose: str) -> TaskToken | None:
        _check_key_part(endpoint, "endpoint")
        _check_key_part(purpose, "purpose")
        response = self.client.get_item(
            TableName=self.table_name, Key=self._token_key(endpoint, purpose), ConsistentRead=True
        )
        return self._live_token(response.get("Item"))

    def record_endpoint_state(
        self, endpoint: str, kind: str, modified_ms: int, fingerprint: str
    ) -> Literal["new", "duplicate", "stale"]:
        """Keep the newest state SageMaker reported, and say whether this one is new, a repeat, or older.

        Events repeat and arrive out of order; `modified_ms` (the endpoint's LastModifiedTime) orders them,
        and `fingerprint` tells a repeat from a different event with the same time (deployment phases).
        """
        _check_key_part(endpoint, "endpoint")
        item = _serialize(
            {
                "pk": f"EPSTATE#{endpoint}",
                "sk": kind,
                "endpoint": endpoint,
                "modified_ms": modified_ms,
                "fingerprint": fingerprint,
                "recorded_at": format_timestamp(_datetime(self.now())),
                "expires_at": math.ceil(self.now() + TERMINAL_RETENTION_DAYS * 86400),
            }
        )
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=item,
                ConditionExpression=(
                    "attribute_not_exists(pk) OR modified_ms < :m OR (modified_ms = :m AND fingerprint <> :f)"
                ),
                ExpressionAttributeValues={":m": _number(modified_ms), ":f": _string(fingerprint)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            old = _old_item(err) or {}
            return "duplicate" if old.get("fingerprint") == fingerprint else "stale"
        return "new"

    # --- alarm watches ---------------------------------------------------------------------------------

    def put_alarm_watch(self, alarm_name: str, endpoint: str, operation_id: str, ttl_seconds: float) -> AlarmWatch:
        """Register (or refresh) that the operation's flow watches the alarm; the TTL bounds a crashed flow's watch."""
        _check_alarm_name(alarm_name)
        _check_key_part(endpoint, "endpoint")
        _check_key_part(operation_id, "operation_id")
        _check_ttl(ttl_seconds)
        now = self.now()
        watch = AlarmWatch(
            alarm_name=alarm_name,
            endpoint=endpoint,
            operation_id=operation_id,
            created_at=_datetime(now),
            expires_at=math.ceil(now + ttl_seconds),
        )
        item = _serialize({**self._watch_key_attrs(alarm_name, operation_id), **watch.model_dump(mode="json")})
        self.client.put_item(TableName=self.table_name, Item=item)
        return watch

    def alarm_watches(self, alarm_name: str) -> list[AlarmWatch]:
        """The live watches of an alarm, by operation id (one Query; expired ones are left out, TTL lags)."""
        _check_alarm_name(alarm_name)
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _string(f"ALARM#{alarm_name}")},
            "ConsistentRead": True,
        }
        now = self.now()
        watches = (AlarmWatch.model_validate(_deserialize(item)) for item in self._query(kwargs))
        return [watch for watch in watches if watch.expires_at > now]

    def delete_alarm_watches(self, operation_id: str, alarm_names: Iterable[str]) -> None:
        """Stop watching: the operation's flow is done with these alarms (missing watches are fine)."""
        names = [_check_alarm_name(name) for name in dict.fromkeys(alarm_names)]
        for name in names:
            self.client.delete_item(
                TableName=self.table_name,
                Key={k: _string(v) for k, v in self._watch_key_attrs(name, operation_id).items()},
            )

    # --- delivery policies ----------------------------------------------------------------------------

    def put_delivery_policy(self, group: str, policy: Mapping[str, Any], *, by: str) -> dict[str, Any]:
        """Store (or replace) a model package group's delivery policy; returns the stored record.

        `created_at` is kept from the first write (the reconciliation delivers no version approved before the
        policy existed); the gsi1 partition ``POLICIES`` lists the policies for the scheduled reconciliation.
        """
        _check_key_part(group, "group")
        now = format_timestamp(_datetime(self.now()))
        values = _serialize({":group": group, ":policy": dict(policy), ":now": now, ":by": by, ":index": "POLICIES"})
        response = self.client.update_item(
            TableName=self.table_name,
            Key={"pk": _string(f"POLICY#{group}"), "sk": _string("POLICY")},
            UpdateExpression="SET #group = :group, #policy = :policy, updated_at = :now, updated_by = :by, "
            "created_at = if_not_exists(created_at, :now), gsi1pk = :index, gsi1sk = :group",
            ExpressionAttributeNames={"#group": "group", "#policy": "policy"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return _policy_record(response["Attributes"])

    def get_delivery_policy(self, group: str) -> dict[str, Any] | None:
        """The stored record (group, policy, created_at, updated_at, updated_by), or None."""
        _check_key_part(group, "group")
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": _string(f"POLICY#{group}"), "sk": _string("POLICY")},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return _policy_record(item) if item else None

    def delivery_policies(self) -> list[dict[str, Any]]:
        """Every stored policy record (one Query on gsi1's ``POLICIES`` partition, never a Scan)."""
        return [_policy_record(item) for item in self._gsi1_partition("POLICIES")]

    def delete_delivery_policy(self, group: str) -> bool:
        """Remove the policy; False when there was none."""
        _check_key_part(group, "group")
        response = self.client.delete_item(
            TableName=self.table_name,
            Key={"pk": _string(f"POLICY#{group}"), "sk": _string("POLICY")},
            ReturnValues="ALL_OLD",
        )
        return bool(response.get("Attributes"))

    # --- operation state ------------------------------------------------------------------------------

    def put_operation_state(
        self, operation_id: str, name: str, data: Mapping[str, Any], *, if_absent: bool = False
    ) -> bool:
        """Store (or replace) a flow's named working record beside its operation (not part of the status record).

        `if_absent`: only the first write wins (an operator's decision); returns False when one already exists.
        The record expires with the retention of a finished operation.
        """
        _check_key_part(name, "name")
        now = self.now()
        item = _serialize(
            {
                "pk": f"OP#{operation_id}",
                "sk": f"STATE#{name}",
                "operation_id": operation_id,
                "name": name,
                "data": dict(data),
                "updated_at": format_timestamp(_datetime(now)),
                "expires_at": math.ceil(now) + TERMINAL_RETENTION_DAYS * _DAY + 31 * _DAY,
            }
        )
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Item": item}
        if if_absent:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        try:
            self.client.put_item(**kwargs)
        except ClientError as err:
            if if_absent and _condition_failed(err):
                return False
            raise
        return True

    def get_operation_state(self, operation_id: str, name: str) -> dict[str, Any] | None:
        """A flow's named working record (strongly consistent), or None."""
        _check_key_part(name, "name")
        response = self.client.get_item(
            TableName=self.table_name,
            Key={"pk": _string(f"OP#{operation_id}"), "sk": _string(f"STATE#{name}")},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return dict(_deserialize(item)["data"]) if item else None

    def update_operation_state(
        self,
        operation_id: str,
        name: str,
        *,
        fields: Mapping[str, Any] | None = None,
        append: Mapping[str, list[Any]] | None = None,
        unless_set: str | None = None,
    ) -> bool:
        """Set top-level `fields` and append to lists (`append`) of an existing record in one UpdateItem, so that
        writers of different fields (a flow and an operator) never undo each other.

        `unless_set` names a field that must not be set yet (the first decision wins): returns False when it is.
        NotFound when there is no record.
        """
        _check_key_part(name, "name")
        names, values, sets = self._state_sets(fields)
        if append:
            values[":empty"] = {"L": []}
        for n, (key, items) in enumerate((append or {}).items()):
            names[f"#a{n}"] = key
            values[f":a{n}"] = _serialize({"v": list(items)})["v"]
            sets.append(f"#data.#a{n} = list_append(if_not_exists(#data.#a{n}, :empty), :a{n})")
        condition = "attribute_exists(pk)"
        if unless_set is not None:
            names["#unset"] = unless_set
            values[":null"] = {"NULL": True}
            condition += " AND (attribute_not_exists(#data.#unset) OR #data.#unset = :null)"
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key={"pk": _string(f"OP#{operation_id}"), "sk": _string(f"STATE#{name}")},
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            if unless_set is not None and _old_item(err) is not None:
                return False
            raise NotFound(f"operation {operation_id} has no {name} record", "operation_id") from err
        return True

    def commit_operation_state(
        self,
        operation_id: str,
        name: str,
        *,
        expect: Mapping[str, Any],
        fields: Mapping[str, Any] | None = None,
        notes: Sequence[TimelineNote] = (),
        due: float | EllipsisType | None = ...,
        indexed: bool = False,
    ) -> bool:
        """Set `fields` of a working record and add the timeline `notes`, all or nothing (one TransactWriteItems),
        if the `expect`ed fields still hold (a missing field holds None): markers such as "judged through interval
        n" then let concurrent, repeated or retried writers record each step exactly once.

        `due`: list the record in the index of due records (gsi1 partition ``DUE#<name>``, sorted by that instant,
        see `due_operation_states`); None takes it off the index; omitted, left as it is. `indexed`: only while it
        is listed. False when a condition failed (another writer was first, or there is no record): nothing written.
        """
        _check_key_part(name, "name")
        names, values, sets = self._state_sets(fields)
        conditions = ["attribute_exists(pk)"] + (["attribute_exists(gsi1pk)"] if indexed else [])
        for n, (key, value) in enumerate(expect.items()):
            names[f"#e{n}"] = key
            if value is None:
                values[":null"] = {"NULL": True}
                conditions.append(f"(attribute_not_exists(#data.#e{n}) OR #data.#e{n} = :null)")
            else:
                values[f":e{n}"] = _serialize({"v": value})["v"]
                conditions.append(f"#data.#e{n} = :e{n}")
        expression = "SET " + ", ".join(sets)
        if due is None:
            expression += " REMOVE gsi1pk, gsi1sk"
        elif not isinstance(due, EllipsisType):
            expression += ", gsi1pk = :gsi1pk, gsi1sk = :gsi1sk"
            values[":gsi1pk"] = _string(f"DUE#{name}")
            values[":gsi1sk"] = _string(f"{format_timestamp(_datetime(due))}#{operation_id}")
        if not fields and not expect:
            del names["#data"]
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": _string(f"OP#{operation_id}"), "sk": _string(f"STATE#{name}")},
            "UpdateExpression": expression,
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        try:
            if not notes:
                self.client.update_item(**update)
                return True
            for note in notes:  # refuse what DynamoDB cannot store before taking sequence numbers
                _serialize({"data": note.data})
            items: list[Any] = [{"Update": update}]
            made = self._timeline_items(operation_id, notes)
            items += [{"Put": {"TableName": self.table_name, "Item": item}} for _, item in made]
            self.client.transact_write_items(TransactItems=items)
        except ClientError as err:
            if _condition_failed(err) or _transaction_condition_failed(err):
                return False
            raise
        return True

    def _state_sets(self, fields: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, Any], list[str]]:
        """The names, values and SET clauses that write `fields` of a working record's data and its updated_at."""
        names: dict[str, str] = {"#data": "data", "#updated_at": "updated_at"}
        values: dict[str, Any] = {":updated_at": _string(format_timestamp(_datetime(self.now())))}
        sets = ["#updated_at = :updated_at"]
        for n, (key, value) in enumerate((fields or {}).items()):
            names[f"#f{n}"] = key
            values[f":f{n}"] = _serialize({"v": value})["v"] if value is not None else {"NULL": True}
            sets.append(f"#data.#f{n} = :f{n}")
        return names, values, sets

    def due_operation_states(self, name: str, now: float) -> list[tuple[str, dict[str, Any]]]:
        """The working records named `name` listed as due by `now` (`commit_operation_state`'s `due`), soonest
        first: (operation id, data). One Query on gsi1 (eventually consistent: act on them with conditions)."""
        _check_key_part(name, "name")
        items = self._query(
            {
                "TableName": self.table_name,
                "IndexName": GSI1_NAME,
                "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk <= :upto",
                "ExpressionAttributeValues": {
                    ":pk": _string(f"DUE#{name}"),
                    ":upto": _string(f"{format_timestamp(_datetime(now))}#~"),
                },
            }
        )
        return [(str(item["operation_id"]), dict(item["data"])) for item in map(_deserialize, items)]

    # --- scale to zero -------------------------------------------------------------------------------

    def put_scaling_settings(self, endpoint: str, data: Mapping[str, Any]) -> None:
        """Store (or replace) an endpoint's scale-to-zero record; a wake in flight keeps its claim."""
        _check_key_part(endpoint, "endpoint")
        attributes = _serialize(
            {"data": dict(data), "endpoint": endpoint, "updated_at": format_timestamp(_datetime(self.now()))}
        )
        self.client.update_item(
            TableName=self.table_name,
            Key=self._scaling_key(endpoint),
            UpdateExpression="SET #data = :data, #endpoint = :endpoint, #updated_at = :updated_at, "
            "gsi1pk = :gsi1pk, gsi1sk = :endpoint",
            ExpressionAttributeNames={"#data": "data", "#endpoint": "endpoint", "#updated_at": "updated_at"},
            ExpressionAttributeValues={
                ":data": attributes["data"],
                ":endpoint": attributes["endpoint"],
                ":updated_at": attributes["updated_at"],
                ":gsi1pk": _string("SCALING"),
            },
        )

    def get_scaling_settings(self, endpoint: str) -> dict[str, Any] | None:
        """The endpoint's scale-to-zero record (data, and `waking` when a wake is in flight), or None."""
        _check_key_part(endpoint, "endpoint")
        response = self.client.get_item(TableName=self.table_name, Key=self._scaling_key(endpoint), ConsistentRead=True)
        item = response.get("Item")
        return _deserialize(item) if item else None

    def update_scaling_settings(self, endpoint: str, fields: Mapping[str, Any]) -> bool:
        """Set top-level fields of an existing record's data in one UpdateItem; False when there is no record."""
        _check_key_part(endpoint, "endpoint")
        names: dict[str, str] = {"#data": "data"}
        values: dict[str, Any] = {}
        sets = []
        for n, (key, value) in enumerate(fields.items()):
            names[f"#f{n}"] = key
            values[f":f{n}"] = _serialize({"v": value})["v"] if value is not None else {"NULL": True}
            sets.append(f"#data.#f{n} = :f{n}")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._scaling_key(endpoint),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as err:
            if _condition_failed(err):
                return False
            raise
        return True

    def delete_scaling_settings(self, endpoint: str) -> None:
        _check_key_part(endpoint, "endpoint")
        self.client.delete_item(TableName=self.table_name, Key=self._scaling_key(endpoint))

    def scaling_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint's scale-to-zero record (one Query on gsi1's ``SCALING`` partition, never a Scan)."""
        return [_deserialize(item) for item in self._gsi1_partition("SCALING")]

    def claim_wake(self, endpoint: str, operation_id: str, lease_seconds: float) -> str | None:
        """Claim the endpoint's wake in one conditional write: None when `operation_id` won, else the holder.

        Many alarms (one per inference component, repeated deliveries) and wake requests arrive together;
        exactly one starts a wake. A claim whose lease lapsed (a crashed wake) can be taken over.
        """
        _check_key_part(endpoint, "endpoint")
        _check_lease(lease_seconds)
        now = self.now()
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._scaling_key(endpoint),
                UpdateExpression="SET waking = :op, wake_lease = :lease",
                ConditionExpression="attribute_exists(pk) AND "
                "(attribute_not_exists(waking) OR waking = :op OR wake_lease <= :now)",
                ExpressionAttributeValues={
                    ":op": _string(operation_id),
                    ":lease": _number(now + lease_seconds),
                    ":now": _number(now),
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            old = _old_item(err)
            if old is None:
                raise NotFound(f"endpoint {endpoint} is not under scale-to-zero", "name") from err
            return str(old.get("waking", ""))
        return None

    def release_wake(self, endpoint: str, operation_id: str) -> bool:
        """Drop the wake claim if `operation_id` holds it."""
        _check_key_part(endpoint, "endpoint")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._scaling_key(endpoint),
                UpdateExpression="REMOVE waking, wake_lease",
                ConditionExpression="waking = :op",
                ExpressionAttributeValues={":op": _string(operation_id)},
            )
        except ClientError as err:
            if _condition_failed(err):
                return False
            raise
        return True

    def put_wake_alarm(self, alarm_name: str, endpoint: str) -> None:
        """Remember that `alarm_name` is the scale-from-zero alarm of `endpoint` (its ALARM wakes it)."""
        _check_alarm_name(alarm_name)
        _check_key_part(endpoint, "endpoint")
        item = _serialize(
            {"pk": f"WAKEALARM#{alarm_name}", "sk": "WAKE", "alarm_name": alarm_name, "endpoint": endpoint}
        )
        self.client.put_item(TableName=self.table_name, Item=item)

    def wake_alarm_endpoint(self, alarm_name: str) -> str | None:
        _check_alarm_name(alarm_name)
        response = self.client.get_item(
            TableName=self.table_name, Key={"pk": _string(f"WAKEALARM#{alarm_name}"), "sk": _string("WAKE")}
        )
        item = response.get("Item")
        return str(_deserialize(item)["endpoint"]) if item else None

    def delete_wake_alarm(self, alarm_name: str) -> None:
        _check_alarm_name(alarm_name)
        self.client.delete_item(
            TableName=self.table_name, Key={"pk": _string(f"WAKEALARM#{alarm_name}"), "sk": _string("WAKE")}
        )

    @staticmethod
    def _scaling_key(endpoint: str) -> dict[str, Any]:
        return {"pk": _string(f"SCALE#{endpoint}"), "sk": _string("SETTINGS")}

    # --- helpers --------------------------------------------------------------------------------------

    def _set_on_operation(
        self,
        operation_id: str,
        fields: Mapping[str, Any],
        *,
        condition: str,
        names: Mapping[str, str] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> tuple[OperationRecord, bool]:
        """SET `fields` and updated_at on an existing operation if `condition` holds, in one UpdateItem.

        `condition` may use `#<field>` and `:<field>` of `fields`. Returns (the new record, True), or (the record
        as it was, False) when the condition failed; a missing operation is NotFound. The status version is left
        alone: these fields annotate the operation, they don't decide its status.
        """
        attributes = _serialize({**fields, "updated_at": format_timestamp(_datetime(self.now()))})
        try:
            response = self.client.update_item(
                TableName=self.table_name,
                Key=self._op_key(operation_id),
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in attributes),
                ConditionExpression=f"attribute_exists(pk) AND ({condition})",
                ExpressionAttributeNames={**{f"#{name}": name for name in attributes}, **(names or {})},
                ExpressionAttributeValues={
                    **{f":{name}": value for name, value in attributes.items()},
                    **(values or {}),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if not _condition_failed(err):
                raise
            old = _old_item(err)
            if old is None:
                raise NotFound(f"operation {operation_id} does not exist", "operation_id") from err
            return OperationRecord.model_validate(old), False
        return OperationRecord.model_validate(_deserialize(response["Attributes"])), True

    def _gsi1_partition(self, name: str) -> Iterator[dict[str, Any]]:
        """The raw items of one gsi1 partition that lists a kind of record (e.g. ``SCALING``), every page."""
        return self._query(
            {
                "TableName": self.table_name,
                "IndexName": GSI1_NAME,
                "KeyConditionExpression": "gsi1pk = :pk",
                "ExpressionAttributeValues": {":pk": _string(name)},
            }
        )

    def _query(self, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            response = self.client.query(**kwargs)
            yield from response.get("Items", [])
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return
            kwargs = {**kwargs, "ExclusiveStartKey": last_key}

    @staticmethod
    def _op_key(operation_id: str) -> dict[str, Any]:
        return {"pk": _string(f"OP#{operation_id}"), "sk": _string("META")}

    @staticmethod
    def _lock_key_attrs(endpoint: str) -> dict[str, str]:
        return {"pk": f"LOCK#{endpoint}", "sk": "LOCK"}

    @staticmethod
    def _token_key_attrs(endpoint: str, purpose: str) -> dict[str, str]:
        return {"pk": f"TOKEN#{endpoint}", "sk": purpose}

    @staticmethod
    def _watch_key_attrs(alarm_name: str, operation_id: str) -> dict[str, str]:
        return {"pk": f"ALARM#{alarm_name}", "sk": operation_id}

    def _token_key(self, endpoint: str, purpose: str) -> dict[str, Any]:
        return {k: _string(v) for k, v in self._token_key_attrs(endpoint, purpose).items()}

    def _live_token(self, item: Mapping[str, Any] | None) -> TaskToken | None:
        if not item:
            return None
        token = TaskToken.model_validate(_deserialize(item))
        return None if token.expires_at <= self.now() else token

    @staticmethod
    def _new_lock(endpoint: str, owner: str, *, acquired: float, lease_until: float) -> EndpointLock:
        return EndpointLock(
            endpoint=endpoint,
            owner=owner,
            acquired_at=_datetime(acquired),
            lease_expires_at=lease_until,
            expires_at=_lock_ttl(lease_until),
        )

    @staticmethod
    def _lock_from_item(item: dict[str, Any], now: float) -> EndpointLock:
        lock = EndpointLock.model_validate(item)
        return lock.model_copy(update={"expired": lock.is_expired(now)})

    def _lock_conflict(self, endpoint: str, old: dict[str, Any] | None, now: float) -> Conflict:
        if old is None:  # the lock vanished between the check and our report: tell the caller to retry
            return Conflict(f"the lock on endpoint {endpoint} changed concurrently; retry")
        holder = self._lock_from_item(old, now)
        until = format_timestamp(_datetime(holder.lease_expires_at))
        return Conflict(
            f"endpoint {endpoint} is locked by {holder.owner} until {until} "
            f"(lease expires in {max(0.0, holder.lease_expires_at - now):.0f} s)"
        )

    # --- async inference results ----------------------------------------------------------------------

    def async_results_recorded(self, inference_ids: Iterable[str]) -> set[str]:
        """The ids among `inference_ids` whose result *and* the stats shard that counted it are stored.

        SNS delivers at least once: a result recorded this way is a repeat that must change nothing. One
        strongly consistent BatchGetItem per 100 ids, then one for the shards the found results name. A result
        whose shard write was lost counts as not recorded, so that its redelivery is counted.
        """
        ids = [_check_inference_id(i) for i in dict.fromkeys(inference_ids)]
        found = self._batch_get([self._async_result_key(i) for i in ids], ["inference_id", "endpoint", "stats_shard"])
        shard_keys = {
            (f"ASYNCSTATS#{item['endpoint']}", str(item["stats_shard"])) for item in found if item.get("stats_shard")
        }
        present = {
            (str(item["pk"]), str(item["sk"]))
            for item in self._batch_get([{"pk": _string(pk), "sk": _string(sk)} for pk, sk in shard_keys], ["pk", "sk"])
        }
        return {
            str(item["inference_id"])
            for item in found
            if not item.get("stats_shard") or (f"ASYNCSTATS#{item['endpoint']}", str(item["stats_shard"])) in present
        }

    def put_async_results(self, results: Iterable[AsyncResultRecord], shards: Iterable[AsyncStatsShard]) -> NotWritten:
        """Store results and the stats shards counting them with BatchWriteItem: 25 items a call, one call for
        a batch of up to 10 notifications (10 results and at most 10 shards).

        A shard travels right after its results. Items DynamoDB leaves unprocessed are retried with backoff
        (``ASYNC_WRITE_RETRY_DELAYS``); returns what was still not stored in the end (BatchWriteItem is not
        atomic: the caller decides what that means for the rest, see `inferops.async_results`).
        """
        grouped: dict[tuple[str, str | None], list[AsyncResultRecord]] = {}
        for result in results:
            _check_inference_id(result.inference_id)
            _check_key_part(result.endpoint, "endpoint")
            grouped.setdefault((result.endpoint, result.stats_shard), []).append(result)
        items: list[dict[str, Any]] = []
        for shard in shards:
            _check_key_part(shard.endpoint, "endpoint")
            items.extend(self._async_result_item(r) for r in grouped.pop((shard.endpoint, shard.shard), []))
            items.append(_serialize({"pk": f"ASYNCSTATS#{shard.endpoint}", "sk": shard.shard, **shard.model_dump()}))
        for members in grouped.values():  # results no shard counts (a caller that keeps no stats)
            items.extend(self._async_result_item(r) for r in members)
        left = NotWritten(set(), set())
        for start in range(0, len(items), _BATCH_WRITE_MAX):
            for item in self._batch_write(items[start : start + _BATCH_WRITE_MAX]):
                pk, sk = item["pk"]["S"], item["sk"]["S"]
                if pk.startswith("ASYNCSTATS#"):
                    left.shards.add(sk)
                else:
                    left.results.add(pk.removeprefix("ASYNC#"))
        return left

    def get_async_result(self, inference_id: str) -> AsyncResultRecord:
        """One async inference's result; NotFound while SageMaker has not notified it (or after retention)."""
        _check_inference_id(inference_id)
        response = self.client.get_item(
            TableName=self.table_name, Key=self._async_result_key(inference_id), ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            raise NotFound(
                f"no async result for inference id {inference_id!r}: not finished yet, unknown, or older than "
                f"{ASYNC_RESULT_RETENTION_DAYS} days",
                "inference_id",
            )
        return AsyncResultRecord.model_validate(_deserialize(item))

    def async_stats_shards(self, endpoint: str, since: datetime) -> list[AsyncStatsShard]:
        """An endpoint's stats shards from the clock hour holding `since` on (one Query, paginated)."""
        _check_key_part(endpoint, "endpoint")
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk >= :from",
            "ExpressionAttributeValues": {
                ":pk": _string(f"ASYNCSTATS#{endpoint}"),
                ":from": _string(async_stats_hour(since)),
            },
        }
        return [AsyncStatsShard.model_validate(_deserialize(item)) for item in self._query(kwargs)]

    @staticmethod
    def _async_result_key(inference_id: str) -> dict[str, Any]:
        return {"pk": _string(f"ASYNC#{inference_id}"), "sk": _string("RESULT")}

    @staticmethod
    def _async_result_item(result: AsyncResultRecord) -> dict[str, Any]:
        return _serialize(
            {"pk": f"ASYNC#{result.inference_id}", "sk": "RESULT", **result.model_dump(mode="json", exclude_none=True)}
        )

    def _batch_get(self, keys: list[dict[str, Any]], attributes: list[str]) -> list[dict[str, Any]]:
        """BatchGetItem (100 keys a call, strongly consistent), unprocessed keys retried; the items found."""
        names = {f"#a{n}": name for n, name in enumerate(attributes)}
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), _BATCH_GET_MAX):
            pending: dict[str, Any] = {
                self.table_name: {
                    "Keys": keys[start : start + _BATCH_GET_MAX],
                    "ConsistentRead": True,
                    "ProjectionExpression": ", ".join(names),
                    "ExpressionAttributeNames": names,
                }
            }
            for delay in (*ASYNC_WRITE_RETRY_DELAYS, None):
                response = self.client.batch_get_item(RequestItems=pending)
                found.extend(_deserialize(item) for item in response.get("Responses", {}).get(self.table_name, []))
                pending = dict(response.get("UnprocessedKeys") or {})
                if not pending:
                    break
                if delay is None:
                    raise StorageBusy(f"DynamoDB left {len(pending[self.table_name]['Keys'])} keys unread; retry")
                _backoff(delay)
        return found

    def _batch_write(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One BatchWriteItem of up to 25 puts, unprocessed items retried with backoff; the items left over."""
        pending: list[Any] = [{"PutRequest": {"Item": item}} for item in items]
        for delay in (*ASYNC_WRITE_RETRY_DELAYS, None):
            response = self.client.batch_write_item(RequestItems={self.table_name: pending})
            pending = list((response.get("UnprocessedItems") or {}).get(self.table_name, []))
            if not pending or delay is None:
                break
            _backoff(delay)
        return [request["PutRequest"]["Item"] for request in pending]


def _expected_statuses(
    expected: OperationStatus | Iterable[OperationStatus] | None,
) -> frozenset[OperationStatus] | None:
    if expected is None:
        return None
    if isinstance(expected, str):  # a StrEnum is iterable: don't iterate its characters
        return frozenset({_status(expected)})
    return frozenset(_status(s) for s in expected)


def _status(value: str) -> OperationStatus:
    try:
        return OperationStatus(value)
    except ValueError:
        known = ", ".join(OperationStatus)
        raise InvalidInput(f"unknown operation status {value!r} (known: {known})", "status") from None


def _ended(record: OperationRecord) -> Conflict:
    return Conflict(f"operation {record.id} already ended as {record.status}", "status")


def _check_transition(operation_id: str, current: OperationStatus, to_status: OperationStatus) -> None:
    if to_status not in ALLOWED_TRANSITIONS[current]:
        raise Conflict(f"operation {operation_id} is {current}, cannot move to {to_status}", "status")


def _check_lease(lease_seconds: float) -> None:
    if not lease_seconds > 0:
        raise InvalidInput(f"lease_seconds must be positive, got {lease_seconds}", "lease_seconds")


def _lock_ttl(lease_until: float) -> int:
    return math.ceil(lease_until) + LOCK_TTL_GRACE_SECONDS


# --- async inference results ---------------------------------------------------------------------------

ASYNC_RESULT_RETENTION_DAYS = 30
"""How long an async result stays readable by inference id (DynamoDB TTL)."""
ASYNC_STATS_RETENTION_DAYS = 8
"""How long a stats shard is kept: the stats API looks back a week at most."""
ASYNC_WRITE_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)
"""Backoff (seconds, jittered) before retrying what a BatchWriteItem/BatchGetItem left unprocessed."""
INFERENCE_ID_MAX_LENGTH = 64
"""InvokeEndpointAsync's limit on InferenceId (pattern ``\\A\\S[\\p{Print}]*\\z``)."""
_BATCH_WRITE_MAX = 25
_BATCH_GET_MAX = 100


class StorageBusy(Exception):
    """DynamoDB kept leaving part of a batch unprocessed (throttling): the caller retries later."""


class NotWritten(NamedTuple):
    """What `put_async_results` could not store after its retries."""

    results: set[str]
    """Inference ids whose result item is not stored."""
    shards: set[str]
    """Sort keys of the stats shards not stored."""


class AsyncResultRecord(_Record):
    """One async inference's outcome as SageMaker notified it; keyed by its inference id."""

    inference_id: str
    endpoint: str
    status: Literal["COMPLETED", "FAILED"]
    invocation_status: str
    """SageMaker's own word (`Completed`, `Failed`, ...)."""
    completed_at: Timestamp
    """The notification's `eventTime`."""
    received_at: Timestamp | None = None
    """The notification's `receivedTime`: when SageMaker accepted the request."""
    latency_seconds: float | None = None
    """End to end, `receivedTime` to `eventTime`: queueing + processing + upload."""
    input_location: str | None = None
    output_location: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None
    content_type: str | None = None
    region: str | None = None
    classification: dict[str, Any] | None = None
    message_id: str | None = None
    stats_shard: str | None = None
    recorded_at: Timestamp | None = None
    expires_at: int | None = None


class AsyncStatsShard(_Record):
    """What one batch added to an endpoint's async numbers for one UTC clock hour; the stats API sums shards."""

    endpoint: str
    hour: str
    """``YYYY-MM-DDTHH`` (UTC), the clock hour of the counted results' `completed_at`."""
    shard: str
    """The sort key: ``<hour>#<the batch's first message for this endpoint and hour>.<attempt, random>``."""
    completed: int = 0
    failed: int = 0
    latency_count: int = 0
    latency_sum: float = 0.0
    latency_min: float | None = None
    latency_max: float | None = None
    histogram: dict[str, int] = Field(default_factory=dict)
    """Latency bucket upper bound in seconds (``"5"``, ..., ``"inf"``) -> results in that bucket."""
    categories: dict[str, int] = Field(default_factory=dict)
    """Error category -> failed results."""
    expires_at: int | None = None


def async_stats_hour(at: datetime) -> str:
    """The clock hour (UTC) a stats shard covers, as its sort key starts: ``2026-01-05T10``."""
    return _to_utc(at).strftime("%Y-%m-%dT%H")


def _check_inference_id(value: str) -> str:
    if not 1 <= len(value) <= INFERENCE_ID_MAX_LENGTH or not value.isprintable() or value[0].isspace():
        raise InvalidInput(
            f"inference id must be 1-{INFERENCE_ID_MAX_LENGTH} printable characters not starting with a space, "
            f"got {value[:80]!r}",
            "inference_id",
        )
    return value


def _backoff(delay: float) -> None:
    time.sleep(delay * (0.5 + secrets.randbelow(1000) / 1000))
