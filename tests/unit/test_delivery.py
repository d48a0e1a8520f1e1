"""The delivery flow's steps and the registry/Finished-event reactions, one by one: DynamoDB in moto, a recording
Step Functions fake, and the children's start code replaced where the step's decision is what is tested."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from inferops import deliveries, delivery, delivery_reconcile, deployments, shadow_tests
from inferops.delivery import DeliveryState, Services
from inferops.delivery_policy import DeliveryPolicy
from inferops.errors import Conflict, InvalidInput
from inferops.planner import PlanResult, Violation
from inferops.rollout import Retryable
from inferops.storage import OperationStatus, Repository, WaitPurpose

EVENTS = Path(__file__).resolve().parents[2] / "events" / "delivery_events"
GROUP = "fraud-scorer"
ARN = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/2"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()  # a Monday
S = OperationStatus


class StepFunctions:
    class exceptions:
        ClientError = ClientError

        class ExecutionAlreadyExists(Exception):
            pass

    def __init__(self) -> None:
        self.successes: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, str, str]] = []
        self.started: list[dict[str, Any]] = []

    def send_task_success(self, taskToken: str, output: str) -> None:
        self.successes.append((taskToken, json.loads(output)))

    def send_task_failure(self, taskToken: str, error: str, cause: str) -> None:
        self.failures.append((taskToken, error, cause))

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict[str, str]:
        self.started.append({"name": name, "input": json.loads(input)})
        return {"executionArn": f"arn:aws:states:us-east-1:123456789012:execution:delivery:{name}"}


@pytest.fixture
def repo(ddb_table: Repository) -> Repository:
    clock = [NOW]
    repo = Repository(ddb_table.table_name, client=ddb_table.client, clock=lambda: clock[0])
    repo.tick = clock  # type: ignore[attr-defined]
    return repo


@pytest.fixture
def sfn() -> StepFunctions:
    return StepFunctions()


@pytest.fixture
def services(repo: Repository, sfn: StepFunctions) -> Services:
    return Services(
        deployments=deployments.Clients(repo, None, None, None, sfn, "arn:deployment"),  # type: ignore[arg-type]
        shadow_tests=shadow_tests.Clients(repo, None, None, None, sfn, "arn:shadow"),  # type: ignore[arg-type]
        delivery_state_machine_arn="arn:delivery",
    )


def policy(**extra: Any) -> DeliveryPolicy:
    stages = [
        {"name": "staging", "endpoint_name": "fraud-staging", "deployment": {"strategy": {"type": "canary"}}},
        {"name": "production", "endpoint_name": "fraud-prod", "deployment": {"strategy": {"type": "canary"}}},
    ]
    for index, stage_extra in extra.pop("stage_extra", {}).items():
        stages[index] = {**stages[index], **stage_extra}
    return DeliveryPolicy.model_validate({"stages": stages, **extra})


def recorded(repo: Repository, the_policy: DeliveryPolicy, version: int = 2) -> DeliveryState:
    """A delivery recorded as the approval event records it, and the flow's first state."""
    arn = ARN.replace("/2", f"/{version}")
    request = {
        "group": GROUP,
        "version": version,
        "model_package_arn": arn,
        "policy": the_policy.model_dump(mode="json"),
    }
    record = repo.create_operation(delivery.KIND, GROUP, request, deliveries.delivery_id(GROUP, version))
    return deliveries.state_of(record)


def in_production(repo: Repository, state: DeliveryState) -> DeliveryState:
    """The recorded delivery started, staging done, production's deployment running."""
    repo.set_execution(state.delivery_id, "arn:execution")
    stages = [s.model_copy(update={"status": "SUCCEEDED"}) for s in state.stages]
    stages[1] = stages[1].model_copy(
        update={
            "status": "RUNNING",
            "children": [delivery.ChildRun(kind="deployment", operation_id="op-x", started_at=NOW)],
        }
    )
    running = state.model_copy(update={"stages": stages, "stage": 1})
    delivery.save(running, repo)
    return running


