"""The `inferops` CLI against a fake API on 127.0.0.1 that checks every SigV4 signature.

Covers the commands whose routes land with other features (scale to zero, cost, deliveries), the exit codes,
`--json` shapes, where the API URL comes from (`--local`, the stack's outputs through a fake CloudFormation),
and the traffic split `watch` draws. The commands on the existing routes run against the twin in
tests/flows/test_cli_flow.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from typer.testing import CliRunner, Result

from inferops_cli.client import samconfig_stack_name
from inferops_cli.main import ExitCode, app
from inferops_cli.render import traffic_split

KEY, SECRET = "AKIDCLIUNIT", "unit-secret"
ENV = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": None, "COLUMNS": "150"}
STACK_XML = """<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">
<DescribeStacksResult><Stacks><member><StackName>{name}</StackName><StackStatus>CREATE_COMPLETE</StackStatus>
<CreationTime>2026-11-01T00:00:00Z</CreationTime><Outputs><member><OutputKey>ApiUrl</OutputKey>
<OutputValue>{url}</OutputValue></member></Outputs></member></Stacks></DescribeStacksResult>
<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></DescribeStacksResponse>"""


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    signature_ok: bool
    service: str


@dataclass
class FakeApi:
    """Answers (method, path) from `replies`; records every request and whether its signature verifies."""

    url: str = ""
    replies: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    queued: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)  # answered first, in order
    seen: list[Seen] = field(default_factory=list)


def _verify(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[bool, str]:
    """Recompute the SigV4 signature with the shared secret, as API Gateway's IAM authorizer would."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False, ""
    fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
    _, _, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    request = AWSRequest(
        method=method, url=url, data=body or None, headers={k: v for k, v in headers.items() if k.lower() in signed}
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(KEY, SECRET), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return expected == fields["Signature"], service


@pytest.fixture
def fake() -> Iterator[FakeApi]:
    state = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers.items())
            ok, service = _verify(self.command, f"http://{headers['Host']}{self.path}", headers, body)
            if parts.path == "/" and b"Action=DescribeStacks" in body:  # CloudFormation's query protocol
                form = parse_qs(body.decode())
                state.seen.append(Seen("POST", "cloudformation", form, None, ok, service))
                self._send(200, STACK_XML.format(name=form["StackName"][0], url=state.url).encode(), "text/xml")
                return
            decoded = json.loads(body) if body else None
            state.seen.append(Seen(self.command, parts.path, parse_qs(parts.query), decoded, ok, service))
            key = (self.command, parts.path.removeprefix("/v1"))
            queue = state.queued.get(key)
            status, reply = queue.pop(0) if queue else state.replies.get(key, (404, {"message": "nope"}))
            self._send(status if ok else 403, json.dumps(reply if ok else {"message": "bad signature"}).encode())

        def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env={**ENV, **(env or {})}).invoke(app, list(args))


def test_scale_enable_sends_the_policy_signed_and_prints_the_reply(fake: FakeApi) -> None:
    reply = {"id": "op-1", "endpoint": "chat", "action": "enable", "trigger": "request", "status": "PENDING"}
    fake.replies[("PUT", "/endpoints/chat/scale-to-zero")] = (200, reply)
    schedule = "--awake", "SAT-MON 08:00-18:00", "--timezone", "Europe/Paris"
    shown = run(
        "--api-url", fake.url, "scale", "enable", "chat", "--idle-minutes", "15", "--max-copies", "4", *schedule
    )
    as_json = run("--api-url", fake.url, "--json", "scale", "enable", "chat", "--idle-minutes", "15")

    assert shown.exit_code == ExitCode.OK, shown.stderr
    assert "enable of op-1 on chat  PENDING" in shown.stdout and "inferops scale status chat" in shown.stdout
    first = fake.seen[0]
    assert (first.method, first.path, first.signature_ok, first.service) == (
        "PUT",
        "/v1/endpoints/chat/scale-to-zero",
        True,
        "execute-api",
    )
    assert first.body == {
        "idle_minutes": 15,
        "max_copies": 4,
        "schedule": {"days": ["SAT", "SUN", "MON"], "start": "08:00", "end": "18:00", "timezone": "Europe/Paris"},
    }
    assert json.loads(as_json.stdout) == reply


