"""Diagnosis: why an endpoint (or an operation on it) failed, as findings with a cause, evidence and a fix.

Two halves, so the rules are testable on recorded evidence without AWS:

1. `gather` reads what AWS knows about an endpoint in a time window, within a time budget and a volume cap:
   DescribeEndpoint (status, FailureReason, variant statuses), the endpoint configs and models it runs or was
   moving to (instance types, containers, images), one GetMetricData call (invocations, 4XX/5XX and model
   errors, ModelLatency / OverheadLatency / per-container ContainerLatency, CPU/GPU/memory/disk utilisation,
   async backlog and failure metrics, per endpoint config during a deployment), the alarms on the endpoint,
   the Application Auto Scaling activities of its variants, the async S3 failure objects and the CloudWatch
   Logs of `/aws/sagemaker/Endpoints/<endpoint>` (streams `<variant>/<instance>[/<container>|/data-log]`)
   searched for the signatures below. What could not be read, and why, is kept as a gap, never an error.
2. `analyze` matches that evidence against `SIGNATURES`, one table of the failure signatures of the SageMaker
   guide's troubleshooting pages (reference/sagemaker-facts.md §17 digests them): each row has what it
   matches (a text pattern, an endpoint status, a metric threshold or a probe of the evidence), the cause,
   the fix and the guide page. Nothing found -> the diagnosis says what was checked.

`diagnose` serves GET /endpoints/{name}/diagnosis; `for_operation` is what failed operations attach (it never
raises: a diagnosis that cannot be made says so).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ConfigDict, Field

from inferops import catalog
from inferops.errors import InvalidInput, NotFound
from inferops.model import Model

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sagemaker import SageMakerClient

ENDPOINT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
PAYLOAD_LIMIT_BYTES = 5 * 1024 * 1024  # between the containers of a serial inference pipeline
INVOCATION_TIMEOUT_US = 60_000_000  # real-time /invocations must answer within 60 s
MIN_MINUTES, MAX_MINUTES, DEFAULT_MINUTES = 5, 1440, 60

# Bounds: time, calls and volume (a diagnosis must stay cheap and fast on a huge, noisy endpoint).
DEFAULT_BUDGET_SECONDS = 10.0  # the API's (API Gateway answers within 29 s)
OPERATION_BUDGET_SECONDS = 15.0  # a flow's last step (DeploymentStepsFunction times out after 60 s)
MAX_VARIANTS = 10
MAX_CONFIGS = 4
MAX_MODELS = 10
MAX_STREAMS = 50  # the most recently active log streams searched (FilterLogEvents takes up to 100 names)
MAX_LOG_PAGES = 3
LOG_PAGE_EVENTS = 500
MAX_LOG_LINES = 300  # kept after filtering
MAX_LINE_CHARS = 500
MAX_ALARM_PAGES = 2
MAX_ACTIVITIES = 20  # per variant
MAX_FAILURE_OBJECTS = 5
MAX_FINDINGS = 12  # a diagnosis stays well inside a DynamoDB item (400 KB) when an operation stores it
MAX_EVIDENCE = 10  # per finding
MATCHED_LOGS = 3  # log lines that matched the signature itself
MATCHED_OTHER = 6  # other matched evidence (reported errors, activities, metrics)
CONTEXT_LOGS = 4  # the endpoint's most telling error lines, added where a rule asks for them
MAX_ERRORS = 5
MAX_ERROR_CHARS = 2000

Severity = Literal["critical", "error", "warning", "info"]
EvidenceKind = Literal[
    "failure_reason", "variant_status", "error", "log", "scaling_activity", "metric", "alarm", "catalog", "s3"
]
_SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}
_TEXT_KINDS: frozenset[str] = frozenset({"failure_reason", "variant_status", "error", "scaling_activity", "log"})
_REPORTED: frozenset[str] = frozenset({"failure_reason", "variant_status", "error"})


class _Frozen(Model):
    model_config = ConfigDict(frozen=True, extra="ignore")


# ------------------------------------------------------------------------------------------------ evidence
class ContainerInfo(_Frozen):
    name: str = Field(description="ContainerHostname, 'primary' for a single container, container-N otherwise")
    image: str | None = None
    mode: str | None = Field(default=None, description="SingleModel or MultiModel")


class VariantInfo(_Frozen):
    """A production variant of the endpoint's current, pending or target endpoint config."""

    name: str
    config_name: str
    role: Literal["current", "pending", "target"] = "current"
    instance_type: str | None = None
    serverless: bool = False
    model_name: str | None = None
    containers: list[ContainerInfo] = Field(default_factory=list)
    current_count: int | None = None
    desired_count: int | None = None
    statuses: list[str] = Field(default_factory=list, description="VariantStatus: 'Status: StatusMessage'")
    autoscaled: bool = False

    @property
    def pipeline(self) -> bool:
        return len(self.containers) > 1

    @property
    def multi_model(self) -> bool:
        return any(c.mode == "MultiModel" for c in self.containers)


class MetricValue(_Frozen):
    """One series' statistic over the window."""

    namespace: str
    name: str
    dimensions: dict[str, str]
    statistic: str
    value: float
    unit: str = ""

    def describe(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dimensions.items())
        return f"{self.name} {self.statistic} = {_number(self.value, self.unit)} ({dims})"


class LogLine(_Frozen):
    stream: str
    timestamp_ms: int
    message: str


class AlarmInfo(_Frozen):
    name: str
    state: str
    reason: str = ""
    metric: str | None = None
    updated: str | None = None


class ScalingInfo(_Frozen):
    activity_id: str
    resource_id: str
    status: str
    cause: str = ""
    description: str = ""
    message: str = ""
    start: str | None = None


class FailureObject(_Frozen):
    uri: str
    last_modified: str | None = None


class Evidence(_Frozen):
    """Everything one diagnosis looked at (see `gather`); unit tests build it from recorded AWS shapes."""

    endpoint: str
    region: str = "us-east-1"
    found: bool = True
    status: str | None = None
    config_name: str | None = None
    failure_reason: str | None = None
    is_async: bool = False
    variants: list[VariantInfo] = Field(default_factory=list)
    metrics: list[MetricValue] = Field(default_factory=list)
    alarms: list[AlarmInfo] = Field(default_factory=list)
    scaling: list[ScalingInfo] = Field(default_factory=list)
    logs: list[LogLine] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="error texts the caller or the operation saw")
    failure_objects: list[FailureObject] = Field(default_factory=list)
    window_start: float = 0.0
    window_end: float = 0.0
    checked: list[str] = Field(default_factory=list)
    gaps: list[str] = Field(default_factory=list)

    def variant(
        self, name: str | None, *, prefer: Sequence[str] = ("target", "pending", "current")
    ) -> VariantInfo | None:
        for role in prefer:
            for variant in self.variants:
                if variant.role == role and (name is None or variant.name == name):
                    return variant
        return None

    def metric(self, name: str, statistic: str) -> list[MetricValue]:
        return [m for m in self.metrics if m.name == name and m.statistic == statistic]


# ------------------------------------------------------------------------------------------------ findings
class EvidenceItem(_Frozen):
    kind: EvidenceKind
    source: str = Field(description="where it was seen: log stream, metric, alarm, activity, API field")
    text: str
    at: str | None = None


class Finding(_Frozen):
    rule: str
    title: str
    severity: Severity
    cause: str
    fix: str
    guide: str = Field(description="the SageMaker guide's troubleshooting page this signature comes from")
    evidence: list[EvidenceItem]
    logs_url: str


class Window(_Frozen):
    start: str
    end: str
    minutes: int


class Diagnosis(_Frozen):
    """GET /endpoints/{name}/diagnosis, and what a failed operation carries."""

    endpoint: str
    status: str | None = Field(description="EndpointStatus (None when the endpoint does not exist any more)")
    failure_reason: str | None
    generated_at: str
    window: Window
    summary: str
    findings: list[Finding]
    checked: list[str] = Field(description="what was read, so an empty diagnosis still says what it looked at")
    gaps: list[str] = Field(description="what could not be read, and why (permissions, time budget)")
    log_group: str
    logs_url: str


# ------------------------------------------------------------------------------------------------ the rule table
@dataclass(frozen=True)
class MetricTrigger:
    """Fires when a series' statistic reaches `at_least` (a ratio to the `per` metric's Sum when given)."""

    name: str
    statistic: str
    at_least: float
    per: str | None = None
    min_per: float = 20.0  # a ratio needs this many requests behind it


Probe = Callable[[Evidence], tuple[list[EvidenceItem], dict[str, str]] | None]
Detail = Callable[[Evidence, dict[str, str]], dict[str, str] | None]


@dataclass(frozen=True)
class Signature:
    """One known failure: what it looks like, what it means, what to do, where the guide says so.

    It fires on any of `text` (a regex searched in `kinds` of evidence), `status` (EndpointStatus), `metric`
    or `probe` (a look at the structured evidence returning evidence items and template fields), provided
    `applies` holds. `cause` and `fix` are templates over the regex's named groups and `detail`'s fields.
    """

    rule: str
    title: str
    severity: Severity
    cause: str
    fix: str
    guide: str
    text: str | None = None
    kinds: frozenset[str] = _TEXT_KINDS
    status: frozenset[str] = frozenset()
    metric: MetricTrigger | None = None
    probe: Probe | None = None
    applies: Callable[[Evidence], bool] | None = None
    detail: Detail | None = None
    more: Callable[[Evidence], list[EvidenceItem]] | None = None  # evidence worth showing once it fired
    context_logs: bool = False  # add the endpoint's error lines (tracebacks, [error], non-2xx) as evidence
    fallback: bool = False  # only when no other signature fired
    supersedes: tuple[str, ...] = ()  # rules this one makes redundant when both fire

    @property
    def pattern(self) -> re.Pattern[str] | None:
        return _compiled(self.text) if self.text else None


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(text: str) -> re.Pattern[str]:
    found = _PATTERNS.get(text)
    if found is None:
        found = _PATTERNS[text] = re.compile(text)
    return found


