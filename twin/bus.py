"""The twin's EventBridge: one bus interface for every producer, full pattern matching, async delivery.

Producers (the SageMaker simulator, the CloudWatch model, the product's own PutEvents calls, tests) call
`EventSink.put(...)`. The `Bus` builds the envelope exactly as EventBridge does, applies the configured
faults (loss, duplicates, delays, reordering), matches every rule wired from template.yaml and delivers to
each target *after* `put` returns, on the virtual clock's thread and in virtual-time order, as AWS does
(delivery is asynchronous and at-least-once). Every put and delivery is logged for tests and timelines.

We match patterns ourselves rather than reuse `moto.events.models.EventPattern`: moto treats arrays of
objects as opaque leaves (so `{"detail": {"items": {"name": [...]}}}` never matches) and accepts
`true` for a numeric filter. The semantics here follow the EventBridge user guide: every field of the
pattern must match; arrays in the event match if any element matches; `$or`, exact values (null and
"" included), prefix/suffix (optionally equals-ignore-case), equals-ignore-case, wildcard, anything-but
(values, or prefix/suffix/equals-ignore-case/wildcard), numeric ranges, exists and cidr.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from twin.clock import VirtualClock
    from twin.faults import Faults

ACCOUNT = "123456789012"
REGION = "us-east-1"
DEFAULT_BUS = "default"


class EventSink(Protocol):
    """What every producer of EventBridge events talks to (the twin's `Bus`, or `ListSink` in unit tests).

    `put` returns the event id at once; delivery to rules happens later, on the virtual clock.
    `time` overrides the envelope's time (default: the virtual now).
    """

    def put(
        self,
        *,
        source: str,
        detail_type: str,
        detail: dict[str, Any],
        resources: list[str] | None = None,
        time: datetime | None = None,
    ) -> str: ...


def format_event_time(value: datetime) -> str:
    """EventBridge's envelope time: UTC, second precision, `Z` suffix."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    *,
    source: str,
    detail_type: str,
    detail: Mapping[str, Any],
    resources: Sequence[str] | None,
    time: datetime,
    account: str = ACCOUNT,
    region: str = REGION,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The event exactly as EventBridge hands it to targets (field order as AWS prints it)."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": format_event_time(time),
        "region": region,
        "resources": list(resources or []),
        "detail": copy.deepcopy(dict(detail)),
    }


