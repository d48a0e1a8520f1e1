"""Cold-start budget: import + init of every function in template.yaml in a fresh interpreter, against a minimal
handler (Powertools Logger + one boto3 client) measured in the same run; and the catalog's first load.

What is imported is what `sam build` deploys: each function's artifact and the layer's inferops package, built
into a temporary folder by packaging/Makefile (the source and its bytecode, compiled by this interpreter); the
layer's dependencies come from this virtualenv, bytecode included, as the build's layer-dependencies step ships
them. Lambda cannot write __pycache__ (read-only /var/task and /opt), so a package without bytecode would
compile every module on every cold start.

Run: .venv/bin/python tests/perf/bench_imports.py (`make bench`). Prints the median of RUNS fresh processes per
case, the ratio to the baseline (goal <= 1.5x) and PASS/MISS; asserts nothing. The function list comes from
template.yaml (`twin.template.Template`), so a function added there is measured without touching this file.
Each probe imports the handler module the way Lambda does (its folder and the layer on sys.path, the
function's environment variables from the template) and resolves its handler attribute; what a module does at
import (clients, config) counts, what it does on its first request does not.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from twin.template import Template  # noqa: E402

RUNS = 11
GOAL_RATIO = 1.5
GOAL_CATALOG_MS = 20.0
PROBE = """
import os, sys, time
os.environ.update({env})
sys.path[:0] = {paths}
started = time.perf_counter()
{body}
print((time.perf_counter() - started) * 1000)
"""
BASELINE = "from aws_lambda_powertools import Logger\nimport boto3\nLogger()\nboto3.client('sagemaker')"
HANDLER = "import importlib\nmodule = importlib.import_module({module!r})\ngetattr(module, {attribute!r})"
FIRST_REQUEST = """
import json
os.environ.pop("PRICE_BUCKET")  # the snapshot's prices: no S3 read
class Context:
    function_name, memory_limit_in_mb, aws_request_id = "ApiFunction", 512, "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:ApiFunction"
    def get_remaining_time_in_millis(self):
        return 29_000
event = json.loads({event!r})
event["body"] = json.dumps({{"endpoint_name": "fraud-scorer"}})
assert module.handler(event, Context())["statusCode"] == 422
"""
"""After the API's import: one POST /plans that validation refuses (no AWS call), so its models are built."""
CATALOG = (
    "from inferops import catalog\nstarted = time.perf_counter()\ncatalog.get('ml.g5.xlarge')\ncatalog.all_types()"
)


def sample(body: str, paths: list[str] | None = None, env: dict[str, str] | None = None) -> float:
    """One fresh interpreter: the milliseconds `body` took."""
    base = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}
    code = PROBE.format(env=json.dumps(env or {}), paths=json.dumps(paths or []), body=body)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=base, timeout=120
    )
    return float(out.stdout.strip().splitlines()[-1])


def measure(probes: dict[str, tuple[str, list[str], dict[str, str]]]) -> dict[str, float]:
    """Medians over RUNS rounds; each round samples every probe once, so a busy moment of a shared machine
    weighs on all of them alike instead of on whichever case ran then."""
    samples: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(RUNS):
        for name, probe in probes.items():
            samples[name].append(sample(*probe))
    return {name: statistics.median(values) for name, values in samples.items()}


def build(target: str, artifacts: Path) -> Path:
    """One packaging/Makefile target into `artifacts`, compiled by this interpreter."""
    subprocess.run(
        ["make", "--silent", "-f", str(ROOT / "packaging" / "Makefile"), target],
        check=True,
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts), "PYTHON": sys.executable},
        timeout=300,
    )
    return artifacts


def cases(built: Path, layer: str) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """One probe per template function, on its built artifact: (body, sys.path entries, environment)."""
    template = Template(ROOT / "template.yaml")
    found = {}
    for logical_id, spec in sorted(template.functions.items()):
        module, _, attribute = spec.handler.rpartition(".")
        paths = [str(build(f"build-{logical_id}", built / logical_id)), layer]
        env = {k: str(v) for k, v in spec.environment.items()}
        found[logical_id] = (HANDLER.format(module=module, attribute=attribute), paths, env)
    return found


def main() -> None:
    with tempfile.TemporaryDirectory() as built:
        layer = str(build("layer-code", Path(built) / "SharedLayer") / "python")
        functions = cases(Path(built), layer)
        api, paths, env = functions["ApiFunction"]
        event = (ROOT / "events" / "api" / "create_plan.json").read_text()
        first_request = (api + FIRST_REQUEST.format(event=event), paths, env)
        probes = {"baseline": (BASELINE, [], {}), "catalog": (CATALOG, [layer], {}), "first": first_request}
        report(measure({**probes, **functions}))


def report(results: dict[str, float]) -> None:
    """The table: each function's median against the baseline's, the API's first request, the catalog's load."""
    baseline, catalog, first = results.pop("baseline"), results.pop("catalog"), results.pop("first")
    print(f"import + init, median of {RUNS} fresh processes ({sys.version.split()[0]}; shared, loaded machine)")
    print(f"  {'baseline: Powertools Logger + one boto3 client':<48} {baseline:7.1f} ms")
    worst = 0.0
    for name, ms in results.items():
        ratio = ms / baseline
        worst = max(worst, ratio)
        verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
        print(f"  {name:<48} {ms:7.1f} ms  {ratio:4.2f}x baseline  {verdict}")
    print(f"  worst ratio {worst:.2f}x (goal <= {GOAL_RATIO}x): {'PASS' if worst <= GOAL_RATIO else 'MISS'}")
    print(
        f"  ApiFunction import + first request (POST /plans refused by validation, models built on first use): "
        f"{first:.1f} ms, {first / baseline:.2f}x baseline"
    )
    verdict = "PASS" if catalog <= GOAL_CATALOG_MS else "MISS"
    print(f"  catalog first load (every instance type): {catalog:.1f} ms (goal <= {GOAL_CATALOG_MS:.0f} ms): {verdict}")


if __name__ == "__main__":
    main()
