"""Shared state and plumbing of the SageMaker simulator (the public class lives in `twin/sagemaker.py`).

Everything the simulator remembers hangs off moto's backend objects (a `twin` attribute on moto's
FakeEndpoint, dicts in the backend's `__dict__`), so moto's reset or a new `mock_aws` wipes it like the rest
of moto's state; timers that outlive their backend see they are stale and do nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StringShape, StructureShape
from botocore.validate import ParamValidator
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.exceptions import ServiceException
from moto.s3.models import s3_backends
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend, sagemaker_backends
from moto.sns.models import sns_backends
from moto.utilities.utils import get_partition

from inferops import catalog
from inferops.errors import InvalidInput
from twin.bus import EventSink
from twin.clock import Timer, VirtualClock

SOURCE = "aws.sagemaker"
ENDPOINT_STATE_CHANGE = "SageMaker Endpoint State Change"
DEPLOYMENT_STATE_CHANGE = "SageMaker Endpoint Deployment State Change"

# Virtual-time durations (seconds). Instance provisioning depends on the type: see `provision_seconds`.
ACTIVATE_SECONDS = 30  # a traffic shift
TERMINATE_SECONDS = 60  # terminating a fleet or a batch
DELETE_SECONDS = 60  # DeleteEndpoint: Deleting -> gone
SERVERLESS_SECONDS = 180
WEIGHTS_SECONDS = 30  # UpdateEndpointWeightsAndCapacities, weights only
CAPACITY_SECONDS = 60  # ... with an instance-count change
ALARM_POLL_SECONDS = 15  # how often rollback alarms are read during a bake
IC_COPY_SECONDS = 90  # loading one batch of copies (CPU); accelerator copies take IC_COPY_ACCEL_SECONDS
IC_COPY_ACCEL_SECONDS = 240
IC_UNLOAD_SECONDS = 30
IC_SCALE_IN_SECONDS = 60  # managed instance scale-in without a ScaleInPolicy
IC_DELETE_SECONDS = 60
EXPERIMENT_CREATE_SECONDS = 30
ASYNC_PROCESSING_SECONDS = 20
ASYNC_DEFAULT_CONCURRENCY = 4  # per instance, when ClientConfig leaves it to SageMaker

PING_FAILURE = (
    "The primary container for production variant {variant} did not pass the ping health check. "
    "Please check CloudWatch logs for this endpoint."
)
# Failure body of async notifications: AWS publishes no sample; this is the text public consumers match
# (awslabs/osml-model-runner, src/aws/osml/model_runner/database/tile_request_table.py).
ASYNC_MODEL_ERROR = (
    "ClientError: Received server error (500) from model. "
    "See the SageMaker Endpoint logs in your account for more information."
)


class ServiceError(ServiceException):
    """A SageMaker error with any code (ValidationException, ResourceNotFound, ResourceInUse...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class RuntimeValidationError(ServiceException):
    """sagemaker-runtime names its validation error `ValidationError` (400)."""

    code = "ValidationError"


class Failed(Exception):
    """Raised inside a deployment's steps: the update fails and rolls back with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------- validation
@functools.cache
def service_model(name: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(name)


def _member_path(path: str, name: str) -> str:
    segment = name[:1].lower() + name[1:]
    return f"{path}.{segment}" if path else segment


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # Java-only syntax such as \p{L}: AWS checks it, we cannot
        return None


def _is_instance_type_enum(shape: StringShape) -> bool:
    values = shape.enum
    return bool(values) and all(str(v).startswith("ml.") for v in values)


def _constraint_errors(value: Any, shape: Shape, path: str) -> Iterator[str]:
    """What AWS's server-side model validation reports (`Value ... at 'a.b' failed to satisfy ...`)."""
    meta = shape.metadata
    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return
        for name in shape.required_members:
            if value.get(name) is None:
                where = _member_path(path, name)
                yield f"Value null at '{where}' failed to satisfy constraint: Member must not be null"
        for name, member in shape.members.items():
            if value.get(name) is not None:
                yield from _constraint_errors(value[name], member, _member_path(path, name))
    elif isinstance(shape, ListShape):
        if not isinstance(value, list):
            return
        yield from _length_errors(value, len(value), meta, path)
        for index, item in enumerate(value, start=1):
            yield from _constraint_errors(item, shape.member, f"{path}.{index}.member")
    elif isinstance(shape, MapShape):
        if isinstance(value, dict):
            yield from _length_errors(value, len(value), meta, path)
            for key, item in value.items():
                yield from _constraint_errors(item, shape.value, f"{path}.{key}")
    elif isinstance(shape, StringShape) and isinstance(value, str):
        if shape.enum and not _is_instance_type_enum(shape) and value not in shape.enum:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
            )
        yield from _length_errors(value, len(value), meta, path)
        pattern = meta.get("pattern")
        compiled = _compiled(pattern) if isinstance(pattern, str) else None
        if compiled is not None and compiled.fullmatch(value) is None:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {pattern}"
            )
    elif shape.type_name in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if "min" in meta and value < meta["min"]:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have value greater than or equal to {meta['min']}"
            )
        if "max" in meta and value > meta["max"]:
            yield (
                f"Value '{value}' at '{path}' failed to satisfy constraint: "
                f"Member must have value less than or equal to {meta['max']}"
            )


