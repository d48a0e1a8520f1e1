"""The canary judge on synthetic distributions with known answers; statistics cross-checked with SciPy.

Then `collect`/`evaluate` on CloudWatch data: synthetic series put into moto with known answers, and the
twin's load model serving a healthy and a bad canary.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError
from scipy import stats

from inferops.analysis import (
    DistributionMetric,
    Outcome,
    RateMetric,
    Result,
    VariantWindow,
    _get_metric_data,
    collect,
    evaluate,
    holm,
    judge,
    mann_whitney_p,
    median,
    two_proportion_p,
)
from inferops.planner import Analysis, CustomMetric, DeploymentRequest
from twin.bus import ListSink
from twin.clock import VirtualClock
from twin.cloudwatch import CloudWatchModel, ModelProfile
from twin.sagemaker import SageMakerSimulator


def lognormal(rng: random.Random, n: int, median_ms: float, sigma: float = 0.3) -> list[float]:
    return [rng.lognormvariate(0, sigma) * median_ms for _ in range(n)]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("greater", [True, False])
def test_mann_whitney_matches_scipy(seed: int, greater: bool) -> None:
    rng = random.Random(seed)
    a = [round(x, 1) for x in lognormal(rng, rng.randint(8, 60), 100)]  # rounding creates ties
    b = [round(x, 1) for x in lognormal(rng, rng.randint(8, 60), 100 + seed * 5)]
    expected = stats.mannwhitneyu(a, b, alternative="greater" if greater else "less", method="asymptotic").pvalue
    assert mann_whitney_p(a, b, greater=greater) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("a", "n_a", "b", "n_b"), [(30, 1000, 10, 1000), (5, 200, 5, 200), (0, 500, 3, 500), (12, 90, 1, 400)]
)
def test_two_proportion_matches_the_z_test(a: int, n_a: int, b: int, n_b: int) -> None:
    pooled = (a + b) / (n_a + n_b)
    z = (a / n_a - b / n_b) / (pooled * (1 - pooled) * (1 / n_a + 1 / n_b)) ** 0.5
    assert two_proportion_p(a, n_a, b, n_b) == pytest.approx(stats.norm.sf(z), rel=1e-9)


def test_identical_distributions_pass() -> None:
    rng = random.Random(1)
    verdict = judge(
        [
            DistributionMetric(name="ModelLatency", baseline=lognormal(rng, 60, 80), canary=lognormal(rng, 60, 80)),
            RateMetric(name="5xx", baseline_events=3, baseline_trials=6000, canary_events=1, canary_trials=2000),
        ]
    )
    assert verdict.result is Result.PASS
    assert verdict.score == 100


def test_large_latency_regression_fails() -> None:
    rng = random.Random(2)
    metric = DistributionMetric(name="ModelLatency", baseline=lognormal(rng, 60, 80), canary=lognormal(rng, 60, 120))
    verdict = judge([metric])
    assert verdict.result is Result.FAIL
    latency = verdict.metrics[0]
    assert latency.outcome is Outcome.FAIL
    assert latency.effect is not None and latency.effect > 0.3
    assert "ModelLatency" in verdict.reason


def test_significant_but_tiny_shift_passes() -> None:
    """With lots of data a 3 % shift is significant; inside a 10 % tolerance it must not fail a rollout."""
    baseline = [100.0 + (i % 10) for i in range(400)]
    canary = [103.0 + (i % 10) for i in range(400)]
    verdict = judge([DistributionMetric(name="ModelLatency", baseline=baseline, canary=canary)])
    assert verdict.metrics[0].p_value is not None and verdict.metrics[0].p_value < 0.05
    assert verdict.metrics[0].outcome is Outcome.PASS
    assert "within tolerance" in verdict.metrics[0].reason
    assert verdict.result is Result.PASS


def test_improvement_is_not_a_failure() -> None:
    rng = random.Random(3)
    verdict = judge(
        [DistributionMetric(name="ModelLatency", baseline=lognormal(rng, 60, 120), canary=lognormal(rng, 60, 60))]
    )
    assert verdict.result is Result.PASS


def test_decrease_is_bad_for_throughput_like_metrics() -> None:
    rng = random.Random(4)
    metric = DistributionMetric(
        name="Invocations", baseline=lognormal(rng, 40, 500), canary=lognormal(rng, 40, 250), bad_direction="decrease"
    )
    assert judge([metric]).result is Result.FAIL


def test_thin_data_extends_the_bake_instead_of_passing() -> None:
    verdict = judge([DistributionMetric(name="ModelLatency", baseline=[80.0] * 30, canary=[500.0] * 4)])
    assert verdict.result is Result.INCONCLUSIVE
    assert verdict.metrics[0].outcome is Outcome.NO_DATA
    assert "extend the bake" in verdict.reason


def test_error_rate_regression_fails_and_ceiling_fails_alone() -> None:
    worse = RateMetric(name="5xx", baseline_events=5, baseline_trials=5000, canary_events=40, canary_trials=1000)
    assert judge([worse]).metrics[0].outcome is Outcome.FAIL

    ceiling = RateMetric(
        name="5xx", baseline_events=30, baseline_trials=1000, canary_events=31, canary_trials=1000, max_rate=0.02
    )
    verdict = judge([ceiling])
    assert verdict.metrics[0].outcome is Outcome.FAIL
    assert "ceiling" in verdict.metrics[0].reason


def test_critical_metric_fails_the_verdict_alone() -> None:
    rng = random.Random(5)
    healthy = [
        DistributionMetric(name=f"m{i}", baseline=lognormal(rng, 40, 50), canary=lognormal(rng, 40, 50))
        for i in range(9)
    ]
    errors = RateMetric(
        name="ModelErrors", baseline_events=0, baseline_trials=3000, canary_events=25, canary_trials=1000, critical=True
    )
    verdict = judge([*healthy, errors])
    assert verdict.result is Result.FAIL
    assert verdict.reason.startswith("critical metric failed: ModelErrors")
    assert verdict.score == 90  # nine of ten passed: without the critical rule this would have been Marginal

    not_critical = errors.model_copy(update={"critical": False})
    assert judge([*healthy, not_critical]).result is Result.MARGINAL


def test_missing_critical_data_is_inconclusive_even_when_others_pass() -> None:
    rng = random.Random(6)
    verdict = judge(
        [
            DistributionMetric(name="ModelLatency", baseline=lognormal(rng, 40, 50), canary=lognormal(rng, 40, 50)),
            RateMetric(
                name="5xx", baseline_events=0, baseline_trials=10, canary_events=0, canary_trials=5, critical=True
            ),
        ]
    )
    assert verdict.result is Result.INCONCLUSIVE


def test_score_thresholds() -> None:
    rng = random.Random(7)
    same = [
        DistributionMetric(name=f"ok{i}", baseline=lognormal(rng, 40, 50), canary=lognormal(rng, 40, 50))
        for i in range(7)
    ]
    bad = DistributionMetric(name="bad", baseline=lognormal(rng, 40, 50), canary=lognormal(rng, 40, 200))
    verdict = judge([*same, bad])
    assert verdict.score == pytest.approx(87.5)
    assert verdict.result is Result.MARGINAL


def test_judge_is_deterministic() -> None:
    rng = random.Random(8)
    metrics = [DistributionMetric(name="l", baseline=lognormal(rng, 30, 50), canary=lognormal(rng, 30, 55))]
    assert judge(metrics) == judge(metrics)


def test_median() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5


def test_holm_keeps_false_failures_rare_across_many_metrics() -> None:
    """Ten healthy metrics judged together: the family-wise false-failure rate stays near alpha."""
    rng = random.Random(11)
    families = 100
    false_failures = 0
    for _ in range(families):
        metrics = [
            DistributionMetric(
                name=f"m{i}", baseline=lognormal(rng, 40, 50), canary=lognormal(rng, 40, 50), tolerance=0
            )
            for i in range(10)
        ]
        false_failures += any(v.outcome is Outcome.FAIL for v in judge(metrics).metrics)
    assert false_failures <= 10  # alpha 0.05 family-wise; uncorrected, 46 of these 100 families had one


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, None], 0.05) == [True, False, False, False]
    assert holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]
    assert holm([0.2, None], 0.05) == [False, False]


# ---------------------------------------------------------------------------------------------- CloudWatch
ENDPOINT = "ep"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BASELINE = VariantWindow(variant_name="blue", endpoint_config_name="ep-cfg-1")
CANARY = VariantWindow(variant_name="green", endpoint_config_name="ep-cfg-2")
QUERY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
QUALITY = {"EndpointName": "{endpoint}", "VariantName": "{variant}", "EndpointConfigName": "{config}"}


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def put_variant(
    cloudwatch: Any,
    window: VariantWindow,
    *,
    minutes: int = 10,
    requests: int = 300,
    latency_ms: float = 25.0,
    rate_5xx: float = 0.001,
    rate_4xx: float = 0.001,
    metrics: tuple[str, ...] = ("ModelLatency", "Invocations", "Invocation5XXErrors", "Invocation4XXErrors"),
) -> None:
    """One-minute statistic sets per variant, as SageMaker publishes them; seeded by the variant's name."""
    rng = random.Random(window.variant_name)
    dimensions = [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": window.variant_name}]
    data: list[dict[str, Any]] = []
    for minute in range(minutes):
        stamp = START + timedelta(minutes=minute)
        n = float(requests)
        mean_us = latency_ms * 1000 * rng.lognormvariate(0, 0.05)
        errors = {
            name: sum(rng.random() < p for _ in range(requests)) for name, p in (("5", rate_5xx), ("4", rate_4xx))
        }
        statistic_sets = {
            "ModelLatency": (n, mean_us * n, mean_us / 3, mean_us * 3, "Microseconds"),
            "Invocations": (n, n, 1.0, 1.0, "None"),
            "Invocation5XXErrors": (n, float(errors["5"]), 0.0, 1.0 if errors["5"] else 0.0, "None"),
            "Invocation4XXErrors": (n, float(errors["4"]), 0.0, 1.0 if errors["4"] else 0.0, "None"),
        }
        for name in metrics:
            count, total, low, high, unit = statistic_sets[name]
            data.append(
                {
                    "MetricName": name,
                    "Dimensions": dimensions,
                    "Timestamp": stamp,
                    "StatisticValues": {"SampleCount": count, "Sum": total, "Minimum": low, "Maximum": high},
                    "Unit": unit,
                }
            )
    cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=data)


