"""Bodies the API refuses before parsing them: too large (413) or nested too deep (400).

API Gateway accepts bodies up to 10 MB; InferOps' largest request (a deployment with its strategy, alarms and
model) is a few KB, so anything over `MAX_BODY_BYTES` is a mistake or an attack, refused before pydantic reads
it. Deeply nested JSON is refused by a linear scan (no recursion, no parse): Python's json module recurses once
per level, and a body of 100,000 '[' would end in RecursionError, a 500, instead of a 400.
"""

from __future__ import annotations

import base64
import binascii

MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32


class BodyRefused(Exception):
    """`status` (413 or 400) and a message naming the limit."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_body(body: str | None, *, is_base64: bool = False) -> None:
    """Raise BodyRefused when the body is over the size limit or its JSON nests deeper than allowed."""
    if not body:
        return
    size = len(body.encode())
    if is_base64:
        try:
            size = len(base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError) as error:
            raise BodyRefused(400, "body: not valid base64") from error
    if size > MAX_BODY_BYTES:
        raise BodyRefused(413, f"body: {size} bytes is over the limit of {MAX_BODY_BYTES} bytes")
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise BodyRefused(400, f"body: JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted")


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (strings and escapes skipped); not a validator."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest
