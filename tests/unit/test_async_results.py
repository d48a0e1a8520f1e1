"""Async inference results: SageMaker's notifications parsed (raw or in SNS's envelope), classified, stored once
per inference id with one BatchWriteItem per batch, counted per endpoint, and bad messages failed with a reason."""

from __future__ import annotations

import copy
import io
import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import process_partial_response
from botocore.stub import Stubber

from inferops import async_ingest
from inferops.async_ingest import MAX_MESSAGE_BYTES, AsyncResultsProcessor, Ignored, parse_message
from inferops.async_results import classify, endpoint_stats, percentile, shard_results
from inferops.errors import InvalidInput, NotFound
from inferops.storage import (
    AsyncResultRecord,
    AsyncStatsShard,
    NotWritten,
    Repository,
    StorageBusy,
)
from twin.lambdas import load_function

EVENTS = Path(__file__).resolve().parents[2] / "events" / "async_results"
NOW = datetime(2026, 1, 5, 10, 30, tzinfo=UTC).timestamp()


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


def notification(name: str) -> dict[str, Any]:
    """The SageMaker notification inside a sample event's first record (unwrapping SNS's envelope)."""
    body = json.loads(event(name)["Records"][0]["body"])
    found: dict[str, Any] = json.loads(body["Message"]) if "Message" in body else body
    return found


def sqs_event(*bodies: Any, receive: int = 1) -> dict[str, Any]:
    """An SQS event with these bodies (dicts are JSON-encoded), shaped like the sample events' records."""
    template = event("error_raw")["Records"][0]
    records = []
    for n, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = f"m-{n:04d}"
        record["body"] = body if isinstance(body, str) else json.dumps(body)
        record["attributes"]["ApproximateReceiveCount"] = str(receive)
        records.append(record)
    return {"Records": records}


def result_of(inference_id: str, endpoint: str = "doc-ocr-async", **changes: Any) -> dict[str, Any]:
    body = notification("success_enveloped")
    body["inferenceId"] = inference_id
    body["requestParameters"]["endpointName"] = endpoint
    body.update(changes)
    return body


def failure_of(inference_id: str, reason: str, endpoint: str = "doc-ocr-async") -> dict[str, Any]:
    body = notification("error_raw")
    body.update(inferenceId=inference_id, failureReason=reason)
    body["requestParameters"]["endpointName"] = endpoint
    return body


@pytest.fixture
def repo(ddb_table: Repository) -> Repository:
    """The moto table with a fixed clock (10:30 on the day of the sample notifications)."""
    return Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: NOW)


