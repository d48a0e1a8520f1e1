"""The `inferops` CLI against the real API served by the twin (`make up`'s server, on a free 127.0.0.1 port).

One twin serves the whole module; each scenario uses its own endpoint, so they do not wait on each other's lock.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.credentials import Credentials
from flowkit import create_endpoint, wait_for
from typer.testing import CliRunner, Result

from inferops_cli.client import Api
from inferops_cli.main import ExitCode, app
from scripts.openapi import DOCUMENT
from twin.cloudwatch_traffic import ModelProfile
from twin.demo import create_ic_endpoint
from twin.runtime import Twin
from twin.server import TwinServer

pytestmark = pytest.mark.flow

ROLE = "arn:aws:iam::123456789012:role/SageMakerExperiments"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIDCLITEST",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def operator_inbox(twin: Twin) -> str:
    """An SQS queue subscribed to the stack's operator topic (raw delivery): what an operator would read."""
    sns, sqs = twin.client("sns"), twin.client("sqs")
    topic = twin.template.physical("OperatorTopic").ref
    queue = sqs.create_queue(QueueName="operator-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(queue)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twin, str]]:
    empty = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**FAKE_AWS, "AWS_CONFIG_FILE": empty, "AWS_SHARED_CREDENTIALS_FILE": empty}.items():
            env.setenv(name, value)
        env.setenv("POWERTOOLS_METRICS_DISABLED", "true")  # the API's EMF lines would land in the CLI's stdout
        with Twin() as twin, TwinServer(twin) as server:
            for name in ("cli-ok", "cli-abort", "cli-shadow"):  # light traffic: nothing judges them
                create_endpoint(twin, name=name, count=2, rpm=60)
            create_endpoint(twin, name="cli-bad", count=2)  # enough traffic for the judge
            twin.cloudwatch.set_model_profile("cli-bad-v2", ModelProfile.bad())
            create_ic_endpoint(twin, "cli-chat", "cli-chat-llm")
            yield twin, server.url


def inferops(url: str, *args: str, env: dict[str, str | None] | None = None, stdin: Any = None) -> Result:
    runner = CliRunner(env={"COLUMNS": "150", **FAKE_AWS, **(env or {})})
    return runner.invoke(app, ["--api-url", url, *args], input=None if stdin is None else json.dumps(stdin))


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def canary(endpoint: str, size: str = "25") -> list[str]:
    return ["-e", endpoint, "-m", f"{endpoint}-v2", "-s", "canary", "--size", size, "--bake", "600"]


def test_plan_explains_a_refusal_and_shows_a_plan(served: tuple[Twin, str]) -> None:
    _, url = served
    refused = inferops(url, "plan", *canary("cli-ok", "60"), "--recommended-alarms")
    planned = inferops(url, "plan", *canary("cli-ok"), "--recommended-alarms")
    as_data = inferops(url, "--json", "plan", *canary("cli-ok", "60"))

    assert refused.exit_code == ExitCode.REFUSED
    assert "canary size 60 % (60 % of the new fleet) is outside SageMaker's 1-50 %" in refused.stderr
    assert "choose a canary size between 1 % and 50 %" in refused.stderr  # the fix, from the violation
    assert "Traceback" not in refused.stderr + refused.stdout
    assert planned.exit_code == ExitCode.OK, planned.stderr
    assert "canary on the native path" in planned.stdout and "canary: 1 instance(s)" in planned.stdout
    error = as_json(as_data)["error"]
    assert as_data.exit_code == ExitCode.REFUSED
    assert error["status"] == 422
    assert {v["field"] for v in error["violations"]} == {"strategy.size", "alarms"}


def test_deploy_and_watch_to_success_and_the_operators_are_told(served: tuple[Twin, str]) -> None:
    twin, url = served
    inbox = operator_inbox(twin)
    result = inferops(url, "deploy", *canary("cli-ok"), "--recommended-alarms", "--watch", "--interval", "0.5")
    listed = inferops(url, "--json", "status", "--endpoint", "cli-ok")
    twin.clock.sleep(2)  # the Finished event follows the final record
    told = [m["Body"] for m in twin.client("sqs").receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]]

    assert result.exit_code == ExitCode.OK, result.stdout + result.stderr
    assert "SUCCEEDED: cli-ok-io-" in result.stdout
    assert "traffic  old 0 % " in result.stdout and " 100 % new" in result.stdout
    assert "new fleet: Baking" in result.stdout  # the timeline
    page = as_json(listed)
    assert [d["status"] for d in page["deployments"]] == ["SUCCEEDED"]
    assert set(page["deployments"][0]) >= {"id", "status", "strategy", "created_at", "reason"}
    done = page["deployments"][0]
    assert told == [f"InferOps Deployment Finished: cli-ok SUCCEEDED ({done['id']}). {done['reason']}"]


