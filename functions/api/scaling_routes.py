"""The API's scale-to-zero routes: enable, disable, wake, the endpoint's view and the cost report
(inferops.scaling). A Powertools `Router` that functions/api/app.py includes: its exception handlers
(InferOpsError -> 4xx naming the field, validation -> 422) apply here too.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query

from inferops import scaling

if TYPE_CHECKING:
    from functions.api import route_kit
else:
    import route_kit  # functions/api/route_kit.py: Lambda runs the function from its folder

router = Router()  # type: ignore[no-untyped-call]

_NAME = Annotated[str, Path(min_length=1, max_length=63, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")]


@cache
def _clients() -> scaling.Clients:
    return scaling.clients_from_env()


@router.put(
    "/endpoints/<name>/scale-to-zero",
    summary="Let an endpoint scale to zero (kind detected: inference components, async, or parked classic) (202)",
)
def enable_scale_to_zero(name: _NAME, request: scaling.ScaleToZeroRequest) -> Response[Any]:
    return route_kit.accepted(scaling.enable(name, request, _clients()).model_dump(mode="json"))


@router.delete(
    "/endpoints/<name>/scale-to-zero",
    summary="Stop scaling to zero: restore the previous settings exactly (a parked endpoint is recreated) (202)",
)
def disable_scale_to_zero(name: _NAME) -> Response[Any]:
    return route_kit.accepted(scaling.disable(name, _clients()).model_dump(mode="json"))


@router.post(
    "/endpoints/<name>/wake",
    summary="Scale out now (copies, instances, or unpark) and wait until it serves (202; 200: a wake is in flight)",
)
def wake_endpoint(name: _NAME) -> Response[Any]:
    started = scaling.wake(name, _clients())
    return route_kit.accepted(started.model_dump(mode="json"), 202 if started.started else 200)


@router.post(
    "/endpoints/<name>/park",
    summary="Park a classic endpoint under scale-to-zero now: record it exactly, delete it (202)",
)
def park_endpoint(name: _NAME) -> Response[Any]:
    return route_kit.accepted(scaling.park(name, _clients()).model_dump(mode="json"))


@router.get(
    "/endpoints/<name>",
    summary="An endpoint: kind, capacity, scale-to-zero state, last wake duration, idle cost (7 days)",
)
def get_endpoint(name: _NAME) -> scaling.EndpointView:
    return scaling.endpoint_view(name, _clients())


@router.get("/reports/cost", summary="Per endpoint under scale-to-zero: idle hours x catalog price, and what it saved")
def cost_report(days: Annotated[int, Query(ge=1, le=scaling.CAPACITY_LOG_DAYS)] = 7) -> scaling.CostReport:
    return scaling.cost_report(_clients().repo, _clients().cloudwatch, days)