class Emitted:
    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []

    def __call__(self, text: str) -> None:
        self.documents.append(json.loads(text))

    def values(self, metric: str, **dimensions: str) -> list[float]:
        found: list[float] = []
        for doc in self.documents:
            names = {m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
            keys = set(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) - {"service"}
            if metric in names and keys == set(dimensions) and all(doc[k] == v for k, v in dimensions.items()):
                found.extend(doc[metric])
        return found


class Logs:
    """A Powertools Logger of its own whose JSON lines are kept (pytest's capture streams come and go)."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.logger = Logger(service=f"test-{uuid.uuid4().hex[:8]}", logger_handler=logging.StreamHandler(self.stream))

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


def run(store: Any, batch: dict[str, Any], emitted: Emitted | None = None, **kwargs: Any) -> AsyncResultsProcessor:
    processor = AsyncResultsProcessor(store, emit=emitted or Emitted(), namespace="InferOps", **kwargs)
    process_partial_response(event=batch, record_handler=processor.parse_record, processor=processor)
    return processor


def failures(processor: AsyncResultsProcessor) -> list[str]:
    return sorted(str(f["itemIdentifier"]) for f in processor.response()["batchItemFailures"])


# ---------------------------------------------------------------------- parsing
def test_success_in_sns_envelope() -> None:
    body = event("success_enveloped")["Records"][0]["body"]
    result = parse_message(body, message_id="sqs-1")
    assert isinstance(result, AsyncResultRecord)
    assert (result.inference_id, result.endpoint, result.status) == ("scan-000417", "doc-ocr-async", "COMPLETED")
    assert result.output_location == "s3://acme-ml-async/output/5f0c1c9e-8a51-4a7e-9d0e-3c2b7c4f1a11.out"
    assert result.latency_seconds == 47.416  # 10:01:59.902 -> 10:02:47.318
    assert result.completed_at == datetime(2026, 1, 5, 10, 2, 47, 318000, tzinfo=UTC)
    assert result.message_id == "8e1b4f3a-2c5d-5e6f-9a7b-0c1d2e3f4a5b"  # SNS's id: the same for an SNS repeat
    assert result.classification is None and result.failure_reason is None


def test_error_delivered_raw_is_classified() -> None:
    result = parse_message(event("error_raw")["Records"][0]["body"], message_id="sqs-2")
    assert isinstance(result, AsyncResultRecord)
    assert (result.status, result.invocation_status) == ("FAILED", "Failed")
    assert result.failure_location == "s3://acme-ml-async/failures/0d9e2b6a-3f71-4c1e-b8a2-5e6f7a8b9c0d-error.out"
    assert result.output_location is None
    assert result.message_id == "sqs-2"
    assert result.classification is not None
    assert result.classification["category"] == "model_error"
    assert result.classification["retryable"] is False
    assert "container" in result.classification["action"] or "logs" in result.classification["action"]


def test_published_error_sample_without_response_parameters() -> None:
    """The only error body AWS people published has no responseParameters at all."""
    body = failure_of("x-1", "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs")
    del body["responseParameters"]
    result = parse_message(json.dumps(body))
    assert isinstance(result, AsyncResultRecord)
    assert (result.status, result.failure_location, result.content_type) == ("FAILED", None, None)


def test_failure_location_at_the_top_level_is_read_too() -> None:
    body = failure_of("x-2", "boom")
    del body["responseParameters"]
    body["failureLocation"] = "s3://b/failed/x-2.out"
    result = parse_message(json.dumps(body))
    assert isinstance(result, AsyncResultRecord) and result.failure_location == "s3://b/failed/x-2.out"


def test_unknown_status_is_a_failure_and_unknown_fields_are_ignored() -> None:
    body = result_of("x-3", invocationStatus="Expired", somethingNew={"a": 1})
    result = parse_message(json.dumps(body))
    assert isinstance(result, AsyncResultRecord)
    assert (result.status, result.invocation_status) == ("FAILED", "Expired")
    assert result.classification is not None and result.classification["category"] == "unknown"


@pytest.mark.parametrize("name", ["test_notification"])
def test_test_notification_is_ignored(name: str) -> None:
    assert isinstance(parse_message(event(name)["Records"][0]["body"]), Ignored)
    raw = json.dumps({"eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "TestNotification"})
    assert isinstance(parse_message(raw), Ignored)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "body"),
        ("[1, 2]", "body"),
        (json.dumps({"invocationStatus": "Completed", "requestParameters": {"endpointName": "e"}}), "inferenceId"),
        (json.dumps(result_of("x", requestParameters={})), "requestParameters.endpointName"),
        (json.dumps(result_of("x", requestParameters={"endpointName": "bad_name!"})), "requestParameters.endpointName"),
        (json.dumps(result_of("x" * 65)), "inferenceId"),
        (json.dumps(result_of(" leading-space")), "inferenceId"),
        (json.dumps(result_of("x", eventSource="aws:s3")), "eventSource"),
        (json.dumps(result_of("x", eventTime="yesterday")), "eventTime"),
        (json.dumps(result_of("x", invocationStatus="")), "invocationStatus"),
        (json.dumps({"Type": "Notification", "Message": "{}"}), "envelope.TopicArn"),
        (
            json.dumps({**json.loads(event("success_enveloped")["Records"][0]["body"]), "Message": "x"}),
            "envelope.Message",
        ),
    ],
)
def test_malformed_messages_name_the_field(body: str, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_message(body)
    assert raised.value.field == field, raised.value.message
    assert raised.value.message.startswith(f"{field}:") or f": {field}:" in raised.value.message


def test_oversized_messages_are_refused_before_parsing() -> None:
    padded = result_of("big", padding="x" * MAX_MESSAGE_BYTES)
    with pytest.raises(InvalidInput) as raised:
        parse_message(json.dumps(padded))
    assert raised.value.field == "body" and "limit" in raised.value.message
    enveloped = json.loads(event("success_enveloped")["Records"][0]["body"])
    enveloped["Message"] = json.dumps(padded)
    with pytest.raises(InvalidInput) as raised:
        parse_message(json.dumps(enveloped))
    assert raised.value.field == "envelope.Message"
    with pytest.raises(InvalidInput) as raised:
        parse_message("x" * (async_ingest.MAX_BODY_BYTES + 1))
    assert "1048576" in raised.value.message


def test_latency_is_never_negative_and_missing_times_give_none() -> None:
    skewed = parse_message(json.dumps(result_of("s", receivedTime="2026-01-05T10:03:00.000Z")))
    assert isinstance(skewed, AsyncResultRecord) and skewed.latency_seconds == 0.0
    body = result_of("t")
    del body["receivedTime"]
    untimed = parse_message(json.dumps(body))
    assert isinstance(untimed, AsyncResultRecord) and untimed.latency_seconds is None


def test_long_failure_reasons_are_cut_for_storage_but_classified_whole() -> None:
    reason = "x" * 5000 + " CUDA out of memory"
    result = parse_message(json.dumps(failure_of("long", reason)))
    assert isinstance(result, AsyncResultRecord) and result.failure_reason is not None
    assert len(result.failure_reason) <= async_ingest.MAX_REASON_LENGTH and result.failure_reason.endswith("[cut]")
    assert result.classification is not None and result.classification["category"] == "out_of_memory"


# ---------------------------------------------------------------------- classification
@pytest.mark.parametrize(
    ("reason", "category", "retryable"),
    [
        (
            "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs in your account "
            "for more information.",
            "model_error",
            False,
        ),
        (
            'ModelError: Received server error (0) from primary with message "Your invocation timed out while '
            'waiting for a response from container primary."',
            "invocation_timeout",
            True,
        ),
        ("ClientError: Failed to download data from the input location s3://b/in.json.", "input_download", False),
        ("Request expired: RequestTTLSeconds elapsed before processing", "request_expired", True),
        ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "out_of_memory", False),
        ("Failed to initialize NVML: Driver/library version mismatch", "gpu_driver_mismatch", False),
        (
            "the request payload from A to B is 6291456 bytes, which has exceeded the maximum limit of 5 MB",
            "payload_too_large",
            False,
        ),
        ("Failed to upload the inference result to S3OutputPath", "output_upload", True),
        ("AccessDenied: User is not authorized to perform kms:Decrypt", "access_denied", False),
        ("The primary container did not pass the ping health check", "health_check", True),
        ("AttributeError: 'NoneType' object has no attribute 'transform'", "missing_entry_point", False),
        ("ModelNotReadyException: model is loading", "model_not_ready", True),
        ("InternalFailure: please retry", "service_error", True),
        ("the moon is in the wrong phase", "unknown", False),
        (None, "unknown", False),
    ],
)
def test_failures_are_classified_against_the_troubleshooting_catalog(
    reason: str | None, category: str, retryable: bool
) -> None:
    found = classify(reason)
    assert (found.category, found.retryable) == (category, retryable)
    assert found.cause and found.action
    assert (found.matched is None) == (category == "unknown")


# ---------------------------------------------------------------------- the batch, with moto's DynamoDB
def test_a_batch_is_stored_with_one_batch_write_and_counted(repo: Repository) -> None:
    calls: list[str] = []
    repo.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    emitted = Emitted()
    batch = sqs_event(
        *(result_of(f"ok-{n}") for n in range(6)),
        failure_of("bad-1", "ClientError: Received server error (500) from model."),
        failure_of("bad-2", "ClientError: Failed to download data from the input location s3://b/k."),
        json.loads(event("test_notification")["Records"][0]["body"]),
        result_of("other-1", endpoint="other-ep"),
    )
    processor = run(repo, batch, emitted)
    assert failures(processor) == []
    assert calls == ["BatchGetItem", "BatchWriteItem"]  # no shard to verify: nothing was recorded before
    summary = processor.summary
    assert (summary.records, summary.new, summary.ignored, summary.repeats) == (10, 9, 1, 0)

    ok = repo.get_async_result("ok-3")
    assert (ok.status, ok.latency_seconds) == ("COMPLETED", 47.416)
    assert ok.stats_shard is not None and ok.stats_shard.startswith("2026-01-05T10#m-0000.")  # + the attempt
    assert ok.expires_at == int(datetime(2026, 2, 4, 10, 2, 47, 318000, tzinfo=UTC).timestamp())
    bad = repo.get_async_result("bad-2")
    assert bad.classification is not None and bad.classification["category"] == "input_download"

    assert emitted.values("AsyncInferenceCompleted", EndpointName="doc-ocr-async") == [6.0]
    assert emitted.values("AsyncInferenceFailed", EndpointName="doc-ocr-async") == [2.0]
    assert emitted.values("AsyncEndToEndLatency", EndpointName="doc-ocr-async") == [47416.0] * 6 + [41527.0] * 2
    assert emitted.values("AsyncInferenceFailed", EndpointName="doc-ocr-async", ErrorCategory="model_error") == [1.0]
    assert emitted.values("AsyncInferenceCompleted", EndpointName="other-ep") == [1.0]
    assert emitted.values("AsyncTestNotifications") == [1.0]

    stats = endpoint_stats(repo, "doc-ocr-async", hours=1)
    assert (stats.completed, stats.failed, stats.total, stats.failure_rate) == (6, 2, 8, 0.25)
    assert stats.failures_by_category == {"model_error": 1, "input_download": 1}
    assert stats.latency_seconds.count == 8 and stats.latency_seconds.max == 47.416
    assert stats.since == "2026-01-05T10:00:00.000000Z"
    assert [(h.hour, h.completed, h.failed) for h in stats.hourly] == [("2026-01-05T10:00:00.000000Z", 6, 2)]


def test_a_repeat_changes_nothing(repo: Repository) -> None:
    first = sqs_event(result_of("dup-1"), failure_of("dup-2", "timed out"))
    run(repo, first)
    before = (repo.get_async_result("dup-1"), repo.get_async_result("dup-2"))
    stats_before = endpoint_stats(repo, "doc-ocr-async", hours=1)

    calls: list[str] = []
    repo.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    emitted = Emitted()
    changed = result_of("dup-1", eventTime="2026-01-05T10:20:00.000Z")  # even a repeat that differs is ignored
    again = run(repo, sqs_event(changed, failure_of("dup-2", "timed out"), result_of("dup-1")), emitted)
    assert failures(again) == []
    assert again.summary.repeats == 3 and again.summary.new == 0
    assert calls == ["BatchGetItem", "BatchGetItem"]  # results found, their shards verified; nothing written
    assert (repo.get_async_result("dup-1"), repo.get_async_result("dup-2")) == before
    assert endpoint_stats(repo, "doc-ocr-async", hours=1) == stats_before
    assert emitted.values("AsyncInferenceCompleted", EndpointName="doc-ocr-async") == []
    assert emitted.values("AsyncNotificationsRepeated") == [3.0]


def test_a_result_whose_shard_was_lost_is_counted_on_redelivery(repo: Repository) -> None:
    """A BatchWriteItem is not atomic: the result may land without its shard. The redelivery counts it."""
    staged, _ = shard_results(
        [parse_message(json.dumps(result_of("orphan")))],  # type: ignore[list-item]
        now=NOW,
        first_message=lambda _: "lost",
    )
    assert repo.put_async_results(staged, []) == NotWritten(set(), set())  # the result alone: its shard was lost
    assert repo.async_results_recorded(["orphan"]) == set()
    processor = run(repo, sqs_event(result_of("orphan")))
    assert processor.summary.new == 1
    assert endpoint_stats(repo, "doc-ocr-async", hours=1).completed == 1
    assert repo.async_results_recorded(["orphan"]) == {"orphan"}


def test_malformed_and_oversized_records_fail_alone_with_the_reason_logged(repo: Repository) -> None:
    logs = Logs()
    batch = sqs_event(
        result_of("fine-1"),
        '{"inferenceId": "half',
        json.dumps(result_of("huge", padding="x" * MAX_MESSAGE_BYTES)),
        result_of("fine-2"),
        receive=3,
    )
    processor = run(repo, batch, logger=logs.logger, max_receive_count=3)
    assert failures(processor) == ["m-0001", "m-0002"]
    assert processor.summary.new == 2 and processor.summary.rejected == 2
    rejected = [line for line in logs.lines() if line["message"].startswith("rejected message")]
    assert [(r["field"], r["message_id"], r["attempt"]) for r in rejected] == [
        ("body", "m-0001", 3),
        ("body", "m-0002", 3),
    ]
    assert all(r["message"] == "rejected message: it goes to the dead-letter queue" for r in rejected)
    assert "not JSON" in rejected[0]["reason"] and "bytes" in rejected[1]["reason"]
    assert not any("Traceback" in json.dumps(line) or "exception" in line for line in logs.lines())
    assert run(repo, sqs_event("{"), logger=logs.logger, max_receive_count=3).summary.rejected == 1
    assert logs.lines()[-2]["message"] == "rejected message: SQS will retry it"  # attempt 1 of 3


def test_an_all_bad_batch_reports_every_item_instead_of_raising(repo: Repository) -> None:
    processor = run(repo, sqs_event("{", "[]"))
    assert failures(processor) == ["m-0000", "m-0001"]


class FlakyStore:
    """A store whose storage calls fail (`error`), or that leaves some results unwritten."""

    def __init__(self, failed: set[str] | None = None, error: Exception | None = None) -> None:
        self.failed = failed or set()
        self.error = error

    def now(self) -> float:
        return NOW

    def async_results_recorded(self, inference_ids: Iterable[str]) -> set[str]:
        if self.error is not None:
            raise self.error
        return set()

    def put_async_results(self, results: Iterable[AsyncResultRecord], shards: Iterable[AsyncStatsShard]) -> NotWritten:
        return NotWritten(self.failed & {r.inference_id for r in results}, set())


class Dropping(Repository):
    """The moto table, where BatchWriteItem keeps leaving the items whose pk starts with one of `drop` unprocessed."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo.table_name, client=repo.client, clock=repo.now)
        self.drop: tuple[str, ...] = ()

    def _batch_write(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        left = [item for item in items if item["pk"]["S"].startswith(self.drop)] if self.drop else []
        super()._batch_write([item for item in items if item not in left])
        return left


def test_records_whose_write_failed_are_item_failures_and_not_counted() -> None:
    emitted = Emitted()
    store = FlakyStore(failed={"w-2"})
    processor = run(store, sqs_event(result_of("w-1"), result_of("w-2"), result_of("w-3")), emitted)
    assert failures(processor) == ["m-0001"]
    assert emitted.values("AsyncInferenceCompleted", EndpointName="doc-ocr-async") == [2.0]
    assert emitted.values("AsyncResultsNotStored") == [1.0]


def test_a_result_left_unwritten_is_taken_out_of_its_shard_and_counted_once_later(repo: Repository) -> None:
    store = Dropping(repo)
    store.drop = ("ASYNC#p-2",)
    batch = sqs_event(result_of("p-1"), result_of("p-2"), result_of("p-3"))
    assert failures(run(store, batch)) == ["m-0001"]
    assert endpoint_stats(repo, "doc-ocr-async", hours=1).completed == 2  # the shard was rewritten without p-2
    store.drop = ()
    assert failures(run(store, sqs_event(result_of("p-2")))) == []  # SQS redelivers p-2 alone
    assert endpoint_stats(repo, "doc-ocr-async", hours=1).completed == 3
    again = run(store, batch)  # and everything once more, as SNS may
    assert (again.summary.repeats, endpoint_stats(repo, "doc-ocr-async", hours=1).completed) == (3, 3)


def test_a_shard_left_unwritten_fails_its_results_which_count_on_redelivery(repo: Repository) -> None:
    store = Dropping(repo)
    store.drop = ("ASYNCSTATS#",)
    batch = sqs_event(result_of("q-1"), result_of("q-2"))
    assert failures(run(store, batch)) == ["m-0000", "m-0001"]
    assert repo.get_async_result("q-1").stats_shard is not None  # stored, but naming a shard that is not
    assert endpoint_stats(repo, "doc-ocr-async", hours=1).completed == 0
    store.drop = ()
    assert run(store, batch).summary.new == 2
    assert endpoint_stats(repo, "doc-ocr-async", hours=1).completed == 2
    assert run(store, batch).summary.repeats == 2
    assert endpoint_stats(repo, "doc-ocr-async", hours=1).completed == 2


def test_a_shard_that_cannot_be_corrected_is_logged(repo: Repository) -> None:
    logs = Logs()

    class Stubborn(Dropping):
        def put_async_results(
            self, results: Iterable[AsyncResultRecord], shards: Iterable[AsyncStatsShard]
        ) -> NotWritten:
            results = list(results)
            if not results:  # the correction
                return NotWritten(set(), {s.shard for s in shards})
            return super().put_async_results(results, shards)

    store = Stubborn(repo)
    store.drop = ("ASYNC#r-1",)
    assert failures(run(store, sqs_event(result_of("r-1"), result_of("r-2")), logger=logs.logger)) == ["m-0000"]
    [warning] = [line for line in logs.lines() if line["level"] == "WARNING"]
    assert "counted twice" in warning["message"]


def test_storage_down_fails_the_new_records_but_not_the_ignored_ones() -> None:
    logs = Logs()
    store = FlakyStore(error=StorageBusy("throttled"))
    batch = sqs_event(result_of("d-1"), json.loads(event("test_notification")["Records"][0]["body"]), result_of("d-1"))
    processor = run(store, batch, logger=logs.logger)
    assert failures(processor) == ["m-0000"]  # the in-batch repeat and the test notification are done
    [error] = [line for line in logs.lines() if line["level"] == "ERROR"]
    assert error["message"] == "storing the batch failed; its records will be retried"
    assert error["error"] == "StorageBusy: throttled" and "exception" not in error  # expected: no stack trace
    buggy = run(FlakyStore(error=KeyError("pk")), sqs_event(result_of("d-2")), logger=logs.logger)
    assert failures(buggy) == ["m-0000"]
    assert "exception" in [line for line in logs.lines() if line["level"] == "ERROR"][-1]  # a bug: where it was


def test_unprocessed_items_are_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inferops.storage.ASYNC_WRITE_RETRY_DELAYS", (0.0, 0.0))
    client = boto3.client("dynamodb", region_name="us-east-1")
    store = Repository("t", client=client, clock=lambda: NOW)
    staged, shards = shard_results(
        [parse_message(json.dumps(result_of(i))) for i in ("u-1", "u-2")],  # type: ignore[misc]
        now=NOW,
        first_message=lambda r: r.inference_id,
    )
    items = [Repository._async_result_item(r) for r in staged]
    shard_item = {"pk": {"S": "ASYNCSTATS#doc-ocr-async"}, "sk": {"S": shards[0].shard}}
    with Stubber(client) as stub:
        left = {"t": [{"PutRequest": {"Item": items[1]}}, {"PutRequest": {"Item": shard_item}}]}
        for _ in range(3):  # the first call and two retries
            stub.add_response("batch_write_item", {"UnprocessedItems": left})
        assert store.put_async_results(staged, shards) == NotWritten({"u-2"}, {shards[0].shard})
    with Stubber(client) as stub:
        stub.add_response("batch_write_item", {"UnprocessedItems": {"t": [{"PutRequest": {"Item": shard_item}}]}})
        stub.add_response("batch_write_item", {})
        assert store.put_async_results(staged, shards) == NotWritten(set(), set())  # the retry went through


def test_unread_keys_are_retried_then_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inferops.storage.ASYNC_WRITE_RETRY_DELAYS", (0.0,))
    client = boto3.client("dynamodb", region_name="us-east-1")
    store = Repository("t", client=client, clock=lambda: NOW)
    key = {"pk": {"S": "ASYNC#k-1"}, "sk": {"S": "RESULT"}}
    unread = {"t": {"Keys": [key], "ConsistentRead": True}}
    with Stubber(client) as stub:
        stub.add_response("batch_get_item", {"Responses": {"t": []}, "UnprocessedKeys": unread})
        stub.add_response("batch_get_item", {"Responses": {"t": []}, "UnprocessedKeys": unread})
        with pytest.raises(StorageBusy):
            store.async_results_recorded(["k-1"])


def test_writes_go_25_items_a_call(repo: Repository) -> None:
    calls: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["RequestItems"][repo.table_name]))

    repo.client.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", count)
    records = [parse_message(json.dumps(result_of(f"c-{n}"))) for n in range(60)]
    staged, shards = shard_results(records, now=NOW, first_message=lambda r: "m")  # type: ignore[arg-type]
    assert repo.put_async_results(staged, shards) == NotWritten(set(), set())
    assert calls == [25, 25, 11]  # 60 results + 1 shard
    assert len(repo.async_results_recorded(r.inference_id for r in staged)) == 60


