"""The API's shadow test routes: start, read, list, promote, discard, approve, change (inferops.shadow_tests).

A Powertools `Router` that functions/api/app.py includes: its exception handlers (InferOpsError -> 4xx naming the
field, validation -> 422) apply here too; `Refused` (every broken eligibility rule) is handled here.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, cast

import boto3
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from pydantic import BaseModel, ConfigDict, Field

from inferops import shadow_tests
from inferops.shadow import ShadowTestRequest
from inferops.storage import OperationStatus, Repository

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

router = Router()  # type: ignore[no-untyped-call]

_ID = Annotated[str, Path(min_length=1, max_length=128, description="the shadow test's id")]


@cache
def _clients() -> shadow_tests.Clients:
    return shadow_tests.Clients(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker"),
        autoscaling=boto3.client("application-autoscaling"),
        cloudwatch=boto3.client("cloudwatch"),
        stepfunctions=boto3.client("stepfunctions"),
        state_machine_arn=os.environ["SHADOW_TEST_STATE_MACHINE_ARN"],
    )


# Retries of POST /shadow-tests with the same Idempotency-Key get the first answer (Powertools, same table).
_IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="key", payload_validation_jmespath="request", expires_after_seconds=86400
)


@cache
def _idempotency_store() -> DynamoDBPersistenceLayer:
    return DynamoDBPersistenceLayer(
        table_name=os.environ["TABLE_NAME"],
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value="IDEMPOTENCY#shadow-tests",
        expiry_attr="expires_at",
    )


@router.exception_handler(shadow_tests.Refused)
def _refused(error: shadow_tests.Refused) -> Response[dict[str, Any]]:
    return Response(
        status_code=422,
        content_type=content_types.APPLICATION_JSON,
        body={
            "message": error.message,
            "field": error.field,
            "violations": [v.model_dump(mode="json") for v in error.result.violations],
            "warnings": error.result.warnings,
        },
    )


def _caller() -> str:
    """Who is asking (API Gateway's IAM identity; the twin and tests may leave it empty)."""
    identity = cast("APIGatewayProxyEvent", router.current_event).request_context.identity
    return identity.user_arn or identity.caller or "anonymous"


def _start(call: dict[str, Any]) -> dict[str, Any]:
    request = ShadowTestRequest.model_validate(call["request"])
    return shadow_tests.start(request, _clients()).model_dump(mode="json")


def _start_once(call: dict[str, Any]) -> dict[str, Any]:
    _IDEMPOTENCY.register_lambda_context(router.lambda_context)
    once = idempotent_function(
        data_keyword_argument="call", config=_IDEMPOTENCY, persistence_store=_idempotency_store()
    )
    return once(_start)(call=call)  # type: ignore[no-any-return]


@router.post(
    "/shadow-tests",
    summary="Start a shadow test of a candidate model against an endpoint's production variant (202)",
    responses={422: {"description": "the request breaks eligibility rules: every violation, each naming its rule"}},
)
def start_shadow_test(
    request: ShadowTestRequest,
    dry_run: Annotated[bool, Query(alias="dryRun", description="check and plan, start nothing")] = False,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=128, description="retries get the first answer"),
    ] = None,
) -> Response[Any]:
    if idempotency_key and not dry_run:
        started = _start_once({"key": f"{_caller()}|{idempotency_key}", "request": request.model_dump(mode="json")})
    else:
        started = shadow_tests.start(request, _clients(), dry_run=dry_run).model_dump(mode="json")
    status = 200 if dry_run else 202
    headers = {} if dry_run else {"Location": f"/shadow-tests/{started['id']}"}
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=started, headers=headers)


@router.get("/shadow-tests", summary="An endpoint's shadow tests, newest first (paginated)")
def list_shadow_tests(
    endpoint: Annotated[str, Query(min_length=1, max_length=63, description="endpoint name")],
    status: Annotated[OperationStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    next_token: Annotated[str | None, Query(alias="nextToken", max_length=2048)] = None,
) -> shadow_tests.ShadowTestPage:
    return shadow_tests.list_page(_clients().repo, endpoint, status=status, limit=limit, next_token=next_token)


@router.get(
    "/shadow-tests/<operation_id>",
    summary="A shadow test: status, phase, sampling history, verdicts over time, timeline",
)
def get_shadow_test(operation_id: _ID) -> shadow_tests.ShadowTestView:
    return shadow_tests.get(operation_id, _clients().repo)


class DiscardBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


def _accepted(view: shadow_tests.ShadowTestView) -> Response[Any]:
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=view.model_dump(mode="json"))


@router.post(
    "/shadow-tests/<operation_id>/promote",
    summary="Promote the shadow now: the last phase at 100 % sampling, or a test waiting for approval (202)",
)
def promote_shadow_test(operation_id: _ID) -> Response[Any]:
    return _accepted(shadow_tests.promote(operation_id, _clients(), by=_caller()))


@router.post(
    "/shadow-tests/<operation_id>/discard",
    summary="Remove the shadow variant now; production keeps serving (202)",
)
def discard_shadow_test(operation_id: _ID, body: Annotated[DiscardBody | None, Body()] = None) -> Response[Any]:
    view = shadow_tests.discard(operation_id, _clients(), by=_caller(), reason=body.reason if body else None)
    return _accepted(view)


@router.post(
    "/shadow-tests/<operation_id>/approve",
    summary="Approve the promotion a paused shadow test waits for (202)",
)
def approve_shadow_test(operation_id: _ID) -> Response[Any]:
    return _accepted(shadow_tests.approve(operation_id, _clients(), by=_caller()))


@router.patch(
    "/shadow-tests/<operation_id>",
    summary="Change a running shadow test: sampling percentage, end time, description",
)
def update_shadow_test(operation_id: _ID, patch: shadow_tests.ShadowTestPatch) -> shadow_tests.ShadowTestView:
    return shadow_tests.update(operation_id, patch, _clients(), by=_caller())