_GUIDE = "SageMaker AI Developer Guide"
_ACCESS_LOG = re.compile(r'"(?P<method>GET|POST) (?P<path>/\S*) HTTP/1\.[01]" (?P<status>\d{3}) (?P<bytes>\d+)')
_CUDA_TAG = re.compile(r"(?:^|[-_:.])cu(?P<major>\d{2})(?P<minor>\d)(?:$|[-_.])")
_CUDA_NEEDED = re.compile(r"cuda>=(?P<cuda>\d+\.\d+)")
_PING_WHO = re.compile(r"The (?P<container>[\w.-]+?)(?: container)? for production variant (?P<variant>[\w.-]+)")
_ERROR_LINE = re.compile(
    r"Traceback \(most recent call last\)|^\s*\w+(?:\.\w+)*(?:Error|Exception|Exit)\b:?|\[(?:ERROR|error|CRITICAL)\]"
    r"|\bERROR\b|FATAL|Failed to|failed to boot|Worker (?:exiting|failed)|\" [45]\d\d \d"
)
_INTERESTING = re.compile(
    _ERROR_LINE.pattern
    + r"|did not pass|NVML|CUDA|cuda>=|timed out|Permission denied|Read-only file system|OSContainer|NoneType"
    + r"|ModelNotReady|not ready|507|exceeded|AccessDenied|ResourceLimitExceeded|\"POST /invocations HTTP/1\.[01]\" 200"
)
# Real CloudWatch Logs narrows the search server-side with this OR pattern; every line is re-checked locally.
_LOG_FILTER = (
    '?Traceback ?ERROR ?Error ?error ?Exception ?exception ?Failed ?failed ?FATAL ?NVML ?CUDA ?cuda ?"/ping" '
    "?timed ?denied ?Permission ?OSContainer ?NoneType ?507 ?ModelNotReady"
)
_INVOCATIONS_FILTER = '"POST /invocations"'


def _is_pipeline(ev: Evidence) -> bool:
    return any(v.pipeline for v in ev.variants)


def _is_serverless(ev: Evidence) -> bool:
    return any(v.serverless for v in ev.variants)


def _is_multi_model(ev: Evidence) -> bool:
    return any(v.multi_model for v in ev.variants)


def _is_async(ev: Evidence) -> bool:
    return ev.is_async


# ---- details and probes (named in the table below) ------------------------------------------------------
def _ping_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    texts = [t for _, _, t, _ in _texts(ev, _REPORTED)]
    who = next((m for m in (_PING_WHO.search(t) for t in texts) if m), None)
    variant_name = who.group("variant") if who else None
    container = who.group("container") if who else "the"
    variant = ev.variant(variant_name)
    extra = ""
    if variant is not None and variant.instance_type:
        spec = _spec(variant.instance_type)
        if spec is not None:
            extra = f" on {variant.instance_type} ({spec.vcpus} vCPU, {spec.memory_gib:g} GiB)"
            if variant.pipeline:
                extra += f" with {len(variant.containers)} containers sharing its memory and CPU"
    return {"container": container, "variant": variant_name or "?", "where": extra}


def _spec(instance_type: str | None) -> catalog.InstanceType | None:
    if not instance_type:
        return None
    try:
        return catalog.get(instance_type)
    except InvalidInput:
        return None


def _cuda_of_image(image: str | None) -> str | None:
    tag = (image or "").rsplit("/", 1)[-1]
    found = _CUDA_TAG.search(tag.split(":", 1)[-1]) if ":" in tag else None
    return f"{int(found.group('major'))}.{found.group('minor')}" if found else None


def _newer_hosts(major: int) -> str:
    hosts: dict[str, list[str]] = {}
    for spec in catalog.all_types():
        if spec.cuda and spec.nvidia_driver and int(spec.cuda.split(".")[0]) >= major:
            hosts.setdefault(f"driver {spec.nvidia_driver} / CUDA {spec.cuda}", []).append(spec.family)
    listed = [f"{', '.join(f'ml.{f}.*' for f in sorted(set(fams)))} ({k})" for k, fams in sorted(hosts.items())]
    return "; ".join(listed) or "none known"


def _cuda_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    texts = [t for _, _, t, _ in _texts(ev, _TEXT_KINDS)]
    named = next((m.group(1) for m in (re.search(r"for variant (\S+?) starts", t) for t in texts) if m), None)
    variant = ev.variant(named) or next((v for v in ev.variants if v.role != "current"), None) or ev.variant(None)
    instance_type = variant.instance_type if variant else None
    spec = _spec(instance_type)
    image = next((c.image for c in variant.containers if c.image), None) if variant else None
    needed = fields.get("cuda") or next((m.group("cuda") for m in map(_CUDA_NEEDED.search, texts) if m), None)
    needed = needed or _cuda_of_image(image)
    out = {"instance_type": instance_type or "its instance type", "image": image or "<image>"}
    if spec is None or spec.accelerator.kind != "gpu":
        arch = spec.architecture if spec else "?"
        out["cuda_detail"] = (
            f"the container exited as it started ('docker run {out['image']} serve' fails). It is not a GPU "
            f"host, so check the ENTRYPOINT/serve script and that the image is built for {arch}"
        )
        out["newer_hosts"] = "-"
        return out
    host_cuda, driver = spec.cuda, spec.nvidia_driver
    if host_cuda is None or driver is None:
        out["cuda_detail"] = (
            f"{instance_type} is an NVIDIA host whose driver generation the guide does not give; a container "
            f"built on a CUDA {needed or 'version'} newer (major) than the host driver cannot start"
        )
        out["newer_hosts"] = _newer_hosts(int(needed.split(".")[0]) if needed else 12)
        return out
    out.update(host_cuda=host_cuda, driver=driver)
    if needed is None:
        out["cuda_detail"] = (
            f"{instance_type} hosts run NVIDIA driver {driver} (CUDA {host_cuda}); the image does not say its CUDA "
            "version (no cuNNN tag, no 'cuda>=' requirement in the logs): a container CUDA a major version newer "
            "than the host driver is the usual cause"
        )
        out["newer_hosts"] = _newer_hosts(int(host_cuda.split(".")[0]) + 1)
        return out
    need_major, host_major = int(needed.split(".")[0]), int(host_cuda.split(".")[0])
    if need_major > host_major:
        verdict = f"CUDA {needed} is a major version newer than the host's CUDA {host_cuda}: it cannot start"
    elif tuple(map(int, needed.split("."))) > tuple(map(int, host_cuda.split("."))):
        verdict = (
            f"CUDA {needed} is a minor version newer than the host's CUDA {host_cuda}: NVIDIA's minor-version "
            "compatibility should cover it unless the image disables it or bundles its own driver"
        )
    else:
        verdict = f"CUDA {needed} is not newer than the host's CUDA {host_cuda}: look at the entrypoint instead"
    out["cuda_detail"] = (
        f"the image needs CUDA {needed} and {instance_type} hosts run NVIDIA driver {driver}; {verdict}"
    )
    out["newer_hosts"] = _newer_hosts(need_major)
    return out


def _payload_probe(ev: Evidence) -> tuple[list[EvidenceItem], dict[str, str]] | None:
    """A pipeline container answering /invocations with more than 5 MB for the next container."""
    items: list[EvidenceItem] = []
    fields: dict[str, str] = {}
    for line in ev.logs:
        found = _ACCESS_LOG.search(line.message)
        if not found or found.group("path") != "/invocations" or not found.group("status").startswith("2"):
            continue
        size = int(found.group("bytes"))
        parts = line.stream.split("/")
        if size <= PAYLOAD_LIMIT_BYTES or len(parts) < 3:
            continue
        variant = ev.variant(parts[0], prefer=("current", "pending", "target"))
        names = [c.name for c in variant.containers] if variant else []
        container = parts[2]
        if container not in names or names.index(container) == len(names) - 1:
            continue  # the last container answers the caller (6 MB limit), not another container
        items.append(_log_item(line))
        fields.setdefault("source", container)
        fields.setdefault("target", names[names.index(container) + 1])
        fields.setdefault("bytes", str(size))
    if not items:
        return None
    for m in ev.metric("ContainerLatency", "Average"):  # the containers after the sender never see a request
        items.append(EvidenceItem(kind="metric", source=m.name, text=m.describe()))
    for target in {fields["target"]} - {
        m.dimensions.get("ContainerName") for m in ev.metric("ContainerLatency", "Average")
    }:
        items.append(EvidenceItem(kind="metric", source="ContainerLatency", text=f"no ContainerLatency from {target}"))
    items += _metric_hits(ev, MetricTrigger("InvocationModelErrors", "Sum", 0.01, per="Invocations"))
    return items, fields


def _payload_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    size = fields.get("bytes")
    return {"size": f"{int(size):,} bytes" if size and size.isdigit() else "more than 5 MB"}


def _container_streams_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    container = fields.get("container", "primary")
    streams = sorted({line.stream for line in ev.logs if line.stream.endswith(f"/{container}")})
    return {"streams": ", ".join(streams[:3]) or f"<variant>/<instance-id>/{container}"}


def _quota_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    if "quota" in fields:
        quota = fields["quota"]
        return {
            "quota_text": (
                f"the account-level quota '{quota}' is {fields.get('limit')} instance(s), {fields.get('used')} "
                f"in use, and the change asked for {fields.get('delta')} more"
            ),
            "quota": quota,
        }
    return {"quota_text": "an account-level SageMaker quota was reached", "quota": "<instance type> for endpoint usage"}


def _autoscaled_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    names = sorted({v.name for v in ev.variants if v.autoscaled})
    return {"variants": ", ".join(names) or "the variant"}


