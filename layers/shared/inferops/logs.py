"""Every function's Powertools Logger, with secrets redacted from whatever it writes.

What could reach a log line: Step Functions task tokens (a step's input carries one; whoever holds it can
resume or fail the flow), the API's `Authorization` header and SigV4 query strings (with
`POWERTOOLS_LOGGER_LOG_EVENT=true` the whole proxy event is logged), and AWS credentials (a session token in
an environment dump or an exception). The formatter walks each structured record before it is serialized:
values under sensitive keys are replaced, and strings are scrubbed of SigV4 signatures, credentials and
session tokens wherever they appear (an exception's text included).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

if TYPE_CHECKING:
    from aws_lambda_powertools.logging.types import LogRecord

REDACTED = "***"
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-credential",
        "tasktoken",
        "task_token",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_security_token",
        "secretaccesskey",
        "sessiontoken",
        "password",
        "secret",
        "cookie",
        "set-cookie",
    }
)
# "token" is also a step's input field (the task token) and a harmless word in our own results ("token": "kept
# (...)"): under that key only opaque values (long, no spaces) are redacted.
OPAQUE_UNDER = frozenset({"token"})
_OPAQUE = re.compile(r"^\S{40,}$")
_PATTERNS = (
    (re.compile(r"(Signature=)[0-9a-fA-F]{16,}"), r"\1" + REDACTED),
    (re.compile(r"(Credential=)[^,\s&]+"), r"\1" + REDACTED),
    (re.compile(r"(X-Amz-Security-Token=)[^&\s]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(X-Amz-Signature=)[^&\s]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"(aws_(?:secret_access_key|session_token)\s*[=:]\s*)\S+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(\"?taskToken\"?\s*[=:]\s*\"?)[^\"\s,}]+"), r"\1" + REDACTED),
)


def redact(value: Any, key: str | None = None) -> Any:
    """`value` with secrets replaced (dicts and lists walked, strings scrubbed); the input is not changed."""
    lowered = key.lower() if key else ""
    if lowered in SENSITIVE_KEYS and value not in (None, ""):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, BaseException):  # Powertools' stack_trace carries the exception itself
        value = str(value)
    if isinstance(value, str):
        if lowered in OPAQUE_UNDER and _OPAQUE.match(value):
            return REDACTED
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
    return value


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, redacting each record before it is written."""

    def serialize(self, log: LogRecord) -> str:
        return super().serialize(cast("LogRecord", redact(log)))


def logger(**options: Any) -> Logger:
    """The Logger every function uses (Powertools' own options, redaction always on)."""
    return Logger(logger_formatter=RedactingFormatter(), **options)
