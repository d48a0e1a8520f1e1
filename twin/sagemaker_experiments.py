"""Inference experiments (shadow tests): Creating -> Created (scheduled) -> Starting -> Running -> Stopping ->
Completed/Cancelled, changing the endpoint the way SageMaker does (a shadow variant added at start; at stop
Promote/Remove/Retain decide the final production and shadow variants; at the scheduled end the endpoint
returns to its pre-test config).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend

from inferops import catalog
from twin.sagemaker_base import (
    EXPERIMENT_CREATE_SECONDS,
    EndpointState,
    ExperimentState,
    ServiceError,
    arn,
    check_instance_type,
    dt,
)
from twin.sagemaker_deploy import DeploymentMixin

STORE = "twin_inference_experiments"
MIN_DURATION = 3600
MAX_DURATION = 30 * 86400
DEFAULT_DURATION = 7 * 86400
RETRY_SECONDS = 60
TERMINAL = ("Completed", "Cancelled")


class ExperimentsMixin(DeploymentMixin):
    """Create/Describe/List/Start/Stop/Update/Delete InferenceExperiment."""

    def experiments(self, backend: SageMakerModelBackend) -> dict[str, ExperimentState]:
        return self.store(backend, STORE)

    def experiment(self, backend: SageMakerModelBackend, name: str) -> ExperimentState:
        found = self.experiments(backend).get(name)
        if found is None:
            where = arn(backend.account_id, backend.region_name, "inference-experiment", name)
            raise ServiceError("ResourceNotFound", f'Could not find inference experiment "{where}".')
        return found

    # ------------------------------------------------------------------ checks
    def _check_eligible(self, ep: EndpointState) -> None:
        """Shadow tests need one production variant, no shadow, and none of the incompatible features."""
        why = None
        fleets = ep.fleets
        models = [ep.backend._models.get(f.model_name) for f in fleets if f.model_name]
        if ep.status != "InService":
            why = f"its status is {ep.status}, not InService"
        elif len(ep.variant_names()) != 1:
            why = "it must have exactly one production variant"
        elif ep.shadows:
            why = "it already has a shadow variant"
        elif ep.async_config:
            why = "asynchronous inference endpoints are not supported"
        elif any(f.serverless for f in fleets):
            why = "serverless endpoints are not supported"
        elif not models:
            why = "endpoints hosting inference components are not supported"
        elif any(len(m.containers or []) > 1 for m in models if m is not None):
            why = "multi-container endpoints are not supported"
        elif any((m.primary_container or {}).get("Mode") == "MultiModel" for m in models if m is not None):
            why = "multi-model endpoints are not supported"
        elif any(f.instance_type and not catalog.get(f.instance_type).features.shadow_tests for f in fleets):
            why = "Inf1 instances are not supported"
        elif any(self.marketplace(ep.backend, f.model_name) for f in fleets):
            why = "AWS Marketplace containers are not supported"
        if why:
            raise ValidationError(f'Endpoint "{ep.arn}" is not eligible for an inference experiment: {why}.')

    def _check_variants(self, backend: SageMakerModelBackend, params: dict[str, Any]) -> None:
        variants = params["ModelVariants"]
        names = [v["VariantName"] for v in variants]
        shadow_config = params["ShadowModeConfig"]
        source = shadow_config["SourceModelVariantName"]
        shadow = shadow_config["ShadowModelVariants"][0]["ShadowModelVariantName"]
        if len(set(names)) != len(names):
            raise ValidationError(f"ModelVariants must have unique variant names: {names}.")
        if source not in names or shadow not in names or source == shadow or len(names) != 2:
            raise ValidationError(
                "ModelVariants must hold exactly the production variant (ShadowModeConfig.SourceModelVariantName) "
                "and one shadow variant (ShadowModelVariantName)."
            )
        for index, variant in enumerate(variants, start=1):
            self.require_model(backend, variant["ModelName"])
            instance_type = variant["InfrastructureConfig"]["RealTimeInferenceConfig"]["InstanceType"]
            check_instance_type(
                instance_type, f"modelVariants.{index}.member.infrastructureConfig.realTimeInferenceConfig.instanceType"
            )
            if not catalog.get(instance_type).features.shadow_tests:
                raise ValidationError(f"Instance type {instance_type} does not support inference experiments.")

    @staticmethod
    def _experiment_window(
        schedule: dict[str, Any] | None, now: float, start: float | None = None
    ) -> tuple[float, float]:
        schedule = schedule or {}
        begin = start if start is not None else now
        if isinstance(schedule.get("StartTime"), datetime):
            begin = schedule["StartTime"].timestamp()
        end = schedule["EndTime"].timestamp() if isinstance(schedule.get("EndTime"), datetime) else None
        if end is None:
            end = begin + DEFAULT_DURATION
        if not MIN_DURATION <= end - begin <= MAX_DURATION:
            raise ValidationError("The duration of an inference experiment must be between 1 hour and 30 days.")
        begin = max(begin, now) if start is None else begin  # a start in the past means now
        return begin, end

    # ------------------------------------------------------------------ lifecycle
    def op_create_inference_experiment(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        name = params["Name"]
        exps = self.experiments(backend)
        experiment_arn = arn(backend.account_id, backend.region_name, "inference-experiment", name)
        if name in exps:
            raise ServiceError("ResourceInUse", f'Inference experiment "{experiment_arn}" already exists.')
        ep = self.endpoint_state(backend, params["EndpointName"])
        self._check_eligible(ep)
        busy = [e.name for e in exps.values() if e.endpoint_name == ep.name and e.status not in TERMINAL]
        if busy:
            raise ServiceError("ResourceInUse", f'Endpoint "{ep.arn}" already has inference experiment {busy[0]}.')
        self._check_variants(backend, params)
        start, end = self._experiment_window(params.get("Schedule"), now)
        exp = ExperimentState(
            name=name,
            arn=experiment_arn,
            endpoint_name=ep.name,
            params=dict(params),
            status="Creating",
            created=now,
            modified=now,
            start=start,
            end=end,
            variant_status={v["VariantName"]: "Creating" for v in params["ModelVariants"]},
        )
        exps[name] = exp
        generation = exp.generation
        self.at(
            now + EXPERIMENT_CREATE_SECONDS,
            lambda t: self._experiment_created(backend, exp, generation, t),
            f"ie {name}",
        )
        return {"InferenceExperimentArn": exp.arn}

    def _experiment_live(self, backend: SageMakerModelBackend, exp: ExperimentState, generation: int) -> bool:
        return self.experiments(backend).get(exp.name) is exp and exp.generation == generation

    def _experiment_created(
        self, backend: SageMakerModelBackend, exp: ExperimentState, generation: int, when: float
    ) -> None:
        if not self._experiment_live(backend, exp, generation) or exp.status != "Creating":
            return
        exp.status, exp.modified = "Created", when
        self.at(
            max(exp.start, when), lambda t: self._experiment_start(backend, exp, generation, t), f"ie-start {exp.name}"
        )

    def _experiment_start(
        self, backend: SageMakerModelBackend, exp: ExperimentState, generation: int, when: float
    ) -> None:
        if not self._experiment_live(backend, exp, generation) or exp.status != "Created":
            return
        fake = backend.endpoints.get(exp.endpoint_name)
        ep = getattr(fake, "twin", None)
        if not isinstance(ep, EndpointState):
            exp.status, exp.modified, exp.completion = "Cancelled", when, when
            exp.status_reason = f"Endpoint {exp.endpoint_name} no longer exists."
            return
        if ep.status != "InService":
            self.at(
                when + RETRY_SECONDS,
                lambda t: self._experiment_start(backend, exp, generation, t),
                f"ie-start {exp.name}",
            )
            return
        exp.status, exp.modified = "Starting", when
        exp.original_config = ep.config_name
        source, shadow, sampling = self._experiment_roles(exp)
        specs = {v["VariantName"]: v for v in exp.params["ModelVariants"]}
        config: dict[str, Any] = {
            "EndpointConfigName": self._config_name(backend, f"{exp.name}-shadow"),
            "ProductionVariants": [self._experiment_variant(specs[source], 1.0)],
            "ShadowProductionVariants": [self._experiment_variant(specs[shadow], sampling / 100)],
        }
        storage = exp.params.get("DataStorageConfig")
        if storage:
            config["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": storage["Destination"],
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                **({"KmsKeyId": storage["KmsKey"]} if storage.get("KmsKey") else {}),
            }
        self._experiment_update(ep, config, when, lambda ok, t: self._experiment_started(backend, exp, ok, t))
        self.at(exp.end, lambda t: self._experiment_expire(backend, exp, generation, t), f"ie-end {exp.name}")

    def _experiment_update(
        self, ep: EndpointState, config: dict[str, Any], when: float, done: Callable[[bool, float], None]
    ) -> None:
        self.register_config(ep.backend, config, when)
        dep = self.plan_update(ep, config["EndpointConfigName"], config, None, now=when, internal=True)
        dep.on_done = done
        self.start_update(ep, dep, config, when)

    def _experiment_started(self, backend: SageMakerModelBackend, exp: ExperimentState, ok: bool, when: float) -> None:
        if self.experiments(backend).get(exp.name) is not exp or exp.status != "Starting":
            return
        exp.modified = when
        if ok:
            exp.status = "Running"
            exp.variant_status = dict.fromkeys(exp.variant_status, "InService")
        else:
            ep = getattr(backend.endpoints.get(exp.endpoint_name), "twin", None)
            exp.status, exp.completion = "Cancelled", when
            exp.status_reason = ep.failure_reason if isinstance(ep, EndpointState) else "The endpoint update failed."

    def _experiment_expire(
        self, backend: SageMakerModelBackend, exp: ExperimentState, generation: int, when: float
    ) -> None:
        """The scheduled end: the endpoint goes back to its pre-test configuration."""
        if not self._experiment_live(backend, exp, generation) or exp.status != "Running":
            return
        ep = getattr(backend.endpoints.get(exp.endpoint_name), "twin", None)
        if isinstance(ep, EndpointState) and ep.status != "InService":
            self.at(
                when + RETRY_SECONDS,
                lambda t: self._experiment_expire(backend, exp, generation, t),
                f"ie-end {exp.name}",
            )
            return
        exp.status_reason = "The inference experiment reached the end of its schedule."
        self._experiment_stop(backend, exp, None, "Completed", when)

    def _experiment_stop(
        self,
        backend: SageMakerModelBackend,
        exp: ExperimentState,
        config: dict[str, Any] | None,
        desired_state: str,
        when: float,
    ) -> None:
        """Move the endpoint to `config` (None: back to the pre-test config), then end the experiment."""
        exp.status, exp.modified, exp.desired_state = "Stopping", when, desired_state
        exp.generation += 1
        actions = exp.stop_actions or {}
        for variant in exp.variant_status:
            exp.variant_status[variant] = "Deleting" if actions.get(variant, "Remove") == "Remove" else "Updating"
        ep = getattr(backend.endpoints.get(exp.endpoint_name), "twin", None)
        if not isinstance(ep, EndpointState):
            self._experiment_stopped(backend, exp, True, when)
            return
        if config is None:
            target = exp.original_config or ep.config_name
            config = self.config_params(backend, target)
        elif config.get("EndpointConfigName") is None:
            self._experiment_stopped(backend, exp, True, when)  # everything retained: nothing to change on the endpoint
            return
        else:
            self.register_config(backend, config, when)
        dep = self.plan_update(ep, config["EndpointConfigName"], config, None, now=when, internal=True)
        dep.on_done = lambda ok, t: self._experiment_stopped(backend, exp, ok, t)
        self.start_update(ep, dep, config, when)

    def _experiment_stopped(self, backend: SageMakerModelBackend, exp: ExperimentState, ok: bool, when: float) -> None:
        if self.experiments(backend).get(exp.name) is not exp or exp.status != "Stopping":
            return
        actions = exp.stop_actions or {}
        exp.status, exp.modified, exp.completion = exp.desired_state, when, when
        for variant in exp.variant_status:
            exp.variant_status[variant] = "Deleted" if actions.get(variant, "Remove") == "Remove" else "InService"
        if not ok:
            ep = getattr(backend.endpoints.get(exp.endpoint_name), "twin", None)
            exp.status_reason = ep.failure_reason if isinstance(ep, EndpointState) else "The endpoint update failed."

    # ------------------------------------------------------------------ configs
    @staticmethod
    def _experiment_roles(exp: ExperimentState) -> tuple[str, str, int]:
        shadow_config = exp.params["ShadowModeConfig"]
        shadow = shadow_config["ShadowModelVariants"][0]
        return (
            shadow_config["SourceModelVariantName"],
            shadow["ShadowModelVariantName"],
            int(shadow["SamplingPercentage"]),
        )

    @staticmethod
    def _experiment_variant(variant: dict[str, Any], weight: float) -> dict[str, Any]:
        realtime = variant["InfrastructureConfig"]["RealTimeInferenceConfig"]
        return {
            "VariantName": variant["VariantName"],
            "ModelName": variant["ModelName"],
            "InstanceType": realtime["InstanceType"],
            "InitialInstanceCount": max(1, int(realtime["InstanceCount"])),
            "InitialVariantWeight": weight,
        }

    @staticmethod
    def _config_name(backend: SageMakerModelBackend, base: str) -> str:
        base = base[:56].rstrip("-")
        name, n = base, 1
        while name in backend.endpoint_configs:
            n += 1
            name = f"{base}-{n}"
        return name

    def _final_config(
        self,
        backend: SageMakerModelBackend,
        exp: ExperimentState,
        actions: dict[str, str],
        desired: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The endpoint config Promote/Remove/Retain leave; no EndpointConfigName when nothing changes."""
        source, shadow, _ = self._experiment_roles(exp)
        unknown = set(actions) - {source, shadow}
        if unknown:
            raise ValidationError(f"ModelVariantActions names variants not in the experiment: {sorted(unknown)}.")
        production_action, shadow_action = actions.get(source, "Retain"), actions.get(shadow, "Remove")
        if production_action == "Promote":
            raise ValidationError(f"Only the shadow variant can be promoted; {source} is the production variant.")
        specs = {v["VariantName"]: v for v in exp.params["ModelVariants"]}
        specs.update({v["VariantName"]: v for v in desired})
        name = self._config_name(backend, f"{exp.name}-final")
        if shadow_action == "Promote":
            if production_action != "Remove":
                raise ValidationError(
                    "Promoting the shadow variant requires the action Remove on the production variant."
                )
            return {"EndpointConfigName": name, "ProductionVariants": [self._experiment_variant(specs[shadow], 1.0)]}
        if production_action == "Remove":
            raise ValidationError("The production variant can only be removed when the shadow variant is promoted.")
        if shadow_action == "Retain":
            return {}
        return {"EndpointConfigName": name, "ProductionVariants": [self._experiment_variant(specs[source], 1.0)]}

    # ------------------------------------------------------------------ operations
    def op_start_inference_experiment(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        exp = self.experiment(backend, params["Name"])
        if exp.status != "Created":
            raise ValidationError(f'Inference experiment "{exp.arn}" cannot be started in status {exp.status}.')
        exp.start, exp.end = now, min(exp.end, now + MAX_DURATION)
        exp.generation += 1
        self._experiment_start(backend, exp, exp.generation, now)
        return {"InferenceExperimentArn": exp.arn}

    def op_stop_inference_experiment(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        exp = self.experiment(backend, params["Name"])
        desired_state = params.get("DesiredState", "Completed")
        if params.get("Reason"):
            exp.status_reason = params["Reason"]
        if exp.status in ("Creating", "Created"):
            exp.generation += 1
            exp.status, exp.modified, exp.completion = "Cancelled", now, now
            exp.variant_status = dict.fromkeys(exp.variant_status, "Deleted")
            return {"InferenceExperimentArn": exp.arn}
        if exp.status != "Running":
            raise ValidationError(f'Inference experiment "{exp.arn}" cannot be stopped in status {exp.status}.')
        ep = self.endpoint_state(backend, exp.endpoint_name)
        if ep.status != "InService":
            raise ValidationError(f'Cannot update in-progress endpoint "{ep.arn}".')
        actions = dict(params["ModelVariantActions"])
        config = self._final_config(backend, exp, actions, list(params.get("DesiredModelVariants") or []))
        source, shadow, _ = self._experiment_roles(exp)
        exp.stop_actions = {source: actions.get(source, "Retain"), shadow: actions.get(shadow, "Remove")}
        self._experiment_stop(backend, exp, config, desired_state, now)
        return {"InferenceExperimentArn": exp.arn}

    def op_update_inference_experiment(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        exp = self.experiment(backend, params["Name"])
        if exp.status in ("Creating", "Created"):
            merged = {**exp.params, **{k: v for k, v in params.items() if k != "Name"}}
            self._check_variants(backend, merged)
            schedule = params.get("Schedule")
            start, end = self._experiment_window(schedule, now) if schedule else (exp.start, exp.end)
            exp.params, exp.start, exp.end = merged, start, end
            exp.variant_status = {v["VariantName"]: "Creating" for v in merged["ModelVariants"]}
            if exp.status == "Created":
                exp.generation += 1
                generation = exp.generation
                self.at(
                    max(exp.start, now),
                    lambda t: self._experiment_start(backend, exp, generation, t),
                    f"ie-start {exp.name}",
                )
        elif exp.status == "Running":
            self._update_running(backend, exp, params, now)
        else:
            raise ValidationError(f'Inference experiment "{exp.arn}" cannot be updated in status {exp.status}.')
        exp.modified = now
        return {"InferenceExperimentArn": exp.arn}

    def _update_running(
        self, backend: SageMakerModelBackend, exp: ExperimentState, params: dict[str, Any], now: float
    ) -> None:
        """After the start only the description, the sampling percentage and the end time may change."""
        if params.get("ModelVariants") or params.get("DataStorageConfig"):
            raise ValidationError("ModelVariants and DataStorageConfig cannot be updated after the experiment started.")
        schedule = params.get("Schedule") or {}
        if schedule.get("StartTime") is not None:
            raise ValidationError("The start time cannot be updated after the experiment started.")
        if params.get("Description") is not None:
            exp.params["Description"] = params["Description"]
        shadow_config = params.get("ShadowModeConfig")
        if shadow_config:
            _, shadow, _ = self._experiment_roles(exp)
            new_shadow = shadow_config["ShadowModelVariants"][0]
            if (
                shadow_config["SourceModelVariantName"] != exp.params["ShadowModeConfig"]["SourceModelVariantName"]
                or new_shadow["ShadowModelVariantName"] != shadow
            ):
                raise ValidationError("Only the sampling percentage of the shadow variant can change after the start.")
            exp.params["ShadowModeConfig"] = shadow_config
            ep = getattr(backend.endpoints.get(exp.endpoint_name), "twin", None)
            if isinstance(ep, EndpointState):
                for fleet in ep.shadows:
                    fleet.desired_weight = fleet.current_weight = int(new_shadow["SamplingPercentage"]) / 100
        if schedule.get("EndTime") is not None:
            _, exp.end = self._experiment_window({"EndTime": schedule["EndTime"]}, now, start=exp.start)
            exp.generation += 1
            generation = exp.generation
            self.at(
                max(exp.end, now), lambda t: self._experiment_expire(backend, exp, generation, t), f"ie-end {exp.name}"
            )

    def op_delete_inference_experiment(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        exp = self.experiment(backend, params["Name"])
        if exp.status not in ("Created", *TERMINAL):
            raise ValidationError(f'Inference experiment "{exp.arn}" cannot be deleted in status {exp.status}.')
        del self.experiments(backend)[exp.name]
        return {"InferenceExperimentArn": exp.arn}

    def _describe_experiment(self, backend: SageMakerModelBackend, exp: ExperimentState) -> dict[str, Any]:
        params = exp.params
        ep = getattr(backend.endpoints.get(exp.endpoint_name), "twin", None)
        metadata: dict[str, Any] = {"EndpointName": exp.endpoint_name}
        if isinstance(ep, EndpointState):
            metadata.update({"EndpointConfigName": ep.config_name, "EndpointStatus": ep.status})
            if ep.failure_reason:
                metadata["FailureReason"] = ep.failure_reason
        out: dict[str, Any] = {
            "Arn": exp.arn,
            "Name": exp.name,
            "Type": params["Type"],
            "Schedule": {"StartTime": dt(exp.start), "EndTime": dt(exp.end)},
            "Status": exp.status,
            "CreationTime": dt(exp.created),
            "LastModifiedTime": dt(exp.modified),
            "RoleArn": params["RoleArn"],
            "EndpointMetadata": metadata,
            "ModelVariants": [
                {**v, "Status": exp.variant_status.get(v["VariantName"], "Creating")} for v in params["ModelVariants"]
            ],
            "ShadowModeConfig": params["ShadowModeConfig"],
        }
        for key in ("Description", "DataStorageConfig", "KmsKey"):
            if params.get(key) is not None:
                out[key] = params[key]
        if exp.status_reason:
            out["StatusReason"] = exp.status_reason
        if exp.completion is not None:
            out["CompletionTime"] = dt(exp.completion)
        return out

    def op_describe_inference_experiment(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        return self._describe_experiment(backend, self.experiment(backend, params["Name"]))

    def op_list_inference_experiments(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        exps = list(self.experiments(backend).values())
        filters: dict[str, Callable[[ExperimentState, Any], bool]] = {
            "NameContains": lambda e, v: v in e.name,
            "Type": lambda e, v: e.params["Type"] == v,
            "StatusEquals": lambda e, v: e.status == v,
            "CreationTimeAfter": lambda e, v: dt(e.created) > v,
            "CreationTimeBefore": lambda e, v: dt(e.created) < v,
            "LastModifiedTimeAfter": lambda e, v: dt(e.modified) > v,
            "LastModifiedTimeBefore": lambda e, v: dt(e.modified) < v,
        }
        for key, keep in filters.items():
            if params.get(key) is not None:
                exps = [e for e in exps if keep(e, params[key])]
        sort_by = params.get("SortBy", "CreationTime")
        keys: dict[str, Callable[[ExperimentState], Any]] = {"Name": lambda e: e.name, "Status": lambda e: e.status}
        exps.sort(
            key=keys.get(sort_by, lambda e: e.created), reverse=params.get("SortOrder", "Descending") == "Descending"
        )
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults") or 10)
        summaries = []
        for exp in exps[start : start + size]:
            full = self._describe_experiment(backend, exp)
            fields = ("Name", "Type", "Schedule", "Status", "StatusReason", "Description", "CreationTime")
            summary = {k: full[k] for k in fields if k in full}
            summary.update({k: full[k] for k in ("CompletionTime", "LastModifiedTime", "RoleArn") if k in full})
            summaries.append(summary)
        out: dict[str, Any] = {"InferenceExperiments": summaries}
        if start + size < len(exps):
            out["NextToken"] = str(start + size)
        return out