def _rollback_detail(ev: Evidence, fields: dict[str, str]) -> dict[str, str]:
    firing = [a.name for a in ev.alarms if a.state == "ALARM"]
    return {"alarms": ", ".join(firing) or "the rollback alarm"}


def _config_metrics_probe(ev: Evidence) -> list[EvidenceItem]:
    """Per endpoint config (old vs new fleet) 5XX and latency: what the rollback alarms saw, side by side."""
    items = []
    for name, statistic in (("ModelLatency", "Maximum"), ("Invocation5XXErrors", "Sum")):
        series = [m for m in ev.metric(name, statistic) if "EndpointConfigName" in m.dimensions]
        if series:
            parts = "; ".join(f"{m.dimensions['EndpointConfigName']} {_number(m.value, m.unit)}" for m in series)
            items.append(
                EvidenceItem(kind="metric", source=name, text=f"{name} {statistic} by endpoint config: {parts}")
            )
    return items


def _alarm_probe(ev: Evidence) -> tuple[list[EvidenceItem], dict[str, str]] | None:
    items = [
        EvidenceItem(kind="alarm", source=a.name, text=f"{a.name} is {a.state}: {a.reason}", at=a.updated)
        for a in ev.alarms
        if a.state == "ALARM"
    ]
    return (items, {"alarms": ", ".join(i.source for i in items)}) if items else None


def _alarm_probe_items(ev: Evidence) -> list[EvidenceItem]:
    probed = _alarm_probe(ev)
    return probed[0] if probed else []


def _serverless_probe(ev: Evidence) -> tuple[list[EvidenceItem], dict[str, str]] | None:
    """An update refused while moving an instance-based endpoint to a serverless config (AWS publishes no text)."""
    texts = [t for _, _, t, _ in _texts(ev, _REPORTED)]
    instances = [v for v in ev.variants if v.role == "current" and not v.serverless]
    targets = [v for v in ev.variants if v.role != "current" and v.serverless]
    if not (instances and targets and any(re.search(r"ValidationE(?:rror|xception)", t) for t in texts)):
        return None
    item = EvidenceItem(
        kind="catalog",
        source=f"{targets[0].config_name}",
        text=f"variant {targets[0].name} of {targets[0].config_name} is serverless; the endpoint runs "
        f"{instances[0].instance_type} instances",
    )
    return [item], {}


def _autoscaled_probe(ev: Evidence) -> tuple[list[EvidenceItem], dict[str, str]] | None:
    """Only with a reported error about it: a scalable target alone is normal."""
    texts = [t for _, _, t, _ in _texts(ev, _REPORTED)]
    if not any(re.search(r"(?i)scalable target|auto ?scaling", t) for t in texts):
        return None
    items = [
        EvidenceItem(
            kind="catalog", source=f"endpoint/{ev.endpoint}/variant/{v.name}", text="registered scalable target"
        )
        for v in ev.variants
        if v.autoscaled and v.role == "current"
    ]
    return (items, {}) if items else None


def _failure_objects_probe(ev: Evidence) -> tuple[list[EvidenceItem], dict[str, str]] | None:
    items = [
        EvidenceItem(kind="s3", source="S3FailurePath", text=o.uri, at=o.last_modified) for o in ev.failure_objects
    ]
    return (items, {}) if items else None


_CUDA_FIX = (
    "Rebuild the image on a CUDA the host driver supports ({host_cuda}), or ship NVIDIA's CUDA compatibility "
    "package and enable it only when the host driver is older than it (compare /usr/local/cuda/compat/libcuda.so.1 "
    "with /proc/driver/nvidia/version in the ENTRYPOINT), or move to hosts with a newer driver: {newer_hosts}; "
    "InferenceAmiVersion al2-ami-sagemaker-inference-gpu-3-1 runs driver 550 / CUDA 12.4 (it does not mount the "
    "compat libraries). Never bundle NVIDIA driver packages in the image. Check with 'docker run {image} serve'."
)

