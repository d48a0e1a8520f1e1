"""The internal API: thin routes that parse, call `inferops` and shape the reply.

API Gateway authenticates every call with IAM (SigV4); this function only sees signed requests.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import threading
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from botocore.exceptions import ClientError
from pydantic import ValidationError

from inferops import catalog, deployments, logs, request_limits
from inferops.errors import InferOpsError
from inferops.planner import DeploymentRequest
from inferops.rollout import preflight

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_sagemaker import SageMakerClient

    from functions.api import route_kit
else:
    import route_kit  # functions/api/route_kit.py: Lambda runs the function from its folder

logger = logs.logger()
app = APIGatewayRestResolver(enable_validation=True)

CORE_PATHS = re.compile(r"/(catalog|plans|deployments)(/|$)")
"""This module's own routes (catalog, plans, deployments): a request for one of them loads no feature."""
FEATURE_ROUTERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/async-results/|/endpoints/[^/]+/async-stats$"), "async_routes"),
    (re.compile(r"/endpoints/[^/]+/diagnosis$"), "diagnosis_routes"),
    (re.compile(r"/shadow-tests(/|$)"), "shadow_routes"),
    (re.compile(r"/endpoints/[^/]+(/(scale-to-zero|wake|park))?$|/reports/cost$"), "scaling_routes"),
    (re.compile(r"/delivery-policies/|/deliveries(/|$)"), "delivery_routes"),
)
"""Each feature's routes module (functions/api/*_routes.py) and the paths it serves. A feature's router is
included when a request first needs it, so a cold start imports the core routes and at most one feature's
models and services (tests/perf/bench_imports.py); /openapi.json or a path no pattern knows includes them all.
tests/unit/test_api.py checks every route of every router against these patterns."""
_including = threading.Lock()
_HERE = os.path.dirname(os.path.abspath(__file__))


def include_routes(path: str | None = None) -> None:
    """Include the feature routers `path` needs: none for a core path, every one for None or an unknown path."""
    if path is not None and CORE_PATHS.match(path):
        return
    wanted = [name for pattern, name in FEATURE_ROUTERS if path is not None and pattern.match(path)]
    with _including:
        missing = [name for name in wanted or [name for _, name in FEATURE_ROUTERS] if name not in globals()]
        if not missing:
            return
        added = _HERE not in sys.path  # Lambda runs from this folder; the twin only imports from it
        if added:
            sys.path.insert(0, _HERE)
        try:
            for name in missing:
                module = importlib.import_module(name)  # functions/api/<name>.py
                app.include_router(module.router)
                globals()[name] = module
        finally:
            if added:
                sys.path.remove(_HERE)


@cache
def _sagemaker() -> SageMakerClient:
    return boto3.client("sagemaker")


@cache
def _autoscaling() -> ApplicationAutoScalingClient:
    return boto3.client("application-autoscaling")


def _clients() -> deployments.Clients:
    return route_kit.flow_clients("DEPLOYMENT_STATE_MACHINE_ARN")


@cache
def _use_refreshed_prices() -> None:
    """Once per container: prefer the stack's refreshed prices (PriceRefreshFunction) to the snapshot."""
    bucket = os.environ.get("PRICE_BUCKET")
    if not bucket:
        return
    region = os.environ.get("PRICE_REGION") or os.environ.get("AWS_REGION", "us-east-1")
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=f"prices/{region}.json")["Body"].read()
        changed = catalog.apply_prices(catalog.PriceDocument.model_validate_json(body))
        logger.info("using refreshed prices", extra={"region": region, "prices": changed})
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchKey":  # the refresh job has not run yet
            logger.info("no refreshed prices yet; using the snapshot", extra={"region": region})
        else:
            logger.warning("keeping the price snapshot", extra={"reason": str(error)})
    except ValidationError as error:
        logger.warning("refreshed prices unreadable; keeping the snapshot", extra={"reason": str(error)})


def _error(status: int, message: str, **extra: Any) -> Response[dict[str, Any]]:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body={"message": message, **extra})


@app.exception_handler(InferOpsError)
def _domain_error(error: InferOpsError) -> Response[dict[str, Any]]:
    return _error(error.status_code, error.message, field=error.field)