@pytest.mark.parametrize(
    ("args", "method", "path", "query"),
    [
        (("scale", "disable", "chat"), "DELETE", "/v1/endpoints/chat/scale-to-zero", {}),
        (("scale", "wake", "chat"), "POST", "/v1/endpoints/chat/wake", {}),
        (("scale", "park", "chat"), "POST", "/v1/endpoints/chat/park", {}),
        (("scale", "status", "chat"), "GET", "/v1/endpoints/chat", {}),
        (("cost", "--days", "7"), "GET", "/v1/reports/cost", {"days": ["7"]}),
        (("delivery", "list", "--group", "fraud"), "GET", "/v1/deliveries", {"group": ["fraud"]}),
        (("delivery", "approve", "dl-1"), "POST", "/v1/deliveries/dl-1/approve", {}),
        (("delivery", "cancel", "dl-1"), "POST", "/v1/deliveries/dl-1/cancel", {}),
    ],
)
def test_each_command_calls_its_route(
    fake: FakeApi, args: tuple[str, ...], method: str, path: str, query: dict[str, list[str]]
) -> None:
    fake.replies[(method, path.removeprefix("/v1"))] = (200, {"status": "RUNNING", "endpoints": [], "deliveries": []})
    result = run("--api-url", fake.url, *args)

    assert result.exit_code == ExitCode.OK, result.stderr
    assert [(s.method, s.path, s.query, s.signature_ok) for s in fake.seen] == [(method, path, query, True)]


def test_cost_report_is_a_table_per_endpoint(fake: FakeApi) -> None:
    endpoints = [{"endpoint": "chat", "idle_hours": 310.5, "idle_cost_usd": 436.9, "saved_usd": 401.2}]
    fake.replies[("GET", "/reports/cost")] = (200, {"days": 30, "endpoints": endpoints})
    result = run("--api-url", fake.url, "cost")

    assert result.exit_code == ExitCode.OK
    assert "cost over 30 days" in result.stdout and "401.2" in result.stdout and "idle_hours" in result.stdout


def test_exit_codes_follow_the_outcome(fake: FakeApi) -> None:
    fake.replies[("GET", "/deliveries/dl-ok")] = (200, {"id": "dl-ok", "status": "SUCCEEDED"})
    fake.replies[("GET", "/deliveries/dl-failed")] = (200, {"id": "dl-failed", "status": "FAILED"})
    fake.replies[("GET", "/deliveries/dl-back")] = (200, {"id": "dl-back", "status": "ROLLED_BACK"})
    fake.replies[("POST", "/deliveries/dl-busy/approve")] = (409, {"message": "nothing waits for approval"})
    fake.replies[("POST", "/endpoints/chat/wake")] = (502, {"message": "AWS refused: ThrottlingException"})

    codes = {
        name: run("--api-url", fake.url, "delivery", "show", name).exit_code
        for name in ("dl-ok", "dl-failed", "dl-back")
    }
    busy = run("--api-url", fake.url, "delivery", "approve", "dl-busy")
    broken = run("--api-url", fake.url, "--json", "scale", "wake", "chat")

    assert codes == {"dl-ok": ExitCode.OK, "dl-failed": ExitCode.FAILED, "dl-back": ExitCode.ROLLED_BACK}
    assert busy.exit_code == ExitCode.REFUSED and "nothing waits for approval" in busy.stderr
    assert broken.exit_code == ExitCode.FAILED
    assert json.loads(broken.stdout) == {"error": {"message": "AWS refused: ThrottlingException", "status": 502}}


def test_watch_rides_out_transient_failures_but_not_refusals(fake: FakeApi) -> None:
    running = (200, {"id": "op-1", "status": "IN_PROGRESS", "endpoint": "chat", "timeline": []})
    throttled, broken = (429, {"message": "Too Many Requests"}), (502, {"message": "Internal server error"})
    fake.queued[("GET", "/deployments/op-1")] = [running, running, broken, throttled, broken, running]
    fake.replies[("GET", "/deployments/op-1")] = (200, {"id": "op-1", "status": "SUCCEEDED", "timeline": []})
    fake.queued[("GET", "/deployments/op-2")] = [running, running, (403, {"message": "not allowed"})]
    fake.replies[("GET", "/deployments/op-2")] = running

    survived = run("--api-url", fake.url, "--json", "watch", "op-1", "--interval", "0.05")
    refused = run("--api-url", fake.url, "--json", "watch", "op-2", "--interval", "0.05")

    assert survived.exit_code == ExitCode.OK, survived.stdout
    assert json.loads(survived.stdout)["status"] == "SUCCEEDED"
    assert sum(1 for s in fake.seen if s.path.endswith("/op-1")) == 7  # probe, first read, 5 polls (3 failed)
    assert refused.exit_code == ExitCode.REFUSED
    assert "not allowed" in json.loads(refused.stdout)["error"]["message"]  # expired credentials: no retry


