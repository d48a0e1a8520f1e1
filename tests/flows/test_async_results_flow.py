"""On the twin, with the real template: InvokeEndpointAsync -> SageMaker's SNS notifications -> the results queue
-> AsyncResultsFunction -> results indexed, counted and classified, readable through the API; repeats change
nothing; what cannot be processed is dead-lettered after the queue's maxReceiveCount receives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flowkit import create_async_endpoint

from twin.runtime import Twin

ENDPOINT = "doc-ocr-async"
BUCKET = "acme-ml-async"

pytestmark = pytest.mark.flow


def _wait_for(twin: Twin, inference_ids: list[str], limit: float = 3600) -> None:
    start = twin.clock.now()
    while any(twin.api_request("GET", f"/async-results/{i}")[0] != 200 for i in inference_ids):
        assert twin.clock.now() - start < limit, "results not indexed in an hour of virtual time"
        twin.clock.sleep(30)


def _bodies(twin: Twin) -> list[dict[str, Any]]:
    """The SageMaker notifications AsyncResultsFunction received (out of SNS's envelopes)."""
    found = []
    for invocation in twin.lambdas.of("AsyncResultsFunction"):
        for record in invocation.event["Records"]:
            try:
                body = json.loads(record["body"])
                found.append(json.loads(body["Message"]) if "Message" in body else body)
            except (ValueError, KeyError):
                continue
    return found


def test_async_results_end_to_end() -> None:
    with Twin(parameters={"LogLevel": "WARNING"}) as twin:
        s3, sqs = twin.client("s3"), twin.client("sqs")
        with twin.busy():
            s3.create_bucket(Bucket=BUCKET)
            for n in range(6):
                s3.put_object(Bucket=BUCKET, Key=f"input/scan-{n}.json", Body=json.dumps({"page": n}).encode())
            create_async_endpoint(twin, ENDPOINT, BUCKET)
        twin.clock.sleep(60)  # CreateEndpoint's TestNotification (one per topic) reaches the function
        assert [b["eventName"] for b in _bodies(twin)] == ["TestNotification", "TestNotification"]

        runtime = twin.client("sagemaker-runtime")
        with twin.busy():
            for n in range(6):
                runtime.invoke_endpoint_async(
                    EndpointName=ENDPOINT,
                    InputLocation=f"s3://{BUCKET}/input/scan-{n}.json",
                    ContentType="application/json",
                    InferenceId=f"scan-{n}",
                )
            runtime.invoke_endpoint_async(  # no such object: SageMaker cannot download the input
                EndpointName=ENDPOINT, InputLocation=f"s3://{BUCKET}/input/missing.json", InferenceId="scan-missing"
            )
        _wait_for(twin, [f"scan-{n}" for n in range(6)] + ["scan-missing"])
        twin.sagemaker.set_model_health("ocr-v1", healthy=False)
        runtime.invoke_endpoint_async(
            EndpointName=ENDPOINT, InputLocation=f"s3://{BUCKET}/input/scan-0.json", InferenceId="scan-crash"
        )
        _wait_for(twin, ["scan-crash"])
        twin.sagemaker.set_model_health("ocr-v1", healthy=True)

        status, done = twin.api_request("GET", "/async-results/scan-3")
        assert status == 200, done
        assert (done["status"], done["endpoint"]) == ("COMPLETED", ENDPOINT)
        assert done["output_location"].startswith(f"s3://{BUCKET}/output/") and done["latency_seconds"] > 0
        key = done["output_location"].removeprefix(f"s3://{BUCKET}/")
        assert json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) == {"page": 3}
        _, missing = twin.api_request("GET", "/async-results/scan-missing")
        assert (missing["status"], missing["classification"]["category"]) == ("FAILED", "input_download")
        _, crash = twin.api_request("GET", "/async-results/scan-crash")
        assert (crash["classification"]["category"], crash["classification"]["retryable"]) == ("model_error", False)
        assert crash["failure_location"].startswith(f"s3://{BUCKET}/failures/")

        status, stats = twin.api_request("GET", f"/endpoints/{ENDPOINT}/async-stats", query={"hours": "1"})
        assert status == 200, stats
        assert (stats["completed"], stats["failed"]) == (6, 2)
        assert stats["failures_by_category"] == {"input_download": 1, "model_error": 1}
        assert stats["latency_seconds"]["count"] == 8

        # SNS delivers at least once: the same notifications again change nothing
        sns = twin.client("sns")
        success = next(b for b in _bodies(twin) if b.get("inferenceId") == "scan-3")
        failure = next(b for b in _bodies(twin) if b.get("inferenceId") == "scan-crash")
        sns.publish(TopicArn=twin.template.physical("AsyncSuccessTopic").ref, Message=json.dumps(success))
        sns.publish(TopicArn=twin.template.physical("AsyncErrorTopic").ref, Message=json.dumps(failure))
        # and a producer that is not SageMaker: a half message and an oversized one, straight to the queue
        queue = twin.template.queues["AsyncResultsQueue"].url
        bad = ['{"inferenceId": "half', json.dumps({"inferenceId": "big", "pad": "x" * 300_000})]
        for body in bad:
            sqs.send_message(QueueUrl=queue, MessageBody=body)
        twin.clock.sleep(3 * 180 + 120)  # three receives, 180 s visibility each, then the dead-letter queue

        assert twin.api_request("GET", "/async-results/scan-3")[1] == done
        _, after = twin.api_request("GET", f"/endpoints/{ENDPOINT}/async-stats", query={"hours": "1"})
        assert {**after, "until": None} == {**stats, "until": None}
        dead = twin.template.queues["AsyncResultsDeadLetters"].url
        letters = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        assert sorted(m["Body"] for m in letters) == sorted(bad)
        left = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        assert (left["ApproximateNumberOfMessages"], left["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")

        invocations = twin.lambdas.of("AsyncResultsFunction")
        assert all(i.error is None for i in invocations)  # bad input fails items, never the function
        failed_items = [f for i in invocations for f in (i.payload or {}).get("batchItemFailures", [])]
        assert len(failed_items) == 2 * 3  # each bad message, once per receive
