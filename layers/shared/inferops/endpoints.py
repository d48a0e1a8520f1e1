"""What the planner needs to know about a live endpoint, read from SageMaker and Application Auto Scaling.

The snapshot is a plain model so the planner stays pure (unit-testable without AWS) and the API, the
state machines and the twin all feed it the same way.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from inferops.errors import NotFound
from inferops.model import Model

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_sagemaker import SageMakerClient

_ARN_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:(\d{12}):")


class ScalingTarget(Model):
    """A registered Application Auto Scaling target on a variant (it blocks instance-type changes)."""

    model_config = ConfigDict(frozen=True)

    min_capacity: int
    max_capacity: int


class VariantSnapshot(Model):
    model_config = ConfigDict(frozen=True)

    name: str
    model_name: str | None = Field(description="None for inference-component endpoints")
    instance_type: str | None = Field(description="None for serverless variants")
    instance_count: int = 0
    weight: float = 1.0
    serverless: bool = False
    container_count: int = 1
    marketplace: bool = False
    autoscaling: ScalingTarget | None = None


class EndpointSnapshot(Model):
    model_config = ConfigDict(frozen=True)

    name: str
    status: str
    config_name: str
    is_async: bool = False
    variants: tuple[VariantSnapshot, ...]
    shadow_variant_names: tuple[str, ...] = ()
    failure_reason: str | None = None

    def variant(self, name: str) -> VariantSnapshot | None:
        return next((v for v in self.variants if v.name == name), None)


class ModelCheck(Model):
    """What SageMaker says about the model a deployment asks for (an existing model or a package)."""

    model_config = ConfigDict(frozen=True)

    found: bool
    approval_status: str | None = None
    marketplace: bool = False
    supported_instance_types: tuple[str, ...] = ()


def _missing(error: Any, *phrases: str) -> bool:
    """SageMaker reports a missing resource as a ValidationException whose message says so."""
    details = error.response.get("Error", {})
    message = str(details.get("Message", "")).lower()
    return details.get("Code") == "ValidationException" and any(p in message for p in phrases)


def _account_of(arn: str) -> str | None:
    match = _ARN_ACCOUNT.match(arn)
    return match.group(1) if match else None


def _is_marketplace(containers: list[Any], own_account: str | None) -> bool:
    """Marketplace containers reference a model package owned by another (the seller's) account."""
    for container in containers:
        package = container.get("ModelPackageName", "")
        if package.startswith("arn:"):
            owner = _account_of(package)
            if owner is not None and owner != own_account:
                return True
    return False


def _containers(model: Any) -> list[Any]:
    if model.get("PrimaryContainer"):
        return [model["PrimaryContainer"]]
    return list(model.get("Containers", []))


def read_endpoint(name: str, sagemaker: SageMakerClient, autoscaling: ApplicationAutoScalingClient) -> EndpointSnapshot:
    """Describe the endpoint, its config, its models and scaling targets (read-only calls)."""
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=name)
    except sagemaker.exceptions.ClientError as error:
        if _missing(error, "could not find"):
            raise NotFound(f"endpoint '{name}' does not exist", field="endpoint_name") from error
        raise
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    account = _account_of(endpoint["EndpointArn"])
    live = {v["VariantName"]: v for v in endpoint.get("ProductionVariants", [])}
    targets = _scaling_targets(name, autoscaling)

    variants = []
    for spec in config["ProductionVariants"]:
        variant_name = spec["VariantName"]
        model_name = spec.get("ModelName")
        containers: list[Any] = []
        if model_name:
            containers = _containers(sagemaker.describe_model(ModelName=model_name))
        state: Any = live.get(variant_name, {})
        variants.append(
            VariantSnapshot(
                name=variant_name,
                model_name=model_name,
                instance_type=spec.get("InstanceType"),
                instance_count=int(state.get("CurrentInstanceCount", spec.get("InitialInstanceCount", 0))),
                weight=float(state.get("CurrentWeight", spec.get("InitialVariantWeight", 1.0))),
                serverless="ServerlessConfig" in spec,
                container_count=max(1, len(containers)),
                marketplace=_is_marketplace(containers, account),
                autoscaling=targets.get(variant_name),
            )
        )
    return EndpointSnapshot(
        name=name,
        status=endpoint["EndpointStatus"],
        config_name=endpoint["EndpointConfigName"],
        is_async="AsyncInferenceConfig" in config,
        variants=tuple(variants),
        shadow_variant_names=tuple(v["VariantName"] for v in config.get("ShadowProductionVariants", [])),
        failure_reason=endpoint.get("FailureReason"),
    )


def _scaling_targets(endpoint: str, autoscaling: ApplicationAutoScalingClient) -> dict[str, ScalingTarget]:
    prefix = f"endpoint/{endpoint}/variant/"
    found: dict[str, ScalingTarget] = {}
    paginator = autoscaling.get_paginator("describe_scalable_targets")
    for page in paginator.paginate(ServiceNamespace="sagemaker"):
        for target in page["ScalableTargets"]:
            if target["ResourceId"].startswith(prefix):
                found[target["ResourceId"][len(prefix) :]] = ScalingTarget(
                    min_capacity=target["MinCapacity"], max_capacity=target["MaxCapacity"]
                )
    return found


def read_model(
    kind: Literal["existing", "package", "container"], name: str | None, sagemaker: SageMakerClient
) -> ModelCheck | None:
    """Check the model a request names: an existing model must exist, a package must be found."""
    if kind == "container" or name is None:
        return None
    try:
        if kind == "existing":
            model = sagemaker.describe_model(ModelName=name)
            account = _account_of(model["ModelArn"])
            return ModelCheck(found=True, marketplace=_is_marketplace(_containers(model), account))
        package = sagemaker.describe_model_package(ModelPackageName=name)
    except sagemaker.exceptions.ClientError as error:
        if _missing(error, "could not find", "does not exist", "not found"):
            return ModelCheck(found=False)
        raise
    spec = package.get("InferenceSpecification", {})
    return ModelCheck(
        found=True,
        approval_status=package.get("ModelApprovalStatus"),
        marketplace=bool(package.get("CertifyForMarketplace", False)),
        supported_instance_types=tuple(spec.get("SupportedRealtimeInferenceInstanceTypes", [])),
    )