def put_quality(cloudwatch: Any, window: VariantWindow, level: float, minutes: int = 10) -> None:
    """A custom per-variant gauge, dimensioned by endpoint, variant and endpoint config."""
    rng = random.Random(f"quality|{window.variant_name}")
    dimensions = [
        {"Name": "EndpointName", "Value": ENDPOINT},
        {"Name": "VariantName", "Value": window.variant_name},
        {"Name": "EndpointConfigName", "Value": window.endpoint_config_name},
    ]
    data = [
        {
            "MetricName": "Accuracy",
            "Dimensions": dimensions,
            "Timestamp": START + timedelta(minutes=minute),
            "Value": level * rng.lognormvariate(0, 0.02),
        }
        for minute in range(minutes)
    ]
    cloudwatch.put_metric_data(Namespace="InferOps/Quality", MetricData=data)


def run(cloudwatch: Any, spec: Analysis | None = None, minutes: int = 10) -> Any:
    return evaluate(
        cloudwatch,
        spec or Analysis(),
        endpoint=ENDPOINT,
        baseline=BASELINE,
        canary=CANARY,
        start=START,
        end=START + timedelta(minutes=minutes),
    )


def outcomes(verdict: Any) -> dict[str, Outcome]:
    return {m.name: m.outcome for m in verdict.metrics}


