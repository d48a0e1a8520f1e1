"""The instance catalog: completeness vs botocore, hardware facts, features, lookups, fit, reproducibility."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from pydantic import ValidationError

from inferops import catalog
from inferops.errors import InvalidInput
from scripts import build_catalog

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def enum() -> list[str]:
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("ProductionVariantInstanceType").enum)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    return build_catalog.build()


def _by_family(family: str) -> list[catalog.InstanceType]:
    return [t for t in catalog.all_types() if t.family == family]


# --- completeness and the build --------------------------------------------------------------------------


def test_catalog_has_exactly_the_botocore_hosting_types(enum: list[str]) -> None:
    names = [t.name for t in catalog.all_types()]
    assert len(names) == len(set(names))
    assert set(names) == set(enum)


def test_committed_catalog_is_what_the_build_produces(built: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    assert build_catalog.main(["--output", str(out)]) == 0
    committed = catalog.CATALOG_PATH.read_bytes()
    assert out.read_bytes() == committed, "stale catalog: run scripts/build_catalog.py"
    assert build_catalog.render(built) == out.read_bytes()


def test_check_flag_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "catalog.json"
    stale.write_bytes(catalog.CATALOG_PATH.read_bytes().replace(b'"ml.g5.xlarge"', b'"ml.g5.xlarge "', 1))
    assert build_catalog.main(["--check", "--output", str(stale)]) == 1
    assert build_catalog.main(["--check", "--output", str(tmp_path / "missing.json")]) == 1
    assert build_catalog.main(["--check", "--output", str(catalog.CATALOG_PATH)]) == 0


def test_catalog_file_records_its_inputs(built: dict[str, Any]) -> None:
    raw = json.loads(catalog.CATALOG_PATH.read_text())
    assert raw["schema_version"] == 1
    assert raw["botocore_version"] == botocore.__version__
    prices = json.loads((ROOT / "scripts" / "price_snapshot.json").read_text())
    assert raw["price_snapshot"] == {k: prices[k] for k in ("region", "as_of", "source")}


def test_build_fails_loudly_on_a_type_without_data(enum: list[str]) -> None:
    with pytest.raises(build_catalog.BuildError, match=r"ml\.zz9\.large"):
        build_catalog.build(enum=[*enum, "ml.zz9.large"], botocore_version="test")


def test_build_refuses_unreviewed_accelerator_memory() -> None:
    supplement = json.loads(build_catalog.SUPPLEMENT_PATH.read_text())
    supplement["accelerator_memory"]["entries"] = [
        e for e in supplement["accelerator_memory"]["entries"] if e["model"] != "A10G"
    ]
    with pytest.raises(build_catalog.BuildError, match="A10G with 22888 MiB"):
        build_catalog.build(supplement=supplement)


def test_build_refuses_a_supplement_entry_shadowing_ec2_data() -> None:
    supplement = json.loads(build_catalog.SUPPLEMENT_PATH.read_text())
    supplement["instance_types"]["ml.g5.xlarge"] = supplement["instance_types"]["ml.p3.2xlarge"]
    with pytest.raises(build_catalog.BuildError, match=r"ml\.g5\.xlarge has EC2 data and a supplement entry"):
        build_catalog.build(supplement=supplement)


def test_build_refuses_rules_for_unknown_families() -> None:
    supplement = json.loads(build_catalog.SUPPLEMENT_PATH.read_text())
    supplement["features"]["neo_target_families"]["families"].append("c5x")
    with pytest.raises(build_catalog.BuildError, match="c5x"):
        build_catalog.build(supplement=supplement)


def test_every_type_names_its_sources() -> None:
    for t in catalog.all_types():
        assert t.sources, t.name
        assert any(s.startswith(("ec2:moto-", "supplement:")) for s in t.sources), t.name
        if t.accelerator.kind != "none" and t.sources[0].startswith("ec2:"):
            assert any(s.startswith("accelerator-memory:") for s in t.sources), t.name


# --- hardware facts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ml.g5.xlarge", ("gpu", "NVIDIA", "A10G", 1, 24.0)),
        ("ml.p4d.24xlarge", ("gpu", "NVIDIA", "A100", 8, 40.0)),
        ("ml.p4de.24xlarge", ("gpu", "NVIDIA", "A100", 8, 80.0)),
        ("ml.p5.48xlarge", ("gpu", "NVIDIA", "H100", 8, 80.0)),
        ("ml.p5e.48xlarge", ("gpu", "NVIDIA", "H200", 8, 141.0)),
        ("ml.g6e.xlarge", ("gpu", "NVIDIA", "L40S", 1, 48.0)),
        ("ml.g6.12xlarge", ("gpu", "NVIDIA", "L4", 4, 24.0)),
        ("ml.g4dn.xlarge", ("gpu", "NVIDIA", "T4", 1, 16.0)),
        ("ml.p3.2xlarge", ("gpu", "NVIDIA", "V100", 1, 16.0)),
        ("ml.inf2.48xlarge", ("inferentia", "AWS", "Inferentia2", 12, 32.0)),
        ("ml.inf1.xlarge", ("inferentia", "AWS", "Inferentia", 1, 8.0)),
        ("ml.trn1.32xlarge", ("trainium", "AWS", "Trainium", 16, 32.0)),
        ("ml.trn2.48xlarge", ("trainium", "AWS", "Trainium2", 16, 96.0)),
    ],
)
def test_accelerator_spot_checks(name: str, expected: tuple[str, str, str, int, float]) -> None:
    """(kind, vendor, model, count, spec GB per device)."""
    acc = catalog.get(name).accelerator
    assert (acc.kind, acc.vendor, acc.model, acc.count, acc.memory_gib_each) == expected
    assert acc.memory_gib_total == expected[3] * expected[4]


def test_cpu_and_graviton_spot_check() -> None:
    t = catalog.get("ml.c7g.large")
    assert t.architecture == "arm64"
    assert t.accelerator.kind == "none"
    assert (t.accelerator.count, t.accelerator.memory_gib_each, t.accelerator.vendor) == (0, None, None)
    assert (t.vcpus, t.memory_gib) == (2, 4.0)
    g5 = catalog.get("ml.g5.xlarge")
    assert (g5.vcpus, g5.memory_gib, g5.local_storage_gb, g5.network) == (4, 16.0, 250, "Up to 10 Gigabit")
    assert (g5.family, g5.size, g5.generation) == ("g5", "xlarge", 5)


def test_name_parts() -> None:
    t = catalog.get("ml.p6-b200.48xlarge")
    assert (t.family, t.size, t.generation) == ("p6-b200", "48xlarge", 6)
    assert catalog.get("ml.trn1n.32xlarge").generation == 1


def test_graviton_families_are_arm64_and_the_rest_x86() -> None:
    graviton = re.compile(r"^[a-z]+\d+g[a-z]*$")  # c6g, c6gd, c6gn, c7g, m6g, m8g, r7gd, r8g ...
    families = {t.family for t in catalog.all_types()}
    assert {"c6g", "c7g", "m6g", "r6g", "c8g", "m8g", "r8g", "r7gd"} <= families
    for t in catalog.all_types():
        expected = "arm64" if graviton.match(t.family) or t.family == "p6e-gb200" else "x86_64"
        assert t.architecture == expected, t.name


def test_accelerator_totals_and_kinds_are_consistent() -> None:
    for t in catalog.all_types():
        acc = t.accelerator
        if acc.kind == "none":
            assert (acc.count, acc.memory_gib_each, acc.memory_gib_total) == (0, None, None), t.name
        else:
            assert acc.count >= 1, t.name
            assert acc.vendor, t.name
            assert acc.model, t.name
            assert acc.memory_gib_each is not None
            assert acc.memory_gib_total == acc.memory_gib_each * acc.count
        if t.family.startswith("inf"):
            assert acc.kind == "inferentia", t.name
        if t.family.startswith("trn"):
            assert acc.kind == "trainium", t.name


def test_nvidia_driver_table() -> None:
    def driver(name: str) -> tuple[str | None, str | None]:
        t = catalog.get(name)
        return t.nvidia_driver, t.cuda

    for name in ("ml.g5.xlarge", "ml.p3.2xlarge", "ml.p4d.24xlarge", "ml.g4dn.12xlarge", "ml.p2.xlarge"):
        assert driver(name) == ("470", "11.4"), name
    for name in ("ml.p5.48xlarge", "ml.p5.4xlarge", "ml.g6.xlarge"):
        assert driver(name) == ("535", "12.2"), name
    for name in ("ml.p5e.48xlarge", "ml.p5en.48xlarge"):
        assert driver(name) == ("550", "12.4"), name
    assert catalog.get("ml.g6e.xlarge").nvidia_driver is None  # not in the guide's table
    for t in catalog.all_types():
        if t.nvidia_driver is not None:
            assert t.accelerator.vendor == "NVIDIA", t.name


# --- features --------------------------------------------------------------------------------------------


def test_inf1_has_no_guardrails_or_shadow_tests() -> None:
    inf1 = _by_family("inf1")
    assert len(inf1) == 4
    assert all(not t.features.deployment_guardrails and not t.features.shadow_tests for t in inf1)
    others = [t for t in catalog.all_types() if t.family != "inf1"]
    assert all(t.features.deployment_guardrails and t.features.shadow_tests for t in others)


def test_t2_cannot_autoscale() -> None:
    t2 = _by_family("t2")
    assert t2
    assert all(not t.features.autoscaling for t in t2)
    assert all(t.features.autoscaling for t in catalog.all_types() if t.family != "t2")


def test_gpu_multi_model_only_on_single_nvidia_gpu_types() -> None:
    for t in catalog.all_types():
        acc = t.accelerator
        single_nvidia = acc.kind == "gpu" and acc.vendor == "NVIDIA" and acc.count == 1
        assert t.features.gpu_multi_model is single_nvidia, t.name
    assert catalog.get("ml.g5.xlarge").features.gpu_multi_model
    assert catalog.get("ml.p2.xlarge").features.gpu_multi_model
    assert not catalog.get("ml.g5.12xlarge").features.gpu_multi_model
    assert not catalog.get("ml.inf2.xlarge").features.gpu_multi_model  # one chip, but not a GPU
    assert not catalog.get("ml.c5.large").features.gpu_multi_model


def test_neo_targets_follow_the_guide_families() -> None:
    assert catalog.get("ml.c5.large").features.neo_target
    assert catalog.get("ml.g4dn.xlarge").features.neo_target
    assert catalog.get("ml.inf1.xlarge").features.neo_target
    assert not catalog.get("ml.c5d.large").features.neo_target  # ml_c5 is exactly the c5 family
    assert not catalog.get("ml.g5.xlarge").features.neo_target
    neo = {t.family for t in catalog.filter_types(feature="neo_target")}
    assert neo == {"c4", "c5", "m4", "m5", "p2", "p3", "g4dn", "inf1", "inf2", "trn1"}


# --- lookups ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["ml.g5.xlarge", "g5.xlarge", " ML.G5.XLARGE ", "G5.xlarge"])
def test_get_normalizes_names(spelling: str) -> None:
    assert catalog.get(spelling).name == "ml.g5.xlarge"


def test_typo_lists_close_names() -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.get("ml.g5.xlarg")
    err = info.value
    assert err.field == "instance_type"
    assert err.message.startswith("unknown instance type 'ml.g5.xlarg'; did you mean ml.g5.xlarge")
    suggestions = err.message.split("did you mean ", 1)[1].rstrip("?").split(", ")
    assert 1 <= len(suggestions) <= 3
    assert all(catalog.get(s) for s in suggestions)


@pytest.mark.parametrize("bad", ["", "   ", "quantum.computer"])
def test_unknown_or_empty_name_is_invalid_input(bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.get(bad)
    assert info.value.field == "instance_type"
    assert "did you mean" not in info.value.message


def test_loaded_once_and_frozen() -> None:
    assert catalog.all_types() is catalog.all_types()
    t = catalog.get("ml.g5.xlarge")
    with pytest.raises(ValidationError):
        t.vcpus = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        t.accelerator.count = 2  # type: ignore[misc]


def test_filters() -> None:
    gpus = catalog.filter_types(accelerator_kind="GPU")
    assert gpus
    assert all(t.accelerator.kind == "gpu" for t in gpus)
    assert catalog.filter_types(vendor="nvidia") == gpus  # every GPU here is NVIDIA
    h100 = {t.name for t in catalog.filter_types(accelerator_model="h100")}
    assert h100 == {"ml.p5.48xlarge", "ml.p5.4xlarge"}
    big = catalog.filter_types(min_accelerator_memory_gib=80)
    assert big
    assert all((t.accelerator.memory_gib_each or 0) >= 80 for t in big)
    assert "ml.p4d.24xlarge" not in {t.name for t in big}
    arm = catalog.filter_types(architecture="ARM64")
    assert arm
    assert all(t.architecture == "arm64" for t in arm)
    mme = catalog.filter_types(feature="gpu_multi_model", family="ml.g5")
    assert {t.name for t in mme} == {
        "ml.g5.xlarge",
        "ml.g5.2xlarge",
        "ml.g5.4xlarge",
        "ml.g5.8xlarge",
        "ml.g5.16xlarge",
    }
    combined = catalog.filter_types(accelerator_kind="inferentia", family="INF2", min_accelerator_memory_gib=32)
    assert len(combined) == 4
    assert catalog.filter_types(family="nope") == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"feature": "teleport"}, "feature"),
        ({"accelerator_kind": "fpga"}, "accelerator_kind"),
        ({"architecture": "riscv"}, "architecture"),
    ],
)
def test_filter_refuses_unknown_choices(kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.filter_types(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


# --- fit -------------------------------------------------------------------------------------------------


def test_70gb_model_over_8_gpus() -> None:
    results = catalog.fit(70, tensor_parallel=8)
    names = [f.instance_type for f in results]
    assert "ml.p4d.24xlarge" in names
    assert "ml.g5.xlarge" not in names
    p4d = next(f for f in results if f.instance_type == "ml.p4d.24xlarge")
    assert p4d.accelerators_used == 8
    assert p4d.memory_needed_gib_per_accelerator == pytest.approx(70 * 1.2 / 8)
    assert p4d.headroom_gib == pytest.approx(40 - 10.5)
    assert p4d.price_usd_per_hour == catalog.get("ml.p4d.24xlarge").price_usd_per_hour
    assert catalog.fits(catalog.get("ml.p4d.24xlarge"), 70, tensor_parallel=8)
    assert not catalog.fits(catalog.get("ml.g5.xlarge"), 70, tensor_parallel=8)
    assert not catalog.fits(catalog.get("ml.g5.48xlarge"), 70, tensor_parallel=8, overhead=2.0)  # 26.25 > 24


def test_fit_results_sorted_by_price_then_headroom() -> None:
    results = catalog.fit(10)
    assert results
    priced = [f for f in results if f.price_usd_per_hour is not None]
    unpriced = [f for f in results if f.price_usd_per_hour is None]
    assert results == priced + unpriced
    keys = [(f.price_usd_per_hour, -f.headroom_gib) for f in priced]
    assert keys == sorted(keys)
    assert all(f.headroom_gib >= 0 for f in results)
    assert all(catalog.fits(catalog.get(f.instance_type), 10) for f in results)
    fitting = {t.name for t in catalog.all_types() if catalog.fits(t, 10)}
    assert {f.instance_type for f in results} == fitting


def test_fit_agrees_with_memory_arithmetic() -> None:
    # 20 GB * 1.2 = 24 GB: exactly an A10G or L4; a T4 (16 GB) is too small.
    names = {f.instance_type for f in catalog.fit(20)}
    assert {"ml.g5.xlarge", "ml.g6.xlarge"} <= names
    assert "ml.g4dn.xlarge" not in names
    assert "ml.g5.xlarge" not in {f.instance_type for f in catalog.fit(20.01)}


def test_fit_by_accelerator_kind() -> None:
    inf = catalog.fit(20, tensor_parallel=2, accelerator_kind="Inferentia")
    assert inf
    assert all(catalog.get(f.instance_type).accelerator.kind == "inferentia" for f in inf)
    assert all(catalog.get(f.instance_type).accelerator.count >= 2 for f in inf)
    assert catalog.fit(10_000) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((0,), {}, "model_gb"),
        ((-5,), {}, "model_gb"),
        ((float("nan"),), {}, "model_gb"),
        ((True,), {}, "model_gb"),
        ((10,), {"tensor_parallel": 0}, "tensor_parallel"),
        ((10,), {"tensor_parallel": 2.5}, "tensor_parallel"),
        ((10,), {"overhead": -0.1}, "overhead"),
        ((10,), {"overhead": 5.5}, "overhead"),
        ((10,), {"accelerator_kind": "tpu"}, "accelerator_kind"),
    ],
)
def test_fit_validates_inputs(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.fit(*args, **kwargs)
    assert info.value.field == field


def test_fits_validates_inputs_too() -> None:
    with pytest.raises(InvalidInput) as info:
        catalog.fits(catalog.get("ml.g5.xlarge"), 10, tensor_parallel=0)
    assert info.value.field == "tensor_parallel"


# --- prices ----------------------------------------------------------------------------------------------


@pytest.fixture
def price_snapshot() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((ROOT / "scripts" / "price_snapshot.json").read_text())
    return doc


def test_prices_come_only_from_the_snapshot(price_snapshot: dict[str, Any]) -> None:
    prices = price_snapshot["prices"]
    for t in catalog.all_types():
        assert t.price_usd_per_hour == prices.get(t.name), t.name
    assert catalog.get("ml.g5.xlarge").price_usd_per_hour == 1.408
    snap = catalog.snapshot()
    assert snap.region == "us-east-1"
    assert snap.as_of.isoformat() == price_snapshot["as_of"]
    assert snap.source == price_snapshot["source"]


def test_fleet_price() -> None:
    assert catalog.fleet_price("g5.xlarge", 2, 3) == pytest.approx(1.408 * 6)
    assert catalog.fleet_price("ml.g5.xlarge", 1) == pytest.approx(1.408)
    assert catalog.fleet_price("ml.g5.xlarge", 0) == 0
    unpriced = next(t for t in catalog.all_types() if t.price_usd_per_hour is None)
    assert catalog.fleet_price(unpriced.name, 3) is None
    with pytest.raises(InvalidInput) as info:
        catalog.fleet_price("ml.g5.xlarge", -1)
    assert info.value.field == "count"
    with pytest.raises(InvalidInput) as info:
        catalog.fleet_price("ml.g5.xlarge", 1, hours=-2)
    assert info.value.field == "hours"
    with pytest.raises(InvalidInput) as info:
        catalog.fleet_price("ml.g5.xlarg", 1)
    assert info.value.field == "instance_type"
