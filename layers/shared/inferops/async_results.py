"""Async inference results: failures classified, results counted in stats shards, and the API's reads of both.

SageMaker's notifications come in through `inferops.async_ingest` (AsyncResultsFunction); the API reads what it
stored here, without importing the batch machinery.

Error classification follows the troubleshooting catalog (reference/sagemaker-facts.md §17 and §9): the first
matching signature of `SIGNATURES` gives a category, its cause, the action to take and whether a retry may help.
"""

from __future__ import annotations

import math
import re
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field

from inferops.errors import InvalidInput
from inferops.model import Model
from inferops.storage import (
    ASYNC_RESULT_RETENTION_DAYS,
    ASYNC_STATS_RETENTION_DAYS,
    AsyncResultRecord,
    AsyncStatsShard,
    async_stats_hour,
    format_timestamp,
)

if TYPE_CHECKING:
    from inferops.storage import Repository

__all__ = [
    "ENDPOINT_NAME_PATTERN",
    "LATENCY_BUCKETS",
    "MAX_STATS_HOURS",
    "SIGNATURES",
    "AsyncResultView",
    "AsyncStatsView",
    "Classification",
    "aggregate",
    "classify",
    "endpoint_stats",
    "failure_category",
    "get_result",
    "percentile",
    "shard_results",
]

MAX_STATS_HOURS = 168
"""The stats API looks back at most a week (shards live ``ASYNC_STATS_RETENTION_DAYS``)."""
ENDPOINT_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
LATENCY_BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 28800, math.inf,
)  # fmt: skip
"""Upper bounds (seconds) of the end-to-end latency histogram: queueing (TTL up to 6 h) + processing (up to 1 h)."""


# ---------------------------------------------------------------------- classification
class Classification(Model):
    """What a failure means, from the troubleshooting catalog: the category, its cause and what to do."""

    model_config = ConfigDict(frozen=True)

    category: str
    cause: str
    action: str
    retryable: bool
    """Whether sending the same request again may succeed without changing anything."""
    matched: str | None = None
    """The fragment of `failureReason` that decided the category (None: no signature matched)."""


@dataclass(frozen=True)
class Signature:
    category: str
    pattern: re.Pattern[str]
    cause: str
    action: str
    retryable: bool


def _signature(category: str, pattern: str, cause: str, action: str, *, retryable: bool) -> Signature:
    return Signature(category, re.compile(pattern, re.IGNORECASE), cause, action, retryable)


