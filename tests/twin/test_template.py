"""template.yaml read as CloudFormation + SAM would: names, intrinsics, Globals, and the wiring derived from it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from twin.runtime import ScheduleError, next_fire
from twin.template import Template, TemplateError, load_yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "template.yaml"


@pytest.fixture(scope="module")
def fixture() -> Template:
    return Template(FIXTURE, root=ROOT)


@pytest.fixture(scope="module")
def real() -> Template:
    return Template(ROOT / "template.yaml")


# ---------------------------------------------------------------------- YAML and intrinsics
def test_short_form_tags_become_long_form() -> None:
    doc = load_yaml("a: !Ref X\nb: !GetAtt R.Arn\nc: !Sub 'x-${Y}'\nd: !If [C, 1, 2]\ne: !Condition C\n")
    assert doc == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["R", "Arn"]},
        "c": {"Fn::Sub": "x-${Y}"},
        "d": {"Fn::If": ["C", 1, 2]},
        "e": {"Condition": "C"},
    }


def test_outputs_resolve_every_intrinsic(fixture: Template) -> None:
    outputs = {name: fixture.resolve(spec["Value"]) for name, spec in fixture.raw["Outputs"].items()}
    api_id = fixture.physical("Api").ref
    assert re.fullmatch(r"[0-9a-f]{10}", api_id)
    assert outputs["ApiUrl"] == f"https://{api_id}.execute-api.us-east-1.amazonaws.com/v1"
    assert outputs["Zones"] == "us-east-1b"
    assert outputs["Encoded"] == "dHdpbg=="
    assert outputs["Split"] == "sqs"
    assert outputs["Chosen"] == "none"  # the condition is false: the other branch
    table_arn = fixture.get_att("Table", "Arn")
    assert outputs["Literal"] == f"{table_arn}/${{Literal}}/123456789012"


def test_physical_names_are_cloudformation_like_and_stable(fixture: Template) -> None:
    again = Template(FIXTURE, root=ROOT)
    table = fixture.physical("Table").ref
    assert re.fullmatch(r"inferops-Table-[0-9A-F]{12}", table)
    assert again.physical("Table").ref == table
    bucket = fixture.physical("ResultsBucket").ref
    assert bucket == bucket.lower() and bucket.startswith("inferops-resultsbucket-")
    assert fixture.physical("NamedTable").ref == "inferops-test-simple"  # an explicit name wins
    queue = fixture.physical("WorkQueue")
    assert queue.ref == f"https://sqs.us-east-1.amazonaws.com/123456789012/{queue.attributes['QueueName']}"
    assert fixture.physical("ResultsTopic").ref.startswith("arn:aws:sns:us-east-1:123456789012:inferops-ResultsTopic-")
    assert (
        fixture.physical("WaitsStateMachine").ref == "arn:aws:states:us-east-1:123456789012:stateMachine:inferops-waits"
    )


def test_parameters_override_defaults_and_switch_conditions() -> None:
    extras = Template(FIXTURE, root=ROOT, parameters={"CreateExtras": "true", "Stage": "prod"})
    assert "ExtraBucket" in extras.active
    assert extras.functions["EchoFunction"].environment["OPTIONAL"] == "yes"
    assert extras.functions["EchoFunction"].environment["ECHO_SETTING"] == "echo-prod"
    assert extras.resolve(extras.raw["Outputs"]["Chosen"]["Value"]) == extras.physical("ExtraBucket").ref


def test_errors_are_reported_as_template_errors(tmp_path: Path) -> None:
    broken = tmp_path / "t.yaml"
    broken.write_text("Resources:\n  A:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Ref Nope\n")
    with pytest.raises(TemplateError, match="Nope"):
        Template(broken)
    machine = tmp_path / "m.yaml"
    machine.write_text(
        "Resources:\n  M:\n    Type: AWS::Serverless::StateMachine\n    Properties:\n"
        '      Definition: {StartAt: A, States: {A: {Type: Task, Resource: "${Missing}", End: true}}}\n'
    )
    with pytest.raises(TemplateError, match="Missing"):
        Template(machine)
    with pytest.raises(TemplateError, match="cannot read"):
        Template(tmp_path / "absent.yaml")


# ---------------------------------------------------------------------- functions
def test_globals_apply_and_the_function_wins(fixture: Template) -> None:
    echo = fixture.functions["EchoFunction"]
    other = fixture.functions["OtherFunction"]
    assert (echo.memory, other.memory) == (1024, 256)  # Globals via FindInMap, overridden by EchoFunction
    assert (echo.timeout, other.timeout) == (30, 10)
    assert echo.environment == {
        "POWERTOOLS_SERVICE_NAME": "inferops",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "TABLE_NAME": fixture.physical("Table").ref,
        "ECHO_SETTING": "echo-test",  # the function's value over the global one; AWS::NoValue dropped
    }
    assert other.environment["ECHO_SETTING"] == "other"
    assert echo.layers == [ROOT / "layers" / "shared"]
    assert echo.code_dir == ROOT / "tests/twin/fixtures/functions/echo"
    assert echo.async_retries == 1
    assert echo.role_arn == fixture.get_att("EchoFunctionRole", "Arn")  # SAM's implicit role


def test_state_machines_get_their_substitutions(fixture: Template) -> None:
    done = fixture.state_machines["DoneWhenStateMachine"]
    definition = json.loads(done.definition)
    assert "${" not in done.definition
    catalog = definition["States"]["Catalog"]["Parameters"]["FunctionName"]
    assert catalog == fixture.functions["ApiFunction"].arn
    assert definition["States"]["WaitForInService"]["Parameters"]["TableName"] == fixture.physical("Table").ref
    assert done.definition_file == ROOT / "tests/twin/fixtures/statemachines/done_when.asl.json"
    waits = fixture.state_machines["WaitsStateMachine"]
    assert json.loads(waits.definition)["States"]["Month"]["Seconds"] == 2592000  # DefinitionString
    assert waits.role_arn == fixture.get_att("StatesRole", "Arn")
    assert json.loads(fixture.state_machines["ParallelStateMachine"].definition)["StartAt"] == "Both"  # Definition


# ---------------------------------------------------------------------- wiring
def test_rules_with_their_targets_and_inputs(fixture: Template) -> None:
    rules = {rule.logical_id: rule for rule in fixture.rules}
    resume = rules["ResumeFunctionEndpointInService"]
    assert resume.pattern["detail"] == {"EndpointStatus": ["IN_SERVICE"]}
    assert [(t.kind, t.logical_id) for t in resume.targets] == [("lambda", "ResumeFunction")]
    transformed = rules["EchoFunctionTransformed"].targets[0].input
    assert transformed.paths_map == {"name": "$.detail.name", "kind": "$.detail-type"}
    assert rules["EchoFunctionOnCustomBus"].bus_name == "inferops-custom"
    assert rules["DoneWhenStateMachineRequested"].targets[0].kind == "statemachine"
    assert rules["DoneWhenStateMachineRequested"].targets[0].input.input_path == "$.detail"
    audit = rules["AuditRule"]
    assert [(t.kind, t.logical_id, t.target_id) for t in audit.targets] == [
        ("sqs", "ParkedQueue", "ToQueue"),
        ("statemachine", "VariablesStateMachine", "ToWorkflow"),
    ]
    assert audit.pattern["detail"]["severity"] == [{"numeric": [">=", 3]}]


def test_schedules_subscriptions_and_event_sources(fixture: Template) -> None:
    schedules = {s.logical_id: s for s in fixture.schedules}
    assert (schedules["EchoFunctionHourly"].expression, schedules["EchoFunctionHourly"].kind) == (
        "rate(6 hours)",
        "rule",
    )
    assert schedules["NightlyRule"].target.logical_id == "OtherFunction"
    assert schedules["WeeklySchedule"].kind == "scheduler"
    assert schedules["WeeklySchedule"].input == '{"from": "scheduler"}'
    subscriptions = {s.logical_id: s for s in fixture.subscriptions}
    assert subscriptions["EchoSubscription"].filter_policy == {"kind": ["echo"]}
    assert subscriptions["EchoSubscription"].target.logical_id == "EchoFunction"
    assert subscriptions["ResultsTopicSubscription0"].protocol == "sqs"
    assert subscriptions["ResultsTopicSubscription0"].target.logical_id == "EventsQueue"
    sources = {s.logical_id: s for s in fixture.event_sources}
    work = sources["WorkerFunctionWork"]
    assert (work.function, work.queue_logical_id, work.batch_size, work.report_failures) == (
        "WorkerFunction",
        "WorkQueue",
        5,
        True,
    )
    assert sources["EventsConsumerMapping"].function == "OtherFunction"
    assert not sources["EventsConsumerMapping"].report_failures
    assert fixture.unsupported == []


def test_storage_and_messaging_resources(fixture: Template) -> None:
    work = fixture.queues["WorkQueue"]
    assert (work.redrive_target, work.max_receive_count, work.visibility_timeout) == ("WorkDLQ", 2, 60)
    assert "ExtraBucket" not in {b.logical_id for b in fixture.buckets}
    table = next(t for t in fixture.tables if t.logical_id == "Table")
    assert table.properties["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
    (alarm,) = fixture.alarms
    assert (alarm["AlarmName"], alarm["Threshold"], alarm["DatapointsToAlarm"]) == ("inferops-test-latency", "5", 2)
    assert fixture.buses == ["inferops-custom"]
    routes = {(r.method, r.path): r.auth for r in fixture.routes}
    assert routes[("GET", "/health")] == "NONE"
    assert routes[("POST", "/plans")] == "AWS_IAM"


# ---------------------------------------------------------------------- the real template
def test_every_function_of_the_real_template_is_runnable(real: Template) -> None:
    declared = [lid for lid, res in real.raw["Resources"].items() if res["Type"] == "AWS::Serverless::Function"]
    assert declared and sorted(real.functions) == sorted(declared)
    for spec in real.functions.values():
        module, _, _ = spec.handler.rpartition(".")
        assert (spec.code_dir / f"{module}.py").exists(), spec.logical_id
        assert spec.layers == [ROOT / "layers" / "shared"]
        assert spec.environment["TABLE_NAME"] == real.physical("OperationsTable").ref
        assert spec.runtime == "python3.13"
    for machine in real.state_machines.values():
        assert "${" not in machine.definition, machine.logical_id
    assert real.unsupported == []


def test_real_template_wiring(real: Template) -> None:
    api = real.functions["ApiFunction"]
    assert (api.timeout, api.memory, api.architectures) == (29, 512, ["arm64"])
    assert api.environment["PRICE_BUCKET"] == real.physical("PriceBucket").ref
    assert {(r.method, r.path, r.auth) for r in real.routes} >= {
        ("GET", "/catalog/instances", "AWS_IAM"),
        ("POST", "/plans", "AWS_IAM"),
    }
    assert real.apis["InternalApi"].stage == "v1"
    weekly = next(s for s in real.schedules if s.target.logical_id == "PriceRefreshFunction")
    assert (weekly.expression, weekly.kind) == ("rate(7 days)", "scheduler")
    (table,) = real.tables
    assert table.properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert table.properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert "ApiGatewayCloudWatchRole" not in real.active  # Condition CreateApiGatewayAccount is false


# ---------------------------------------------------------------------- schedule expressions
def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_rate_schedules_count_from_creation() -> None:
    created = _ts("2026-01-05T09:00:00")
    assert next_fire("rate(7 days)", created, created=created) == _ts("2026-01-12T09:00:00")
    assert next_fire("rate(1 hour)", _ts("2026-01-05T11:30:00"), created=created) == _ts("2026-01-05T12:00:00")
    assert next_fire("rate(5 minutes)", _ts("2026-01-05T09:05:00"), created=created) == _ts("2026-01-05T09:10:00")


def test_cron_schedules() -> None:
    monday = _ts("2026-01-05T09:00:00")  # a Monday
    assert next_fire("cron(30 2 * * ? *)", monday) == _ts("2026-01-06T02:30:00")
    assert next_fire("cron(0 9 ? * MON *)", monday) == _ts("2026-01-12T09:00:00")  # strictly after
    assert next_fire("cron(0 8-10/2 ? * MON-FRI *)", monday) == _ts("2026-01-05T10:00:00")
    assert next_fire("cron(0 0 1 JAN ? 2027)", monday) == _ts("2027-01-01T00:00:00")
    assert next_fire("cron(0 0 1 JAN ? 2025)", monday) is None
    assert next_fire("cron(0 9 ? * 1 *)", monday) == _ts("2026-01-11T09:00:00")  # 1 = Sunday
    assert next_fire("cron(0 9 * * ? *)", monday, tz="Europe/Paris") == _ts("2026-01-06T08:00:00")
    assert next_fire("at(2026-02-01T00:00:00)", monday) == _ts("2026-02-01T00:00:00")
    assert next_fire("at(2025-02-01T00:00:00)", monday) is None


@pytest.mark.parametrize("expression", ["cron(0 9 L * ? *)", "cron(0 9 * * MON *)", "cron(0 9 * *)", "every day"])
def test_unsupported_or_invalid_schedules_are_refused(expression: str) -> None:
    with pytest.raises(ScheduleError):
        next_fire(expression, 0.0)