def _length_errors(value: Any, length: int, meta: dict[str, Any], path: str) -> Iterator[str]:
    if "min" in meta and length < meta["min"]:
        yield (
            f"Value '{value}' at '{path}' failed to satisfy constraint: "
            f"Member must have length greater than or equal to {meta['min']}"
        )
    if "max" in meta and length > meta["max"]:
        yield (
            f"Value '{value}' at '{path}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {meta['max']}"
        )


def validate_input(
    service: str, operation: str, params: dict[str, Any], error: Callable[[str], Exception] = ValidationError
) -> None:
    """Reject input the way AWS does, from botocore's model: types, required members, enums, ranges, patterns."""
    shape = service_model(service).operation_model(operation).input_shape
    if shape is None:
        return
    errors = list(_constraint_errors(params, shape, ""))
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise error(f"{len(errors)} validation {noun} detected: {'; '.join(errors)}")
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise error(report.generate_report().replace("Parameter validation failed:\n", "").replace("\n", "; "))


def validate_output(service: str, operation: str, result: dict[str, Any]) -> None:
    """A simulator bug must not reach a client as a silently half-serialized response."""
    shape = service_model(service).operation_model(operation).output_shape
    if shape is None:
        return
    report = ParamValidator().validate(result, shape)
    if report.has_errors():
        raise RuntimeError(f"simulator produced an invalid {operation} response: {report.generate_report()}")


# ---------------------------------------------------------------------------------------------- helpers
def dt(when: float) -> datetime:
    return datetime.fromtimestamp(when, tz=UTC)


def epoch_ms(when: float) -> int:
    """Milliseconds, truncated like the API's timestamps (so events and DescribeEndpoint agree)."""
    return math.floor(round(when * 1000, 3))


def iso_ms(when: float) -> str:
    """`2022-01-25T22:46:00.608Z`, the async notification time format."""
    return dt(when).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt(when).microsecond // 1000:03d}Z"


