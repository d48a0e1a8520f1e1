"""The API's shadow test routes: start, read, list, promote, discard, approve, change (inferops.shadow_tests).

A Powertools `Router` that functions/api/app.py includes: its exception handlers (InferOpsError -> 4xx naming the
field, validation -> 422) apply here too; `Refused` (every broken eligibility rule) is handled here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from inferops import shadow_tests
from inferops.shadow import ShadowTestRequest

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

    from functions.api import route_kit
else:
    import route_kit  # functions/api/route_kit.py: Lambda runs the function from its folder

router = Router()  # type: ignore[no-untyped-call]

_ID = Annotated[str, Path(min_length=1, max_length=128, description="the shadow test's id")]


def _clients() -> shadow_tests.Clients:
    return route_kit.flow_clients("SHADOW_TEST_STATE_MACHINE_ARN")


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
    return route_kit.caller(cast("APIGatewayProxyEvent", router.current_event))


def _start(call: dict[str, Any]) -> dict[str, Any]:
    request = ShadowTestRequest.model_validate(call["request"])
    return shadow_tests.start(request, _clients()).model_dump(mode="json")


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
        call = {"key": f"{_caller()}|{idempotency_key}", "request": request.model_dump(mode="json")}
        started = route_kit.start_once("shadow-tests", _start, call)
    else:
        started = shadow_tests.start(request, _clients(), dry_run=dry_run).model_dump(mode="json")
    status = 200 if dry_run else 202
    headers = {} if dry_run else {"Location": f"/shadow-tests/{started['id']}"}
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=started, headers=headers)


@router.get("/shadow-tests", summary="An endpoint's shadow tests, newest first (paginated)")
def list_shadow_tests(
    endpoint: Annotated[str, Query(min_length=1, max_length=63, description="endpoint name")],
    status: route_kit.StatusQuery = None,
    limit: route_kit.LimitQuery = 20,
    next_token: route_kit.NextTokenQuery = None,
) -> shadow_tests.ShadowTestPage:
    return shadow_tests.list_page(_clients().repo, endpoint, status=status, limit=limit, next_token=next_token)


@router.get(
    "/shadow-tests/<operation_id>",
    summary="A shadow test: status, phase, sampling history, verdicts over time, timeline",
)
def get_shadow_test(operation_id: _ID) -> shadow_tests.ShadowTestView:
    return shadow_tests.get(operation_id, _clients().repo)


@router.post(
    "/shadow-tests/<operation_id>/promote",
    summary="Promote the shadow now: the last phase at 100 % sampling, or a test waiting for approval (202)",
)
def promote_shadow_test(operation_id: _ID) -> Response[Any]:
    return route_kit.accepted(shadow_tests.promote(operation_id, _clients(), by=_caller()))


@router.post(
    "/shadow-tests/<operation_id>/discard",
    summary="Remove the shadow variant now; production keeps serving (202)",
)
def discard_shadow_test(
    operation_id: _ID, body: Annotated[route_kit.ReasonBody | None, Body()] = None
) -> Response[Any]:
    view = shadow_tests.discard(operation_id, _clients(), by=_caller(), reason=body.reason if body else None)
    return route_kit.accepted(view)


@router.post(
    "/shadow-tests/<operation_id>/approve",
    summary="Approve the promotion a paused shadow test waits for (202)",
)
def approve_shadow_test(operation_id: _ID) -> Response[Any]:
    return route_kit.accepted(shadow_tests.approve(operation_id, _clients(), by=_caller()))


@router.patch(
    "/shadow-tests/<operation_id>",
    summary="Change a running shadow test: sampling percentage, end time, description",
)
def update_shadow_test(operation_id: _ID, patch: shadow_tests.ShadowTestPatch) -> shadow_tests.ShadowTestView:
    return shadow_tests.update(operation_id, patch, _clients(), by=_caller())