SIGNATURES: tuple[Signature, ...] = (
    _signature(
        "out_of_memory",
        r"out of memory|OutOfMemory|\bOOM\b|MemoryError|Cannot allocate memory|exit code 137",
        "the model server ran out of (accelerator) memory",
        "use an instance type with more (GPU) memory, or lower MaxConcurrentInvocationsPerInstance and the "
        "server's batch size",
        retryable=False,
    ),
    _signature(
        "gpu_driver_mismatch",
        r"NVML|Driver/library version mismatch|CannotStartContainerError|CUDA driver version",
        "the container's CUDA needs a newer NVIDIA driver than the host has",
        "use a container built for the host's driver, set InferenceAmiVersion, or add the CUDA compatibility "
        "package to the image",
        retryable=False,
    ),
    _signature(
        "invocation_timeout",
        r"timed out|timeout|time out",
        "the container did not answer in time: InvocationTimeoutSeconds (default 15 min, up to 1 h) or the model "
        "server's own response timeout",
        "warm the model up at load (model_fn), raise the server's timeout (TS_DEFAULT_RESPONSE_TIMEOUT, "
        "MMS_DEFAULT_RESPONSE_TIMEOUT) and InvocationTimeoutSeconds (up to 3600)",
        retryable=True,
    ),
    _signature(
        "request_expired",
        r"expired|RequestTTL|time to live",
        "the request waited in the queue longer than its RequestTTLSeconds (6 h by default): the endpoint is "
        "under-scaled or at zero instances",
        "scale out on ApproximateBacklogSizePerInstance, wake from zero with a HasBacklogWithoutCapacity step "
        "policy, or raise RequestTTLSeconds (60-21600)",
        retryable=True,
    ),
    _signature(
        "payload_too_large",
        r"payload|exceeded the maximum|too large|\b413\b|max(imum)?[ _]?(request|response)[ _]?size",
        "the request or response exceeded a size limit of the model server (or 5 MB between pipeline containers)",
        "raise the server's limits (TS_MAX_REQUEST_SIZE / TS_MAX_RESPONSE_SIZE, MMS_MAX_REQUEST_SIZE / "
        "MMS_MAX_RESPONSE_SIZE) or send a smaller payload",
        retryable=False,
    ),
    _signature(
        "input_download",
        r"download|input location|InputLocation|NoSuchKey|NoSuchBucket",
        "SageMaker could not read the request's input from S3",
        "check that the object at inputLocation exists in the endpoint's Region and that the endpoint's execution "
        "role may s3:GetObject it (and kms:Decrypt its key)",
        retryable=False,
    ),
    _signature(
        "output_upload",
        r"upload|output location|S3OutputPath|S3FailurePath|failed to write",
        "SageMaker could not write the result to S3OutputPath or S3FailurePath",
        "check that the bucket exists and the execution role may s3:PutObject and s3:AbortMultipartUpload there "
        "(and kms:GenerateDataKey on KmsKeyId)",
        retryable=True,
    ),
    _signature(
        "access_denied",
        r"AccessDenied|not authori[sz]ed|Forbidden|\bKMS\b",
        "a permission of the endpoint's execution role is missing",
        "find the denied call in CloudTrail and grant it (S3 buckets, KMS key, sns:Publish); avoid wildcards",
        retryable=False,
    ),
    _signature(
        "health_check",
        r"\bping\b|health check|unhealthy",
        "the container stopped answering /ping (typically while a long invocation blocks it), so SageMaker took "
        "the instance out of service",
        "serve /ping from its own worker so long invocations cannot block it; check the container logs",
        retryable=True,
    ),
    _signature(
        "missing_entry_point",
        r"SAGEMAKER_PROGRAM|SAGEMAKER_SUBMIT_DIRECTORY|has no attribute 'transform'",
        "the framework container found no inference script",
        "set SAGEMAKER_PROGRAM and SAGEMAKER_SUBMIT_DIRECTORY in the model's environment",
        retryable=False,
    ),
    _signature(
        "model_not_ready",
        r"ModelNotReady|\b507\b",
        "the model was still loading, or the GPU memory of a multi-model endpoint is full",
        "retry after the model has loaded (up to 360 s); for 507 use a bigger instance or fewer models per instance",
        retryable=True,
    ),
    _signature(
        "model_error",
        r"(server|client) error \(\d+\)|ModelError|from (the )?model|from primary",
        "the container answered the invocation with an error; SageMaker does not retry it",
        "read the container's logs (/aws/sagemaker/Endpoints/<endpoint>, data-log stream per instance), its "
        "CPU and memory utilization, and the error object at failureLocation (S3FailurePath)",
        retryable=False,
    ),
    _signature(
        "service_error",
        r"InternalFailure|InternalServer|ServiceUnavailable|Throttl",
        "a transient SageMaker service error",
        "send the request again with backoff",
        retryable=True,
    ),
)
UNKNOWN = Classification(
    category="unknown",
    cause="the failure matches no known signature",
    action="read the error object at failureLocation (S3FailurePath) and the endpoint's container logs",
    retryable=False,
)


def classify(reason: str | None) -> Classification:
    """The first signature of the catalog that `reason` matches, else `unknown`."""
    if reason:
        for signature in SIGNATURES:
            found = signature.pattern.search(reason)
            if found is not None:
                return Classification(
                    category=signature.category,
                    cause=signature.cause,
                    action=signature.action,
                    retryable=signature.retryable,
                    matched=found.group(0)[:120],
                )
    return UNKNOWN


# ---------------------------------------------------------------------- stats shards
def _bucket(seconds: float) -> str:
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return f"{bound:g}"
    return "inf"  # pragma: no cover - the last bound is infinite