def upper_snake(status: str) -> str:
    """`InService` -> `IN_SERVICE`: EventBridge events spell statuses unlike the API."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", status).upper()


def number(value: float) -> int | float:
    """An integral weight as a JSON integer, as in the deployment event sample."""
    return int(value) if float(value).is_integer() else value


def resolved_image(image: str) -> str:
    digest = hashlib.sha256(image.encode()).hexdigest()
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: name.rfind(":")]
    return f"{name}@sha256:{digest}"


def arn(account: str, region: str, kind: str, name: str) -> str:
    return f"arn:{get_partition(region)}:sagemaker:{region}:{account}:{kind}/{name}"


def provision_seconds(instance_type: str | None) -> int:
    """Deterministic launch time: CPU 4-6 min by size, GPU/Inferentia/Trainium or very large 8-12 min."""
    if not instance_type:
        return SERVERLESS_SECONDS
    spec = catalog.get(instance_type)
    if spec.accelerator.kind != "none" or spec.memory_gib >= 256:
        weight = max(spec.accelerator.count, spec.memory_gib / 128) / 8
        return 480 + round(240 * min(1.0, weight))
    return 240 + round(120 * min(1.0, spec.vcpus / 96))


def check_instance_type(value: str, path: str) -> None:
    try:
        catalog.get(value)
    except InvalidInput:
        names = ", ".join(t.name for t in catalog.all_types())
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{path}' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{names}]"
        ) from None


def capacity(size: dict[str, Any] | None, fleet: int) -> int:
    """Instances a CapacitySize stands for on a fleet of `fleet` instances (at least one)."""
    if not size:
        return fleet
    if size["Type"] == "INSTANCE_COUNT":
        return max(1, min(fleet, int(size["Value"])))
    return max(1, min(fleet, math.floor(fleet * int(size["Value"]) / 100)))


def percent(size: dict[str, Any], fleet: int) -> float:
    if size["Type"] == "INSTANCE_COUNT":
        return 100.0 * int(size["Value"]) / max(1, fleet)
    return float(size["Value"])


# ---------------------------------------------------------------------------------------------- state
@dataclass
class Wait:
    """What a deployment step yields: let `seconds` pass; a bake watches the rollback alarms meanwhile."""

    seconds: float
    bake: bool = False


@dataclass
class Fleet:
    """One variant's instances running one endpoint config (blue = serving, green = being deployed)."""

    variant: str
    config_name: str
    spec: dict[str, Any]
    desired_count: int
    desired_weight: float
    current_weight: float
    provisioned: int = 0
    active: int = 0  # instances taking traffic
    traffic: float = 0.0  # share of this variant's traffic
    traffic_before: float = 1.0  # its share when a deployment started (restored by a rollback)
    ready_at: float = 0.0  # inference components: when instances being launched for copies are up
    statuses: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def instance_type(self) -> str | None:
        value = self.spec.get("InstanceType")
        return str(value) if value else None

    @property
    def model_name(self) -> str | None:
        value = self.spec.get("ModelName")
        return str(value) if value else None

    @property
    def serverless(self) -> bool:
        return bool(self.spec.get("ServerlessConfig"))

    def set_status(self, status: str, message: str, when: float) -> None:
        self.statuses = [{"Status": status, "StatusMessage": message, "StartTime": dt(when)}]

    def serve_all(self) -> None:
        self.active, self.traffic, self.statuses = self.provisioned, 1.0, []


@dataclass
class Deployment:
    """An UpdateEndpoint (or an internal update) in progress."""

    kind: str  # "blue_green" | "rolling"
    new_config: str
    greens: list[Fleet]
    blues: list[Fleet]
    shadows: list[Fleet]
    config: dict[str, Any] | None  # the DeploymentConfig acted on
    alarms: list[str]
    started: float
    deadline: float | None
    events: bool  # guardrail deployments emit "Deployment State Change"; exclusions don't
    guarded: bool  # bakes and staged traffic (False: SageMaker's default or an excluded endpoint)
    retain_capture: bool
    steps: Iterator[Wait] = field(default_factory=lambda: iter(()))
    cursor: float = 0.0
    timer: Timer | None = None
    rolling_back: bool = False
    reason: str | None = None
    on_done: Callable[[bool, float], None] | None = None  # internal callers (experiments) learn the outcome
    blue_total: int = 0  # rolling: instances the old fleet had, to restore on rollback


@dataclass
class AsyncRequest:
    inference_id: str
    input_location: str
    content_type: str | None
    accept: str | None
    received: float
    output_location: str
    failure_location: str | None


