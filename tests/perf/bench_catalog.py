"""Benchmark: how long the catalog takes to load and validate (goal: <= 20 ms), and how fast lookups are.

Not a pytest test (pytest collects test_*.py only). Run: .venv/bin/python tests/perf/bench_catalog.py
Each load runs in a fresh interpreter so import and cache effects are measured as a cold Lambda sees them.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "layers" / "shared"))

from inferops import catalog  # noqa: E402

_COLD = """
import json, time
t = time.perf_counter()
from pydantic import BaseModel, ConfigDict, Field
t0 = time.perf_counter()
from inferops import catalog
t1 = time.perf_counter()
catalog.all_types()
t2 = time.perf_counter()
print(json.dumps({"pydantic_ms": (t0 - t) * 1e3, "import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3}))
"""


def _cold_run() -> dict[str, float]:
    env_path = str(ROOT / "layers" / "shared")
    out = subprocess.run(
        [sys.executable, "-c", _COLD],
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    runs = [_cold_run() for _ in range(7)]
    load = [r["load_ms"] for r in runs]
    imp = [r["import_ms"] for r in runs]
    pyd = [r["pydantic_ms"] for r in runs]
    size_kb = catalog.CATALOG_PATH.stat().st_size / 1024
    print(f"catalog file: {size_kb:.0f} KiB, {len(catalog.all_types())} instance types")
    print(f"cold load+validate: median {statistics.median(load):.2f} ms, max {max(load):.2f} ms (goal <= 20 ms)")
    print(f"import pydantic BaseModel (shared by the whole layer): median {statistics.median(pyd):.2f} ms")
    print(f"import inferops.catalog (model classes): median {statistics.median(imp):.2f} ms")

    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        catalog.get("g5.xlarge")
    get_us = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for _ in range(50):
        catalog.fit(70, tensor_parallel=8)
    fit_ms = (time.perf_counter() - t0) / 50 * 1e3
    t0 = time.perf_counter()
    for _ in range(50):
        catalog.filter_types(accelerator_kind="gpu", min_accelerator_memory_gib=40)
    filter_ms = (time.perf_counter() - t0) / 50 * 1e3
    print(f"get(): {get_us:.2f} us, fit(): {fit_ms:.3f} ms, filter_types(): {filter_ms:.3f} ms")


if __name__ == "__main__":
    main()