@app.exception_handler(RequestValidationError)
def _invalid_request(error: RequestValidationError) -> Response[dict[str, Any]]:
    problems = [_problem(e) for e in error.errors()] or [{"field": "body", "message": "invalid request"}]
    first = problems[0]
    return _error(422, f"{first['field']}: {first['message']}", field=first["field"], errors=problems)


def _problem(error: dict[str, Any]) -> dict[str, str]:
    """pydantic's error location, minus the 'body'/'query' prefix, as a dotted field name."""
    if error.get("type") == "json_invalid":
        return {"field": "body", "message": "the request body is not valid JSON"}
    where = [str(p) for p in error["loc"][1:]] or [str(error["loc"][0])]
    return {"field": ".".join(where), "message": error["msg"]}


@app.exception_handler(deployments.Refused)
def _refused(error: deployments.Refused) -> Response[dict[str, Any]]:
    return _error(
        422,
        error.message,
        field=error.field,
        violations=[v.model_dump(mode="json") for v in error.result.violations],
        warnings=error.result.warnings,
    )


@app.exception_handler(IdempotencyValidationError)
def _idempotency_reused(error: IdempotencyValidationError) -> Response[dict[str, Any]]:
    return _error(422, "Idempotency-Key was already used with a different request body", field="Idempotency-Key")


@app.exception_handler(IdempotencyAlreadyInProgressError)
def _idempotency_in_progress(error: IdempotencyAlreadyInProgressError) -> Response[dict[str, Any]]:
    return _error(409, "a request with this Idempotency-Key is still being processed; retry", field="Idempotency-Key")


@app.exception_handler(ClientError)
def _aws_error(error: ClientError) -> Response[dict[str, Any]]:
    code = error.response.get("Error", {}).get("Code", "Unknown")
    logger.warning("AWS call failed", extra={"code": code})
    if code == "ValidationException":  # a value from the request that SageMaker's own rules refuse
        detail = error.response.get("Error", {}).get("Message", "")
        return _error(400, f"SageMaker refused a value of this request: {detail}".rstrip(": "))
    status = 503 if "Throttl" in code else 502
    return _error(status, f"an AWS call failed ({code}); retry later" if status == 503 else f"AWS refused: {code}")


@app.exception_handler(ServiceError)
def _http_error(error: ServiceError) -> Response[dict[str, Any]]:
    return _error(error.status_code, str(error.msg))


@app.not_found
def _no_route(error: NotFoundError) -> Response[dict[str, Any]]:
    return _error(404, f"no route {app.current_event.http_method} {app.current_event.path}")


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response[dict[str, Any]]:
    logger.exception("unhandled error")
    return _error(500, "internal error; the request id is in the response headers and the logs")


@cache
def openapi_document() -> str:
    """The API's OpenAPI document, generated from its routes (scripts/openapi.py writes the same to docs/)."""
    include_routes()
    return app.get_openapi_json_schema(
        title="InferOps internal API",
        version="0.1.0",
        description="Guarded SageMaker deployments, shadow tests and scale to zero. Every call is SigV4-signed "
        "(API Gateway AWS_IAM auth).",
    )


@app.get("/openapi.json", summary="This API's OpenAPI document", include_in_schema=False)
def get_openapi_document() -> Response[str]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


@app.get("/catalog/instances", summary="List SageMaker hosting instance types, filtered")
def list_instance_types(
    accelerator_kind: Annotated[str | None, Query(description="gpu, inferentia, trainium or none")] = None,
    vendor: Annotated[str | None, Query()] = None,
    accelerator_model: Annotated[str | None, Query(description="e.g. A10G, L4, H100, Inferentia2")] = None,
    min_accelerator_memory_gib: Annotated[float | None, Query(ge=0)] = None,
    architecture: Annotated[str | None, Query(description="x86_64 or arm64")] = None,
    feature: Annotated[str | None, Query(description="a feature flag, e.g. shadow_tests")] = None,
    family: Annotated[str | None, Query(description="e.g. g5")] = None,
) -> dict[str, Any]:
    found = catalog.filter_types(
        accelerator_kind=accelerator_kind,
        vendor=vendor,
        accelerator_model=accelerator_model,
        min_accelerator_memory_gib=min_accelerator_memory_gib,
        architecture=architecture,
        feature=feature,
        family=family,
    )
    return {"count": len(found), "instance_types": [t.model_dump(mode="json") for t in found]}


