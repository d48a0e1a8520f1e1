"""The API's async inference routes: one result by inference id, an endpoint's outcomes and latency.

A Powertools `Router` that functions/api/app.py includes: its exception handlers (InferOpsError -> 4xx naming
the field, validation -> 422) apply here too.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from inferops import async_results
from inferops.async_results import ENDPOINT_NAME_PATTERN, MAX_STATS_HOURS, AsyncResultView, AsyncStatsView
from inferops.storage import INFERENCE_ID_MAX_LENGTH, Repository

router = Router()  # type: ignore[no-untyped-call]


@cache
def _repository() -> Repository:
    return Repository(os.environ["TABLE_NAME"])


@router.get(
    "/async-results/<inference_id>",
    summary="An async inference's result: status, output or failure location, latency, error classification",
    responses={404: {"description": "SageMaker has not notified this inference id (yet), or it expired"}},
)
def get_async_result(
    inference_id: Annotated[
        str, Path(min_length=1, max_length=INFERENCE_ID_MAX_LENGTH, description="InvokeEndpointAsync's InferenceId")
    ],
) -> AsyncResultView:
    return async_results.get_result(_repository(), inference_id)


@router.get(
    "/endpoints/<name>/async-stats",
    summary="An endpoint's async outcomes over the last hours: counts, failure rate, latency, error categories",
)
def get_async_stats(
    name: Annotated[str, Path(min_length=1, max_length=63, pattern=ENDPOINT_NAME_PATTERN, description="endpoint")],
    hours: Annotated[
        int, Query(ge=1, le=MAX_STATS_HOURS, description="clock hours to look back, the current one included")
    ] = 24,
) -> AsyncStatsView:
    return async_results.endpoint_stats(_repository(), name, hours)
