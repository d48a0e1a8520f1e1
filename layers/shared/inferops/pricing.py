"""SageMaker real-time hosting prices from the AWS Price List API, for deployed stacks.

The repo ships a dated snapshot (`scripts/price_snapshot.json`, baked into the catalog); a deployed stack
refreshes it with this module so cost reports follow price changes.

What the Price List calls what, for ServiceCode "AmazonSageMaker" (checked against public code that reads it,
e.g. vantage-sh/ec2instances.info's SageMaker scraper and several `get_products` callers):
  * productFamily "ML Instance" marks instance-hour products;
  * platoinstancetype names the SageMaker component: "Hosting" is real-time inference endpoints
    (others: "AsyncInf", "BatchTransform", "Training", "Processing", "Notebook", "Studio-*"...);
  * the instance type is in instanceName or instanceType ("ml.g5.xlarge"); regionCode is "us-east-1" style;
  * usagetype looks like "USE1-Host:ml.g5.xlarge", but public sources disagree on its exact shape, so it is
    not relied on here.
Filtering happens server side (regionCode, productFamily, platoinstancetype) and is checked again per item.
Each item is a JSON string; the hourly rate is terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD with
unit "Hrs".
"""

from __future__ import annotations

import json
import logging
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_pricing.client import PricingClient
    from mypy_boto3_pricing.type_defs import FilterTypeDef, GetProductsRequestTypeDef

logger = logging.getLogger(__name__)

SERVICE_CODE = "AmazonSageMaker"
PRICING_API_REGION = "us-east-1"  # the Price List API answers from us-east-1 for every region
PRODUCT_FAMILY = "ML Instance"
HOSTING_COMPONENT = "Hosting"
SOURCE = (
    "AWS Price List API: ServiceCode AmazonSageMaker, productFamily 'ML Instance',"
    " platoinstancetype 'Hosting', OnDemand USD per Hrs"
)


class MalformedPriceItem(ValueError):
    """A PriceList entry that cannot be read; it is skipped with a warning, never guessed at."""


def hosting_filters(region: str) -> list[FilterTypeDef]:
    return [
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "productFamily", "Value": PRODUCT_FAMILY},
        {"Type": "TERM_MATCH", "Field": "platoinstancetype", "Value": HOSTING_COMPONENT},
    ]


def _hourly_usd(terms: Any) -> list[Decimal]:
    if not isinstance(terms, dict):
        raise MalformedPriceItem("terms is not an object")
    rates: list[Decimal] = []
    for offer in (terms.get("OnDemand") or {}).values():
        for dim in (offer.get("priceDimensions") or {}).values():
            if dim.get("unit") != "Hrs":
                continue
            raw = (dim.get("pricePerUnit") or {}).get("USD")
            try:
                value = Decimal(raw) if isinstance(raw, str) else Decimal("NaN")
            except InvalidOperation:
                value = Decimal("NaN")
            if not value.is_finite():
                raise MalformedPriceItem(f"pricePerUnit.USD is {raw!r}")
            if value > 0:  # $0 rows are free-tier/placeholder rows, not a rate
                rates.append(value)
    return rates


def parse_price_item(raw: str, region: str) -> tuple[str, float] | None:
    """(instance type, USD/hour) for a real-time hosting item of `region`; None for anything else."""
    try:
        item = json.loads(raw)
        attrs = item["product"]["attributes"]
        family = item["product"].get("productFamily") or attrs.get("productFamily")
    except (TypeError, ValueError, KeyError) as exc:
        raise MalformedPriceItem(f"not a PriceList product: {exc}") from exc
    if not isinstance(attrs, dict):
        raise MalformedPriceItem("product.attributes is not an object")
    name = attrs.get("instanceName") or attrs.get("instanceType") or ""
    if (
        family != PRODUCT_FAMILY
        or attrs.get("platoinstancetype", HOSTING_COMPONENT) != HOSTING_COMPONENT
        or attrs.get("regionCode") != region
        or not name.startswith("ml.")
    ):
        return None
    rates = _hourly_usd(item.get("terms"))
    if not rates:
        return None
    if len(set(rates)) > 1:
        logger.warning("several hourly rates for %s in %s: %s; keeping the highest", name, region, rates)
    return name, float(max(rates))


def fetch_hosting_prices(client: PricingClient, region: str) -> dict[str, float]:
    """On-demand USD/hour of every real-time hosting instance type in `region`, following NextToken."""
    prices: dict[str, float] = {}
    request: GetProductsRequestTypeDef = {
        "ServiceCode": SERVICE_CODE,
        "Filters": hosting_filters(region),
        "FormatVersion": "aws_v1",
        "MaxResults": 100,
    }
    while True:
        page = client.get_products(**request)
        for raw in page.get("PriceList", []):
            try:
                parsed = parse_price_item(raw, region)
            except MalformedPriceItem as exc:
                logger.warning("skipping malformed PriceList item: %s", exc)
                continue
            if parsed is None:
                continue
            name, price = parsed
            if name in prices and prices[name] != price:
                logger.warning("%s priced twice in %s (%s, %s); keeping the highest", name, region, prices[name], price)
                price = max(price, prices[name])
            prices[name] = price
        token = page.get("NextToken")
        if not token:
            break
        request["NextToken"] = token
    return dict(sorted(prices.items()))


def snapshot_document(region: str, prices: dict[str, float], as_of: date) -> dict[str, Any]:
    """Same shape as scripts/price_snapshot.json, so both are read the same way."""
    return {
        "region": region,
        "as_of": as_of.isoformat(),
        "source": SOURCE,
        "prices": dict(sorted(prices.items())),
    }