def child(repo: Repository, endpoint: str, status: S, **result: Any) -> str:
    record = repo.create_operation("deployment", endpoint, {"model": {"model_package_arn": ARN}})
    repo.transition(record.id, S.RUNNING)
    if status is not S.RUNNING:
        repo.transition(record.id, status, result={"reason": f"it {status}", **result})
    return record.id


def started_with(monkeypatch: pytest.MonkeyPatch, repo: Repository, status: S = S.RUNNING) -> list[Any]:
    """Replace deployments.start: records the request, creates the child with `status`."""
    calls: list[Any] = []

    def start(request: Any, clients: Any) -> deployments.Started:
        calls.append(request)
        the_id = child(repo, request.endpoint_name, status)
        return deployments.Started.model_construct(id=the_id, status="PENDING")

    monkeypatch.setattr(delivery.deployments, "start", start)
    return calls


# ------------------------------------------------------------------------------------------------ the flow
def test_a_delivery_starts_each_stage_with_the_version_and_moves_on_when_it_succeeds(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services
) -> None:
    calls = started_with(monkeypatch, repo)
    state = delivery.begin(recorded(repo, policy()), services)
    assert state.next == "advance" and repo.get_operation(state.delivery_id).status is S.RUNNING
    assert repo.get_lock(delivery.group_lock(GROUP)).owner == state.delivery_id  # type: ignore[union-attr]
    state = delivery.advance(state, services)
    assert state.next == "start"
    state = delivery.start_child(state, services)
    assert (state.next, calls[0].endpoint_name, calls[0].model.model_package_arn) == ("await", "fraud-staging", ARN)
    first = state.stages[0].children[0].operation_id
    repo.transition(first, S.SUCCEEDED, result={"reason": "served"})
    state = delivery.check_child(state, services)
    assert (state.next, state.stage, state.stages[0].status) == ("advance", 1, "SUCCEEDED")
    state = delivery.start_child(delivery.advance(state, services), services)
    assert calls[1].endpoint_name == "fraud-prod"
    repo.transition(state.stages[1].children[0].operation_id, S.SUCCEEDED, result={"reason": "served"})
    state = delivery.advance(delivery.check_child(state, services), services)
    assert state.outcome is not None and state.outcome.status is S.SUCCEEDED
    done = delivery.finish(state, services)
    assert done.event is not None and done.event["status"] == "SUCCEEDED"
    assert repo.get_operation(state.delivery_id).status is S.SUCCEEDED
    assert repo.get_lock(delivery.group_lock(GROUP)) is None
    view = deliveries.get(state.delivery_id, repo)
    assert [s.status for s in view.stages] == ["SUCCEEDED", "SUCCEEDED"]
    assert [s.operations[0]["id"] for s in view.stages] == [first, state.stages[1].children[0].operation_id]


def test_a_failed_stage_stops_the_delivery_with_the_childs_reason_and_diagnosis(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services
) -> None:
    started_with(monkeypatch, repo)
    state = delivery.start_child(
        delivery.advance(delivery.begin(recorded(repo, policy()), services), services), services
    )
    diagnosis = {"summary": "the container fails its ping health check", "findings": []}
    repo.transition(
        state.stages[0].children[0].operation_id, S.FAILED, result={"reason": "health check", "diagnosis": diagnosis}
    )
    state = delivery.check_child(state, services)
    assert state.next == "finish" and state.outcome is not None
    assert state.outcome.failed_stage == "staging" and "not delivered to production" in state.outcome.reason
    delivery.finish(state, services)
    view = deliveries.get(state.delivery_id, repo)
    assert (view.status, view.failed_stage, view.diagnosis) == (S.FAILED, "staging", diagnosis)
    assert [s.status for s in view.stages] == ["FAILED", "PENDING"]


