"""The load model of the twin: SageMaker traffic per endpoint, turned into CloudWatch metrics.

A `LoadProfile` per endpoint (rate, latency distribution, error rates, utilisation) is split over the
fleets the SageMaker simulator reports (by weight share; two fleets per variant during a blue/green
update; one entry per inference component) and each model's `ModelProfile` (the "bad model" knob) bends
its fleets' latency and errors. Every minute yields SageMaker's metrics with their real names, units and
dimension sets, written straight into moto as one-minute statistic sets (as SageMaker publishes them),
plus weighted samples so percentile alarms (p99 latency) can be evaluated. Deterministic for a seed: each
endpoint-minute draws from its own seeded generator.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twin.cloudwatch_alarms import naive_utc

SAGEMAKER = "AWS/SageMaker"
ENDPOINTS = "/aws/sagemaker/Endpoints"
_Z99 = 2.3263478740408408  # standard normal quantile of p99: lognormal sigma from p50/p99


class ServingVariantLike(Protocol):
    """One fleet serving an endpoint, as the SageMaker simulator reports it.

    During a blue/green update a variant name has two fleets (old and new endpoint config); on an
    inference-component endpoint there is one entry per component, carrying its copy count.
    """

    @property
    def variant_name(self) -> str: ...
    @property
    def endpoint_config_name(self) -> str: ...
    @property
    def model_name(self) -> str | None: ...
    @property
    def instance_type(self) -> str: ...
    @property
    def instance_count(self) -> int: ...
    @property
    def weight_share(self) -> float: ...
    @property
    def is_new_fleet(self) -> bool: ...
    @property
    def inference_component_name(self) -> str | None: ...
    @property
    def copy_count(self) -> int | None: ...


@dataclass(frozen=True)
class ServingVariant:
    """A plain ServingVariantLike, for fakes and scenarios."""

    variant_name: str
    endpoint_config_name: str
    model_name: str | None
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    weight_share: float = 1.0
    is_new_fleet: bool = False
    inference_component_name: str | None = None
    copy_count: int | None = None


# ---------------------------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class LoadProfile:
    """Traffic of one endpoint. Requests split over the serving fleets by weight share."""

    requests_per_minute: float = 600.0
    jitter: float = 0.05  # relative std-dev of the per-minute rate
    latency_p50_ms: float = 25.0  # ModelLatency, lognormal
    latency_p99_ms: float = 90.0
    overhead_p50_ms: float = 3.0  # OverheadLatency
    overhead_p99_ms: float = 9.0
    error_4xx_rate: float = 0.001
    error_5xx_rate: float = 0.0
    model_error_rate: float = 0.0
    cpu_count: int = 4  # CPUUtilization ranges 0-100 x cpu_count
    cpu_idle_percent: float = 4.0
    cpu_percent_per_rps: float = 1.5  # per instance
    memory_percent: float = 35.0
    disk_percent: float = 18.0
    gpu_count: int = 1  # GPU metrics only on GPU instance types (ml.g*, ml.p*)
    gpu_idle_percent: float = 2.0
    gpu_percent_per_rps: float = 3.0
    gpu_memory_percent: float = 45.0
    async_inference: bool = False  # requests queue; backlog metrics instead of Invocations
    async_requests_per_instance_per_minute: float = 30.0
    high_resolution: bool = False  # ConcurrentRequestsPerModel/PerCopy every 10 s


@dataclass(frozen=True)
class ModelProfile:
    """Health of one model (by model name, or inference component name): the "bad model" knob."""

    latency_multiplier: float = 1.0
    error_5xx_rate: float = 0.0  # added to the endpoint's rate
    model_error_rate: float = 0.0
    cpu_multiplier: float = 1.0

    @classmethod
    def bad(cls) -> ModelProfile:
        """A regression worth rolling back: 6x latency, 20% 5xx, 5% model errors."""
        return cls(latency_multiplier=6.0, error_5xx_rate=0.2, model_error_rate=0.05, cpu_multiplier=1.5)


class ProfileRegistry:
    """Which endpoints get traffic (and how), and how healthy each model is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._load: dict[str, LoadProfile] = {}
        self._models: dict[str, ModelProfile] = {}

    def set_load(self, endpoint_name: str, profile: LoadProfile) -> None:
        with self._lock:
            self._load[endpoint_name] = profile

    def remove_load(self, endpoint_name: str) -> None:
        with self._lock:
            self._load.pop(endpoint_name, None)

    def load(self, endpoint_name: str) -> LoadProfile | None:
        with self._lock:
            return self._load.get(endpoint_name)

    def endpoints(self) -> list[tuple[str, LoadProfile]]:
        with self._lock:
            return sorted(self._load.items())

    def set_model(self, model_name: str, profile: ModelProfile) -> None:
        with self._lock:
            self._models[model_name] = profile

    def reset_model(self, model_name: str) -> None:
        with self._lock:
            self._models.pop(model_name, None)

    def model(self, name: str | None) -> ModelProfile:
        with self._lock:
            return self._models.get(name or "", ModelProfile())