def shard_results(
    results: Iterable[AsyncResultRecord],
    *,
    now: float,
    first_message: Callable[[AsyncResultRecord], str],
    attempt: str | None = None,
) -> tuple[list[AsyncResultRecord], list[AsyncStatsShard]]:
    """Assign results to one shard per endpoint and clock hour, with the numbers each shard adds.

    A shard's key is ``<hour>#<first message id>.<attempt>``: `attempt` (random by default) keeps a redelivered
    message from overwriting the shard an earlier attempt wrote for other results.
    """
    suffix = attempt or secrets.token_hex(4)
    groups: dict[tuple[str, str], list[AsyncResultRecord]] = defaultdict(list)
    for result in results:
        groups[(result.endpoint, async_stats_hour(result.completed_at))].append(result)
    recorded_at = datetime.fromtimestamp(now, UTC)
    staged: list[AsyncResultRecord] = []
    shards: list[AsyncStatsShard] = []
    for (endpoint, hour), members in groups.items():
        shard = aggregate(endpoint, hour, f"{hour}#{first_message(members[0])}.{suffix}", members)
        shards.append(shard)
        for result in members:
            expires = result.completed_at + timedelta(days=ASYNC_RESULT_RETENTION_DAYS)
            staged.append(
                result.model_copy(
                    update={
                        "stats_shard": shard.shard,
                        "recorded_at": recorded_at,
                        "expires_at": int(expires.timestamp()),
                    }
                )
            )
    return staged, shards


def aggregate(endpoint: str, hour: str, key: str, members: list[AsyncResultRecord]) -> AsyncStatsShard:
    """The numbers `members` (results of one endpoint and clock hour) add to the stats: one shard."""
    latencies = [r.latency_seconds for r in members if r.latency_seconds is not None]
    hour_start = datetime.fromisoformat(f"{hour}:00:00+00:00")
    return AsyncStatsShard(
        endpoint=endpoint,
        hour=hour,
        shard=key,
        completed=sum(1 for r in members if r.status == "COMPLETED"),
        failed=sum(1 for r in members if r.status == "FAILED"),
        latency_count=len(latencies),
        latency_sum=round(sum(latencies), 3),
        latency_min=min(latencies, default=None),
        latency_max=max(latencies, default=None),
        histogram=dict(Counter(_bucket(x) for x in latencies)),
        categories=dict(Counter(failure_category(r) for r in members if r.status == "FAILED")),
        expires_at=int((hour_start + timedelta(days=ASYNC_STATS_RETENTION_DAYS)).timestamp()),
    )


def failure_category(result: AsyncResultRecord) -> str:
    """A failed result's classification category (UNKNOWN's when it has none)."""
    return str((result.classification or {}).get("category", UNKNOWN.category))


# ---------------------------------------------------------------------- the API's views
class AsyncResultView(Model):
    """GET /async-results/{inferenceId}."""

    model_config = ConfigDict(frozen=True)

    inference_id: str
    endpoint: str
    status: Literal["COMPLETED", "FAILED"]
    invocation_status: str
    received_at: str | None
    completed_at: str
    latency_seconds: float | None = Field(description="end to end: receivedTime to eventTime")
    input_location: str | None
    output_location: str | None = Field(description="the result in S3 (completed requests)")
    failure_location: str | None = Field(description="the error object in S3 (S3FailurePath), when configured")
    failure_reason: str | None
    classification: Classification | None = Field(description="failed requests: category, cause, action")
    recorded_at: str | None


def get_result(repo: Repository, inference_id: str) -> AsyncResultView:
    record = repo.get_async_result(inference_id)
    return AsyncResultView(
        inference_id=record.inference_id,
        endpoint=record.endpoint,
        status=record.status,
        invocation_status=record.invocation_status,
        received_at=format_timestamp(record.received_at) if record.received_at else None,
        completed_at=format_timestamp(record.completed_at),
        latency_seconds=record.latency_seconds,
        input_location=record.input_location,
        output_location=record.output_location,
        failure_location=record.failure_location,
        failure_reason=record.failure_reason,
        classification=Classification.model_validate(record.classification) if record.classification else None,
        recorded_at=format_timestamp(record.recorded_at) if record.recorded_at else None,
    )


