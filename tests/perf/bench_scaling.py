"""Benchmark: how long an endpoint at zero takes to serve again once requests arrive, on the twin.

Not a pytest test (pytest collects test_*.py only). Run: .venv/bin/python tests/perf/bench_scaling.py
(`--quick`: the inference-component endpoint only). It prints figures and ratios; it asserts nothing.

For an inference-component endpoint (ml.g5.xlarge, one copy) and an async endpoint (ml.g5.xlarge), both enabled
through `PUT /endpoints/{name}/scale-to-zero` and left idle until they are at zero, requests arrive at t0 and the
benchmark measures the virtual seconds until capacity serves (a copy, or an instance), three ways:

- `alarm -> step policy alone`: the guide's scale-from-zero policy, InferOps' wake route removed (its alarm index
  entries deleted from the table), so only Application Auto Scaling acts on the alarm;
- `alarm -> InferOps wake`: the alarm event wakes the endpoint directly (copy count / capacity), as deployed;
- `wake request at t0`: a caller that knows traffic is coming calls `POST /endpoints/{name}/wake` with it.

Virtual seconds come from the twin's clock (provisioning 8-12 min for GPU instances, copies 4 min to load).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "layers" / "shared"))

from inferops.storage import Repository  # noqa: E402
from twin.cloudwatch_traffic import LoadProfile  # noqa: E402
from twin.demo import create_ic_endpoint, create_model  # noqa: E402
from twin.runtime import Twin  # noqa: E402

MODES = ("alarm -> step policy alone", "alarm -> InferOps wake", "wake request at t0")
QUIET = {"LogLevel": "WARNING"}


def _async_endpoint(twin: Twin, name: str) -> None:
    sagemaker = twin.client("sagemaker")
    with twin.busy():
        create_model(twin, f"{name}-v1")
        twin.client("s3").create_bucket(Bucket=f"{name}-out")
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"{name}-config",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"{name}-v1",
                    "InstanceType": "ml.g5.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
            AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{name}-out/results"}},
        )
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    twin.wait_for(lambda: sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService")
    twin.cloudwatch.set_load_profile(name, LoadProfile(requests_per_minute=10, async_inference=True))


def _view(twin: Twin, name: str) -> dict[str, Any]:
    return dict(twin.api_request("GET", f"/endpoints/{name}")[1])


def _serving(twin: Twin, name: str) -> bool:
    """Read SageMaker directly (the API's view also computes the idle cost: too slow to poll every 10 s)."""
    sagemaker = twin.client("sagemaker")
    components = sagemaker.list_inference_components(EndpointNameEquals=name)["InferenceComponents"]
    if components:
        return all(
            sagemaker.describe_inference_component(InferenceComponentName=c["InferenceComponentName"])["RuntimeConfig"][
                "CurrentCopyCount"
            ]
            >= 1
            for c in components
        )
    variants = sagemaker.describe_endpoint(EndpointName=name)["ProductionVariants"]
    return sum(int(v.get("CurrentInstanceCount", 0)) for v in variants) >= 1


def run(kind: str, mode: str, *, idle_seconds: float = 0.0) -> dict[str, Any]:
    """One wake `mode` of a `kind` endpoint, `idle_seconds` after it reached zero; the figures, and for the wake
    operation (bench_cost's rows): its state transitions, the Lambda invocations per function from t0 to its end,
    that window."""
    name = "chat" if kind == "inference-component" else "ocr"
    started = time.perf_counter()
    with redirect_stdout(StringIO()), Twin(parameters=QUIET) as twin:
        if kind == "inference-component":
            create_ic_endpoint(twin, name, f"{name}-llm")
        else:
            _async_endpoint(twin, name)
        status, enabled = twin.api_request("PUT", f"/endpoints/{name}/scale-to-zero", body={})
        assert status == 202, enabled
        twin.wait_for(lambda: (_view(twin, name)["operation"] or {}).get("status") == "SUCCEEDED", step=30)
        alarms = _view(twin, name)["scale_to_zero"]["alarms"]
        if mode == MODES[0]:
            repo = Repository(twin.template.physical("OperationsTable").ref, client=twin.client("dynamodb"))
            for alarm in alarms:
                repo.delete_wake_alarm(alarm)
        twin.cloudwatch.set_load_profile(name, requests_per_minute=0)
        twin.wait_for(lambda: _view(twin, name)["capacity"]["instances"] == 0, step=120, limit=24 * 3600)
        twin.clock.sleep(idle_seconds)
        t0 = twin.clock.now()
        twin.cloudwatch.set_load_profile(name, requests_per_minute=10)
        if mode == MODES[2]:
            twin.api_request("POST", f"/endpoints/{name}/wake")
        seconds = twin.wait_for(lambda: _serving(twin, name), step=10, limit=6 * 3600)
        if mode != MODES[0]:  # the wake operation records its duration when it has seen the capacity serve
            twin.wait_for(lambda: _view(twin, name)["operation"]["status"] in ("SUCCEEDED", "FAILED"), step=10)
        wakes = [
            i
            for i in twin.lambdas.of("ScalingStepsFunction")
            if i.event.get("action") == "begin" and i.event["state"]["action"] == "wake"
        ]
        recorded = _view(twin, name)["last_wake_seconds"]
        repo = Repository(twin.template.physical("OperationsTable").ref, client=twin.client("dynamodb"))
        arns = [repo.get_operation(w.event["state"]["operation_id"]).execution_arn for w in wakes]
        history = [e for arn in arns if arn for e in twin.history(arn)]
        ended = max([e["timestamp"].timestamp() for e in history], default=twin.clock.now())
        invocations = Counter(i.function for i in twin.lambdas.invocations if t0 <= i.started <= ended)
    return {
        "transitions": sum(1 for e in history if str(e.get("type", "")).endswith("StateEntered")),
        "invocations": invocations,
        "window": (t0, ended),
        "kind": kind,
        "mode": mode,
        "seconds": seconds,
        "wakes": len(wakes),
        "recorded": recorded,
        "wall": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the inference-component endpoint only")
    args = parser.parse_args(argv)
    kinds = ["inference-component"] if args.quick else ["inference-component", "async"]
    print("Scale from zero on the twin: virtual seconds from the first request to capacity serving")
    columns = f"{'endpoint':<20} {'path':<28} {'to serving':>11} {'vs alarm path':>14} {'wakes':>6} {'recorded':>9}"
    print(f"{columns} {'wall':>6}")
    for kind in kinds:
        baseline: float | None = None
        for mode in MODES:
            result = run(kind, mode)
            baseline = result["seconds"] if baseline is None else baseline
            ratio = result["seconds"] / baseline if baseline else float("nan")
            recorded = f"{result['recorded']:.0f} s" if result["recorded"] is not None else "-"
            print(
                f"{kind:<20} {mode:<28} {result['seconds']:>9.0f} s {ratio:>13.2f}x {result['wakes']:>6} "
                f"{recorded:>9} {result['wall']:>5.1f}s",
                flush=True,
            )
    print("'wakes': wake operations InferOps ran; 'recorded': the wake duration it recorded (from its request).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
