"""The internal API: thin routes that parse, call `inferops` and shape the reply.

API Gateway authenticates every call with IAM (SigV4); this function only sees signed requests.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from botocore.exceptions import ClientError
from pydantic import ValidationError

from inferops import catalog
from inferops.endpoints import read_endpoint, read_model
from inferops.errors import InferOpsError
from inferops.planner import DeploymentRequest, PackageModel, plan

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_sagemaker import SageMakerClient

logger = Logger()
app = APIGatewayRestResolver(enable_validation=True)


@cache
def _sagemaker() -> SageMakerClient:
    return boto3.client("sagemaker")


@cache
def _autoscaling() -> ApplicationAutoScalingClient:
    return boto3.client("application-autoscaling")


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


@app.exception_handler(ClientError)
def _aws_error(error: ClientError) -> Response[dict[str, Any]]:
    code = error.response.get("Error", {}).get("Code", "Unknown")
    status = 503 if "Throttl" in code else 502
    logger.warning("AWS call failed", extra={"code": code})
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
    endpoint = read_endpoint(request.endpoint_name, _sagemaker(), _autoscaling())
    spec = request.model
    name = spec.model_package_arn if isinstance(spec, PackageModel) else getattr(spec, "model_name", None)
    result = plan(request, endpoint, read_model(spec.source, name, _sagemaker()))
    if result.ok:
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=result)
    first = result.violations[0]
    return _error(
        422,
        f"{len(result.violations)} problem(s); {first.field}: {first.message}",
        field=first.field,
        violations=[v.model_dump(mode="json") for v in result.violations],
        warnings=result.warnings,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _use_refreshed_prices()
    return app.resolve(event, context)
