"""The API's async routes, in-process through the real API handler: API Gateway events in, status and JSON out."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from api_kit import api_request
from aws_lambda_powertools.utilities.batch import process_partial_response

from inferops.async_ingest import AsyncResultsProcessor
from inferops.storage import Repository
from twin.lambdas import load_function

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 5, 10, 30, tzinfo=UTC).timestamp()


@pytest.fixture
def api(ddb_table: Repository, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The API handler on the moto table (clock: 10:30 on the day of the sample notifications), with results of
    the sample events stored the way AsyncResultsFunction stores them."""
    repo = Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: NOW)
    monkeypatch.setenv("TABLE_NAME", repo.table_name)
    monkeypatch.setenv("DEPLOYMENT_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:none")
    module = load_function("api")
    module.include_routes()
    monkeypatch.setattr(sys.modules["async_routes"], "_repository", lambda: repo)
    batch = json.loads((ROOT / "events" / "async_results" / "mixed_batch.json").read_text())
    processor = AsyncResultsProcessor(repo, emit=lambda _: None)
    process_partial_response(event=batch, record_handler=processor.parse_record, processor=processor)
    return module


def call(api: Any, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    status, reply, _ = api_request(api, "GET", path, query=query)
    return status, reply


def test_a_completed_result(api: Any) -> None:
    status, body = call(api, "/async-results/scan-000417")
    assert status == 200, body
    assert body == {
        "inference_id": "scan-000417",
        "endpoint": "doc-ocr-async",
        "status": "COMPLETED",
        "invocation_status": "Completed",
        "received_at": "2026-01-05T10:01:59.902000Z",
        "completed_at": "2026-01-05T10:02:47.318000Z",
        "latency_seconds": 47.416,
        "input_location": "s3://acme-ml-async/input/2026/01/05/scan-000417.json",
        "output_location": "s3://acme-ml-async/output/5f0c1c9e-8a51-4a7e-9d0e-3c2b7c4f1a11.out",
        "failure_location": None,
        "failure_reason": None,
        "classification": None,
        "recorded_at": "2026-01-05T10:30:00.000000Z",
    }


def test_a_failed_result_carries_its_classification(api: Any) -> None:
    status, body = call(api, "/async-results/scan-000418")
    assert status == 200, body
    assert body["status"] == "FAILED" and body["output_location"] is None
    assert body["failure_location"].endswith("-error.out")
    assert body["failure_reason"].startswith("ClientError: Received server error (500) from model.")
    classification = body["classification"]
    assert (classification["category"], classification["retryable"]) == ("model_error", False)
    assert classification["matched"] == "server error (500)"
    assert "S3FailurePath" in classification["action"]


def test_unknown_or_invalid_inference_ids(api: Any) -> None:
    status, body = call(api, "/async-results/not-yet")
    assert status == 404
    assert body["field"] == "inference_id" and "not finished yet" in body["message"]
    status, body = call(api, "/async-results/" + "x" * 65)
    assert status == 422 and body["field"] == "inference_id"


def test_endpoint_stats(api: Any) -> None:
    status, body = call(api, "/endpoints/doc-ocr-async/async-stats", {"hours": "1"})
    assert status == 200, body
    assert (body["completed"], body["failed"], body["total"], body["failure_rate"]) == (1, 1, 2, 0.5)
    assert body["failures_by_category"] == {"model_error": 1}
    latency = body["latency_seconds"]
    assert (latency["count"], latency["min"], latency["max"]) == (2, 41.527, 47.416)
    assert 41.527 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= 47.416
    assert (body["since"], body["until"]) == ("2026-01-05T10:00:00.000000Z", "2026-01-05T10:30:00.000000Z")
    assert body["hourly"] == [
        {"hour": "2026-01-05T10:00:00.000000Z", "completed": 1, "failed": 1, "mean_latency_seconds": 44.471}
    ]
    status, body = call(api, "/endpoints/doc-ocr-async/async-stats")
    assert status == 200 and body["hours"] == 24 and body["since"] == "2026-01-04T11:00:00.000000Z"


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [
        ("/endpoints/doc-ocr-async/async-stats", {"hours": "0"}, "hours"),
        ("/endpoints/doc-ocr-async/async-stats", {"hours": "169"}, "hours"),
        ("/endpoints/doc-ocr-async/async-stats", {"hours": "a day"}, "hours"),
        ("/endpoints/bad_name!/async-stats", None, "name"),
    ],
)
def test_stats_refuse_bad_input_naming_the_field(api: Any, path: str, query: dict[str, str] | None, field: str) -> None:
    status, body = call(api, path, query)
    assert status == 422, body
    assert body["field"] == field and body["message"].startswith(f"{field}:")


def test_an_endpoint_without_results_has_empty_stats(api: Any) -> None:
    status, body = call(api, "/endpoints/quiet/async-stats", {"hours": "168"})
    assert status == 200
    assert (body["total"], body["failure_rate"], body["latency_seconds"]["p50"], body["hourly"]) == (0, None, None, [])


def test_the_routes_are_in_the_openapi_document(api: Any) -> None:
    paths = json.loads(api.openapi_document())["paths"]
    assert "/async-results/{inference_id}" in paths and "/endpoints/{name}/async-stats" in paths
    documented = json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"]
    assert "/async-results/{inference_id}" in documented