class ListSink:
    """An `EventSink` that only records envelopes: for unit tests of event producers."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def put(
        self,
        *,
        source: str,
        detail_type: str,
        detail: dict[str, Any],
        resources: list[str] | None = None,
        time: datetime | None = None,
    ) -> str:
        event = envelope(
            source=source, detail_type=detail_type, detail=detail, resources=resources, time=time or self._now()
        )
        with self._lock:
            self.events.append(event)
        return str(event["id"])

    def of_type(self, detail_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["detail-type"] == detail_type]


# ---------------------------------------------------------------------- pattern matching
class InvalidEventPattern(ValueError):
    """The pattern would be refused by PutRule (EventBridge's InvalidEventPatternException)."""


_OPERATORS = {
    "prefix",
    "suffix",
    "equals-ignore-case",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
    "wildcard",
}
_NUMERIC_OPS = {"<", "<=", "=", ">=", ">"}
_MISSING = object()


def validate_pattern(pattern: Any, path: str = "") -> None:
    """Refuse what EventBridge refuses: non-object nodes, non-array leaves, unknown operators."""
    if not isinstance(pattern, Mapping):
        raise InvalidEventPattern(f"{path or 'pattern'}: must be an object")
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                raise InvalidEventPattern(f"{where}: $or needs an array of at least two patterns")
            for sub in value:
                validate_pattern(sub, path)
        elif isinstance(value, Mapping):
            validate_pattern(value, where)
        elif isinstance(value, list):
            if not value:
                raise InvalidEventPattern(f"{where}: empty arrays are not allowed")
            for matcher in value:
                _validate_matcher(matcher, where)
        else:
            raise InvalidEventPattern(f"{where}: match values must be inside an array")


def _validate_matcher(matcher: Any, where: str) -> None:
    if matcher is None or isinstance(matcher, str | int | float | bool):
        return
    if not isinstance(matcher, Mapping) or len(matcher) != 1:
        raise InvalidEventPattern(f"{where}: {matcher!r} is neither a value nor one operator")
    ((name, arg),) = matcher.items()
    if name not in _OPERATORS:
        raise InvalidEventPattern(f"{where}: unknown operator {name!r}")
    if name == "numeric":
        if not isinstance(arg, list) or not arg or len(arg) % 2 or len(arg) > 4:
            raise InvalidEventPattern(f"{where}: numeric needs 1 or 2 (operator, number) pairs")
        for op, number in zip(arg[::2], arg[1::2], strict=True):
            if op not in _NUMERIC_OPS or isinstance(number, bool) or not isinstance(number, int | float):
                raise InvalidEventPattern(f"{where}: bad numeric comparison {op!r} {number!r}")
    elif name == "exists" and not isinstance(arg, bool):
        raise InvalidEventPattern(f"{where}: exists takes true or false")


def _flatten(node: Any, prefix: str, out: dict[str, list[Any]]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(node, list):
        for item in node:
            _flatten(item, prefix, out)
    else:
        out.setdefault(prefix, []).append(node)


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """True if `event` (a full envelope) matches the EventBridge `pattern`."""
    leaves: dict[str, list[Any]] = {}
    _flatten(event, "", leaves)
    return _match_node(pattern, leaves, "")


def _match_node(pattern: Mapping[str, Any], leaves: dict[str, list[Any]], prefix: str) -> bool:
    for key, value in pattern.items():
        if key == "$or":
            if not any(_match_node(sub, leaves, prefix) for sub in value):
                return False
            continue
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            if not _match_node(value, leaves, path):
                return False
        elif not _match_leaf(value, leaves.get(path)):
            return False
    return True


def _match_leaf(matchers: list[Any], values: list[Any] | None) -> bool:
    for matcher in matchers:
        if isinstance(matcher, Mapping) and "exists" in matcher:
            if bool(matcher["exists"]) == (values is not None):
                return True
            continue
        if values is None:
            continue
        if any(_match_value(matcher, v) for v in values):
            return True
    return False


def _same(expected: Any, value: Any) -> bool:
    """Exact match as EventBridge does it: a string never equals a number, true never equals 1."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(expected, bool) and isinstance(value, bool) and expected == value
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return float(expected) == float(value)
    return type(expected) is type(value) and bool(expected == value)


def _match_value(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        return _same(matcher, value)
    ((name, arg),) = matcher.items()
    if name == "prefix":
        return _string_op(arg, value, lambda v, a: v.startswith(a))
    if name == "suffix":
        return _string_op(arg, value, lambda v, a: v.endswith(a))
    if name == "equals-ignore-case":
        return isinstance(value, str) and any(value.lower() == a.lower() for a in _as_list(arg))
    if name == "wildcard":
        return isinstance(value, str) and any(_wildcard(a, value) for a in _as_list(arg))
    if name == "numeric":
        return _numeric(arg, value)
    if name == "cidr":
        return _cidr(arg, value)
    if name == "anything-but":
        if isinstance(arg, Mapping):
            return isinstance(value, str) and not _match_value(arg, value)
        return not any(_same(a, value) for a in _as_list(arg))
    return False


def _as_list(arg: Any) -> list[Any]:
    return list(arg) if isinstance(arg, list) else [arg]


def _string_op(arg: Any, value: Any, test: Callable[[str, str], bool]) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(arg, Mapping) and "equals-ignore-case" in arg:
        return test(value.lower(), str(arg["equals-ignore-case"]).lower())
    return any(test(value, str(a)) for a in _as_list(arg))


def _wildcard(pattern: str, value: str) -> bool:
    regex = "".join(".*" if part == "*" else re.escape(part.replace("\\*", "*")) for part in _split_wildcard(pattern))
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _split_wildcard(pattern: str) -> Iterable[str]:
    """Split on unescaped `*`, keeping them as their own parts."""
    buffer = ""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*\\":
            buffer += pattern[i + 1] if pattern[i + 1] == "\\" else "\\*"
            i += 2
            continue
        if pattern[i] == "*":
            if buffer:
                yield buffer
            yield "*"
            buffer = ""
        else:
            buffer += pattern[i]
        i += 1
    if buffer:
        yield buffer


def _numeric(arg: list[Any], value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    checks = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        "=": lambda a, b: a == b,
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
    }
    return all(checks[op](value, number) for op, number in zip(arg[::2], arg[1::2], strict=True))


def _cidr(arg: Any, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(str(arg), strict=False)
    except ValueError:
        return False


# ---------------------------------------------------------------------- input transformation
def json_path(document: Any, path: str) -> Any:
    """The JSONPath subset EventBridge's InputPath / InputPathsMap accept: `$`, `$.a.b`, `$.a[0]`, `$['a']`."""
    if not path.startswith("$"):
        raise ValueError(f"not a JSONPath: {path}")
    node = document
    for token in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']+)'\]", path[1:]):
        name, index, quoted = token
        if index:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            key = name or quoted
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


@dataclass(frozen=True)
class InputConfig:
    """A target's Input / InputPath / InputTransformer (at most one applies, as in EventBridge)."""

    input: str | None = None
    input_path: str | None = None
    paths_map: Mapping[str, str] | None = None
    template: str | None = None

    def render(self, event: Mapping[str, Any]) -> Any:
        if self.input is not None:
            return json.loads(self.input)
        if self.input_path is not None:
            return json_path(event, self.input_path)
        if self.template is not None:
            return _transform(self.template, self.paths_map or {}, event)
        return dict(event)


def _transform(template: str, paths: Mapping[str, str], event: Mapping[str, Any]) -> Any:
    """InputTransformer: `<name>` placeholders; inside a JSON string a value goes in as text, outside as JSON."""
    values = {name: json_path(event, path) for name, path in paths.items()}
    values.update({"aws.events.event.json": dict(event), "aws.events.event.ingestion-time": event.get("time")})
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(template):
        char = template[i]
        if char == "\\" and in_string:
            out.append(template[i : i + 2])
            i += 2
            continue
        if char == '"':
            in_string = not in_string
        placeholder = re.match(r"<([A-Za-z0-9_.\-]+)>", template[i:]) if char == "<" else None
        if placeholder is not None and placeholder.group(1) in values:
            value = values[placeholder.group(1)]
            if in_string:
                text = value if isinstance(value, str) else json.dumps(value)
                out.append(json.dumps(text)[1:-1])
            else:
                out.append(json.dumps(value))
            i += placeholder.end()
            continue
        out.append(char)
        i += 1
    rendered = "".join(out)
    try:
        return json.loads(rendered)
    except json.JSONDecodeError:
        return rendered  # a plain-text template is delivered as a string


# ---------------------------------------------------------------------- rules, targets, the log
class Target(Protocol):
    """Where a matched event goes; `deliver` runs on the clock thread and may raise (logged)."""

    @property
    def name(self) -> str: ...

    def deliver(self, payload: Any, event: Mapping[str, Any]) -> None: ...


@dataclass
class CallbackTarget:
    """A Python callable as a target: for tests and for the twin's own listeners (timelines)."""

    name: str
    fn: Callable[[Any], None]

    def deliver(self, payload: Any, event: Mapping[str, Any]) -> None:
        self.fn(payload)


@dataclass
class RuleTarget:
    target: Target
    input: InputConfig = field(default_factory=InputConfig)
    target_id: str = ""


@dataclass
class Rule:
    """An EventBridge rule as wired from template.yaml (or added by a test)."""

    name: str
    pattern: Mapping[str, Any]
    targets: list[RuleTarget] = field(default_factory=list)
    bus_name: str = DEFAULT_BUS
    enabled: bool = True
    logical_id: str = ""

    def __post_init__(self) -> None:
        validate_pattern(self.pattern)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self.enabled and matches(self.pattern, event)


RecordKind = Literal["put", "lost", "duplicated", "delayed", "matched", "delivered", "failed", "unmatched"]


@dataclass(frozen=True)
class BusRecord:
    """One line of the bus's log: virtual time, what happened, to which event, where."""

    at: float
    kind: RecordKind
    event_id: str
    source: str
    detail_type: str
    rule: str = ""
    target: str = ""
    note: str = ""


class Bus:
    """The EventBridge of the twin (default bus plus any custom buses from the template)."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        faults: Faults | None = None,
        latency: float = 0.5,
        account: str = ACCOUNT,
        region: str = REGION,
    ) -> None:
        self.clock = clock
        self.faults = faults
        self.latency = latency
        """Virtual seconds between `put` and delivery (EventBridge's typical latency is about half a second)."""
        self.account = account
        self.region = region
        self.rules: list[Rule] = []
        self.log: list[BusRecord] = []
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    # -------------------------------------------------------------- wiring
    def add_rule(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if name in (rule.name, rule.logical_id):
                return rule
        raise KeyError(name)

    def subscribe(self, pattern: Mapping[str, Any], fn: Callable[[Any], None], name: str = "listener") -> Rule:
        """Deliver matching events to a Python callable (on the clock thread)."""
        return self.add_rule(Rule(name=name, pattern=pattern, targets=[RuleTarget(CallbackTarget(name, fn))]))

    # -------------------------------------------------------------- producing
    def put(
        self,
        *,
        source: str,
        detail_type: str,
        detail: dict[str, Any],
        resources: list[str] | None = None,
        time: datetime | None = None,
        bus_name: str = DEFAULT_BUS,
    ) -> str:
        event = envelope(
            source=source,
            detail_type=detail_type,
            detail=detail,
            resources=resources,
            time=time or self.clock.utcnow(),
            account=self.account,
            region=self.region,
        )
        return self.put_event(event, bus_name=bus_name)

    def put_event(self, event: dict[str, Any], *, bus_name: str = DEFAULT_BUS) -> str:
        """Accept a ready envelope (e.g. from PutEvents) and schedule its deliveries."""
        with self._lock:
            self.events.append(event)
        self._record("put", event, note=bus_name if bus_name != DEFAULT_BUS else "")
        delays = self.faults.event_delays(event) if self.faults is not None else [0.0]
        if not delays:
            self._record("lost", event, note="fault: event lost")
            return str(event["id"])
        if len(delays) > 1:
            self._record("duplicated", event, note=f"fault: {len(delays)} copies")
        for extra in delays:
            if extra > 0:
                self._record("delayed", event, note=f"fault: +{extra:g}s")
            self._schedule(copy.deepcopy(event), bus_name, self.latency + extra)
        return str(event["id"])

    def _schedule(self, event: dict[str, Any], bus_name: str, delay: float) -> None:
        self.clock.call_later(delay, lambda: self._route(event, bus_name), name=f"deliver {event['detail-type']}")

    # -------------------------------------------------------------- delivering
    def _route(self, event: dict[str, Any], bus_name: str) -> None:
        with self._lock:
            rules = [r for r in self.rules if r.bus_name == bus_name]
        matched = False
        for rule in rules:
            if not rule.matches(event):
                continue
            matched = True
            self._record("matched", event, rule=rule.name)
            for rule_target in rule.targets:
                target_name = rule_target.target.name
                try:
                    payload = rule_target.input.render(event)
                    rule_target.target.deliver(payload, event)
                except Exception as error:  # a failing target must not stop the others
                    self._record("failed", event, rule=rule.name, target=target_name, note=repr(error))
                else:
                    self._record("delivered", event, rule=rule.name, target=target_name)
        if not matched:
            self._record("unmatched", event)

    def _record(self, kind: RecordKind, event: Mapping[str, Any], **extra: str) -> None:
        record = BusRecord(
            at=self.clock.now(),
            kind=kind,
            event_id=str(event["id"]),
            source=str(event["source"]),
            detail_type=str(event["detail-type"]),
            **extra,
        )
        with self._lock:
            self.log.append(record)

    # -------------------------------------------------------------- reading the log
    def records(self, kind: RecordKind | None = None, **where: str) -> list[BusRecord]:
        with self._lock:
            found = list(self.log)
        if kind is not None:
            found = [r for r in found if r.kind == kind]
        for key, value in where.items():
            found = [r for r in found if getattr(r, key) == value]
        return found

    def deliveries(self, target: str | None = None) -> list[BusRecord]:
        return self.records("delivered", **({"target": target} if target else {}))
