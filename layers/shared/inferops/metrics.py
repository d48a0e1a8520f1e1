"""InferOps' own CloudWatch metrics, as EMF records on stdout (namespace InferOps): what the operator dashboard
and alarms in template.yaml read.

    OperationsStarted  {Kind}           a flow started (deployment, shadow_test)
    OperationsFinished {Kind}           a flow recorded its outcome (started - finished = in flight)
    OperationOutcomes  {Kind, Status}   ... by outcome: SUCCEEDED, ROLLED_BACK, FAILED, ABORTED, REFUSED
    Verdicts           {Kind, Result}   the judge's verdicts: Pass, Marginal, Fail
    WakeDurationSeconds {EndpointName}  a scale-to-zero wake: from the request (or alarm) to serving
    DeliveriesReconciled {Action}       the delivery sweep repaired a lost event: started, stopped, launched

Powertools adds the `service` dimension (POWERTOOLS_SERVICE_NAME, `inferops` in the template) to each set.

Written to stdout, which Lambda sends to CloudWatch Logs, where EMF becomes metrics.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

NAMESPACE = "InferOps"


def emit(name: str, value: float = 1, unit: str = "Count", *, out: Callable[[str], None] = print, **dims: str) -> None:
    """One EMF record with one metric and its dimensions (skipped with POWERTOOLS_METRICS_DISABLED)."""
    if is_metrics_disabled():
        return
    provider = AmazonCloudWatchEMFProvider(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or NAMESPACE)
    for dimension, dimension_value in dims.items():
        provider.add_dimension(dimension, dimension_value)
    provider.add_metric(name, unit, value)
    out(json.dumps(provider.serialize_metric_set(), separators=(",", ":")))


def operation_started(kind: str) -> None:
    emit("OperationsStarted", Kind=kind)


def operation_finished(kind: str, status: str) -> None:
    emit("OperationsFinished", Kind=kind)
    emit("OperationOutcomes", Kind=kind, Status=status)


def verdict(kind: str, result: str) -> None:
    emit("Verdicts", Kind=kind, Result=result)


def wake_duration(endpoint: str, seconds: float) -> None:
    emit("WakeDurationSeconds", seconds, "Seconds", EndpointName=endpoint)


def delivery_reconciled(action: str) -> None:
    emit("DeliveriesReconciled", Action=action)