def test_the_heartbeat_reads_the_childs_record_and_waits_again(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services, sfn: StepFunctions
) -> None:
    started_with(monkeypatch, repo)
    state = delivery.start_child(
        delivery.advance(delivery.begin(recorded(repo, policy()), services), services), services
    )
    delivery.await_child(state, services, "token-1")
    assert sfn.successes == []  # the child runs: the token waits for its Finished event
    parked = repo.get_task_token("fraud-staging", WaitPurpose.DELIVERY_STAGE)
    assert parked is not None and parked.operation_id == state.stages[0].children[0].operation_id
    again = delivery.check_child(state, services)
    assert again.next == "await"
    repo.transition(state.stages[0].children[0].operation_id, S.SUCCEEDED, result={"reason": "ok"})
    delivery.await_child(state, services, "token-2")  # ended meanwhile: the step resumes itself
    assert sfn.successes == [("token-2", {"source": "record"})]


def test_approval_parks_a_token_under_the_delivery_and_the_approval_starts_the_stage(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services, sfn: StepFunctions
) -> None:
    the_policy = policy(stage_extra={0: {"approval": True}}, approval_timeout_hours=2)
    state = delivery.advance(delivery.begin(recorded(repo, the_policy), services), services)
    assert (
        state.next == "hold" and state.hold is not None and (state.hold.kind, state.hold.seconds) == ("approval", 7200)
    )
    assert repo.get_operation(state.delivery_id).status is S.PAUSED
    delivery.hold(state, services, "hold-token")
    view = deliveries.approve(state.delivery_id, services, by="alice")
    assert sfn.successes == [("hold-token", {"approved_by": "alice"})]
    assert view.waiting_for == "approval"  # until the flow goes on
    resumed = delivery.advance(state.model_copy(update={"resumed": {"approved_by": "alice"}}), services)
    assert resumed.next == "start" and resumed.stages[0].approved_by == "alice"
    assert repo.get_operation(state.delivery_id).status is S.RUNNING
    with pytest.raises(Conflict, match="not waiting for an approval"):
        deliveries.approve(state.delivery_id, services, by="alice")
    expired = delivery.hold_ended(state, services)
    assert expired.outcome is not None and "no approval within 2 h" in expired.outcome.reason


def test_a_delivery_about_to_wait_gives_way_to_a_newer_queued_version(repo: Repository, services: Services) -> None:
    state = delivery.begin(recorded(repo, policy(stage_extra={1: {"approval": True}})), services)
    state = state.model_copy(update={"stage": 1})  # staging done: production waits for a human
    recorded(repo, policy(), version=3)  # approved meanwhile, queued behind this delivery
    ended = delivery.advance(state, services)
    assert ended.outcome is not None and ended.outcome.status is S.ABORTED
    assert "superseded by version 3" in ended.outcome.reason and ended.stages[1].status == "CANCELLED"


def test_a_freeze_window_defers_the_stage_until_it_lifts(repo: Repository, services: Services) -> None:
    monday_10 = {"kind": "weekly", "days": ["MON"], "start": "08:00", "end": "10:00"}
    state = delivery.advance(delivery.begin(recorded(repo, policy(freeze_windows=[monday_10])), services), services)
    assert state.next == "hold" and state.hold is not None
    assert (state.hold.kind, state.hold.seconds) == ("freeze", 3600)  # 09:00 -> 10:00
    assert state.stages[0].status == "DEFERRED"
    assert deliveries.get(state.delivery_id, repo).stages[0].deferred_until == "2026-01-05T10:00:00Z"
    lifted = delivery.hold_ended(state, services)
    repo.tick[0] = NOW + 3600  # type: ignore[attr-defined]
    assert lifted.next == "advance" and delivery.advance(lifted, services).next == "start"


