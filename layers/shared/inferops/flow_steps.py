"""What the flows share outside their steps: the clients a steps Lambda makes once, and starting an execution
under the endpoint's lock (the step runner itself is `inferops.handlers.run_step`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from pydantic import BaseModel

from inferops.errors import Conflict, NotFound
from inferops.rollout import Services
from inferops.storage import OperationRecord, OperationStatus, Repository

if TYPE_CHECKING:
    from mypy_boto3_application_autoscaling import ApplicationAutoScalingClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_sagemaker import SageMakerClient
    from mypy_boto3_stepfunctions import SFNClient


@dataclass(frozen=True)
class Clients:
    """What an API service needs to start a flow: the table, AWS clients and the flow's state machine."""

    repo: Repository
    sagemaker: SageMakerClient
    autoscaling: ApplicationAutoScalingClient
    cloudwatch: CloudWatchClient
    stepfunctions: SFNClient
    state_machine_arn: str


START_LEASE_SECONDS = 900  # the flow extends it at once; a flow that never starts frees the endpoint after this


def clients_from_env(state_machine_env: str) -> Clients:
    """An API service's clients (made by the API and the scheduled functions): the table, AWS, and the flow's state
    machine, whose ARN is in the environment variable `state_machine_env`."""
    return Clients(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker"),
        autoscaling=boto3.client("application-autoscaling"),
        cloudwatch=boto3.client("cloudwatch"),
        stepfunctions=boto3.client("stepfunctions"),
        state_machine_arn=os.environ[state_machine_env],
    )


def utc_text(epoch: float) -> str:
    """An instant as users read it in messages: 2026-01-05T09:00:00Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refuse_when_locked(repo: Repository, endpoint: str, field: str) -> None:
    """A busy endpoint is a 409 naming what holds it (kind, id, status) and when its lease ends."""
    holder = repo.get_lock(endpoint)
    if holder is None or holder.expired:
        return
    try:
        held = repo.get_operation(holder.owner)
        what = f"{held.kind} {holder.owner} ({held.status})"
    except NotFound:
        what = holder.owner
    raise Conflict(
        f"endpoint {endpoint} already has an operation in flight: {what}; its lock lease ends "
        f"{utc_text(holder.lease_expires_at)}",
        field,
    )


# One attempt per call: the state machine retries with backoff and jitter, visibly, on the flow's clock.
SDK_CONFIG = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)


@cache
def lambda_services() -> Services:
    """The clients of a steps Lambda, made once per container."""
    return Services(
        repo=Repository(os.environ["TABLE_NAME"]),
        sagemaker=boto3.client("sagemaker", config=SDK_CONFIG),
        autoscaling=boto3.client("application-autoscaling", config=SDK_CONFIG),
        cloudwatch=boto3.client("cloudwatch", config=SDK_CONFIG),
        stepfunctions=boto3.client("stepfunctions", config=SDK_CONFIG),
    )


def start_execution(
    repo: Repository,
    stepfunctions: SFNClient,
    state_machine_arn: str,
    record: OperationRecord,
    state: BaseModel,
    *,
    lease_seconds: float = START_LEASE_SECONDS,
    field: str = "endpoint_name",
) -> str:
    """Take the endpoint's lock for the operation (lost race: REFUSED, Conflict naming `field`), start the flow
    named after it (failing: lock released, FAILED) and record the execution; its ARN."""
    try:
        repo.acquire_lock(record.endpoint, record.id, lease_seconds)
    except Conflict as busy:
        repo.transition(record.id, OperationStatus.REFUSED, result={"reason": busy.message})
        raise Conflict(busy.message, field) from busy
    try:
        execution = stepfunctions.start_execution(
            stateMachineArn=state_machine_arn, name=record.id, input=state.model_dump_json()
        )
    except Exception as error:
        repo.release_lock(record.endpoint, record.id)
        repo.transition(record.id, OperationStatus.FAILED, result={"reason": f"the flow did not start: {error}"})
        raise
    repo.set_execution(record.id, execution["executionArn"])
    return execution["executionArn"]