def capture_requests(cloudwatch: Any) -> list[dict[str, Any]]:
    """The parameters of every GetMetricData call the client makes."""
    calls: list[dict[str, Any]] = []
    cloudwatch.meta.events.register(
        "provide-client-params.cloudwatch.GetMetricData", lambda params, **_: calls.append(dict(params))
    )
    return calls


def test_healthy_canary_passes(cloudwatch: Any) -> None:
    put_variant(cloudwatch, BASELINE)
    put_variant(cloudwatch, CANARY)
    verdict = run(cloudwatch)
    assert verdict.result is Result.PASS, verdict.reason
    assert outcomes(verdict) == {
        "ModelLatency": Outcome.PASS,
        "Invocation5XXErrors": Outcome.PASS,
        "Invocation4XXErrors": Outcome.PASS,
    }
    latency = collect(
        cloudwatch,
        Analysis(),
        endpoint=ENDPOINT,
        baseline=BASELINE,
        canary=CANARY,
        start=START,
        end=START + timedelta(minutes=10),
    )[0]
    assert isinstance(latency, DistributionMetric)
    assert len(latency.baseline) == len(latency.canary) == 10  # one Average per minute
    assert all(20_000 < v < 30_000 for v in latency.canary)  # microseconds


def test_latency_regression_fails_naming_model_latency(cloudwatch: Any) -> None:
    put_variant(cloudwatch, BASELINE)
    put_variant(cloudwatch, CANARY, latency_ms=75.0)
    verdict = run(cloudwatch)
    assert verdict.result is Result.FAIL
    assert verdict.reason.startswith("critical metric failed: ModelLatency")
    assert outcomes(verdict)["ModelLatency"] is Outcome.FAIL
    assert verdict.metrics[0].effect == pytest.approx(2.0, abs=0.15)


