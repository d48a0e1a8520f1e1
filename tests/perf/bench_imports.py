"""Cold-start cost of the API handler: import + init in a fresh interpreter, against a minimal baseline.

Prints the median of several fresh processes for each; run with `make bench`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = 7
PROBE = """
import time
started = time.perf_counter()
{body}
print((time.perf_counter() - started) * 1000)
"""
CASES = {
    "baseline: Powertools Logger + one boto3 client": (
        "from aws_lambda_powertools import Logger\nimport boto3\nLogger()\nboto3.client('sagemaker')"
    ),
    "API handler module (functions/api/app.py)": (
        "import sys\nsys.path.insert(0, {root!r})\nfrom twin.lambdas import load_function\nload_function('api')"
    ),
    "API handler + first catalog call": (
        "import sys\nsys.path.insert(0, {root!r})\nfrom twin.lambdas import load_function\n"
        "load_function('api')\nfrom inferops import catalog\ncatalog.get('ml.g5.xlarge')"
    ),
}


def measure(body: str) -> float:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "PYTHONDONTWRITEBYTECODE": "1"}
    samples = []
    for _ in range(RUNS):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(body=body.format(root=str(ROOT)))],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def main() -> None:
    results = {name: measure(body) for name, body in CASES.items()}
    baseline = next(iter(results.values()))
    print(f"import + init, median of {RUNS} fresh processes ({sys.version.split()[0]})")
    for name, ms in results.items():
        print(f"  {name:<50} {ms:7.1f} ms  {ms / baseline:4.2f}x baseline")


if __name__ == "__main__":
    main()
