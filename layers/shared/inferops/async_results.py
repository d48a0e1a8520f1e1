"""Async inference results: SageMaker's notifications, indexed by inference id, counted and classified per endpoint.

SageMaker publishes one JSON notification per finished `InvokeEndpointAsync` request to the endpoint's SNS
success or error topic (`AsyncInferenceConfig.OutputConfig.NotificationConfig`); both topics feed one SQS queue
whose event source mapping hands batches to AsyncResultsFunction with `ReportBatchItemFailures`. Per batch:

1. Each record is parsed on its own (Powertools `BatchProcessor`). The SQS body is SageMaker's JSON (raw message
   delivery) or SNS's envelope whose `Message` holds it; both are accepted. SageMaker's `TestNotification`
   (sent on CreateEndpoint, UpdateEndpoint, UpdateEndpointWeightsAndCapacities) is dropped. A malformed or
   oversized message is a batch item failure with the reason logged: SQS redelivers it until the queue's
   `maxReceiveCount`, then moves it to the dead-letter queue (whose depth alarms).
2. Then the batch is stored at once: one BatchGetItem finds the inference ids already recorded (SNS and SQS
   deliver at least once, so a repeat must change nothing; a second one checks the stats shards of those found),
   one BatchWriteItem stores the new results and one stats shard per endpoint and clock hour. A record whose
   write did not go through is an item failure too (BatchWriteItem is not atomic: `_write` keeps the counts
   exact whichever items DynamoDB leaves unprocessed). Two batches holding the same new notification at the
   same moment could both count it: conditional writes would prevent that, BatchWriteItem has none.
3. For what was new: EMF metrics per endpoint (`AsyncInferenceCompleted`, `AsyncInferenceFailed`,
   `AsyncEndToEndLatency` from `receivedTime` to `eventTime`; failures also by `ErrorCategory`), and one
   service-level document counting repeats, test notifications and rejections.

Notification shapes. Success body and TestNotification: the SageMaker Developer Guide, "Check prediction
results" (https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-check-predictions.html). AWS documents
no error body; the one published sample (awslabs/osml-model-runner, tile_request_table.py) has the same envelope
with `invocationStatus` "Failed", a `failureReason` and no `responseParameters`; public consumers also read a
`failureLocation` (S3FailurePath), under `responseParameters` or at the top level. So the parser is defensive:
any status but "Completed" is a failure, unknown fields are ignored, only what an index needs is required
(`inferenceId`, `requestParameters.endpointName`, `invocationStatus`).

Error classification follows the troubleshooting catalog (reference/sagemaker-facts.md §17 and §9): the first
matching signature of `SIGNATURES` gives a category, its cause, the action to take and whether a retry may help.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import SnsNotificationModel
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from inferops.errors import InvalidInput, invalid
from inferops.model import Model
from inferops.storage import (
    ASYNC_RESULT_RETENTION_DAYS,
    ASYNC_STATS_RETENTION_DAYS,
    INFERENCE_ID_MAX_LENGTH,
    AsyncResultRecord,
    AsyncStatsShard,
    NotWritten,
    StorageBusy,
    async_stats_hour,
    format_timestamp,
)

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from inferops.storage import Repository

__all__ = [
    "ENDPOINT_NAME_PATTERN",
    "LATENCY_BUCKETS",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_STATS_HOURS",
    "SIGNATURES",
    "AsyncResultView",
    "AsyncResultsProcessor",
    "AsyncStatsView",
    "Classification",
    "Ignored",
    "ResultStore",
    "SageMakerNotification",
    "aggregate",
    "classify",
    "endpoint_stats",
    "get_result",
    "parse_message",
    "percentile",
    "shard_results",
    "to_record",
]

MAX_MESSAGE_BYTES = 262_144
"""SNS's publish limit: no SageMaker notification is larger (with `IncludeInferenceResponseIn` the response
is included only up to 128 KB). The SQS body may be up to 1 MiB: an SNS envelope escapes its message."""
MAX_BODY_BYTES = 1_048_576
MAX_STATS_HOURS = 168
"""The stats API looks back at most a week (shards live ``ASYNC_STATS_RETENTION_DAYS``)."""
MAX_LOCATION_LENGTH = 2048
MAX_REASON_LENGTH = 4000
"""A longer `failureReason` is stored cut (with a marker): the classification reads the whole of it."""
ENDPOINT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
LATENCY_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 28800, math.inf,
)  # fmt: skip
"""Upper bounds (seconds) of the end-to-end latency histogram: queueing (TTL up to 6 h) + processing (up to 1 h)."""
METRICS_NAMESPACE = "InferOps"
_EMF_MAX_VALUES = 99  # Powertools prints a document by itself at 100 values of one metric: stay under it


# ---------------------------------------------------------------------- SageMaker's notification
def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Location = Annotated[str, Field(min_length=1, max_length=MAX_LOCATION_LENGTH)]


class _RequestParameters(Model):
    model_config = ConfigDict(extra="ignore")

    endpointName: str = Field(min_length=1, max_length=63, pattern=ENDPOINT_NAME_PATTERN)
    inputLocation: Location | None = None
    contentType: str | None = Field(default=None, max_length=1024)


class _ResponseParameters(Model):
    model_config = ConfigDict(extra="ignore")

    contentType: str | None = Field(default=None, max_length=1024)
    outputLocation: Location | None = None
    failureLocation: Location | None = None


class SageMakerNotification(Model):
    """The body SageMaker publishes for one finished async request (success or error topic)."""

    model_config = ConfigDict(extra="ignore")

    eventSource: Literal["aws:sagemaker"] = "aws:sagemaker"
    eventName: Literal["InferenceResult"] = "InferenceResult"
    eventVersion: str | None = None
    awsRegion: str | None = Field(default=None, max_length=64)
    eventTime: UtcDatetime | None = None
    receivedTime: UtcDatetime | None = None
    invocationStatus: str = Field(min_length=1, max_length=64)
    failureReason: str | None = None
    inferenceId: str = Field(min_length=1, max_length=INFERENCE_ID_MAX_LENGTH, pattern=r"^\S")
    requestParameters: _RequestParameters
    responseParameters: _ResponseParameters | None = None
    failureLocation: Location | None = None
    """Where some consumers read S3FailurePath's object; SageMaker's own shape has it in responseParameters."""


class Ignored(Model):
    """A message that is not a result and needs nothing done (SageMaker's TestNotification)."""

    model_config = ConfigDict(frozen=True)

    reason: str


# ---------------------------------------------------------------------- classification
class Classification(Model):
    """What a failure means, from the troubleshooting catalog: the category, its cause and what to do."""

    model_config = ConfigDict(frozen=True)

    category: str
    cause: str
    action: str
    retryable: bool
    """Whether sending the same request again may succeed without changing anything."""
    matched: str | None = None
    """The fragment of `failureReason` that decided the category (None: no signature matched)."""


@dataclass(frozen=True)
class Signature:
    category: str
    pattern: re.Pattern[str]
    cause: str
    action: str
    retryable: bool


def _signature(category: str, pattern: str, cause: str, action: str, *, retryable: bool) -> Signature:
    return Signature(category, re.compile(pattern, re.IGNORECASE), cause, action, retryable)


SIGNATURES: tuple[Signature, ...] = (
    _signature(
        "out_of_memory",
        r"out of memory|OutOfMemory|\bOOM\b|MemoryError|Cannot allocate memory|exit code 137",
        "the model server ran out of (accelerator) memory",
        "use an instance type with more (GPU) memory, or lower MaxConcurrentInvocationsPerInstance and the "
        "server's batch size",
        retryable=False,
    ),
    _signature(
        "gpu_driver_mismatch",
        r"NVML|Driver/library version mismatch|CannotStartContainerError|CUDA driver version",
        "the container's CUDA needs a newer NVIDIA driver than the host has",
        "use a container built for the host's driver, set InferenceAmiVersion, or add the CUDA compatibility "
        "package to the image",
        retryable=False,
    ),
    _signature(
        "invocation_timeout",
        r"timed out|timeout|time out",
        "the container did not answer in time: InvocationTimeoutSeconds (default 15 min, up to 1 h) or the model "
        "server's own response timeout",
        "warm the model up at load (model_fn), raise the server's timeout (TS_DEFAULT_RESPONSE_TIMEOUT, "
        "MMS_DEFAULT_RESPONSE_TIMEOUT) and InvocationTimeoutSeconds (up to 3600)",
        retryable=True,
    ),
    _signature(
        "request_expired",
        r"expired|RequestTTL|time to live",
        "the request waited in the queue longer than its RequestTTLSeconds (6 h by default): the endpoint is "
        "under-scaled or at zero instances",
        "scale out on ApproximateBacklogSizePerInstance, wake from zero with a HasBacklogWithoutCapacity step "
        "policy, or raise RequestTTLSeconds (60-21600)",
        retryable=True,
    ),
    _signature(
        "payload_too_large",
        r"payload|exceeded the maximum|too large|\b413\b|max(imum)?[ _]?(request|response)[ _]?size",
        "the request or response exceeded a size limit of the model server (or 5 MB between pipeline containers)",
        "raise the server's limits (TS_MAX_REQUEST_SIZE / TS_MAX_RESPONSE_SIZE, MMS_MAX_REQUEST_SIZE / "
        "MMS_MAX_RESPONSE_SIZE) or send a smaller payload",
        retryable=False,
    ),
    _signature(
        "input_download",
        r"download|input location|InputLocation|NoSuchKey|NoSuchBucket",
        "SageMaker could not read the request's input from S3",
        "check that the object at inputLocation exists in the endpoint's Region and that the endpoint's execution "
        "role may s3:GetObject it (and kms:Decrypt its key)",
        retryable=False,
    ),
    _signature(
        "output_upload",
        r"upload|output location|S3OutputPath|S3FailurePath|failed to write",
        "SageMaker could not write the result to S3OutputPath or S3FailurePath",
        "check that the bucket exists and the execution role may s3:PutObject and s3:AbortMultipartUpload there "
        "(and kms:GenerateDataKey on KmsKeyId)",
        retryable=True,
    ),
    _signature(
        "access_denied",
        r"AccessDenied|not authori[sz]ed|Forbidden|\bKMS\b",
        "a permission of the endpoint's execution role is missing",
        "find the denied call in CloudTrail and grant it (S3 buckets, KMS key, sns:Publish); avoid wildcards",
        retryable=False,
    ),
    _signature(
        "health_check",
        r"\bping\b|health check|unhealthy",
        "the container stopped answering /ping (typically while a long invocation blocks it), so SageMaker took "
        "the instance out of service",
        "serve /ping from its own worker so long invocations cannot block it; check the container logs",
        retryable=True,
    ),
    _signature(
        "missing_entry_point",
        r"SAGEMAKER_PROGRAM|SAGEMAKER_SUBMIT_DIRECTORY|has no attribute 'transform'",
        "the framework container found no inference script",
        "set SAGEMAKER_PROGRAM and SAGEMAKER_SUBMIT_DIRECTORY in the model's environment",
        retryable=False,
    ),
    _signature(
        "model_not_ready",
        r"ModelNotReady|\b507\b",
        "the model was still loading, or the GPU memory of a multi-model endpoint is full",
        "retry after the model has loaded (up to 360 s); for 507 use a bigger instance or fewer models per instance",
        retryable=True,
    ),
    _signature(
        "model_error",
        r"(server|client) error \(\d+\)|ModelError|from (the )?model|from primary",
        "the container answered the invocation with an error; SageMaker does not retry it",
        "read the container's logs (/aws/sagemaker/Endpoints/<endpoint>, data-log stream per instance), its "
        "CPU and memory utilization, and the error object at failureLocation (S3FailurePath)",
        retryable=False,
    ),
    _signature(
        "service_error",
        r"InternalFailure|InternalServer|ServiceUnavailable|Throttl",
        "a transient SageMaker service error",
        "send the request again with backoff",
        retryable=True,
    ),
)
UNKNOWN = Classification(
    category="unknown",
    cause="the failure matches no known signature",
    action="read the error object at failureLocation (S3FailurePath) and the endpoint's container logs",
    retryable=False,
)


def classify(reason: str | None) -> Classification:
    """The first signature of the catalog that `reason` matches, else `unknown`."""
    if reason:
        for signature in SIGNATURES:
            found = signature.pattern.search(reason)
            if found is not None:
                return Classification(
                    category=signature.category,
                    cause=signature.cause,
                    action=signature.action,
                    retryable=signature.retryable,
                    matched=found.group(0)[:120],
                )
    return UNKNOWN


# ---------------------------------------------------------------------- parsing one SQS message
def _json_object(text: str, field: str, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"{field}: {what} is not JSON ({error})", field=field) from error
    if not isinstance(document, dict):
        raise InvalidInput(f"{field}: {what} must be a JSON object, got {type(document).__name__}", field=field)
    return document


def parse_message(body: str, *, message_id: str | None = None) -> AsyncResultRecord | Ignored:
    """One SQS body (raw SageMaker JSON or SNS envelope) -> the result to index, or what to ignore.

    Anything else is an InvalidInput naming the field: the record fails and is eventually dead-lettered.
    """
    size = len(body.encode("utf-8", "surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise InvalidInput(f"the message body is {size} bytes, over the {MAX_BODY_BYTES}-byte limit", field="body")
    document = _json_object(body, "body", "the message body")
    if "TopicArn" in document or "Type" in document:  # SNS's envelope (no raw message delivery)
        try:
            envelope = SnsNotificationModel.model_validate(document)
        except ValidationError as error:
            raise invalid(error, "not an SNS notification", "envelope") from error
        text = str(envelope.Message)
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_MESSAGE_BYTES:
            raise InvalidInput(
                f"the notification is {size} bytes, over SNS's {MAX_MESSAGE_BYTES}-byte limit", field="envelope.Message"
            )
        document = _json_object(text, "envelope.Message", "the SNS message")
        message_id = envelope.MessageId
    elif size > MAX_MESSAGE_BYTES:
        raise InvalidInput(f"the notification is {size} bytes, over SNS's {MAX_MESSAGE_BYTES}-byte limit", "body")
    if document.get("eventName") == "TestNotification":
        return Ignored(reason="SageMaker's TestNotification")
    try:
        notification = SageMakerNotification.model_validate(document)
    except ValidationError as error:
        raise invalid(error, "not a SageMaker async inference notification") from error
    return to_record(notification, message_id=message_id)


def to_record(notification: SageMakerNotification, *, message_id: str | None = None) -> AsyncResultRecord:
    """The notification as the result index stores it (not yet assigned to a stats shard)."""
    completed = notification.invocationStatus == "Completed"
    received, finished = notification.receivedTime, notification.eventTime
    latency = None
    if received is not None and finished is not None:
        latency = round(max(0.0, (finished - received).total_seconds()), 3)
    response = notification.responseParameters
    reason = notification.failureReason
    classification = None if completed else classify(reason).model_dump()
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        reason = reason[: MAX_REASON_LENGTH - 20] + " ...[cut]"
    return AsyncResultRecord(
        inference_id=notification.inferenceId,
        endpoint=notification.requestParameters.endpointName,
        status="COMPLETED" if completed else "FAILED",
        invocation_status=notification.invocationStatus,
        completed_at=finished or datetime.now(UTC),
        received_at=received,
        latency_seconds=latency,
        input_location=notification.requestParameters.inputLocation,
        output_location=response.outputLocation if response else None,
        failure_location=(response.failureLocation if response else None) or notification.failureLocation,
        failure_reason=None if completed else reason,
        content_type=response.contentType if response else None,
        region=notification.awsRegion,
        classification=classification,
        message_id=message_id,
    )


# ---------------------------------------------------------------------- stats shards
def _bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return f"{bound:g}"
    return "inf"  # pragma: no cover - the last bound is infinite


def shard_results(
    results: Iterable[AsyncResultRecord],
    *,
    now: float,
    first_message: Callable[[AsyncResultRecord], str],
    attempt: str | None = None,
) -> tuple[list[AsyncResultRecord], list[AsyncStatsShard]]:
    """Assign results to one shard per endpoint and clock hour, with the numbers each shard adds.

    A shard's key is ``<hour>#<first message id>.<attempt>``: `attempt` (random by default) keeps a redelivered
    message from overwriting the shard an earlier attempt wrote for other results.
    """
    suffix = attempt or secrets.token_hex(4)
    groups: dict[tuple[str, str], list[AsyncResultRecord]] = defaultdict(list)
    for result in results:
        groups[(result.endpoint, async_stats_hour(result.completed_at))].append(result)
    recorded_at = datetime.fromtimestamp(now, UTC)
    staged: list[AsyncResultRecord] = []
    shards: list[AsyncStatsShard] = []
    for (endpoint, hour), members in groups.items():
        shard = aggregate(endpoint, hour, f"{hour}#{first_message(members[0])}.{suffix}", members)
        shards.append(shard)
        for result in members:
            expires = result.completed_at + timedelta(days=ASYNC_RESULT_RETENTION_DAYS)
            staged.append(
                result.model_copy(
                    update={
                        "stats_shard": shard.shard,
                        "recorded_at": recorded_at,
                        "expires_at": int(expires.timestamp()),
                    }
                )
            )
    return staged, shards


def aggregate(endpoint: str, hour: str, key: str, members: list[AsyncResultRecord]) -> AsyncStatsShard:
    """The numbers `members` (results of one endpoint and clock hour) add to the stats: one shard."""
    latencies = [r.latency_seconds for r in members if r.latency_seconds is not None]
    hour_start = datetime.fromisoformat(f"{hour}:00:00+00:00")
    return AsyncStatsShard(
        endpoint=endpoint,
        hour=hour,
        shard=key,
        completed=sum(1 for r in members if r.status == "COMPLETED"),
        failed=sum(1 for r in members if r.status == "FAILED"),
        latency_count=len(latencies),
        latency_sum=round(sum(latencies), 3),
        latency_min=min(latencies, default=None),
        latency_max=max(latencies, default=None),
        histogram=dict(Counter(_bucket(x) for x in latencies)),
        categories=dict(Counter(_category(r) for r in members if r.status == "FAILED")),
        expires_at=int((hour_start + timedelta(days=ASYNC_STATS_RETENTION_DAYS)).timestamp()),
    )


def _category(result: AsyncResultRecord) -> str:
    return str((result.classification or {}).get("category", UNKNOWN.category))


# ---------------------------------------------------------------------- the batch
class ResultStore(Protocol):
    """What the batch needs from storage (`Repository`; the benchmark stubs it)."""

    def now(self) -> float: ...

    def async_results_recorded(self, inference_ids: Iterable[str]) -> set[str]: ...

    def put_async_results(
        self, results: Iterable[AsyncResultRecord], shards: Iterable[AsyncStatsShard]
    ) -> NotWritten: ...


class NotStored(Exception):
    """The record was parsed but its result could not be stored: SQS redelivers it."""


@dataclass
class BatchSummary:
    """What one batch did, for the log line and the service-level metrics."""

    records: int = 0
    new: int = 0
    repeats: int = 0
    ignored: int = 0
    rejected: int = 0
    not_stored: int = 0
    endpoints: dict[str, dict[str, int]] = field(default_factory=dict)


class AsyncResultsProcessor(BatchProcessor):
    """Powertools' SQS batch processor that parses each record, then stores the whole batch at once.

    Use a new one per invocation:

        processor = AsyncResultsProcessor(repo, logger=logger)
        return process_partial_response(event, processor.parse_record, processor, context)
    """

    def __init__(
        self,
        store: ResultStore,
        *,
        logger: Logger | None = None,
        max_receive_count: int | None = None,
        namespace: str | None = None,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self.store = store
        self.log = logger
        self.max_receive_count = max_receive_count
        self.namespace = namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE
        self.emit: Callable[[str], None] = emit or print
        self.summary = BatchSummary()
        self._parsed: list[tuple[dict[str, Any], AsyncResultRecord | Ignored]] = []
        self._new: list[AsyncResultRecord] = []
        self._emf: AmazonCloudWatchEMFProvider | None = None

    # -------------------------------------------------------------- per record (Powertools calls it)
    def parse_record(self, record: SQSRecord) -> str:
        """Parse one record; a bad one raises (an item failure) after logging why, with no stack trace."""
        try:
            outcome = parse_message(record.body, message_id=record.message_id)
        except InvalidInput as error:
            self._rejected(record, error)
            raise
        self._parsed.append((record.raw_event, outcome))
        return "ignored" if isinstance(outcome, Ignored) else "parsed"

    def _rejected(self, record: SQSRecord, error: InvalidInput) -> None:
        self.summary.rejected += 1
        if self.log is None:
            return
        attempt = int(record.attributes.get("ApproximateReceiveCount") or 0) or None
        last = self.max_receive_count is not None and attempt is not None and attempt >= self.max_receive_count
        self.log.error(
            "rejected message: it goes to the dead-letter queue" if last else "rejected message: SQS will retry it",
            extra={
                "reason": error.message,
                "field": error.field,
                "message_id": record.message_id,
                "attempt": attempt,
                "max_receive_count": self.max_receive_count,
            },
        )

    # -------------------------------------------------------------- the whole batch
    def _prepare(self) -> None:
        super()._prepare()  # type: ignore[no-untyped-call]
        self._parsed = []
        self._new = []
        self.summary = BatchSummary()

    def process(self) -> list[tuple[Any, ...]]:
        outcomes: list[tuple[Any, ...]] = super().process()
        self.summary.records = len(self.records)
        self._store()
        self._metrics()
        if self.log is not None:
            self.log.info("async results batch", extra={"summary": self.summary.__dict__})
        return outcomes

    def _store(self) -> None:
        first: dict[str, tuple[dict[str, Any], AsyncResultRecord]] = {}
        for raw, outcome in self._parsed:
            if isinstance(outcome, Ignored):
                self.summary.ignored += 1
            elif outcome.inference_id in first:  # the same notification twice in one batch
                self.summary.repeats += 1
            else:
                first[outcome.inference_id] = (raw, outcome)
        if not first:
            return
        try:
            recorded = self.store.async_results_recorded(first)
            fresh = [result for key, (_, result) in first.items() if key not in recorded]
            message_of = {result.inference_id: str(raw["messageId"]) for raw, result in first.values()}
            staged, shards = shard_results(
                fresh, now=self.store.now(), first_message=lambda r: message_of[r.inference_id]
            )
            failed = self._write(staged, shards) if staged else set()
        except Exception as error:  # storage is down or throttled: every new record is retried later
            if self.log is not None:
                self.log.error(
                    "storing the batch failed; its records will be retried",
                    extra={"error": f"{type(error).__name__}: {error}"},
                    exc_info=not isinstance(error, StorageBusy | ClientError | BotoCoreError),  # a bug: show where
                )
            recorded, staged, failed = set(), [], set(first)
        self.summary.repeats += len(recorded)
        for inference_id in failed:
            self._fail(first[inference_id][0], f"result {inference_id} could not be stored; retried later")
        self.summary.not_stored = len(failed)
        self._new = [result for result in staged if result.inference_id not in failed]
        self.summary.new = len(self._new)

    def _write(self, staged: list[AsyncResultRecord], shards: list[AsyncStatsShard]) -> set[str]:
        """Store the batch; the inference ids to redeliver. BatchWriteItem is not atomic, so:

        - a shard not stored: its results are redelivered (their stored copies name a shard that does not exist,
          so `async_results_recorded` does not count them as recorded) and counted then;
        - a result not stored whose shard was: the shard is written again without it (same key: it replaces the
          first), so that its redelivery counts it once.
        """
        left = self.store.put_async_results(staged, shards)
        if not left.results and not left.shards:
            return set()
        members: dict[str, list[AsyncResultRecord]] = defaultdict(list)
        for result in staged:
            members[str(result.stats_shard)].append(result)
        failed = set(left.results)
        corrections = []
        for shard in shards:
            ids = {r.inference_id for r in members[shard.shard]}
            if shard.shard in left.shards:
                failed |= ids
            elif ids & left.results:
                kept = [r for r in members[shard.shard] if r.inference_id not in left.results]
                corrections.append(aggregate(shard.endpoint, shard.hour, shard.shard, kept))
        if corrections and self.store.put_async_results([], corrections).shards and self.log is not None:
            self.log.warning(
                "stats shards could not be corrected: their redelivered results may be counted twice",
                extra={"shards": [c.shard for c in corrections]},
            )
        return failed

    def _fail(self, raw: dict[str, Any], reason: str) -> None:
        """Turn a parsed record into an item failure (its write did not go through)."""
        self.success_messages = [m for m in self.success_messages if id(m) != id(raw)]  # Powertools keeps the dict
        error = NotStored(reason)
        self.failure_handler(SQSRecord(raw), (NotStored, error, None))

    # -------------------------------------------------------------- metrics (EMF)
    def _metrics(self) -> None:
        by_endpoint: dict[str, list[AsyncResultRecord]] = defaultdict(list)
        for result in self._new:
            by_endpoint[result.endpoint].append(result)
        for endpoint, results in by_endpoint.items():
            completed = sum(1 for r in results if r.status == "COMPLETED")
            self.summary.endpoints[endpoint] = {"completed": completed, "failed": len(results) - completed}
        if is_metrics_disabled():  # POWERTOOLS_METRICS_DISABLED
            return
        for endpoint, results in by_endpoint.items():
            for start in range(0, len(results), _EMF_MAX_VALUES):
                self._endpoint_document(endpoint, results[start : start + _EMF_MAX_VALUES])
            categories = Counter(_category(r) for r in results if r.status == "FAILED")
            for category, count in sorted(categories.items()):
                provider = self._provider()
                provider.add_dimension("EndpointName", endpoint)
                provider.add_dimension("ErrorCategory", category)
                provider.add_metric("AsyncInferenceFailed", "Count", count)
                self._flush(provider)
        service = self._provider()
        for name, value in (
            ("AsyncNotificationsRepeated", self.summary.repeats),
            ("AsyncTestNotifications", self.summary.ignored),
            ("AsyncNotificationsRejected", self.summary.rejected),
            ("AsyncResultsNotStored", self.summary.not_stored),
        ):
            if value:
                service.add_metric(name, "Count", value)
        if service.metric_set:
            self._flush(service)

    def _endpoint_document(self, endpoint: str, results: list[AsyncResultRecord]) -> None:
        provider = self._provider()
        provider.add_dimension("EndpointName", endpoint)
        completed = sum(1 for r in results if r.status == "COMPLETED")
        provider.add_metric("AsyncInferenceCompleted", "Count", completed)
        provider.add_metric("AsyncInferenceFailed", "Count", len(results) - completed)
        for result in results:
            if result.latency_seconds is not None:
                provider.add_metric("AsyncEndToEndLatency", "Milliseconds", round(result.latency_seconds * 1000, 1))
        self._flush(provider)

    def _provider(self) -> AmazonCloudWatchEMFProvider:
        """One EMF document at a time: the batch's provider, emptied (making one per document costs ~100 µs)."""
        if self._emf is None:
            self._emf = AmazonCloudWatchEMFProvider(namespace=self.namespace)
        self._emf.clear_metrics()
        return self._emf

    def _flush(self, provider: AmazonCloudWatchEMFProvider) -> None:
        self.emit(json.dumps(provider.serialize_metric_set(), separators=(",", ":")))
        provider.clear_metrics()


# ---------------------------------------------------------------------- the API's views
class AsyncResultView(Model):
    """GET /async-results/{inferenceId}."""

    model_config = ConfigDict(frozen=True)

    inference_id: str
    endpoint: str
    status: Literal["COMPLETED", "FAILED"]
    invocation_status: str
    received_at: str | None
    completed_at: str
    latency_seconds: float | None = Field(description="end to end: receivedTime to eventTime")
    input_location: str | None
    output_location: str | None = Field(description="the result in S3 (completed requests)")
    failure_location: str | None = Field(description="the error object in S3 (S3FailurePath), when configured")
    failure_reason: str | None
    classification: Classification | None = Field(description="failed requests: category, cause, action")
    recorded_at: str | None


def get_result(repo: Repository, inference_id: str) -> AsyncResultView:
    record = repo.get_async_result(inference_id)
    return AsyncResultView(
        inference_id=record.inference_id,
        endpoint=record.endpoint,
        status=record.status,
        invocation_status=record.invocation_status,
        received_at=format_timestamp(record.received_at) if record.received_at else None,
        completed_at=format_timestamp(record.completed_at),
        latency_seconds=record.latency_seconds,
        input_location=record.input_location,
        output_location=record.output_location,
        failure_location=record.failure_location,
        failure_reason=record.failure_reason,
        classification=Classification.model_validate(record.classification) if record.classification else None,
        recorded_at=format_timestamp(record.recorded_at) if record.recorded_at else None,
    )


class LatencySummary(Model):
    model_config = ConfigDict(frozen=True)

    count: int
    mean: float | None
    min: float | None
    max: float | None
    p50: float | None = Field(description="estimated from the latency histogram (linear within a bucket)")
    p90: float | None
    p99: float | None


class HourStats(Model):
    model_config = ConfigDict(frozen=True)

    hour: str = Field(description="start of the UTC clock hour")
    completed: int
    failed: int
    mean_latency_seconds: float | None


class AsyncStatsView(Model):
    """GET /endpoints/{name}/async-stats."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    hours: int
    since: str = Field(description="start of the first clock hour counted")
    until: str
    completed: int
    failed: int
    total: int
    failure_rate: float | None
    latency_seconds: LatencySummary = Field(description="end to end, receivedTime to eventTime")
    failures_by_category: dict[str, int]
    hourly: list[HourStats]


def endpoint_stats(repo: Repository, endpoint: str, hours: int) -> AsyncStatsView:
    """An endpoint's async outcomes and latency over the last `hours` clock hours (the current one included)."""
    if not 1 <= hours <= MAX_STATS_HOURS:
        raise InvalidInput(f"hours must be 1-{MAX_STATS_HOURS}, got {hours}", "hours")
    now = datetime.fromtimestamp(repo.now(), UTC)
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    shards = repo.async_stats_shards(endpoint, since)
    histogram: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    hourly: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])  # completed, failed, count, sum
    for shard in shards:
        histogram.update(shard.histogram)
        categories.update(shard.categories)
        row = hourly[shard.hour]
        row[0] += shard.completed
        row[1] += shard.failed
        row[2] += shard.latency_count
        row[3] += shard.latency_sum
    completed = sum(s.completed for s in shards)
    failed = sum(s.failed for s in shards)
    count = sum(s.latency_count for s in shards)
    lows = [s.latency_min for s in shards if s.latency_min is not None]
    highs = [s.latency_max for s in shards if s.latency_max is not None]
    low, high = min(lows, default=None), max(highs, default=None)
    total = completed + failed
    return AsyncStatsView(
        endpoint=endpoint,
        hours=hours,
        since=format_timestamp(since),
        until=format_timestamp(now),
        completed=completed,
        failed=failed,
        total=total,
        failure_rate=round(failed / total, 4) if total else None,
        latency_seconds=LatencySummary(
            count=count,
            mean=round(sum(s.latency_sum for s in shards) / count, 3) if count else None,
            min=low,
            max=high,
            p50=percentile(histogram, 0.50, low, high),
            p90=percentile(histogram, 0.90, low, high),
            p99=percentile(histogram, 0.99, low, high),
        ),
        failures_by_category=dict(categories.most_common()),
        hourly=[
            HourStats(
                hour=format_timestamp(datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)),
                completed=int(row[0]),
                failed=int(row[1]),
                mean_latency_seconds=round(row[3] / row[2], 3) if row[2] else None,
            )
            for hour, row in sorted(hourly.items())
        ],
    )


def percentile(histogram: Counter[str], q: float, low: float | None, high: float | None) -> float | None:
    """The q-quantile estimated from bucket counts, linear inside the bucket, kept within [low, high]."""
    total = sum(histogram.values())
    if not total or low is None or high is None:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for bound in LATENCY_BUCKETS:
        key = f"{bound:g}"
        inside = histogram.get(key, 0)
        if inside and below + inside >= rank:
            upper = high if math.isinf(bound) else bound
            value = lower + (upper - lower) * (rank - below) / inside
            return round(min(max(value, low), high), 3)
        below += inside
        lower = bound
    return round(high, 3)
