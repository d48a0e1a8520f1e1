"""What the API's route modules share: the body of a stop route, a 202 answer, who is asking, the clients of a
flow's service, and starting a flow once per Idempotency-Key (Powertools idempotency, in the operations table)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from pydantic import BaseModel, ConfigDict, Field

from inferops import flow_steps
from inferops.flow_steps import Clients
from inferops.model import Model
from inferops.storage import OperationStatus

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

# Retries of a start with the same Idempotency-Key get the first answer for a day; the handler registers the
# Lambda context with it on every invocation.
IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="key", payload_validation_jmespath="request", expires_after_seconds=86400
)


# The query of every list route: a status filter and pagination (a page of `limit`, then `nextToken`).
StatusQuery = Annotated[OperationStatus | None, Query()]
LimitQuery = Annotated[int, Query(ge=1, le=100)]
NextTokenQuery = Annotated[str | None, Query(alias="nextToken", max_length=2048)]


class ReasonBody(Model):
    """The optional body of a stop (abort, discard, cancel): why, kept in the record and the timeline."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


def accepted(body: BaseModel | dict[str, Any], status: int = 202) -> Response[Any]:
    """An answer for a change that goes on in a flow (202), with what it looks like now."""
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=data)


def caller(event: APIGatewayProxyEvent) -> str:
    """Who is asking (API Gateway's IAM identity; the twin and tests may leave it empty)."""
    identity = event.request_context.identity
    return identity.user_arn or identity.caller or "anonymous"


@cache
def flow_clients(state_machine_env: str) -> Clients:
    """A flow service's clients, made once per container; the state machine's ARN comes from `state_machine_env`."""
    return flow_steps.clients_from_env(state_machine_env)


@cache
def _idempotency_store(kind: str) -> DynamoDBPersistenceLayer:
    """Made on first use: importing a route module must not need a region or the table."""
    return DynamoDBPersistenceLayer(
        table_name=os.environ["TABLE_NAME"],
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value=f"IDEMPOTENCY#{kind}",
        expiry_attr="expires_at",
    )


def start_once(kind: str, start: Callable[[dict[str, Any]], dict[str, Any]], call: dict[str, Any]) -> dict[str, Any]:
    """`start(call)` once per `call["key"]` (the caller and its Idempotency-Key); a retry gets the first answer,
    and the same key with another `call["request"]` is refused."""
    once = idempotent_function(
        data_keyword_argument="call", config=IDEMPOTENCY, persistence_store=_idempotency_store(kind)
    )
    return once(start)(call=call)  # type: ignore[no-any-return]