SIGNATURES: tuple[Signature, ...] = (
    Signature(
        rule="update-rollback-failed",
        title="Rolling deployment and its rollback both failed (UpdateRollbackFailed)",
        severity="critical",
        status=frozenset({"UpdateRollbackFailed"}),
        text=r"UpdateRollbackFailed|rollback failed too",
        kinds=_REPORTED,
        cause="A rolling deployment failed and so did its automatic rollback: the endpoint is in service with a mix "
        "of the old and the new endpoint configuration on its instances.",
        fix="Call UpdateEndpoint again with the endpoint configuration you want (a known-good one), with a rolling "
        "or blue/green DeploymentConfig or none, and wait until DescribeEndpoint shows InService; then redeploy "
        "the fixed model.",
        guide=f"{_GUIDE}, Rolling deployments - Failure handling (p. 6321)",
        context_logs=True,
    ),
    Signature(
        rule="resource-limit-exceeded",
        title="Account instance quota reached (ResourceLimitExceeded)",
        severity="critical",
        text=r"account-level service limit '(?P<quota>[^']+)' is (?P<limit>\d+) Instances?, with current utilization "
        r"of (?P<used>\d+) Instances? and a request delta of (?P<delta>\d+) Instances?|ResourceLimitExceeded",
        kinds=frozenset({"failure_reason", "variant_status", "error", "scaling_activity"}),
        detail=_quota_detail,
        cause="SageMaker refused the capacity: {quota_text}. Creating or updating the endpoint, or scaling it out, "
        "cannot get the instances.",
        fix="Ask for a Service Quotas increase of '{quota}' (service SageMaker), or free instances (delete idle "
        "endpoints, lower other variants' counts), or use an instance type with spare quota. A rolling deployment "
        "needs only one batch of extra instances instead of a second full fleet; autoscaling's MaxCapacity should "
        "stay within the quota.",
        guide=f"{_GUIDE}, Automatic scaling - scaling activities, 'Failed ... ResourceLimitExceeded' (p. 6142)",
        supersedes=("endpoint-failed",),
    ),
    Signature(
        rule="nvml-driver-mismatch",
        title="NVIDIA driver/library version mismatch (NVML)",
        severity="critical",
        text=r"Failed to initialize NVML: Driver/library version mismatch",
        cause="The container's NVIDIA user-space libraries do not match the host's kernel driver: the image bundles "
        "NVIDIA driver packages, or enables a CUDA compatibility package the host driver does not support.",
        fix="Remove NVIDIA driver packages from the image (the host provides the driver); if the image ships a CUDA "
        "compatibility package, enable it only when the host driver is older than it, in the ENTRYPOINT.",
        guide=f"{_GUIDE}, Troubleshoot your model container with GPU capabilities - GPU card detection failure or "
        "NVIDIA initialization error (p. 6563)",
    ),
    Signature(
        rule="cuda-driver-mismatch",
        title="Container cannot start: CUDA newer than the host driver (CannotStartContainerError)",
        severity="critical",
        text=r"CannotStartContainerError|CUDA driver version is insufficient for CUDA runtime version"
        r"|unsatisfied condition: cuda>=(?P<cuda>\d+\.\d+)",
        detail=_cuda_detail,
        cause="The container for {instance_type} could not start: {cuda_detail}.",
        fix=_CUDA_FIX,
        guide=f"{_GUIDE}, Best practices to minimize interruptions during GPU driver upgrades - "
        "CannotStartContainerError (p. 6564)",
        context_logs=True,
        supersedes=("endpoint-failed",),
    ),
    Signature(
        rule="missing-port-label",
        title="Multi-container or pipeline image lacks the accept-bind-to-port label",
        severity="critical",
        text=r"(?:Ecr Image (?P<image>\S+) )?does not contain required "
        r"com\.amazonaws\.sagemaker\.capabilities\.accept-bind-to-port=true",
        cause="In a multi-container endpoint or an inference pipeline each container must listen on the port in "
        "SAGEMAKER_BIND_TO_PORT, and its image must declare it can: the image {image} has no such label.",
        fix="Add 'LABEL com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true' to the Dockerfile, make the "
        "server listen on $SAGEMAKER_BIND_TO_PORT (a second port from SAGEMAKER_SAFE_PORT_RANGE), push the image "
        "and create a new model.",
        guide=f"{_GUIDE}, Multi-container endpoints - Missing accept-bind-to-port=true Docker label (p. 6093)",
        supersedes=("endpoint-failed",),
    ),
    Signature(
        rule="ecr-pull-denied",
        title="SageMaker cannot pull the container image",
        severity="critical",
        text=r"does not grant ecr:GetDownloadUrlForLayer|does not have BatchGetImage permission"
        r"|Please make sure all images included in the model for the production variant (?P<variant>[\w.-]+) exist",
        cause="The image does not exist in that Region, or neither the execution role nor the ECR repository policy "
        "lets SageMaker pull it (common with custom images in a pipeline next to built-in algorithms).",
        fix="Check the image URI and Region; give the execution role ecr:BatchGetImage, ecr:GetDownloadUrlForLayer "
        "and ecr:BatchCheckLayerAvailability, and add an ECR repository policy statement allowing the "
        "sagemaker.amazonaws.com principal those three actions.",
        guide=f"{_GUIDE}, Troubleshoot Inference Pipelines - Amazon ECR permissions (p. 6114)",
        supersedes=("endpoint-failed", "access-denied"),
    ),
    Signature(
        rule="access-denied-tags",
        title="AccessDenied: the policy allows creating resources but not tagging them",
        severity="error",
        text=r"(?i)AccessDenied\w*[^\n]{0,300}(?:AddTags|tag)",
        kinds=_REPORTED,
        cause="Studio, the SDKs and InferOps tag what they create; a policy that allows sagemaker:Create* without "
        "sagemaker:AddTags makes the create call fail with AccessDenied.",
        fix="Grant sagemaker:AddTags on the resources being created (models, endpoint configs, endpoints), e.g. "
        "with a condition on aws:RequestTag; the AWS managed SageMaker policies already include it.",
        guide=f"{_GUIDE}, Deploy models for real-time inference - tagging permissions (p. 5993)",
        supersedes=("access-denied",),
    ),
    Signature(
        rule="access-denied",
        title="An AWS call was denied",
        severity="error",
        text=r"AccessDenied\w*|is not authorized to perform",
        kinds=_REPORTED,
        cause="An identity (the caller, InferOps' role or the model's execution role) lacks a permission the "
        "operation needs.",
        fix="Find the denied action and resource in the message (or CloudTrail's errorCode AccessDenied), grant it "
        "with the narrowest resource, and check it with the IAM policy simulator.",
        guide="Enterprise SageMaker operations - silent failures are IAM (002), and reference §18",
    ),
    Signature(
        rule="serverless-conversion",
        title="An instance-based endpoint cannot become serverless",
        severity="error",
        text=r"(?i)(?:ValidationE(?:rror|xception)|cannot|can ?not|not supported|unsupported)[^\n]{0,200}serverless"
        r"|serverless[^\n]{0,200}(?:ValidationE(?:rror|xception)|cannot|can ?not|not supported|unsupported)",
        kinds=_REPORTED,
        probe=_serverless_probe,
        cause="UpdateEndpoint with a ServerlessConfig on an instance-based real-time endpoint is refused with a "
        "ValidationError: that conversion is not supported (serverless to real-time is, one way only).",
        fix="Create a new serverless endpoint with the new config, move the callers to it, then delete the old "
        "endpoint. Serverless also excludes GPUs, multi-variant, pipelines, VPC and data capture.",
        guide=f"{_GUIDE}, Serverless Inference - feature exclusions (p. 6198)",
    ),
    Signature(
        rule="autoscaled-variant-blocks-update",
        title="An autoscaled variant blocks the update",
        severity="error",
        text=r"(?i)registered as (?:a )?scalable targets?|scalable targets?[^\n]{0,200}(?:deregister|not allowed|"
        r"not supported)",
        kinds=_REPORTED,
        probe=_autoscaled_probe,
        detail=_autoscaled_detail,
        cause="Variant(s) {variants} are registered with Application Auto Scaling; UpdateEndpoint may not change "
        "their instance type or remove them (only the model may change).",
        fix="Delete the scaling policies and DeregisterScalableTarget, raise the instance count if needed (scaling "
        "is blocked during the update), UpdateEndpoint with RetainAllVariantProperties, then register the target "
        "and policies again (InferOps does this with deregister_autoscaling: true).",
        guide=f"{_GUIDE}, Automatic scaling - update endpoints that use automatic scaling (p. 6148)",
    ),
    Signature(
        rule="pipeline-payload-too-large",
        title="Inter-container payload over 5 MB in the inference pipeline",
        severity="critical",
        text=r"request payload from (?P<source>[\w.-]+) to (?P<target>[\w.-]+) is (?P<bytes>\d+) bytes, which has "
        r"exceeded the maximum limit of 5 MB",
        probe=_payload_probe,
        applies=_is_pipeline,
        detail=_payload_detail,
        cause="{source} returns {size} to {target}; SageMaker passes at most 5 MB from one pipeline container to "
        "the next, so each such request fails with ModelError (424) before {target} sees it.",
        fix="Make {source}'s output smaller (only the features {target} needs, a compact binary format such as "
        "application/x-recordio-protobuf or compressed arrays), merge the two containers, or send large inputs "
        "through async inference (up to 1 GB) or batch transform.",
        guide=f"Troubleshoot Inference Pipelines - Use error messages (seeds/000; {_GUIDE} p. 6116)",
        supersedes=("pipeline-model-error", "container-errors", "model-errors"),
    ),
    Signature(
        rule="invocation-timeout",
        title="Invocations time out (60 s): cold start or slow inference",
        severity="error",
        text=r"timed out while waiting for a response from container (?P<container>[\w.-]+)"
        r"|upstream timed out \(110: Connection timed out\)|Read timeout on endpoint",
        metric=MetricTrigger("ModelLatency", "Maximum", INVOCATION_TIMEOUT_US * 0.9),
        cause="The container took (nearly) the 60 s SageMaker allows for /invocations: the model is loaded on the "
        "first request instead of at start-up (no warm-up), the instance is saturated, or one inference is simply "
        "longer than real-time hosting allows. Callers see ModelError 'Received server error (0)' or 504.",
        fix="Load the model in model_fn at start-up and warm it up before /ping answers 200; raise the model "
        "server's response timeout (MMS_DEFAULT_RESPONSE_TIMEOUT / TS_DEFAULT_RESPONSE_TIMEOUT, e.g. 500 s); "
        "check CPU/GPU/memory utilisation below; move long inferences to async inference (up to 1 h) or stream "
        "the response.",
        guide="Enterprise SageMaker operations - why is my endpoint returning 504 (seeds/002); "
        f"{_GUIDE}, Recommendation jobs - ModelError causes (p. 5989)",
        context_logs=True,
        supersedes=("pipeline-model-error", "model-errors"),
    ),
    Signature(
        rule="pipeline-model-error",
        title="A container returned an error (ModelError 424 names it)",
        severity="error",
        text=r"Received (?:server|client) error \((?P<code>[1-9]\d\d)\) from (?P<container>[\w.-]+)",
        detail=_container_streams_detail,
        cause="Container {container} answered {code}; SageMaker returns ModelError (424) to the caller and, for a "
        "pipeline, names the container that failed.",
        fix="Read {container}'s log stream(s) {streams} for the traceback; reproduce with the same payload against "
        "the container locally (docker run <image> serve, then POST /invocations).",
        guide="Troubleshoot Inference Pipelines - CloudWatch logs and error messages (seeds/000, seeds/001)",
        context_logs=True,
    ),
    Signature(
        rule="mme-model-not-ready",
        title="Multi-model endpoint: model not loaded yet, or memory full (ModelNotReadyException / 507)",
        severity="warning",
        text=r"ModelNotReadyException|Model (?:is )?not ready|HTTP/1\.[01]\" 507 ",
        metric=MetricTrigger("ModelLoadingWaitTime", "Maximum", 60_000_000),
        applies=_is_multi_model,
        cause="The first request for a model makes the container download and load it; after 60 s the caller gets "
        "ModelNotReadyException while loading goes on (up to 360 s). A 507 means the instance ran out of memory "
        "and the container unloads models (thrashing when it repeats).",
        fix="Retry ModelNotReadyException with backoff for up to 360 s (read_timeout 70, max_attempts 5); add "
        "instances or memory; watch LoadedModelCount, ModelCacheHit and ModelUnloadingTime; set "
        "ModelCacheSetting Disabled for models called once.",
        guide=f"{_GUIDE}, Multi-model endpoints - retry requests on ModelNotReadyException errors (p. 6058)",
    ),
    Signature(
        rule="async-expired-requests",
        title="Async requests expired in the queue",
        severity="error",
        metric=MetricTrigger("ExpiredRequests", "Sum", 1),
        applies=_is_async,
        cause="Requests waited longer than their TTL (RequestTTLSeconds, 6 h by default) in the endpoint's queue: "
        "capacity is too small for the backlog, or the endpoint sat at zero instances.",
        fix="Scale on ApproximateBacklogSizePerInstance with a higher MaxCapacity, add the "
        "HasBacklogWithoutCapacity step policy so a scaled-to-zero endpoint wakes at once, and give requests a "
        "TTL that matches their deadline.",
        guide=f"{_GUIDE}, Asynchronous inference - alarms and logs, ExpiredRequests (p. 6251)",
    ),
    Signature(
        rule="async-backlog-without-capacity",
        title="Async backlog with no instance to serve it",
        severity="error",
        metric=MetricTrigger("HasBacklogWithoutCapacity", "Maximum", 1),
        applies=_is_async,
        cause="Requests are queued while the endpoint has zero instances; with only backlog target tracking it "
        "scales out from zero only once the backlog exceeds the target.",
        fix="Add the 'HasBacklogWithoutCapacity-ScalingPolicy' step policy (ChangeInCapacity +1) and its alarm "
        "(Average, 60 s, 2 of 2, >= 1), or keep MinCapacity at 1 for latency-sensitive queues.",
        guide=f"{_GUIDE}, Autoscale an asynchronous endpoint - HasBacklogWithoutCapacity (p. 6258)",
    ),
    Signature(
        rule="async-invocation-failures",
        title="Async invocations failed (S3 failure objects)",
        severity="error",
        metric=MetricTrigger("InvocationFailures", "Sum", 1),
        probe=_failure_objects_probe,
        applies=_is_async,
        cause="The container failed async requests (HTTP 500 from the model is not retried); SageMaker wrote the "
        "error to S3FailurePath and the error topic.",
        fix="Read the failure objects and the container's log stream (and <variant>/<instance>/data-log for the "
        "inference ids); check CPU and memory; make /ping answer while a long request runs (a blocked /ping "
        "marks the instance unhealthy).",
        guide=f"{_GUIDE}, Asynchronous inference - troubleshooting (p. 6266)",
        context_logs=True,
    ),
    Signature(
        rule="serverless-write-permission",
        title="Serverless container cannot write its files",
        severity="error",
        text=r"Permission denied|Read-only file system",
        kinds=frozenset({"log"}),
        applies=_is_serverless,
        cause="A container built for instances writes where serverless inference does not let it (it runs as "
        "another user): it fails to start or fails its ping.",
        fix="In the Dockerfile, 'RUN chmod o+rwX <path>' for the files and directories it writes, rebuild and "
        "create a new model.",
        guide=f"{_GUIDE}, Serverless Inference - troubleshooting, container issues (p. 6232)",
        supersedes=("container-errors",),
    ),
    Signature(
        rule="jvm-cpu-detection",
        title="JVM sees one CPU (container support misdetection)",
        severity="warning",
        text=r"determined by OSContainer: 1\b",
        kinds=frozenset({"log"}),
        cause="The JVM in the container detects the CPU count as 1 and sizes its threads, GC and compilers for one "
        "core: throughput and latency suffer.",
        fix="Start the JVM with -XX:-UseContainerSupport (also for JVMs used indirectly, e.g. SparkML).",
        guide=f"{_GUIDE}, Troubleshoot deployments - detection errors in the active CPU count (p. 6558)",
    ),
    Signature(
        rule="missing-sagemaker-program",
        title="Framework container does not find the inference script",
        severity="error",
        text=r"'NoneType' object has no attribute 'transform'",
        kinds=frozenset({"log", "error"}),
        cause="The framework container did not load the user script: SAGEMAKER_PROGRAM or "
        "SAGEMAKER_SUBMIT_DIRECTORY is missing from the model's environment, so every prediction fails (503).",
        fix="Set SAGEMAKER_PROGRAM=inference.py and SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/model/code (or the S3 "
        "source tarball) in the model's Environment and create a new model.",
        guide="reference/sagemaker-facts.md §16-17 (framework containers)",
        supersedes=("container-errors",),
    ),
    Signature(
        rule="ping-health-check",
        title="Container failed the ping health check",
        severity="critical",
        text=r"did not pass the ping health check|\"GET /ping HTTP/1\.[01]\" [45]\d\d ",
        detail=_ping_detail,
        more=lambda ev: _metric_hits(ev, MetricTrigger("MemoryUtilization", "Maximum", 80)),
        cause="The {container} container of variant {variant} did not answer GET /ping with 200 in time{where}: it "
        "crashed while starting (see the log lines), is still loading a large model, or runs out of memory.",
        fix="Fix the error in the container's log stream; test the image locally (SageMaker local mode, or "
        "'docker run <image> serve' and curl /ping and /invocations on 8080); for large models raise "
        "ContainerStartupHealthCheckTimeoutInSeconds (and ModelDataDownloadTimeoutInSeconds); for pipelines and "
        "multi-container endpoints use an instance type with more memory and CPU.",
        guide=f"{_GUIDE}, Troubleshoot deployments - Primary container did not pass ping health checks (p. 6559)",
        context_logs=True,
        supersedes=("endpoint-failed", "container-errors"),
    ),
    Signature(
        rule="deployment-execution-timeout",
        title="The deployment ran past MaximumExecutionTimeoutInSeconds",
        severity="error",
        text=r"MaximumExecutionTimeoutInSeconds",
        kinds=_REPORTED,
        cause="SageMaker rolled the update back because it did not finish within its execution timeout "
        "(provisioning, every bake and the termination wait must fit in it).",
        fix="Raise MaximumExecutionTimeoutInSeconds above the sum of the waits plus provisioning time (up to "
        "28,800 s), or use fewer/shorter steps; InferOps' plan shows the expected total.",
        guide=f"{_GUIDE}, Blue/green deployments - MaximumExecutionTimeoutInSeconds (reference §2)",
    ),
    Signature(
        rule="rollback-alarm",
        title="SageMaker rolled the deployment back: a rollback alarm fired",
        severity="error",
        text=r"(?i)alarm\(?s?\)?[^\n]{0,200}(?:ALARM|rolled back)|rolled back[^\n]{0,200}alarm",
        kinds=_REPORTED,
        detail=_rollback_detail,
        more=lambda ev: _alarm_probe_items(ev) + _config_metrics_probe(ev),
        cause="During a bake an auto-rollback alarm ({alarms}) went into ALARM, so SageMaker sent all traffic back "
        "to the old fleet: the new model's errors or latency (per endpoint config below) breached it.",
        fix="Compare the new and old fleets' metrics (EndpointConfigName dimension) and read the new fleet's logs; "
        "fix the model and deploy again. If the alarm was noise, tune its threshold or evaluation periods.",
        guide=f"{_GUIDE}, Deployment guardrails - auto-rollback configuration and monitoring (reference §2)",
        supersedes=("alarm-in-alarm",),
    ),
    Signature(
        rule="server-errors",
        title="The endpoint answers with 5XX errors",
        severity="error",
        metric=MetricTrigger("Invocation5XXErrors", "Sum", 0.05, per="Invocations"),
        cause="At least 5 % of requests failed with a server error over the window.",
        fix="Read the container's log streams for the errors; check utilisation (5XX under load means too few "
        "instances: load-test and autoscale).",
        guide="Enterprise SageMaker operations - 5xx under load (seeds/002)",
        context_logs=True,
    ),
    Signature(
        rule="model-errors",
        title="The model container returns errors",
        severity="error",
        metric=MetricTrigger("InvocationModelErrors", "Sum", 0.05, per="Invocations"),
        cause="At least 5 % of requests got a non-2XX answer from the model container (errors, timeouts, "
        "malformed responses).",
        fix="Read the container's log streams; replay a failing payload against the container locally.",
        guide="Troubleshoot Inference Pipelines - CloudWatch logs (seeds/000)",
        context_logs=True,
    ),
    Signature(
        rule="cold-start",
        title="Cold starts: SageMaker's overhead latency spikes",
        severity="warning",
        metric=MetricTrigger("OverheadLatency", "Maximum", 1_000_000),
        cause="OverheadLatency reached a second or more: requests waited for capacity to start (serverless cold "
        "starts, new instances) rather than for the model.",
        fix="Keep capacity warm: provisioned concurrency for serverless, a minimum instance count, scale out "
        "earlier; warm the model up at start-up.",
        guide=f"{_GUIDE}, Serverless Inference - cold starts, OverheadLatency (reference §10, §13)",
    ),
    Signature(
        rule="resource-pressure",
        title="Memory or disk nearly full on the instances",
        severity="warning",
        metric=MetricTrigger("MemoryUtilization", "Maximum", 90),
        cause="Instance memory reached 90 % or more: the model server can be killed, fail its ping, or unload models.",
        fix="Use an instance type with more memory, fewer workers or model copies per instance, or fewer containers "
        "per instance.",
        guide=f"{_GUIDE}, Multi-container endpoints - ping health check errors (p. 6093)",
    ),
    Signature(
        rule="disk-full",
        title="Instance disk nearly full",
        severity="warning",
        metric=MetricTrigger("DiskUtilization", "Maximum", 90),
        cause="The instance's disk reached 90 %: model downloads and the model server's temporary files fail.",
        fix="Raise VolumeSizeInGB (1-512 GB) or use an instance type with NVMe storage; keep artifacts uncompressed "
        "(S3Prefix) for large models.",
        guide=f"{_GUIDE}, Large model inference - volume size (reference §15)",
    ),
    Signature(
        rule="alarm-in-alarm",
        title="Alarms on this endpoint are in ALARM",
        severity="warning",
        probe=_alarm_probe,
        cause="CloudWatch alarms watching this endpoint ({alarms}) are in ALARM now.",
        fix="Read each alarm's reason (below) and the matching metrics; these alarms also roll back deployments "
        "that list them.",
        guide="reference §2 (rollback alarms) and §13 (metrics)",
    ),
    Signature(
        rule="endpoint-failed",
        title="The endpoint is Failed",
        severity="critical",
        status=frozenset({"Failed"}),
        cause="Endpoint creation failed: {failure_reason}. A Failed endpoint serves nothing and accepts only "
        "DeleteEndpoint.",
        fix="Fix the cause in the FailureReason, delete the endpoint and create it again (a new endpoint config if "
        "the variant changes).",
        guide=f"{_GUIDE}, DescribeEndpoint - EndpointStatus Failed (reference §1)",
        context_logs=True,
        fallback=True,
    ),
    Signature(
        rule="container-errors",
        title="The containers log errors",
        severity="warning",
        text=_ERROR_LINE.pattern,
        kinds=frozenset({"log"}),
        cause="The containers wrote error lines in the window (tracebacks, [error], non-2xx answers).",
        fix="Read the lines below in their streams; they usually name the file, package or setting at fault.",
        guide="Troubleshoot Inference Pipelines - CloudWatch logs (seeds/000)",
        fallback=True,
    ),
)


