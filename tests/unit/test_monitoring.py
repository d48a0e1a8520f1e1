"""InferOps' own metrics (EMF) and the dashboard and alarms in template.yaml that read them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from inferops import metrics
from twin.template import Template

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> Template:
    return Template(ROOT / "template.yaml")


def test_emit_writes_one_emf_record_with_its_dimensions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "inferops")
    lines: list[str] = []
    metrics.emit("OperationOutcomes", Kind="deployment", Status="ROLLED_BACK", out=lines.append)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics.emit("OperationOutcomes", Kind="deployment", Status="FAILED", out=lines.append)

    (record,) = [json.loads(line) for line in lines]
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "InferOps"
    assert directive["Dimensions"] == [["Kind", "Status", "service"]]
    assert directive["Metrics"] == [{"Name": "OperationOutcomes", "Unit": "Count"}]
    assert (record["Kind"], record["Status"], record["service"], record["OperationOutcomes"]) == (
        "deployment",
        "ROLLED_BACK",
        "inferops",
        [1.0],
    )


def _emitted_names() -> set[str]:
    """Every metric name the layer emits (add_metric / emit calls and the metrics module's helpers)."""
    source = "\n".join(p.read_text() for p in (ROOT / "layers/shared/inferops").glob("*.py"))
    return set(re.findall(r"""(?:add_metric|emit)\(\s*["']([A-Za-z0-9]+)["']""", source))


def test_the_dashboard_plots_metrics_the_code_emits(template: Template) -> None:
    body = json.loads(template.resolve(template.props("OperatorDashboard")["DashboardBody"]))
    text = json.dumps(body)
    inferops_names = set(re.findall(r'"InferOps", "([A-Za-z]+)"', text))
    inferops_names |= set(re.findall(r'MetricName=\\"([A-Za-z]+)\\"', text))
    inferops_names -= {"Errors", "Throttles", "ExecutionsFailed", "ExecutionsTimedOut"}
    aws_names = {"AsyncInferenceCompleted", "AsyncInferenceFailed"}
    alarm_arns = {a for w in body["widgets"] if w["type"] == "alarm" for a in w["properties"]["alarms"]}

    assert {"OperationsStarted", "OperationsFinished", "OperationOutcomes", "Verdicts"} <= inferops_names
    assert aws_names <= _emitted_names()
    assert inferops_names <= _emitted_names()
    assert len(alarm_arns) == len(template.of_type("AWS::CloudWatch::Alarm"))
    assert len(body["widgets"]) == 9


def test_every_alarm_notifies_the_operators(template: Template) -> None:
    topic = str(template.resolve({"Ref": "OperatorTopic"}))
    actions: dict[str, Any] = {
        logical_id: template.resolve(template.props(logical_id)).get("AlarmActions")
        for logical_id in template.of_type("AWS::CloudWatch::Alarm")
    }
    assert actions and all(value == [topic] for value in actions.values()), actions
