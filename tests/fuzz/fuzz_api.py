"""API fuzzing: schemathesis generates requests from docs/openapi.json, valid ones and ones that break the
schema, and sends them SigV4-signed over HTTP to the API `make up` serves (twin/server.py: API Gateway's IAM
auth in front of the real API function, the twin behind it).

    python tests/fuzz/fuzz_api.py [--examples N] [--seed S]

Every answer must be below 500, and every refusal a 4xx whose JSON body has a `message`. Probes beyond the
schema: each operation without a signature (403), an oversized body (413), deeply nested JSON and broken JSON
(400). Prints a table per operation and the findings; exit status 1 when there is any. `tests/fuzz/
test_fuzz_api.py` runs a short version in `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "layers" / "shared", ROOT / "tests" / "flows"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import requests  # noqa: E402
import schemathesis  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from flowkit import create_endpoint  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402

from inferops.request_limits import MAX_BODY_BYTES  # noqa: E402
from twin.runtime import Twin  # noqa: E402
from twin.server import TwinServer  # noqa: E402

DOCUMENT = ROOT / "docs" / "openapi.json"
CREDENTIALS = Credentials("AKIDFUZZEXAMPLE", "fuzz-secret-not-a-real-key")
REGION = "us-east-1"


def signed(prepared: requests.PreparedRequest) -> requests.PreparedRequest:
    """Sign as a caller with IAM credentials does (SigV4 for execute-api)."""
    request = AWSRequest(method=prepared.method, url=prepared.url, data=prepared.body, headers=dict(prepared.headers))
    SigV4Auth(CREDENTIALS, "execute-api", REGION).add_auth(request)
    prepared.headers.update(dict(request.headers.items()))
    return prepared


@dataclass
class Report:
    requests: Counter[str] = field(default_factory=Counter)  # per "METHOD path"
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def record(self, operation: str, what: str, response: requests.Response) -> None:
        self.requests[operation] += 1
        self.statuses.setdefault(operation, Counter())[response.status_code] += 1
        if response.status_code >= 500:
            self.findings.append(f"{operation}: {response.status_code} for {what}: {response.text[:200]}")
        elif response.status_code >= 400 and not _message(response):
            self.findings.append(f"{operation}: {response.status_code} without a message for {what}")


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def send(session: requests.Session, prepared: requests.PreparedRequest) -> requests.Response:
    return session.send(prepared, timeout=60)


def fuzz_operations(base_url: str, report: Report, examples: int, seed: int) -> None:
    schema = schemathesis.openapi.from_path(str(DOCUMENT))
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            test = _test(operation, name, mode, base_url, session, report, examples, seed)
            try:
                test()
            except Exception as error:  # schemathesis could not build a request (e.g. an unserializable case)
                report.findings.append(f"{name}: {mode.value} generation failed: {type(error).__name__}: {error}")


def _test(
    operation: Any,
    name: str,
    mode: GenerationMode,
    base_url: str,
    session: requests.Session,
    report: Report,
    examples: int,
    seed: int,
) -> Any:
    """A hypothesis test sending `examples` generated requests for one operation and mode."""

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every finding is recorded as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        kwargs = case.as_transport_kwargs(base_url=base_url)
        prepared = requests.Request(
            method=kwargs["method"],
            url=kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params"),
            json=kwargs.get("json"),
            data=kwargs.get("data"),
        ).prepare()
        response = send(session, signed(prepared))
        report.record(name, f"{mode.value} {prepared.url} {str(prepared.body)[:120]}", response)

    return call


def probes(base_url: str, report: Report) -> None:
    """What the schema cannot ask for: no signature, a huge body, JSON nested deep, JSON cut short."""
    session = requests.Session()
    document = json.loads(DOCUMENT.read_text())
    for path, methods in document["paths"].items():
        concrete = path.replace("{", "").replace("}", "")  # /deployments/{operation_id} -> /deployments/operation_id
        for method in methods:
            name = f"{method.upper()} {path}"
            response = send(session, requests.Request(method.upper(), base_url + concrete).prepare())
            report.record(name, "unsigned", response)
            if response.status_code != 403:
                report.findings.append(f"{name}: unsigned request answered {response.status_code}, not 403")
    bodies = {
        "oversized": ('{"endpoint_name": "' + "x" * (MAX_BODY_BYTES + 1) + '"}', 413),
        "deep JSON": ("[" * 10_000 + "]" * 10_000, 400),  # under the size limit: json.loads would recurse
        "deep object": ('{"a":' * 40 + "1" + "}" * 40, 400),
        "broken JSON": ('{"endpoint_name": "scor', 422),
    }
    for what, (body, expected) in bodies.items():
        for path in ("/deployments", "/shadow-tests", "/plans"):
            prepared = requests.Request(
                "POST", base_url + path, data=body.encode(), headers={"Content-Type": "application/json"}
            ).prepare()
            response = send(session, signed(prepared))
            report.record(f"POST {path}", what, response)
            if response.status_code != expected:
                report.findings.append(f"POST {path}: {what} answered {response.status_code}, not {expected}")
            elif expected != 422 and "body" not in _message(response):
                report.findings.append(f"POST {path}: {what} refused without naming the body: {_message(response)}")


@contextmanager
def served() -> Iterator[str]:
    """The twin with one InService endpoint (so requests naming it get past 'not found'), behind the server."""
    with Twin(parameters={"LogLevel": "WARNING"}) as twin, TwinServer(twin, 0) as server:
        create_endpoint(twin, count=2)
        yield server.url


def run(examples: int, seed: int, *, quiet: bool = True) -> Report:
    report = Report()
    w0 = time.perf_counter()
    with (
        open(os.devnull, "w") as sink,
        redirect_stdout(sink if quiet else sys.stdout),
        redirect_stderr(sink if quiet else sys.stderr),
        served() as base_url,
    ):
        fuzz_operations(base_url, report, examples, seed)
        probes(base_url, report)
    report.wall_seconds = time.perf_counter() - w0
    return report


def print_report(report: Report, examples: int, seed: int) -> None:
    print(f"API fuzzing: schemathesis over docs/openapi.json, {examples} examples per operation and mode, seed {seed}")
    print(f"  {'operation':<42} {'requests':>8} {'2xx':>5} {'4xx':>5} {'5xx':>5}")
    for name in sorted(report.requests):
        statuses = report.statuses[name]
        classes = [sum(n for s, n in statuses.items() if low <= s < low + 100) for low in (200, 400, 500)]
        print(f"  {name:<42} {report.requests[name]:>8} " + " ".join(f"{n:>5}" for n in classes))
    total = sum(report.requests.values())
    errors = sum(n for c in report.statuses.values() for s, n in c.items() if s >= 500)
    print(f"  {total} requests, {errors} answered 5xx, {len(report.findings)} finding(s), {report.wall_seconds:.0f} s")
    for finding in report.findings:
        print(f"  finding: {finding}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    report = run(args.examples, seed)
    print_report(report, args.examples, seed)
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