def test_error_rate_fails_alone(cloudwatch: Any) -> None:
    """5 % 5XX against 0.1 %: latency and 4XX are fine, the critical error rate fails the canary by itself."""
    put_variant(cloudwatch, BASELINE, rate_5xx=0.001)
    put_variant(cloudwatch, CANARY, rate_5xx=0.05)
    verdict = run(cloudwatch)
    assert verdict.result is Result.FAIL
    assert verdict.reason.startswith("critical metric failed: Invocation5XXErrors")
    assert outcomes(verdict) == {
        "ModelLatency": Outcome.PASS,
        "Invocation5XXErrors": Outcome.FAIL,
        "Invocation4XXErrors": Outcome.PASS,
    }
    errors = verdict.metrics[1]
    assert errors.canary is not None and 0.04 < errors.canary < 0.06
    assert "ceiling" in errors.reason


def test_too_few_requests_is_inconclusive(cloudwatch: Any) -> None:
    put_variant(cloudwatch, BASELINE, requests=5)
    put_variant(cloudwatch, CANARY, requests=5, rate_5xx=0.0)
    verdict = run(cloudwatch)
    assert verdict.result is Result.INCONCLUSIVE
    assert outcomes(verdict)["Invocation5XXErrors"] is Outcome.NO_DATA
    assert "50 canary / 50 baseline requests, need 100 each" in verdict.reason


def test_no_datapoints_is_inconclusive(cloudwatch: Any) -> None:
    verdict = run(cloudwatch)
    assert verdict.result is Result.INCONCLUSIVE
    assert verdict.score is None
    assert set(outcomes(verdict).values()) == {Outcome.NO_DATA}


def test_an_idle_canary_is_inconclusive_not_healthy(cloudwatch: Any) -> None:
    """The canary took no traffic: its series are empty, never zeros that would look like a perfect canary."""
    put_variant(cloudwatch, BASELINE)
    verdict = run(cloudwatch)
    assert verdict.result is Result.INCONCLUSIVE
    assert "0 canary / 10 baseline datapoints" in verdict.reason


def test_missing_error_datapoints_are_unknown_not_zero(cloudwatch: Any) -> None:
    """Invocations without an Invocation5XXErrors datapoint are not requests that succeeded."""
    put_variant(cloudwatch, BASELINE)
    put_variant(cloudwatch, CANARY, metrics=("ModelLatency", "Invocations", "Invocation4XXErrors"))
    verdict = run(cloudwatch)
    assert verdict.result is Result.INCONCLUSIVE
    assert outcomes(verdict)["Invocation5XXErrors"] is Outcome.NO_DATA
    assert "0 canary / 3000 baseline requests" in verdict.reason


