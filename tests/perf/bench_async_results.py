"""Benchmark: how many async inference notifications one process parses, validates and classifies per second, and
that the table writes are batched.

Not a pytest test (pytest collects test_*.py only). Run: .venv/bin/python tests/perf/bench_async_results.py
(`--quick`: fewer notifications). It prints figures and PASS/MISS against the goals; it asserts nothing.

1. Storage stubbed: SQS events of 10 records (what the event source mapping hands the function) run through
   AsyncResultsProcessor exactly as the handler runs it: Powertools' BatchProcessor, SNS envelope, pydantic
   validation, classification of failures, stats shards, EMF documents serialized (to a null sink). The mix:
   75 % successes, 20 % failures with reasons from the troubleshooting catalog, 3 % raw deliveries, 2 %
   TestNotifications. Goal: >= 2,000 notifications/s per process. Also parse_message alone.
2. moto's DynamoDB (the real Repository, table as in template.yaml): the same kind of events; every DynamoDB
   call is counted from botocore's event hooks. Goal: one BatchWriteItem per batch (no PutItem), items per call
   <= 25; then the same events again (SNS repeats): no write at all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "layers" / "shared"))
for name, value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ[name] = value  # moto only: nothing here may reach AWS
for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
    os.environ.pop(name, None)

from aws_lambda_powertools.utilities.batch import process_partial_response  # noqa: E402

from inferops.async_ingest import AsyncResultsProcessor, parse_message  # noqa: E402
from inferops.storage import AsyncResultRecord, AsyncStatsShard, NotWritten, Repository  # noqa: E402

GOAL_PER_SECOND = 2000
BATCH = 10
EVENTS = ROOT / "events" / "async_results"
REASONS = (
    "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs in your account for more "
    "information.",
    'ModelError: Received server error (0) from primary with message "Your invocation timed out while waiting for a '
    'response from container primary."',
    "ClientError: Failed to download data from the input location s3://acme-ml-async/input/scan.json.",
    "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 22.20 GiB total capacity)",
    "the request payload from A to B is 6291456 bytes, which has exceeded the maximum limit of 5 MB",
    "something nobody has seen before",
)


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


def make_events(count: int, *, seed: str = "") -> list[dict[str, Any]]:
    """`count` notifications as SQS events of BATCH records, the mix of the module docstring."""
    success_record = _sample("success_enveloped")["Records"][0]
    envelope = json.loads(success_record["body"])
    success = json.loads(envelope["Message"])
    failure = json.loads(_sample("error_raw")["Records"][0]["body"])
    test = json.loads(_sample("test_notification")["Records"][0]["body"])
    records = []
    for n in range(count):
        kind = n % 100
        if kind < 2:
            body = json.dumps(test)
        else:
            message = dict(failure if 77 <= kind < 97 else success)
            message["inferenceId"] = f"{seed}req-{n:07d}"
            message["requestParameters"] = {**message["requestParameters"], "endpointName": f"ep-{n % 7}"}
            if "failureReason" in message:
                message["failureReason"] = REASONS[n % len(REASONS)]
            if kind >= 97:
                body = json.dumps(message)  # raw message delivery
            else:
                body = json.dumps({**envelope, "MessageId": f"sns-{seed}{n:07d}", "Message": json.dumps(message)})
        records.append({**success_record, "messageId": f"sqs-{seed}{n:07d}", "body": body})
    return [{"Records": records[i : i + BATCH]} for i in range(0, len(records), BATCH)]


class StubStore:
    """Storage stubbed: nothing recorded before, every write succeeds."""

    def __init__(self) -> None:
        self.results = 0

    def now(self) -> float:
        return time.time()

    def async_results_recorded(self, inference_ids: Iterable[str]) -> set[str]:
        return set()

    def put_async_results(self, results: Iterable[AsyncResultRecord], shards: Iterable[AsyncStatsShard]) -> NotWritten:
        self.results += sum(1 for _ in results)
        return NotWritten(set(), set())


def _run(store: Any, events: list[dict[str, Any]]) -> tuple[float, list[float], int]:
    """(seconds, per-batch seconds, item failures) for running every event through the processor."""
    per_batch = []
    failed = 0
    started = time.perf_counter()
    for event in events:
        t0 = time.perf_counter()
        processor = AsyncResultsProcessor(store, emit=lambda _: None, namespace="InferOps")
        response = process_partial_response(event=event, record_handler=processor.parse_record, processor=processor)
        failed += len(response["batchItemFailures"])
        per_batch.append(time.perf_counter() - t0)
    return time.perf_counter() - started, per_batch, failed


def _pf(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def bench_stubbed(count: int) -> None:
    events = make_events(count)
    _run(StubStore(), make_events(200, seed="warm-"))  # imports, pydantic's first validations, regex compiles
    rates = []
    store = StubStore()
    for _ in range(3):
        seconds, per_batch, failed = _run(store, events)
        rates.append(count / seconds)
    rate = statistics.median(rates)
    print(f"1. Storage stubbed: {count:,} notifications in SQS batches of {BATCH}, median of 3 runs")
    print(
        f"  handler path (Powertools BatchProcessor + parse + validate + classify + shards + EMF): "
        f"{rate:,.0f} notifications/s (goal >= {GOAL_PER_SECOND:,}): {_pf(rate >= GOAL_PER_SECOND)}"
    )
    print(
        f"  per batch of {BATCH}: median {statistics.median(per_batch) * 1e3:.2f} ms, "
        f"p99 {sorted(per_batch)[int(len(per_batch) * 0.99) - 1] * 1e3:.2f} ms; item failures {failed}"
    )
    bodies = [r["body"] for e in events for r in e["Records"]]
    t0 = time.perf_counter()
    kinds = Counter(type(parse_message(body)).__name__ for body in bodies)
    alone = len(bodies) / (time.perf_counter() - t0)
    print(f"  parse_message alone: {alone:,.0f} notifications/s ({', '.join(f'{k} {v}' for k, v in kinds.items())})")


def bench_moto(count: int) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        keys = [("pk", "S"), ("sk", "S"), ("gsi1pk", "S"), ("gsi1sk", "S")]
        client.create_table(
            TableName="inferops",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": t} for k, t in keys],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "gsi1",
                    "KeySchema": [
                        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        calls: Counter[str] = Counter()
        items_per_write: list[int] = []

        def count_call(model: Any, **_: Any) -> None:
            calls[model.name] += 1

        def count_items(params: dict[str, Any], **_: Any) -> None:
            items_per_write.append(len(params["RequestItems"]["inferops"]))

        client.meta.events.register("before-call.dynamodb", count_call)
        client.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", count_items)
        repo = Repository("inferops", client=client)
        events = make_events(count, seed="moto-")
        seconds, _, failed = _run(repo, events)
        print(f"2. moto DynamoDB: {count:,} notifications in {len(events)} batches of {BATCH}")
        ok = calls["BatchWriteItem"] == len(events) and calls["PutItem"] == 0 and max(items_per_write) <= 25
        print(
            f"  DynamoDB calls: {dict(calls)}; items per BatchWriteItem: "
            f"min {min(items_per_write)}, max {max(items_per_write)}, total {sum(items_per_write):,}"
        )
        print(
            f"  one BatchWriteItem per batch, none per record: {_pf(ok)} "
            f"({calls['BatchWriteItem'] / (count * 0.98):.3f} writes per result; {failed} item failures)"
        )
        print(f"  throughput on moto (in-process fake, not AWS latency): {count / seconds:,.0f} notifications/s")
        calls.clear()
        items_per_write.clear()
        seconds, _, failed = _run(repo, events)
        print(
            f"  the same events again (SNS repeats): DynamoDB calls {dict(calls)}, writes "
            f"{calls['BatchWriteItem']}: {_pf(calls['BatchWriteItem'] == 0 and failed == 0)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer notifications")
    args = parser.parse_args()
    print(f"async results benchmark ({sys.version.split()[0]})")
    bench_stubbed(5_000 if args.quick else 20_000)
    bench_moto(500 if args.quick else 2_000)


if __name__ == "__main__":
    main()
