"""The canary judge on synthetic distributions with known answers; statistics cross-checked with SciPy."""

from __future__ import annotations

import random

import pytest
from scipy import stats

from inferops.analysis import (
    DistributionMetric,
    Outcome,
    RateMetric,
    Result,
    holm,
    judge,
    mann_whitney_p,
    median,
    two_proportion_p,
)


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
