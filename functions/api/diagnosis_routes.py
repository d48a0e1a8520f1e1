"""The API's diagnosis route: why an endpoint fails, as findings with a cause, evidence and a fix.

A Powertools `Router` that functions/api/app.py includes: its exception handlers (InferOpsError -> 4xx naming
the field, validation -> 422, unknown endpoint -> 404) apply here too.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from inferops import diagnosis
from inferops.diagnosis import DEFAULT_MINUTES, ENDPOINT_NAME_PATTERN, MAX_ERROR_CHARS, MAX_MINUTES, MIN_MINUTES

router = Router()  # type: ignore[no-untyped-call]


@cache
def _clients() -> diagnosis.Clients:
    return diagnosis.default_clients()


@router.get(
    "/endpoints/<name>/diagnosis",
    summary="Why an endpoint fails: findings with severity, cause, evidence (metrics, logs, activities) and fix",
    responses={404: {"description": "no such endpoint"}},
)
def get_diagnosis(
    name: Annotated[str, Path(min_length=1, max_length=63, pattern=ENDPOINT_NAME_PATTERN, description="endpoint")],
    minutes: Annotated[
        int, Query(ge=MIN_MINUTES, le=MAX_MINUTES, description="how far back to read metrics, logs and activities")
    ] = DEFAULT_MINUTES,
    error: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_ERROR_CHARS,
            description="an error message a caller got (e.g. InvokeEndpoint's ModelError) to explain with the rest",
        ),
    ] = None,
) -> diagnosis.Diagnosis:
    return diagnosis.diagnose(name, _clients(), minutes=minutes, errors=[error] if error else [])
