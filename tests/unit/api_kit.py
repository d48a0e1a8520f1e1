"""What the API function's in-process tests share: a Lambda context, an API Gateway event for any route and its
reply taken apart, moto clients that outlive one test's boto3 session, and the endpoint most tests start from."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from botocore.exceptions import ClientError

EVENTS = Path(__file__).resolve().parents[2] / "events" / "api"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
ENDPOINT = "fraud-scorer"
NO_STATE_MACHINE = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:none"


class Context:
    function_name = "ApiFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:ApiFunction"
    aws_request_id = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def api_request(
    api: ModuleType,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request through the API function's handler, as API Gateway sends it: status, JSON body (None when
    empty), headers."""
    event = json.loads((EVENTS / "create_plan.json").read_text())
    all_headers = {**event["headers"], **(headers or {})}
    event.update(
        httpMethod=method,
        path=path,
        resource=path,
        body=body if isinstance(body, str) or body is None else json.dumps(body),
        headers=all_headers,
        multiValueHeaders={k: [v] for k, v in all_headers.items()},
        queryStringParameters=query,
        multiValueQueryStringParameters={k: [v] for k, v in (query or {}).items()} or None,
    )
    reply = api.handler(event, Context())
    out = {k: v[-1] for k, v in (reply.get("multiValueHeaders") or {}).items()}
    parsed = json.loads(reply["body"]) if reply.get("body") else None
    return reply["statusCode"], parsed, {**out, **(reply.get("headers") or {})}


@cache
def client(service: str) -> Any:
    """A moto client made once (the tests keep moto from resetting boto3's session, see `keep_boto3_session`)."""
    return boto3.session.Session().client(service, region_name="us-east-1")  # type: ignore[call-overload]


def create_endpoint(
    sm: Any,
    name: str = ENDPOINT,
    *,
    models: tuple[str, ...] = ("fraud-v1", "fraud-v2"),
    instance_type: str = "ml.g4dn.xlarge",
    roles: tuple[str, ...] = (),
    **variant: Any,
) -> None:
    """An endpoint serving the first of `models` on 2 instances (one variant, AllTraffic; its config is named
    after that model), with the other models made too (default: fraud-scorer on fraud-v1, fraud-v2 ready)."""
    for n, model in enumerate(models):
        sm.create_model(
            ModelName=model,
            ExecutionRoleArn=roles[n] if n < len(roles) else ROLE,
            PrimaryContainer={
                "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/f:{model}",
                "ModelDataUrl": "s3://m/1",
            },
        )
    sm.create_endpoint_config(
        EndpointConfigName=models[0],
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": models[0],
                "InitialInstanceCount": 2,
                "InstanceType": instance_type,
                **variant,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=models[0])


def create_state_machine(name: str) -> str:
    """A state machine that does nothing (the tests start executions, they do not run flows): its ARN."""
    return str(
        client("stepfunctions").create_state_machine(
            name=name,
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/StepFunctions",
        )["stateMachineArn"]
    )


class StepFunctions:
    """moto's client for executions; task-token calls are recorded (or fail with `error`), since those tokens
    never came from a real execution."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.exceptions = inner.exceptions
        self.successes: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, str, str]] = []
        self.error: ClientError | None = None

    def send_task_success(self, *, taskToken: str, output: str) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.successes.append((taskToken, json.loads(output)))
        return {}

    def send_task_failure(self, *, taskToken: str, error: str = "", cause: str = "") -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.failures.append((taskToken, error, cause))
        return {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