# ------------------------------------------------------------------------------------------------ matching
def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_item(line: LogLine) -> EvidenceItem:
    return EvidenceItem(
        kind="log", source=line.stream, text=line.message[:MAX_LINE_CHARS], at=_iso(line.timestamp_ms / 1000)
    )


def _texts(ev: Evidence, kinds: Iterable[str]) -> Iterable[tuple[str, str, str, str | None]]:
    """(kind, source, text, at) of every text the signatures search."""
    wanted = set(kinds)
    if "failure_reason" in wanted and ev.failure_reason:
        yield "failure_reason", "DescribeEndpoint FailureReason", ev.failure_reason, None
    if "variant_status" in wanted:
        for v in ev.variants:
            for status in v.statuses:
                yield "variant_status", f"{v.name} ({v.config_name}) VariantStatus", status, None
    if "error" in wanted:
        for error in ev.errors:
            yield "error", "reported error", error, None
    if "scaling_activity" in wanted:
        for a in ev.scaling:
            yield "scaling_activity", f"{a.resource_id} activity {a.activity_id}", f"{a.status}: {a.message}", a.start
    if "log" in wanted:
        for line in ev.logs:
            yield "log", line.stream, line.message, _iso(line.timestamp_ms / 1000)


def _number(value: float, unit: str = "") -> str:
    if unit == "Microseconds":
        return f"{value / 1_000_000:.3g} s" if value >= 1_000_000 else f"{value / 1000:.4g} ms"
    if unit == "Percent":
        return f"{value:.4g} %"
    return f"{value:.6g}"


