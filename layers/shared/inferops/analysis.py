"""Canary analysis: judge a canary (or shadow) against its baseline, metric by metric, and overall.

The method follows Kayenta's judge, made stricter where it was weak: latency-like metrics are compared with
a one-sided Mann-Whitney U test *and* an effect-size tolerance (a statistically significant but tiny shift
does not fail a rollout; a large shift with too little data does not pass it); error rates with a one-sided
two-proportion z-test plus an absolute ceiling. Too little data is never a pass: the verdict is
INCONCLUSIVE and the flow extends the bake. A critical metric fails the whole verdict on its own.
Pure Python and deterministic (no SciPy in the Lambda layer: it would triple the cold start).

`collect` reads the two variants' CloudWatch series in one GetMetricData request and turns them into the
judge's metrics; `evaluate` judges them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import ConfigDict, Field

from inferops.model import Model

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import MetricDataQueryTypeDef

    from inferops.planner import Analysis

PASS_THRESHOLD = 95.0
MARGINAL_THRESHOLD = 75.0
SAGEMAKER_NAMESPACE = "AWS/SageMaker"
MAX_QUERIES = 500  # GetMetricData's limit per request


class Outcome(StrEnum):
    """Per metric: a failure needs both evidence (p < alpha) and a shift beyond the tolerance."""

    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"


class Result(StrEnum):
    PASS = "Pass"
    MARGINAL = "Marginal"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


class _Frozen(Model):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DistributionMetric(_Frozen):
    """A metric compared as a distribution of datapoints (latency, utilisation, a custom gauge)."""

    kind: Literal["distribution"] = "distribution"
    name: str
    baseline: list[float]
    canary: list[float]
    bad_direction: Literal["increase", "decrease"] = "increase"
    tolerance: float = Field(default=0.10, ge=0, description="relative median shift allowed, 0.10 = 10 %")
    min_samples: int = Field(default=10, ge=3)
    critical: bool = False


class RateMetric(_Frozen):
    """A metric compared as events over trials (errors over invocations)."""

    kind: Literal["rate"] = "rate"
    name: str
    baseline_events: int = Field(ge=0)
    baseline_trials: int = Field(ge=0)
    canary_events: int = Field(ge=0)
    canary_trials: int = Field(ge=0)
    tolerance: float = Field(default=0.005, ge=0, description="absolute rate increase allowed, 0.005 = 0.5 pp")
    max_rate: float | None = Field(default=None, ge=0, le=1, description="canary rate that fails on its own")
    min_trials: int = Field(default=100, ge=1)
    critical: bool = False


Metric = DistributionMetric | RateMetric


class MetricVerdict(_Frozen):
    name: str
    outcome: Outcome
    reason: str
    p_value: float | None = None
    effect: float | None = Field(default=None, description="relative median shift, or absolute rate difference")
    baseline: float | None = Field(default=None, description="baseline median or rate")
    canary: float | None = Field(default=None, description="canary median or rate")
    critical: bool = False


class Verdict(_Frozen):
    result: Result
    score: float | None
    reason: str
    metrics: list[MetricVerdict]


def judge(metrics: Sequence[Metric], *, alpha: float = 0.05) -> Verdict:
    """Classify every metric, then score: any critical failure fails, thin data is inconclusive.

    Significance is Holm-corrected across the metrics judged together, so ten healthy metrics do not
    produce a false failure one time in three (Kayenta tests each metric at the full alpha).
    """
    significant = holm([_p_value(m) for m in metrics], alpha)
    verdicts = [
        _judge_distribution(m, sig) if isinstance(m, DistributionMetric) else _judge_rate(m, sig)
        for m, sig in zip(metrics, significant, strict=True)
    ]
    judged = [v for v in verdicts if v.outcome is not Outcome.NO_DATA]
    critical_fail = [v for v in verdicts if v.critical and v.outcome is Outcome.FAIL]
    if critical_fail:
        return Verdict(
            result=Result.FAIL,
            score=_score(judged),
            reason="critical metric failed: " + "; ".join(f"{v.name}: {v.reason}" for v in critical_fail),
            metrics=verdicts,
        )
    missing = [v for v in verdicts if v.outcome is Outcome.NO_DATA]
    if missing and (any(v.critical for v in missing) or not judged):
        return Verdict(
            result=Result.INCONCLUSIVE,
            score=_score(judged) if judged else None,
            reason="not enough data yet: " + "; ".join(f"{v.name}: {v.reason}" for v in missing) + " (extend the bake)",
            metrics=verdicts,
        )
    score = _score(judged)
    assert score is not None
    failing = [f"{v.name}: {v.reason}" for v in judged if v.outcome is not Outcome.PASS]
    if score >= PASS_THRESHOLD:
        result, reason = Result.PASS, f"score {score:.0f} >= {PASS_THRESHOLD:.0f}"
    elif score >= MARGINAL_THRESHOLD:
        result, reason = Result.MARGINAL, f"score {score:.0f} between {MARGINAL_THRESHOLD:.0f} and {PASS_THRESHOLD:.0f}"
    else:
        result, reason = Result.FAIL, f"score {score:.0f} < {MARGINAL_THRESHOLD:.0f}"
    if failing:
        reason += "; " + "; ".join(failing)
    return Verdict(result=result, score=score, reason=reason, metrics=verdicts)


def _score(judged: Sequence[MetricVerdict]) -> float | None:
    if not judged:
        return None
    points = sum(1.0 for v in judged if v.outcome is Outcome.PASS)
    return round(100.0 * points / len(judged), 2)


def _has_data(metric: Metric) -> bool:
    if isinstance(metric, DistributionMetric):
        finite = [sum(1 for x in side if math.isfinite(x)) for side in (metric.baseline, metric.canary)]
        return min(finite) >= metric.min_samples
    return min(metric.canary_trials, metric.baseline_trials) >= metric.min_trials


def _p_value(metric: Metric) -> float | None:
    """One-sided p-value that the canary is worse; None when there is too little data to judge."""
    if not _has_data(metric):
        return None
    if isinstance(metric, DistributionMetric):
        base = [x for x in metric.baseline if math.isfinite(x)]
        can = [x for x in metric.canary if math.isfinite(x)]
        return mann_whitney_p(can, base, greater=metric.bad_direction == "increase")
    return two_proportion_p(metric.canary_events, metric.canary_trials, metric.baseline_events, metric.baseline_trials)


def holm(p_values: Sequence[float | None], alpha: float) -> list[bool]:
    """Holm-Bonferroni step-down: which hypotheses are rejected at family-wise error rate alpha."""
    order = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    rejected = [False] * len(p_values)
    for rank, (p, index) in enumerate(order):
        if p > alpha / (len(order) - rank):
            break
        rejected[index] = True
    return rejected


def _judge_distribution(metric: DistributionMetric, significant: bool) -> MetricVerdict:
    base = [x for x in metric.baseline if math.isfinite(x)]
    can = [x for x in metric.canary if math.isfinite(x)]
    if not _has_data(metric):
        return MetricVerdict(
            name=metric.name,
            outcome=Outcome.NO_DATA,
            reason=f"{len(can)} canary / {len(base)} baseline datapoints, need {metric.min_samples} each",
            critical=metric.critical,
        )
    base_median, can_median = median(base), median(can)
    worse_if_greater = metric.bad_direction == "increase"
    p_value = mann_whitney_p(can, base, greater=worse_if_greater)
    effect = _relative_shift(base_median, can_median)
    large = (effect if worse_if_greater else -effect) > metric.tolerance
    what = (
        f"median {base_median:.4g} -> {can_median:.4g} ({effect:+.1%}, tolerance {metric.tolerance:.0%}), "
        f"p={p_value:.3g}"
    )
    outcome = Outcome.FAIL if significant and large else Outcome.PASS
    if significant and not large:
        what += "; a real shift, within tolerance"
    return _verdict(metric, outcome, what, p_value, effect, base_median, can_median)


def _judge_rate(metric: RateMetric, significant: bool) -> MetricVerdict:
    if not _has_data(metric):
        return MetricVerdict(
            name=metric.name,
            outcome=Outcome.NO_DATA,
            reason=f"{metric.canary_trials} canary / {metric.baseline_trials} baseline requests, "
            f"need {metric.min_trials} each",
            critical=metric.critical,
        )
    base_rate = metric.baseline_events / metric.baseline_trials
    can_rate = metric.canary_events / metric.canary_trials
    difference = can_rate - base_rate
    p_value = two_proportion_p(
        metric.canary_events, metric.canary_trials, metric.baseline_events, metric.baseline_trials
    )
    what = f"rate {base_rate:.3%} -> {can_rate:.3%} (tolerance +{metric.tolerance:.2%}), p={p_value:.3g}"
    if metric.max_rate is not None and can_rate > metric.max_rate:
        outcome, what = Outcome.FAIL, f"{what}; above the {metric.max_rate:.2%} ceiling"
    elif significant and difference > metric.tolerance:
        outcome = Outcome.FAIL
    else:
        outcome = Outcome.PASS
    return _verdict(metric, outcome, what, p_value, difference, base_rate, can_rate)


def _verdict(
    metric: Metric, outcome: Outcome, reason: str, p_value: float, effect: float, baseline: float, canary: float
) -> MetricVerdict:
    return MetricVerdict(
        name=metric.name,
        outcome=outcome,
        reason=reason,
        p_value=p_value,
        effect=effect,
        baseline=baseline,
        canary=canary,
        critical=metric.critical,
    )


# ---------------------------------------------------------------- CloudWatch
class VariantWindow(_Frozen):
    """One side of the comparison: a production variant and the endpoint config it serves."""

    variant_name: str
    endpoint_config_name: str


def evaluate(
    cloudwatch: CloudWatchClient,
    spec: Analysis,
    *,
    endpoint: str,
    baseline: VariantWindow,
    canary: VariantWindow,
    start: datetime,
    end: datetime,
) -> Verdict:
    """Judge the canary variant against the baseline variant over [start, end)."""
    return judge(collect(cloudwatch, spec, endpoint=endpoint, baseline=baseline, canary=canary, start=start, end=end))


def collect(
    cloudwatch: CloudWatchClient,
    spec: Analysis,
    *,
    endpoint: str,
    baseline: VariantWindow,
    canary: VariantWindow,
    start: datetime,
    end: datetime,
) -> list[Metric]:
    """Both variants' series, one datapoint per `spec.interval_seconds`, as the judge's metrics.

    ModelLatency (per-period Average) is critical like the 5XX rate: `max_latency_increase_percent` is a
    limit, as the native path's latency alarm is. A period CloudWatch has no datapoint for is left out,
    never read as zero, so an idle canary is short of data rather than healthy.
    """
    period = spec.interval_seconds
    queries: list[MetricDataQueryTypeDef] = []
    for side, window in (("baseline", baseline), ("canary", canary)):
        variant = {"EndpointName": endpoint, "VariantName": window.variant_name}
        queries += [
            _query(f"{key}_{side}", SAGEMAKER_NAMESPACE, name, stat, variant, period) for key, name, stat in _BUILT_IN
        ]
        for index, custom in enumerate(spec.metrics):
            filled = custom.dimensions_for(
                endpoint=endpoint, variant=window.variant_name, config=window.endpoint_config_name
            )
            queries.append(
                _query(f"custom{index}_{side}", custom.namespace, custom.metric_name, custom.stat, filled, period)
            )
    series = _get_metric_data(cloudwatch, queries, start, end)

    def values(key: str, side: str) -> list[float]:
        return list(series[f"{key}_{side}"].values())

    def rate(name: str, key: str, *, critical: bool, max_rate: float | None) -> RateMetric:
        base_events, base_trials = _events_and_trials(series[f"{key}_baseline"], series["invocations_baseline"])
        can_events, can_trials = _events_and_trials(series[f"{key}_canary"], series["invocations_canary"])
        return RateMetric(
            name=name,
            baseline_events=base_events,
            baseline_trials=base_trials,
            canary_events=can_events,
            canary_trials=can_trials,
            max_rate=max_rate,
            min_trials=max(1, spec.min_requests),
            critical=critical,
        )

    metrics: list[Metric] = [
        DistributionMetric(
            name="ModelLatency",
            baseline=values("latency", "baseline"),
            canary=values("latency", "canary"),
            bad_direction="increase",
            tolerance=spec.max_latency_increase_percent / 100,
            min_samples=spec.min_samples,
            critical=True,
        ),
        rate("Invocation5XXErrors", "errors5xx", critical=True, max_rate=spec.max_error_rate),
        rate("Invocation4XXErrors", "errors4xx", critical=False, max_rate=None),
    ]
    metrics += [
        DistributionMetric(
            name=f"{custom.namespace}/{custom.metric_name} {custom.stat}",
            baseline=values(f"custom{index}", "baseline"),
            canary=values(f"custom{index}", "canary"),
            bad_direction=custom.bad,
            tolerance=custom.tolerance_percent / 100,
            min_samples=spec.min_samples,
            critical=custom.critical,
        )
        for index, custom in enumerate(spec.metrics)
    ]
    return metrics


# (query id prefix, SageMaker metric, statistic): ids must match CloudWatch's ^[a-z][a-zA-Z0-9_]*$
_BUILT_IN = (
    ("latency", "ModelLatency", "Average"),
    ("invocations", "Invocations", "Sum"),
    ("errors5xx", "Invocation5XXErrors", "Sum"),
    ("errors4xx", "Invocation4XXErrors", "Sum"),
)


def _query(
    query_id: str, namespace: str, name: str, stat: str, dimensions: dict[str, str], period: int
) -> MetricDataQueryTypeDef:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": name,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def _get_metric_data(
    cloudwatch: CloudWatchClient, queries: list[MetricDataQueryTypeDef], start: datetime, end: datetime
) -> dict[str, dict[datetime, float]]:
    """Every query's datapoints by timestamp, across pages; a query CloudWatch could not answer has none."""
    series: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries}
    unanswered: set[str] = set()
    paginator = cloudwatch.get_paginator("get_metric_data")
    for offset in range(0, len(queries), MAX_QUERIES):
        pages = paginator.paginate(
            MetricDataQueries=queries[offset : offset + MAX_QUERIES],
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
        )
        for page in pages:
            for result in page["MetricDataResults"]:
                query_id = result["Id"]
                if result.get("StatusCode") in ("InternalError", "Forbidden"):
                    unanswered.add(query_id)
                series[query_id].update(zip(result.get("Timestamps", []), result.get("Values", []), strict=True))
    return {query_id: {} if query_id in unanswered else points for query_id, points in series.items()}