# ---------------------------------------------------------------------------------------------- traffic math
def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean < 30:
        limit, count, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            count += 1
            product *= rng.random()
        return count
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def _binomial(rng: random.Random, trials: int, p: float) -> int:
    """Binomial draw that also runs on Python 3.11 (no random.binomialvariate)."""
    if trials <= 0 or p <= 0:
        return 0
    if p >= 1:
        return trials
    if trials <= 64:
        return sum(1 for _ in range(trials) if rng.random() < p)
    mean = trials * p
    if mean < 30:
        return min(trials, _poisson(rng, mean))
    return min(trials, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split: deterministic, and the parts add up to the total."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    raw = [total * w / weight_sum for w in weights]
    parts = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (parts[i] - raw[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _lognormal(p50: float, p99: float) -> tuple[float, float]:
    mu = math.log(max(p50, 1e-9))
    return mu, max(1e-6, (math.log(max(p99, p50 * 1.0001)) - mu) / _Z99)


def _is_shadow(fleet: ServingVariantLike) -> bool:
    """A shadow variant's fleet (the simulator's `shadow_variants`): its share is mirrored, not split."""
    return bool(getattr(fleet, "shadow", False))


def _is_gpu(instance_type: str) -> bool:
    parts = instance_type.split(".")
    return len(parts) > 1 and parts[1][:1] in ("g", "p")


@dataclass
class _Traffic:
    """One minute of one fleet (or of a merged group of fleets)."""

    requests: int = 0
    served: int = 0
    e4xx: int = 0
    e5xx: int = 0
    model_errors: int = 0
    no_capacity: int = 0
    latency: list[tuple[float, float]] = field(default_factory=list)  # (microseconds, weight)
    overhead: list[tuple[float, float]] = field(default_factory=list)
    capacity: dict[tuple[str, str], int] = field(default_factory=dict)  # fleet -> instances (or copies)
    instance_type: str = ""
    cpu_multiplier: float = 1.0

    def merge(self, other: _Traffic) -> None:
        self.requests += other.requests
        self.served += other.served
        self.e4xx += other.e4xx
        self.e5xx += other.e5xx
        self.model_errors += other.model_errors
        self.no_capacity += other.no_capacity
        self.latency += other.latency
        self.overhead += other.overhead
        self.capacity.update(other.capacity)
        self.instance_type = self.instance_type or other.instance_type
        self.cpu_multiplier = max(self.cpu_multiplier, other.cpu_multiplier)

    @property
    def units(self) -> int:
        return sum(self.capacity.values())


@dataclass
class _Backlog:
    """An async endpoint's queue: (arrival time, count), oldest first."""

    items: list[tuple[float, int]] = field(default_factory=list)

    def add(self, when: float, count: int) -> None:
        if count > 0:
            bisect.insort(self.items, (when, count))

    def take(self, capacity: int, upto: float) -> int:
        taken = 0
        while self.items and self.items[0][0] <= upto and taken < capacity:
            when, count = self.items[0]
            used = min(count, capacity - taken)
            taken += used
            if used == count:
                self.items.pop(0)
            else:
                self.items[0] = (when, count - used)
        return taken

    def size(self, upto: float) -> int:
        return sum(count for when, count in self.items if when <= upto)

    def oldest(self, upto: float) -> float | None:
        return next((when for when, _ in self.items if when <= upto), None)


# ---------------------------------------------------------------------------------------------- the generator
class TrafficModel:
    """Turns load profiles and the simulator's fleets into one minute (or 10 s) of SageMaker metrics."""

    def __init__(self, profiles: ProfileRegistry, seed: int) -> None:
        self.profiles = profiles
        self.seed = seed
        self._backlogs: dict[str, _Backlog] = {}

    def add_backlog(self, endpoint: str, when: float, count: int) -> None:
        self._backlogs.setdefault(endpoint, _Backlog()).add(when, count)

    def backlog(self, endpoint: str) -> int:
        backlog = self._backlogs.get(endpoint)
        return backlog.size(math.inf) if backlog else 0

    def datums(
        self, endpoint: str, profile: LoadProfile, fleets: list[ServingVariantLike], boundary: float, *, minute: bool
    ) -> list[Any]:
        """The metrics published at `boundary`: the minute before it, and/or its last 10 s (high resolution)."""
        datums: list[Any] = []
        if minute:
            rng = random.Random(f"{self.seed}|{endpoint}|{int(boundary)}")
            if profile.async_inference:
                datums += self._async_minute(endpoint, profile, fleets, boundary, rng)
            else:
                datums += self._realtime_minute(endpoint, profile, fleets, boundary, rng)
        if profile.high_resolution and not profile.async_inference:
            rng = random.Random(f"{self.seed}|{endpoint}|hr|{int(boundary)}")
            datums += self._concurrency(endpoint, profile, fleets, boundary, rng)
        return datums

    def _serve(self, profile: LoadProfile, fleet: ServingVariantLike, requests: int, rng: random.Random) -> _Traffic:
        health = self.profiles.model(fleet.model_name or fleet.inference_component_name)
        component = fleet.inference_component_name
        units = (fleet.copy_count or 0) if component else fleet.instance_count
        traffic = _Traffic(requests=requests, instance_type=fleet.instance_type, cpu_multiplier=health.cpu_multiplier)
        traffic.capacity[(fleet.variant_name, component or fleet.endpoint_config_name)] = units
        if requests <= 0:
            return traffic
        if units <= 0:
            traffic.no_capacity = requests
            return traffic
        traffic.served = requests
        traffic.e4xx = _binomial(rng, requests, profile.error_4xx_rate)
        traffic.e5xx = _binomial(rng, requests, min(1.0, profile.error_5xx_rate + health.error_5xx_rate))
        traffic.model_errors = _binomial(rng, requests, min(1.0, profile.model_error_rate + health.model_error_rate))
        samples = min(requests, 24)
        weight = requests / samples
        mu, sigma = _lognormal(
            profile.latency_p50_ms * health.latency_multiplier, profile.latency_p99_ms * health.latency_multiplier
        )
        traffic.latency = [(rng.lognormvariate(mu, sigma) * 1000.0, weight) for _ in range(samples)]
        mu, sigma = _lognormal(profile.overhead_p50_ms, profile.overhead_p99_ms)
        traffic.overhead = [(rng.lognormvariate(mu, sigma) * 1000.0, weight) for _ in range(samples)]
        return traffic

    def _realtime_minute(
        self, endpoint: str, profile: LoadProfile, fleets: list[ServingVariantLike], boundary: float, rng: random.Random
    ) -> list[Any]:
        rate = profile.requests_per_minute * max(0.0, 1.0 + profile.jitter * rng.gauss(0.0, 1.0))
        serving = [f for f in fleets if not _is_shadow(f)]
        counts = _split(_poisson(rng, rate), [max(0.0, f.weight_share) for f in serving])
        shadows = [f for f in fleets if _is_shadow(f)]
        if shadows:  # a shadow variant gets a copy of a sample of the production requests (its sampling share)
            mirrored = [_binomial(rng, sum(counts), min(1.0, max(0.0, f.weight_share))) for f in shadows]
            serving, counts = [*serving, *shadows], [*counts, *mirrored]
        return self._emit_minute(endpoint, profile, serving, counts, boundary, rng, asynchronous=False)

    def _async_minute(
        self, endpoint: str, profile: LoadProfile, fleets: list[ServingVariantLike], boundary: float, rng: random.Random
    ) -> list[Any]:
        backlog = self._backlogs.setdefault(endpoint, _Backlog())
        rate = profile.requests_per_minute * max(0.0, 1.0 + profile.jitter * rng.gauss(0.0, 1.0))
        backlog.add(boundary - 30, _poisson(rng, rate))
        instances = {(f.variant_name, f.endpoint_config_name): f.instance_count for f in fleets}
        total_instances = sum(instances.values())
        processed = backlog.take(int(total_instances * profile.async_requests_per_instance_per_minute), boundary)
        counts = _split(processed, [f.instance_count * max(0.0, f.weight_share) for f in fleets])
        datums = self._emit_minute(endpoint, profile, fleets, counts, boundary, rng, asynchronous=True)
        waiting = backlog.size(boundary)
        oldest = backlog.oldest(boundary)
        stamp = boundary - 60
        dims = [("EndpointName", endpoint)]
        per_instance = waiting / total_instances if total_instances else float(waiting)
        for name, value, unit in (
            ("ApproximateBacklogSize", float(waiting), "Count"),
            ("ApproximateBacklogSizePerInstance", per_instance, "Count"),
            ("ApproximateAgeOfOldestRequest", boundary - oldest if oldest is not None else 0.0, "Seconds"),
            ("HasBacklogWithoutCapacity", 1.0 if waiting and not total_instances else 0.0, "Count"),
        ):
            datums.append(_value_datum(SAGEMAKER, name, dims, stamp, value, unit))
        return datums

    def _emit_minute(
        self,
        endpoint: str,
        profile: LoadProfile,
        fleets: list[ServingVariantLike],
        counts: list[int],
        boundary: float,
        rng: random.Random,
        *,
        asynchronous: bool,
    ) -> list[Any]:
        """Group the fleets' minute by dimension set and write each group's metrics."""
        by_variant: dict[str, _Traffic] = {}
        by_config: dict[tuple[str, str], _Traffic] = {}
        by_component: dict[str, _Traffic] = {}
        for fleet, requests in zip(fleets, counts, strict=True):
            traffic = self._serve(profile, fleet, requests, rng)
            instances = _Traffic(instance_type=fleet.instance_type, cpu_multiplier=traffic.cpu_multiplier)
            instances.capacity[(fleet.variant_name, fleet.endpoint_config_name)] = fleet.instance_count
            for group in (
                by_variant.setdefault(fleet.variant_name, _Traffic()),
                by_config.setdefault((fleet.variant_name, fleet.endpoint_config_name), _Traffic()),
            ):
                group.merge(replace(traffic, capacity={}))
                group.merge(instances)
            if fleet.inference_component_name:
                by_component.setdefault(fleet.inference_component_name, _Traffic()).merge(traffic)
        stamp = boundary - 60
        datums: list[Any] = []
        for variant, traffic in sorted(by_variant.items()):
            dims = [("EndpointName", endpoint), ("VariantName", variant)]
            datums += _invocation_metrics(dims, traffic, stamp, "InvocationsPerInstance", asynchronous)
            datums += _instance_metrics(dims, traffic, profile, stamp, rng)
        for (variant, config), traffic in sorted(by_config.items()):
            dims = [("EndpointName", endpoint), ("VariantName", variant), ("EndpointConfigName", config)]
            datums += _invocation_metrics(dims, traffic, stamp, "InvocationsPerInstance", asynchronous)
        for component, traffic in sorted(by_component.items()):
            dims = [("InferenceComponentName", component)]
            datums += _invocation_metrics(dims, traffic, stamp, "InvocationsPerCopy", asynchronous)
            if traffic.no_capacity:
                n = float(traffic.no_capacity)
                datums.append(
                    _stat_datum(SAGEMAKER, "NoCapacityInvocationFailures", dims, stamp, n, n, 1.0, 1.0, "Count")
                )
        return datums

    def _concurrency(
        self, endpoint: str, profile: LoadProfile, fleets: list[ServingVariantLike], boundary: float, rng: random.Random
    ) -> list[Any]:
        """High-resolution concurrency (Little's law: rate x mean latency), every 10 s."""
        stamp = boundary - 10
        fleets = [f for f in fleets if not _is_shadow(f)]  # mirrored requests are not the callers' concurrency
        total_share = sum(max(0.0, f.weight_share) for f in fleets)
        variants: dict[str, tuple[float, int]] = {}
        datums = []
        for fleet in fleets:
            share = max(0.0, fleet.weight_share) / total_share if total_share else 0.0
            health = self.profiles.model(fleet.model_name or fleet.inference_component_name)
            mu, sigma = _lognormal(
                profile.latency_p50_ms * health.latency_multiplier, profile.latency_p99_ms * health.latency_multiplier
            )
            in_flight = profile.requests_per_minute / 60.0 * share * math.exp(mu + sigma * sigma / 2) / 1000.0
            in_flight *= max(0.0, 1.0 + profile.jitter * rng.gauss(0.0, 1.0))
            concurrency, instances = variants.get(fleet.variant_name, (0.0, 0))
            variants[fleet.variant_name] = (concurrency + in_flight, instances + fleet.instance_count)
            if fleet.inference_component_name and fleet.copy_count:
                dims = [("InferenceComponentName", fleet.inference_component_name)]
                datums.append(
                    _value_datum(
                        SAGEMAKER, "ConcurrentRequestsPerCopy", dims, stamp, in_flight / fleet.copy_count, "None"
                    )
                )
        for variant, (concurrency, instances) in sorted(variants.items()):
            if instances:
                dims = [("EndpointName", endpoint), ("VariantName", variant)]
                datums.append(
                    _value_datum(SAGEMAKER, "ConcurrentRequestsPerModel", dims, stamp, concurrency / instances, "None")
                )
        return datums


# ---------------------------------------------------------------------------------------------- datums
def _stat_datum(
    namespace: str,
    name: str,
    dims: list[tuple[str, str]],
    stamp: float,
    count: float,
    total: float,
    minimum: float,
    maximum: float,
    unit: str,
    samples: Sequence[tuple[float, float]] = (),
) -> Any:
    """A one-minute statistic set, as SageMaker publishes; `twin_samples` keeps percentiles computable."""
    from moto.cloudwatch.models import MetricAggregatedDatum

    datum = MetricAggregatedDatum(
        namespace=namespace,
        name=name,
        min_stat=minimum,
        max_stat=maximum,
        sample_count=count,
        sum_stat=total,
        dimensions=[{"Name": k, "Value": v} for k, v in dims],
        timestamp=naive_utc(stamp),
        unit=unit,
    )
    datum.twin_samples = tuple(samples)  # type: ignore[attr-defined]
    return datum


def _value_datum(namespace: str, name: str, dims: list[tuple[str, str]], stamp: float, value: float, unit: str) -> Any:
    return _stat_datum(namespace, name, dims, stamp, 1.0, value, value, value, unit, ((value, 1.0),))


def _rate_datum(name: str, dims: list[tuple[str, str]], stamp: float, events: int, requests: int) -> Any:
    """A per-request 0/1 metric (errors): Sum = events, Average = rate."""
    return _stat_datum(
        SAGEMAKER,
        name,
        dims,
        stamp,
        float(requests),
        float(events),
        0.0 if events < requests else 1.0,
        1.0 if events else 0.0,
        "None",
        ((0.0, float(requests - events)), (1.0, float(events))),
    )


def _latency_datum(name: str, dims: list[tuple[str, str]], stamp: float, samples: list[tuple[float, float]]) -> Any:
    count = sum(w for _, w in samples)
    values = [v for v, _ in samples]
    total = sum(v * w for v, w in samples)
    return _stat_datum(SAGEMAKER, name, dims, stamp, count, total, min(values), max(values), "Microseconds", samples)


def _invocation_metrics(
    dims: list[tuple[str, str]], traffic: _Traffic, stamp: float, per_unit: str, asynchronous: bool
) -> list[Any]:
    """Invocation metrics of one dimension set (async endpoints publish InvocationsProcesssed instead)."""
    datums = []
    units = traffic.units
    served = traffic.served
    if asynchronous:
        if served:
            n = float(served)
            datums.append(_stat_datum(SAGEMAKER, "InvocationsProcesssed", dims, stamp, n, n, 1.0, 1.0, "Count"))
    elif served or units:
        n = float(served)
        share = 1.0 / units if units else 0.0
        datums.append(
            _stat_datum(
                SAGEMAKER, "Invocations", dims, stamp, max(n, 1.0), n, 1.0 if n else 0.0, 1.0 if n else 0.0, "None"
            )
        )
        datums.append(
            _stat_datum(
                SAGEMAKER,
                per_unit,
                dims,
                stamp,
                max(n, 1.0),
                n * share,
                share if n else 0.0,
                share if n else 0.0,
                "None",
            )
        )
    if not served:
        return datums
    datums.append(_latency_datum("ModelLatency", dims, stamp, traffic.latency))
    if not asynchronous:
        datums.append(_latency_datum("OverheadLatency", dims, stamp, traffic.overhead))
    datums.append(_rate_datum("Invocation4XXErrors", dims, stamp, traffic.e4xx, served))
    datums.append(_rate_datum("Invocation5XXErrors", dims, stamp, traffic.e5xx, served))
    datums.append(_rate_datum("InvocationModelErrors", dims, stamp, traffic.model_errors, served))
    return datums


def _instance_metrics(
    dims: list[tuple[str, str]], traffic: _Traffic, profile: LoadProfile, stamp: float, rng: random.Random
) -> list[Any]:
    """/aws/sagemaker/Endpoints utilisation: one sample per instance, CPU/GPU scaled by per-instance load."""
    instances = traffic.units
    if instances <= 0:
        return []
    per_instance_rps = traffic.served / 60.0 / instances
    cpu = profile.cpu_idle_percent + profile.cpu_percent_per_rps * per_instance_rps * traffic.cpu_multiplier
    metrics = [
        ("CPUUtilization", cpu, 100.0 * profile.cpu_count),
        ("MemoryUtilization", profile.memory_percent, 100.0),
        ("DiskUtilization", profile.disk_percent, 100.0),
    ]
    if _is_gpu(traffic.instance_type):
        gpu = profile.gpu_idle_percent + profile.gpu_percent_per_rps * per_instance_rps * traffic.cpu_multiplier
        metrics += [
            ("GPUUtilization", gpu, 100.0 * profile.gpu_count),
            ("GPUMemoryUtilization", profile.gpu_memory_percent, 100.0 * profile.gpu_count),
        ]
    datums = []
    for name, level, ceiling in metrics:
        values = [min(ceiling, max(0.0, level * (1.0 + 0.03 * rng.gauss(0.0, 1.0)))) for _ in range(instances)]
        datums.append(
            _stat_datum(
                ENDPOINTS,
                name,
                dims,
                stamp,
                float(instances),
                sum(values),
                min(values),
                max(values),
                "Percent",
                [(v, 1.0) for v in values],
            )
        )
    return datums
