#!/usr/bin/env python3
"""Generate layers/shared/inferops/data/catalog.json from public data, reproducibly.

Inputs (all local, no network):
  * botocore's SageMaker model: the `ProductionVariantInstanceType` enum decides which types exist;
  * moto's copy of EC2 DescribeInstanceTypes (`moto/ec2/resources/instance_types.json.gz`): vCPUs, memory,
    GPUs / Neuron devices, architecture, instance storage, network, joined on the name without "ml.";
  * scripts/catalog_supplement.json: types EC2 data lacks, accelerator memory spec figures, the guide's
    NVIDIA driver table and the feature rules, each with its source;
  * scripts/price_snapshot.json: a dated on-demand price snapshot (prices absent there stay null).

The output has sorted keys, a stable order and no timestamps, so a rerun reproduces it byte for byte.
`--check` exits 1 when the committed file differs from what this would write. A type in the enum that has
neither EC2 data nor a supplement entry, or an accelerator memory figure nobody reviewed, fails the build.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import botocore
import botocore.session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "shared"))

from inferops.catalog import SCHEMA_VERSION, CatalogFile  # noqa: E402

SUPPLEMENT_PATH = ROOT / "scripts" / "catalog_supplement.json"
PRICES_PATH = ROOT / "scripts" / "price_snapshot.json"
OUTPUT_PATH = ROOT / "layers" / "shared" / "inferops" / "data" / "catalog.json"

_FAMILY_RE = re.compile(r"^ml\.(?P<family>[a-z]+(?P<gen>\d+)[a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")


class BuildError(Exception):
    """The inputs are incomplete or inconsistent; the message says what to add or fix."""


def sagemaker_instance_types() -> tuple[str, list[str]]:
    """The botocore version and its hosting instance-type enum."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.shape_for("ProductionVariantInstanceType")
    enum: list[str] = list(getattr(shape, "enum", []))
    if not enum:
        raise BuildError("botocore's sagemaker model has no ProductionVariantInstanceType enum")
    return botocore.__version__, enum


def ec2_instance_types() -> tuple[str, dict[str, Any]]:
    """moto's version and its EC2 instance-type specs, found without importing moto."""
    spec = importlib.util.find_spec("moto")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("moto is not installed; it ships the EC2 instance-type data (pip install moto)")
    resources = Path(next(iter(spec.submodule_search_locations))) / "ec2" / "resources"
    plain, packed = resources / "instance_types.json", resources / "instance_types.json.gz"
    if plain.exists():
        data = json.loads(plain.read_bytes())
    elif packed.exists():
        data = json.loads(gzip.decompress(packed.read_bytes()))
    else:
        raise BuildError(f"no instance_types.json(.gz) under {resources}")
    return importlib.metadata.version("moto"), data


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _gib(mib: int) -> float:
    return mib / 1024