def _metric_hits(ev: Evidence, trigger: MetricTrigger) -> list[EvidenceItem]:
    hits = []
    for m in ev.metric(trigger.name, trigger.statistic):
        if trigger.per is None:
            if m.value >= trigger.at_least:
                hits.append(EvidenceItem(kind="metric", source=m.name, text=m.describe()))
            continue
        base = next((b for b in ev.metric(trigger.per, "Sum") if b.dimensions == m.dimensions), None)
        if base is None or base.value < trigger.min_per:
            continue
        ratio = m.value / base.value
        if ratio >= trigger.at_least:
            dims = ", ".join(f"{k}={v}" for k, v in m.dimensions.items())
            text = f"{m.name} {m.value:.6g} of {base.value:.6g} {trigger.per} ({ratio:.1%}) ({dims})"
            hits.append(EvidenceItem(kind="metric", source=m.name, text=text))
    return hits


def _context_logs(ev: Evidence, limit: int) -> list[EvidenceItem]:
    """The most telling error lines: exceptions first, then [error]/ERROR lines, then non-2xx answers."""

    def rank(line: LogLine) -> int:
        text = line.message
        if re.search(r"^\s*\w+(?:\.\w+)*(?:Error|Exception)\b", text) or "NVML" in text or "CUDA" in text:
            return 0
        if re.search(r"\[(?:ERROR|error|CRITICAL)\]|\bERROR\b|FATAL|failed to boot|Failed to", text):
            return 1
        return 2

    lines = [line for line in ev.logs if _ERROR_LINE.search(line.message)]
    lines.sort(key=lambda line: (rank(line), line.timestamp_ms))
    return _unique_logs([_log_item(line) for line in lines], limit)


_STAMPS = re.compile(r"\[[^\]]*\d{2}:\d{2}:\d{2}[^\]]*\]|\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}|\*\d+")


def _unique_logs(items: list[EvidenceItem], limit: int) -> list[EvidenceItem]:
    """One copy of a line every instance logged (same text but for its time stamps)."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = _STAMPS.sub("", item.text)
        if key not in seen:
            seen.add(key)
            out.append(item)
        if len(out) >= limit:
            break
    return out


class _Defaults(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def _fire(sig: Signature, ev: Evidence) -> tuple[list[EvidenceItem], dict[str, str]] | None:
    if sig.applies is not None and not sig.applies(ev):
        return None
    items: list[EvidenceItem] = []
    fields: dict[str, str] = {}
    pattern = sig.pattern
    if pattern is not None:
        best: dict[str, str] = {}
        for kind, source, text, at in _texts(ev, sig.kinds):
            matches = list(pattern.finditer(text))
            if not matches:
                continue
            for found in matches:  # the match that names the most (alternatives leave groups empty)
                groups = {k: v for k, v in found.groupdict().items() if v is not None}
                if len(groups) > len(best):
                    best = groups
            items.append(EvidenceItem(kind=kind, source=source, text=text[:MAX_LINE_CHARS], at=at))
        fields.update(best)
    if sig.status and ev.status in sig.status:
        items.insert(
            0, EvidenceItem(kind="failure_reason", source="DescribeEndpoint", text=f"EndpointStatus {ev.status}")
        )
    if sig.metric is not None:
        items += _metric_hits(ev, sig.metric)
    if sig.probe is not None:
        probed = sig.probe(ev)
        if probed is not None:
            items += probed[0]
            for key, value in probed[1].items():
                fields.setdefault(key, value)
    if not items:
        return None
    return items, fields


def analyze(ev: Evidence) -> list[Finding]:
    """Match the evidence against `SIGNATURES`: findings, most severe first, then in table order."""
    fired: list[tuple[int, Signature, list[EvidenceItem], dict[str, str]]] = []
    for index, sig in enumerate(SIGNATURES):
        if sig.fallback:
            continue
        result = _fire(sig, ev)
        if result is not None:
            fired.append((index, sig, *result))
    if not fired:
        for index, sig in enumerate(SIGNATURES):
            if sig.fallback and (result := _fire(sig, ev)) is not None:
                fired.append((index, sig, *result))
                break
    dropped = {rule for _, sig, _, _ in fired for rule in sig.supersedes}
    findings = []
    for _, sig, items, fields in fired:
        if sig.rule in dropped:
            continue
        values = _Defaults(endpoint=ev.endpoint, failure_reason=ev.failure_reason or "no FailureReason given", **fields)
        if sig.detail is not None:
            values.update(sig.detail(ev, dict(values)) or {})
        matched = _dedupe(items)
        evidence = [e for e in matched if e.kind != "log"][:MATCHED_OTHER]
        evidence += _unique_logs([e for e in matched if e.kind == "log"], MATCHED_LOGS)
        if sig.more is not None:
            evidence += sig.more(ev)
        if sig.context_logs:
            evidence += _context_logs(ev, CONTEXT_LOGS)
        evidence = _dedupe(evidence)[:MAX_EVIDENCE]
        stream = next((e.source for e in evidence if e.kind == "log"), None)
        findings.append(
            Finding(
                rule=sig.rule,
                title=sig.title,
                severity=sig.severity,
                cause=sig.cause.format_map(values),
                fix=sig.fix.format_map(values),
                guide=sig.guide,
                evidence=evidence,
                logs_url=logs_url(ev.region, ev.endpoint, stream),
            )
        )
    order = {sig.rule: i for i, sig in enumerate(SIGNATURES)}
    findings.sort(key=lambda f: (_SEVERITY_RANK[f.severity], order[f.rule]))
    return findings[:MAX_FINDINGS]


def _dedupe(items: list[EvidenceItem]) -> list[EvidenceItem]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for item in items:
        key = (item.kind, item.source, item.text)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def log_group(endpoint: str) -> str:
    return f"{LOG_GROUP_PREFIX}{endpoint}"


def logs_url(region: str, endpoint: str, stream: str | None = None) -> str:
    """The console link SageMaker's own error messages use (logEventViewer), to the stream when known."""
    url = f"https://console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group={log_group(endpoint)}"
    return f"{url};stream={stream}" if stream else url


def report(ev: Evidence) -> Diagnosis:
    findings = analyze(ev) if ev.found or ev.errors else []
    minutes = max(1, round((ev.window_end - ev.window_start) / 60))
    if findings:
        first = findings[0]
        summary = f"{len(findings)} finding(s); most severe: {first.title}. {first.cause}"
    elif not ev.found:
        summary = f"endpoint {ev.endpoint} does not exist (any more); nothing reported matched a known failure"
    else:
        summary = "No known failure signature matched. Checked: " + "; ".join(ev.checked)
        if ev.gaps:
            summary += ". Could not check: " + "; ".join(ev.gaps)
    return Diagnosis(
        endpoint=ev.endpoint,
        status=ev.status,
        failure_reason=ev.failure_reason,
        generated_at=_iso(ev.window_end) or "",
        window=Window(start=_iso(ev.window_start) or "", end=_iso(ev.window_end) or "", minutes=minutes),
        summary=summary,
        findings=findings,
        checked=ev.checked,
        gaps=ev.gaps,
        log_group=log_group(ev.endpoint),
        logs_url=logs_url(ev.region, ev.endpoint),
    )


# ------------------------------------------------------------------------------------------------ gathering
@dataclass(frozen=True)
class Clients:
    """The read-only clients a diagnosis uses (logs and s3 are made on demand when not given)."""

    sagemaker: SageMakerClient
    cloudwatch: CloudWatchClient
    autoscaling: ApplicationAutoScalingClient
    logs: Any = None  # CloudWatch Logs (no typed stubs in this project)
    s3: S3Client | None = None


