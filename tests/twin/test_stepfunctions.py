"""moto's Step Functions on the virtual clock, with the real handlers, the bus and the SageMaker simulator.

The "Done when" of issue 3: a state machine that calls a real handler (a Lambda task), waits on a task token
resumed by an event delivered through the bus to a function (SendTaskSuccess), calls an aws-sdk SageMaker
task and waits one hour - in under 2 s of wall time (printed with -s, and in README's figures: a benchmark, not an
assertion, since a loaded CI machine may take longer; the tests assert only that waits do not take real time).
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import moto
import pytest
from botocore.exceptions import ClientError

from twin import stepfunctions
from twin.runtime import Twin

NOT_REAL_TIME = 30.0
"""Wall seconds a wait of 5 minutes to an hour of virtual time must stay under: real waiting would take the whole
wait; the margin keeps the check true on a loaded 2-core CI machine."""

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "template.yaml"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"


def _endpoint(twin: Twin, name: str) -> None:
    sagemaker = twin.client("sagemaker")
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:1"
    sagemaker.create_model(ModelName=f"{name}-v1", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": image})
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{name}-v1",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-v1",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-v1")


def _gap(history: list[dict[str, Any]], first: str, then: str) -> float:
    """Virtual seconds between the first `first` event and the next `then` event."""
    start = next(i for i, e in enumerate(history) if e["type"] == first)
    end = next(e for e in history[start:] if e["type"] == then)
    return float((end["timestamp"] - history[start]["timestamp"]).total_seconds())


# ---------------------------------------------------------------------- Done when
def test_done_when_real_handler_token_resumed_by_event_sdk_task_and_an_hour_wait() -> None:
    with Twin(FIXTURE, root=ROOT) as twin:
        _endpoint(twin, "fraud-scorer")
        assert twin.sagemaker is not None  # the simulator sends the event that resumes the token
        # A warm container, as a deployed function mostly is: its import time is measured by `make bench`.
        assert twin.api_request("GET", "/catalog/instances/ml.g5.xlarge")[0] == 200
        started = time.perf_counter()
        arn = twin.start_execution(
            "DoneWhenStateMachine", {"endpoint": "fraud-scorer", "instance_type": "ml.g5.xlarge"}
        )
        done = twin.wait_execution(arn, timeout_real=10)
        wall = time.perf_counter() - started
        history = twin.history(arn)
        resumed_by = twin.lambdas.of("ResumeFunction")
        deliveries = twin.bus.deliveries("ResumeFunction")

    print(f"done-when: {wall:.3f} s wall for {done['virtual_duration']:.0f} s virtual")  # shown with -s
    assert done["status"] == "SUCCEEDED", done.get("cause")
    assert wall < NOT_REAL_TIME, f"{wall:.2f}s wall"
    output = json.loads(done["output"])
    assert output["catalog"]["status"] == 200  # the real API handler answered
    assert output["catalog"]["instance"]["name"] == "ml.g5.xlarge"
    assert output["catalog"]["instance"]["accelerator"]["model"] == "A10G"
    assert output["resumed"]["status"] == "IN_SERVICE"  # SendTaskSuccess from the event handler
    assert "heartbeat" not in output  # resumed by the event, not by the fallback
    assert output["described"] == {"status": "InService", "config": "fraud-scorer-v1"}  # aws-sdk:sagemaker
    # the event that resumed us went through the bus to the function
    assert output["resumed"]["event_id"] in {d.event_id for d in deliveries}
    assert any(i.ok and i.payload == {"resumed": True} for i in resumed_by)
    # one hour of virtual time, measured from the virtual history
    assert _gap(history, "WaitStateEntered", "WaitStateExited") == pytest.approx(3600, abs=1)
    waited_for_event = _gap(history, "TaskSubmitted", "TaskSucceeded")
    assert 1 < waited_for_event < 900  # resumed before the heartbeat would have fired
    assert done["virtual_duration"] == pytest.approx(3600 + waited_for_event, abs=5)
    counts = Counter(e["type"] for e in history)
    assert counts["TaskStateEntered"] == 3
    assert counts["TaskSucceeded"] == 3
    assert counts["WaitStateEntered"] == 1
    assert len(history) == 22


def test_patches_are_removed_when_the_twin_stops() -> None:
    wait_function = stepfunctions.patched_class("WaitFunction")
    original = wait_function.__dict__["_wait_interval"]
    with Twin(FIXTURE, root=ROOT, simulators=False, schedules=False):
        assert wait_function.__dict__["_wait_interval"] is not original
    assert wait_function.__dict__["_wait_interval"] is original
    for name in stepfunctions.THREADING_MODULES:
        assert importlib.import_module(name).threading is threading


# ---------------------------------------------------------------------- pinned moto internals
def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_moto_internals_the_twin_patches_are_where_it_expects_them() -> None:
    """A moto upgrade that moves any of these must fail here, not silently run Wait states in real time.

    Runs while no twin is installed (before the module's shared twin), when moto's modules are pristine."""
    assert moto.__version__ == "5.2.5"
    for name in stepfunctions.THREADING_MODULES:
        assert importlib.import_module(name).threading is threading, name
    for name, attribute in stepfunctions.THREAD_NAMES:
        assert getattr(importlib.import_module(name), attribute) is threading.Thread, name
    for name, attribute in stepfunctions.EVENT_NAMES:
        assert getattr(importlib.import_module(name), attribute) is threading.Event, name
    for name in stepfunctions.TIME_MODULES:
        assert importlib.import_module(name).time is time, name
    for name in stepfunctions.DATETIME_MODULES:
        assert importlib.import_module(name).datetime.__name__ == "datetime", name
    methods = {
        cls + "." + method: getattr(getattr(importlib.import_module(mod), cls), method)
        for mod, cls, method in stepfunctions.METHODS
    }
    assert _parameters(methods["WaitFunction._wait_interval"]) == ["self", "env", "wait_seconds"]
    assert _parameters(methods["Timestamp._get_wait_seconds"]) == ["self", "env"]
    assert _parameters(methods["EventManager._get_current_timestamp"]) == []
    assert _parameters(methods["CallbackPoolManager.add"]) == ["self", "callback_id"]
    assert _parameters(methods["CallbackEndpoint.setup_heartbeat_endpoint"]) == ["self", "heartbeat_seconds"]
    assert _parameters(methods["ExecutionState.from_state_props"]) == ["self", "state_props"]
    assert _parameters(methods["StepFunctionsParserBackend.send_task_success"])[:2] == ["self", "task_token"]
    assert _parameters(methods["StepFunctionsParserBackend.send_task_failure"])[:2] == ["self", "task_token"]
    assert _parameters(methods["StepFunctionsParserBackend.send_task_heartbeat"]) == ["self", "task_token"]
    assert _parameters(methods["StepFunctionsParserBackend.start_execution"])[:3] == [
        "self",
        "state_machine_arn",
        "name",
    ]
    assert _parameters(methods["StepFunctionsParserBackend._validate_definition"]) == ["definition"]
    assert _parameters(methods["StateTask._from_error"]) == ["self", "env", "ex"]
    assert _parameters(methods["ErrorEqualsDecl._eval_body"]) == ["self", "env"]

    timestamp = stepfunctions.patched_class("Timestamp")
    assert _parameters(timestamp._from_timestamp_string) == ["timestamp"]
    assert _parameters(timestamp._create_failure_event) == ["self", "env", "timestamp_str"]
    assert "self.string = string" in inspect.getsource(timestamp.__init__)
    callback = importlib.import_module("moto.stepfunctions.parser.asl.eval.callback.callback")
    endpoint = callback.CallbackEndpoint("token")
    assert hasattr(endpoint, "_notify_event") and endpoint.get_outcome() is None
    timeouts = importlib.import_module("moto.stepfunctions.parser.asl.component.common.timeouts.timeout")
    assert timeouts.TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS == 99999999
    assert hasattr(timeouts.TimeoutSeconds(timeout_seconds=1), "is_default")
    backend = importlib.import_module("moto.stepfunctions.parser.models").StepFunctionsParserBackend
    assert _parameters(backend._get_executions) == ["self", "execution_status"]
    jsonata = importlib.import_module(stepfunctions.JSONATA_HOOK[0])
    assert hasattr(jsonata, stepfunctions.JSONATA_HOOK[1])
    assert "_eval_jsonata(jsonata_expression)" in inspect.getsource(jsonata.eval_jsonata_expression)
    # the Lambda and SNS paths (twin.lambdas.MotoLambdaBridge) and the runtime's (twin.runtime.Twin._patch_moto)
    from moto.awslambda.models import LambdaFunction
    from moto.events.models import EventsBackend
    from moto.sns.models import Subscription
    from moto.sqs.models import Queue

    assert _parameters(LambdaFunction._invoke_lambda) == ["self", "event"]
    assert _parameters(LambdaFunction.invoke) == ["self", "body", "request_headers", "response_headers"]
    assert _parameters(Subscription.publish) == [
        "self",
        "message",
        "message_id",
        "subject",
        "message_attributes",
        "group_id",
        "deduplication_id",
        "message_structure",
    ]
    assert "_filter_policy_matcher" in inspect.getsource(Subscription.__init__)
    assert _parameters(Subscription._parse_message_structure) == ["self", "message", "protocol"]
    assert _parameters(EventsBackend.put_events) == ["self", "events"]
    assert _parameters(Queue.add_message) == ["self", "message"]


# ---------------------------------------------------------------------- a shared twin for the rest
@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with Twin(FIXTURE, root=ROOT, simulators=False, schedules=False) as twin:
        yield twin


def test_retry_backoff_runs_on_virtual_time(twin: Twin) -> None:
    before = len(twin.lambdas.of("EchoFunction"))
    started = time.perf_counter()
    done = twin.wait_execution(twin.start_execution("RetryStateMachine"), timeout_real=10)
    wall = time.perf_counter() - started
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"])["error"]["Error"] == "ValueError"  # caught after the retries
    attempts = twin.lambdas.of("EchoFunction")[before:]
    assert [a.error for a in attempts] == ["Unhandled"] * 4  # 1 + MaxAttempts 3
    gaps = [b.started - (a.started + a.duration) for a, b in itertools.pairwise(attempts)]
    assert gaps == [pytest.approx(s, abs=1) for s in (60, 120, 240)]  # IntervalSeconds 60, BackoffRate 2
    assert done["virtual_duration"] == pytest.approx(420, abs=3)
    assert wall < NOT_REAL_TIME


def test_heartbeat_timeout_fires_on_virtual_time(twin: Twin) -> None:
    started = time.perf_counter()
    arn = twin.start_execution("HeartbeatStateMachine")
    done = twin.wait_execution(arn, timeout_real=10)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"])["error"]["Error"] == "States.HeartbeatTimeout"
    assert done["virtual_duration"] == pytest.approx(300, abs=2)
    assert time.perf_counter() - started < NOT_REAL_TIME
    token = _parked_token(twin)
    with pytest.raises(ClientError) as late:  # the task is over: AWS says so
        twin.client("stepfunctions").send_task_success(taskToken=token, output="{}")
    assert late.value.response["Error"]["Code"] == "TaskDoesNotExist"


def _parked_token(twin: Twin) -> str:
    sqs = twin.client("sqs")
    url = twin.template.queues["ParkedQueue"].url
    for _ in range(2000):
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
        if messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
            return str(json.loads(messages[0]["Body"])["token"])
        time.sleep(0.005)
    raise AssertionError("no token parked")


def test_heartbeats_keep_a_task_alive_and_tokens_answer_as_on_aws(twin: Twin) -> None:
    sfn = twin.client("stepfunctions")
    with twin.busy():  # hold virtual time while we read the token: the heartbeat must not run out meanwhile
        arn = twin.start_execution("HeartbeatStateMachine")
        token = _parked_token(twin)
        twin.clock.call_later(200, lambda: sfn.send_task_heartbeat(taskToken=token))
        twin.clock.call_later(450, lambda: sfn.send_task_success(taskToken=token, output='{"ok": true}'))
    done = twin.wait_execution(arn, timeout_real=10)
    assert done["status"] == "SUCCEEDED"
    assert json.loads(done["output"]) == {"ok": True}
    assert done["virtual_duration"] == pytest.approx(450, abs=2)  # past the 300 s heartbeat: it was renewed
    assert twin.clock.errors == []
    for bad, code in ((token, "TaskDoesNotExist"), ("never-issued", "InvalidToken")):
        with pytest.raises(ClientError) as refused:
            sfn.send_task_success(taskToken=bad, output="{}")
        assert refused.value.response["Error"]["Code"] == code


def test_an_answer_before_the_heartbeat_wait_starts_is_not_lost(twin: Twin) -> None:
    done = twin.wait_execution(twin.start_execution("CallbackStateMachine"), timeout_real=10)
    assert done["status"] == "SUCCEEDED", done.get("cause")
    assert json.loads(done["output"]) == {"answered": 1}
    assert done["virtual_duration"] < 60  # not after HeartbeatSeconds


def test_a_second_success_for_the_same_token_is_refused(twin: Twin) -> None:
    sfn = twin.client("stepfunctions")
    with twin.busy():  # no virtual time passes: the task is still waiting when we answer, twice
        arn = twin.start_execution("HeartbeatStateMachine")
        token = _parked_token(twin)
        sfn.send_task_success(taskToken=token, output='{"first": true}')
        with pytest.raises(ClientError) as again:
            sfn.send_task_success(taskToken=token, output='{"second": true}')
    assert again.value.response["Error"]["Code"] == "TaskDoesNotExist"  # moto alone answers 200
    assert json.loads(twin.wait_execution(arn)["output"]) == {"first": True}


def test_thirty_days_of_waits_take_no_wall_time(twin: Twin) -> None:
    until = twin.clock.utcnow() + timedelta(days=31)
    started = time.perf_counter()
    arn = twin.start_execution("WaitsStateMachine", {"until": until.strftime("%Y-%m-%dT%H:%M:%SZ"), "extra": 60})
    done = twin.wait_execution(arn, timeout_real=10)
    assert done["status"] == "SUCCEEDED"
    assert time.perf_counter() - started < 1.0
    history = twin.history(arn)
    assert _gap(history, "WaitStateEntered", "WaitStateExited") == pytest.approx(30 * 86400, abs=1)
    exited = [e["timestamp"] for e in history if e["type"] == "WaitStateExited"]
    assert exited[1] == pytest.approx(until.replace(microsecond=0), abs=timedelta(seconds=1))  # TimestampPath
    assert (exited[2] - exited[1]).total_seconds() == pytest.approx(60, abs=1)  # SecondsPath
    assert done["startDate"].year == 2026 and done["stopDate"] - done["startDate"] > timedelta(days=31)


def test_parallel_branches_and_map_iterations_wait_concurrently(twin: Twin) -> None:
    started = time.perf_counter()
    done = twin.wait_execution(twin.start_execution("ParallelStateMachine", {"x": 1}), timeout_real=10)
    assert done["status"] == "SUCCEEDED", done.get("cause")
    assert done["virtual_duration"] == pytest.approx(1200 + 300, abs=3)
    assert time.perf_counter() - started < NOT_REAL_TIME


def test_jsonpath_variables_and_jsonata(twin: Twin) -> None:
    done = twin.wait_execution(twin.start_execution("VariablesStateMachine", {"endpoint": "fraud-scorer"}))
    assert done["status"] == "SUCCEEDED", done.get("cause")
    history = twin.history(done["executionArn"])
    recalled = next(
        e for e in history if e["type"] == "PassStateExited" and e["stateExitedEventDetails"]["name"] == "Recall"
    )
    assert json.loads(recalled["stateExitedEventDetails"]["output"]) == {"endpoint": "fraud-scorer", "attempt": 1}
    computed = next(
        e for e in history if e["type"] == "PassStateExited" and e["stateExitedEventDetails"]["name"] == "Compute"
    )
    output = json.loads(computed["stateExitedEventDetails"]["output"])
    now = output.pop("now")
    assert output == {"endpoint": "fraud-scorer", "steps": 4, "last": 100, "attempt": 2}
    assert abs(datetime.fromisoformat(now.replace("Z", "+00:00")) - computed["timestamp"]) < timedelta(seconds=5)


def test_stopping_an_execution_interrupts_its_wait(twin: Twin) -> None:
    sfn = twin.client("stepfunctions")
    with twin.busy():  # the 30-day Wait must still be waiting when we stop it
        arn = twin.start_execution("WaitsStateMachine", {"until": "2030-01-01T00:00:00Z", "extra": 1})
        for _ in range(2000):
            if any(e["type"] == "WaitStateEntered" for e in twin.history(arn)):
                break
            time.sleep(0.005)
        started = time.perf_counter()
        sfn.stop_execution(executionArn=arn, cause="operator")
    done = twin.wait_execution(arn, timeout_real=5)
    assert done["status"] == "ABORTED"
    assert time.perf_counter() - started < 1.0


def test_executions_started_by_a_rule_run_on_the_clock(twin: Twin) -> None:
    _endpoint(twin, "ruled")
    twin.bus.put(
        source="inferops.test",
        detail_type="Start Done When",
        detail={"endpoint": "ruled", "instance_type": "ml.m5.large"},
    )
    twin.clock.call_later(
        120,
        lambda: twin.bus.put(
            source="aws.sagemaker",
            detail_type="SageMaker Endpoint State Change",
            detail={"EndpointName": "ruled", "EndpointStatus": "IN_SERVICE"},
        ),
    )
    twin.advance(1)
    sfn = twin.client("stepfunctions")
    machine = twin.template.state_machines["DoneWhenStateMachine"].arn
    (execution,) = sfn.list_executions(stateMachineArn=machine)["executions"]
    done = twin.wait_execution(execution["executionArn"], timeout_real=10)
    assert done["status"] == "SUCCEEDED", done.get("cause")
    assert json.loads(done["input"]) == {"endpoint": "ruled", "instance_type": "ml.m5.large"}  # InputPath $.detail
    assert json.loads(done["output"])["catalog"]["instance"]["name"] == "ml.m5.large"


def test_timestamps_in_the_past_do_not_wait(twin: Twin) -> None:
    past = (datetime.now(UTC) - timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = twin.wait_execution(twin.start_execution("WaitsStateMachine", {"until": past, "extra": 0}), timeout_real=10)
    history = twin.history(done["executionArn"])
    exited = [e["timestamp"] for e in history if e["type"] == "WaitStateExited"]
    assert (exited[1] - exited[0]).total_seconds() < 1