# ---------------------------------------------------------------------- stats
def test_percentiles_interpolate_within_buckets() -> None:
    assert percentile(Counter({"10": 10}), 0.5, 6.0, 9.0) == 7.5  # within [5, 10], kept in [6, 9]
    mixed = Counter({"1": 50, "60": 40, "inf": 10})
    assert percentile(mixed, 0.5, 0.2, 40000.0) == 1.0
    assert percentile(mixed, 0.9, 0.2, 40000.0) == 60.0
    assert 28800 < (percentile(mixed, 0.99, 0.2, 40000.0) or 0) <= 40000
    assert percentile(Counter(), 0.5, None, None) is None


def test_stats_window_and_validation(repo: Repository) -> None:
    early = result_of("h-1", eventTime="2026-01-05T08:10:00.000Z", receivedTime="2026-01-05T08:09:00.000Z")
    late = result_of("h-2")
    run(repo, sqs_event(early, late))
    two = endpoint_stats(repo, "doc-ocr-async", hours=2)  # 09:00 on: the 08:10 result is out
    three = endpoint_stats(repo, "doc-ocr-async", hours=3)
    assert (two.completed, three.completed) == (1, 2)
    assert [h.hour[:13] for h in three.hourly] == ["2026-01-05T08", "2026-01-05T10"]
    assert (three.latency_seconds.min, three.latency_seconds.max) == (47.416, 60.0)
    assert endpoint_stats(repo, "nobody", hours=24).total == 0
    with pytest.raises(InvalidInput) as raised:
        endpoint_stats(repo, "doc-ocr-async", hours=0)
    assert raised.value.field == "hours"


