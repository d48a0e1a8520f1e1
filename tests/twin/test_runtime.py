"""The twin's runtime: resources from the template, in-process Lambdas, event sources, schedules, the API."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from twin import invoke as invoke_cli
from twin.clock import ActivityThread, VirtualClock, VirtualDatetime, VirtualEvent, current_time, time_source
from twin.lambdas import FunctionError
from twin.runtime import Twin
from twin.server import TwinServer, check_authorization

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "template.yaml"
SIGNED = (
    "AWS4-HMAC-SHA256 Credential=AKIDTWINEXAMPLE/20260105/us-east-1/execute-api/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64
)


# ---------------------------------------------------------------------- the clock's tools
def test_time_does_not_jump_while_a_started_thread_has_not_run_yet() -> None:
    clock = VirtualClock(speed=1.0)
    clock.start()

    class SlowToStart(ActivityThread):
        def run(self) -> None:
            time.sleep(0.05)  # as if the OS had not scheduled the new thread yet
            super().run()

    try:
        start = clock.now()
        ran_at: list[float] = []
        worker = SlowToStart(target=lambda: ran_at.append(clock.now()), clock=clock)
        waiter = ActivityThread(target=lambda: clock.sleep(3600), clock=clock)  # wants an hour to pass
        worker.start()  # takes a hold: time may not jump before the worker has run
        waiter.start()
        worker.join(7200)  # joins wait on virtual time too
        assert ran_at[0] - start < 1
        waiter.join(7200)
        assert clock.now() - start == pytest.approx(3600, abs=1)  # then the waiter's hour went by at once
    finally:
        clock.stop()


def test_pending_timers_alone_do_not_pull_time() -> None:
    clock = VirtualClock(speed=1.0)
    clock.start()
    try:
        fired: list[float] = []
        clock.call_later(86400, lambda: fired.append(clock.now()))
        time.sleep(0.1)
        assert fired == []  # nobody waits: time flows at speed 1
        start = clock.now()
        clock.sleep(90000)  # somebody waits: jump through the timer to the deadline
        assert len(fired) == 1 and fired[0] >= start
    finally:
        clock.stop()


def test_virtual_events_wait_on_virtual_time_and_never_lose_a_pulse() -> None:
    clock = VirtualClock(speed=1.0)
    clock.start()
    try:
        event = VirtualEvent(clock)
        start = clock.now()
        assert event.wait(600) is False
        assert clock.now() - start >= 600
        results: list[bool] = []
        waiter = ActivityThread(target=lambda: results.append(event.wait(10_000)), clock=clock)
        with clock.activity():  # keep time still while we pulse
            waiter.start()
            for _ in range(2000):
                if clock.sleeping():
                    break
                time.sleep(0.005)
            event.set()
            event.clear()
        waiter.join(5)
        assert results == [True]
    finally:
        clock.stop()
        assert clock.errors == []


def test_stopped_clocks_freeze() -> None:
    clock = VirtualClock(speed=1000.0)
    clock.start()
    clock.stop()
    frozen = clock.now()
    time.sleep(0.02)
    assert clock.now() == frozen


# ---------------------------------------------------------------------- twins: shared where tests only read
_open: dict[str, Twin] = {}
"""Twins shared by consecutive tests (one runs at a time in a process: starting another closes it)."""


def _close_shared() -> None:
    while _open:
        _open.popitem()[1].stop()


def _shared(key: str, **kwargs: Any) -> Twin:
    if key not in _open:
        _close_shared()
        twin = Twin(**kwargs)
        twin.start()
        _open[key] = twin
    return _open[key]


@pytest.fixture(scope="module", autouse=True)
def _stop_shared_twins() -> Iterator[None]:
    yield
    _close_shared()


@pytest.fixture
def real() -> Twin:
    """The repo's template.yaml, simulators included."""
    return _shared("real")


@pytest.fixture
def shared() -> Twin:
    """The fixture template, for tests that only add invocations they can tell apart."""
    return _shared("fixture", template=FIXTURE, root=ROOT, simulators=False, schedules=False)


@pytest.fixture
def alone() -> None:
    """For tests that start their own twin."""
    _close_shared()


@pytest.fixture
def twin(alone: None) -> Iterator[Twin]:
    """A fresh fixture twin, for tests that count everything a function received."""
    with Twin(FIXTURE, root=ROOT, simulators=False, schedules=False) as twin:
        yield twin


# ---------------------------------------------------------------------- the real template


