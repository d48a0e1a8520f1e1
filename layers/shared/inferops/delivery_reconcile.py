"""The scheduled reconciliation of deliveries with the model registry: the fallback for lost events.

A delivery starts when the registry's "SageMaker Model Package State Change" event arrives, and a queued one
when the previous delivery's Finished event arrives (`inferops.deliveries`); EventBridge can lose either. On a
schedule (template parameter `DeliveryReconcileMinutes`), for each group with a delivery policy:

- a live delivery whose version is now Rejected, and whose production stage has not started, is stopped as
  the Rejected event would have stopped it;
- the group's latest Approved version with no delivery, and no delivery of a newer version, is recorded and
  started as the Approved event would have: the same code (`deliveries.on_package_change`), so the delivery id
  is the version's and the sweep and a late event never make two. Not a version approved before the policy
  existed (its LastModifiedTime is older than the policy's creation), and not one changed less than
  `GRACE_SECONDS` ago: the event has its turn first;
- a queued delivery whose group's lock is free, with no delivery of the group ended in the last
  `GRACE_SECONDS` (that one's Finished event has its turn first), is started (`deliveries.launch_next`).

Each repair is logged by the caller and counted: metric `DeliveriesReconciled` {Action: started, stopped, launched}.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import ConfigDict

from inferops import deliveries, metrics
from inferops.delivery import KIND, Services, group_lock
from inferops.errors import InferOpsError, NotFound
from inferops.model import Model
from inferops.storage import OperationRecord, OperationStatus, Repository

if TYPE_CHECKING:
    from mypy_boto3_sagemaker import SageMakerClient

GRACE_SECONDS = 180
"""How long after a registry change (or a delivery's end) the sweep leaves the event to do its work."""
EVENT_ID = "reconciliation"
"""Stands for the lost event's id on a delivery the sweep recorded."""
_LISTED = 10


class Decision(Model):
    """What the sweep did (or deliberately did not do) for a group: `started`, `stopped` and `launched` are
    repairs of a lost event; `skipped` says why a version without a delivery was left alone."""

    model_config = ConfigDict(frozen=True)

    group: str
    action: Literal["started", "stopped", "launched", "skipped"]
    delivery: str
    why: str


class Sweep(Model):
    model_config = ConfigDict(frozen=True)

    decisions: list[Decision]
    failures: dict[str, str]
    """Groups the sweep could not read (throttled, no access): the next sweep tries again."""


def reconcile(clients: Services, now: float) -> Sweep:
    """Reconcile every group that has a delivery policy; one group's failure does not stop the others."""
    decisions: list[Decision] = []
    failures: dict[str, str] = {}
    for stored in clients.repo.delivery_policies():
        group = str(stored["group"])
        try:
            decisions += reconcile_group(group, _parse(str(stored["created_at"])), clients, now)
        except (ClientError, InferOpsError) as error:
            failures[group] = str(error)
    for decision in decisions:
        if decision.action != "skipped":
            metrics.delivery_reconciled(decision.action)
    return Sweep(decisions=decisions, failures=failures)


def reconcile_group(group: str, policy_since: float, clients: Services, now: float) -> list[Decision]:
    repo, sagemaker = clients.repo, clients.deployments.sagemaker
    records = _deliveries(repo, group)
    decisions = [
        stopped for record in records if (stopped := _stop_if_rejected(record, sagemaker, clients, now)) is not None
    ]
    latest = _latest_approved(sagemaker, group)
    if latest is not None:
        decision = _deliver_if_missed(group, latest, records, policy_since, clients, now)
        decisions += [decision] if decision is not None else []
    launched = _launch_if_stuck(group, clients, now)
    return decisions + ([launched] if launched is not None else [])


def _stop_if_rejected(
    record: OperationRecord, sagemaker: SageMakerClient, clients: Services, now: float
) -> Decision | None:
    if record.terminal or record.stop_request or deliveries.production_started(clients.repo, record):
        return None
    arn = str(record.request["model_package_arn"])
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    if package["ModelApprovalStatus"] != "Rejected" or _changed_at(package) > now - GRACE_SECONDS:
        return None
    done = deliveries.on_package_change(
        _change(record.endpoint, deliveries.version_of(record), arn, "Rejected"), clients
    )
    if done["action"] != "cancelled":
        return None
    return Decision(group=record.endpoint, action="stopped", delivery=record.id, why="version rejected, event lost")


def _deliver_if_missed(
    group: str,
    latest: dict[str, Any],
    records: list[OperationRecord],
    policy_since: float,
    clients: Services,
    now: float,
) -> Decision | None:
    version, arn = int(latest["ModelPackageVersion"]), str(latest["ModelPackageArn"])
    the_id = deliveries.delivery_id(group, version)
    if any(r.id == the_id for r in records) or _recorded(clients.repo, the_id):
        return None
    newer = [r for r in records if deliveries.version_of(r) > version]
    if newer:
        return _skipped(group, the_id, f"a newer version has a delivery ({newer[0].id})")
    package = clients.deployments.sagemaker.describe_model_package(ModelPackageName=arn)
    approved_at = _changed_at(package)
    if approved_at < policy_since:
        return _skipped(group, the_id, f"version {version} was approved before the group's delivery policy existed")
    if approved_at > now - GRACE_SECONDS:
        return _skipped(group, the_id, f"version {version} was approved less than {GRACE_SECONDS} s ago")
    done = deliveries.on_package_change(_change(group, version, arn, "Approved"), clients)
    if done["action"] != "recorded":
        return None
    why = "approved in the registry, its event never arrived: started by the scheduled reconciliation"
    clients.repo.append_timeline(the_id, "reconciled", why)
    return Decision(group=group, action="started", delivery=the_id, why=why)


def _launch_if_stuck(group: str, clients: Services, now: float) -> Decision | None:
    """A queued delivery waits for the previous one's Finished event; started here if that event was lost."""
    repo = clients.repo
    records = _deliveries(repo, group)  # again: the approval above may have queued or started one
    queued = [r for r in records if r.status is OperationStatus.PENDING and r.execution_arn is None]
    if not queued:
        return None
    lock = repo.get_lock(group_lock(group))
    if lock is not None and not lock.is_expired(now):
        return None
    if any(r.terminal and r.updated_at.timestamp() > now - GRACE_SECONDS for r in records):
        return None
    started = deliveries.launch_next(group, clients)
    if started is None:
        return None
    return Decision(group=group, action="launched", delivery=started, why="queued, the previous delivery's end lost")


def _deliveries(repo: Repository, group: str) -> list[OperationRecord]:
    """The group's deliveries, newest first (one Query per page, never a Scan)."""
    found: list[OperationRecord] = []
    cursor: str | None = None
    while True:
        records, cursor = repo.page_operations(group, kind=KIND, limit=100, cursor=cursor)
        found += records
        if cursor is None:
            return found


def _recorded(repo: Repository, the_id: str) -> bool:
    """A consistent read of the version's delivery (the group's index is eventually consistent)."""
    try:
        repo.get_operation(the_id)
    except NotFound:
        return False
    return True


def _latest_approved(sagemaker: SageMakerClient, group: str) -> dict[str, Any] | None:
    listed = sagemaker.list_model_packages(
        ModelPackageGroupName=group,
        ModelApprovalStatus="Approved",
        ModelPackageType="Versioned",
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=_LISTED,
    )["ModelPackageSummaryList"]
    versioned: list[dict[str, Any]] = [dict(p) for p in listed if p.get("ModelPackageVersion")]
    return max(versioned, key=lambda p: int(p["ModelPackageVersion"]), default=None)


def _changed_at(package: Any) -> float:
    """When the version's approval last changed: DescribeModelPackage's LastModifiedTime (else its creation)."""
    when = package.get("LastModifiedTime") or package["CreationTime"]
    return float(when.timestamp())


def _change(group: str, version: int, arn: str, approval: Literal["Approved", "Rejected"]) -> deliveries.PackageChange:
    return deliveries.PackageChange(event_id=EVENT_ID, group=group, version=version, arn=arn, approval=approval)


def _skipped(group: str, the_id: str, why: str) -> Decision:
    return Decision(group=group, action="skipped", delivery=the_id, why=why)


def _parse(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()