def test_a_cancel_fails_the_parked_hold_and_aborts_a_running_child(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services, sfn: StepFunctions
) -> None:
    frozen = {"kind": "weekly", "days": ["MON"], "start": "08:00", "end": "10:00"}
    state = delivery.advance(delivery.begin(recorded(repo, policy(freeze_windows=[frozen])), services), services)
    delivery.save(state, repo)
    repo.set_execution(state.delivery_id, "arn:execution")
    delivery.hold(state, services, "hold-token")
    deliveries.cancel(state.delivery_id, services, by="bob", reason="wrong version")
    assert sfn.failures == [("hold-token", "StopRequested", "wrong version")]
    stopped = delivery.handle_failure(
        state.model_copy(update={"error": {"Error": "StopRequested", "Cause": "wrong version"}}), services
    )
    assert stopped.outcome is not None and stopped.outcome.status is S.ABORTED
    assert stopped.stages[0].status == "CANCELLED"

    repo.release_lock(delivery.group_lock(GROUP), state.delivery_id)
    aborted: list[str] = []
    monkeypatch.setattr(deliveries.deployments, "abort", lambda the_id, clients, by, reason: aborted.append(the_id))
    started_with(monkeypatch, repo)
    other = recorded(repo, policy(), version=3)
    repo.set_execution(other.delivery_id, "arn:execution-3")
    other = delivery.start_child(delivery.advance(delivery.begin(other, services), services), services)
    deliveries.cancel(other.delivery_id, services, by="bob")
    assert aborted == [other.stages[0].children[0].operation_id]
    repo.transition(aborted[0], S.ABORTED, result={"reason": "aborted by bob"})
    ended = delivery.check_child(other, services)
    assert (
        ended.outcome is not None and ended.outcome.status is S.ABORTED and "cancelled by bob" in ended.outcome.reason
    )


def test_a_refused_stage_fails_with_the_planners_reason(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services
) -> None:
    violation = Violation(field="model.model_package_arn", rule="package_approved", message="not Approved", fix="x")

    def refuse(request: Any, clients: Any) -> None:
        raise deployments.Refused(PlanResult(ok=False, violations=[violation], plan=None, warnings=[]))

    monkeypatch.setattr(delivery.deployments, "start", refuse)
    state = delivery.advance(delivery.begin(recorded(repo, policy()), services), services)
    failed = delivery.start_child(state, services)
    assert failed.outcome is not None and "refused" in failed.outcome.reason and "not Approved" in failed.outcome.reason


def test_a_throttled_start_is_retried_not_a_failed_stage(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services
) -> None:
    """Found by the chaos suite: a throttled DescribeEndpointConfig in the deployment's pre-flight failed the stage."""

    def throttled(request: Any, clients: Any) -> None:
        error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
        raise ClientError(error, "DescribeEndpointConfig")  # type: ignore[arg-type]

    monkeypatch.setattr(delivery.deployments, "start", throttled)
    state = delivery.advance(delivery.begin(recorded(repo, policy()), services), services)
    with pytest.raises(Retryable, match="stage staging: starting the deployment: ThrottlingException"):
        delivery.start_child(state, services)
    assert repo.get_operation(state.delivery_id).status is S.RUNNING


def test_a_busy_endpoint_is_retried_unless_the_holder_is_our_own_child(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services
) -> None:
    def busy(request: Any, clients: Any) -> None:
        raise Conflict("endpoint fraud-staging already has an operation in flight", "endpoint_name")

    monkeypatch.setattr(delivery.deployments, "start", busy)
    state = delivery.advance(delivery.begin(recorded(repo, policy()), services), services)
    other = repo.create_operation("deployment", "fraud-staging", {"model": {"model_package_arn": "someone-else"}})
    repo.acquire_lock("fraud-staging", other.id, 600)
    with pytest.raises(delivery.EndpointBusy):
        delivery.start_child(state, services)
    repo.release_lock("fraud-staging", other.id)
    ours = child(repo, "fraud-staging", S.RUNNING)
    repo.acquire_lock("fraud-staging", ours, 600)
    adopted = delivery.start_child(state, services)  # a retried start finds the child it started
    assert adopted.stages[0].children[0].operation_id == ours