@app.get("/catalog/instances/<instance_type>", summary="Describe one instance type")
def get_instance_type(instance_type: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    return catalog.get(instance_type).model_dump(mode="json")


@app.get("/catalog/fit", summary="Instance types that hold a model of N GB, cheapest first")
def fit_instance_types(
    model_gb: Annotated[float, Query(gt=0, le=2000)],
    tensor_parallel: Annotated[int, Query(ge=1, le=64)] = 1,
    overhead: Annotated[float, Query(ge=0, le=5)] = 0.2,
    accelerator_kind: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    fits = catalog.fit(model_gb, tensor_parallel=tensor_parallel, overhead=overhead, accelerator_kind=accelerator_kind)
    return {"count": len(fits), "fits": [f.model_dump(mode="json") for f in fits]}


@app.post("/plans", summary="Validate a deployment request and plan it (no side effects)")
def create_plan(request: DeploymentRequest) -> Response[Any]:
    result = preflight(request, _sagemaker(), _autoscaling())
    if not result.ok:
        raise deployments.Refused(result)
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=result)


def _caller() -> str:
    return route_kit.caller(app.current_event)


def _start(call: dict[str, Any]) -> dict[str, Any]:
    request = DeploymentRequest.model_validate(call["request"])
    return deployments.start(request, _clients()).model_dump(mode="json")


@app.post("/deployments", summary="Start a guarded deployment (202), or plan it only with dryRun=true")
def start_deployment(
    request: DeploymentRequest,
    dry_run: Annotated[bool, Query(alias="dryRun", description="return the plan, start nothing")] = False,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=128, description="retries get the first answer"),
    ] = None,
) -> Response[Any]:
    if idempotency_key and not dry_run:  # a dry run changes nothing: it must not use up the key
        call = {"key": f"{_caller()}|{idempotency_key}", "request": request.model_dump(mode="json")}
        started = route_kit.start_once("deployments", _start, call)
    else:
        started = deployments.start(request, _clients(), dry_run=dry_run).model_dump(mode="json")
    status = 200 if dry_run else 202
    headers = {} if dry_run else {"Location": f"/deployments/{started['id']}"}
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=started, headers=headers)


@app.get("/deployments", summary="An endpoint's deployments, newest first (paginated)")
def list_deployments(
    endpoint: Annotated[str, Query(min_length=1, max_length=63, description="endpoint name")],
    status: route_kit.StatusQuery = None,
    limit: route_kit.LimitQuery = 20,
    next_token: route_kit.NextTokenQuery = None,
) -> dict[str, Any]:
    page = deployments.list_page(_clients().repo, endpoint, status=status, limit=limit, next_token=next_token)
    return page.model_dump(mode="json")


@app.get("/deployments/<operation_id>", summary="A deployment: status, plan, timeline, verdicts")
def get_deployment(operation_id: Annotated[str, Path(min_length=1, max_length=128)]) -> dict[str, Any]:
    return deployments.get(operation_id, _clients().repo).model_dump(mode="json")


@app.post("/deployments/<operation_id>/abort", summary="Roll back now (202; the outcome follows in the record)")
def abort_deployment(
    operation_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: Annotated[route_kit.ReasonBody | None, Body()] = None,
) -> Response[Any]:
    view = deployments.abort(operation_id, _clients(), by=_caller(), reason=body.reason if body else None)
    return route_kit.accepted(view)


@app.post("/deployments/<operation_id>/approve", summary="Let a paused managed deployment take its next step")
def approve_deployment(operation_id: Annotated[str, Path(min_length=1, max_length=128)]) -> dict[str, Any]:
    return deployments.approve(operation_id, _clients(), by=_caller()).model_dump(mode="json")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request_limits.check_body(event.get("body"), is_base64=bool(event.get("isBase64Encoded")))
    except request_limits.BodyRefused as refused:
        logger.warning("body refused", extra={"status": refused.status, "reason": refused.message})
        return {
            "statusCode": refused.status,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"message": refused.message, "field": "body"}),
            "isBase64Encoded": False,
        }
    _use_refreshed_prices()
    route_kit.IDEMPOTENCY.register_lambda_context(context)
    include_routes(str(event.get("path") or ""))
    return app.resolve(event, context)
