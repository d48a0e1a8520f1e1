"""The API function end to end in-process: real API Gateway events in, JSON and status codes out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from api_kit import Context, api_request
from moto import mock_aws

from scripts.openapi import DOCUMENT, generate
from twin.lambdas import load_function

EVENTS = Path(__file__).resolve().parents[2] / "events" / "api"
ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"


@pytest.fixture(scope="module")
def api() -> ModuleType:
    return load_function("api")


@pytest.fixture
def sagemaker() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        client.create_model(
            ModelName="fraud-v1",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={
                "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/f:1",
                "ModelDataUrl": "s3://m/1",
            },
        )
        client.create_endpoint_config(
            EndpointConfigName="fraud-v1",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "fraud-v1",
                    "InitialInstanceCount": 2,
                    "InstanceType": "ml.g4dn.xlarge",
                }
            ],
        )
        client.create_endpoint(EndpointName="fraud-scorer", EndpointConfigName="fraud-v1")
        yield client


def call(
    api: ModuleType, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, reply, _ = api_request(api, method, path, body=body, query=query)
    return status, reply


def test_sample_events_are_answered(api: ModuleType, sagemaker: Any) -> None:
    for sample in sorted(EVENTS.glob("*.json")):
        reply = api.handler(json.loads(sample.read_text()), Context())
        assert reply["statusCode"] in {200, 404, 422}, (sample.name, reply["body"])
        assert json.loads(reply["body"])


def test_catalog_filters(api: ModuleType) -> None:
    status, body = call(api, "GET", "/catalog/instances", query={"accelerator_model": "H100"})
    assert status == 200
    assert body["count"] >= 1
    assert all(t["accelerator"]["model"] == "H100" for t in body["instance_types"])

    status, body = call(api, "GET", "/catalog/instances", query={"architecture": "arm64", "accelerator_kind": "none"})
    assert status == 200
    assert {t["architecture"] for t in body["instance_types"]} == {"arm64"}


def test_catalog_lookup_and_typo(api: ModuleType) -> None:
    status, body = call(api, "GET", "/catalog/instances/ml.g6e.xlarge")
    assert status == 200
    assert (body["accelerator"]["model"], body["accelerator"]["memory_gib_each"]) == ("L40S", 48)

    status, body = call(api, "GET", "/catalog/instances/ml.g6e.xlarg")
    assert status == 400
    assert body["field"] == "instance_type"
    assert "ml.g6e.xlarge" in body["message"]


def test_fit_validates_its_query(api: ModuleType) -> None:
    status, body = call(api, "GET", "/catalog/fit", query={"model_gb": "70", "tensor_parallel": "8"})
    assert status == 200
    assert "ml.p4d.24xlarge" in {f["instance_type"] for f in body["fits"]}

    status, body = call(api, "GET", "/catalog/fit", query={"model_gb": "-1"})
    assert status == 422
    assert body["field"] == "model_gb"


def test_plan_for_a_live_endpoint(api: ModuleType, sagemaker: Any) -> None:
    request = {
        "endpoint_name": "fraud-scorer",
        "model": {"source": "existing", "model_name": "fraud-v1"},
        "strategy": {"type": "linear", "step": {"value": 50}, "bake_seconds": 120},
        "alarms": ["fraud-5xx"],
    }
    status, body = call(api, "POST", "/plans", body=request)
    assert status == 200, body
    plan = body["plan"]
    assert plan["current_instance_type"] == "ml.g4dn.xlarge"
    assert plan["current_instance_count"] == 2
    assert plan["deployment_config"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "LINEAR"
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"][0]["EndpointConfigName"] == "fraud-v1"
    assert len(sagemaker.list_endpoint_configs()["EndpointConfigs"]) == 1  # planning changes nothing


def test_plan_refusals_are_422_with_fields(api: ModuleType, sagemaker: Any) -> None:
    request = {
        "endpoint_name": "fraud-scorer",
        "model": {"source": "existing", "model_name": "no-such-model"},
        "strategy": {"type": "canary", "size": {"value": 60}},
        "alarms": ["a"],
    }
    status, body = call(api, "POST", "/plans", body=request)
    assert status == 422
    fields = {v["field"] for v in body["violations"]}
    assert {"model.model_name", "strategy.size"} <= fields
    assert "canary size 60 %" in json.dumps(body)


def test_missing_endpoint_is_404(api: ModuleType, sagemaker: Any) -> None:
    request = {"endpoint_name": "ghost", "model": {"source": "existing", "model_name": "fraud-v1"}}
    status, body = call(api, "POST", "/plans", body=request)
    assert status == 404
    assert body["field"] == "endpoint_name"
    assert "ghost" in body["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": {"source": "existing", "model_name": "m"}}, "endpoint_name"),
        ({"endpoint_name": "bad name!", "model": {"source": "existing", "model_name": "m"}}, "endpoint_name"),
        ({"endpoint_name": "e", "model": {"source": "ftp", "model_name": "m"}}, "model"),
        (
            {
                "endpoint_name": "e",
                "model": {"source": "existing", "model_name": "m"},
                "strategy": {"type": "canary", "size": {"value": 0}},
            },
            "strategy",
        ),
        (
            {"endpoint_name": "e", "model": {"source": "existing", "model_name": "m"}, "surprise": 1},
            "surprise",
        ),
        ("{not json", "body"),
    ],
)
def test_malformed_requests_name_the_field(api: ModuleType, body: Any, field: str) -> None:
    status, reply = call(api, "POST", "/plans", body=body)
    assert status == 422, reply
    assert reply["field"].startswith(field), reply
    assert reply["message"]


def test_unknown_route_is_404(api: ModuleType) -> None:
    status, _ = call(api, "GET", "/nope")
    assert status == 404


COLD_START = """
import json, sys
sys.path[:0] = [{root!r}, {tests!r}]
from api_kit import api_request
from twin.lambdas import load_function
api = load_function("api")
features = [name for _, name in api.FEATURE_ROUTERS]
seen = [[name for name in features if hasattr(api, name)]]
for path in ("/catalog/instances/ml.g5.xlarge", "/shadow-tests/op-1/nothing-here", "/no-such-thing"):
    status, body, _ = api_request(api, "GET", path)
    seen.append([status, body.get("message") if status == 404 else None, [n for n in features if hasattr(api, n)]])