def test_a_bad_model_is_rolled_back_by_the_judge(served: tuple[Twin, str]) -> None:
    _, url = served
    managed = {"type": "managed", "steps": [10, 100], "bake_seconds": 600}
    request = {"strategy": managed, "analysis": {"min_requests": 50}}  # no alarms: the judge decides
    result = inferops(
        url,
        "--json",
        "deploy",
        "-f",
        "-",
        "-e",
        "cli-bad",
        "-m",
        "cli-bad-v2",
        "--watch",
        "--interval",
        "0.5",
        stdin=request,
    )
    status = inferops(url, "status", as_json(result)["id"])

    view = as_json(result)
    assert result.exit_code == ExitCode.ROLLED_BACK
    assert view["status"] == "ROLLED_BACK"
    assert [(v["share"], v["result"]) for v in view["verdicts"]] == [(10, "Fail")]
    assert set(view) >= {"id", "endpoint", "status", "plan", "result", "verdicts", "timeline"}
    assert status.exit_code == ExitCode.ROLLED_BACK
    assert "Fail" in status.stdout and "analysis Fail at 10 %" in status.stdout  # verdicts table and reason


def test_abort_then_watch_reports_the_rollback(served: tuple[Twin, str]) -> None:
    twin, url = served
    managed = ["-e", "cli-abort", "-m", "cli-abort-v2", "-s", "managed", "--steps", "10,100", "--bake", "1800"]
    started = inferops(url, "--json", "deploy", *managed, "--recommended-alarms")
    operation = as_json(started)["id"]

    def shifted() -> bool:
        return any(e["kind"] == "shift" for e in twin.api_request("GET", f"/deployments/{operation}")[1]["timeline"])

    wait_for(twin, shifted)
    with twin.busy():  # no jump to the end of the bake while the CLI runs
        running = inferops(url, "status", operation)
        aborted = inferops(url, "abort", operation, "--reason", "wrong build")
    watched = inferops(url, "watch", operation, "--interval", "0.5")
    again = inferops(url, "abort", operation)

    assert started.exit_code == ExitCode.OK
    assert running.exit_code == ExitCode.OK and "traffic  old 90 % " in running.stdout
    assert aborted.exit_code == ExitCode.OK, aborted.stderr
    assert watched.exit_code == ExitCode.ROLLED_BACK
    assert "ABORTED" in watched.stdout and "wrong build" in watched.stdout
    assert again.exit_code == ExitCode.REFUSED  # nothing left to abort: the API's 409, as the user's problem
    assert "Traceback" not in again.stderr


def test_shadow_test_start_status_and_discard(served: tuple[Twin, str]) -> None:
    twin, url = served
    request = {
        "endpoint_name": "cli-shadow",
        "model": {"source": "existing", "model_name": "cli-shadow-v2"},
        "role_arn": ROLE,
        "duration_hours": 1,
        "sampling_steps": [50, 100],
        "action": "promote",
    }
    refused = inferops(url, "shadow", "start", "-f", "-", stdin={**request, "duration_hours": 2000})
    started = inferops(url, "--json", "shadow", "start", "-f", "-", stdin=request)
    operation = as_json(started)["id"]
    wait_for(twin, lambda: twin.api_request("GET", f"/shadow-tests/{operation}")[1]["sampling_percent"] == 50)
    with twin.busy():  # still in the 50 % phase while the CLI runs
        early = inferops(url, "shadow", "promote", operation)
        discarded = inferops(url, "shadow", "discard", operation, "--reason", "not today")
    watched = inferops(url, "--json", "watch", operation, "--interval", "0.5")
    shown = inferops(url, "shadow", "status", operation)

    assert refused.exit_code == ExitCode.REFUSED and "duration" in refused.stderr
    assert started.exit_code == ExitCode.OK, started.stdout
    assert early.exit_code == ExitCode.REFUSED and "sampling" in early.stderr  # promotion needs 100 % throughout
    assert discarded.exit_code == ExitCode.OK, discarded.stderr
    assert watched.exit_code == ExitCode.ROLLED_BACK  # ABORTED: production kept
    assert as_json(watched)["status"] == "ABORTED" and "not today" in as_json(watched)["result"]["reason"]
    assert "shadow test" in shown.stdout and "ABORTED" in shown.stdout


