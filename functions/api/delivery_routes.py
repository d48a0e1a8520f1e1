"""The API's registry-driven delivery routes: delivery policies (PUT/GET/DELETE) and deliveries (list, read,
approve the next stage, cancel), in `inferops.deliveries`.

A Powertools `Router` that functions/api/app.py includes: its exception handlers (InferOpsError -> 4xx naming the
field, validation -> 422) apply here too; `PolicyRefused` (a stage its endpoint would refuse) is handled here.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query

from inferops import deliveries
from inferops.delivery import Services, services_from_environment
from inferops.delivery_policy import DeliveryPolicy, PolicyRefused

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

    from functions.api import route_kit
else:
    import route_kit  # functions/api/route_kit.py: Lambda runs the function from its folder

router = Router()  # type: ignore[no-untyped-call]

_GROUP = Annotated[
    str,
    Path(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="the model package group's name"),
]
_ID = Annotated[str, Path(min_length=1, max_length=128, description="the delivery's id")]


@cache
def _services() -> Services:
    return services_from_environment()


@router.exception_handler(PolicyRefused)
def _refused(error: PolicyRefused) -> Response[dict[str, Any]]:
    return Response(
        status_code=422,
        content_type=content_types.APPLICATION_JSON,
        body={
            "message": error.message,
            "field": error.field,
            "violations": [v.model_dump(mode="json") for v in error.violations],
        },
    )


def _caller() -> str:
    return route_kit.caller(cast("APIGatewayProxyEvent", router.current_event))


@router.put(
    "/delivery-policies/<group>",
    summary="Store a model package group's delivery policy (checked against every stage's endpoint)",
    responses={422: {"description": "a stage its endpoint would refuse: every violation, naming endpoint and rule"}},
)
def put_delivery_policy(group: _GROUP, policy: DeliveryPolicy) -> deliveries.PolicyView:
    return deliveries.put_policy(group, policy, _services(), by=_caller())


@router.get("/delivery-policies/<group>", summary="A model package group's delivery policy")
def get_delivery_policy(group: _GROUP) -> deliveries.PolicyView:
    return deliveries.get_policy(group, _services().repo)


@router.delete(
    "/delivery-policies/<group>",
    summary="Remove a group's delivery policy: later approvals start nothing (204)",
)
def delete_delivery_policy(group: _GROUP) -> Response[Any]:
    deliveries.delete_policy(group, _services().repo)
    return Response(status_code=204, content_type=content_types.APPLICATION_JSON, body="")


@router.get("/deliveries", summary="A model package group's deliveries, newest first (paginated)")
def list_deliveries(
    group: Annotated[str, Query(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$", description="model package group name")],
    status: route_kit.StatusQuery = None,
    limit: route_kit.LimitQuery = 20,
    next_token: route_kit.NextTokenQuery = None,
) -> deliveries.DeliveryPage:
    return deliveries.list_page(_services().repo, group, status=status, limit=limit, next_token=next_token)


@router.get(
    "/deliveries/<delivery_id>",
    summary="A delivery: its stages with their status, operations and times, failure reason and diagnosis, timeline",
)
def get_delivery(delivery_id: _ID) -> deliveries.DeliveryView:
    return deliveries.get(delivery_id, _services().repo)


@router.post("/deliveries/<delivery_id>/approve", summary="Approve the stage a delivery waits to start (202)")
def approve_delivery(delivery_id: _ID) -> Response[Any]:
    return route_kit.accepted(deliveries.approve(delivery_id, _services(), by=_caller()))


@router.post(
    "/deliveries/<delivery_id>/cancel",
    summary="Stop a delivery: queued or waiting ends now; a running stage's deployment is rolled back (202)",
)
def cancel_delivery(delivery_id: _ID, body: Annotated[route_kit.ReasonBody | None, Body()] = None) -> Response[Any]:
    view = deliveries.cancel(delivery_id, _services(), by=_caller(), reason=body.reason if body else None)
    return route_kit.accepted(view)