class LatencySummary(Model):
    model_config = ConfigDict(frozen=True)

    count: int
    mean: float | None
    min: float | None
    max: float | None
    p50: float | None = Field(description="estimated from the latency histogram (linear within a bucket)")
    p90: float | None
    p99: float | None


class HourStats(Model):
    model_config = ConfigDict(frozen=True)

    hour: str = Field(description="start of the UTC clock hour")
    completed: int
    failed: int
    mean_latency_seconds: float | None


class AsyncStatsView(Model):
    """GET /endpoints/{name}/async-stats."""

    model_config = ConfigDict(frozen=True)

    endpoint: str
    hours: int
    since: str = Field(description="start of the first clock hour counted")
    until: str
    completed: int
    failed: int
    total: int
    failure_rate: float | None
    latency_seconds: LatencySummary = Field(description="end to end, receivedTime to eventTime")
    failures_by_category: dict[str, int]
    hourly: list[HourStats]


def endpoint_stats(repo: Repository, endpoint: str, hours: int) -> AsyncStatsView:
    """An endpoint's async outcomes and latency over the last `hours` clock hours (the current one included)."""
    if not 1 <= hours <= MAX_STATS_HOURS:
        raise InvalidInput(f"hours must be 1-{MAX_STATS_HOURS}, got {hours}", "hours")
    now = datetime.fromtimestamp(repo.now(), UTC)
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    shards = repo.async_stats_shards(endpoint, since)
    histogram: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    hourly: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])  # completed, failed, count, sum
    for shard in shards:
        histogram.update(shard.histogram)
        categories.update(shard.categories)
        row = hourly[shard.hour]
        row[0] += shard.completed
        row[1] += shard.failed
        row[2] += shard.latency_count
        row[3] += shard.latency_sum
    completed = sum(s.completed for s in shards)
    failed = sum(s.failed for s in shards)
    count = sum(s.latency_count for s in shards)
    lows = [s.latency_min for s in shards if s.latency_min is not None]
    highs = [s.latency_max for s in shards if s.latency_max is not None]
    low, high = min(lows, default=None), max(highs, default=None)
    total = completed + failed
    return AsyncStatsView(
        endpoint=endpoint,
        hours=hours,
        since=format_timestamp(since),
        until=format_timestamp(now),
        completed=completed,
        failed=failed,
        total=total,
        failure_rate=round(failed / total, 4) if total else None,
        latency_seconds=LatencySummary(
            count=count,
            mean=round(sum(s.latency_sum for s in shards) / count, 3) if count else None,
            min=low,
            max=high,
            p50=percentile(histogram, 0.50, low, high),
            p90=percentile(histogram, 0.90, low, high),
            p99=percentile(histogram, 0.99, low, high),
        ),
        failures_by_category=dict(categories.most_common()),
        hourly=[
            HourStats(
                hour=format_timestamp(datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC)),
                completed=int(row[0]),
                failed=int(row[1]),
                mean_latency_seconds=round(row[3] / row[2], 3) if row[2] else None,
            )
            for hour, row in sorted(hourly.items())
        ],
    )


def percentile(histogram: Counter[str], q: float, low: float | None, high: float | None) -> float | None:
    """The q-quantile estimated from bucket counts, linear inside the bucket, kept within [low, high]."""
    total = sum(histogram.values())
    if not total or low is None or high is None:
        return None
    rank = q * total
    below, lower = 0, 0.0
    for bound in LATENCY_BUCKETS:
        key = f"{bound:g}"
        inside = histogram.get(key, 0)
        if inside and below + inside >= rank:
            upper = high if math.isinf(bound) else bound
            value = lower + (upper - lower) * (rank - below) / inside
            return round(min(max(value, low), high), 3)
        below += inside
        lower = bound
    return round(high, 3)