def test_scale_to_zero_enable_status_cost_and_disable(served: tuple[Twin, str]) -> None:
    twin, url = served

    def settled() -> dict[str, Any]:
        status = inferops(url, "--json", "scale", "status", "cli-chat")
        assert status.exit_code == ExitCode.OK, status.stderr
        view: dict[str, Any] = as_json(status)
        return view

    def done() -> bool:
        return (settled().get("operation") or {}).get("status") in {"SUCCEEDED", "FAILED"}

    enabled = inferops(url, "scale", "enable", "cli-chat", "--max-copies", "2")
    wait_for(twin, done, limit=3600)
    on = settled()
    park = inferops(url, "scale", "park", "cli-chat")  # parking is for classic endpoints only
    cost = inferops(url, "--json", "cost", "--days", "1")
    disabled = inferops(url, "scale", "disable", "cli-chat")
    wait_for(twin, lambda: done() and settled()["operation"]["id"] != on["operation"]["id"], limit=3600)
    off = settled()

    assert enabled.exit_code == ExitCode.OK, enabled.stderr
    assert "enable of op-" in enabled.stdout and "on cli-chat  PENDING" in enabled.stdout
    assert on["kind"] == "inference-component" and on["operation"]["status"] == "SUCCEEDED"
    assert on["scale_to_zero"] is not None
    assert park.exit_code == ExitCode.REFUSED and "Traceback" not in park.stderr
    assert cost.exit_code == ExitCode.OK and "cli-chat" in cost.stdout
    assert disabled.exit_code == ExitCode.OK, disabled.stderr
    assert off["operation"]["status"] == "SUCCEEDED" and off["scale_to_zero"] is None


def test_catalog_results_and_unknown_things(served: tuple[Twin, str]) -> None:
    _, url = served
    listed = inferops(url, "--json", "catalog", "list", "--accelerator", "L4")
    shown = inferops(url, "catalog", "show", "ml.g5.xlarge")
    typo = inferops(url, "catalog", "show", "ml.g5.xlarg")
    fits = inferops(url, "catalog", "fit", "70", "--tp", "8", "--limit", "3")
    missing = inferops(url, "results", "get", "no-such-inference")
    unknown = inferops(url, "status", "op-nope")

    assert listed.exit_code == ExitCode.OK
    assert {t["accelerator"]["model"] for t in as_json(listed)["instance_types"]} == {"L4"}
    assert shown.exit_code == ExitCode.OK and "A10G" in shown.stdout
    assert typo.exit_code == ExitCode.REFUSED and "ml.g5.xlarge" in typo.stderr  # "did you mean"
    assert fits.exit_code == ExitCode.OK and "hold 70 GB" in fits.stdout
    assert missing.exit_code == ExitCode.REFUSED
    assert unknown.exit_code == ExitCode.REFUSED and "op-nope" in unknown.stderr


def test_unsigned_requests_are_refused_and_the_cli_says_why(served: tuple[Twin, str]) -> None:
    _, url = served
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(f"{url}/catalog/instances/ml.g5.xlarge", timeout=10)
    no_credentials: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_SESSION_TOKEN": None,
    }
    unsigned = inferops(url, "catalog", "show", "ml.g5.xlarge", env=no_credentials)
    unsigned_json = inferops(url, "--json", "catalog", "show", "ml.g5.xlarge", env=no_credentials)

    assert raw.value.code == 403
    assert unsigned.exit_code == ExitCode.REFUSED
    assert "no AWS credentials found" in unsigned.stderr and "Missing Authentication Token" in unsigned.stderr
    assert as_json(unsigned_json)["error"]["status"] == 403


def test_the_api_serves_its_openapi_document(served: tuple[Twin, str]) -> None:
    _, url = served
    signed = Api(url, Credentials(FAKE_AWS["AWS_ACCESS_KEY_ID"], "testing"), "us-east-1")

    assert signed.call("GET", "/openapi.json") == json.loads(DOCUMENT.read_text())


def test_no_answer_is_unreachable(served: tuple[Twin, str]) -> None:
    result = inferops("http://127.0.0.1:9/v1", "catalog", "show", "ml.g5.xlarge")

    assert result.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach the InferOps API at http://127.0.0.1:9/v1" in result.stderr
