"""Domain errors. Each carries what a user needs to fix the problem; handlers map them to HTTP 4xx."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class InferOpsError(Exception):
    """Base class: `message` is shown to users as is; `field` names the offending input, if any."""

    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(InferOpsError):
    """The request is well-formed but breaks a rule (bad value, unknown name)."""

    status_code = 400


class NotFound(InferOpsError):
    """The named resource does not exist."""

    status_code = 404


class Conflict(InferOpsError):
    """The resource is in a state that forbids the change (lock held, wrong status, duplicate)."""

    status_code = 409


def first_problem(error: ValidationError) -> tuple[str, str]:
    """pydantic's first error as (dotted field, message): what a user needs to fix first."""
    first = error.errors()[0]
    return ".".join(str(p) for p in first["loc"]), str(first["msg"])


def invalid(error: ValidationError, what: str, where: str = "") -> InvalidInput:
    """A malformed input of kind `what`, naming the offending field (under `where`, when nested)."""
    field, message = first_problem(error)
    field = f"{where}.{field}" if where else field
    return InvalidInput(f"{what}: {field}: {message}", field=field)
