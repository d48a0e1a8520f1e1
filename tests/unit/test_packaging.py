"""What `sam build` deploys (packaging/Makefile): every function and the layer built by their own target, the
source shipped with its bytecode, so a cold start on a read-only /var/task compiles nothing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from twin.template import load_yaml

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "packaging" / "Makefile"
BUILT_TYPES = ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
UNCHECKED_HASH = 0b01  # PEP 552 flags: hash-based, not checked against the source


def _built_resources() -> list[str]:
    resources = load_yaml((ROOT / "template.yaml").read_text())["Resources"]
    return sorted(name for name, resource in resources.items() if resource["Type"] in BUILT_TYPES)


def _make(target: str, artifacts: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--silent", *flags, "-f", str(MAKEFILE), target],
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts), "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the tests assert on the return code with make's message
    )


@pytest.mark.parametrize("logical_id", _built_resources())
def test_every_function_and_the_layer_are_built_by_packaging(logical_id: str, tmp_path: Path) -> None:
    metadata = load_yaml((ROOT / "template.yaml").read_text())["Resources"][logical_id].get("Metadata", {})
    assert {k: metadata.get(k) for k in ("BuildMethod", "ContextPath")} == {
        "BuildMethod": "makefile",
        "ContextPath": "packaging",
    }
    dry_run = _make(f"build-{logical_id}", tmp_path, "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr


def _assert_ships_bytecode(folder: Path) -> int:
    sources = [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
    for source in sources:
        compiled = Path(importlib.util.cache_from_source(str(source)))
        assert compiled.is_file(), f"{source.relative_to(folder)} has no bytecode"
        assert int.from_bytes(compiled.read_bytes()[4:8], "little") == UNCHECKED_HASH, compiled
    stray = [p for p in folder.rglob("*.pyc") if sys.implementation.cache_tag not in p.name]
    assert not stray, f"bytecode of another interpreter copied from a working tree: {stray}"
    return len(sources)


def test_a_function_artifact_ships_its_source_and_bytecode(tmp_path: Path) -> None:
    built = _make("build-ApiFunction", tmp_path / "api")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "api" / "app.py").is_file()
    assert not (tmp_path / "api" / "Makefile").exists()
    assert _assert_ships_bytecode(tmp_path / "api") == len(list((ROOT / "functions" / "api").glob("*.py")))


def test_the_layer_code_ships_the_inferops_package_and_its_bytecode(tmp_path: Path) -> None:
    built = _make("layer-code", tmp_path / "layer")
    assert built.returncode == 0, built.stderr
    package = tmp_path / "layer" / "python" / "inferops"
    assert (package / "data" / "catalog.json").is_file()
    expected = len(list((ROOT / "layers" / "shared" / "inferops").glob("*.py")))
    assert _assert_ships_bytecode(package) == expected