class _Builder:
    def __init__(self, supplement: Mapping[str, Any], prices: Mapping[str, Any], moto_version: str) -> None:
        self.types_sup: dict[str, Any] = {k: v for k, v in supplement["instance_types"].items() if k != "_about"}
        self.mem_spec: dict[tuple[str, int], dict[str, Any]] = {
            (e["model"], e["ec2_mib"]): e for e in supplement["accelerator_memory"]["entries"]
        }
        drivers = supplement["nvidia_drivers"]
        self.driver_source: str = drivers["source"]
        self.drivers: dict[str, tuple[str, str]] = {
            fam: (row["driver"], row["cuda"]) for row in drivers["rows"] for fam in row["families"]
        }
        feats = supplement["features"]
        self.no_guardrails = set(feats["no_deployment_guardrails_families"]["families"])
        self.no_shadow = set(feats["no_shadow_tests_families"]["families"])
        self.no_autoscaling = set(feats["no_autoscaling_families"]["families"])
        self.no_components = set(feats["no_inference_components_families"]["families"])
        self.neo = set(feats["neo_target_families"]["families"])
        self.prices: dict[str, float] = dict(prices["prices"])
        self.price_tag = f"price:{prices['region']} snapshot {prices['as_of']}"
        self.ec2_tag = f"ec2:moto-{moto_version}"

    def rule_families(self) -> set[str]:
        return (
            set(self.drivers)
            | self.no_guardrails
            | self.no_shadow
            | self.no_autoscaling
            | self.no_components
            | self.neo
        )

    def _accelerator_from_ec2(self, name: str, ec2: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        if gpu_info := ec2.get("GpuInfo"):
            gpus = gpu_info["Gpus"]
            if len(gpus) != 1:
                raise BuildError(f"{name}: {len(gpus)} GPU kinds in EC2 data; the catalog models one")
            dev = gpus[0]
            kind, vendor = "gpu", dev["Manufacturer"]
        elif neuron := ec2.get("NeuronInfo") or ec2.get("InferenceAcceleratorInfo"):
            devices = neuron.get("NeuronDevices") or neuron.get("Accelerators")
            if len(devices) != 1:
                raise BuildError(f"{name}: {len(devices)} accelerator kinds in EC2 data; the catalog models one")
            dev = devices[0]
            if dev["Name"].startswith("Inferentia"):
                kind = "inferentia"
            elif dev["Name"].startswith("Trainium"):
                kind = "trainium"
            else:
                raise BuildError(f"{name}: unknown Neuron device {dev['Name']!r}")
            vendor = dev.get("Manufacturer", "AWS")
        else:
            none = {"kind": "none", "vendor": None, "model": None, "count": 0}
            return {**none, "memory_gib_each": None, "memory_gib_total": None}, []
        model, count, mib = dev["Name"], dev["Count"], dev["MemoryInfo"]["SizeInMiB"]
        spec = self.mem_spec.get((model, mib))
        if spec is None:
            raise BuildError(
                f"{name}: EC2 reports {model} with {mib} MiB; add its spec figure to "
                f"accelerator_memory in {SUPPLEMENT_PATH.name} (with a source)"
            )
        each = float(spec["spec_gb"])
        accel = {
            "kind": kind,
            "vendor": vendor,
            "model": model,
            "count": count,
            "memory_gib_each": each,
            "memory_gib_total": each * count,
        }
        return accel, [f"accelerator-memory:{model} {spec['spec_gb']:g} GB ({spec['source']})"]

    def _from_ec2(self, name: str, ec2: Mapping[str, Any]) -> dict[str, Any]:
        archs = ec2["ProcessorInfo"]["SupportedArchitectures"]
        if "arm64" in archs:
            arch = "arm64"
        elif "x86_64" in archs:
            arch = "x86_64"
        else:
            raise BuildError(f"{name}: unsupported architectures {archs}")
        accel, notes = self._accelerator_from_ec2(name, ec2)
        return {
            "vcpus": ec2["VCpuInfo"]["DefaultVCpus"],
            "memory_gib": _gib(ec2["MemoryInfo"]["SizeInMiB"]),
            "architecture": arch,
            "accelerator": accel,
            "local_storage_gb": (ec2.get("InstanceStorageInfo") or {}).get("TotalSizeInGB"),
            "network": (ec2.get("NetworkInfo") or {}).get("NetworkPerformance"),
            "sources": [self.ec2_tag, *notes],
        }

    def _from_supplement(self, name: str) -> dict[str, Any]:
        sup = self.types_sup[name]
        acc = dict(sup["accelerator"])
        each = acc.get("memory_gib_each")
        acc["memory_gib_total"] = None if each is None else float(each) * acc["count"]
        return {
            "vcpus": sup["vcpus"],
            "memory_gib": float(sup["memory_gib"]),
            "architecture": sup["architecture"],
            "accelerator": acc,
            "local_storage_gb": sup["local_storage_gb"],
            "network": sup["network"],
            "sources": [f"supplement:{sup['source']}"],
        }

    def entry(self, name: str, ec2: Mapping[str, Any] | None) -> dict[str, Any]:
        m = _FAMILY_RE.match(name)
        if m is None:
            raise BuildError(f"cannot parse instance type name {name!r}")
        family = m["family"]
        if ec2 is not None and name in self.types_sup:
            raise BuildError(f"{name} has EC2 data and a supplement entry; remove the supplement entry")
        if ec2 is not None:
            base = self._from_ec2(name, ec2)
        elif name in self.types_sup:
            base = self._from_supplement(name)
        else:
            raise BuildError("unreachable")  # caller checks coverage first
        acc = base["accelerator"]
        driver, cuda = self.drivers.get(family, (None, None))
        sources: list[str] = base.pop("sources")
        if driver is not None:
            sources.append(self.driver_source)
        price = self.prices.get(name)
        if price is not None:
            sources.append(self.price_tag)
        features = {
            "deployment_guardrails": family not in self.no_guardrails,
            "shadow_tests": family not in self.no_shadow,
            "autoscaling": family not in self.no_autoscaling,
            "inference_components": family not in self.no_components,
            "gpu_multi_model": acc["kind"] == "gpu" and acc["vendor"] == "NVIDIA" and acc["count"] == 1,
            "neo_target": family in self.neo,
        }
        return {
            "name": name,
            "family": family,
            "size": m["size"],
            "generation": int(m["gen"]),
            **base,
            "nvidia_driver": driver,
            "cuda": cuda,
            "features": features,
            "price_usd_per_hour": price,
            "sources": sources,
        }


def build(
    *,
    enum: Sequence[str] | None = None,
    botocore_version: str | None = None,
    ec2: Mapping[str, Any] | None = None,
    moto_version: str | None = None,
    supplement: Mapping[str, Any] | None = None,
    prices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The catalog document; every input can be injected so tests can exercise the failure paths."""
    if enum is None or botocore_version is None:
        botocore_version, enum = sagemaker_instance_types()
    if ec2 is None or moto_version is None:
        moto_version, ec2 = ec2_instance_types()
    supplement = _read_json(SUPPLEMENT_PATH) if supplement is None else supplement
    prices = _read_json(PRICES_PATH) if prices is None else prices
    builder = _Builder(supplement, prices, moto_version)

    names = sorted(set(enum))
    uncovered = [n for n in names if n.removeprefix("ml.") not in ec2 and n not in builder.types_sup]
    if uncovered:
        raise BuildError(
            f"no EC2 data and no supplement entry for: {', '.join(uncovered)}; "
            f"add them to instance_types in {SUPPLEMENT_PATH.name} with a source"
        )
    stale = sorted(set(builder.types_sup) - set(names))
    if stale:
        raise BuildError(f"supplement entries not in the SageMaker enum: {', '.join(stale)}")
    families = {m["family"] for n in names if (m := _FAMILY_RE.match(n))}
    unknown = sorted(builder.rule_families() - families)
    if unknown:
        raise BuildError(f"supplement rules name families SageMaker does not offer: {', '.join(unknown)}")

    entries = [builder.entry(n, ec2.get(n.removeprefix("ml."))) for n in names]
    entries.sort(key=lambda e: (e["family"], e["vcpus"], e["accelerator"]["count"], e["memory_gib"], e["name"]))
    doc = {
        "schema_version": SCHEMA_VERSION,
        "botocore_version": botocore_version,
        "price_snapshot": {"region": prices["region"], "as_of": prices["as_of"], "source": prices["source"]},
        "instance_types": entries,
    }
    # Validate against the runtime models here, so the layer can trust the file it ships.
    return CatalogFile.model_validate(doc).model_dump(mode="json")


def render(doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def summary(doc: Mapping[str, Any]) -> str:
    types = doc["instance_types"]
    ec2 = sum(1 for t in types if any(s.startswith("ec2:") for s in t["sources"]))
    priced = sum(1 for t in types if t["price_usd_per_hour"] is not None)
    return (
        f"{len(types)} instance types ({ec2} from EC2 data, {len(types) - ec2} from the supplement), "
        f"{priced} priced ({doc['price_snapshot']['region']}, {doc['price_snapshot']['as_of']})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed catalog is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH, help="where to write (default: the layer)")
    args = parser.parse_args(argv)
    try:
        doc = build()
    except BuildError as exc:
        print(f"build_catalog: {exc}", file=sys.stderr)
        return 2
    data = render(doc)
    out: Path = args.output
    if args.check:
        if not out.exists() or out.read_bytes() != data:
            print(f"build_catalog: {out} is stale; run python scripts/build_catalog.py", file=sys.stderr)
            return 1
        print(f"build_catalog: {out} is up to date: {summary(doc)}")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"build_catalog: wrote {out}: {summary(doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
