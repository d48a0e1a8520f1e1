"""Refreshes hosting prices for a deployed stack: Price List API -> s3://$PRICE_BUCKET/prices/<region>.json."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools.utilities.typing import LambdaContext

from inferops import logs, pricing

logger = logs.logger()


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    region = os.environ.get("PRICE_REGION") or os.environ["AWS_REGION"]
    client = boto3.client("pricing", region_name=pricing.PRICING_API_REGION)
    prices = pricing.fetch_hosting_prices(client, region)
    if not prices:  # keep the last good file rather than overwrite it with nothing
        raise RuntimeError(f"the Price List API returned no hosting prices for {region}")
    doc = pricing.snapshot_document(region, prices, datetime.now(UTC).date())
    key = f"prices/{region}.json"
    body = json.dumps(doc, sort_keys=True).encode()
    boto3.client("s3").put_object(Bucket=os.environ["PRICE_BUCKET"], Key=key, Body=body, ContentType="application/json")
    logger.info("prices refreshed", extra={"region": region, "count": len(prices), "key": key})
    return {"region": region, "count": len(prices), "key": key}
