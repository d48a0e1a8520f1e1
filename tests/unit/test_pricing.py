"""Price refresh: PriceList parsing and pagination (botocore Stubber, no network) and the thin handler."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from inferops import pricing

ROOT = Path(__file__).resolve().parents[2]

LOCATION = {"us-east-1": "US East (N. Virginia)", "eu-west-1": "EU (Ireland)"}
PREFIX = {"us-east-1": "USE1", "eu-west-1": "EU"}


def price_item(
    name: str,
    usd: str,
    *,
    region: str = "us-east-1",
    component: str = "Hosting",
    unit: str = "Hrs",
    family: str = "ML Instance",
    sku: str | None = None,
) -> str:
    """A PriceList entry shaped like the API's aws_v1 format for AmazonSageMaker."""
    sku = sku or f"SKU-{name}-{region}-{component}-{unit}"
    usage = {"Hosting": "Host", "Training": "Train", "AsyncInf": "AsyncInf"}.get(component, component)
    return json.dumps(
        {
            "product": {
                "productFamily": family,
                "attributes": {
                    "servicecode": "AmazonSageMaker",
                    "location": LOCATION[region],
                    "locationType": "AWS Region",
                    "regionCode": region,
                    "instanceName": name,
                    "instanceType": name,
                    "computeType": "Accelerated Computing",
                    "vCpu": "4",
                    "memory": "16 GiB",
                    "gpu": "1",
                    "platoinstancetype": component,
                    "platoinstancename": name,
                    "component": component,
                    "usagetype": f"{PREFIX[region]}-{usage}:{name}",
                    "operation": "RunInstance",
                    "servicename": "Amazon SageMaker",
                },
                "sku": sku,
            },
            "serviceCode": "AmazonSageMaker",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": unit,
                                "endRange": "Inf",
                                "description": f"${usd} per {component} {name} in {LOCATION[region]}",
                                "appliesTo": [],
                                "rateCode": f"{sku}.JRTCKXETXF.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                }
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def expected_request(region: str, token: str | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {
        "ServiceCode": "AmazonSageMaker",
        "Filters": [
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
            {"Type": "TERM_MATCH", "Field": "productFamily", "Value": "ML Instance"},
            {"Type": "TERM_MATCH", "Field": "platoinstancetype", "Value": "Hosting"},
        ],
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
    }
    if token:
        req["NextToken"] = token
    return req


@pytest.fixture
def client() -> Iterator[tuple[Any, Stubber]]:
    c = boto3.client("pricing", region_name="us-east-1")
    with Stubber(c) as stub:
        yield c, stub
        stub.assert_no_pending_responses()


def test_paginates_and_keeps_only_hourly_hosting_prices(
    client: tuple[Any, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    c, stub = client
    stub.add_response(
        "get_products",
        {
            "FormatVersion": "aws_v1",
            "PriceList": [
                price_item("ml.g5.xlarge", "1.4080000000"),
                price_item("ml.g5.xlarge", "0.0000000000", sku="FREE0001"),  # placeholder $0 row
                price_item("ml.m5.xlarge", "0.2300000000", component="Training"),  # not hosting
                price_item("ml.m5.large", "0.0500000000", unit="GB-Mo"),  # not an hourly rate
                '{"product": ',  # truncated JSON: malformed
            ],
            "NextToken": "page-2",
        },
        expected_request("us-east-1"),
    )
    stub.add_response(
        "get_products",
        {
            "FormatVersion": "aws_v1",
            "PriceList": [
                price_item("ml.m5.large", "0.1150000000"),
                price_item("ml.c5.large", "not-a-number"),  # malformed price: skipped, not guessed
                price_item("ml.g5.2xlarge", "1.3", region="eu-west-1"),  # another region
                price_item("ml.g5.4xlarge", "2.03", family="Storage"),  # not an ML instance
            ],
        },
        expected_request("us-east-1", "page-2"),
    )
    with caplog.at_level(logging.WARNING, logger="inferops.pricing"):
        prices = pricing.fetch_hosting_prices(c, "us-east-1")
    assert prices == {"ml.g5.xlarge": 1.408, "ml.m5.large": 0.115}
    assert list(prices) == sorted(prices)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("malformed" in w for w in warnings)
    assert any("not-a-number" in w for w in warnings)


def test_single_page_without_token(client: tuple[Any, Stubber]) -> None:
    c, stub = client
    stub.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": [price_item("ml.g6e.xlarge", "2.6054", region="eu-west-1")]},
        expected_request("eu-west-1"),
    )
    assert pricing.fetch_hosting_prices(c, "eu-west-1") == {"ml.g6e.xlarge": 2.6054}


def test_duplicate_prices_keep_the_highest_and_warn(
    client: tuple[Any, Stubber], caplog: pytest.LogCaptureFixture
) -> None:
    c, stub = client
    stub.add_response(
        "get_products",
        {
            "FormatVersion": "aws_v1",
            "PriceList": [
                price_item("ml.g5.xlarge", "1.408", sku="AAA"),
                price_item("ml.g5.xlarge", "1.5", sku="BBB"),
            ],
        },
        expected_request("us-east-1"),
    )
    with caplog.at_level(logging.WARNING, logger="inferops.pricing"):
        assert pricing.fetch_hosting_prices(c, "us-east-1") == {"ml.g5.xlarge": 1.5}
    assert any("priced twice" in r.getMessage() for r in caplog.records)


def test_api_errors_propagate(client: tuple[Any, Stubber]) -> None:
    c, stub = client
    stub.add_client_error("get_products", "ThrottlingException", "Rate exceeded")
    with pytest.raises(c.exceptions.ClientError):
        pricing.fetch_hosting_prices(c, "us-east-1")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps({"terms": {}}),
        json.dumps({"product": {"productFamily": "ML Instance", "attributes": []}}),
        price_item("ml.g5.xlarge", "NaN"),
    ],
)
def test_parse_rejects_malformed_items(raw: str) -> None:
    with pytest.raises(pricing.MalformedPriceItem):
        pricing.parse_price_item(raw, "us-east-1")


def test_parse_ignores_irrelevant_items() -> None:
    parse = pricing.parse_price_item
    assert parse(price_item("ml.g5.xlarge", "1.408"), "us-east-1") == ("ml.g5.xlarge", 1.408)
    assert parse(price_item("ml.g5.xlarge", "1.408"), "eu-west-1") is None
    assert parse(price_item("ml.g5.xlarge", "1.2", component="AsyncInf"), "us-east-1") is None
    assert parse(price_item("g5.xlarge", "1.2"), "us-east-1") is None


def test_snapshot_document_has_the_repo_snapshot_shape() -> None:
    prices = {"ml.m5.large": 0.115, "ml.c5.large": 0.102}
    doc = pricing.snapshot_document("us-east-1", prices, date(2026, 11, 22))
    repo = json.loads((ROOT / "scripts" / "price_snapshot.json").read_text())
    assert set(doc) <= set(repo)
    assert doc["as_of"] == "2026-11-22"
    assert list(doc["prices"]) == ["ml.c5.large", "ml.m5.large"]


# --- the Lambda handler ----------------------------------------------------------------------------------


@dataclass
class FakeContext:
    function_name: str = "price-refresh"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:price-refresh"
    aws_request_id: str = "req-1"


def _load_handler() -> ModuleType:
    path = ROOT / "functions" / "price_refresh" / "app.py"
    spec = importlib.util.spec_from_file_location("price_refresh_app", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("PRICE_BUCKET", "inferops-prices")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "price-refresh")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="inferops-prices")
        yield s3


def test_handler_writes_the_region_file(bucket: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _load_handler()
    seen: list[str] = []

    def fake_fetch(client: Any, region: str) -> dict[str, float]:
        seen.append(region)
        return {"ml.g5.xlarge": 1.5}

    monkeypatch.setattr(app.pricing, "fetch_hosting_prices", fake_fetch)
    monkeypatch.setenv("PRICE_REGION", "eu-west-1")
    result = app.handler({}, FakeContext())
    assert result == {"region": "eu-west-1", "count": 1, "key": "prices/eu-west-1.json"}
    assert seen == ["eu-west-1"]
    body = json.loads(bucket.get_object(Bucket="inferops-prices", Key="prices/eu-west-1.json")["Body"].read())
    assert body["region"] == "eu-west-1"
    assert body["prices"] == {"ml.g5.xlarge": 1.5}
    date.fromisoformat(body["as_of"])


def test_handler_defaults_to_the_lambda_region_and_never_writes_nothing(
    bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _load_handler()
    monkeypatch.delenv("PRICE_REGION", raising=False)
    monkeypatch.setattr(app.pricing, "fetch_hosting_prices", lambda client, region: {})
    with pytest.raises(RuntimeError, match="us-east-1"):
        app.handler({}, FakeContext())
    assert bucket.list_objects_v2(Bucket="inferops-prices").get("KeyCount") == 0