def default_clients(region: str | None = None, *, read_timeout: float = 5.0) -> Clients:
    """boto3 clients with short timeouts and one retry: a diagnosis must not hang on a slow call."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=3, read_timeout=read_timeout, retries={"mode": "standard", "max_attempts": 2})
    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    return Clients(
        sagemaker=session.client("sagemaker", config=config),
        cloudwatch=session.client("cloudwatch", config=config),
        autoscaling=session.client("application-autoscaling", config=config),
        logs=session.client("logs", config=config),
        s3=session.client("s3", config=config),
    )


@dataclass
class _Collector:
    endpoint: str
    budget: float
    started: float = field(default_factory=time.monotonic)
    checked: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)

    def expired(self) -> bool:
        return time.monotonic() - self.started > self.budget

    def step(self, what: str, action: Callable[[], None]) -> None:
        """Run one read; a refusal, an error or a spent budget becomes a gap, never an exception."""
        if self.expired():
            self.gaps.append(f"{what}: skipped, the {self.budget:g} s time budget was used up")
            return
        try:
            action()
        except ClientError as error:
            details = error.response.get("Error", {})
            self.gaps.append(f"{what}: {details.get('Code', 'error')}: {details.get('Message', '')}".rstrip(": "))
        except (BotoCoreError, OSError, KeyError, ValueError, TypeError) as error:
            self.gaps.append(f"{what}: {type(error).__name__}: {error}")


def _missing(error: ClientError) -> bool:
    details = error.response.get("Error", {})
    message = str(details.get("Message", "")).lower()
    return details.get("Code") in ("ValidationException", "ResourceNotFound") and "could not find" in message


def _container_infos(model: Mapping[str, Any]) -> list[ContainerInfo]:
    if model.get("PrimaryContainer"):
        c = model["PrimaryContainer"]
        return [ContainerInfo(name="primary", image=c.get("Image"), mode=c.get("Mode"))]
    return [
        ContainerInfo(name=c.get("ContainerHostname") or f"container-{i}", image=c.get("Image"), mode=c.get("Mode"))
        for i, c in enumerate(model.get("Containers", [])[:15], start=1)
    ]


def _variant_infos(
    config: Mapping[str, Any],
    role: Literal["current", "pending", "target"],
    live: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, list[ContainerInfo]],
    targets: set[str],
) -> list[VariantInfo]:
    out = []
    for spec in list(config.get("ProductionVariants", []))[:MAX_VARIANTS]:
        name = spec["VariantName"]
        state = live.get(name, {}) if role == "current" else {}
        out.append(
            VariantInfo(
                name=name,
                config_name=config["EndpointConfigName"],
                role=role,
                instance_type=spec.get("InstanceType"),
                serverless="ServerlessConfig" in spec,
                model_name=spec.get("ModelName"),
                containers=models.get(spec.get("ModelName") or "", []),
                current_count=state.get("CurrentInstanceCount"),
                desired_count=state.get("DesiredInstanceCount", spec.get("InitialInstanceCount")),
                statuses=[f"{s.get('Status')}: {s.get('StatusMessage', '')}" for s in state.get("VariantStatus", [])],
                autoscaled=name in targets and role == "current",
            )
        )
    return out


def gather(
    endpoint: str,
    clients: Clients,
    *,
    start: float,
    end: float,
    errors: Sequence[str] = (),
    configs: Sequence[str] = (),
    alarm_names: Sequence[str] = (),
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    require_endpoint: bool = True,
) -> Evidence:
    """Read the endpoint's evidence for [start, end] (epoch seconds). Unknown endpoint -> NotFound (404) when
    `require_endpoint`, else evidence with found=False (an operation's endpoint may be gone)."""
    col = _Collector(endpoint, budget_seconds)
    region = clients.sagemaker.meta.region_name
    data: dict[str, Any] = {"configs": {}, "models": {}, "variants": [], "targets": set()}
    reported = [e[:MAX_ERROR_CHARS] for e in errors if e][:MAX_ERRORS]

    described: dict[str, Any] = {}
    try:
        described = dict(clients.sagemaker.describe_endpoint(EndpointName=endpoint))
    except ClientError as error:
        if not _missing(error):
            raise
        if require_endpoint:
            raise NotFound(f"endpoint '{endpoint}' does not exist", "name") from error
        col.checked.append(f"DescribeEndpoint {endpoint}: not found")
        return Evidence(
            endpoint=endpoint, region=region, found=False, errors=reported, window_start=start, window_end=end,
            checked=col.checked, gaps=col.gaps,
        )  # fmt: skip
    status = described.get("EndpointStatus")
    col.checked.append(f"DescribeEndpoint {endpoint}: {status} on {described.get('EndpointConfigName')}")
    pending = (described.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
    roles: dict[str, Literal["current", "pending", "target"]] = {described["EndpointConfigName"]: "current"}
    if pending:
        roles.setdefault(pending, "pending")
    for name in configs:
        roles.setdefault(name, "target")
    live = {v["VariantName"]: v for v in described.get("ProductionVariants", [])}

    def read_configs() -> None:
        for name in list(roles)[:MAX_CONFIGS]:
            if col.expired():
                break
            try:
                data["configs"][name] = clients.sagemaker.describe_endpoint_config(EndpointConfigName=name)
            except ClientError as error:
                if not _missing(error):
                    raise
                col.gaps.append(f"endpoint config {name}: not found (deleted?)")
        wanted = {v.get("ModelName") for c in data["configs"].values() for v in c.get("ProductionVariants", [])} - {
            None
        }
        for model in sorted(str(m) for m in wanted)[:MAX_MODELS]:
            if col.expired():
                col.gaps.append("models: not all read, the time budget was used up")
                break
            try:
                data["models"][model] = _container_infos(clients.sagemaker.describe_model(ModelName=model))
            except ClientError as error:
                if not _missing(error):
                    raise
                col.gaps.append(f"model {model}: not found (deleted?)")
        col.checked.append(f"{len(data['configs'])} endpoint config(s), {len(data['models'])} model(s)")

    col.step("endpoint configs and models", read_configs)

    def read_targets() -> None:
        ids = [f"endpoint/{endpoint}/variant/{v}" for v in list(live)[:MAX_VARIANTS]]
        if ids:
            found = clients.autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=ids)
            data["targets"] = {t["ResourceId"].rsplit("/", 1)[-1] for t in found.get("ScalableTargets", [])}

    col.step("scalable targets", read_targets)
    variants: list[VariantInfo] = []
    for name, role in roles.items():
        config = data["configs"].get(name)
        if config is not None:
            variants += _variant_infos(config, role, live, data["models"], data["targets"])
    current_config = data["configs"].get(described["EndpointConfigName"], {})
    is_async = bool(described.get("AsyncInferenceConfig") or current_config.get("AsyncInferenceConfig"))

    metrics: list[MetricValue] = []
    col.step(
        "CloudWatch metrics",
        lambda: metrics.extend(_read_metrics(clients, endpoint, variants, is_async, start, end, col)),
    )
    alarms: list[AlarmInfo] = []
    names = list(alarm_names) + [
        a["AlarmName"]
        for a in ((described.get("LastDeploymentConfig") or {}).get("AutoRollbackConfiguration") or {}).get(
            "Alarms", []
        )
    ]
    col.step("CloudWatch alarms", lambda: alarms.extend(_read_alarms(clients, endpoint, names, col)))
    scaling: list[ScalingInfo] = []
    col.step(
        "Application Auto Scaling activities",
        lambda: scaling.extend(_read_activities(clients, endpoint, list(live), start, col)),
    )
    logs: list[LogLine] = []
    col.step(
        f"CloudWatch Logs {log_group(endpoint)}",
        lambda: logs.extend(_read_logs(clients, endpoint, any(v.pipeline for v in variants), start, end, col)),
    )
    failures: list[FailureObject] = []
    async_config = described.get("AsyncInferenceConfig") or current_config.get("AsyncInferenceConfig") or {}
    failure_path = (async_config.get("OutputConfig") or {}).get("S3FailurePath")
    if failure_path:
        col.step(
            "async S3 failure objects", lambda: failures.extend(_read_failures(clients, str(failure_path), start, col))
        )
    if reported:
        col.checked.append(f"{len(reported)} reported error message(s)")
    return Evidence(
        endpoint=endpoint,
        region=region,
        status=status,
        config_name=described.get("EndpointConfigName"),
        failure_reason=described.get("FailureReason"),
        is_async=is_async,
        variants=variants,
        metrics=metrics,
        alarms=alarms,
        scaling=scaling,
        logs=logs,
        errors=reported,
        failure_objects=failures,
        window_start=start,
        window_end=end,
        checked=col.checked,
        gaps=col.gaps,
    )


def _metric_queries(
    endpoint: str, variants: list[VariantInfo], is_async: bool
) -> list[tuple[str, str, dict[str, str], str, str]]:
    """(namespace, metric, dimensions, statistic, unit) for every series a rule or a finding may need."""
    sm, inst = "AWS/SageMaker", "/aws/sagemaker/Endpoints"
    out: list[tuple[str, str, dict[str, str], str, str]] = []
    current = [v for v in variants if v.role == "current"]
    for v in current:
        dims = {"EndpointName": endpoint, "VariantName": v.name}
        if is_async:
            for name in ("ExpiredRequests", "InvocationFailures", "InvocationsProcesssed"):
                out.append((sm, name, dims, "Sum", "Count"))
        else:
            for name in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "InvocationModelErrors"):
                out.append((sm, name, dims, "Sum", "None"))
            out.append((sm, "OverheadLatency", dims, "Maximum", "Microseconds"))
        out.append((sm, "ModelLatency", dims, "Average", "Microseconds"))
        out.append((sm, "ModelLatency", dims, "Maximum", "Microseconds"))
        if v.serverless:
            out.append((sm, "ModelSetupTime", dims, "Maximum", "Microseconds"))
        else:
            for name in ("CPUUtilization", "MemoryUtilization", "DiskUtilization"):
                out.append((inst, name, dims, "Maximum", "Percent"))
            spec = _spec(v.instance_type)
            if spec is not None and spec.accelerator.kind == "gpu":
                for name in ("GPUUtilization", "GPUMemoryUtilization"):
                    out.append((inst, name, dims, "Maximum", "Percent"))
        if v.multi_model:
            out.append((sm, "ModelLoadingWaitTime", dims, "Maximum", "Microseconds"))
            out.append((sm, "ModelCacheHit", dims, "Average", "None"))
        if v.pipeline:
            for c in v.containers:
                cdims = {**dims, "ContainerName": c.name}
                out.append((sm, "ContainerLatency", cdims, "Average", "Microseconds"))
                out.append((sm, "ContainerLatency", cdims, "Maximum", "Microseconds"))
    if is_async:
        dims = {"EndpointName": endpoint}
        for name, stat in (
            ("ApproximateBacklogSize", "Maximum"),
            ("HasBacklogWithoutCapacity", "Maximum"),
            ("ApproximateAgeOfOldestRequest", "Maximum"),
        ):
            out.append((sm, name, dims, stat, "None"))
    seen_configs = {v.config_name for v in variants}
    if len(seen_configs) > 1:  # a deployment: the old and the new fleet side by side
        for v in variants:
            dims = {"EndpointName": endpoint, "VariantName": v.name, "EndpointConfigName": v.config_name}
            if not is_async:
                out.append((sm, "Invocations", dims, "Sum", "None"))
            out.append((sm, "Invocation5XXErrors", dims, "Sum", "None"))
            out.append((sm, "ModelLatency", dims, "Maximum", "Microseconds"))
    return out[:500]


