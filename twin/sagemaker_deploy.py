"""UpdateEndpoint as SageMaker runs it: blue/green (all at once, canary, linear) and rolling, phase by phase.

A deployment is a generator of `Wait` steps that mutates fleets and variant statuses between steps; a
driver schedules each step on the virtual clock and, during bakes, reads the rollback alarms from moto's
CloudWatch every ALARM_POLL_SECONDS. A tripped alarm, an unhealthy new model or the execution timeout
switches the driver to the strategy's rollback steps, so the endpoint ends InService on its old config
(or UpdateRollbackFailed when a rolling rollback fails too), exactly what the control plane must detect.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend

from inferops import catalog
from twin.sagemaker_base import (
    ACTIVATE_SECONDS,
    ALARM_POLL_SECONDS,
    CAPACITY_SECONDS,
    PING_FAILURE,
    TERMINATE_SECONDS,
    WEIGHTS_SECONDS,
    Deployment,
    EndpointState,
    Failed,
    Fleet,
    SimulatorBase,
    Wait,
    capacity,
    percent,
    provision_seconds,
)

VARIANT_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


class DeploymentMixin(SimulatorBase):
    """UpdateEndpoint and UpdateEndpointWeightsAndCapacities."""

    # ------------------------------------------------------------------ hooks the other parts extend
    def capacity_changed(self, ep: EndpointState, when: float) -> None:
        """Serving capacity changed (a deployment or a scaling finished): async queues and ICs react."""

    def async_test_notification(self, ep: EndpointState, async_config: dict[str, Any] | None) -> None:
        """Overridden by the async part: SageMaker's TestNotification on create/update."""

    # ------------------------------------------------------------------ UpdateEndpoint
    def op_update_endpoint(self, backend: SageMakerModelBackend, params: dict[str, Any], now: float) -> dict[str, Any]:
        ep = self.endpoint_state(backend, params["EndpointName"])
        if ep.status == "Failed":
            raise ValidationError(f'Cannot update failed endpoint "{ep.arn}".')
        if ep.status not in ("InService", "UpdateRollbackFailed"):
            raise ValidationError(f'Cannot update in-progress endpoint "{ep.arn}".')
        config_name = params["EndpointConfigName"]
        config = self.config_params(backend, config_name)
        deployment_config = params.get("DeploymentConfig")
        if deployment_config is None and params.get("RetainDeploymentConfig"):
            deployment_config = ep.last_deployment_config
        self._check_autoscaled(ep, config)
        dep = self.plan_update(
            ep,
            config_name,
            config,
            deployment_config,
            retain_all=bool(params.get("RetainAllVariantProperties")),
            exclude={p["VariantPropertyType"] for p in params.get("ExcludeRetainedVariantProperties") or []},
            now=now,
        )
        self.update_quota(ep, dep)
        self.start_update(ep, dep, config, now)
        return {"EndpointArn": ep.arn}

    def plan_update(
        self,
        ep: EndpointState,
        config_name: str,
        config: dict[str, Any],
        deployment_config: dict[str, Any] | None,
        *,
        retain_all: bool = False,
        exclude: set[str] | None = None,
        now: float,
        internal: bool = False,
    ) -> Deployment:
        """Decide how the update will run; raise ValidationException for what SageMaker refuses."""
        exclude = exclude or set()
        backend = ep.backend
        greens = [self.new_fleet(backend, config_name, spec, now) for spec in config["ProductionVariants"]]
        if retain_all:
            for green in greens:
                olds = ep.variant_fleets(green.variant)
                if not olds:
                    continue
                if "DesiredInstanceCount" not in exclude and not green.serverless:
                    green.desired_count = max(o.desired_count for o in olds)
                if "DesiredWeight" not in exclude:
                    green.desired_weight = green.current_weight = olds[0].desired_weight
        shadows = [
            self.new_fleet(backend, config_name, spec, now) for spec in config.get("ShadowProductionVariants") or []
        ]
        policy = deployment_config or {}
        staged = bool(policy.get("BlueGreenUpdatePolicy") or policy.get("RollingUpdatePolicy"))
        if staged and not internal and sorted(g.variant for g in greens) != sorted(ep.variant_names()):
            raise ValidationError(
                "The endpoint configuration for a blue/green or rolling deployment must have the same variant "
                f"names as the current endpoint configuration: {sorted(ep.variant_names())}."
            )
        if deployment_config is not None:
            self._check_deployment_config(deployment_config, greens)
        fleets = greens + ep.fleets
        excluded = any(
            (f.instance_type and not catalog.get(f.instance_type).features.deployment_guardrails)
            or self.marketplace(backend, f.model_name)
            for f in fleets
        )
        rolling = bool(policy.get("RollingUpdatePolicy"))
        if rolling and (len(greens) > 1 or any(g.serverless for g in greens)):
            excluded = True  # rolling excludes multi-variant and serverless endpoints: all-at-once instead
        guarded = deployment_config is not None and not excluded
        alarms = [a["AlarmName"] for a in (policy.get("AutoRollbackConfiguration") or {}).get("Alarms") or []]
        body = policy.get("RollingUpdatePolicy") or policy.get("BlueGreenUpdatePolicy") or {}
        max_exec = body.get("MaximumExecutionTimeoutInSeconds")
        return Deployment(
            kind="rolling" if rolling and not excluded else "blue_green",
            new_config=config_name,
            greens=greens,
            blues=list(ep.fleets),
            shadows=shadows,
            config=deployment_config,
            alarms=alarms if guarded else [],
            started=now,
            deadline=now + max_exec if guarded and max_exec else None,
            events=not excluded,
            guarded=guarded,
            retain_capture=retain_all and "DataCaptureConfig" not in exclude,
        )

    @staticmethod
    def _check_deployment_config(deployment_config: dict[str, Any], greens: list[Fleet]) -> None:
        """The bounds SageMaker enforces beyond the model: canary <= 50 %, linear 10-50 %, rolling 5-50 %."""
        blue_green = deployment_config.get("BlueGreenUpdatePolicy")
        rolling = deployment_config.get("RollingUpdatePolicy")
        if blue_green and rolling:
            raise ValidationError("Only one of BlueGreenUpdatePolicy and RollingUpdatePolicy can be specified.")
        fleet = min((g.desired_count for g in greens if not g.serverless), default=1) or 1
        if blue_green:
            routing = blue_green["TrafficRoutingConfiguration"]
            kind = routing["Type"]
            if kind == "CANARY":
                size = routing.get("CanarySize")
                if not size:
                    raise ValidationError(
                        "CanarySize must be specified when TrafficRoutingConfiguration Type is CANARY."
                    )
                if percent(size, fleet) > 50:
                    raise ValidationError(
                        f"CanarySize {size['Value']} ({size['Type']}) exceeds 50% of the new fleet's capacity "
                        f"of {fleet} instance(s)."
                    )
            if kind == "LINEAR":
                size = routing.get("LinearStepSize")
                if not size:
                    raise ValidationError(
                        "LinearStepSize must be specified when TrafficRoutingConfiguration Type is LINEAR."
                    )
                if not 10 <= percent(size, fleet) <= 50:
                    raise ValidationError(
                        f"LinearStepSize {size['Value']} ({size['Type']}) must be between 10% and 50% of the new "
                        f"fleet's capacity of {fleet} instance(s)."
                    )
        if rolling:
            size = rolling["MaximumBatchSize"]
            if not 5 <= percent(size, fleet) <= 50:
                raise ValidationError(
                    f"MaximumBatchSize {size['Value']} ({size['Type']}) must be between 5% and 50% of the "
                    f"endpoint's capacity of {fleet} instance(s)."
                )
            rollback = rolling.get("RollbackMaximumBatchSize")
            if rollback and rollback["Type"] == "CAPACITY_PERCENT" and rollback["Value"] > 100:
                raise ValidationError("RollbackMaximumBatchSize cannot exceed 100% of the endpoint's capacity.")

    def _check_autoscaled(self, ep: EndpointState, config: dict[str, Any]) -> None:
        """Changing the instance type of, or removing, an autoscaled variant fails (deregister first)."""
        targets = applicationautoscaling_backends[ep.account][ep.region].targets.get(VARIANT_DIMENSION, {})
        specs = {v["VariantName"]: v for v in config["ProductionVariants"]}
        blocked = []
        for name in ep.variant_names():
            if f"endpoint/{ep.name}/variant/{name}" not in targets:
                continue
            spec = specs.get(name)
            if spec is None or spec.get("InstanceType") != ep.variant_fleets(name)[0].instance_type:
                blocked.append(name)
        if blocked:
            raise ValidationError(
                f'The variant(s) "{blocked}" of endpoint "{ep.arn}" are registered as scalable targets with '
                "Application Auto Scaling; removing them or changing their instance type is not allowed. "
                "Deregister the scalable targets first."
            )

    def start_update(self, ep: EndpointState, dep: Deployment, config: dict[str, Any], now: float) -> None:
        ep.deployment = dep
        ep.failure_reason = None
        for blue in dep.blues:
            blue.statuses = []
        dep.steps = self._rolling_steps(ep, dep) if dep.kind == "rolling" else self._blue_green_steps(ep, dep)
        self.set_endpoint_status(ep, "Updating", now)
        self.async_test_notification(ep, config.get("AsyncInferenceConfig"))
        self.drive(ep, dep, now)

    # ------------------------------------------------------------------ the driver
    def _current(self, ep: EndpointState, dep: Deployment) -> bool:
        return self.alive(ep) and ep.deployment is dep

    def drive(self, ep: EndpointState, dep: Deployment, when: float) -> None:
        """Run the deployment up to its next wait and schedule what follows."""
        if not self._current(ep, dep):
            return
        dep.cursor = when
        if dep.deadline is not None and when > dep.deadline and not dep.rolling_back:
            self.rollback(ep, dep, self._timeout_reason(dep), when)
            return
        try:
            step = next(dep.steps)
        except StopIteration:
            return
        except Failed as failure:
            self.rollback(ep, dep, failure.reason, when)
            return
        if dep.events:
            self.deployment_event(ep, when)
        if step.bake and dep.alarms and not dep.rolling_back:
            self._bake(ep, dep, when + step.seconds, when)
        else:
            dep.timer = self.at(when + step.seconds, lambda t: self.drive(ep, dep, t), f"deploy {ep.name}")

    def _bake(self, ep: EndpointState, dep: Deployment, end: float, when: float) -> None:
        """Watch the rollback alarms until `end`; any in ALARM rolls the deployment back."""
        if not self._current(ep, dep):
            return
        dep.cursor = when
        tripped = self.tripped_alarms(ep.account, ep.region, dep.alarms)
        if tripped:
            reason = (
                f"Deployment was rolled back: the auto-rollback alarm(s) {', '.join(tripped)} went into ALARM "
                "state during the baking period."
            )
            self.rollback(ep, dep, reason, when)
            return
        if dep.deadline is not None and when > dep.deadline:
            self.rollback(ep, dep, self._timeout_reason(dep), when)
            return
        if when >= end:
            self.drive(ep, dep, when)
            return
        dep.timer = self.at(
            min(end, when + ALARM_POLL_SECONDS), lambda t: self._bake(ep, dep, end, t), f"bake {ep.name}"
        )

    @staticmethod
    def _timeout_reason(dep: Deployment) -> str:
        policy = dep.config or {}
        body = policy.get("RollingUpdatePolicy") or policy.get("BlueGreenUpdatePolicy") or {}
        seconds = body.get("MaximumExecutionTimeoutInSeconds")
        return f"Deployment was rolled back: it did not complete within MaximumExecutionTimeoutInSeconds ({seconds})."

    def rollback(self, ep: EndpointState, dep: Deployment, reason: str, when: float) -> None:
        if dep.rolling_back:
            return
        dep.rolling_back, dep.reason = True, reason
        dep.steps = self._rolling_rollback(ep, dep) if dep.kind == "rolling" else self._blue_green_rollback(ep, dep)
        self.drive(ep, dep, when)

    # ------------------------------------------------------------------ traffic
    def _members(self, ep: EndpointState, variant: str) -> list[Fleet]:
        greens = ep.deployment.greens if ep.deployment else []
        return [f for f in ep.fleets + greens if f.variant == variant]

    def _shift(self, ep: EndpointState, dep: Deployment, green: Fleet, share: float, active: int) -> None:
        """Send `share` of the variant's traffic to `active` green instances; blue keeps the rest."""
        green.traffic, green.active = share, active
        for blue in dep.blues:
            if blue.variant == green.variant:
                blue.traffic = (1.0 - share) * blue.traffic_before
                blue.active = 0 if share >= 1.0 else max(1, round(blue.provisioned * (1.0 - share)))

    def _rebalance(self, ep: EndpointState, variant: str) -> None:
        """Rolling: traffic follows active capacity."""
        members = self._members(ep, variant)
        total = sum(f.active for f in members)
        for fleet in members:
            fleet.traffic = fleet.active / total if total else 0.0

    # ------------------------------------------------------------------ blue/green
    def _provision_greens(self, dep: Deployment, ep: EndpointState | None = None) -> Iterator[Wait]:
        for green in dep.greens:
            what = "serverless capacity" if green.serverless else f"{green.desired_count} instance(s)"
            green.set_status("Creating", f"Launching {what}.", dep.cursor)
        fleets = dep.greens + dep.shadows
        yield Wait(max(provision_seconds(f.instance_type) for f in fleets))
        for fleet in fleets:
            fleet.provisioned = fleet.desired_count
            reason = self.start_fleet(ep, fleet, dep.cursor) if ep is not None else None
            if reason or not self.healthy(fleet.model_name):
                raise Failed(reason or PING_FAILURE.format(variant=fleet.variant))
            fleet.statuses = []

    def _blue_green_steps(self, ep: EndpointState, dep: Deployment) -> Iterator[Wait]:
        for blue in dep.blues:
            blue.traffic_before = blue.traffic
        yield from self._provision_greens(dep, ep)
        policy = (dep.config or {}).get("BlueGreenUpdatePolicy") or {}
        routing = policy.get("TrafficRoutingConfiguration") or {}
        kind = routing.get("Type", "ALL_AT_ONCE") if dep.guarded else "ALL_AT_ONCE"
        wait = int(routing.get("WaitIntervalInSeconds", 0))
        termination = int(policy.get("TerminationWaitInSeconds", 0))
        greens = dep.greens
        if kind == "CANARY":
            sizes = {id(g): capacity(routing["CanarySize"], g.provisioned) for g in greens}
            for g in greens:
                n = sizes[id(g)]
                self._shift(ep, dep, g, n / max(1, g.provisioned), n)
                g.set_status(
                    "ActivatingTraffic", f"Activating traffic on canary capacity of {n} instance(s).", dep.cursor
                )
            yield Wait(ACTIVATE_SECONDS)
            for g in greens:
                g.set_status(
                    "Baking",
                    f"Baking for {wait} seconds (WaitIntervalInSeconds) with traffic enabled on canary capacity of "
                    f"{sizes[id(g)]} instance(s).",
                    dep.cursor,
                )
            yield Wait(wait, bake=True)
        if kind == "LINEAR":
            steps = {id(g): capacity(routing["LinearStepSize"], g.provisioned) for g in greens}
            count = max(math.ceil(g.provisioned / steps[id(g)]) for g in greens if g.provisioned) if greens else 1
            for k in range(1, count + 1):
                labels = {}
                for g in greens:
                    n = min(g.provisioned, k * steps[id(g)])
                    labels[id(g)] = ("full" if n >= g.provisioned else "linear step", n)
                    self._shift(ep, dep, g, n / max(1, g.provisioned), n)
                    g.set_status(
                        "ActivatingTraffic",
                        f"Activating traffic on {labels[id(g)][0]} capacity of {n} instance(s).",
                        dep.cursor,
                    )
                yield Wait(ACTIVATE_SECONDS)
                for g in greens:
                    label, n = labels[id(g)]
                    g.set_status(
                        "Baking",
                        f"Baking for {wait} seconds (WaitIntervalInSeconds) with traffic enabled on {label} capacity "
                        f"of {n} instance(s).",
                        dep.cursor,
                    )
                yield Wait(wait, bake=True)
        else:
            for g in greens:
                self._shift(ep, dep, g, 1.0, g.provisioned)
                g.set_status(
                    "ActivatingTraffic",
                    f"Activating traffic on full capacity of {g.provisioned} instance(s).",
                    dep.cursor,
                )
            yield Wait(ACTIVATE_SECONDS)
            if dep.guarded:  # the final bake
                for g in greens:
                    g.set_status(
                        "Baking",
                        f"Baking for {wait} seconds (WaitIntervalInSeconds) with traffic enabled on full capacity of "
                        f"{g.provisioned} instance(s).",
                        dep.cursor,
                    )
                yield Wait(wait, bake=True)
        if dep.guarded and termination > 0:
            for g in greens:
                g.set_status(
                    "Baking",
                    f"Baking for {termination} seconds (TerminationWaitInSeconds) with traffic enabled on full "
                    f"capacity of {g.provisioned} instance(s).",
                    dep.cursor,
                )
            yield Wait(termination, bake=True)
        for g in greens:
            g.statuses = []
        for blue in dep.blues:
            blue.traffic, blue.active = 0.0, 0
            blue.set_status("Deleting", f"Terminating {blue.provisioned} instance(s).", dep.cursor)
        yield Wait(TERMINATE_SECONDS)
        self.complete_update(ep, dep, dep.cursor)

    def _blue_green_rollback(self, ep: EndpointState, dep: Deployment) -> Iterator[Wait]:
        for blue in dep.blues:
            blue.traffic = blue.traffic_before
            blue.active, blue.statuses = blue.provisioned, []
        for fleet in dep.greens + dep.shadows:
            fleet.traffic, fleet.active = 0.0, 0
            fleet.set_status(
                "Deleting", f"Terminating {fleet.provisioned or fleet.desired_count} instance(s).", dep.cursor
            )
        yield Wait(TERMINATE_SECONDS)
        self.finish_rollback(ep, dep, dep.cursor)

    # ------------------------------------------------------------------ rolling
    def _rolling_steps(self, ep: EndpointState, dep: Deployment) -> Iterator[Wait]:
        policy = (dep.config or {})["RollingUpdatePolicy"]
        wait = int(policy["WaitIntervalInSeconds"])
        green = dep.greens[0]
        blues = [b for b in dep.blues if b.variant == green.variant]
        dep.blue_total = sum(b.provisioned for b in blues)
        target = green.desired_count
        batch = capacity(policy["MaximumBatchSize"], target)
        while green.provisioned < target:
            k = min(batch, target - green.provisioned)
            green.set_status("Creating", f"Launching {k} instance(s).", dep.cursor)
            yield Wait(provision_seconds(green.instance_type))
            green.provisioned += k
            reason = self.start_fleet(ep, green, dep.cursor, first=green.provisioned - k)
            if reason:
                raise Failed(reason)
            green.active = green.provisioned
            self._rebalance(ep, green.variant)
            green.set_status("ActivatingTraffic", f"Activating traffic on {green.active} instance(s).", dep.cursor)
            yield Wait(ACTIVATE_SECONDS)
            green.set_status(
                "Baking",
                f"Baking for {wait} seconds (WaitIntervalInSeconds) with traffic enabled on {green.active} "
                "instance(s).",
                dep.cursor,
            )
            yield Wait(wait, bake=True)
            green.statuses = []
            remaining = sum(b.provisioned for b in blues)
            retire = remaining if green.provisioned >= target else min(k, remaining)
            if retire:
                yield from self._retire(ep, dep, blues, retire)
        for shadow in dep.shadows:
            shadow.provisioned = shadow.desired_count
        self.complete_update(ep, dep, dep.cursor)

    def _retire(self, ep: EndpointState, dep: Deployment, fleets: list[Fleet], count: int) -> Iterator[Wait]:
        """Take `count` instances out of traffic, terminate them, and drop them from their fleets."""
        plan: list[tuple[Fleet, int]] = []
        for fleet in fleets:
            n = min(count, fleet.provisioned)
            if n:
                plan.append((fleet, n))
                count -= n
                fleet.active = max(0, min(fleet.active, fleet.provisioned - n))
                fleet.set_status("Deleting", f"Terminating {n} instance(s).", dep.cursor)
        if not plan:
            return
        self._rebalance(ep, plan[0][0].variant)
        yield Wait(TERMINATE_SECONDS)
        for fleet, n in plan:
            fleet.provisioned -= n
            fleet.statuses = []

    def _rolling_rollback(self, ep: EndpointState, dep: Deployment) -> Iterator[Wait]:
        """Relaunch old instances and retire new ones in RollbackMaximumBatchSize batches (all at once if unset)."""
        policy = (dep.config or {})["RollingUpdatePolicy"]
        green = dep.greens[0]
        blues = [b for b in dep.blues if b.variant == green.variant]
        home = blues[0]
        target = dep.blue_total
        size = policy.get("RollbackMaximumBatchSize")
        batch = target if not size else capacity(size, target)
        green.statuses = []
        first = True
        while True:
            short = target - sum(b.provisioned for b in blues)
            if short <= 0 and green.provisioned == 0:
                break
            if short > 0:
                k = min(batch, short)
                home.set_status("Creating", f"Launching {k} instance(s).", dep.cursor)
                yield Wait(provision_seconds(home.instance_type))
                if first and ep.name in self._rollback_fails:
                    self.rollback_failed(ep, dep, dep.cursor)
                    return
                home.provisioned += k
                home.active = home.provisioned
                home.statuses = []
                self._rebalance(ep, green.variant)
            elif first and ep.name in self._rollback_fails:
                green.set_status("Deleting", f"Terminating {green.provisioned} instance(s).", dep.cursor)
                yield Wait(TERMINATE_SECONDS)
                self.rollback_failed(ep, dep, dep.cursor)
                return
            first = False
            retire = min(batch, green.provisioned)
            if retire:
                yield from self._retire(ep, dep, [green], retire)
        for blue in blues:
            blue.active = blue.provisioned
        self.finish_rollback(ep, dep, dep.cursor)

    # ------------------------------------------------------------------ outcomes
    def complete_update(self, ep: EndpointState, dep: Deployment, when: float) -> None:
        try:
            config = self.config_params(ep.backend, dep.new_config)
        except ValidationError:  # deleted while in use (AWS warns against it): keep what was planned
            config = {}
        for fleet in dep.greens + dep.shadows:
            fleet.serve_all()
            fleet.current_weight = fleet.desired_weight
        ep.fleets, ep.shadows = dep.greens, dep.shadows
        ep.config_name = dep.new_config
        ep.fake.endpoint_config_name = dep.new_config
        ep.async_config = config.get("AsyncInferenceConfig")
        ep.explainer = config.get("ExplainerConfig")
        if not dep.retain_capture:
            ep.data_capture = config.get("DataCaptureConfig")
        if dep.config is not None:
            ep.last_deployment_config = dep.config
        ep.deployment = None
        self._end(ep, dep, "InService", True, when)

    def finish_rollback(self, ep: EndpointState, dep: Deployment, when: float) -> None:
        for blue in ep.fleets:
            blue.active, blue.statuses = blue.provisioned, []
        self._settle_traffic(ep)
        ep.deployment = None
        ep.failure_reason = dep.reason
        self._end(ep, dep, "InService", False, when)

    def rollback_failed(self, ep: EndpointState, dep: Deployment, when: float) -> None:
        """Rolling deployment and its rollback both failed: old and new configs keep serving side by side."""
        serving = [f for f in dep.greens if f.provisioned > 0]
        for fleet in ep.fleets + serving:
            fleet.active, fleet.statuses = fleet.provisioned, []
            fleet.current_weight = ep.fleets[0].current_weight if ep.fleets else fleet.current_weight
        ep.fleets = [f for f in ep.fleets if f.provisioned > 0] + serving
        self._settle_traffic(ep)
        ep.deployment = None
        ep.failure_reason = (
            f"{dep.reason} The rollback failed too: the endpoint serves a mix of endpoint configurations "
            f"{ep.config_name} and {dep.new_config}. Call UpdateEndpoint with a good endpoint configuration."
        )
        self._end(ep, dep, "UpdateRollbackFailed", False, when)

    def _end(self, ep: EndpointState, dep: Deployment, status: str, deployed: bool, when: float) -> None:
        """Every ending of an update: the status, the last deployment event, the load model, the caller."""
        self.set_endpoint_status(ep, status, when)
        if dep.events:
            self.deployment_event(ep, when)
        self.capacity_changed(ep, when)
        if dep.on_done is not None:
            dep.on_done(deployed, when)

    def _settle_traffic(self, ep: EndpointState) -> None:
        for name in ep.variant_names():
            total = sum(f.active for f in ep.variant_fleets(name))
            for fleet in ep.variant_fleets(name):
                fleet.traffic = fleet.active / total if total else (1.0 if len(ep.variant_fleets(name)) == 1 else 0.0)

    # ------------------------------------------------------------------ UpdateEndpointWeightsAndCapacities
    def op_update_endpoint_weights_and_capacities(
        self, backend: SageMakerModelBackend, params: dict[str, Any], now: float
    ) -> dict[str, Any]:
        ep = self.endpoint_state(backend, params["EndpointName"])
        if ep.status != "InService":
            raise ValidationError(f'Cannot update in-progress endpoint "{ep.arn}".')
        changes: dict[str, tuple[float | None, int | None]] = {}
        for item in params["DesiredWeightsAndCapacities"]:
            name = item["VariantName"]
            if name in changes:
                raise ValidationError(f'The variant name "{name}" was non-unique within the request.')
            if name not in ep.variant_names():
                raise ValidationError(
                    f'The variant name(s) "{name}" is/are not present within endpoint configuration "{ep.config_name}".'
                )
            changes[name] = (item.get("DesiredWeight"), item.get("DesiredInstanceCount"))
        self.scale_variants(ep, changes, now)
        return {"EndpointArn": ep.arn}

    def scale_variants(
        self, ep: EndpointState, changes: dict[str, tuple[float | None, int | None]], now: float
    ) -> None:
        """A short Updating phase; desired values are visible at once, current ones when it ends."""
        wanted: dict[str, int] = {}
        for name, (_, count) in changes.items():
            fleets = ep.variant_fleets(name)
            grow = (count or 0) - sum(f.provisioned for f in fleets)
            if count is not None and grow > 0 and fleets[0].instance_type:
                wanted[fleets[0].instance_type] = wanted.get(fleets[0].instance_type, 0) + grow
        self.check_quota(ep.backend, wanted)
        resized = False
        for name, (weight, count) in changes.items():
            fleets = ep.variant_fleets(name)
            fleet = fleets[0]
            if weight is not None:
                for f in fleets:
                    f.desired_weight = float(weight)
            current = sum(f.provisioned for f in fleets)
            if count is not None and count != current and not fleet.serverless:
                fleet.desired_count = int(count)
                resized = True
                verb = "out" if count > current else "in"
                fleet.set_status("Updating", f"Scaling {verb} desired instance count to {count}.", now)
            else:
                fleet.set_status("Updating", f"Updating desired weight to {fleet.desired_weight:g}.", now)
        ep.generation += 1
        generation = ep.generation
        self.set_endpoint_status(ep, "Updating", now)
        if self._events_enabled(ep):
            self.deployment_event(ep, now)
        self.async_test_notification(ep, ep.async_config)
        delay = CAPACITY_SECONDS if resized else WEIGHTS_SECONDS
        self.at(now + delay, lambda t: self._scaled(ep, generation, t), f"scale {ep.name}")

    def _scale_rolled_back(self, ep: EndpointState, generation: int, when: float, reason: str) -> None:
        """A scale-out whose instances cannot serve: RollingBack, then InService on the capacity it had, with the
        FailureReason (what SageMaker does with a failed capacity change on an autoscaled endpoint)."""
        for fleet in ep.fleets:
            fleet.desired_count = fleet.provisioned
            fleet.desired_weight = fleet.current_weight
            fleet.statuses = []
        ep.failure_reason = reason
        self.set_endpoint_status(ep, "RollingBack", when)

        def settled(t: float) -> None:
            if self.alive(ep) and ep.generation == generation and ep.status == "RollingBack":
                self.set_endpoint_status(ep, "InService", t)

        self.at(when + CAPACITY_SECONDS, settled, f"scale rollback {ep.name}")

    def _events_enabled(self, ep: EndpointState) -> bool:
        return not any(
            (f.instance_type and not catalog.get(f.instance_type).features.deployment_guardrails)
            or self.marketplace(ep.backend, f.model_name)
            for f in ep.fleets
        )

    def _scaled(self, ep: EndpointState, generation: int, when: float) -> None:
        if not self.alive(ep) or ep.generation != generation or ep.status != "Updating" or ep.deployment:
            return
        for fleet in ep.fleets:  # new instances of an unhealthy model fail their health check: the change is undone
            if not fleet.statuses or fleet.desired_count <= fleet.provisioned:
                continue
            reason = self.start_fleet(ep, fleet, when, fleet.provisioned)
            if reason is not None:
                self._scale_rolled_back(ep, generation, when, reason)
                return
        for fleet in ep.fleets:
            fleet.current_weight = fleet.desired_weight
            if fleet.statuses:
                fleet.provisioned = fleet.desired_count
                fleet.active = fleet.provisioned
            fleet.statuses = []
        self._settle_traffic(ep)
        self.set_endpoint_status(ep, "InService", when)
        if self._events_enabled(ep):
            self.deployment_event(ep, when)
        self.capacity_changed(ep, when)
