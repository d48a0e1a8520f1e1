"""No secrets in logs: every function's Logger redacts task tokens, Authorization headers and credentials."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from inferops import logs
from twin.lambdas import load_function

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
SIGNATURE = "7d0b1c3f5e2a4b6c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
ACCESS_KEY = "ASIAQEXAMPLE7KEY7AB3"
TASK_TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAcN3y0QWzFkP8pV1gq9T7r3t+YcZ5f1lq8UeYk2n0mXbS1a5pO8mH9nQ4wVvE2rT"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexample"
SECRETS = (SIGNATURE, ACCESS_KEY, TASK_TOKEN, SESSION_TOKEN)


def api_event() -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "api" / "list_gpu_instances.json").read_text())
    event["headers"]["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260105/us-east-1/execute-api/aws4_request, "
        f"SignedHeaders=host;x-amz-date;x-amz-security-token, Signature={SIGNATURE}"
    )
    event["headers"]["X-Amz-Security-Token"] = SESSION_TOKEN
    event["multiValueHeaders"] = {"Authorization": [event["headers"]["Authorization"]]}
    return event


def step_input() -> dict[str, Any]:
    return {"action": "await_update", "token": TASK_TOKEN, "state": {"operation_id": "op-1"}}


def written(logger: Any, *messages: Any, exc: BaseException | None = None) -> str:
    """What the logger writes for these messages (its own formatter, a stream we read)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    level = logger._logger.level
    logger._logger.setLevel(logging.INFO)  # the Logger is shared by service name: another test may have raised it
    try:
        for message in messages:
            logger.info(message)
        logger.info("step done", extra={"token": "kept (event predates the wait)", "event": step_input()})
        if exc is not None:
            try:
                raise exc
            except type(exc):
                logger.exception("unhandled error")
    finally:
        logger._logger.removeHandler(handler)
        logger._logger.setLevel(level)
    return stream.getvalue()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_logs_through_the_redacting_formatter(function: str) -> None:
    module = load_function(function)
    assert isinstance(module.logger.registered_formatter, logs.RedactingFormatter), function
    error = RuntimeError(f"SendTaskSuccess failed for taskToken={TASK_TOKEN}; aws_session_token={SESSION_TOKEN}")
    text = written(module.logger, api_event(), step_input(), exc=error)
    assert all(secret not in text for secret in SECRETS), text
    records = [json.loads(line) for line in text.splitlines()]
    assert records[0]["message"]["headers"]["Authorization"] == logs.REDACTED
    assert records[0]["message"]["httpMethod"] == "GET"  # the rest of the event is still there
    assert records[1]["message"]["token"] == logs.REDACTED
    assert records[2]["token"] == "kept (event predates the wait)"  # our own words are not secrets
    assert "SendTaskSuccess failed" in records[3]["exception"]


def test_redact_scrubs_strings_anywhere_and_leaves_the_input_alone() -> None:
    event = api_event()
    line = f"GET /x?X-Amz-Credential={ACCESS_KEY}%2F20260105&X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token=abc"
    cleaned = logs.redact({"url": line, "nested": [{"Authorization": "Bearer abc"}], "event": event})
    assert all(secret not in json.dumps(cleaned) for secret in SECRETS)
    assert cleaned["nested"][0]["Authorization"] == logs.REDACTED
    assert event["headers"]["Authorization"].endswith(SIGNATURE)  # a copy was redacted
    assert logs.redact({"token": "short words"}) == {"token": "short words"}