def test_a_shadow_test_runs_first_and_a_promotion_ends_the_stage(
    monkeypatch: pytest.MonkeyPatch, repo: Repository, services: Services
) -> None:
    shadow = {"role_arn": "arn:aws:iam::123456789012:role/Shadow", "action": "promote", "duration_hours": 1}

    def start_shadow(request: Any, clients: Any) -> shadow_tests.Started:
        record = repo.create_operation("shadow-test", request.endpoint_name, {})
        return shadow_tests.Started.model_construct(id=record.id, status="PENDING")

    monkeypatch.setattr(delivery.shadow_tests, "start", start_shadow)
    state = recorded(repo, policy(stage_extra={0: {"shadow_test": shadow}}))
    assert delivery.next_child(state) == "shadow_test"
    state = delivery.start_child(delivery.advance(delivery.begin(state, services), services), services)
    test_id = state.stages[0].children[0].operation_id
    repo.transition(test_id, S.RUNNING)
    repo.transition(test_id, S.SUCCEEDED, result={"reason": "promoted", "decision": "promote"})
    promoted = delivery.check_child(state, services)
    assert (promoted.stage, promoted.stages[0].status) == (1, "SUCCEEDED")
    kept = repo.create_operation("shadow-test", "fraud-staging", {})
    repo.transition(kept.id, S.RUNNING)
    repo.transition(kept.id, S.SUCCEEDED, result={"reason": "passed; production kept", "decision": "discard"})
    run = state.stages[0].model_copy(
        update={"children": [state.stages[0].children[0].model_copy(update={"operation_id": kept.id})]}
    )
    passed = delivery.check_child(state.model_copy(update={"stages": [run, state.stages[1]]}), services)
    assert (passed.next, passed.stage) == ("advance", 0) and delivery.next_child(passed) == "deployment"


# ------------------------------------------------------------------------------------------------ events
def _event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def test_the_registry_event_is_read_as_published() -> None:
    change = deliveries.normalize_package_event(_event("model_package_approved"))
    assert (change.group, change.version, change.arn, change.approval) == (GROUP, 2, ARN, "Approved")
    assert deliveries.normalize_package_event(_event("model_package_rejected")).approval == "Rejected"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda e: e["detail"].pop("ModelPackageVersion"), "detail.ModelPackageVersion"),
        (lambda e: e["detail"].update(ModelApprovalStatus="Maybe"), "detail.ModelApprovalStatus"),
        (lambda e: e["detail"].update(ModelPackageVersion=3), "detail.ModelPackageArn"),
        (lambda e: e.update({"detail-type": "SageMaker Model State Change"}), "detail-type"),
    ],
)
def test_a_malformed_registry_event_names_the_field(change: Any, field: str) -> None:
    event = _event("model_package_approved")
    change(event)
    with pytest.raises(InvalidInput) as raised:
        deliveries.normalize_package_event(event)
    assert raised.value.field == field