def test_thin_window_needs_min_samples(cloudwatch: Any) -> None:
    put_variant(cloudwatch, BASELINE, minutes=4)
    put_variant(cloudwatch, CANARY, minutes=4)
    assert run(cloudwatch, minutes=4).result is Result.INCONCLUSIVE  # 4 datapoints < min_samples 5
    assert run(cloudwatch, Analysis(min_samples=3), minutes=4).result is Result.PASS


def test_interval_is_the_period(cloudwatch: Any) -> None:
    put_variant(cloudwatch, BASELINE)
    put_variant(cloudwatch, CANARY)
    calls = capture_requests(cloudwatch)
    metrics = collect(
        cloudwatch,
        Analysis(interval_seconds=120, min_samples=3),
        endpoint=ENDPOINT,
        baseline=BASELINE,
        canary=CANARY,
        start=START,
        end=START + timedelta(minutes=10),
    )
    assert {q["MetricStat"]["Period"] for q in calls[0]["MetricDataQueries"]} == {120}
    assert isinstance(metrics[0], DistributionMetric)
    assert len(metrics[0].baseline) == 5
    assert isinstance(metrics[1], RateMetric)
    assert metrics[1].baseline_trials == 3000  # the same requests, in five two-minute sums


def custom(critical: bool) -> CustomMetric:
    return CustomMetric(
        namespace="InferOps/Quality", metric_name="Accuracy", dimensions=QUALITY, bad="decrease", critical=critical
    )


def test_custom_metric_dropping_fails_when_critical(cloudwatch: Any) -> None:
    put_variant(cloudwatch, BASELINE)
    put_variant(cloudwatch, CANARY)
    put_quality(cloudwatch, BASELINE, 0.9)
    put_quality(cloudwatch, CANARY, 0.9 * 0.7)
    verdict = run(cloudwatch, Analysis(metrics=[custom(critical=True)]))
    assert verdict.result is Result.FAIL
    assert verdict.reason.startswith("critical metric failed: InferOps/Quality/Accuracy Average")
    quality = verdict.metrics[-1]
    assert quality.outcome is Outcome.FAIL
    assert quality.effect == pytest.approx(-0.3, abs=0.03)


def test_custom_metric_dropping_is_marginal_when_not_critical(cloudwatch: Any) -> None:
    """Three of four metrics pass: score 75, the bottom of the Marginal band; never a Pass."""
    put_variant(cloudwatch, BASELINE)
    put_variant(cloudwatch, CANARY)
    put_quality(cloudwatch, BASELINE, 0.9)
    put_quality(cloudwatch, CANARY, 0.9 * 0.7)
    verdict = run(cloudwatch, Analysis(metrics=[custom(critical=False)]))
    assert verdict.result is Result.MARGINAL
    assert verdict.score == 75
    assert outcomes(verdict)["InferOps/Quality/Accuracy Average"] is Outcome.FAIL