def test_real_template_resources_exist_in_moto(real: Twin) -> None:
    table = real.template.tables[0].name
    described = real.client("dynamodb").describe_table(TableName=table)["Table"]
    assert [k["AttributeName"] for k in described["KeySchema"]] == ["pk", "sk"]
    assert described["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
    ttl = real.client("dynamodb").describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    bucket = real.template.buckets[0].name
    assert real.client("s3").get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    functions = {f["FunctionName"]: f for f in real.client("lambda").list_functions()["Functions"]}
    api = real.template.functions["ApiFunction"]
    assert functions[api.name]["Environment"]["Variables"]["TABLE_NAME"] == table
    assert functions[api.name]["Timeout"] == 29
    assert real.warnings == []


def test_real_api_through_api_gateway_events(real: Twin) -> None:
    status, body = real.api_request("GET", "/catalog/instances", query={"accelerator_model": "L4"})
    assert status == 200
    assert body["count"] > 0 and all(t["accelerator"]["model"] == "L4" for t in body["instance_types"])
    status, body = real.api_request("GET", "/catalog/instances/ml.g5.xlarge")
    assert (status, body["accelerator"]["model"]) == (200, "A10G")
    status, body = real.api_request("POST", "/plans", body={"endpoint_name": "x"})
    assert status == 422
    assert real.api_request("DELETE", "/plans") == (403, {"message": "Missing Authentication Token"})
    (record,) = [i for i in real.lambdas.of("ApiFunction") if i.event["path"] == "/catalog/instances/ml.g5.xlarge"]
    assert record.event["resource"] == "/catalog/instances/{type}"
    assert record.event["pathParameters"] == {"type": "ml.g5.xlarge"}
    assert record.event["requestContext"]["stage"] == "v1"


def test_the_weekly_schedule_fires_on_virtual_time_and_is_retried(alone: None) -> None:
    with Twin(simulators=False) as real:
        created = real.clock.now()
        real.advance(7 * 86400 + 600)
        runs = real.lambdas.of("PriceRefreshFunction")
    # moto has no Price List API: the job fails; Lambda retries the asynchronous invocation twice
    assert [r.source for r in runs] == ["schedule:PriceRefreshFunctionWeekly"] * 3
    assert all(r.error == "Unhandled" for r in runs)
    assert runs[0].started - created == pytest.approx(7 * 86400, abs=5)  # rate(7 days), from creation
    waits = [b.started - (a.started + a.duration) for a, b in itertools.pairwise(runs)]  # after each failure
    assert waits == [pytest.approx(60, abs=1), pytest.approx(120, abs=1)]


# ---------------------------------------------------------------------- the fixture template
def test_a_function_sees_its_environment_context_and_virtual_time(shared: Twin) -> None:
    twin = shared
    twin.clock.advance(86400 * 3)
    result = twin.invoke("EchoFunction", {"hello": "twin"})
    spec = twin.template.functions["EchoFunction"]
    assert result["event"] == {"hello": "twin"}
    assert result["env"] == {
        "ECHO_SETTING": "echo-test",
        "TABLE_NAME": twin.template.physical("Table").ref,
        "POWERTOOLS_SERVICE_NAME": "inferops",
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_REGION": "us-east-1",
        "_HANDLER": "app.handler",
    }
    assert result["seen_at_import"] == "echo-test"  # module-level reads see the function's variables too
    assert (result["function_name"], result["arn"], result["memory"]) == (spec.name, spec.arn, 1024)
    assert 29_000 < result["remaining_ms"] <= 30_000
    assert abs(result["time"] - twin.clock.now()) < 5  # time.time() in the handler is virtual
    assert datetime.fromisoformat(result["now"]).date() == twin.clock.utcnow().date()
    assert "ECHO_SETTING" not in os.environ  # nothing leaked into the process environment


def test_concurrent_invocations_of_different_functions_keep_their_own_environment(shared: Twin) -> None:
    twin = shared
    seen: dict[str, Any] = {}

    def call(function: str) -> None:
        seen[function] = twin.invoke(function, {"sleep": 5})  # a virtual sleep: both are inside at once

    threads = [threading.Thread(target=call, args=(f,)) for f in ("EchoFunction", "OtherFunction")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen["EchoFunction"]["env"]["ECHO_SETTING"] == "echo-test"
    assert seen["OtherFunction"]["env"]["ECHO_SETTING"] == "other"
    assert seen["OtherFunction"]["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


def test_errors_timeouts_and_injected_crashes(shared: Twin) -> None:
    twin = shared
    with pytest.raises(FunctionError) as failed:
        twin.invoke("EchoFunction", {"fail": "on purpose"})
    assert failed.value.payload["errorType"] == "ValueError"
    assert failed.value.payload["errorMessage"] == "asked to fail: on purpose"
    assert any("app.py" in line for line in failed.value.payload["stackTrace"])
    with pytest.raises(FunctionError) as slow:
        twin.invoke("EchoFunction", {"sleep": 45})  # Timeout: 30
    assert slow.value.error_type == "Sandbox.Timedout"
    assert "Task timed out after 30.00 seconds" in slow.value.payload["errorMessage"]
    twin.faults.crash_once("EchoFunction")
    with pytest.raises(FunctionError) as crashed:
        twin.invoke("EchoFunction", {})
    assert crashed.value.error_type == "Runtime.ExitError"
    assert twin.invoke("EchoFunction", {"after": "crash"})["event"] == {"after": "crash"}  # once only
    assert twin.faults.report() == {"lambda.crash.EchoFunction": 1}


def test_boto3_invoke_reaches_the_handler_like_lambda(shared: Twin) -> None:
    twin = shared
    client = twin.client("lambda")
    name = twin.template.functions["EchoFunction"].name
    reply = client.invoke(FunctionName=name, Payload=json.dumps({"via": "boto3"}))
    assert reply["StatusCode"] == 200 and "FunctionError" not in reply
    assert json.loads(reply["Payload"].read())["event"] == {"via": "boto3"}
    failed = client.invoke(FunctionName=name, Payload=json.dumps({"fail": "x"}))
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "ValueError"
    queued = client.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"async": True}))
    assert queued["StatusCode"] == 202
    assert not any(i.event == {"async": True} for i in twin.lambdas.of("EchoFunction"))  # not yet
    twin.advance(1)
    (record,) = [i for i in twin.lambdas.of("EchoFunction") if i.event == {"async": True}]
    assert record.invocation_type == "Event"