def test_approvals_record_one_delivery_per_version_queue_and_supersede(
    repo: Repository, services: Services, sfn: StepFunctions
) -> None:
    approved = deliveries.normalize_package_event(_event("model_package_approved"))
    assert deliveries.on_package_change(approved, services)["action"] == "ignored"  # no policy yet
    repo.put_delivery_policy(GROUP, policy().model_dump(mode="json"), by="alice")
    first = deliveries.on_package_change(approved, services)
    assert first["action"] == "recorded" and first["started"] == "dlv-fraud-scorer-2"
    assert deliveries.on_package_change(approved, services)["action"] == "duplicate"
    assert [s["name"] for s in sfn.started] == ["dlv-fraud-scorer-2"]  # one execution, whatever the repeats

    def version(n: int) -> deliveries.PackageChange:
        repo.tick[0] += 60  # type: ignore[attr-defined]
        return approved.model_copy(update={"version": n, "arn": ARN.replace("/2", f"/{n}")})

    queued = deliveries.on_package_change(version(3), services)  # v2 holds the group: v3 queues
    assert queued["started"] is None and repo.get_operation("dlv-fraud-scorer-3").status is S.PENDING
    assert deliveries.on_package_change(version(4), services)["superseded"] == ["dlv-fraud-scorer-3"]
    assert repo.get_operation("dlv-fraud-scorer-3").status is S.ABORTED
    late = deliveries.on_package_change(version(1), services)  # an older approval arriving late
    assert late["action"] == "superseded" and repo.get_operation("dlv-fraud-scorer-1").status is S.ABORTED
    repo.release_lock(delivery.group_lock(GROUP), "dlv-fraud-scorer-2")
    finished = {
        "detail-type": "InferOps Delivery Finished",
        "id": "e1",
        "detail": {"deliveryId": "dlv-fraud-scorer-2", "modelPackageGroupName": GROUP, "status": "SUCCEEDED"},
    }
    launched = deliveries.on_inferops_event(deliveries.normalize_inferops_event(finished), services)
    assert launched == {"action": "launch", "started": "dlv-fraud-scorer-4"}
    repo.transition("dlv-fraud-scorer-2", S.RUNNING)
    repo.transition("dlv-fraud-scorer-2", S.SUCCEEDED)
    repo.transition("dlv-fraud-scorer-4", S.ABORTED)
    repo.tick[0] += 60  # type: ignore[attr-defined]
    older = deliveries.on_package_change(approved.model_copy(update={"version": 0}), services)
    assert older["action"] == "superseded"  # version 2 was delivered: an older approval never rolls back
    page = deliveries.list_page(repo, GROUP, status=None, limit=2, next_token=None)
    assert [d.version for d in page.deliveries] == [0, 1] and page.next_token


def test_a_rejection_stops_a_delivery_before_production_only(repo: Repository, services: Services) -> None:
    rejected = deliveries.normalize_package_event(_event("model_package_rejected"))
    assert deliveries.on_package_change(rejected, services)["action"] == "ignored"
    state = recorded(repo, policy())
    assert deliveries.on_package_change(rejected, services)["action"] == "cancelled"
    assert repo.get_operation(state.delivery_id).status is S.ABORTED  # queued: ends at once

    later = in_production(repo, recorded(repo, policy(), version=5))
    five = rejected.model_copy(update={"version": 5, "arn": ARN.replace("/2", "/5")})
    kept = deliveries.on_package_change(five, services)
    assert kept["action"] == "kept" and repo.get_operation(later.delivery_id).stop_request is None


def test_a_childs_finished_event_resumes_only_the_delivery_waiting_for_it(
    repo: Repository, services: Services, sfn: StepFunctions
) -> None:
    event = _event("deployment_finished")
    finished = deliveries.normalize_inferops_event(event)
    assert deliveries.on_inferops_event(finished, services)["action"] == "ignored"
    repo.put_task_token("fraud-scorer-staging", WaitPurpose.DELIVERY_STAGE, "t-other", "op-other", 600)
    assert deliveries.on_inferops_event(finished, services)["action"] == "ignored"
    repo.put_task_token("fraud-scorer-staging", WaitPurpose.DELIVERY_STAGE, "t-1", finished.operation_id, 600)
    assert deliveries.on_inferops_event(finished, services)["action"] == "resumed"
    assert deliveries.on_inferops_event(finished, services)["action"] == "ignored"  # a repeat finds no token
    assert sfn.successes == [("t-1", {"source": "event", "status": "SUCCEEDED"})]
    event["detail"].pop("operationId")
    with pytest.raises(InvalidInput, match="operationId"):
        deliveries.normalize_inferops_event(event)