def test_one_request_with_placeholders_filled_and_valid_ids(cloudwatch: Any) -> None:
    put_quality(cloudwatch, BASELINE, 0.9)
    put_quality(cloudwatch, CANARY, 0.9)
    calls = capture_requests(cloudwatch)
    spec = Analysis(metrics=[custom(critical=False), custom(critical=True).model_copy(update={"stat": "Maximum"})])
    metrics = collect(
        cloudwatch,
        spec,
        endpoint=ENDPOINT,
        baseline=BASELINE,
        canary=CANARY,
        start=START,
        end=START + timedelta(hours=1),
    )
    assert len(calls) == 1
    request = calls[0]
    assert (request["StartTime"], request["EndTime"]) == (START, START + timedelta(hours=1))
    queries = request["MetricDataQueries"]
    ids = [q["Id"] for q in queries]
    assert len(ids) == len(set(ids)) == 2 * (4 + 2)
    assert all(QUERY_ID.match(i) for i in ids)
    custom_dimensions = [
        {d["Name"]: d["Value"] for d in q["MetricStat"]["Metric"]["Dimensions"]}
        for q in queries
        if q["MetricStat"]["Metric"]["Namespace"] == "InferOps/Quality"
    ]
    baseline = {"EndpointName": "ep", "VariantName": "blue", "EndpointConfigName": "ep-cfg-1"}
    canary = {"EndpointName": "ep", "VariantName": "green", "EndpointConfigName": "ep-cfg-2"}
    assert custom_dimensions == [baseline, baseline, canary, canary]
    quality = metrics[3]
    assert isinstance(quality, DistributionMetric)
    assert len(quality.baseline) == len(quality.canary) == 10  # the filled dimensions found the series
    builtin = {q["MetricStat"]["Metric"]["MetricName"]: q["MetricStat"]["Stat"] for q in queries[:4]}
    assert builtin == {
        "ModelLatency": "Average",
        "Invocations": "Sum",
        "Invocation5XXErrors": "Sum",
        "Invocation4XXErrors": "Sum",
    }


def test_queries_are_sent_500_at_a_time(cloudwatch: Any) -> None:
    calls = capture_requests(cloudwatch)
    queries: list[Any] = [
        {
            "Id": f"q{i}",
            "MetricStat": {"Metric": {"Namespace": "Test", "MetricName": f"m{i}"}, "Period": 60, "Stat": "Sum"},
        }
        for i in range(501)
    ]
    series = _get_metric_data(cloudwatch, queries, START, START + timedelta(minutes=1))
    assert [len(c["MetricDataQueries"]) for c in calls] == [500, 1]
    assert len(series) == 501
    assert all(points == {} for points in series.values())


# ---------------------------------------------------------------------------------------------- the request model
@pytest.mark.parametrize("stat", ["Average", "Sum", "Minimum", "Maximum", "SampleCount", "p99", "p99.9", "p0", "p100"])
def test_known_statistics(stat: str) -> None:
    assert CustomMetric(namespace="N", metric_name="m", stat=stat, bad="increase").stat == stat