def _events_and_trials(events: dict[datetime, float], trials: dict[datetime, float]) -> tuple[int, int]:
    """Sums over the periods both series have a datapoint for: a missing error count is unknown, not zero."""
    both = sorted(events.keys() & trials.keys())
    return round(sum(events[t] for t in both)), round(sum(trials[t] for t in both))


# ---------------------------------------------------------------- shadow tests
ENDPOINTS_NAMESPACE = "/aws/sagemaker/Endpoints"
UTILISATION_TOLERANCE = 0.25  # relative median shift of a utilisation metric before it counts as worse
_SHADOW_BUILT_IN = (*_BUILT_IN, ("modelerrors", "InvocationModelErrors", "Sum"))
_UTILISATION = (
    ("cpu", "CPUUtilization"),
    ("memory", "MemoryUtilization"),
    ("gpu", "GPUUtilization"),
    ("gpumemory", "GPUMemoryUtilization"),
)


@dataclass(frozen=True)
class ShadowRead:
    """One shadow test's windows to judge: its endpoint's production (baseline) and shadow (canary) variants."""

    spec: Analysis
    endpoint: str
    production: str
    shadow: str
    config: str
    windows: list[tuple[datetime, datetime]]
    utilisation: bool


def evaluate_shadows(cloudwatch: CloudWatchClient, reads: Sequence[ShadowRead]) -> list[list[Verdict]]:
    """Judge each read's shadow variant against the production variant it mirrors over each of its windows
    [start, end): one verdict per window, all from one GetMetricData request (its pages, 500 queries each)."""
    return [[judge(metrics) for metrics in read] for read in collect_shadows(cloudwatch, reads)]


