"""The SageMaker simulator of the local twin: what moto's SageMaker lacks, played on the virtual clock.

`install()` patches moto 5.2.5 in place (response methods looked up per request, the endpoint-config
instance-type allow-list, Application Auto Scaling's dimension enum); every added or replaced operation
validates its input against botocore's model and its output against the output shape. Endpoints take
realistic, deterministic times to create by instance type, UpdateEndpoint runs SageMaker's deployment
guardrails phase by phase with alarm-driven auto-rollback, inference components and experiments have
their lifecycles, async endpoints write S3 results and SNS notifications, and every endpoint status change
(and model package approval change) is sent to the event sink as SageMaker's EventBridge events. The parts
live in twin/sagemaker_*.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.core.responses import ActionResult, BaseResponse
from moto.core.utils import camelcase_to_underscores
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse

from twin.bus import EventSink
from twin.sagemaker_async import AsyncBacklog, AsyncMixin
from twin.sagemaker_base import (
    DELETE_SECONDS,
    EndpointState,
    Fleet,
    RuntimeValidationError,
    arn,
    check_instance_type,
    dt,
    provision_seconds,
    service_model,
    validate_input,
    validate_output,
)
from twin.sagemaker_components import (
    COPY_DIMENSION,
    ComponentsMixin,
    extended_dimensions,
    patch_autoscaling,
    unpatch_autoscaling,
)
from twin.sagemaker_deploy import VARIANT_DIMENSION
from twin.sagemaker_diagnostics import DiagnosticsMixin
from twin.sagemaker_experiments import ExperimentsMixin
from twin.sagemaker_registry import RegistryMixin

__all__ = ["AsyncBacklog", "EventSink", "SageMakerSimulator", "ServingVariant"]

_MISSING = object()
_installed: SageMakerSimulator | None = None

SERVER_ERRORS = {"InternalFailure": 500, "InternalServerError": 500, "ServiceUnavailable": 503}
FAULT_MESSAGES = {
    "ThrottlingException": "Rate exceeded",
    "InternalFailure": "An internal error occurred. Try your request again.",
    "ServiceUnavailable": "The service is unavailable. Try your request again.",
}


@dataclass(frozen=True)
class ServingVariant:
    """One fleet taking traffic, for the load model (satisfies twin.cloudwatch_traffic.ServingVariantLike).

    During an update a variant has two entries (old and new endpoint config, `is_new_fleet`); on an
    inference-component endpoint there is one entry per component, carrying its copy count, and the
    variant's share is split evenly over its components (requests name their component).
    """

    endpoint_name: str
    variant_name: str
    endpoint_config_name: str
    model_name: str | None
    instance_type: str  # "" for a serverless variant
    instance_count: int  # instances taking traffic
    weight_share: float  # share of the endpoint's requests (0-1); for a shadow, the share mirrored to it
    is_new_fleet: bool = False  # the green fleet / new batches of an update in progress
    inference_component_name: str | None = None
    copy_count: int | None = None
    shadow: bool = False
    model_healthy: bool = True


def _catalog_instance_type(config: FakeEndpointConfig, instance_type: str) -> None:
    """Replaces moto's old allow-list: every type of the instance catalog is accepted."""
    check_instance_type(instance_type, "instanceType")


