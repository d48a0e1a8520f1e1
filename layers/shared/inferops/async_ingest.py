"""Async inference results in: SageMaker's notifications parsed, indexed by inference id and counted per endpoint.

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

Classification, stats shards and the API's reads live in `inferops.async_results`, which the API imports without
this module's batch machinery (Powertools' batch and parser utilities, a cold start's worth of imports).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.parser.models import SnsNotificationModel
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import AfterValidator, ConfigDict, Field, ValidationError

from inferops.async_results import ENDPOINT_NAME_PATTERN, aggregate, classify, failure_category, shard_results
from inferops.errors import InvalidInput, invalid
from inferops.model import Model
from inferops.storage import (
    INFERENCE_ID_MAX_LENGTH,
    AsyncResultRecord,
    AsyncStatsShard,
    NotWritten,
    StorageBusy,
)

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

MAX_MESSAGE_BYTES = 262_144
"""SNS's publish limit: no SageMaker notification is larger (with `IncludeInferenceResponseIn` the response
is included only up to 128 KB). The SQS body may be up to 1 MiB: an SNS envelope escapes its message."""
MAX_BODY_BYTES = 1_048_576
MAX_LOCATION_LENGTH = 2048
MAX_REASON_LENGTH = 4000
"""A longer `failureReason` is stored cut (with a marker): the classification reads the whole of it."""
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
            categories = Counter(failure_category(r) for r in results if r.status == "FAILED")
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
