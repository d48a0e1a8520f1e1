"""Failure knobs of the SageMaker simulator that leave the traces SageMaker leaves, for InferOps' diagnosis.

SageMaker writes what a model container prints to CloudWatch Logs, group `/aws/sagemaker/Endpoints/<endpoint>`,
one stream per instance, `<variant>/<instance-id>` (`<variant>/<instance-id>/<container>` for the containers of
an inference pipeline); it refuses capacity beyond the account's quota with `ResourceLimitExceeded`; and a
container that cannot start fails the deployment with a FailureReason. The knobs here play that:

- every fleet that starts logs its model server's start-up (gunicorn behind nginx, as a bring-your-own
  container does); an unhealthy model (`set_model_health`) logs the traceback of its failing worker and the
  nginx 502s SageMaker's pings get, and fails with the ping FailureReason;
- `set_bundled_driver(model)`: the image bundles NVIDIA driver libraries: on GPU hosts NVML reports a
  driver/library mismatch, the worker dies (PyTorch's error 803), the ping fails;
- `set_container_cuda(model, "12.4")`, or an image tagged `...-cu124-...` (the Deep Learning Containers'
  convention): on a GPU host whose driver supports an older CUDA major version (the catalog's driver
  generation per instance type) the container cannot start: `CannotStartContainerError`, and no log at all;
- `set_pipeline_payload(model, container, bytes)`: in a serial inference pipeline, `container` answers with
  `bytes` for the next container; over 5 MB SageMaker drops the request (ModelError 424 to the caller). Each
  minute the sending container's access log shows the large 200 answers and only the containers up to it
  report ContainerLatency. Pair it with `twin.cloudwatch.set_model_profile(model, model_error_rate=1.0)` for
  the invocation error metrics the load model writes;
- `set_instance_quota("ml.g5.xlarge", 8)`: the account-level 'ml.g5.xlarge for endpoint usage' quota.
  CreateEndpoint, UpdateEndpoint and capacity changes (Application Auto Scaling too, whose activity then
  fails) beyond it raise `ResourceLimitExceeded` with SageMaker's message.

Log lines are written straight into moto's CloudWatch Logs backend with their virtual timestamps (moto's
PutLogEvents would refuse times far from the wall clock), so FilterLogEvents and DescribeLogStreams read
them back as on AWS.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from moto.cloudwatch.models import cloudwatch_backends
from moto.logs.models import logs_backends
from moto.sagemaker.models import SageMakerModelBackend

from inferops import catalog
from inferops.errors import InvalidInput
from twin.cloudwatch_alarms import naive_utc
from twin.cloudwatch_traffic import SAGEMAKER, _stat_datum
from twin.sagemaker_base import PING_FAILURE, Deployment, EndpointState, Fleet, ServiceError, SimulatorBase, dt

LOG_GROUP = "/aws/sagemaker/Endpoints/{endpoint}"
PAYLOAD_LIMIT = 5 * 1024 * 1024
CANNOT_START = (
    "CannotStartContainerError. Please ensure the model container for variant {variant} starts correctly when "
    "invoked with 'docker run <image> serve'"
)
PIPELINE_PING_FAILURE = (
    "The {container} for production variant {variant} did not pass the ping health check. "
    "Please check CloudWatch logs for this endpoint."
)
QUOTA_MESSAGE = (
    "The account-level service limit '{instance_type} for endpoint usage' is {limit} Instances, with current "
    "utilization of {used} Instances and a request delta of {delta} Instances. Please contact AWS support to "
    "request an increase for this limit."
)
_CUDA_TAG = re.compile(r"(?:^|[-_.])cu(\d{2})(\d)(?:$|[-_.])")
_PEER = "10.32.0.2"  # the address SageMaker's health checks and requests come from, in container access logs
_LOGGED_INSTANCES = 4  # instances per fleet that write start-up logs (a 40-instance fleet needs no 40 copies)


class QuotaExceeded(ServiceError):
    """ResourceLimitExceeded; its str() is what Application Auto Scaling puts in a failed activity's message."""

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__("ResourceLimitExceeded", message)
        self.request_id = request_id

    def __str__(self) -> str:
        return (
            f"{self.message} (Service: AmazonSageMaker; Status Code: 400; Error Code: ResourceLimitExceeded; "
            f"Request ID: {self.request_id})"
        )