def collect_shadows(cloudwatch: CloudWatchClient, reads: Sequence[ShadowRead]) -> list[list[list[Metric]]]:
    """Every read's series, per window, from one GetMetricData request over all the windows (its query ids
    prefixed per read): a datapoint belongs to a window when it lies in [start, end), the start rounded down to
    the period as CloudWatch rounds a request's StartTime (the request's own start is a whole minute).

    What `collect` compares, plus InvocationModelErrors (critical, like the 5XX rate: a model that errors is not
    promoted) and, with `utilisation` (the shadow sees the production load, i.e. 100 % sampling), the
    instance utilisation metrics SageMaker publishes for the variants (CPU and memory; GPU and GPU memory on
    accelerated instances): each is judged only where both variants have datapoints, and never critically.
    """
    spans = [span for read in reads for span in read.windows]
    if not spans:
        return [[] for _ in reads]
    queries: list[MetricDataQueryTypeDef] = []
    for number, read in enumerate(reads):
        queries += _shadow_queries(read, prefix=f"r{number}_")
    first = min(start for start, _ in spans).timestamp() // 60 * 60
    everything = _get_metric_data(cloudwatch, queries, datetime.fromtimestamp(first, UTC), max(end for _, end in spans))
    collected = []
    for number, read in enumerate(reads):
        period, prefix = read.spec.interval_seconds, f"r{number}_"
        mine = {q.removeprefix(prefix): points for q, points in everything.items() if q.startswith(prefix)}
        windows = []
        for start, end in read.windows:
            since = start.timestamp() // period * period
            series = {
                query_id: {t: v for t, v in points.items() if since <= t.timestamp() < end.timestamp()}
                for query_id, points in mine.items()
            }
            windows.append(_shadow_metrics(read.spec, series, utilisation=read.utilisation))
        collected.append(windows)
    return collected