# ---------------------------------------------------------------------- the API server
def _request(url: str, method: str = "GET", body: Any = None, auth: str | None = SIGNED) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if auth:
        request.add_header("Authorization", auth)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # 127.0.0.1 only
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_server_serves_the_api_behind_iam_auth(shared: Twin) -> None:
    twin = shared
    with TwinServer(twin, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        status, body = _request(f"{server.url}/catalog/instances/ml.g5.xlarge")
        assert (status, body["name"]) == (200, "ml.g5.xlarge")
        status, body = _request(f"{server.url}/catalog/instances?accelerator_model=L4&family=g6")
        assert status == 200 and {t["family"] for t in body["instance_types"]} == {"g6"}
        assert _request(f"{server.url}/catalog/instances", auth=None) == (
            403,
            {"message": "Missing Authentication Token"},
        )
        status, body = _request(f"{server.url}/catalog/instances", auth="Bearer abc")
        assert status == 403 and "Credential" in body["message"]
        assert _request(f"{server.url}/nowhere")[0] == 403
        assert _request(f"{server.url}/plans", "POST", {"endpoint_name": "x"})[0] == 422
        assert _request(f"{server.url}/health", auth=None)[0] == 404  # Auth NONE: reaches the function
    (record,) = [i for i in twin.lambdas.of("ApiFunction") if i.event["path"] == "/catalog/instances/ml.g5.xlarge"]
    assert record.event["requestContext"]["identity"]["accessKey"] == "AKIDTWINEXAMPLE"
    assert record.event["headers"]["Authorization"] == SIGNED


# ---------------------------------------------------------------------- event sources
def test_sqs_event_source_with_partial_batch_failures_and_a_dlq(twin: Twin) -> None:
    sqs = twin.client("sqs")
    work = twin.template.queues["WorkQueue"]
    dlq = twin.template.queues["WorkDLQ"]
    with twin.busy():
        for body in ({"n": 1}, {"n": 2, "fail": True}, {"n": 3}):
            sqs.send_message(QueueUrl=work.url, MessageBody=json.dumps(body))
    twin.advance(1)
    first = twin.lambdas.of("WorkerFunction")
    assert len(first) == 1 and len(first[0].event["Records"]) == 3
    record = first[0].event["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == work.arn
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    twin.advance(65)  # the failed message is visible again after VisibilityTimeout (60 s) of virtual time
    second = twin.lambdas.of("WorkerFunction")[1]
    assert [json.loads(r["body"])["n"] for r in second.event["Records"]] == [2]
    assert second.event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    twin.advance(65)  # maxReceiveCount 2: on the next poll it moves to the DLQ
    assert len(twin.lambdas.of("WorkerFunction")) == 2
    moved = sqs.receive_message(QueueUrl=dlq.url, MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["n"] for m in moved] == [2]
    left = sqs.get_queue_attributes(QueueUrl=work.url, AttributeNames=["ApproximateNumberOfMessages"])
    assert left["Attributes"]["ApproximateNumberOfMessages"] == "0"
    poller = twin.pollers["WorkerFunctionWork"]
    assert [b["failed"] != [] for b in poller.batches] == [True, True]


def test_a_failing_batch_is_retried_whole(twin: Twin) -> None:
    sqs = twin.client("sqs")
    work = twin.template.queues["WorkQueue"]
    sqs.send_message(QueueUrl=work.url, MessageBody=json.dumps({"crash": True}))
    twin.advance(1)
    assert twin.lambdas.of("WorkerFunction")[0].error == "Unhandled"
    twin.advance(61)
    assert len(twin.lambdas.of("WorkerFunction")) == 2


def test_sns_delivers_to_lambda_with_its_filter_and_to_sqs_for_the_event_source(twin: Twin) -> None:
    sns = twin.client("sns")
    topic = twin.template.topics["ResultsTopic"].arn
    with twin.busy():
        sns.publish(
            TopicArn=topic,
            Message="for echo",
            Subject="s",
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "echo"}},
        )
        sns.publish(TopicArn=topic, Message="not for echo")
    twin.advance(2)
    echoed = [i.event for i in twin.lambdas.of("EchoFunction")]
    assert len(echoed) == 1  # the filter policy dropped the second
    notification = echoed[0]["Records"][0]
    assert notification["EventSource"] == "aws:sns"
    assert notification["Sns"]["TopicArn"] == topic
    assert (notification["Sns"]["Message"], notification["Sns"]["Subject"]) == ("for echo", "s")
    assert notification["Sns"]["MessageAttributes"] == {"kind": {"Type": "String", "Value": "echo"}}
    assert notification["Sns"]["Timestamp"].startswith(twin.clock.utcnow().strftime("%Y-%m-%d"))
    consumed = twin.lambdas.of("OtherFunction")  # the topic's SQS subscription, polled by OtherFunction
    bodies = [json.loads(r["body"])["Message"] for i in consumed for r in i.event["Records"]]
    assert sorted(bodies) == ["for echo", "not for echo"]