@dataclass
class _Knobs:
    quotas: dict[str, int] = field(default_factory=dict)
    bundled_driver: set[str] = field(default_factory=set)
    cuda: dict[str, str] = field(default_factory=dict)
    payload: dict[str, tuple[str, int]] = field(default_factory=dict)  # model -> (container, bytes)
    ticking: bool = False


def instance_id(endpoint: str, config: str, variant: str, index: int) -> str:
    """A stable EC2-looking id per instance slot of a fleet."""
    digest = hashlib.sha256(f"{endpoint}|{config}|{variant}|{index}".encode()).hexdigest()
    return f"i-0{digest[:16]}"


def _clock(when: float) -> str:
    """gunicorn's `[2026-01-05 09:10:02 +0000]`."""
    return dt(when).strftime("[%Y-%m-%d %H:%M:%S +0000]")


def _access(when: float) -> str:
    """nginx's `[05/Jan/2026:09:10:02 +0000]`."""
    return dt(when).strftime("[%d/%b/%Y:%H:%M:%S +0000]")


def _nginx_error(when: float) -> str:
    return dt(when).strftime("%Y/%m/%d %H:%M:%S")


class DiagnosticsMixin(SimulatorBase):
    """The knobs above, and the hooks the lifecycle and deployment code call (see SimulatorBase)."""

    @property
    def _diag(self) -> _Knobs:
        knobs = self.__dict__.get("_diagnostic_knobs")
        if not isinstance(knobs, _Knobs):
            knobs = self.__dict__["_diagnostic_knobs"] = _Knobs()
        return knobs

    # ------------------------------------------------------------------ knobs
    def set_instance_quota(self, instance_type: str, limit: int | None) -> None:
        """The account-level '<type> for endpoint usage' quota (None: unlimited, the default)."""
        with self.guard():
            if limit is None:
                self._diag.quotas.pop(instance_type, None)
            else:
                self._diag.quotas[instance_type] = int(limit)

    def set_bundled_driver(self, model_name: str, bundled: bool = True) -> None:
        """The model's image bundles NVIDIA driver packages: NVML mismatch on GPU hosts, ping failure."""
        with self.guard():
            if bundled:
                self._diag.bundled_driver.add(model_name)
            else:
                self._diag.bundled_driver.discard(model_name)

    def set_container_cuda(self, model_name: str, cuda: str | None) -> None:
        """The CUDA version the model's container is built on ("12.4"); None: read it from the image tag."""
        with self.guard():
            if cuda is None:
                self._diag.cuda.pop(model_name, None)
            else:
                self._diag.cuda[model_name] = cuda

    def set_pipeline_payload(self, model_name: str, container: str, size_bytes: int | None) -> None:
        """Pipeline model: `container` answers the next container with `size_bytes` (None: back to normal)."""
        with self.guard():
            if size_bytes is None:
                self._diag.payload.pop(model_name, None)
                return
            self._diag.payload[model_name] = (container, int(size_bytes))
            if not self._diag.ticking:
                self._diag.ticking = True
                first = math.floor(self.clock.now() / 60) * 60 + 60
                self.at(first, self._payload_minute, "pipeline payload logs")

    # ------------------------------------------------------------------ hooks
    def start_fleet(self, ep: EndpointState, fleet: Fleet, when: float, first: int = 0) -> str | None:
        """Instances `first`.. of the fleet start: write their logs; the FailureReason if they cannot serve."""
        containers = self._containers(ep.backend, fleet.model_name)
        names = [name for name, _ in containers]
        instances = [
            instance_id(ep.name, fleet.config_name, fleet.variant, i)
            for i in range(first, min(fleet.desired_count, first + _LOGGED_INSTANCES))
        ] or [instance_id(ep.name, fleet.config_name, fleet.variant, first)]
        model = fleet.model_name
        if self._cuda_too_new(fleet, containers):
            return CANNOT_START.format(variant=fleet.variant)  # the container never ran: no log stream at all
        nvml = bool(model) and model in self._diag.bundled_driver and self._gpu(fleet.instance_type)
        sick = not self.healthy(model) or nvml
        failing = names[0] if names else "primary"
        for iid in instances:
            for index, name in enumerate(names or ["primary"]):
                stream = f"{fleet.variant}/{iid}" if len(names) <= 1 else f"{fleet.variant}/{iid}/{name}"
                start = when - 40 + index
                failed = sick and name == failing
                self._write(ep, stream, self._failed_start(start, nvml=nvml) if failed else self._started(start))
        if not sick:
            return None
        if len(names) > 1:
            return PIPELINE_PING_FAILURE.format(container=failing, variant=fleet.variant)
        return PING_FAILURE.format(variant=fleet.variant)

    def check_quota(self, backend: SageMakerModelBackend, wanted: dict[str, int]) -> None:
        """Raise ResourceLimitExceeded when adding `wanted` instances per type breaks an account quota."""
        for instance_type, delta in sorted(wanted.items()):
            limit = self._diag.quotas.get(instance_type)
            if limit is None or delta <= 0:
                continue
            used = self._utilization(backend, instance_type)
            if used + delta > limit:
                message = QUOTA_MESSAGE.format(instance_type=instance_type, limit=limit, used=used, delta=delta)
                raise QuotaExceeded(message, self.new_id())

    def update_quota(self, ep: EndpointState, dep: Deployment) -> None:
        """UpdateEndpoint: blue/green needs the whole new fleet at once; rolling one batch at a time."""
        wanted: dict[str, int] = {}
        for green in dep.greens:
            if not green.instance_type:
                continue
            count = green.desired_count
            if dep.kind == "rolling":
                size = ((dep.config or {}).get("RollingUpdatePolicy") or {}).get("MaximumBatchSize") or {}
                value = int(size.get("Value", 1))
                count = value if size.get("Type") == "INSTANCE_COUNT" else max(1, count * value // 100)
            wanted[green.instance_type] = wanted.get(green.instance_type, 0) + count
        self.check_quota(ep.backend, wanted)

    # ------------------------------------------------------------------ helpers
    def _utilization(self, backend: SageMakerModelBackend, instance_type: str) -> int:
        used = 0
        for fake in list(backend.endpoints.values()):
            ep = getattr(fake, "twin", None)
            if not isinstance(ep, EndpointState) or ep.status in ("Failed", "Deleting"):
                continue
            fleets = ep.fleets + ep.shadows + (ep.deployment.greens if ep.deployment else [])
            used += sum(max(f.provisioned, f.desired_count) for f in fleets if f.instance_type == instance_type)
        return used

    @staticmethod
    def _containers(backend: SageMakerModelBackend, model_name: str | None) -> list[tuple[str, str]]:
        """(name, image) per container: 'primary' for a single container, ContainerHostname or container-N."""
        model = backend._models.get(model_name) if model_name else None
        if model is None:
            return []
        if model.primary_container:
            return [("primary", str(model.primary_container.get("Image", "")))]
        return [
            (str(c.get("ContainerHostname") or f"container-{i}"), str(c.get("Image", "")))
            for i, c in enumerate(model.containers or [], start=1)
            if isinstance(c, dict)
        ]

    @staticmethod
    def _gpu(instance_type: str | None) -> bool:
        if not instance_type:
            return False
        try:
            return catalog.get(instance_type).accelerator.kind == "gpu"
        except InvalidInput:
            return False

    def _cuda_too_new(self, fleet: Fleet, containers: list[tuple[str, str]]) -> bool:
        if not self._gpu(fleet.instance_type):
            return False
        host = catalog.get(str(fleet.instance_type)).cuda
        needed = self._diag.cuda.get(fleet.model_name or "")
        if needed is None:
            for _, image in containers:
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                found = _CUDA_TAG.search(tag)
                if found:
                    needed = f"{int(found.group(1))}.{found.group(2)}"
                    break
        if needed is None or host is None:
            return False
        return int(needed.split(".")[0]) > int(host.split(".")[0])

    def _write(self, ep: EndpointState, stream: str, lines: list[tuple[float, str]]) -> None:
        """Append lines to a stream of the endpoint's log group, creating both as SageMaker does."""
        backend = logs_backends[ep.account][ep.region]
        group_name = LOG_GROUP.format(endpoint=ep.name)
        if group_name not in backend.groups:
            backend.create_log_group(group_name, {})
        group = backend.groups[group_name]
        if stream not in group.streams:
            group.create_log_stream(stream)
        events = [{"timestamp": int(when * 1000), "message": text} for when, text in sorted(lines)]
        group.streams[stream].put_log_events(events)

    @staticmethod
    def _started(start: float) -> list[tuple[float, str]]:
        t = start
        return [
            (t, "Starting the inference server with 2 workers."),
            (t + 1, f"{_clock(t + 1)} [9] [INFO] Starting gunicorn 22.0.0"),
            (t + 1.1, f"{_clock(t + 1)} [9] [INFO] Listening at: unix:/tmp/gunicorn.sock (9)"),
            (t + 1.2, f"{_clock(t + 1)} [9] [INFO] Using worker: sync"),
            (t + 1.3, f"{_clock(t + 1)} [13] [INFO] Booting worker with pid: 13"),
            (t + 1.4, f"{_clock(t + 1)} [14] [INFO] Booting worker with pid: 14"),
            (t + 20, f'{_PEER} - - {_access(t + 20)} "GET /ping HTTP/1.1" 200 1 "-" "AHC/2.0"'),
        ]

    @staticmethod
    def _failed_start(start: float, *, nvml: bool) -> list[tuple[float, str]]:
        t = start
        lines = [
            (t, "Starting the inference server with 2 workers."),
            (t + 1, f"{_clock(t + 1)} [9] [INFO] Starting gunicorn 22.0.0"),
            (t + 1.1, f"{_clock(t + 1)} [9] [INFO] Listening at: unix:/tmp/gunicorn.sock (9)"),
            (t + 1.3, f"{_clock(t + 1)} [13] [INFO] Booting worker with pid: 13"),
            (t + 6, f"{_clock(t + 6)} [13] [ERROR] Exception in worker process"),
            (t + 6.1, "Traceback (most recent call last):"),
        ]
        if nvml:
            lines[1:1] = [(t + 0.5, "Failed to initialize NVML: Driver/library version mismatch")]
            lines += [
                (t + 6.2, '  File "/opt/program/predictor.py", line 14, in <module>'),
                (t + 6.3, "    model = torch.jit.load(MODEL_PATH, map_location=torch.device('cuda'))"),
                (
                    t + 6.4,
                    "RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions "
                    "before calling NumCudaDevices() that might have already set an error? Error 803: system has "
                    "unsupported display driver / cuda driver combination",
                ),
            ]
        else:
            lines += [
                (t + 6.2, '  File "/opt/program/predictor.py", line 21, in <module>'),
                (t + 6.3, '    model = joblib.load(os.path.join(MODEL_PATH, "model.joblib"))'),
                (t + 6.4, "FileNotFoundError: [Errno 2] No such file or directory: '/opt/ml/model/model.joblib'"),
            ]
        lines += [
            (t + 6.5, f"{_clock(t + 6)} [13] [INFO] Worker exiting (pid: 13)"),
            (t + 6.6, f"{_clock(t + 6)} [9] [ERROR] Worker (pid:13) exited with code 3"),
            (t + 6.7, f"{_clock(t + 6)} [9] [ERROR] Shutting down: Master"),
            (t + 6.8, f"{_clock(t + 6)} [9] [ERROR] Reason: Worker failed to boot."),
        ]
        for k in range(3):
            when = t + 10 + 5 * k
            lines.append(
                (
                    when,
                    f"{_nginx_error(when)} [error] 11#11: *{k + 1} connect() to unix:/tmp/gunicorn.sock failed (111: "
                    f'Connection refused) while connecting to upstream, client: {_PEER}, server: , request: "GET '
                    '/ping HTTP/1.1", upstream: "http://unix:/tmp/gunicorn.sock:/ping", host: "model.aws.local:8080"',
                )
            )
            lines.append((when + 0.01, f'{_PEER} - - {_access(when)} "GET /ping HTTP/1.1" 502 182 "-" "AHC/2.0"'))
        return lines

    # ------------------------------------------------------------------ the pipeline payload, minute by minute
    def _payload_minute(self, when: float) -> None:
        """The last minute of every fleet serving a pipeline model with an oversized payload."""
        if not self._diag.payload:
            self._diag.ticking = False
            return
        backend = self.backend(self.account, self.region)
        for fake in list(backend.endpoints.values()):
            ep = getattr(fake, "twin", None)
            if not isinstance(ep, EndpointState) or not self.alive(ep) or ep.status == "Deleting":
                continue
            for fleet in ep.fleets:
                knob = self._diag.payload.get(fleet.model_name or "")
                if knob is None or fleet.active <= 0:
                    continue
                self._payload_traces(ep, fleet, knob, when)
        self.at(when + 60, self._payload_minute, "pipeline payload logs")

    def _payload_traces(self, ep: EndpointState, fleet: Fleet, knob: tuple[str, int], when: float) -> None:
        container, size = knob
        names = [name for name, _ in self._containers(ep.backend, fleet.model_name)]
        if container not in names or names.index(container) == len(names) - 1:
            return
        requests = self._invocations(ep, fleet.variant, when)
        if requests <= 0:
            return
        reached = names[: names.index(container) + 1] if size > PAYLOAD_LIMIT else names
        for index in range(min(fleet.active, _LOGGED_INSTANCES)):
            iid = instance_id(ep.name, fleet.config_name, fleet.variant, index)
            share = max(1, math.ceil(requests / max(1, fleet.active)))
            lines = [
                (when - 50 + 10 * k, f'{_PEER} - - {_access(when - 50 + 10 * k)} "POST /invocations HTTP/1.1" 200 '
                 f'{size} "-" "AHC/2.0"')
                for k in range(min(3, share))
            ]  # fmt: skip
            self._write(ep, f"{fleet.variant}/{iid}/{container}", lines)
        cw = cloudwatch_backends[ep.account][ep.region]
        for name in reached:
            dims = [("EndpointName", ep.name), ("VariantName", fleet.variant), ("ContainerName", name)]
            latency = 38_000.0 if name == container else 12_000.0
            count = float(requests)
            cw.metric_data.append(
                _stat_datum(
                    SAGEMAKER, "ContainerLatency", dims, when - 60, count, latency * count, latency * 0.6,
                    latency * 2.5, "Microseconds", ((latency, count),),
                )
            )  # fmt: skip

    @staticmethod
    def _invocations(ep: EndpointState, variant: str, when: float) -> int:
        """Requests the load model sent the variant in the minute before `when` (0 without a load profile)."""
        backend = cloudwatch_backends[ep.account][ep.region]
        wanted = {("EndpointName", ep.name), ("VariantName", variant)}
        oldest = naive_utc(when - 120)
        total = 0.0
        for datum in reversed(backend.metric_data):
            stamp: datetime = datum.timestamp
            if stamp < oldest:
                break
            if datum.name != "Invocations" or datum.namespace != SAGEMAKER:
                continue
            if {(d.name, d.value) for d in datum.dimensions} == wanted:
                total = max(total, float(getattr(datum, "sum", 0.0) or 0.0))
        return int(total)