def _shadow_queries(read: ShadowRead, *, prefix: str) -> list[MetricDataQueryTypeDef]:
    period, spec = read.spec.interval_seconds, read.spec
    queries: list[MetricDataQueryTypeDef] = []
    for side, variant_name in (("baseline", read.production), ("canary", read.shadow)):
        variant = {"EndpointName": read.endpoint, "VariantName": variant_name}
        queries += [
            _query(f"{prefix}{key}_{side}", SAGEMAKER_NAMESPACE, name, stat, variant, period)
            for key, name, stat in _SHADOW_BUILT_IN
        ]
        if read.utilisation:
            queries += [
                _query(f"{prefix}{key}_{side}", ENDPOINTS_NAMESPACE, name, "Average", variant, period)
                for key, name in _UTILISATION
            ]
        for index, custom in enumerate(spec.metrics):
            filled = custom.dimensions_for(endpoint=read.endpoint, variant=variant_name, config=read.config)
            queries.append(
                _query(
                    f"{prefix}custom{index}_{side}", custom.namespace, custom.metric_name, custom.stat, filled, period
                )
            )
    return queries


def _shadow_metrics(spec: Analysis, series: dict[str, dict[datetime, float]], *, utilisation: bool) -> list[Metric]:
    """One window's series as the judge's metrics."""

    def values(key: str, side: str) -> list[float]:
        return list(series[f"{key}_{side}"].values())

    def rate(name: str, key: str, *, critical: bool, max_rate: float | None) -> RateMetric:
        base_events, base_trials = _events_and_trials(series[f"{key}_baseline"], series["invocations_baseline"])
        can_events, can_trials = _events_and_trials(series[f"{key}_canary"], series["invocations_canary"])
        return RateMetric(
            name=name,
            baseline_events=base_events,
            baseline_trials=base_trials,
            canary_events=can_events,
            canary_trials=can_trials,
            max_rate=max_rate,
            min_trials=max(1, spec.min_requests),
            critical=critical,
        )

    metrics: list[Metric] = [
        DistributionMetric(
            name="ModelLatency",
            baseline=values("latency", "baseline"),
            canary=values("latency", "canary"),
            bad_direction="increase",
            tolerance=spec.max_latency_increase_percent / 100,
            min_samples=spec.min_samples,
            critical=True,
        ),
        rate("Invocation5XXErrors", "errors5xx", critical=True, max_rate=spec.max_error_rate),
        rate("InvocationModelErrors", "modelerrors", critical=True, max_rate=spec.max_error_rate),
        rate("Invocation4XXErrors", "errors4xx", critical=False, max_rate=None),
    ]
    if utilisation:
        metrics += [
            DistributionMetric(
                name=name,
                baseline=values(key, "baseline"),
                canary=values(key, "canary"),
                bad_direction="increase",
                tolerance=UTILISATION_TOLERANCE,
                min_samples=spec.min_samples,
            )
            for key, name in _UTILISATION
            if series[f"{key}_baseline"] and series[f"{key}_canary"]  # where present: GPU only on GPU instances
        ]
    metrics += [
        DistributionMetric(
            name=f"{custom.namespace}/{custom.metric_name} {custom.stat}",
            baseline=values(f"custom{index}", "baseline"),
            canary=values(f"custom{index}", "canary"),
            bad_direction=custom.bad,
            tolerance=custom.tolerance_percent / 100,
            min_samples=spec.min_samples,
            critical=custom.critical,
        )
        for index, custom in enumerate(spec.metrics)
    ]
    return metrics