@pytest.mark.parametrize("stat", ["avg", "P99", "p101", "p99.999", "tm99", "p"])
def test_unknown_statistic_is_refused(stat: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CustomMetric(namespace="N", metric_name="m", stat=stat, bad="increase")
    [error] = caught.value.errors()
    assert error["loc"] == ("stat",)
    assert f"unknown statistic {stat!r}" in error["msg"]


@pytest.mark.parametrize("value", ["{model}", "{Endpoint}", "{endpoint", "x}", "{{endpoint}}", "{endpoint.name}"])
def test_unknown_placeholder_is_refused(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CustomMetric(namespace="N", metric_name="m", bad="increase", dimensions={"EndpointName": value})
    [error] = caught.value.errors()
    assert error["loc"] == ("dimensions",)
    assert "the only placeholders are {endpoint}, {variant}, {config}" in error["msg"]


def test_placeholders_are_filled_per_variant() -> None:
    metric = CustomMetric(
        namespace="N", metric_name="m", bad="increase", dimensions={"Host": "{endpoint}/{variant}", "Fixed": "x"}
    )
    assert metric.dimensions_for(endpoint="ep", variant="blue", config="c1") == {"Host": "ep/blue", "Fixed": "x"}


@pytest.mark.parametrize("seconds", [10, 30, 90, 3590])
def test_interval_must_be_whole_minutes(seconds: int) -> None:
    with pytest.raises(ValidationError) as caught:
        Analysis(interval_seconds=seconds)
    [error] = caught.value.errors()
    assert error["loc"] == ("interval_seconds",)
    assert f"{seconds} is not a multiple of 60" in error["msg"]
    assert Analysis(interval_seconds=300).interval_seconds == 300


def test_analysis_defaults_and_bounds() -> None:
    spec = Analysis()
    assert (spec.min_samples, spec.metrics, spec.max_extensions, spec.on_marginal) == (5, [], 3, "rollback")
    for bad in ({"min_samples": 2}, {"max_extensions": 11}, {"on_marginal": "ignore"}, {"interval_seconds": 3660}):
        with pytest.raises(ValidationError):
            Analysis.model_validate(bad)
    with pytest.raises(ValidationError):
        Analysis(metrics=[custom(critical=False)] * 11)


def test_a_bad_custom_metric_names_its_field_in_the_request() -> None:
    """What the API's 422 reports: the dotted path to the refused field."""
    body = {
        "endpoint_name": "ep",
        "model": {"source": "existing", "model_name": "m2"},
        "analysis": {"metrics": [{"namespace": "N", "metric_name": "m", "stat": "median", "bad": "increase"}]},
    }
    with pytest.raises(ValidationError) as caught:
        DeploymentRequest.model_validate(body)
    [error] = caught.value.errors()
    assert error["loc"] == ("analysis", "metrics", 0, "stat")


# ---------------------------------------------------------------------------------------------- on the twin
def test_twin_bad_canary_fails_and_healthy_canary_passes() -> None:
    """Two endpoints with two production variants at 50/50: old model and new model; one new model is bad."""
    clock = VirtualClock(speed=0.0, auto_advance=True)
    sink = ListSink(now=clock.utcnow)
    clock.start()
    try:
        with mock_aws():
            sagemaker = SageMakerSimulator(clock, sink)
            sagemaker.install()
            metrics = CloudWatchModel(clock, sink, sagemaker, seed=11)
            metrics.install()
            try:
                verdicts = _canaries_on_the_twin(clock, metrics)
            finally:
                metrics.uninstall()
                sagemaker.uninstall()
    finally:
        clock.stop()
    assert clock.errors == []
    bad, healthy = verdicts
    assert bad.result is Result.FAIL
    assert bad.reason.startswith("critical metric failed: ModelLatency")
    assert outcomes(bad) == {
        "ModelLatency": Outcome.FAIL,
        "Invocation5XXErrors": Outcome.FAIL,
        "Invocation4XXErrors": Outcome.PASS,
    }
    assert healthy.result is Result.PASS, healthy.reason


def _canaries_on_the_twin(clock: VirtualClock, metrics: CloudWatchModel) -> list[Any]:
    sm = boto3.client("sagemaker", region_name="us-east-1")
    for model in ("old", "new-bad", "new-good"):
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn="arn:aws:iam::123456789012:role/SageMakerExecution",
            PrimaryContainer={"Image": f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{model}:1"},
        )
    for endpoint, new_model in (("bad-ep", "new-bad"), ("good-ep", "new-good")):
        sm.create_endpoint_config(
            EndpointConfigName=f"{endpoint}-cfg",
            ProductionVariants=[
                {
                    "VariantName": variant,
                    "ModelName": model,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 1.0,
                }
                for variant, model in (("blue", "old"), ("green", new_model))
            ],
        )
        sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-cfg")
        metrics.set_load_profile(endpoint, requests_per_minute=600)
    metrics.set_model_profile("new-bad", ModelProfile.bad())
    clock.sleep(600)  # both endpoints InService
    assert {sm.describe_endpoint(EndpointName=e)["EndpointStatus"] for e in ("bad-ep", "good-ep")} == {"InService"}
    begin = math.ceil(clock.now() / 60) * 60
    clock.sleep(begin + 15 * 60 + 30 - clock.now())  # 15 virtual minutes, and the last minute's metrics written
    start = datetime.fromtimestamp(begin, tz=UTC)
    cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
    return [
        evaluate(
            cloudwatch,
            Analysis(),
            endpoint=endpoint,
            baseline=VariantWindow(variant_name="blue", endpoint_config_name=f"{endpoint}-cfg"),
            canary=VariantWindow(variant_name="green", endpoint_config_name=f"{endpoint}-cfg"),
            start=start,
            end=start + timedelta(minutes=15),
        )
        for endpoint in ("bad-ep", "good-ep")
    ]
