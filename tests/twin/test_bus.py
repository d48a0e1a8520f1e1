"""The twin's EventBridge: envelopes, pattern matching, async delivery, input transformation, faults."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from twin.bus import (
    Bus,
    CallbackTarget,
    InputConfig,
    InvalidEventPattern,
    ListSink,
    Rule,
    RuleTarget,
    envelope,
    json_path,
    matches,
    validate_pattern,
)
from twin.clock import VirtualClock
from twin.faults import EventFaults, Faults
from twin.runtime import Twin

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "template.yaml"

EVENT: dict[str, Any] = envelope(
    source="aws.sagemaker",
    detail_type="SageMaker Endpoint State Change",
    detail={
        "EndpointName": "fraud-scorer",
        "EndpointStatus": "IN_SERVICE",
        "CreationTime": 1767603600000.0,
        "Tags": {},
        "ProductionVariants": [
            {"VariantName": "blue", "DesiredWeight": 1.0, "DesiredInstanceCount": 2.0},
            {"VariantName": "green", "DesiredWeight": 0.0, "DesiredInstanceCount": 1.0},
        ],
        "Labels": ["canary", "gpu"],
        "Note": None,
        "Empty": "",
        "SourceIp": "10.0.3.7",
        "Flag": True,
    },
    resources=["arn:aws:sagemaker:us-east-1:123456789012:endpoint/fraud-scorer"],
    time=datetime(2026, 1, 5, 9, 30, 15, 123456, tzinfo=UTC),
)


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    clock = VirtualClock(speed=1.0)
    clock.start()
    yield clock
    clock.stop()
    assert clock.errors == []


# ---------------------------------------------------------------------- the envelope
def test_envelope_is_shaped_as_eventbridge_delivers_it() -> None:
    assert list(EVENT) == ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]
    assert EVENT["version"] == "0"
    assert uuid.UUID(EVENT["id"]).version == 4
    assert EVENT["time"] == "2026-01-05T09:30:15Z"  # second precision, Z
    assert (EVENT["account"], EVENT["region"]) == ("123456789012", "us-east-1")


def test_envelope_copies_the_detail() -> None:
    detail = {"nested": {"a": 1}}
    event = envelope(source="s", detail_type="d", detail=detail, resources=None, time=datetime.now(UTC))
    detail["nested"]["a"] = 2
    assert event["detail"] == {"nested": {"a": 1}}
    assert event["resources"] == []


def test_list_sink_records_full_envelopes() -> None:
    sink = ListSink(now=lambda: datetime(2026, 1, 5, tzinfo=UTC))
    event_id = sink.put(source="aws.cloudwatch", detail_type="CloudWatch Alarm State Change", detail={"x": 1})
    assert sink.events[0]["id"] == event_id
    assert sink.events[0]["time"] == "2026-01-05T00:00:00Z"
    assert sink.of_type("CloudWatch Alarm State Change") == sink.events
    assert sink.of_type("other") == []


# ---------------------------------------------------------------------- matching
MATCHING = [
    ({"source": ["aws.sagemaker"]}, True),
    ({"source": ["aws.events"]}, False),
    ({"source": ["aws.sagemaker"], "detail-type": ["Other"]}, False),  # every field must match
    ({"detail": {"EndpointStatus": ["IN_SERVICE", "FAILED"]}}, True),
    ({"detail": {"EndpointName": [{"prefix": "fraud-"}]}}, True),
    ({"detail": {"EndpointName": [{"prefix": {"equals-ignore-case": "FRAUD"}}]}}, True),
    ({"detail": {"EndpointName": [{"suffix": "-scorer"}]}}, True),
    ({"detail": {"EndpointName": [{"suffix": "-SCORER"}]}}, False),
    ({"detail": {"EndpointStatus": [{"equals-ignore-case": "in_service"}]}}, True),
    ({"detail": {"EndpointName": [{"wildcard": "fr*-sc*r"}]}}, True),
    ({"detail": {"EndpointName": [{"wildcard": "fraud"}]}}, False),
    ({"detail": {"EndpointStatus": [{"anything-but": "FAILED"}]}}, True),
    ({"detail": {"EndpointStatus": [{"anything-but": ["IN_SERVICE", "FAILED"]}]}}, False),
    ({"detail": {"EndpointName": [{"anything-but": {"prefix": "fraud"}}]}}, False),
    ({"detail": {"EndpointName": [{"anything-but": {"suffix": ".png"}}]}}, True),
    ({"detail": {"CreationTime": [{"numeric": [">", 0, "<=", 1767603600000]}]}}, True),
    ({"detail": {"CreationTime": [{"numeric": ["<", 0]}]}}, False),
    ({"detail": {"EndpointName": [{"numeric": [">", 0]}]}}, False),  # strings are not numbers
    ({"detail": {"Flag": [1]}}, False),  # true is not 1
    ({"detail": {"Flag": [True]}}, True),
    ({"detail": {"CreationTime": [1767603600000]}}, True),  # 1767603600000.0 == 1767603600000
    ({"detail": {"CreationTime": ["1767603600000"]}}, False),
    ({"detail": {"Note": [None]}}, True),
    ({"detail": {"Empty": [""]}}, True),
    ({"detail": {"Missing": [None]}}, False),
    ({"detail": {"Note": [{"exists": True}]}}, True),  # null is a present leaf
    ({"detail": {"Missing": [{"exists": False}]}}, True),
    ({"detail": {"EndpointName": [{"exists": False}]}}, False),
    ({"detail": {"Tags": [{"exists": True}]}}, False),  # exists only matches leaves, {} is not one
    ({"detail": {"SourceIp": [{"cidr": "10.0.0.0/16"}]}}, True),
    ({"detail": {"SourceIp": [{"cidr": "192.168.0.0/16"}]}}, False),
    ({"detail": {"Labels": ["gpu"]}}, True),  # arrays: any element
    ({"detail": {"Labels": ["cpu"]}}, False),
    ({"detail": {"ProductionVariants": {"VariantName": ["green"]}}}, True),  # arrays of objects
    ({"detail": {"ProductionVariants": {"DesiredInstanceCount": [{"numeric": [">=", 2]}]}}}, True),
    ({"detail": {"ProductionVariants": {"VariantName": ["purple"]}}}, False),
    ({"resources": [{"prefix": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/"}]}, True),
    ({"$or": [{"source": ["nope"]}, {"detail": {"EndpointStatus": ["IN_SERVICE"]}}]}, True),
    ({"$or": [{"source": ["nope"]}, {"detail": {"EndpointStatus": ["FAILED"]}}]}, False),
    ({"detail": {"$or": [{"Labels": ["gpu"]}, {"Missing": ["x"]}], "EndpointName": ["fraud-scorer"]}}, True),
]


@pytest.mark.parametrize(("pattern", "expected"), MATCHING, ids=[json.dumps(p)[:70] for p, _ in MATCHING])
def test_pattern_matching(pattern: dict[str, Any], expected: bool) -> None:
    validate_pattern(pattern)
    assert matches(pattern, EVENT) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        {"source": "aws.sagemaker"},  # not in an array
        {"source": []},
        {"source": [{"startswith": "aws"}]},
        {"source": [{"prefix": "a", "suffix": "b"}]},
        {"detail": {"n": [{"numeric": [">>", 1]}]}},
        {"detail": {"n": [{"numeric": [">", "1"]}]}},
        {"detail": {"n": [{"exists": "yes"}]}},
        {"$or": [{"source": ["a"]}]},
        ["source"],
    ],
)
def test_invalid_patterns_are_refused(pattern: Any) -> None:
    with pytest.raises(InvalidEventPattern):
        validate_pattern(pattern)


def test_rules_validate_their_pattern() -> None:
    with pytest.raises(InvalidEventPattern):
        Rule("bad", {"source": "x"})


# ---------------------------------------------------------------------- input transformation
def test_input_path_and_constant_input() -> None:
    assert InputConfig(input_path="$.detail.EndpointName").render(EVENT) == "fraud-scorer"
    assert InputConfig(input_path="$.detail.ProductionVariants[1].VariantName").render(EVENT) == "green"
    assert InputConfig(input='{"fixed": true}').render(EVENT) == {"fixed": True}
    assert InputConfig().render(EVENT) == EVENT
    assert json_path(EVENT, "$['detail-type']") == "SageMaker Endpoint State Change"
    assert json_path(EVENT, "$.detail.Nope.deeper") is None


def test_input_transformer_quotes_strings_inside_quotes_and_json_outside() -> None:
    config = InputConfig(
        paths_map={"name": "$.detail.EndpointName", "count": "$.detail.ProductionVariants[0].DesiredInstanceCount"},
        template='{"message": "endpoint <name> has <count> instances", "count": <count>, "raw": <name>}',
    )
    assert config.render(EVENT) == {
        "message": "endpoint fraud-scorer has 2.0 instances",
        "count": 2.0,
        "raw": "fraud-scorer",
    }
    whole = InputConfig(paths_map={}, template='{"original": <aws.events.event.json>}').render(EVENT)
    assert whole == {"original": EVENT}


# ---------------------------------------------------------------------- delivery on the clock
def _collect(bus: Bus, pattern: dict[str, Any], name: str = "listener") -> list[Any]:
    received: list[Any] = []
    bus.add_rule(Rule(name, pattern, [RuleTarget(CallbackTarget(name, received.append))]))
    return received


def test_put_returns_at_once_and_delivery_follows_on_the_clock(clock: VirtualClock) -> None:
    bus = Bus(clock, latency=0.5)
    received = _collect(bus, {"source": ["inferops.test"]})
    delivered_at: list[float] = []
    bus.subscribe({"source": ["inferops.test"]}, lambda _: delivered_at.append(clock.now()), name="timer")
    put_at = clock.now()
    event_id = bus.put(source="inferops.test", detail_type="Ping", detail={"n": 1})
    assert received == []  # asynchronous, as in AWS
    clock.sleep(1.0)
    assert [e["id"] for e in received] == [event_id]
    assert received[0]["time"] == datetime.fromtimestamp(put_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert delivered_at[0] - put_at == pytest.approx(0.5, abs=0.05)
    kinds = [r.kind for r in bus.records(event_id=event_id)]
    assert kinds[0] == "put"
    assert kinds.count("delivered") == 2


def test_unmatched_events_and_failing_targets_are_logged(clock: VirtualClock) -> None:
    bus = Bus(clock, latency=0.1)
    good: list[Any] = []

    def broken(_: Any) -> None:
        raise RuntimeError("target down")

    bus.add_rule(
        Rule(
            "two-targets",
            {"detail-type": ["Ping"]},
            [RuleTarget(CallbackTarget("broken", broken)), RuleTarget(CallbackTarget("good", good.append))],
        )
    )
    bus.put(source="a", detail_type="Ping", detail={})
    nobody = bus.put(source="a", detail_type="Nobody listens", detail={})
    clock.sleep(1)
    assert len(good) == 1  # one failing target does not stop the next
    failed = bus.records("failed")
    assert [(r.target, "target down" in r.note) for r in failed] == [("broken", True)]
    assert [r.event_id for r in bus.records("unmatched")] == [nobody]


def test_rules_only_see_their_bus(clock: VirtualClock) -> None:
    bus = Bus(clock, latency=0.1)
    default = _collect(bus, {"source": ["s"]}, "default")
    custom: list[Any] = []
    bus.add_rule(Rule("custom", {"source": ["s"]}, [RuleTarget(CallbackTarget("c", custom.append))], bus_name="mine"))
    bus.put(source="s", detail_type="d", detail={}, bus_name="mine")
    clock.sleep(1)
    assert (len(default), len(custom)) == (0, 1)


def test_delivery_follows_virtual_time_not_put_order(clock: VirtualClock) -> None:
    faults = Faults(seed=1)
    bus = Bus(clock, faults=faults, latency=0.5)
    received = _collect(bus, {"source": ["s"]})
    faults.delay_next(30.0, pattern={"detail": {"n": [1]}})
    bus.put(source="s", detail_type="d", detail={"n": 1})
    bus.put(source="s", detail_type="d", detail={"n": 2})
    clock.sleep(60)
    assert [e["detail"]["n"] for e in received] == [2, 1]
    assert faults.counts["event.delayed"] == 1
    assert bus.records("delayed")[0].note == "fault: +30s"


# ---------------------------------------------------------------------- faults
def test_one_shot_faults_lose_and_duplicate_matching_events_only(clock: VirtualClock) -> None:
    faults = Faults()
    bus = Bus(clock, faults=faults, latency=0.1)
    received = _collect(bus, {"source": ["s"]})
    faults.lose_next({"detail-type": ["lost"]})
    faults.duplicate_next({"detail-type": ["twice"]}, copies=3)
    lost = bus.put(source="s", detail_type="lost", detail={})
    twice = bus.put(source="s", detail_type="twice", detail={})
    again = bus.put(source="s", detail_type="lost", detail={})  # the one-shot is used up
    clock.sleep(1)
    ids = [e["id"] for e in received]
    assert lost not in ids
    assert ids.count(twice) == 3  # duplicates keep their id, as EventBridge's at-least-once delivery does
    assert ids.count(again) == 1
    assert faults.report() == {"event.duplicated": 1, "event.lost": 1}
    assert [r.event_id for r in bus.records("lost")] == [lost]


def test_rate_faults_are_deterministic_for_a_seed(clock: VirtualClock) -> None:
    def run(seed: int) -> tuple[list[float], ...]:
        faults = Faults(seed=seed, events=EventFaults(lose=0.2, duplicate=0.2, max_copies=4, delay=0.2, reorder=0.3))
        event = dict(EVENT)
        return tuple(faults.event_delays(event) for _ in range(200))

    first, second, other = run(7), run(7), run(8)
    assert first == second
    assert first != other
    lost = sum(1 for d in first if not d)
    duplicated = sum(1 for d in first if len(d) > 1)
    assert 20 <= lost <= 60
    assert 15 <= duplicated <= 60
    assert max(len(d) for d in first) <= 4


def test_rate_faults_can_be_limited_by_a_pattern() -> None:
    faults = Faults(events=EventFaults(lose=1.0, pattern={"source": ["aws.sagemaker"]}))
    assert faults.event_delays(EVENT) == []
    assert faults.event_delays({**EVENT, "source": "aws.cloudwatch"}) == [0.0]
    with pytest.raises(ValueError, match="max_copies"):
        EventFaults(max_copies=1)


def test_sagemaker_errors_are_drawn_from_the_configuration() -> None:
    faults = Faults(seed=3, sagemaker_errors={"UpdateEndpoint": ("ThrottlingException", 1.0), "*": ("X", 0.0)})
    assert faults.sagemaker_error("UpdateEndpoint") == "ThrottlingException"
    assert faults.sagemaker_error("DescribeEndpoint") is None
    assert faults.counts == {"sagemaker.UpdateEndpoint.ThrottlingException": 1}


# ---------------------------------------------------------------------- through the twin
@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with Twin(FIXTURE, root=ROOT, simulators=False, schedules=False) as twin:
        yield twin


def test_put_events_from_code_goes_through_the_bus_and_the_templates_rules(twin: Twin) -> None:
    events = twin.client("events")
    reply = events.put_events(
        Entries=[
            {"Source": "inferops.test", "DetailType": "Transform Me", "Detail": json.dumps({"name": "twin"})},
            {"Source": "aws.sagemaker", "DetailType": "Spoofed", "Detail": "{}"},
            {"Source": "inferops.test", "DetailType": "Bad", "Detail": "[1]"},
        ]
    )
    codes = [entry.get("ErrorCode") for entry in reply["Entries"]]
    assert codes == [None, "NotAuthorizedForSourceException", "MalformedDetail"]
    assert reply["FailedEntryCount"] == 2
    event_id = reply["Entries"][0]["EventId"]
    before = len(twin.lambdas.of("EchoFunction"))
    twin.advance(5)
    invocations = twin.lambdas.of("EchoFunction")[before:]
    assert [i.event for i in invocations] == [{"greeting": "hello twin", "kind": "Transform Me"}]
    assert any(r.kind == "delivered" and r.event_id == event_id for r in twin.bus.log)


def test_a_rule_delivers_to_a_queue_and_a_state_machine(twin: Twin) -> None:
    twin.bus.put(source="inferops.test", detail_type="Audit: weights changed", detail={"severity": 4, "who": "ci"})
    twin.bus.put(source="inferops.test", detail_type="Audit: minor", detail={"severity": 1})
    twin.advance(5)
    sqs = twin.client("sqs")
    url = twin.template.queues["ParkedQueue"].url
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert bodies == [{"severity": 4, "who": "ci"}]  # InputPath $.detail; severity 1 did not match
    sfn = twin.client("stepfunctions")
    arn = twin.template.state_machines["VariablesStateMachine"].arn
    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert len(executions) == 1
    started = sfn.describe_execution(executionArn=executions[0]["executionArn"])
    assert json.loads(started["input"]) == {"endpoint": "from-audit"}


def test_custom_bus_rules_receive_events_put_on_that_bus(twin: Twin) -> None:
    before = len(twin.lambdas.of("EchoFunction"))
    twin.client("events").put_events(
        Entries=[{"Source": "inferops.custom", "DetailType": "x", "Detail": "{}", "EventBusName": "inferops-custom"}]
    )
    twin.client("events").put_events(Entries=[{"Source": "inferops.custom", "DetailType": "x", "Detail": "{}"}])
    twin.advance(5)
    seen = [i.event for i in twin.lambdas.of("EchoFunction")[before:]]
    assert len(seen) == 1
    assert seen[0]["source"] == "inferops.custom"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", seen[0]["time"])