# ---------------------------------------------------------------- statistics
def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _relative_shift(base: float, canary: float) -> float:
    if base == 0:
        return 0.0 if canary == 0 else math.copysign(math.inf, canary)
    return (canary - base) / abs(base)


def _normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal variable."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney_p(sample: Sequence[float], reference: Sequence[float], *, greater: bool = True) -> float:
    """One-sided p-value that `sample` tends to be greater (or smaller) than `reference`.

    Normal approximation with tie correction and continuity correction (what SciPy's `mannwhitneyu` does
    with `method="asymptotic"`), accurate from about 8 values per side.
    """
    n1, n2 = len(sample), len(reference)
    ranked = sorted([(v, 0) for v in sample] + [(v, 1) for v in reference])
    ranks = [0.0] * len(ranked)
    tie_term = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        average = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = average
        ties = j - i + 1
        tie_term += ties**3 - ties
        i = j + 1
    rank_sum = sum(r for r, (_, group) in zip(ranks, ranked, strict=True) if group == 0)
    u = rank_sum - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    deviation = (u - mean) if greater else (mean - u)
    return _normal_sf((deviation - 0.5) / math.sqrt(variance))


def two_proportion_p(events_a: int, trials_a: int, events_b: int, trials_b: int) -> float:
    """One-sided p-value that rate A exceeds rate B (pooled two-proportion z-test)."""
    pooled = (events_a + events_b) / (trials_a + trials_b)
    if pooled in (0.0, 1.0):
        return 1.0
    error = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    return _normal_sf((events_a / trials_a - events_b / trials_b) / error)