def test_unknown_result_is_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound) as raised:
        repo.get_async_result("never-sent")
    assert raised.value.field == "inference_id"
    with pytest.raises(InvalidInput):
        repo.get_async_result("")


# ---------------------------------------------------------------------- the Lambda handler
@pytest.fixture
def handler_env(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> Any:
    app = load_function("async_results")
    monkeypatch.setattr(app, "_repository", lambda: repo)
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "3")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "InferOps")
    return app


class Context:
    function_name = "AsyncResultsFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:AsyncResultsFunction"
    aws_request_id = "test-request"


def test_handler_on_the_sample_events(
    handler_env: Any, repo: Repository, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert handler_env.handler(event("success_enveloped"), Context()) == {"batchItemFailures": []}
    assert handler_env.handler(event("error_raw"), Context()) == {"batchItemFailures": []}
    assert handler_env.handler(event("test_notification"), Context()) == {"batchItemFailures": []}
    mixed = handler_env.handler(event("mixed_batch"), Context())
    assert mixed == {"batchItemFailures": [{"itemIdentifier": "e2f4a6c8-0b2d-4e6f-9a1c-3e5a7c9e1b13"}]}
    assert repo.get_async_result("scan-000417").status == "COMPLETED"
    assert repo.get_async_result("scan-000418").status == "FAILED"
    rejected = [r for r in caplog.records if r.getMessage().startswith("rejected message")]
    assert [(r.getMessage(), r.__dict__["field"]) for r in rejected] == [
        ("rejected message: it goes to the dead-letter queue", "body")
    ]
    # 417 and 418 were stored by the first two events; 417 is twice in the mixed batch
    assert '"AsyncNotificationsRepeated":[3.0]' in capsys.readouterr().out