print(json.dumps(seen))
"""


def test_a_cold_start_loads_the_core_routes_and_only_the_feature_a_request_needs() -> None:
    """In a fresh interpreter, as in a new Lambda container."""
    root = Path(__file__).resolve().parents[2]
    code = COLD_START.format(root=str(root), tests=str(root / "tests" / "unit"))
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "TABLE_NAME": "operations"}
    env.pop("PRICE_BUCKET", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    features = ["async_routes", "diagnosis_routes", "shadow_routes", "scaling_routes", "delivery_routes"]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        [],
        [200, None, []],
        [404, "no route GET /shadow-tests/op-1/nothing-here", ["shadow_routes"]],
        [404, "no route GET /no-such-thing", features],  # an unknown path: every router, then the 404
    ]


def test_every_feature_route_is_found_by_its_own_pattern_only() -> None:
    """A route added to a routes module but not to FEATURE_ROUTERS would answer 404 on a cold start."""
    api = load_function("api")
    api.include_routes()
    for _, name in api.FEATURE_ROUTERS:
        rules = {key[0] for key in getattr(api, name).router._routes}
        assert rules, name
        for rule in rules:
            path = re.sub(r"<\w+>", "x-1", rule)
            found = [other for other_pattern, other in api.FEATURE_ROUTERS if other_pattern.match(path)]
            assert found == [name] and not api.CORE_PATHS.match(path), (rule, found)
    own = {route.path for route in [*api.app._static_routes, *api.app._dynamic_routes]} - {
        key[0] for _, name in api.FEATURE_ROUTERS for key in getattr(api, name).router._routes
    }
    assert own and all(api.CORE_PATHS.match(rule) for rule in own - {"/openapi.json"}), own


def test_committed_openapi_document_is_current() -> None:
    assert DOCUMENT.read_text() == generate(), "docs/openapi.json is stale: run `make openapi`"


def test_refreshed_prices_replace_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployed stack prices plans with what PriceRefreshFunction stored, not the committed snapshot."""
    from inferops import catalog

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="prices")
        document = {"region": "us-east-1", "as_of": "2026-11-20", "source": "test", "prices": {"ml.g5.xlarge": 9.5}}
        s3.put_object(Bucket="prices", Key="prices/us-east-1.json", Body=json.dumps(document).encode())
        monkeypatch.setenv("PRICE_BUCKET", "prices")
        monkeypatch.setenv("PRICE_REGION", "us-east-1")
        api = load_function("api")
        api._use_refreshed_prices.cache_clear()
        before = catalog.get("ml.g5.2xlarge").price_usd_per_hour
        try:
            status, body = call(api, "GET", "/catalog/instances/ml.g5.xlarge")
            assert status == 200
            assert body["price_usd_per_hour"] == 9.5
            assert catalog.snapshot().as_of.isoformat() == "2026-11-20"
            assert catalog.get("ml.g5.2xlarge").price_usd_per_hour == before  # absent: snapshot price kept
        finally:
            catalog._refreshed = None
            api._use_refreshed_prices.cache_clear()


def test_missing_refreshed_prices_keep_the_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    from inferops import catalog

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="empty")
        monkeypatch.setenv("PRICE_BUCKET", "empty")
        api = load_function("api")
        api._use_refreshed_prices.cache_clear()
        snapshot = catalog.snapshot()
        try:
            status, _ = call(api, "GET", "/catalog/instances/ml.g5.xlarge")
            assert status == 200
            assert catalog.snapshot() == snapshot
        finally:
            api._use_refreshed_prices.cache_clear()


def test_sagemaker_validation_errors_are_the_callers_400_not_a_502(api: ModuleType) -> None:
    from botocore.exceptions import ClientError

    refused = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "Value at 'endpointName' failed to satisfy constraint"}},
        "DescribeEndpoint",
    )
    reply = api._aws_error(refused)
    assert reply.status_code == 400
    assert "endpointName" in reply.body["message"]
    throttled = ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeEndpoint")
    assert api._aws_error(throttled).status_code == 503
