"""SageMaker async inference notifications (SNS success/error topics -> SQS): index, count, classify.

Partial batch failures (`ReportBatchItemFailures`): a malformed or oversized message, or one whose result could
not be stored, is listed in `batchItemFailures` with the reason logged; SQS redelivers it and, after the queue's
`maxReceiveCount` receives, moves it to the dead-letter queue. The rest of the batch is deleted.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import process_partial_response

from inferops import logs
from inferops.async_ingest import AsyncResultsProcessor
from inferops.storage import Repository

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = logs.logger()


@cache
def _repository() -> Repository:
    return Repository(os.environ["TABLE_NAME"])


def _max_receive_count() -> int | None:
    value = os.environ.get("MAX_RECEIVE_COUNT", "")
    return int(value) if value.isdigit() else None


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    processor = AsyncResultsProcessor(_repository(), logger=logger, max_receive_count=_max_receive_count())
    response = process_partial_response(
        event=event, record_handler=processor.parse_record, processor=processor, context=context
    )
    return dict(response)