# ------------------------------------------------------------------------------------------------ reconciliation
class Registry:
    """ListModelPackages and DescribeModelPackage over versions of GROUP: version -> (approval, changed at)."""

    def __init__(self) -> None:
        self.versions: dict[int, tuple[str, float]] = {}

    def list_model_packages(self, **query: Any) -> dict[str, Any]:
        if query["ModelPackageGroupName"] != GROUP:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListModelPackages")
        assert query["SortOrder"] == "Descending"
        chosen = [v for v, (approval, _) in self.versions.items() if approval == query["ModelApprovalStatus"]]
        summaries = [{"ModelPackageVersion": v, "ModelPackageArn": _arn(v)} for v in sorted(chosen, reverse=True)]
        return {"ModelPackageSummaryList": summaries}

    def describe_model_package(self, ModelPackageName: str) -> dict[str, Any]:
        approval, changed = self.versions[int(ModelPackageName.rsplit("/", 1)[1])]
        when = datetime.fromtimestamp(changed, UTC)
        return {"ModelPackageArn": ModelPackageName, "ModelApprovalStatus": approval, "LastModifiedTime": when}


def _arn(version: int) -> str:
    return ARN.replace("/2", f"/{version}")


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def sweeping(services: Services, registry: Registry) -> Services:
    """The services with the registry as their SageMaker client (the sweep reads it)."""
    with_registry = dataclasses.replace(services.deployments, sagemaker=registry)  # type: ignore[arg-type]
    return dataclasses.replace(services, deployments=with_registry)


def sweep(repo: Repository, services: Services, after: float) -> list[tuple[str, str, str]]:
    """Let `after` seconds pass, then sweep: (action, delivery, why) of each decision."""
    repo.tick[0] += after  # type: ignore[attr-defined]
    done = delivery_reconcile.reconcile(services, repo.now())
    assert done.failures == {}
    return [(d.action, d.delivery, d.why) for d in done.decisions]


def test_the_sweep_starts_a_lost_approval_after_the_grace_period_once_whatever_the_late_event(
    repo: Repository, sweeping: Services, registry: Registry, sfn: StepFunctions, capsys: pytest.CaptureFixture[str]
) -> None:
    repo.put_delivery_policy(GROUP, policy().model_dump(mode="json"), by="alice")
    registry.versions = {1: ("Approved", NOW - 86400), 2: ("Approved", NOW + 60)}  # v2's event is lost
    early = sweep(repo, sweeping, 120)
    started = sweep(repo, sweeping, delivery_reconcile.GRACE_SECONDS)
    metric = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "DeliveriesReconciled" in line]
    late_event = deliveries.on_package_change(
        deliveries.normalize_package_event(_event("model_package_approved")), sweeping
    )
    again = sweep(repo, sweeping, 600)

    assert early == [("skipped", "dlv-fraud-scorer-2", "version 2 was approved less than 180 s ago")]
    assert [(action, the_id) for action, the_id, _ in started] == [("started", "dlv-fraud-scorer-2")]
    assert [s["name"] for s in sfn.started] == ["dlv-fraud-scorer-2"]
    assert repo.get_operation("dlv-fraud-scorer-2").request["event_id"] == delivery_reconcile.EVENT_ID
    assert [e.kind for e in repo.timeline("dlv-fraud-scorer-2")] == ["approved", "reconciled"]
    assert metric and metric[0]["Action"] == "started" and metric[0]["DeliveriesReconciled"] == [1.0]
    assert late_event["action"] == "duplicate" and again == []  # delivered: neither makes a second delivery
    assert len(sfn.started) == 1


def test_the_sweep_leaves_versions_approved_before_the_policy_and_older_than_a_delivered_one(
    repo: Repository, sweeping: Services, registry: Registry, sfn: StepFunctions
) -> None:
    registry.versions = {4: ("Approved", NOW - 3600)}
    repo.put_delivery_policy(GROUP, policy().model_dump(mode="json"), by="alice")
    before_policy = sweep(repo, sweeping, 600)
    delivered = recorded(repo, policy(), version=5)  # version 5 was delivered, then rejected in the registry
    repo.transition(delivered.delivery_id, S.RUNNING)
    repo.transition(delivered.delivery_id, S.SUCCEEDED)
    registry.versions = {4: ("Approved", NOW + 60), 5: ("Rejected", NOW + 120)}
    older = sweep(repo, sweeping, 600)

    assert before_policy == [
        ("skipped", "dlv-fraud-scorer-4", "version 4 was approved before the group's delivery policy existed")
    ]
    assert older == [("skipped", "dlv-fraud-scorer-4", "a newer version has a delivery (dlv-fraud-scorer-5)")]
    assert sfn.started == [] and deliveries.list_page(repo, GROUP, status=None, limit=5, next_token=None).deliveries