class SageMakerSimulator(DiagnosticsMixin, ExperimentsMixin, ComponentsMixin, AsyncMixin, RegistryMixin):
    """SageMaker for the local twin. Create it with the twin's clock and event sink, then `install()`."""

    _autoscaling: tuple[Any, Any] | None = None  # Application Auto Scaling's originals while installed

    # ------------------------------------------------------------------ install
    def _operations(self) -> dict[str, Callable[[SageMakerModelBackend, dict[str, Any], float], dict[str, Any]]]:
        names = [
            "CreateEndpointConfig",
            "DescribeEndpointConfig",
            "CreateEndpoint",
            "DescribeEndpoint",
            "DeleteEndpoint",
            "UpdateEndpoint",
            "UpdateEndpointWeightsAndCapacities",
            "CreateInferenceComponent",
            "DescribeInferenceComponent",
            "ListInferenceComponents",
            "UpdateInferenceComponent",
            "UpdateInferenceComponentRuntimeConfig",
            "DeleteInferenceComponent",
            "CreateInferenceExperiment",
            "DescribeInferenceExperiment",
            "ListInferenceExperiments",
            "StartInferenceExperiment",
            "StopInferenceExperiment",
            "UpdateInferenceExperiment",
            "DeleteInferenceExperiment",
        ]
        return {name: getattr(self, f"op_{camelcase_to_underscores(name)}") for name in names}

    def install(self) -> None:
        """Patch moto; idempotent. Only one simulator can be installed at a time."""
        global _installed  # noqa: PLW0603 - moto's classes are process-wide, so is the simulator behind them
        if _installed is self:
            return
        if _installed is not None:
            raise RuntimeError("another SageMakerSimulator is installed; uninstall() it first")
        for operation, implementation in self._operations().items():
            self._patch(
                SageMakerResponse, camelcase_to_underscores(operation), self._handler(operation, implementation)
            )
        self._patch(
            SageMakerResponse, "call_action", self._faulty(SageMakerResponse.call_action, "application/x-amz-json-1.1")
        )
        self._patch(SageMakerRuntimeResponse, "invoke_endpoint_async", self._invoke_async_handler())
        self._patch(
            SageMakerRuntimeResponse,
            "call_action",
            self._faulty(SageMakerRuntimeResponse.call_action, "application/json"),
        )
        self._patch(FakeEndpointConfig, "validate_instance_type", _catalog_instance_type)
        for name, handler in self.registry_handlers().items():
            self._patch(SageMakerResponse, name, handler)
        self._autoscaling = patch_autoscaling(extended_dimensions())
        _installed = self

    def uninstall(self) -> None:
        global _installed  # noqa: PLW0603
        if _installed is not self:
            return
        for owner, name, previous in reversed(self._patches):
            if previous is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, previous)
        self._patches.clear()
        if self._autoscaling is not None:
            unpatch_autoscaling(self._autoscaling)
            self._autoscaling = None
        _installed = None

    def _patch(self, owner: object, name: str, value: object) -> None:
        self._patches.append((owner, name, vars(owner).get(name, _MISSING)))
        setattr(owner, name, value)

    def _handler(
        self, operation: str, implementation: Callable[[SageMakerModelBackend, dict[str, Any], float], dict[str, Any]]
    ) -> Callable[[SageMakerResponse], ActionResult]:
        def handle(response: SageMakerResponse) -> ActionResult:
            params = dict(response.params)
            validate_input("sagemaker", operation, params)
            backend = self.backend(response.current_account, response.region)
            with self.guard():
                result = implementation(backend, params, self.clock.now())
            validate_output("sagemaker", operation, result)
            return ActionResult(result)

        return handle

    def _invoke_async_handler(self) -> Callable[[SageMakerRuntimeResponse], tuple[int, dict[str, str], str]]:
        operation = service_model("sagemaker-runtime").operation_model("InvokeEndpointAsync")
        shape = operation.input_shape
        assert shape is not None
        headers_of = {
            name: member.serialization["name"]
            for name, member in shape.members.items()
            if member.serialization.get("location") == "header"
        }

        def handle(response: SageMakerRuntimeResponse) -> tuple[int, dict[str, str], str]:
            params: dict[str, Any] = {"EndpointName": response.path.split("/")[2]}
            for name, header in headers_of.items():
                value = response.headers.get(header)
                if value is not None:
                    numeric = shape.members[name].type_name == "integer" and str(value).isdigit()
                    params[name] = int(value) if numeric else value
            validate_input("sagemaker-runtime", "InvokeEndpointAsync", params, RuntimeValidationError)
            backend = self.backend(response.current_account, response.region)
            with self.guard():
                result = self.op_invoke_endpoint_async(backend, params, self.clock.now())
            validate_output("sagemaker-runtime", "InvokeEndpointAsync", result)
            headers = {"Content-Type": "application/json", "X-Amzn-SageMaker-OutputLocation": result["OutputLocation"]}
            if result.get("FailureLocation"):
                headers["X-Amzn-SageMaker-FailureLocation"] = result["FailureLocation"]
            return 200, headers, json.dumps({"InferenceId": result["InferenceId"]})

        return handle

    def _faulty(self, original: Callable[[Any], Any], content_type: str) -> Callable[[BaseResponse], Any]:
        """Fail chosen operations at a rate before they act, as AWS would: throttling 400, InternalFailure 500."""

        def call_action(response: BaseResponse) -> Any:
            fault = self._fault(response._get_action())
            if fault is None:
                return original(response)
            code, message = fault
            status = SERVER_ERRORS.get(code, 400)
            headers = {"X-Amzn-ErrorType": code, "Content-Type": content_type, "status": str(status)}
            return status, headers, json.dumps({"__type": code, "message": message})

        return call_action

    def _fault(self, operation: str | None) -> tuple[str, str] | None:
        """The error to inject for this call: `faults.sagemaker_error(op)` if the faults object has it (it
        counts), else `faults.sagemaker_errors[op or "*"] = (code, rate)` drawn with `faults.rng`."""
        if not operation or self.faults is None:
            return None
        picker = getattr(self.faults, "sagemaker_error", None)
        if callable(picker):
            code = picker(operation)
        else:
            errors = getattr(self.faults, "sagemaker_errors", None) or {}
            spec = errors.get(operation) or errors.get("*")
            if spec is None:
                return None
            rng = getattr(self.faults, "rng", None) or self._rng
            with self._lock:
                code = spec[0] if rng.random() < float(spec[1]) else None
        if code is None:
            return None
        return str(code), FAULT_MESSAGES.get(str(code), f"{code} (a fault injected by the local twin)")

    # ------------------------------------------------------------------ knobs
    def set_model_health(self, model_name: str, healthy: bool) -> None:
        """An unhealthy model's fleets fail their ping health check (create, update, async requests, ICs)."""
        with self.guard():
            if healthy:
                self._unhealthy.discard(model_name)
            else:
                self._unhealthy.add(model_name)

    def set_rollback_failure(self, endpoint_name: str, fails: bool = True) -> None:
        """Make the next rolling-deployment rollback of this endpoint fail too (-> UpdateRollbackFailed)."""
        with self.guard():
            if fails:
                self._rollback_fails.add(endpoint_name)
            else:
                self._rollback_fails.discard(endpoint_name)

    def serving_variants(
        self, endpoint_name: str, *, account: str | None = None, region: str | None = None
    ) -> list[ServingVariant]:
        """The fleets taking an endpoint's requests, shares summing to 1 (0 while none serves); [] if unknown."""
        with self.guard():
            ep = self._lookup(endpoint_name, account, region)
            if ep is None:
                return []
            greens = ep.deployment.greens if ep.deployment else []
            names = ep.variant_names()
            weights = {n: ep.variant_fleets(n)[0].current_weight for n in names}
            total = sum(weights.values())
            out: list[ServingVariant] = []
            for name in names:
                share = weights[name] / total if total else 0.0
                for fleet in [f for f in ep.fleets + greens if f.variant == name]:
                    out += self._serving(ep, fleet, share * fleet.traffic, new=fleet in greens)
            return out

    def shadow_variants(
        self, endpoint_name: str, *, account: str | None = None, region: str | None = None
    ) -> list[ServingVariant]:
        """Shadow fleets: `weight_share` is the fraction of production requests mirrored to them."""
        with self.guard():
            ep = self._lookup(endpoint_name, account, region)
            if ep is None or not ep.fleets:
                return []
            production = ep.fleets[0].current_weight
            out: list[ServingVariant] = []
            for fleet in ep.shadows:
                mirrored = min(1.0, fleet.current_weight / production) if production else 0.0
                out += self._serving(ep, fleet, mirrored, shadow=True)
            return out

    def _lookup(self, endpoint_name: str, account: str | None, region: str | None) -> EndpointState | None:
        backend = self.backend(account or self.account, region or self.region)
        ep = getattr(backend.endpoints.get(endpoint_name), "twin", None)
        return ep if isinstance(ep, EndpointState) else None

    def _serving(
        self, ep: EndpointState, fleet: Fleet, share: float, *, new: bool = False, shadow: bool = False
    ) -> list[ServingVariant]:
        base = ServingVariant(
            endpoint_name=ep.name,
            variant_name=fleet.variant,
            endpoint_config_name=fleet.config_name,
            model_name=fleet.model_name,
            instance_type=fleet.instance_type or "",
            instance_count=fleet.active,
            weight_share=share,
            is_new_fleet=new,
            shadow=shadow,
            model_healthy=self.healthy(fleet.model_name),
        )
        components = [c for c in self.endpoint_components(ep, fleet.variant) if c.status != "Deleting"]
        if fleet.model_name or not components:
            return [base]
        each = share / len(components)
        return [
            replace(
                base,
                model_name=c.spec.get("ModelName"),
                weight_share=each,
                inference_component_name=c.name,
                copy_count=c.current_copies,
                model_healthy=self.healthy(c.spec.get("ModelName")),
            )
            for c in components
        ]

    def apply_capacity(
        self, resource_id: str, dimension: str, capacity: int, *, account: str | None = None, region: str | None = None
    ) -> None:
        """What Application Auto Scaling does to SageMaker: set a variant's instances or an IC's copies.

        Raises moto's ValidationError when SageMaker would refuse (endpoint not InService, unknown target).
        """
        with self.guard():
            backend = self.backend(account or self.account, region or self.region)
            parts = resource_id.split("/")
            now = self.clock.now()
            if dimension == VARIANT_DIMENSION and len(parts) == 4 and parts[0] == "endpoint":
                ep = self.endpoint_state(backend, parts[1])
                if ep.status != "InService":
                    raise ValidationError(f'Cannot update in-progress endpoint "{ep.arn}".')
                if parts[3] not in ep.variant_names():
                    raise ValidationError(f'The variant name(s) "{parts[3]}" is/are not present.')
                self.scale_variants(ep, {parts[3]: (None, int(capacity))}, now)
            elif dimension == COPY_DIMENSION and len(parts) == 2 and parts[0] == "inference-component":
                comp, ep = self._updatable(backend, parts[1])
                self.change_copies(ep, comp, int(capacity), now)
            else:
                raise ValidationError(f"Unsupported scalable target {resource_id} / {dimension}.")

    # ------------------------------------------------------------------ endpoint configs
    def op_create_endpoint_config(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        config_arn = arn(backend.account_id, backend.region_name, "endpoint-config", name)
        if name in backend.endpoint_configs:
            raise ValidationError(f'Cannot create already existing endpoint configuration "{config_arn}".')
        names = []
        for key in ("ProductionVariants", "ShadowProductionVariants"):
            for index, variant in enumerate(params.get(key) or [], start=1):
                if variant.get("InstanceType"):
                    check_instance_type(
                        variant["InstanceType"], f"{key[0].lower()}{key[1:]}.{index}.member.instanceType"
                    )
                elif not variant.get("ServerlessConfig"):
                    raise ValidationError(
                        f"Variant {variant['VariantName']} must specify either InstanceType or ServerlessConfig."
                    )
                if variant.get("ModelName"):
                    self.require_model(backend, variant["ModelName"])
                names.append(variant["VariantName"])
        if len(set(names)) != len(names):
            raise ValidationError(f"Variant names must be unique within an endpoint configuration: {names}.")
        self.register_config(backend, params, now)
        return {"EndpointConfigArn": config_arn}

    def op_describe_endpoint_config(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        config = self.config_params(backend, name)
        shape = service_model("sagemaker").operation_model("DescribeEndpointConfig").output_shape
        members = shape.members if shape is not None else {}
        out = {k: v for k, v in config.items() if k in members and v not in (None, {}, [], "")}
        out["EndpointConfigArn"] = arn(backend.account_id, backend.region_name, "endpoint-config", name)
        out["CreationTime"] = backend.endpoint_configs[name].creation_time
        return out

    # ------------------------------------------------------------------ endpoints
    def op_create_endpoint(self, backend: SageMakerModelBackend, params: dict[str, Any], now: float) -> dict[str, Any]:
        name = params["EndpointName"]
        endpoint_arn = arn(backend.account_id, backend.region_name, "endpoint", name)
        if name in backend.endpoints:
            raise ValidationError(f'Cannot create already existing endpoint "{endpoint_arn}".')
        config_name = params["EndpointConfigName"]
        config = self.config_params(backend, config_name)
        wanted: dict[str, int] = {}
        for variant in [*config["ProductionVariants"], *(config.get("ShadowProductionVariants") or [])]:
            if variant.get("InstanceType"):
                count = int(variant.get("InitialInstanceCount") or 1)
                wanted[variant["InstanceType"]] = wanted.get(variant["InstanceType"], 0) + count
        self.check_quota(backend, wanted)
        fake = FakeEndpoint(  # type: ignore[abstract]
            account_id=backend.account_id,
            region_name=backend.region_name,
            endpoint_name=name,
            endpoint_config_name=config_name,
            production_variants=config["ProductionVariants"],
            data_capture_config=config.get("DataCaptureConfig") or {},
            tags=list(params.get("Tags") or []),
        )
        fake.creation_time = fake.last_modified_time = dt(now)
        fake.endpoint_status = "Creating"
        ep = EndpointState(
            name=name,
            arn=endpoint_arn,
            account=backend.account_id,
            region=backend.region_name,
            fake=fake,
            backend=backend,
            config_name=config_name,
            status="Creating",
            created=now,
            modified=now,
            fleets=[self.new_fleet(backend, config_name, v, now) for v in config["ProductionVariants"]],
            shadows=[
                self.new_fleet(backend, config_name, v, now) for v in config.get("ShadowProductionVariants") or []
            ],
            async_config=config.get("AsyncInferenceConfig") or None,
            data_capture=config.get("DataCaptureConfig") or None,
            explainer=config.get("ExplainerConfig"),
            last_deployment_config=params.get("DeploymentConfig"),
        )
        setattr(fake, "twin", ep)  # noqa: B010 - the simulator's state rides on moto's object
        backend.endpoints[name] = fake
        for fleet in ep.fleets:
            what = "serverless capacity" if fleet.serverless else f"{fleet.desired_count} instance(s)"
            fleet.set_status("Creating", f"Launching {what}.", now)
        self.endpoint_event(ep, now)
        self.async_test_notification(ep, ep.async_config)
        duration = max(provision_seconds(f.instance_type) for f in ep.fleets + ep.shadows)
        generation = ep.generation
        self.at(now + duration, lambda t: self._created(ep, generation, t), f"create {name}")
        return {"EndpointArn": endpoint_arn}

    def _created(self, ep: EndpointState, generation: int, when: float) -> None:
        if not self.alive(ep) or ep.generation != generation or ep.status != "Creating":
            return
        fleets = ep.fleets + ep.shadows
        for fleet in fleets:
            fleet.statuses = []
        reasons = [reason for reason in (self.start_fleet(ep, f, when) for f in fleets) if reason]
        if reasons:
            ep.failure_reason = reasons[0]
            self.set_endpoint_status(ep, "Failed", when)
            return
        for fleet in fleets:
            fleet.provisioned = fleet.desired_count
            fleet.serve_all()
        self.set_endpoint_status(ep, "InService", when)
        self.capacity_changed(ep, when)

    def op_delete_endpoint(self, backend: SageMakerModelBackend, params: dict[str, Any], now: float) -> dict[str, Any]:
        ep = self.endpoint_state(backend, params["EndpointName"])
        if ep.status == "Deleting":
            return {}
        ep.generation += 1
        if ep.deployment is not None and ep.deployment.timer is not None:
            ep.deployment.timer.cancel()
        ep.deployment = None
        ep.queue.clear()
        self.set_endpoint_status(ep, "Deleting", now)
        generation = ep.generation
        self.at(now + DELETE_SECONDS, lambda t: self._deleted(ep, generation), f"delete {ep.name}")
        return {}

    def _deleted(self, ep: EndpointState, generation: int) -> None:
        if not self.alive(ep) or ep.generation != generation:
            return
        del ep.backend.endpoints[ep.name]
        self.drop_components(ep)
        targets = applicationautoscaling_backends[ep.account][ep.region].targets
        for by_resource in targets.values():  # DeleteEndpoint deregisters the endpoint's scalable targets
            for resource in [r for r in by_resource if r.startswith(f"endpoint/{ep.name}/variant/")]:
                del by_resource[resource]

    def op_describe_endpoint(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        ep = self.endpoint_state(backend, params["EndpointName"])
        out: dict[str, Any] = {
            "EndpointName": ep.name,
            "EndpointArn": ep.arn,
            "EndpointConfigName": ep.config_name,
            "EndpointStatus": ep.status,
            "CreationTime": dt(ep.created),
            "LastModifiedTime": dt(ep.modified),
        }
        variants = [self._variant_summary(ep.variant_fleets(n)) for n in ep.variant_names()]
        if variants:
            out["ProductionVariants"] = variants
        if ep.shadows:
            out["ShadowProductionVariants"] = [self._variant_summary([s]) for s in ep.shadows]
        if ep.failure_reason:
            out["FailureReason"] = ep.failure_reason
        if ep.data_capture:
            capture = ep.data_capture
            out["DataCaptureConfig"] = {
                "EnableCapture": bool(capture.get("EnableCapture", True)),
                "CaptureStatus": "Started" if capture.get("EnableCapture", True) else "Stopped",
                "CurrentSamplingPercentage": int(capture.get("InitialSamplingPercentage", 100)),
                "DestinationS3Uri": capture.get("DestinationS3Uri", ""),
                "KmsKeyId": capture.get("KmsKeyId", ""),
            }
        if ep.last_deployment_config:
            out["LastDeploymentConfig"] = ep.last_deployment_config
        if ep.async_config:
            out["AsyncInferenceConfig"] = ep.async_config
        if ep.explainer:
            out["ExplainerConfig"] = ep.explainer
        dep = ep.deployment
        if dep is not None:
            pending: dict[str, Any] = {
                "EndpointConfigName": dep.new_config,
                "StartTime": dt(dep.started),
                "ProductionVariants": [self._variant_summary([g], pending=True) for g in dep.greens],
            }
            if dep.shadows:
                pending["ShadowProductionVariants"] = [self._variant_summary([s], pending=True) for s in dep.shadows]
            out["PendingDeploymentSummary"] = pending
        return out

    @staticmethod
    def _variant_summary(fleets: list[Fleet], *, pending: bool = False) -> dict[str, Any]:
        """DescribeEndpoint's variant summary; `pending` adds what PendingDeploymentSummary also shows."""
        first = fleets[0]
        out: dict[str, Any] = {
            "VariantName": first.variant,
            "CurrentWeight": first.current_weight,
            "DesiredWeight": first.desired_weight,
        }
        if first.images:
            out["DeployedImages"] = first.images
        if first.serverless:
            out["CurrentServerlessConfig"] = out["DesiredServerlessConfig"] = first.spec["ServerlessConfig"]
        else:
            out["CurrentInstanceCount"] = sum(f.provisioned for f in fleets)
            out["DesiredInstanceCount"] = sum(f.desired_count for f in fleets)
            if pending:
                out["InstanceType"] = first.instance_type
        statuses = [s for f in fleets for s in f.statuses][:5]
        if statuses:
            out["VariantStatus"] = statuses
        for key in ("ManagedInstanceScaling", "RoutingConfig"):
            if first.spec.get(key):
                out[key] = first.spec[key]
        return out