def test_schedules_fire_as_their_expressions_say(alone: None) -> None:
    with Twin(FIXTURE, root=ROOT, simulators=False, schedules=True) as twin:
        twin.advance(7 * 86400 + 60)
        echo = [i for i in twin.lambdas.of("EchoFunction") if i.source == "schedule:EchoFunctionHourly"]
        other = twin.lambdas.of("OtherFunction")
    assert len(echo) == 7 * 4
    assert echo[0].event == {"from": "schedule"}  # the rule's Input
    nightly = [i for i in other if i.source == "schedule:NightlyRule"]
    assert len(nightly) == 7
    assert nightly[0].event["detail-type"] == "Scheduled Event"
    assert nightly[0].event["source"] == "aws.events"
    assert nightly[0].event["time"].endswith("T02:30:00Z")
    weekly = [i for i in other if i.source == "schedule:WeeklySchedule"]
    assert [i.event for i in weekly] == [{"from": "scheduler"}]
    assert datetime.fromtimestamp(weekly[0].started, UTC).strftime("%a %H:%M") == "Mon 09:00"


def test_stopping_restores_the_process(alone: None) -> None:
    from moto.awslambda.models import LambdaFunction

    from inferops import storage

    original = LambdaFunction.__dict__["_invoke_lambda"]
    environ_class = type(os.environ)
    with Twin(FIXTURE, root=ROOT, simulators=False, schedules=False) as twin:
        twin.invoke("EchoFunction", {})
        assert LambdaFunction.__dict__["_invoke_lambda"] is not original
        assert storage.time is not time  # the product's time is virtual while the twin runs
        assert time_source() is twin.clock
        with pytest.raises(RuntimeError, match="another Twin"):
            Twin(FIXTURE, root=ROOT).start()
    assert LambdaFunction.__dict__["_invoke_lambda"] is original
    assert storage.time is time
    assert type(os.environ) is environ_class
    assert time_source() is None
    assert abs(current_time() - time.time()) < 1
    assert isinstance(datetime.now(), VirtualDatetime)  # the shim's isinstance follows the real class


def test_authorization_header_checks() -> None:
    assert check_authorization(SIGNED) == "AKIDTWINEXAMPLE"
    assert check_authorization(None)[0] == 403  # type: ignore[index]
    assert check_authorization("AWS4-HMAC-SHA256 Credential=AKID/x")[0] == 403  # type: ignore[index]


# ---------------------------------------------------------------------- python -m twin.invoke
def test_invoke_cli_prints_the_result_and_fails_on_function_errors(
    alone: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert invoke_cli.main(["ApiFunction", str(ROOT / "events/api/list_gpu_instances.json")]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["statusCode"] == 200 and json.loads(reply["body"])["count"] > 0
    event = tmp_path / "fail.json"
    event.write_text(json.dumps({"fail": "cli"}))
    args = ["EchoFunction", str(event), "--template", str(FIXTURE), "--root", str(ROOT)]
    assert invoke_cli.main(args) == 1
    assert json.loads(capsys.readouterr().out)["errorType"] == "ValueError"
    with pytest.raises(SystemExit):
        invoke_cli.main([])