def test_the_sweep_launches_a_queued_delivery_whose_predecessors_end_was_lost(
    repo: Repository, sweeping: Services, registry: Registry, sfn: StepFunctions
) -> None:
    repo.put_delivery_policy(GROUP, policy().model_dump(mode="json"), by="alice")
    registry.versions = {2: ("Approved", NOW), 3: ("Approved", NOW + 1)}
    for version in (2, 3):  # both events arrive: v2 starts and holds the group, v3 queues behind it
        change = deliveries.normalize_package_event(_event("model_package_approved"))
        deliveries.on_package_change(change.model_copy(update={"version": version, "arn": _arn(version)}), sweeping)
    repo.acquire_lock(delivery.group_lock(GROUP), "dlv-fraud-scorer-2", delivery.GROUP_LEASE_SECONDS)  # its 1st step
    running = sweep(repo, sweeping, 3600)
    repo.transition("dlv-fraud-scorer-2", S.RUNNING)
    repo.transition("dlv-fraud-scorer-2", S.SUCCEEDED)
    repo.release_lock(delivery.group_lock(GROUP), "dlv-fraud-scorer-2")  # ... and its Finished event is lost
    just_ended = sweep(repo, sweeping, 60)
    launched = sweep(repo, sweeping, delivery_reconcile.GRACE_SECONDS)

    assert running == [] and just_ended == []  # the group's lock is held, then the Finished event has its turn
    assert [(action, the_id) for action, the_id, _ in launched] == [("launched", "dlv-fraud-scorer-3")]
    assert [s["name"] for s in sfn.started] == ["dlv-fraud-scorer-2", "dlv-fraud-scorer-3"]


def test_the_sweep_stops_a_rejected_version_before_production_as_the_lost_event_would(
    repo: Repository, sweeping: Services, registry: Registry, sfn: StepFunctions
) -> None:
    repo.put_delivery_policy(GROUP, policy().model_dump(mode="json"), by="alice")
    waiting = recorded(repo, policy(), version=2)
    repo.set_execution(waiting.delivery_id, "arn:execution")
    repo.put_task_token(waiting.delivery_id, WaitPurpose.DELIVERY_HOLD, "t-hold", waiting.delivery_id, 3600)
    in_production(repo, recorded(repo, policy(), version=3))
    registry.versions = {2: ("Rejected", NOW + 60), 3: ("Rejected", NOW + 60)}
    stopped = sweep(repo, sweeping, 600)
    again = sweep(repo, sweeping, 600)

    assert [(action, the_id) for action, the_id, _ in stopped] == [("stopped", "dlv-fraud-scorer-2")]
    assert repo.get_operation("dlv-fraud-scorer-2").stop_request is not None
    assert sfn.failures == [("t-hold", "StopRequested", "version 2 was rejected in the model registry")]
    assert repo.get_operation("dlv-fraud-scorer-3").stop_request is None  # production started: it goes on
    assert again == []


def test_a_group_the_sweep_cannot_read_is_reported_and_the_others_are_reconciled(
    repo: Repository, sweeping: Services, registry: Registry
) -> None:
    repo.put_delivery_policy("ranker", policy().model_dump(mode="json"), by="alice")
    repo.put_delivery_policy(GROUP, policy().model_dump(mode="json"), by="alice")
    registry.versions = {2: ("Approved", NOW + 60)}
    repo.tick[0] += 600  # type: ignore[attr-defined]
    done = delivery_reconcile.reconcile(sweeping, repo.now())

    assert list(done.failures) == ["ranker"] and "AccessDeniedException" in done.failures["ranker"]
    assert [(d.group, d.action) for d in done.decisions] == [(GROUP, "started")]
