"""Least privilege in template.yaml, checked on every change: one role per function, `Resource: "*"` only for
actions that have no resource-level permissions (the allow-list below, each with the reason), no secrets in the
template's literals, every API route behind IAM auth."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twin.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]

# Actions AWS's Service Authorization Reference lists with no resource type (they only accept "*").
ACTIONS_WITHOUT_RESOURCE_LEVEL_PERMISSIONS = frozenset(
    {
        # task tokens are opaque: SendTask* name no state machine
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:SendTaskHeartbeat",
        # CloudWatch metric reads and writes name no resource
        "cloudwatch:GetMetricData",
        "cloudwatch:GetMetricStatistics",
        "cloudwatch:ListMetrics",
        "cloudwatch:PutMetricData",
        # Application Auto Scaling's reads
        "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:DescribeScalingPolicies",
        "application-autoscaling:DescribeScalingActivities",
        "application-autoscaling:DescribeScheduledActions",
        # the Price List API
        "pricing:GetProducts",
        "pricing:DescribeServices",
        "pricing:GetAttributeValues",
        # vended log delivery for Step Functions logging (account-level)
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
        # X-Ray tracing
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        # SageMaker's List* calls (no resource type)
        "sagemaker:ListEndpoints",
        "sagemaker:ListModelPackages",
        "sagemaker:ListInferenceComponents",
        "sagemaker:ListInferenceExperiments",
    }
)
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
SECRET_PATTERNS = (
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an access key id
    re.compile(r"(?i)(secret|password|token)\s*[:=]\s*['\"][^'\"$]{8,}['\"]"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(load_yaml((ROOT / "template.yaml").read_text())["Resources"])


def _statements(resources: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every inline policy statement: SAM `Policies` documents, IAM roles' and policies' documents."""
    for name, resource in resources.items():
        props = resource.get("Properties") or {}
        documents = [p for p in props.get("Policies") or [] if isinstance(p, dict) and "Statement" in p]
        documents += [p.get("PolicyDocument") or {} for p in props.get("Policies") or [] if isinstance(p, dict)]
        if "PolicyDocument" in props:
            documents.append(props["PolicyDocument"])
        for document in documents:
            for statement in document.get("Statement") or []:
                yield name, statement


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_every_function_has_its_own_role(resources: dict[str, Any]) -> None:
    functions = {n: r["Properties"] for n, r in resources.items() if r["Type"] in FUNCTION_TYPES}
    assert functions
    shared = [n for n, props in functions.items() if "Role" in props]
    # SAM creates one role per function from its `Policies`; an explicit `Role` could be shared
    assert shared == [], f"functions with an explicit (possibly shared) Role: {shared}"
    assert all(props.get("Policies") for props in functions.values()), "a function without policies"


def test_wildcard_resources_only_for_actions_without_resource_level_permissions(resources: dict[str, Any]) -> None:
    offending = []
    for name, statement in _statements(resources):
        if statement.get("Effect") != "Allow" or "*" not in _listed(statement.get("Resource")):
            continue
        actions = _listed(statement.get("Action"))
        offending += [f"{name}: {a}" for a in actions if a not in ACTIONS_WITHOUT_RESOURCE_LEVEL_PERMISSIONS]
    assert offending == [], "scope these by ARN (or add to the allow-list with the reason):\n" + "\n".join(offending)


def test_no_statement_allows_every_action(resources: dict[str, Any]) -> None:
    wide = [
        f"{name}: {a}"
        for name, statement in _statements(resources)
        if statement.get("Effect") == "Allow"
        for a in _listed(statement.get("Action"))
        if a == "*" or str(a).endswith(":*")
    ]
    assert wide == []


def test_the_checks_see_the_policies(resources: dict[str, Any]) -> None:
    """The walk above finds the template's statements (a test that cannot fail would prove nothing)."""
    found = list(_statements(resources))
    assert len(found) > 20
    assert any("*" in _listed(s.get("Resource")) for _, s in found)


def test_every_api_route_requires_iam_auth(resources: dict[str, Any]) -> None:
    apis = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Serverless::Api"}
    assert apis
    assert all(props["Auth"]["DefaultAuthorizer"] == "AWS_IAM" for props in apis.values())
    opened = [
        f"{name}.{event}"
        for name, resource in resources.items()
        if resource["Type"] in FUNCTION_TYPES
        for event, spec in (resource["Properties"].get("Events") or {}).items()
        if spec["Type"] == "Api" and (spec["Properties"].get("Auth") or {}).get("Authorizer") == "NONE"
    ]
    assert opened == []


@pytest.mark.parametrize(
    "folder", ["layers/shared/inferops", "functions", "statemachines", "template.yaml", "samconfig.toml"]
)
def test_no_secrets_in_code_or_config(folder: str) -> None:
    path = ROOT / folder
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".json", ".yaml")]
    found = [
        f"{f.relative_to(ROOT)}: {m.group(0)[:40]}"
        for f in files
        for pattern in SECRET_PATTERNS
        for m in pattern.finditer(f.read_text(errors="replace"))
    ]
    assert found == []