@dataclass
class EndpointState:
    name: str
    arn: str
    account: str
    region: str
    fake: FakeEndpoint
    backend: SageMakerModelBackend
    config_name: str
    status: str
    created: float
    modified: float
    fleets: list[Fleet]
    shadows: list[Fleet]
    async_config: dict[str, Any] | None
    data_capture: dict[str, Any] | None
    explainer: dict[str, Any] | None
    failure_reason: str | None = None
    deployment: Deployment | None = None
    last_deployment_config: dict[str, Any] | None = None
    generation: int = 0  # bumped to invalidate pending timers (weights updates, deletion)
    queue: deque[AsyncRequest] = field(default_factory=deque)
    in_flight: int = 0

    @property
    def tags(self) -> list[dict[str, str]]:
        tags: list[dict[str, str]] = self.fake.tags
        return tags

    def variant_names(self) -> list[str]:
        names: list[str] = []
        for fleet in self.fleets:
            if fleet.variant not in names:
                names.append(fleet.variant)
        return names

    def variant_fleets(self, variant: str) -> list[Fleet]:
        return [f for f in self.fleets if f.variant == variant]


@dataclass
class ComponentState:
    name: str
    arn: str
    endpoint_name: str
    variant_name: str
    spec: dict[str, Any]
    desired_copies: int
    current_copies: int
    status: str
    created: float
    modified: float
    tags: list[dict[str, str]]
    failure_reason: str | None = None
    generation: int = 0
    last_deployment_config: dict[str, Any] | None = None


@dataclass
class ExperimentState:
    name: str
    arn: str
    endpoint_name: str
    params: dict[str, Any]
    status: str
    created: float
    modified: float
    start: float
    end: float
    variant_status: dict[str, str]
    status_reason: str | None = None
    completion: float | None = None
    generation: int = 0
    original_config: str | None = None
    stop_actions: dict[str, str] | None = None
    desired_state: str = "Completed"


