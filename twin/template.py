"""template.yaml, read the way CloudFormation + the SAM transform would, for the twin.

The twin is wired from the template and nothing else: adding a function, a rule, a queue or a state
machine to template.yaml needs no change here. `Template` parses the YAML (short-form tags included),
applies `Globals`, gives every resource the physical name CloudFormation would (`<stack>-<LogicalId>-<SUFFIX>`,
deterministic here), resolves intrinsic functions (Ref, GetAtt, Sub, Join, Select, Split, If, Equals,
And/Or/Not, FindInMap, GetAZs, Base64, ToJsonString, Length) against those names, the parameters'
defaults and the pseudo parameters, and derives the specs the runtime needs: functions, state machines
(definitions with `DefinitionSubstitutions` applied), EventBridge rules and their targets, SNS
subscriptions, SQS event sources, schedules, API routes, and the storage and messaging resources.

What the twin does not simulate (S3 notifications, DynamoDB/Kinesis streams, HttpApi payloads,
Fn::ImportValue...) is listed in `Template.unsupported` instead of failing, so a new resource never breaks
the twin.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from twin.bus import ACCOUNT, REGION, InputConfig

STACK_NAME = "inferops"
PSEUDO_PARAMETERS = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::StackName": STACK_NAME,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK_NAME}/0000-twin",
    "AWS::NotificationARNs": [],
}


class TemplateError(ValueError):
    """The template cannot be read or resolved as CloudFormation would."""


# ---------------------------------------------------------------------- YAML with CloudFormation tags
class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    pass


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unexpected node for !{suffix}")
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _construct_tag)


def load_yaml(text: str) -> Any:
    """YAML or JSON, with CloudFormation's short-form tags turned into their long form."""
    return yaml.load(text, Loader=_Loader)


# ---------------------------------------------------------------------- specs derived from the template
@dataclass
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str
    runtime: str
    timeout: int
    memory: int
    environment: dict[str, str]
    layers: list[Path]
    role_arn: str
    role_name: str
    async_retries: int = 2
    architectures: list[str] = field(default_factory=lambda: ["x86_64"])
    on_failure: str | None = None  # EventInvokeConfig's OnFailure destination ARN (async invocations)


@dataclass
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    definition: str
    role_arn: str
    role_name: str
    type: str = "STANDARD"
    definition_file: Path | None = None


@dataclass
class TargetSpec:
    """Where a rule, a schedule or a subscription delivers: kind + the logical id it resolved to."""

    kind: str  # lambda | statemachine | sqs | sns | bus | unknown
    logical_id: str
    arn: str
    target_id: str = ""
    input: InputConfig = field(default_factory=InputConfig)


@dataclass
class RuleSpec:
    logical_id: str
    name: str
    pattern: dict[str, Any]
    targets: list[TargetSpec]
    bus_name: str = "default"
    enabled: bool = True


@dataclass
class ScheduleSpec:
    logical_id: str
    expression: str
    target: TargetSpec
    kind: str  # "rule" (EventBridge scheduled rule: sends a "Scheduled Event") or "scheduler" (Scheduler)
    enabled: bool = True
    timezone: str = "UTC"
    input: str | None = None


@dataclass
class SubscriptionSpec:
    logical_id: str
    topic_logical_id: str
    topic_arn: str
    protocol: str
    endpoint: str
    target: TargetSpec
    raw: bool = False
    filter_policy: dict[str, Any] | None = None
    filter_scope: str = "MessageAttributes"


@dataclass
class EventSourceSpec:
    logical_id: str
    function: str
    queue_logical_id: str
    queue_arn: str
    batch_size: int = 10
    window: float = 0.0
    report_failures: bool = False
    enabled: bool = True


@dataclass
class TableSpec:
    logical_id: str
    name: str
    properties: dict[str, Any]


@dataclass
class BucketSpec:
    logical_id: str
    name: str
    properties: dict[str, Any]


@dataclass
class QueueSpec:
    logical_id: str
    name: str
    url: str
    arn: str
    attributes: dict[str, str]
    redrive_target: str | None = None  # logical id of the DLQ
    max_receive_count: int | None = None
    visibility_timeout: int = 30


@dataclass
class TopicSpec:
    logical_id: str
    name: str
    arn: str
    attributes: dict[str, str]


@dataclass
class RouteSpec:
    method: str
    path: str
    function: str
    api: str
    auth: str  # "AWS_IAM", "NONE", or an authorizer name


@dataclass
class ApiSpec:
    logical_id: str
    api_id: str
    name: str
    stage: str
    default_auth: str


@dataclass
class PhysicalResource:
    """What Ref and GetAtt return for one resource."""

    logical_id: str
    type: str
    ref: Any
    attributes: dict[str, Any]


