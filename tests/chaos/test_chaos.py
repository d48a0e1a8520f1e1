"""The short chaos run of `make test`: one seeded scenario per flow, with the faults that matter most (a crash,
a forced alarm, a repeated request; an unhealthy model for async results). `make chaos` runs hundreds."""

from __future__ import annotations

import pytest
from chaos import FLOWS, run_one

pytestmark = pytest.mark.flow

SEEDS = {"deployment-native": 8, "deployment-managed": 8, "shadow-test": 8, "async-results": 4}


def test_every_flow_has_a_seed() -> None:
    assert set(SEEDS) == set(FLOWS)


@pytest.mark.parametrize(("flow", "seed"), sorted(SEEDS.items()))
def test_invariants_hold_under_faults(flow: str, seed: int) -> None:
    result = run_one(flow, seed)
    assert result.violations == [], (result.faults, result.violations)
    injected = result.injected
    assert injected.get("event.duplicated", 0) + injected.get("sns.redelivered", 0) > 0, injected
    assert sum(n for k, n in injected.items() if k.startswith("sagemaker.")) > 0, injected  # throttles, 5xx
    assert result.samples > 0 or flow == "async-results"