def _read_metrics(
    clients: Clients, endpoint: str, variants: list[VariantInfo], is_async: bool, start: float, end: float,
    col: _Collector,
) -> list[MetricValue]:  # fmt: skip
    queries = _metric_queries(endpoint, variants, is_async)
    if not queries:
        col.checked.append("CloudWatch metrics: no variant to query")
        return []
    seconds = max(60, math.ceil((end - start) / 60) * 60)
    request = [
        {
            "Id": f"m{i}",
            "MetricStat": {
                "Metric": {
                    "Namespace": ns,
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                },
                "Period": seconds,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for i, (ns, name, dims, stat, _) in enumerate(queries)
    ]
    values: dict[str, list[float]] = {}
    token: str | None = None
    for _ in range(3):
        kwargs: dict[str, Any] = {
            "MetricDataQueries": request,
            "StartTime": datetime.fromtimestamp(start, tz=UTC),
            "EndTime": datetime.fromtimestamp(end, tz=UTC),
        }
        if token:
            kwargs["NextToken"] = token
        page = clients.cloudwatch.get_metric_data(**kwargs)
        for result in page.get("MetricDataResults", []):
            values.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values", []))
        token = page.get("NextToken")
        if not token:
            break
    out = []
    for i, (ns, name, dims, stat, unit) in enumerate(queries):
        series = [v for v in values.get(f"m{i}", []) if math.isfinite(v)]
        if not series:
            continue
        value = {"Sum": sum(series), "Maximum": max(series), "Minimum": min(series)}.get(
            stat, sum(series) / len(series)
        )
        out.append(MetricValue(namespace=ns, name=name, dimensions=dims, statistic=stat, value=value, unit=unit))
    minutes = round((end - start) / 60)
    col.checked.append(f"CloudWatch metrics: {len(queries)} series over {minutes} min, {len(out)} with data")
    return out


def _alarm_mentions(alarm: Mapping[str, Any], endpoint: str) -> bool:
    def dims_of(metric: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return list(metric.get("Dimensions", []))

    dims = dims_of(alarm)
    for query in alarm.get("Metrics", []):
        dims += dims_of((query.get("MetricStat") or {}).get("Metric") or {})
    return any(d.get("Name") == "EndpointName" and d.get("Value") == endpoint for d in dims)


def _read_alarms(clients: Clients, endpoint: str, names: list[str], col: _Collector) -> list[AlarmInfo]:
    found: dict[str, Mapping[str, Any]] = {}
    unique = list(dict.fromkeys(names))[:100]
    if unique:
        page = clients.cloudwatch.describe_alarms(AlarmNames=unique, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        for metric_alarm in page.get("MetricAlarms", []):
            found[metric_alarm["AlarmName"]] = metric_alarm
        for composite in page.get("CompositeAlarms", []):
            found[composite["AlarmName"]] = composite
    token: str | None = None
    for _ in range(MAX_ALARM_PAGES):  # firing alarms on this endpoint that no deployment named
        if col.expired():
            break
        kwargs: dict[str, Any] = {"StateValue": "ALARM", "MaxRecords": 100}
        if token:
            kwargs["NextToken"] = token
        page = clients.cloudwatch.describe_alarms(**kwargs)
        for alarm in page.get("MetricAlarms", []):
            if _alarm_mentions(alarm, endpoint):
                found.setdefault(alarm["AlarmName"], alarm)
        token = page.get("NextToken")
        if not token:
            break
    out = []
    for name, seen in found.items():
        updated = seen.get("StateUpdatedTimestamp")
        out.append(
            AlarmInfo(
                name=name,
                state=str(seen.get("StateValue", "")),
                reason=str(seen.get("StateReason", ""))[:MAX_LINE_CHARS],
                metric=seen.get("MetricName"),
                updated=_iso(updated.timestamp()) if isinstance(updated, datetime) else None,
            )
        )
    firing = sum(1 for a in out if a.state == "ALARM")
    col.checked.append(f"CloudWatch alarms: {len(out)} on this endpoint, {firing} in ALARM")
    return out


def _read_activities(
    clients: Clients, endpoint: str, variants: list[str], start: float, col: _Collector
) -> list[ScalingInfo]:
    out = []
    for variant in variants[:MAX_VARIANTS]:
        if col.expired():
            col.gaps.append("scaling activities: not all variants read, the time budget was used up")
            break
        page = clients.autoscaling.describe_scaling_activities(
            ServiceNamespace="sagemaker", ResourceId=f"endpoint/{endpoint}/variant/{variant}", MaxResults=MAX_ACTIVITIES
        )
        for a in page.get("ScalingActivities", []):
            begun = a.get("StartTime")
            stamp = begun.timestamp() if isinstance(begun, datetime) else None
            if stamp is not None and stamp < start:
                continue
            out.append(
                ScalingInfo(
                    activity_id=a["ActivityId"],
                    resource_id=a["ResourceId"],
                    status=a["StatusCode"],
                    cause=a.get("Cause", ""),
                    description=a.get("Description", ""),
                    message=a.get("StatusMessage", "")[:MAX_ERROR_CHARS],
                    start=_iso(stamp),
                )
            )
    failed = sum(1 for a in out if a.status == "Failed")
    col.checked.append(f"scaling activities: {len(out)} in the window for {len(variants)} variant(s), {failed} failed")
    return out


def _read_logs(
    clients: Clients, endpoint: str, pipeline: bool, start: float, end: float, col: _Collector
) -> list[LogLine]:
    logs = clients.logs
    group = log_group(endpoint)
    try:
        described = logs.describe_log_streams(
            logGroupName=group, orderBy="LastEventTime", descending=True, limit=MAX_STREAMS
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            col.checked.append(f"CloudWatch Logs {group}: no such log group (no container has logged yet)")
            return []
        raise
    streams = [s["logStreamName"] for s in described.get("logStreams", [])]
    if not streams:
        col.checked.append(f"CloudWatch Logs {group}: no log stream")
        return []
    lines: list[LogLine] = []
    searches = [(_LOG_FILTER, LOG_PAGE_EVENTS)] + ([(_INVOCATIONS_FILTER, 100)] if pipeline else [])
    pages = 0
    for pattern, limit in searches:
        token: str | None = None
        for _ in range(MAX_LOG_PAGES):
            if col.expired():
                col.gaps.append(f"CloudWatch Logs {group}: search cut short by the time budget")
                break
            kwargs: dict[str, Any] = {
                "logGroupName": group,
                "logStreamNames": streams,
                "startTime": int(start * 1000),
                "endTime": int(end * 1000),
                "filterPattern": pattern,
                "limit": limit,
            }
            if token:
                kwargs["nextToken"] = token
            page = logs.filter_log_events(**kwargs)
            pages += 1
            for event in page.get("events", []):
                message = str(event.get("message", "")).rstrip("\n")
                if _INTERESTING.search(message):
                    lines.append(
                        LogLine(
                            stream=str(event.get("logStreamName", "")),
                            timestamp_ms=int(event.get("timestamp", 0)),
                            message=message[:MAX_ERROR_CHARS],
                        )
                    )
            token = page.get("nextToken")
            if not token or len(lines) >= MAX_LOG_LINES:
                break
    unique = {(line.stream, line.timestamp_ms, line.message): line for line in lines}
    kept = sorted(unique.values(), key=lambda line: line.timestamp_ms)[:MAX_LOG_LINES]
    col.checked.append(
        f"CloudWatch Logs {group}: {len(streams)} stream(s), {pages} page(s), {len(kept)} matching line(s)"
    )
    return kept


def _read_failures(clients: Clients, uri: str, start: float, col: _Collector) -> list[FailureObject]:
    if clients.s3 is None:
        col.gaps.append("async S3 failure objects: no S3 client")
        return []
    bucket, _, prefix = uri.split("://", 1)[-1].partition("/")
    page = clients.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=50)
    found = []
    for item in page.get("Contents", []):
        modified = item.get("LastModified")
        stamp = modified.timestamp() if isinstance(modified, datetime) else None
        if stamp is None or stamp >= start:
            found.append(FailureObject(uri=f"s3://{bucket}/{item['Key']}", last_modified=_iso(stamp)))
    found = found[-MAX_FAILURE_OBJECTS:]
    col.checked.append(f"async failure objects under {uri}: {len(found)} in the window")
    return found


# ------------------------------------------------------------------------------------------------ entry points
def diagnose(
    endpoint: str,
    clients: Clients,
    *,
    minutes: int = DEFAULT_MINUTES,
    errors: Sequence[str] = (),
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    now: float | None = None,
) -> Diagnosis:
    """GET /endpoints/{name}/diagnosis: the last `minutes` of evidence. Unknown endpoint -> NotFound."""
    if not re.fullmatch(ENDPOINT_NAME_PATTERN, endpoint):
        raise InvalidInput(f"'{endpoint}' is not a SageMaker endpoint name", "name")
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise InvalidInput(f"minutes must be between {MIN_MINUTES} and {MAX_MINUTES}", "minutes")
    end = time.time() if now is None else now
    evidence = gather(
        endpoint, clients, start=end - minutes * 60, end=end, errors=errors, budget_seconds=budget_seconds
    )
    return report(evidence)


def for_operation(
    endpoint: str,
    clients: Clients,
    *,
    since: float,
    errors: Sequence[str] = (),
    configs: Sequence[str] = (),
    alarm_names: Sequence[str] = (),
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> dict[str, Any]:
    """The diagnosis a failed operation carries (JSON). Never raises: failing, it says why it is unavailable."""
    end = time.time()
    start = min(since - 60, end - MIN_MINUTES * 60)
    start = max(start, end - MAX_MINUTES * 60)
    try:
        evidence = gather(
            endpoint,
            clients,
            start=start,
            end=end,
            errors=errors,
            configs=configs,
            alarm_names=alarm_names,
            budget_seconds=budget_seconds,
            require_endpoint=False,
        )
        return report(evidence).model_dump(mode="json")
    except Exception as error:  # a diagnosis must never fail the operation it explains
        return unavailable(endpoint, f"{type(error).__name__}: {error}")


def unavailable(endpoint: str, reason: str) -> dict[str, Any]:
    """What an operation records when no diagnosis could be made."""
    return {"endpoint": endpoint, "summary": f"diagnosis unavailable: {reason}", "findings": [], "unavailable": True}
