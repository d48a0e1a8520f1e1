"""The short fuzz run of `make test`: a few generated requests per operation (valid and schema-breaking), every
route unsigned, oversized, deep and broken bodies, over HTTP against the twin's API. `make fuzz` runs more."""

from __future__ import annotations

import pytest
from fuzz_api import print_report, run

pytestmark = pytest.mark.flow

EXAMPLES = 2
SEED = 20261122


def test_no_5xx_and_every_refusal_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    report = run(EXAMPLES, SEED)
    with capsys.disabled():
        print()
        print_report(report, EXAMPLES, SEED)
    assert sum(report.requests.values()) > 100  # every operation was exercised, both modes
    assert len(report.requests) == 19
    assert report.findings == []
