"""The InferOps API as the CLI sees it: where it is, SigV4-signed calls, and errors in the user's terms."""

from __future__ import annotations

import json
import re
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session

LOCAL_PORT = 8080
LOCAL_STAGE = "v1"
SERVICE = "execute-api"
_REGION_IN_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com")


class ApiError(Exception):
    """The API answered with an error: the status, its message and the whole reply (violations...)."""

    def __init__(self, status: int, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


class Unreachable(Exception):
    """No answer from the API (no URL, connection refused, timeout): nothing was done."""


@dataclass
class Api:
    """One API base URL and the credentials that sign every call (None: calls go unsigned and get 403)."""

    url: str
    credentials: Credentials | None
    region: str
    timeout: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)

    def call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON reply of a 2xx; ApiError for any other status, Unreachable without an answer."""
        url = self.url.rstrip("/") + path
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Accept": "application/json", **self.headers, **(headers or {})}
        if data is not None:
            sent["Content-Type"] = "application/json"
        if self.credentials is not None:
            signed = AWSRequest(method=method, url=url, data=data, headers=sent)
            SigV4Auth(self.credentials, SERVICE, self.region).add_auth(signed)
            sent = dict(signed.headers.items())
        request = urllib.request.Request(url, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _decode(response.read())
        except urllib.error.HTTPError as error:
            raise _api_error(error.code, error.read(), dict(error.headers.items()), self.credentials) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"cannot reach the InferOps API at {self.url}: {reason}") from None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw.decode(errors="replace")}


def _api_error(status: int, raw: bytes, headers: dict[str, str], credentials: Credentials | None) -> ApiError:
    """The reply as the user's problem: API Gateway's auth errors say what to do about credentials."""
    body = _decode(raw)
    if not isinstance(body, dict):
        body = {"message": str(body)}
    message = str(body.get("message") or body.get("Message") or f"HTTP {status}")
    kind = next((v for k, v in headers.items() if k.lower() == "x-amzn-errortype"), "")
    if status == 403 and credentials is None:
        message = (
            f"the API refused an unsigned request ({message}): no AWS credentials found; "
            "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    elif status == 403 and kind.startswith(("MissingAuthenticationToken", "UnknownOperation")):
        message = f"no such route on this API ({message}): is the URL the API's base URL, stage included?"
    elif status == 403:
        message = f"the API refused your credentials ({message}): they need execute-api:Invoke on this API"
    return ApiError(status, message, body)


@dataclass(frozen=True)
class Target:
    """Where to send requests, as the user asked: an explicit URL, the local twin, or a deployed stack."""

    api_url: str | None = None
    local: bool = False
    local_port: int = LOCAL_PORT
    stack: str | None = None
    profile: str | None = None
    region: str | None = None


def connect(target: Target, *, timeout: float = 30.0) -> Api:
    """An Api for the target; the stack's `ApiUrl` output is read with CloudFormation only when needed."""
    session = Session(profile=target.profile) if target.profile else Session()
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as error:
        raise Unreachable(f"cannot load AWS credentials: {error}") from None
    signing = (
        Credentials(frozen.access_key, frozen.secret_key or "", frozen.token)
        if frozen is not None and frozen.access_key
        else None
    )
    if target.api_url:
        url = target.api_url
    elif target.local:
        url = f"http://127.0.0.1:{target.local_port}/{LOCAL_STAGE}"
    else:
        url = stack_api_url(session, target.stack or samconfig_stack_name(Path.cwd()), target.region)
    matched = _REGION_IN_HOST.search(url)
    region = target.region or (matched.group(1) if matched else None) or session.get_config_variable("region")
    return Api(url=url, credentials=signing, region=region or "us-east-1", timeout=timeout)


def samconfig_stack_name(folder: Path) -> str:
    """The stack name `sam deploy` uses from this folder's samconfig.toml, else InferOps' default."""
    config = folder / "samconfig.toml"
    if config.is_file():
        try:
            parsed = tomllib.loads(config.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            return "inferops"
        for command in ("global", "deploy"):
            name = parsed.get("default", {}).get(command, {}).get("parameters", {}).get("stack_name")
            if isinstance(name, str) and name:
                return name
    return "inferops"


def stack_api_url(session: Session, stack: str, region: str | None) -> str:
    """The `ApiUrl` output of the deployed stack (CloudFormation DescribeStacks)."""
    try:
        cloudformation: Any = session.create_client("cloudformation", region_name=region)  # no stubs for it here
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        detail = error.response.get("Error", {}).get("Message", str(error))
        raise Unreachable(f"cannot read stack {stack!r}: {detail} (pass --api-url, or --local for `make up`)") from None
    except BotoCoreError as error:
        raise Unreachable(f"cannot read stack {stack!r}: {error} (pass --api-url, or --local for `make up`)") from None
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output.get("OutputKey") == "ApiUrl":
            return str(output["OutputValue"])
    raise Unreachable(f"stack {stack!r} has no ApiUrl output: is it an InferOps stack?")
