"""Inference components: copies that take time to load, placed on a variant whose instance count follows them
when ManagedInstanceScaling is ENABLED (down to 0 instances with MinInstanceCount 0), and the Application
Auto Scaling dimension `sagemaker:inference-component:DesiredCopyCount` that moto's enum lacks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from typing import Any

import moto.applicationautoscaling.models as aas_models
import moto.applicationautoscaling.responses as aas_responses
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend

from inferops import catalog
from twin.sagemaker_base import (
    IC_COPY_ACCEL_SECONDS,
    IC_COPY_SECONDS,
    IC_DELETE_SECONDS,
    IC_SCALE_IN_SECONDS,
    IC_UNLOAD_SECONDS,
    ComponentState,
    EndpointState,
    Fleet,
    ServiceError,
    arn,
    dt,
    provision_seconds,
    resolved_image,
    service_model,
)
from twin.sagemaker_deploy import DeploymentMixin

COPY_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
STORE = "twin_inference_components"
ENUM = "ScalableDimensionValueSet"


def extended_dimensions() -> type[Enum]:
    """moto's ScalableDimension enum plus every value botocore's model knows (IC copies among them)."""
    original = aas_models.ScalableDimensionValueSet
    members = {m.name: m.value for m in original}
    known = set(members.values())
    shape = service_model("application-autoscaling").shape_for("ScalableDimension")
    for value in getattr(shape, "enum", None) or []:
        if value not in known:
            members[value.replace(":", "_").replace("-", "_").upper()] = value
    extended: type[Enum] = Enum("ScalableDimensionValueSet", members)  # type: ignore[misc]
    return extended


def patch_autoscaling(dimensions: type[Enum]) -> tuple[Any, Any]:
    """Swap the enum both moto modules validate against; returns the originals for `unpatch_autoscaling`."""
    originals = (aas_models.ScalableDimensionValueSet, getattr(aas_responses, ENUM))
    setattr(aas_models, ENUM, dimensions)
    setattr(aas_responses, ENUM, dimensions)
    return originals


def unpatch_autoscaling(originals: tuple[Any, Any]) -> None:
    setattr(aas_models, ENUM, originals[0])
    setattr(aas_responses, ENUM, originals[1])


class ComponentsMixin(DeploymentMixin):
    """Create/Describe/List/Update/Delete InferenceComponent and UpdateInferenceComponentRuntimeConfig."""

    def components(self, backend: SageMakerModelBackend) -> dict[str, ComponentState]:
        return self.store(backend, STORE)

    def component(self, backend: SageMakerModelBackend, name: str) -> ComponentState:
        found = self.components(backend).get(name)
        if found is None:
            raise ValidationError(
                "Could not find inference component "
                f'"{arn(backend.account_id, backend.region_name, "inference-component", name)}".'
            )
        return found

    # ------------------------------------------------------------------ placement
    @staticmethod
    def _spec(params: dict[str, Any]) -> dict[str, Any]:
        spec = params.get("Specification") or (params.get("Specifications") or [{}])[0]
        return dict(spec)

    @staticmethod
    def copies_per_instance(spec: dict[str, Any], instance_type: str | None) -> float:
        """How many copies fit on one instance; adapters (no resources of their own) take no room."""
        needs = spec.get("ComputeResourceRequirements")
        if not needs or not instance_type:
            return math.inf
        hardware = catalog.get(instance_type)
        fits = []
        if needs.get("NumberOfCpuCoresRequired"):
            fits.append(math.floor(hardware.vcpus / float(needs["NumberOfCpuCoresRequired"])))
        if needs.get("MinMemoryRequiredInMb"):
            fits.append(math.floor(hardware.memory_gib * 1024 / int(needs["MinMemoryRequiredInMb"])))
        if needs.get("NumberOfAcceleratorDevicesRequired"):
            fits.append(math.floor(hardware.accelerator.count / float(needs["NumberOfAcceleratorDevicesRequired"])))
        return float(min(fits)) if fits else math.inf

    def _on_variant(self, ep: EndpointState, variant: str) -> list[ComponentState]:
        return [
            c
            for c in self.components(ep.backend).values()
            if c.endpoint_name == ep.name and c.variant_name == variant and c.status != "Failed"
        ]

    def _instances_for(self, fleet: Fleet, comps: list[ComponentState], copies: dict[str, int]) -> int:
        used = sum(copies[c.name] / self.copies_per_instance(c.spec, fleet.instance_type) for c in comps)
        return math.ceil(used - 1e-9)

    @staticmethod
    def _managed(fleet: Fleet) -> dict[str, Any] | None:
        scaling = fleet.spec.get("ManagedInstanceScaling") or {}
        return scaling if scaling.get("Status") == "ENABLED" else None

    def _target_instances(self, fleet: Fleet, needed: int) -> int:
        managed = self._managed(fleet)
        if managed is None:
            return fleet.provisioned
        low = int(managed.get("MinInstanceCount", 1))
        high = int(managed.get("MaxInstanceCount", max(low, needed)))
        return max(low, min(high, needed))

    def _copy_seconds(self, fleet: Fleet, comp: ComponentState) -> int:
        needs = comp.spec.get("ComputeResourceRequirements") or {}
        return IC_COPY_ACCEL_SECONDS if needs.get("NumberOfAcceleratorDevicesRequired") else IC_COPY_SECONDS

    # ------------------------------------------------------------------ copy changes
    def change_copies(self, ep: EndpointState, comp: ComponentState, copies: int, now: float) -> None:
        """Copies load after instances launch (if managed scaling must add some); unloads are quick."""
        fleet = ep.variant_fleets(comp.variant_name)[0]
        comp.desired_copies = copies
        comp.generation += 1
        comp.modified = now
        if comp.status != "Creating":
            comp.status = "Updating"
        comps = self._on_variant(ep, comp.variant_name)
        wanted = {c.name: max(c.desired_copies, c.current_copies) for c in comps}
        target = self._target_instances(fleet, self._instances_for(fleet, comps, wanted))
        ready = now
        if target > fleet.provisioned:
            launch_done = max(now, fleet.ready_at) + provision_seconds(fleet.instance_type)
            if target > fleet.desired_count or fleet.ready_at <= now:
                fleet.desired_count = max(fleet.desired_count, target)
                fleet.ready_at = launch_done
                self.at(launch_done, lambda t: self._launched(ep, fleet, target, t), f"ic-launch {ep.name}")
            ready = fleet.ready_at
        delay = self._copy_seconds(fleet, comp) if copies >= comp.current_copies else IC_UNLOAD_SECONDS
        generation = comp.generation
        self.at(ready + delay, lambda t: self._copies_ready(ep, comp, generation, t), f"ic-copies {comp.name}")

    def _launched(self, ep: EndpointState, fleet: Fleet, target: int, when: float) -> None:
        if not self.alive(ep) or fleet not in ep.fleets or fleet.provisioned >= target:
            return
        fleet.provisioned = target
        fleet.active = target
        fleet.statuses = []
        ep.modified = when
        self.capacity_changed(ep, when)

    def _copies_ready(self, ep: EndpointState, comp: ComponentState, generation: int, when: float) -> None:
        if (
            not self.alive(ep)
            or comp.generation != generation
            or self.components(ep.backend).get(comp.name) is not comp
        ):
            return
        fleet = ep.variant_fleets(comp.variant_name)[0]
        comp.modified = when
        if not self.healthy(comp.spec.get("ModelName")):
            comp.status, comp.current_copies = "Failed", 0
            comp.failure_reason = (
                f"The container for inference component {comp.name} did not pass the ping health check. "
                "Please check CloudWatch logs for this endpoint."
            )
        else:
            others = [c for c in self._on_variant(ep, comp.variant_name) if c is not comp]
            used = sum(c.current_copies / self.copies_per_instance(c.spec, fleet.instance_type) for c in others)
            per = self.copies_per_instance(comp.spec, fleet.instance_type)
            room = math.inf if per == math.inf else math.floor((fleet.provisioned - used) * per + 1e-9)
            comp.current_copies = int(min(comp.desired_copies, max(0, room)))
            comp.status, comp.failure_reason = "InService", None
        self._schedule_scale_in(ep, fleet, when)

    def _schedule_scale_in(self, ep: EndpointState, fleet: Fleet, when: float) -> None:
        managed = self._managed(fleet)
        if managed is None:
            return
        policy = managed.get("ScaleInPolicy") or {}
        delay = int(policy["CooldownInMinutes"]) * 60 if policy.get("CooldownInMinutes") else IC_SCALE_IN_SECONDS
        self.at(when + delay, lambda t: self._scale_in(ep, fleet, t), f"ic-scale-in {ep.name}")

    def _scale_in(self, ep: EndpointState, fleet: Fleet, when: float) -> None:
        """Managed instance scaling releases instances no copy needs (to 0 with MinInstanceCount 0)."""
        if not self.alive(ep) or fleet not in ep.fleets or fleet.ready_at > when:
            return
        comps = self._on_variant(ep, fleet.variant)
        if any(c.status in ("Creating", "Updating") for c in comps):
            return  # a pending change reschedules us when it lands
        needed = self._instances_for(fleet, comps, {c.name: c.current_copies for c in comps})
        target = self._target_instances(fleet, needed)
        if target < fleet.provisioned:
            fleet.provisioned = fleet.active = fleet.desired_count = target
            ep.modified = when
            self.capacity_changed(ep, when)

    # ------------------------------------------------------------------ operations
    def op_create_inference_component(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        name = params["InferenceComponentName"]
        comps = self.components(backend)
        component_arn = arn(backend.account_id, backend.region_name, "inference-component", name)
        if name in comps:
            raise ServiceError(
                "ResourceInUse", f'Cannot create already existing inference component "{component_arn}".'
            )
        ep = self.endpoint_state(backend, params["EndpointName"])
        if ep.status != "InService":
            raise ValidationError(f'Endpoint "{ep.arn}" must be InService to deploy an inference component to it.')
        variant = params.get("VariantName") or ep.variant_names()[0]
        if variant not in ep.variant_names():
            raise ValidationError(f'Variant "{variant}" is not present in endpoint "{ep.arn}".')
        fleet = ep.variant_fleets(variant)[0]
        if fleet.model_name:
            raise ValidationError(
                f'Inference components cannot be deployed to variant "{variant}" of endpoint "{ep.arn}": '
                "its production variant hosts a model (ModelName)."
            )
        spec = self._check_spec(backend, fleet, self._spec(params))
        copies = int((params.get("RuntimeConfig") or {}).get("CopyCount", 1))
        comp = ComponentState(
            name=name,
            arn=component_arn,
            endpoint_name=ep.name,
            variant_name=variant,
            spec=spec,
            desired_copies=copies,
            current_copies=0,
            status="Creating",
            created=now,
            modified=now,
            tags=list(params.get("Tags") or []),
        )
        comps[name] = comp
        self.change_copies(ep, comp, copies, now)
        return {"InferenceComponentArn": comp.arn}

    def _check_spec(self, backend: SageMakerModelBackend, fleet: Fleet, spec: dict[str, Any]) -> dict[str, Any]:
        if spec.get("ModelName"):
            self.require_model(backend, spec["ModelName"])
        base = spec.get("BaseInferenceComponentName")
        if base:
            self.component(backend, base)
        elif not spec.get("ComputeResourceRequirements"):
            raise ValidationError(
                "ComputeResourceRequirements must be specified unless BaseInferenceComponentName is specified."
            )
        if self.copies_per_instance(spec, fleet.instance_type) < 1:
            raise ValidationError(
                f"The compute resource requirements of the inference component exceed the capacity of one "
                f"{fleet.instance_type} instance."
            )
        return spec

    def op_describe_inference_component(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        comp = self.component(backend, params["InferenceComponentName"])
        ep = self.endpoint_state(backend, comp.endpoint_name)
        spec: dict[str, Any] = {k: v for k, v in comp.spec.items() if k != "Container"}
        container = comp.spec.get("Container")
        if container:
            summary: dict[str, Any] = {k: v for k, v in container.items() if k in ("ArtifactUrl", "Environment")}
            if container.get("Image"):
                summary["DeployedImage"] = {
                    "SpecifiedImage": container["Image"],
                    "ResolvedImage": resolved_image(container["Image"]),
                    "ResolutionTime": dt(comp.created),
                }
            spec["Container"] = summary
        out: dict[str, Any] = {
            "InferenceComponentName": comp.name,
            "InferenceComponentArn": comp.arn,
            "EndpointName": ep.name,
            "EndpointArn": ep.arn,
            "VariantName": comp.variant_name,
            "Specification": spec,
            "RuntimeConfig": {"DesiredCopyCount": comp.desired_copies, "CurrentCopyCount": comp.current_copies},
            "CreationTime": dt(comp.created),
            "LastModifiedTime": dt(comp.modified),
            "InferenceComponentStatus": comp.status,
        }
        if comp.failure_reason:
            out["FailureReason"] = comp.failure_reason
        if comp.last_deployment_config:
            out["LastDeploymentConfig"] = comp.last_deployment_config
        return out

    def op_list_inference_components(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        comps = list(self.components(backend).values())
        filters: dict[str, Callable[[ComponentState, Any], bool]] = {
            "NameContains": lambda c, v: v in c.name,
            "StatusEquals": lambda c, v: c.status == v,
            "EndpointNameEquals": lambda c, v: c.endpoint_name == v,
            "VariantNameEquals": lambda c, v: c.variant_name == v,
            "CreationTimeBefore": lambda c, v: dt(c.created) < v,
            "CreationTimeAfter": lambda c, v: dt(c.created) > v,
            "LastModifiedTimeBefore": lambda c, v: dt(c.modified) < v,
            "LastModifiedTimeAfter": lambda c, v: dt(c.modified) > v,
        }
        for key, keep in filters.items():
            if params.get(key) is not None:
                comps = [c for c in comps if keep(c, params[key])]
        sort_by = params.get("SortBy", "CreationTime")
        keys: dict[str, Callable[[ComponentState], Any]] = {"Name": lambda c: c.name, "Status": lambda c: c.status}
        key_of = keys.get(sort_by, lambda c: c.created)
        comps.sort(key=key_of, reverse=params.get("SortOrder", "Descending") == "Descending")
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 10)
        page = comps[start : start + size]
        out: dict[str, Any] = {
            "InferenceComponents": [
                {
                    "CreationTime": dt(c.created),
                    "InferenceComponentArn": c.arn,
                    "InferenceComponentName": c.name,
                    "EndpointArn": arn(backend.account_id, backend.region_name, "endpoint", c.endpoint_name),
                    "EndpointName": c.endpoint_name,
                    "VariantName": c.variant_name,
                    "InferenceComponentStatus": c.status,
                    "LastModifiedTime": dt(c.modified),
                }
                for c in page
            ]
        }
        if start + size < len(comps):
            out["NextToken"] = str(start + size)
        return out

    def _updatable(self, backend: SageMakerModelBackend, name: str) -> tuple[ComponentState, EndpointState]:
        comp = self.component(backend, name)
        if comp.status not in ("InService", "Failed"):
            raise ValidationError(f'Cannot update in-progress inference component "{comp.arn}".')
        return comp, self.endpoint_state(backend, comp.endpoint_name)

    def op_update_inference_component(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        comp, ep = self._updatable(backend, params["InferenceComponentName"])
        fleet = ep.variant_fleets(comp.variant_name)[0]
        if params.get("DeploymentConfig"):
            comp.last_deployment_config = params["DeploymentConfig"]
        if params.get("Specification") or params.get("Specifications"):
            new_spec = self._check_spec(backend, fleet, {**comp.spec, **self._spec(params)})
            old_spec = comp.spec
            comp.spec = new_spec
            if not self.healthy(new_spec.get("ModelName")):
                # the new copies fail their health check: SageMaker rolls the component back to its old spec
                comp.generation += 1
                comp.status, comp.modified = "Updating", now
                generation = comp.generation
                reason = (
                    f"The container for inference component {comp.name} did not pass the ping health check. "
                    "The update was rolled back."
                )

                def rolled_back(when: float) -> None:
                    if comp.generation == generation:
                        comp.spec, comp.status, comp.failure_reason, comp.modified = old_spec, "InService", reason, when

                self.at(now + self._copy_seconds(fleet, comp), rolled_back, f"ic-rollback {comp.name}")
                return {"InferenceComponentArn": comp.arn}
        copies = (params.get("RuntimeConfig") or {}).get("CopyCount", comp.desired_copies)
        self.change_copies(ep, comp, int(copies), now)
        return {"InferenceComponentArn": comp.arn}

    def op_update_inference_component_runtime_config(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        comp, ep = self._updatable(backend, params["InferenceComponentName"])
        self.change_copies(ep, comp, int(params["DesiredRuntimeConfig"]["CopyCount"]), now)
        return {"InferenceComponentArn": comp.arn}

    def op_delete_inference_component(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        comp = self.component(backend, params["InferenceComponentName"])
        if comp.status == "Deleting":
            raise ValidationError(f'Inference component "{comp.arn}" is already being deleted.')
        comp.status, comp.modified = "Deleting", now
        comp.generation += 1
        generation = comp.generation

        def gone(when: float) -> None:
            comps = self.components(backend)
            if comps.get(comp.name) is not comp or comp.generation != generation:
                return
            del comps[comp.name]
            fake = backend.endpoints.get(comp.endpoint_name)
            ep = getattr(fake, "twin", None)
            if isinstance(ep, EndpointState) and ep.variant_fleets(comp.variant_name):
                self._schedule_scale_in(ep, ep.variant_fleets(comp.variant_name)[0], when)

        self.at(now + IC_DELETE_SECONDS, gone, f"ic-delete {comp.name}")
        return {}

    def drop_components(self, ep: EndpointState) -> None:
        comps = self.components(ep.backend)
        for name in [n for n, c in comps.items() if c.endpoint_name == ep.name]:
            del comps[name]

    def endpoint_components(self, ep: EndpointState, variant: str) -> list[ComponentState]:
        return [
            c for c in self.components(ep.backend).values() if c.endpoint_name == ep.name and c.variant_name == variant
        ]