# ---------------------------------------------------------------------- the template
class Template:
    """A SAM template resolved for the twin (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        root: str | Path | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
        stack_name: str = STACK_NAME,
    ) -> None:
        self.path = Path(path).resolve()
        self.root = Path(root).resolve() if root is not None else self.path.parent
        try:
            raw = load_yaml(self.path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise TemplateError(f"cannot read {self.path}: {error}") from error
        if not isinstance(raw, dict) or not isinstance(raw.get("Resources"), dict):
            raise TemplateError(f"{self.path}: no Resources")
        self.raw: dict[str, Any] = raw
        self.stack_name = stack_name
        self.pseudo = {**PSEUDO_PARAMETERS, "AWS::StackName": stack_name}
        self.parameters = self._parameters(parameters or {})
        self.mappings: dict[str, Any] = raw.get("Mappings") or {}
        self.unsupported: list[str] = []
        self.resources: dict[str, dict[str, Any]] = self._with_globals(raw["Resources"])
        self._conditions: dict[str, bool] = {}
        self._physical: dict[str, PhysicalResource] = {}
        self._resolving: set[str] = set()
        self.active = {lid for lid, res in self.resources.items() if self._condition_holds(res.get("Condition"))}
        self._add_implicit_resources()
        self._derive()

    # -------------------------------------------------------------- parameters, conditions, globals
    def _parameters(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, spec in (self.raw.get("Parameters") or {}).items():
            value = overrides.get(name, spec.get("Default"))
            if value is None:
                raise TemplateError(f"parameter {name} has no default and no value")
            kind = str(spec.get("Type", "String"))
            if kind.startswith("List<") or kind == "CommaDelimitedList":
                values[name] = [v.strip() for v in str(value).split(",")] if isinstance(value, str) else list(value)
            else:
                values[name] = str(value)
        return values

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            conditions = self.raw.get("Conditions") or {}
            if name not in conditions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def _condition_holds(self, name: Any) -> bool:
        return True if name is None else self.condition(str(name))

    def _with_globals(self, resources: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Apply SAM Globals: maps merge (resource wins), lists add up (globals first), scalars: resource wins."""
        globals_ = self.raw.get("Globals") or {}
        by_type = {
            "AWS::Serverless::Function": globals_.get("Function"),
            "AWS::Serverless::Api": globals_.get("Api"),
            "AWS::Serverless::HttpApi": globals_.get("HttpApi"),
            "AWS::Serverless::StateMachine": globals_.get("StateMachine"),
            "AWS::Serverless::SimpleTable": globals_.get("SimpleTable"),
            "AWS::Serverless::LayerVersion": globals_.get("LayerVersion"),
        }
        merged: dict[str, dict[str, Any]] = {}
        for logical_id, original in resources.items():
            resource = copy.deepcopy(original)
            defaults = by_type.get(resource.get("Type", ""))
            if defaults:
                resource["Properties"] = _merge_globals(defaults, resource.get("Properties") or {})
            merged[logical_id] = resource
        return merged

    def _add_implicit_resources(self) -> None:
        """The resources the SAM transform adds that templates refer to: roles, ServerlessRestApi."""
        for logical_id in sorted(self.active):
            resource = self.resources[logical_id]
            kind = resource.get("Type")
            props = resource.get("Properties") or {}
            if kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine") and not props.get("Role"):
                role_id = f"{logical_id}Role"
                if role_id not in self.resources:
                    self.resources[role_id] = {"Type": "AWS::IAM::Role", "Properties": {}}
                    self.active.add(role_id)
            if kind == "AWS::Serverless::Function":
                for event in (props.get("Events") or {}).values():
                    implicit_api = event.get("Type") == "Api" and "RestApiId" not in (event.get("Properties") or {})
                    if implicit_api and "ServerlessRestApi" not in self.resources:
                        self.resources["ServerlessRestApi"] = {
                            "Type": "AWS::Serverless::Api",
                            "Properties": {"StageName": "Prod"},
                        }
                        self.active.add("ServerlessRestApi")

    # -------------------------------------------------------------- physical names
    def _suffix(self, logical_id: str) -> str:
        digest = hashlib.sha256(f"{self.stack_name}/{logical_id}".encode()).hexdigest().upper()
        return "".join(c for c in digest if c.isalnum())[:12]

    def _generated(self, logical_id: str, limit: int = 64, *, lower: bool = False, prefix: bool = True) -> str:
        head = f"{self.stack_name}-{logical_id}" if prefix else logical_id
        name = f"{head[: limit - 13]}-{self._suffix(logical_id)}"
        return name.lower() if lower else name

    def physical(self, logical_id: str) -> PhysicalResource:
        """Ref/GetAtt values of a resource (as CloudFormation would return them)."""
        if logical_id in self._physical:
            return self._physical[logical_id]
        if logical_id not in self.resources:
            raise TemplateError(f"unknown resource {logical_id}")
        if logical_id in self._resolving:
            raise TemplateError(f"circular reference through {logical_id}")
        self._resolving.add(logical_id)
        try:
            found = self._make_physical(logical_id)
        finally:
            self._resolving.discard(logical_id)
        self._physical[logical_id] = found
        return found

    def _name(self, props: Mapping[str, Any], key: str) -> str | None:
        value = props.get(key)
        return None if value is None else str(self.resolve(value))

    def _make_physical(self, logical_id: str) -> PhysicalResource:
        resource = self.resources[logical_id]
        kind = str(resource.get("Type", ""))
        props = resource.get("Properties") or {}
        region, account = self.pseudo["AWS::Region"], self.pseudo["AWS::AccountId"]

        def made(ref: Any, **attributes: Any) -> PhysicalResource:
            return PhysicalResource(logical_id, kind, ref, attributes)

        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            name = self._name(props, "FunctionName") or self._generated(logical_id)
            arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
            return made(name, Arn=arn)
        if kind in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            name = self._name(props, "TableName") or self._generated(logical_id, 255)
            arn = f"arn:aws:dynamodb:{region}:{account}:table/{name}"
            return made(name, Arn=arn, StreamArn=f"{arn}/stream/2026-01-01T00:00:00.000")
        if kind == "AWS::S3::Bucket":
            name = self._name(props, "BucketName") or self._generated(logical_id, 63, lower=True)
            return made(
                name,
                Arn=f"arn:aws:s3:::{name}",
                DomainName=f"{name}.s3.amazonaws.com",
                RegionalDomainName=f"{name}.s3.{region}.amazonaws.com",
                WebsiteURL=f"http://{name}.s3-website-{region}.amazonaws.com",
            )
        if kind == "AWS::SQS::Queue":
            fifo = str(self.resolve(props.get("FifoQueue", False))).lower() == "true"
            name = self._name(props, "QueueName") or (self._generated(logical_id, 75) + (".fifo" if fifo else ""))
            url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
            return made(url, Arn=f"arn:aws:sqs:{region}:{account}:{name}", QueueName=name, QueueUrl=url)
        if kind == "AWS::SNS::Topic":
            name = self._name(props, "TopicName") or self._generated(logical_id, 256)
            arn = f"arn:aws:sns:{region}:{account}:{name}"
            return made(arn, TopicArn=arn, TopicName=name)
        if kind in ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            name = (
                self._name(props, "Name")
                or self._name(props, "StateMachineName")
                or self._generated(logical_id, 80, prefix=False)
            )
            arn = f"arn:aws:states:{region}:{account}:stateMachine:{name}"
            return made(arn, Arn=arn, Name=name)
        if kind in ("AWS::Serverless::Api", "AWS::ApiGateway::RestApi", "AWS::Serverless::HttpApi"):
            api_id = self._suffix(logical_id).lower()[:10]
            return made(api_id, RootResourceId=self._suffix(logical_id + "/").lower()[:10], ApiEndpoint=api_id)
        if kind in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            name = self._name(props, "LayerName") or logical_id
            return made(f"arn:aws:lambda:{region}:{account}:layer:{name}:1")
        if kind == "AWS::Logs::LogGroup":
            name = self._name(props, "LogGroupName") or self._generated(logical_id, 512)
            return made(name, Arn=f"arn:aws:logs:{region}:{account}:log-group:{name}:*")
        if kind == "AWS::IAM::Role":
            name = self._name(props, "RoleName") or self._generated(logical_id)
            return made(name, Arn=f"arn:aws:iam::{account}:role/{name}", RoleId=f"AROA{self._suffix(logical_id)}")
        if kind == "AWS::Events::EventBus":
            name = self._name(props, "Name") or self._generated(logical_id)
            return made(name, Arn=f"arn:aws:events:{region}:{account}:event-bus/{name}", Name=name)
        if kind == "AWS::Events::Rule":
            name = self._name(props, "Name") or self._generated(logical_id)
            bus = self._bus_name(props.get("EventBusName"))
            path = name if bus == "default" else f"{bus}/{name}"
            return made(
                name if bus == "default" else f"{bus}|{name}", Arn=f"arn:aws:events:{region}:{account}:rule/{path}"
            )
        if kind == "AWS::CloudWatch::Alarm":
            name = self._name(props, "AlarmName") or self._generated(logical_id, 255)
            return made(name, Arn=f"arn:aws:cloudwatch:{region}:{account}:alarm:{name}")
        if kind == "AWS::Scheduler::Schedule":
            name = self._name(props, "Name") or self._generated(logical_id)
            return made(name, Arn=f"arn:aws:scheduler:{region}:{account}:schedule/default/{name}")
        if kind == "AWS::SNS::Subscription":
            topic = str(self.resolve(props.get("TopicArn", "")))
            return made(f"{topic}:{self._suffix(logical_id).lower()}")
        name = self._generated(logical_id)
        return made(name, Arn=f"arn:aws:cloudformation:{region}:{account}:resource/{name}")

    # -------------------------------------------------------------- intrinsic functions
    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic function inside `value` (AWS::NoValue removes the key/item)."""
        resolved = self._resolve(value)
        return None if resolved is _NO_VALUE else resolved

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [r for r in (self._resolve(v) for v in value) if r is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(str(arg))
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key, arg)
        out = {}
        for key, item in value.items():
            resolved = self._resolve(item)
            if resolved is not _NO_VALUE:
                out[key] = resolved
        return out

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return self.physical(name).ref
        raise TemplateError(f"Ref to unknown {name}")

    def get_att(self, logical_id: str, attribute: str) -> Any:
        found = self.physical(logical_id)
        if attribute not in found.attributes:
            raise TemplateError(f"{logical_id} ({found.type}) has no attribute {attribute} in the twin")
        return found.attributes[attribute]

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else [self._resolve(a) for a in arg]
            return self.get_att(str(parts[0]), ".".join(str(p) for p in parts[1:]))
        if key == "Fn::Sub":
            return self._sub(arg)
        if key == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(str(i) for i in self._resolve(items))
        if key == "Fn::Select":
            index, items = arg
            return self._resolve(items)[int(self._resolve(index))]
        if key == "Fn::Split":
            delimiter, text = arg
            return str(self._resolve(text)).split(str(delimiter))
        if key == "Fn::If":
            condition, if_true, if_false = arg
            return self._resolve(if_true if self.condition(str(condition)) else if_false)
        if key == "Fn::Equals":
            left, right = (self._resolve(a) for a in arg)
            return str(left) == str(right)
        if key == "Fn::And":
            return all(self._truth(a) for a in arg)
        if key == "Fn::Or":
            return any(self._truth(a) for a in arg)
        if key == "Fn::Not":
            return not self._truth(arg[0])
        if key == "Fn::FindInMap":
            name, top, second = (self._resolve(a) for a in arg[:3])
            try:
                return self.mappings[name][top][second]
            except KeyError as error:
                raise TemplateError(f"FindInMap {name}/{top}/{second}: missing") from error
        if key == "Fn::GetAZs":
            region = self._resolve(arg) or self.pseudo["AWS::Region"]
            return [f"{region}{zone}" for zone in "abcdef"]
        if key == "Fn::Base64":
            return base64.b64encode(str(self._resolve(arg)).encode()).decode()
        if key == "Fn::ToJsonString":
            return json.dumps(self._resolve(arg), separators=(",", ":"))
        if key == "Fn::Length":
            return len(self._resolve(arg))
        raise TemplateError(f"{key} is not supported by the twin")

    def _truth(self, value: Any) -> bool:
        if isinstance(value, dict) and set(value) == {"Condition"}:
            return self.condition(str(value["Condition"]))
        return bool(self._resolve(value))

    def _sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self._resolve(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if name in self.pseudo or name in self.parameters or name in self.resources:
                value = self._ref(name)
                return ",".join(value) if isinstance(value, list) else str(value)
            if "." in name:
                resource, attribute = name.split(".", 1)
                return str(self.get_att(resource, attribute))
            raise TemplateError(f"Sub: unknown variable ${{{name}}}")

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))

    # -------------------------------------------------------------- lookups
    def _bus_name(self, value: Any) -> str:
        if value is None:
            return "default"
        name = str(self.resolve(value))
        return name.rsplit("/", 1)[-1] if name.startswith("arn:") else name

    def of_type(self, *kinds: str) -> list[str]:
        return [lid for lid in self.resources if lid in self.active and self.resources[lid].get("Type") in kinds]

    def props(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resources[logical_id].get("Properties") or {})

    def by_arn(self, arn: str) -> tuple[str, str] | None:
        """(kind, logical id) of the resource with this ARN (functions also by name), or None."""
        arn = re.sub(r"^(arn:aws:lambda:[^:]+:[^:]+:function:[^:]+):.*$", r"\1", arn)
        return self._arn_index.get(arn)

    def _index_arns(self) -> dict[str, tuple[str, str]]:
        kinds = {
            "AWS::Serverless::Function": "lambda",
            "AWS::Lambda::Function": "lambda",
            "AWS::Serverless::StateMachine": "statemachine",
            "AWS::StepFunctions::StateMachine": "statemachine",
            "AWS::SQS::Queue": "sqs",
            "AWS::SNS::Topic": "sns",
            "AWS::Events::EventBus": "bus",
        }
        index: dict[str, tuple[str, str]] = {}
        for logical_id in self.active:
            kind = kinds.get(str(self.resources[logical_id].get("Type")))
            if kind is None:
                continue
            found = self.physical(logical_id)
            arn = found.attributes.get("Arn") or found.attributes.get("TopicArn")
            if arn:
                index[str(arn)] = (kind, logical_id)
            if kind == "lambda":
                index[str(found.ref)] = (kind, logical_id)
        index[f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"] = ("bus", "default")
        return index

    def target(self, arn_or_name: Any, *, target_id: str = "", input_config: InputConfig | None = None) -> TargetSpec:
        arn = str(self.resolve(arn_or_name))
        found = self.by_arn(arn)
        if found is None:
            self.unsupported.append(f"target {arn}: not a resource of this template")
            return TargetSpec("unknown", "", arn, target_id, input_config or InputConfig())
        kind, logical_id = found
        return TargetSpec(kind, logical_id, arn, target_id, input_config or InputConfig())

    def _input(self, props: Mapping[str, Any]) -> InputConfig:
        transformer = self.resolve(props.get("InputTransformer")) or {}
        raw_input = self.resolve(props.get("Input"))
        return InputConfig(
            input=raw_input if raw_input is None or isinstance(raw_input, str) else json.dumps(raw_input),
            input_path=self.resolve(props.get("InputPath")),
            paths_map=transformer.get("InputPathsMap"),
            template=transformer.get("InputTemplate"),
        )

    # -------------------------------------------------------------- deriving the specs
    def _derive(self) -> None:
        self._arn_index = self._index_arns()
        self.functions: dict[str, FunctionSpec] = {}
        self.state_machines: dict[str, StateMachineSpec] = {}
        self.rules: list[RuleSpec] = []
        self.schedules: list[ScheduleSpec] = []
        self.subscriptions: list[SubscriptionSpec] = []
        self.event_sources: list[EventSourceSpec] = []
        self.tables: list[TableSpec] = []
        self.buckets: list[BucketSpec] = []
        self.queues: dict[str, QueueSpec] = {}
        self.topics: dict[str, TopicSpec] = {}
        self.apis: dict[str, ApiSpec] = {}
        self.routes: list[RouteSpec] = []
        self.log_groups: list[str] = []
        self.alarms: list[dict[str, Any]] = []
        self.buses: list[str] = []
        self.roles: dict[str, str] = {}

        for logical_id in self.of_type("AWS::IAM::Role"):
            self.roles[logical_id] = self.physical(logical_id).ref
        for logical_id in self.of_type("AWS::SQS::Queue"):
            self._queue(logical_id)
        for logical_id in self.of_type("AWS::SNS::Topic"):
            self._topic(logical_id)
        for logical_id in self.of_type("AWS::Serverless::Api", "AWS::ApiGateway::RestApi"):
            self._api(logical_id)
        for logical_id in self.of_type("AWS::Serverless::Function"):
            self._function_spec(logical_id)
        for logical_id in self.of_type("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"):
            self._state_machine(logical_id)
        for logical_id in self.of_type("AWS::Events::Rule"):
            self._events_rule(logical_id)
        for logical_id in self.of_type("AWS::Scheduler::Schedule"):
            props = self.props(logical_id)
            target = props.get("Target") or {}
            self.schedules.append(
                ScheduleSpec(
                    logical_id,
                    str(self.resolve(props["ScheduleExpression"])),
                    self.target(target.get("Arn"), input_config=self._input(target)),
                    "scheduler",
                    enabled=str(self.resolve(props.get("State", "ENABLED"))) == "ENABLED",
                    timezone=str(self.resolve(props.get("ScheduleExpressionTimezone", "UTC"))),
                    input=self.resolve(target.get("Input")),
                )
            )
        for logical_id in self.of_type("AWS::SNS::Subscription"):
            props = self.props(logical_id)
            self._subscription(
                logical_id,
                props["TopicArn"],
                str(self.resolve(props["Protocol"])),
                props["Endpoint"],
                raw=str(self.resolve(props.get("RawMessageDelivery", False))).lower() == "true",
                filter_policy=props.get("FilterPolicy"),
                filter_scope=props.get("FilterPolicyScope"),
            )
        for logical_id in self.of_type("AWS::Lambda::EventSourceMapping"):
            props = self.props(logical_id)
            function = self.target(props["FunctionName"])
            self._event_source(logical_id, function.logical_id, props["EventSourceArn"], props)
        for logical_id in self.of_type("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            self.tables.append(
                TableSpec(logical_id, self.physical(logical_id).ref, self.resolve(self.props(logical_id)))
            )
        for logical_id in self.of_type("AWS::S3::Bucket"):
            props = self.resolve(self.props(logical_id))
            if props.get("NotificationConfiguration"):
                self.unsupported.append(f"{logical_id}: S3 notifications are not delivered by the twin")
            self.buckets.append(BucketSpec(logical_id, self.physical(logical_id).ref, props))
        for logical_id in self.of_type("AWS::Logs::LogGroup"):
            self.log_groups.append(str(self.physical(logical_id).ref))
        for logical_id in self.of_type("AWS::CloudWatch::Alarm"):
            props = self.resolve(self.props(logical_id))
            props["AlarmName"] = self.physical(logical_id).ref
            self.alarms.append(props)
        for logical_id in self.of_type("AWS::Events::EventBus"):
            self.buses.append(str(self.physical(logical_id).ref))

    def _queue(self, logical_id: str) -> None:
        props = self.resolve(self.props(logical_id))
        found = self.physical(logical_id)
        attributes: dict[str, str] = {}
        for key in (
            "DelaySeconds",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "VisibilityTimeout",
            "FifoQueue",
            "ContentBasedDeduplication",
            "KmsMasterKeyId",
            "SqsManagedSseEnabled",
        ):
            if key in props:
                attributes[key] = str(props[key]).lower() if isinstance(props[key], bool) else str(props[key])
        redrive = props.get("RedrivePolicy")
        if isinstance(redrive, str):
            redrive = json.loads(redrive)
        dlq = max_receive = None
        if redrive:
            located = self.by_arn(str(redrive.get("deadLetterTargetArn", "")))
            dlq = located[1] if located else None
            max_receive = int(redrive.get("maxReceiveCount", 1))
        self.queues[logical_id] = QueueSpec(
            logical_id,
            found.attributes["QueueName"],
            found.ref,
            found.attributes["Arn"],
            attributes,
            dlq,
            max_receive,
            int(props.get("VisibilityTimeout", 30)),
        )

    def _topic(self, logical_id: str) -> None:
        props = self.props(logical_id)
        found = self.physical(logical_id)
        attributes = {}
        if str(self.resolve(props.get("FifoTopic", False))).lower() == "true":
            attributes["FifoTopic"] = "true"
        self.topics[logical_id] = TopicSpec(logical_id, found.attributes["TopicName"], found.ref, attributes)
        for index, sub in enumerate(props.get("Subscription") or []):
            self._subscription(
                f"{logical_id}Subscription{index}", {"Ref": logical_id}, sub["Protocol"], sub["Endpoint"]
            )

    def _subscription(
        self,
        logical_id: str,
        topic: Any,
        protocol: str,
        endpoint: Any,
        *,
        raw: bool = False,
        filter_policy: Any = None,
        filter_scope: Any = None,
    ) -> None:
        topic_arn = str(self.resolve(topic))
        located = self.by_arn(topic_arn)
        target = self.target(endpoint)
        self.subscriptions.append(
            SubscriptionSpec(
                logical_id,
                located[1] if located else "",
                topic_arn,
                str(self.resolve(protocol)),
                target.arn,
                target,
                raw,
                self.resolve(filter_policy),
                str(self.resolve(filter_scope) or "MessageAttributes"),
            )
        )

    def _api(self, logical_id: str) -> None:
        props = self.resolve(self.props(logical_id))
        auth = (props.get("Auth") or {}).get("DefaultAuthorizer", "NONE")
        self.apis[logical_id] = ApiSpec(
            logical_id,
            self.physical(logical_id).ref,
            str(props.get("Name", logical_id)),
            str(props.get("StageName", "Prod")),
            str(auth),
        )

    def _function_spec(self, logical_id: str) -> None:
        raw_props = self.props(logical_id)
        events = raw_props.pop("Events", None) or {}
        props = self.resolve(raw_props)
        found = self.physical(logical_id)
        role_arn = props.get("Role") or self.get_att(f"{logical_id}Role", "Arn")
        handler = str(props.get("Handler", "app.handler"))
        code = props.get("CodeUri", ".")
        if not isinstance(code, str):
            self.unsupported.append(f"{logical_id}: CodeUri {code!r} (only local folders run in the twin)")
            code = "."
        layers: list[Path] = []
        for layer in props.get("Layers") or []:
            located = next(
                (lid for lid in self.of_type("AWS::Serverless::LayerVersion") if self.physical(lid).ref == layer),
                None,
            )
            if located is None:
                self.unsupported.append(f"{logical_id}: layer {layer} is not in this template")
                continue
            content = self.resolve(self.props(located).get("ContentUri", "."))
            layers.append(self.root / str(content))
        environment = {k: _env_string(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()}
        invoke_config = props.get("EventInvokeConfig") or {}
        self.functions[logical_id] = FunctionSpec(
            logical_id=logical_id,
            name=found.ref,
            arn=found.attributes["Arn"],
            code_dir=self.root / code,
            handler=handler,
            runtime=str(props.get("Runtime", "python3.13")),
            timeout=int(props.get("Timeout", 3)),
            memory=int(props.get("MemorySize", 128)),
            environment=environment,
            layers=layers,
            role_arn=str(role_arn),
            role_name=str(role_arn).rsplit("/", 1)[-1],
            async_retries=int(invoke_config.get("MaximumRetryAttempts", 2)),
            on_failure=_on_failure(self.resolve(invoke_config.get("DestinationConfig"))),
            architectures=list(props.get("Architectures") or ["x86_64"]),
        )
        for event_name, event in events.items():
            self._function_event(logical_id, event_name, event)

    def _function_event(self, owner: str, event_name: str, event: Mapping[str, Any]) -> None:
        kind = event.get("Type")
        props = event.get("Properties") or {}
        event_id = f"{owner}{event_name}"
        spec = self.functions.get(owner)
        target = (
            TargetSpec("lambda", owner, spec.arn)
            if spec is not None
            else TargetSpec("statemachine", owner, self.state_machines[owner].arn)
        )
        if kind in ("EventBridgeRule", "CloudWatchEvent"):
            enabled = self.resolve(props.get("State", "ENABLED")) == "ENABLED" and props.get("Enabled", True)
            pattern = self.resolve(props.get("Pattern"))
            target.input = self._input(props)
            target.target_id = str((self.resolve(props.get("Target")) or {}).get("Id", f"{event_id}Target"))
            self.rules.append(
                RuleSpec(
                    event_id,
                    self._name(props, "RuleName") or self._generated(event_id),
                    pattern,
                    [target],
                    self._bus_name(props.get("EventBusName")),
                    bool(enabled),
                )
            )
        elif kind in ("Schedule", "ScheduleV2"):
            expression = props.get("Schedule") if kind == "Schedule" else props.get("ScheduleExpression")
            enabled = props.get("Enabled", True) and self.resolve(props.get("State", "ENABLED")) == "ENABLED"
            raw_input = self.resolve(props.get("Input"))
            if kind == "Schedule":  # an EventBridge scheduled rule: Input replaces the "Scheduled Event"
                target.input = self._input(props)
            self.schedules.append(
                ScheduleSpec(
                    event_id,
                    str(self.resolve(expression)),
                    target,
                    "rule" if kind == "Schedule" else "scheduler",
                    enabled=bool(enabled),
                    timezone=str(self.resolve(props.get("ScheduleExpressionTimezone", "UTC"))),
                    input=raw_input if raw_input is None or isinstance(raw_input, str) else json.dumps(raw_input),
                )
            )
        elif kind == "SNS":
            if props.get("SqsSubscription"):
                self._sns_via_queue(owner, event_id, props)
            else:
                self._subscription(
                    event_id,
                    props["Topic"],
                    "lambda",
                    target.arn,
                    filter_policy=props.get("FilterPolicy"),
                    filter_scope=props.get("FilterPolicyScope"),
                )
        elif kind == "SQS":
            self._event_source(event_id, owner, props["Queue"], props)
        elif kind == "Api" and spec is not None:
            api = (
                self.resolve(props.get("RestApiId")) if "RestApiId" in props else self.physical("ServerlessRestApi").ref
            )
            api_logical = next((a.logical_id for a in self.apis.values() if a.api_id == api), "ServerlessRestApi")
            auth = ((props.get("Auth") or {}).get("Authorizer")) or self.apis.get(api_logical, _NO_API).default_auth
            self.routes.append(
                RouteSpec(
                    str(self.resolve(props["Method"])).upper(),
                    str(self.resolve(props["Path"])),
                    owner,
                    api_logical,
                    str(auth),
                )
            )
        else:
            self.unsupported.append(f"{owner}.{event_name}: event type {kind} is not wired by the twin")

    def _sns_via_queue(self, owner: str, event_id: str, props: Mapping[str, Any]) -> None:
        """SNS event with SqsSubscription: SAM adds a queue subscribed to the topic, polled by the function."""
        queue_id = f"{event_id}Queue"
        self.resources[queue_id] = {"Type": "AWS::SQS::Queue", "Properties": {}}
        self.active.add(queue_id)
        self._queue(queue_id)
        queue = self.queues[queue_id]
        self._arn_index[queue.arn] = ("sqs", queue_id)
        self._subscription(
            f"{event_id}Subscription",
            props["Topic"],
            "sqs",
            queue.arn,
            filter_policy=props.get("FilterPolicy"),
            filter_scope=props.get("FilterPolicyScope"),
        )
        sqs = props.get("SqsSubscription")
        batch = sqs.get("BatchSize", 10) if isinstance(sqs, dict) else 10
        self._event_source(f"{event_id}EventSource", owner, queue.arn, {"BatchSize": batch})

    def _event_source(self, logical_id: str, function: str, queue: Any, props: Mapping[str, Any]) -> None:
        queue_arn = str(self.resolve(queue))
        located = self.by_arn(queue_arn)
        if located is None or located[0] != "sqs":
            self.unsupported.append(f"{logical_id}: event source {queue_arn} is not an SQS queue of this template")
            return
        responses = self.resolve(props.get("FunctionResponseTypes")) or []
        self.event_sources.append(
            EventSourceSpec(
                logical_id,
                function,
                located[1],
                queue_arn,
                batch_size=int(self.resolve(props.get("BatchSize", 10))),
                window=float(self.resolve(props.get("MaximumBatchingWindowInSeconds", 0))),
                report_failures="ReportBatchItemFailures" in responses,
                enabled=bool(self.resolve(props.get("Enabled", True))),
            )
        )

    def _state_machine(self, logical_id: str) -> None:
        raw_props = self.props(logical_id)
        events = raw_props.pop("Events", None) or {}
        props = self.resolve(raw_props)
        found = self.physical(logical_id)
        definition_file: Path | None = None
        if "DefinitionUri" in props:
            uri = props["DefinitionUri"]
            if not isinstance(uri, str):
                raise TemplateError(f"{logical_id}: DefinitionUri must be a local file for the twin")
            definition_file = self.root / uri
            text = definition_file.read_text()
            document = json.loads(text) if definition_file.suffix == ".json" else load_yaml(text)
        elif "DefinitionString" in props:
            document = json.loads(props["DefinitionString"])
        elif "Definition" in props:
            document = props["Definition"]
        else:
            raise TemplateError(f"{logical_id}: no definition")
        substitutions = {k: str(v) for k, v in (props.get("DefinitionSubstitutions") or {}).items()}
        definition = self._substitute(logical_id, json.dumps(document, indent=2), substitutions)
        role_arn = props.get("Role") or props.get("RoleArn") or self.get_att(f"{logical_id}Role", "Arn")
        self.state_machines[logical_id] = StateMachineSpec(
            logical_id,
            found.attributes["Name"],
            found.ref,
            definition,
            str(role_arn),
            str(role_arn).rsplit("/", 1)[-1],
            str(props.get("Type", "STANDARD")),
            definition_file,
        )
        for event_name, event in events.items():
            self._function_event(logical_id, event_name, event)

    def _substitute(self, logical_id: str, text: str, substitutions: Mapping[str, str]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in substitutions:
                return json.dumps(substitutions[name])[1:-1]
            if name in self.pseudo:
                return str(self.pseudo[name])
            raise TemplateError(f"{logical_id}: ${{{name}}} has no DefinitionSubstitutions entry")

        return re.sub(r"\$\{([A-Za-z0-9_:.]+)\}", replace, text)

    def _events_rule(self, logical_id: str) -> None:
        props = self.props(logical_id)
        found = self.physical(logical_id)
        name = str(found.ref).split("|")[-1]
        enabled = str(self.resolve(props.get("State", "ENABLED"))) == "ENABLED"
        targets = [
            self.target(t.get("Arn"), target_id=str(self.resolve(t.get("Id", ""))), input_config=self._input(t))
            for t in props.get("Targets") or []
        ]
        if props.get("ScheduleExpression"):
            for target in targets:
                self.schedules.append(
                    ScheduleSpec(
                        logical_id, str(self.resolve(props["ScheduleExpression"])), target, "rule", enabled=enabled
                    )
                )
        pattern = self.resolve(props.get("EventPattern"))
        if pattern is not None:
            self.rules.append(
                RuleSpec(
                    logical_id,
                    name,
                    json.loads(pattern) if isinstance(pattern, str) else pattern,
                    targets,
                    self._bus_name(props.get("EventBusName")),
                    enabled,
                )
            )

    # -------------------------------------------------------------- convenience
    def function(self, logical_id: str) -> FunctionSpec:
        try:
            return self.functions[logical_id]
        except KeyError:
            raise KeyError(f"no function {logical_id} in {self.path.name}; have {sorted(self.functions)}") from None

    def state_machine(self, logical_id: str) -> StateMachineSpec:
        try:
            return self.state_machines[logical_id]
        except KeyError:
            raise KeyError(
                f"no state machine {logical_id} in {self.path.name}; have {sorted(self.state_machines)}"
            ) from None


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


_NO_VALUE: Any = _NoValue()
_NO_API = ApiSpec("", "", "", "", "NONE")


def _env_string(value: Any) -> str:
    """Lambda environment values are strings (CloudFormation turns true/1 into "true"/"1")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _merge_globals(defaults: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = copy.deepcopy(dict(defaults))
    for key, value in props.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = _merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + value
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    return (len(value) == 1 and next(iter(value)) in ("Ref", "Condition")) or next(iter(value), "").startswith("Fn::")


def _on_failure(destinations: Any) -> str | None:
    """SAM's EventInvokeConfig DestinationConfig: the OnFailure destination's ARN, if any."""
    target = (destinations or {}).get("OnFailure") or {} if isinstance(destinations, dict) else {}
    destination = target.get("Destination")
    return str(destination) if destination else None