# ---------------------------------------------------------------------------------------------- base class
class SimulatorBase:
    """State, locking, timers, events and moto access shared by the simulator's parts."""

    def __init__(
        self,
        clock: VirtualClock,
        sink: EventSink,
        *,
        faults: Any | None = None,
        account: str = "123456789012",
        region: str = "us-east-1",
    ) -> None:
        self.clock = clock
        self.sink = sink
        self._patches: list[tuple[object, str, object]] = []  # (owner, attribute, original) to restore
        self.faults = faults
        self.account = account
        self.region = region
        self._lock = threading.RLock()
        self._emit_lock = threading.RLock()
        self._tls = threading.local()
        self._outbox: list[Callable[[], None]] = []
        self._rng = random.Random(20260105)
        self._unhealthy: set[str] = set()
        self._rollback_fails: set[str] = set()

    # ------------------------------------------------------------------ locking and side effects
    @contextmanager
    def guard(self) -> Iterator[None]:
        """Hold the simulator lock; events and notifications queued meanwhile go out after it is released."""
        depth = getattr(self._tls, "depth", 0)
        self._tls.depth = depth + 1
        try:
            with self._lock:
                yield
        finally:
            self._tls.depth = depth
            if depth == 0:
                self._flush()

    def _flush(self) -> None:
        with self._emit_lock:
            while True:
                with self._lock:
                    if not self._outbox:
                        return
                    pending, self._outbox = self._outbox, []
                for action in pending:
                    action()

    def later(self, action: Callable[[], None]) -> None:
        """Run `action` once the lock is released (sink deliveries, SNS, S3)."""
        self._outbox.append(action)

    def at(self, when: float, action: Callable[[float], None], name: str) -> Timer:
        """Call `action(when)` at virtual time `when`; it receives its scheduled time so chains do not drift."""

        def fire() -> None:
            with self.guard():
                action(when)

        return self.clock.call_at(when, fire, name)

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # ------------------------------------------------------------------ events
    def emit(self, detail_type: str, detail: dict[str, Any], resource: str, when: float) -> None:
        time = dt(when)

        def put() -> None:
            self.sink.put(source=SOURCE, detail_type=detail_type, detail=detail, resources=[resource], time=time)

        self.later(put)

    @staticmethod
    def tag_map(tags: list[dict[str, str]]) -> dict[str, str]:
        return {t["Key"]: t.get("Value", "") for t in tags}

    def endpoint_event(self, ep: EndpointState, when: float) -> None:
        """`SageMaker Endpoint State Change`, shaped as the published sample.

        Source: https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html
        ("Endpoint state change"): status in UPPER_SNAKE (`IN_SERVICE`), times in epoch milliseconds as
        numbers with a fraction, variants as {DesiredWeight, DesiredInstanceCount} floats, Tags a map.
        """
        variants = []
        for name in ep.variant_names():
            fleets = ep.variant_fleets(name)
            variants.append(
                {
                    "DesiredWeight": float(fleets[0].desired_weight),
                    "DesiredInstanceCount": float(sum(f.desired_count for f in fleets)),
                }
            )
        detail: dict[str, Any] = {
            "EndpointName": ep.name,
            "EndpointArn": ep.arn,
            "EndpointConfigName": ep.config_name,
            "ProductionVariants": variants,
            "EndpointStatus": upper_snake(ep.status),
            "CreationTime": float(epoch_ms(ep.created)),
            "LastModifiedTime": float(epoch_ms(ep.modified)),
            "Tags": self.tag_map(ep.tags),
        }
        if ep.failure_reason and ep.status in ("Failed", "UpdateRollbackFailed"):
            detail["FailureReason"] = ep.failure_reason
        self.emit(ENDPOINT_STATE_CHANGE, detail, ep.arn, when)

    def deployment_event(self, ep: EndpointState, when: float) -> None:
        """`SageMaker Endpoint Deployment State Change`, shaped as the published samples.

        Source: https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html
        ("Endpoint deployment state change"): integer epoch-millisecond times, UPPER_SNAKE EndpointStatus,
        VariantStatus with the API's casing (`Baking`), PendingDeploymentSummary while a new fleet deploys.
        """
        variants = []
        for name in ep.variant_names():
            fleets = ep.variant_fleets(name)
            entry: dict[str, Any] = {
                "VariantName": name,
                "CurrentWeight": number(fleets[0].current_weight),
                "DesiredWeight": number(fleets[0].desired_weight),
                "CurrentInstanceCount": sum(f.provisioned for f in fleets),
                "DesiredInstanceCount": sum(f.desired_count for f in fleets),
            }
            statuses = [self._status_ms(s) for f in fleets for s in f.statuses]
            if statuses:
                entry["VariantStatus"] = statuses
            variants.append(entry)
        detail: dict[str, Any] = {
            "EndpointName": ep.name,
            "EndpointArn": ep.arn,
            "EndpointConfigName": ep.config_name,
            "ProductionVariants": variants,
            "EndpointStatus": upper_snake(ep.status),
            "CreationTime": epoch_ms(ep.created),
            "LastModifiedTime": epoch_ms(ep.modified),
            "Tags": self.tag_map(ep.tags),
        }
        dep = ep.deployment
        if dep is not None:
            detail["PendingDeploymentSummary"] = {
                "EndpointConfigName": dep.new_config,
                "StartTime": epoch_ms(dep.started),
                "ProductionVariants": [
                    {
                        "VariantName": g.variant,
                        "CurrentWeight": number(g.current_weight),
                        "DesiredWeight": number(g.desired_weight),
                        "CurrentInstanceCount": g.provisioned,
                        "DesiredInstanceCount": g.desired_count,
                        **({"VariantStatus": [self._status_ms(s) for s in g.statuses]} if g.statuses else {}),
                    }
                    for g in dep.greens
                ],
            }
        self.emit(DEPLOYMENT_STATE_CHANGE, detail, ep.arn, when)

    @staticmethod
    def _status_ms(status: dict[str, Any]) -> dict[str, Any]:
        start: datetime = status["StartTime"]
        return {**status, "StartTime": epoch_ms(start.timestamp())}

    def set_endpoint_status(self, ep: EndpointState, status: str, when: float) -> None:
        """Every status change is visible in DescribeEndpoint and sent as an endpoint state change."""
        ep.modified = when
        ep.fake.last_modified_time = dt(when)
        if status == ep.status:
            return
        ep.status = status
        ep.fake.endpoint_status = status
        self.endpoint_event(ep, when)

    # ------------------------------------------------------------------ moto access
    @staticmethod
    def backend(account: str, region: str) -> SageMakerModelBackend:
        backend: SageMakerModelBackend = sagemaker_backends[account][region]
        return backend

    @staticmethod
    def store(backend: SageMakerModelBackend, name: str) -> dict[str, Any]:
        """A dict of simulator objects kept in the backend, so moto's reset forgets it."""
        found: dict[str, Any] = backend.__dict__.setdefault(name, {})
        return found

    @staticmethod
    def endpoint_state(backend: SageMakerModelBackend, name: str) -> EndpointState:
        fake = backend.endpoints.get(name)
        state = getattr(fake, "twin", None)
        if not isinstance(state, EndpointState):
            raise ValidationError(
                f'Could not find endpoint "{arn(backend.account_id, backend.region_name, "endpoint", name)}".'
            )
        return state

    @staticmethod
    def alive(ep: EndpointState) -> bool:
        """False once the endpoint was deleted or moto was reset: its timers must do nothing."""
        return ep.backend.endpoints.get(ep.name) is ep.fake

    @staticmethod
    def config_params(backend: SageMakerModelBackend, name: str) -> dict[str, Any]:
        config: FakeEndpointConfig | None = backend.endpoint_configs.get(name)
        if config is None:
            raise ValidationError(
                "Could not find endpoint configuration "
                f'"{arn(backend.account_id, backend.region_name, "endpoint-config", name)}".'
            )
        params = getattr(config, "twin_params", None)
        if isinstance(params, dict):
            return params
        return {  # created before install(), or through CloudFormation
            "EndpointConfigName": name,
            "ProductionVariants": config.production_variants,
            "DataCaptureConfig": config.data_capture_config or None,
            "AsyncInferenceConfig": config.async_inference_config,
        }

    @staticmethod
    def require_model(backend: SageMakerModelBackend, name: str) -> None:
        if name not in backend._models:
            raise ValidationError(
                f'Could not find model "{arn(backend.account_id, backend.region_name, "model", name)}".'
            )

    @staticmethod
    def model_images(backend: SageMakerModelBackend, model_name: str | None, when: float) -> list[dict[str, Any]]:
        model = backend._models.get(model_name) if model_name else None
        if model is None:
            return []
        containers = list(model.containers or []) or ([model.primary_container] if model.primary_container else [])
        return [
            {
                "SpecifiedImage": c["Image"],
                "ResolvedImage": resolved_image(c["Image"]),
                "ResolutionTime": dt(when),
            }
            for c in containers
            if isinstance(c, dict) and c.get("Image")
        ]

    @staticmethod
    def marketplace(backend: SageMakerModelBackend, model_name: str | None) -> bool:
        model = backend._models.get(model_name) if model_name else None
        if model is None:
            return False
        containers = list(model.containers or []) + ([model.primary_container] if model.primary_container else [])
        return any("aws-marketplace" in str(c.get("ModelPackageName", "")) for c in containers if isinstance(c, dict))

    def healthy(self, model_name: str | None) -> bool:
        return model_name is None or model_name not in self._unhealthy

    def start_fleet(self, ep: EndpointState, fleet: Fleet, when: float, first: int = 0) -> str | None:
        """Instances `first`.. of `fleet` start: the FailureReason if they cannot serve (twin/sagemaker_diagnostics.py
        also writes their container logs)."""
        return None if self.healthy(fleet.model_name) else PING_FAILURE.format(variant=fleet.variant)

    def check_quota(self, backend: SageMakerModelBackend, wanted: dict[str, int]) -> None:
        """Raise ResourceLimitExceeded when `wanted` more instances per type break a quota (diagnostics part)."""

    def update_quota(self, ep: EndpointState, dep: Deployment) -> None:
        """UpdateEndpoint's extra capacity against the quotas (diagnostics part)."""

    def tripped_alarms(self, account: str, region: str, names: list[str]) -> list[str]:
        """Rollback alarms in ALARM, read from moto's CloudWatch (the alarm evaluator sets their states)."""
        alarms = cloudwatch_backends[account][region].alarms
        return [n for n in names if n in alarms and alarms[n].state_value == "ALARM"]

    def new_fleet(self, backend: SageMakerModelBackend, config_name: str, spec: dict[str, Any], when: float) -> Fleet:
        # a serverless variant counts as one always-ready unit of capacity (its counts are never described)
        count = 1 if spec.get("ServerlessConfig") else int(spec.get("InitialInstanceCount") or 1)
        weight = float(spec.get("InitialVariantWeight", 1.0))
        return Fleet(
            variant=str(spec["VariantName"]),
            config_name=config_name,
            spec=spec,
            desired_count=count,
            desired_weight=weight,
            current_weight=weight,
            images=self.model_images(backend, spec.get("ModelName"), when),
        )

    @staticmethod
    def register_config(backend: SageMakerModelBackend, params: dict[str, Any], when: float) -> None:
        """Store an endpoint config in moto, keeping every field of the request (moto drops several)."""
        name = params["EndpointConfigName"]
        config = FakeEndpointConfig(  # type: ignore[abstract]
            account_id=backend.account_id,
            region_name=backend.region_name,
            endpoint_config_name=name,
            production_variants=params["ProductionVariants"],
            async_inference_config=params.get("AsyncInferenceConfig") or {},
            data_capture_config=params.get("DataCaptureConfig") or {},
            tags=list(params.get("Tags") or []),
            kms_key_id=params.get("KmsKeyId") or "",
        )
        config.creation_time = dt(when)
        setattr(config, "twin_params", dict(params))  # noqa: B010 - moto's class has no such attribute
        backend.endpoint_configs[name] = config

    # ------------------------------------------------------------------ other services (after the lock)
    def publish(self, account: str, region: str, topic_arn: str, message: dict[str, Any]) -> None:
        """Publish to SNS through moto's backend: never through a client that could leave 127.0.0.1."""
        body = json.dumps(message, separators=(",", ":"))
        topic_region = topic_arn.split(":")[3] if topic_arn.count(":") >= 5 else region

        def send() -> None:
            backend = sns_backends[account][topic_region]
            if topic_arn in backend.topics:
                backend.publish(body, arn=topic_arn)

        self.later(send)

    @staticmethod
    def s3_split(uri: str) -> tuple[str, str]:
        rest = uri.split("://", 1)[-1]
        bucket, _, key = rest.partition("/")
        return bucket, key

    def s3_read(self, account: str, region: str, uri: str) -> bytes | None:
        bucket, key = self.s3_split(uri)
        backend = s3_backends[account][get_partition(region)]
        try:
            found = backend.get_object(bucket, key)
        except Exception:  # NoSuchBucket and friends: the request fails like a download failure
            return None
        return None if found is None else bytes(found.value)

    @staticmethod
    def s3_bucket_exists(account: str, region: str, bucket: str) -> bool:
        return bucket in s3_backends[account][get_partition(region)].buckets

    def s3_write(self, account: str, region: str, uri: str, body: bytes) -> bool:
        bucket, key = self.s3_split(uri)
        backend = s3_backends[account][get_partition(region)]
        if bucket not in backend.buckets:
            return False
        backend.put_object(bucket, key, body)
        return True