def test_bad_options_send_nothing(fake: FakeApi) -> None:
    schedule = run("--api-url", fake.url, "scale", "enable", "chat", "--awake", "weekdays 8-18")
    no_model = run("--api-url", fake.url, "deploy", "--endpoint", "chat")
    size_alone = run("--api-url", fake.url, "plan", "-e", "chat", "-m", "v2", "--size", "20")

    assert schedule.exit_code == no_model.exit_code == size_alone.exit_code == ExitCode.USAGE
    assert "DAYS HH:MM-HH:MM" in schedule.stderr
    assert "--model" in no_model.stderr and "--strategy" in size_alone.stderr
    assert fake.seen == []


def test_deploy_builds_the_request_from_file_and_options(fake: FakeApi, tmp_path: Path) -> None:
    fake.replies[("POST", "/deployments")] = (202, {"id": "op-1", "status": "PENDING", "plan": {}, "warnings": []})
    request = tmp_path / "release.json"
    request.write_text(json.dumps({"endpoint_name": "chat", "analysis": {"min_requests": 50}}))
    result = run(
        "--api-url", fake.url, "deploy", "-f", str(request), "--model", "chat-v2", "-s", "linear", "--size", "20",
        "--bake", "300", "--alarm", "chat-p99", "--idempotency-key", "release-7",
    )  # fmt: skip

    assert result.exit_code == ExitCode.OK, result.stderr
    assert "deployment op-1 started (PENDING)" in result.stdout
    assert fake.seen[0].body == {
        "endpoint_name": "chat",
        "analysis": {"min_requests": 50},
        "model": {"source": "existing", "model_name": "chat-v2"},
        "alarms": ["chat-p99"],
        "strategy": {"type": "linear", "step": {"unit": "percent", "value": 20.0}, "bake_seconds": 300},
    }


def test_the_api_url_comes_from_the_stack_or_local(
    fake: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.replies[("GET", "/endpoints/chat")] = (200, {"endpoint": "chat", "status": "InService"})
    (tmp_path / "samconfig.toml").write_text('[default.global.parameters]\nstack_name = "inferops-staging"\n')
    monkeypatch.chdir(tmp_path)
    cloudformation = {"AWS_ENDPOINT_URL_CLOUDFORMATION": fake.url.removesuffix("/v1")}  # never AWS itself
    from_stack = run("scale", "status", "chat", env=cloudformation)
    port = fake.url.split(":")[2].split("/")[0]
    local = run("--local", "--port", port, "--json", "scale", "status", "chat")

    assert from_stack.exit_code == ExitCode.OK, from_stack.stderr
    described, called = fake.seen[0], fake.seen[1]
    assert described.query["StackName"] == ["inferops-staging"] and described.service == "cloudformation"
    assert (called.path, called.signature_ok) == ("/v1/endpoints/chat", True)
    assert local.exit_code == ExitCode.OK and json.loads(local.stdout)["status"] == "InService"


def test_samconfig_stack_name(tmp_path: Path) -> None:
    assert samconfig_stack_name(tmp_path) == "inferops"
    (tmp_path / "samconfig.toml").write_text('[default.deploy.parameters]\nstack_name = "ops"\n')
    assert samconfig_stack_name(tmp_path) == "ops"
    (tmp_path / "samconfig.toml").write_text("not toml [")
    assert samconfig_stack_name(tmp_path) == "inferops"


def _entry(kind: str, message: str = "", **data: Any) -> dict[str, Any]:
    return {"at": "2026-01-05T09:04:40Z", "kind": kind, "message": message, "data": data}


def test_traffic_split_follows_the_native_phases_and_managed_shifts() -> None:
    shifts = [{"action": "shift", "new_traffic_percent": 25.0}, {"action": "shift", "new_traffic_percent": 100.0}]
    plan = {"steps": [{"action": "provision", "new_traffic_percent": 0.0}, *shifts]}
    activating = _entry("sagemaker", "endpoint Updating on v1; new fleet: ActivatingTraffic")
    baking = _entry("sagemaker", "endpoint Updating on v1; new fleet: Baking")

    def split(status: str, *timeline: dict[str, Any]) -> float | None:
        return traffic_split({"status": status, "plan": plan, "timeline": list(timeline)})

    assert split("RUNNING", _entry("update")) == 0.0
    assert split("RUNNING", activating, baking) == 25.0
    assert split("RUNNING", activating, baking, activating) == 100.0
    assert split("RUNNING", _entry("shift", share=10), _entry("shift", share=50)) == 50.0
    assert split("RUNNING", _entry("shift", share=50), _entry("rollback")) == 0.0
    assert split("SUCCEEDED", activating) == 100.0
    assert split("ROLLED_BACK", activating, activating) == 0.0
