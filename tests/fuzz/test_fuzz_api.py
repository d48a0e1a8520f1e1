"""The short fuzz run of `make test`: a few generated requests per operation (valid and schema-breaking), every
route unsigned, oversized, deep and broken bodies, over HTTP against the twin's API. `make fuzz` runs more."""

from __future__ import annotations

import json

import pytest
from fuzz_api import DOCUMENT, print_report, run

pytestmark = pytest.mark.flow

EXAMPLES = 2
SEED = 20261122
OPERATIONS = sum(
    1
    for item in json.loads(DOCUMENT.read_text())["paths"].values()
    for method in item
    if method in {"get", "put", "post", "patch", "delete"}
)


def test_no_5xx_and_every_refusal_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    report = run(EXAMPLES, SEED)
    with capsys.disabled():
        print()
        print_report(report, EXAMPLES, SEED)
    assert sum(report.requests.values()) > 100
    assert len(report.requests) == OPERATIONS  # every operation of the document was exercised
    assert report.findings == []
