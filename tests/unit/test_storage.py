"""Storage against moto DynamoDB: records, status transitions, timelines, locks and task tokens."""

from __future__ import annotations

import ast
import math
import re
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from inferops import storage
from inferops.errors import Conflict, InvalidInput, NotFound
from inferops.storage import (
    ALARM_NAME_MAX_LENGTH,
    LOCK_TTL_GRACE_SECONDS,
    TERMINAL_RETENTION_DAYS,
    TERMINAL_STATUSES,
    TIMELINE_RETENTION_DAYS,
    OperationStatus,
    Repository,
    WaitPurpose,
)

S = OperationStatus
DAY = 86_400
T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z

# The transition map as the design states it, written out independently of the module's own table.
SPEC_TRANSITIONS: dict[OperationStatus, set[OperationStatus]] = {
    S.PENDING: {S.RUNNING, S.REFUSED, S.FAILED, S.ABORTED},
    S.RUNNING: {S.PAUSED, S.SUCCEEDED, S.FAILED, S.ROLLED_BACK, S.ABORTED},
    S.PAUSED: {S.RUNNING, S.ABORTED, S.FAILED, S.ROLLED_BACK},
    S.SUCCEEDED: set(),
    S.FAILED: set(),
    S.ROLLED_BACK: set(),
    S.REFUSED: set(),
    S.ABORTED: set(),
}


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingClient:
    """Delegates to a real client, records which API methods were called, and can run a hook before a call.

    `serialize=True` holds a lock around each API call. moto's in-memory DynamoDB evaluates a condition and
    stores the item in plain Python with no lock of its own, so two threads could both pass a condition
    inside moto (a flaw of the mock, not of DynamoDB, which serializes writes to one item). With the lock,
    each request is as atomic as it is in DynamoDB, while the threads still race to send their conditional
    writes: a check-then-write implementation would still let several of them win.
    """

    def __init__(self, inner: Any, *, serialize: bool = False) -> None:
        self._inner = inner
        self.calls: list[str] = []
        self.before: dict[str, deque[Callable[[], object]]] = {}
        self._lock = threading.Lock() if serialize else None

    def hook(self, method: str, action: Callable[[], object]) -> None:
        """Run `action` once, just before the next call of `method` reaches DynamoDB."""
        self.before.setdefault(method, deque()).append(action)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            pending = self.before.get(name)
            if pending:
                pending.popleft()()
            if self._lock is None:
                return target(*args, **kwargs)
            with self._lock:
                return target(*args, **kwargs)

        return call


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder(ddb_table: Repository) -> RecordingClient:
    return RecordingClient(ddb_table.client)


@pytest.fixture
def repo(ddb_table: Repository, recorder: RecordingClient, clock: FakeClock) -> Repository:
    return Repository(ddb_table.table_name, client=recorder, clock=clock)  # type: ignore[arg-type]


@pytest.fixture
def other(ddb_table: Repository, clock: FakeClock) -> Repository:
    """A second writer (another Lambda) on the same table and clock."""
    return Repository(ddb_table.table_name, client=ddb_table.client, clock=clock)


def raw_item(repo: Repository, pk: str, sk: str) -> dict[str, Any]:
    response = repo.client.get_item(
        TableName=repo.table_name, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )
    return response["Item"]


def drive_to(repo: Repository, operation_id: str, target: OperationStatus) -> None:
    """Reach `target` from PENDING through allowed transitions (shortest path in the spec map)."""
    paths: dict[OperationStatus, list[OperationStatus]] = {S.PENDING: []}
    queue = deque([S.PENDING])
    while queue:
        status = queue.popleft()
        for nxt in sorted(SPEC_TRANSITIONS[status]):
            if nxt not in paths:
                paths[nxt] = [*paths[status], nxt]
                queue.append(nxt)
    for step in paths[target]:
        repo.transition(operation_id, step)


# --- operations -----------------------------------------------------------------------------------------


def test_create_then_get_round_trips_every_json_type(repo: Repository, clock: FakeClock) -> None:
    request = {
        "model": "churn-v7",
        "canary_percent": 10,
        "bake_seconds": 600,
        "threshold": 0.25,
        "whole_float": 2.0,
        "huge": 10**20,
        "enabled": True,
        "alarms": ["a", "b"],
        "steps": [{"percent": 10, "weight": 0.1}, {"percent": 100, "weight": 1.0}],
        "note": None,
        "empty": "",
    }
    created = repo.create_operation("deployment", "churn-prod", request, operation_id="op-fixed-1")
    fetched = repo.get_operation("op-fixed-1")

    assert fetched == created
    assert fetched.status is S.PENDING
    assert fetched.version == 1
    assert fetched.expires_at is None
    assert fetched.result is None
    assert fetched.created_at == datetime.fromtimestamp(clock.now, tz=UTC)
    assert fetched.request == request
    assert type(fetched.request["canary_percent"]) is int
    assert type(fetched.request["huge"]) is int
    assert type(fetched.request["threshold"]) is float
    assert type(fetched.request["whole_float"]) is float
    assert type(fetched.request["steps"][0]["weight"]) is float
    assert type(fetched.version) is int


def test_generated_id_is_sortable_and_uses_the_injected_clock(repo: Repository, clock: FakeClock) -> None:
    first = repo.create_operation("scaling", "ep", {})
    clock.advance(1)
    second = repo.create_operation("scaling", "ep", {})

    assert re.fullmatch(r"op-20250615150640-[0-9a-f]{8}", first.id)
    assert re.fullmatch(r"op-20250615150641-[0-9a-f]{8}", second.id)
    assert first.id < second.id


def test_duplicate_id_is_a_conflict_and_keeps_the_original(repo: Repository) -> None:
    repo.create_operation("deployment", "ep", {"model": "v1"}, operation_id="op-dup")
    with pytest.raises(Conflict, match="op-dup already exists") as excinfo:
        repo.create_operation("deployment", "ep", {"model": "v2"}, operation_id="op-dup")

    assert excinfo.value.status_code == 409
    assert repo.get_operation("op-dup").request == {"model": "v1"}


def test_missing_operation_is_not_found(repo: Repository) -> None:
    with pytest.raises(NotFound, match="op-nope"):
        repo.get_operation("op-nope")
    with pytest.raises(NotFound):
        repo.transition("op-nope", S.RUNNING)


@pytest.mark.parametrize(
    ("endpoint", "operation_id", "request_body"),
    [
        ("ep#1", None, {}),
        ("", None, {}),
        ("ep", "op#1", {}),
        ("ep", "has space", {}),
        ("ep", None, {"x": float("nan")}),
        ("ep", None, {"x": [float("inf")]}),
    ],
)
def test_bad_input_is_refused_before_writing(
    repo: Repository,
    recorder: RecordingClient,
    endpoint: str,
    operation_id: str | None,
    request_body: dict[str, Any],
) -> None:
    with pytest.raises(InvalidInput):
        repo.create_operation("deployment", endpoint, request_body, operation_id=operation_id)
    assert recorder.calls == []


# --- transitions ----------------------------------------------------------------------------------------


def test_allowed_path_bumps_version_and_updated_at(repo: Repository, clock: FakeClock) -> None:
    op = repo.create_operation("deployment", "ep", {})
    seen = []
    for status in (S.RUNNING, S.PAUSED, S.RUNNING):
        clock.advance(10)
        record = repo.transition(op.id, status)
        seen.append((record.status, record.version, record.expires_at))
        assert record.updated_at == datetime.fromtimestamp(clock.now, tz=UTC)
        assert record.created_at == op.created_at

    assert seen == [(S.RUNNING, 2, None), (S.PAUSED, 3, None), (S.RUNNING, 4, None)]
    assert repo.get_operation(op.id).version == 4


def test_terminal_status_sets_result_and_ttl(repo: Repository, clock: FakeClock) -> None:
    op = repo.create_operation("deployment", "ep", {})
    repo.transition(op.id, S.RUNNING)
    clock.advance(123.4)
    done = repo.transition(op.id, S.SUCCEEDED, result={"config": "cfg-v2", "wait_seconds": 12.5})

    assert done.status is S.SUCCEEDED
    assert done.terminal
    assert done.result == {"config": "cfg-v2", "wait_seconds": 12.5}
    assert done.expires_at == math.ceil(clock.now) + TERMINAL_RETENTION_DAYS * DAY
    assert repo.get_operation(op.id) == done

    ttl = raw_item(repo, f"OP#{op.id}", "META")["expires_at"]
    assert set(ttl) == {"N"}
    assert int(ttl["N"]) == done.expires_at


def test_transition_without_result_keeps_the_stored_result(repo: Repository) -> None:
    op = repo.create_operation("deployment", "ep", {})
    repo.transition(op.id, S.RUNNING, result={"step": 1})
    assert repo.transition(op.id, S.PAUSED).result == {"step": 1}


@pytest.mark.parametrize("source", list(S))
def test_transition_map(repo: Repository, source: OperationStatus) -> None:
    for target in S:
        op = repo.create_operation("deployment", "ep", {})
        drive_to(repo, op.id, source)
        assert repo.get_operation(op.id).status is source

        if target in SPEC_TRANSITIONS[source]:
            assert repo.transition(op.id, target).status is target
        else:
            with pytest.raises(Conflict, match=f"is {source}, cannot move to {target}"):
                repo.transition(op.id, target)
            assert repo.get_operation(op.id).status is source


def test_disallowed_transition_is_refused_in_python_without_writing(
    repo: Repository, recorder: RecordingClient
) -> None:
    op = repo.create_operation("deployment", "ep", {})
    drive_to(repo, op.id, S.SUCCEEDED)
    recorder.calls.clear()

    with pytest.raises(Conflict) as excinfo:
        repo.transition(op.id, S.RUNNING)

    assert excinfo.value.message == f"operation {op.id} is SUCCEEDED, cannot move to RUNNING"
    assert excinfo.value.status_code == 409
    assert "update_item" not in recorder.calls


def test_expected_status_is_checked(repo: Repository) -> None:
    op = repo.create_operation("deployment", "ep", {})
    with pytest.raises(Conflict, match="is PENDING, expected PAUSED"):
        repo.transition(op.id, S.RUNNING, expected=S.PAUSED)
    with pytest.raises(Conflict, match="expected PAUSED or RUNNING"):
        repo.transition(op.id, S.ABORTED, expected=[S.RUNNING, S.PAUSED])

    assert repo.transition(op.id, S.RUNNING, expected=S.PENDING).status is S.RUNNING
    assert repo.transition(op.id, S.PAUSED, expected=(S.RUNNING, S.PAUSED)).status is S.PAUSED
    assert repo.transition(op.id, S.RUNNING, expected="PAUSED").status is S.RUNNING  # type: ignore[arg-type]


def test_concurrent_status_change_between_read_and_write_is_a_conflict(
    repo: Repository, other: Repository, recorder: RecordingClient
) -> None:
    op = repo.create_operation("deployment", "ep", {})
    repo.transition(op.id, S.RUNNING)
    # Our read sees RUNNING v2 and SUCCEEDED is allowed; before our write lands, an operator aborts it.
    recorder.hook("update_item", lambda: other.transition(op.id, S.ABORTED))

    with pytest.raises(Conflict) as excinfo:
        repo.transition(op.id, S.SUCCEEDED, result={"ok": True})

    assert excinfo.value.message.startswith(f"operation {op.id} is ABORTED, cannot move to SUCCEEDED")
    stored = repo.get_operation(op.id)
    assert (stored.status, stored.version, stored.result) == (S.ABORTED, 3, None)


def test_guard_checks_the_version_not_only_the_status(
    repo: Repository, other: Repository, recorder: RecordingClient
) -> None:
    op = repo.create_operation("deployment", "ep", {})
    repo.transition(op.id, S.RUNNING)

    def pause_and_resume() -> None:  # same status afterwards, but someone else's decisions happened
        other.transition(op.id, S.PAUSED)
        other.transition(op.id, S.RUNNING, result={"approved_by": "alice"})

    recorder.hook("update_item", pause_and_resume)

    with pytest.raises(Conflict, match=r"is RUNNING, cannot move to ROLLED_BACK .*version 2 -> 4"):
        repo.transition(op.id, S.ROLLED_BACK)
    stored = repo.get_operation(op.id)
    assert (stored.status, stored.version, stored.result) == (S.RUNNING, 4, {"approved_by": "alice"})


def test_operation_deleted_between_read_and_write_is_not_found(repo: Repository, recorder: RecordingClient) -> None:
    op = repo.create_operation("deployment", "ep", {})
    recorder.hook(
        "update_item",
        lambda: repo.client.delete_item(
            TableName=repo.table_name, Key={"pk": {"S": f"OP#{op.id}"}, "sk": {"S": "META"}}
        ),
    )
    with pytest.raises(NotFound):
        repo.transition(op.id, S.RUNNING)


def test_other_dynamodb_errors_propagate(ddb_table: Repository, clock: FakeClock) -> None:
    class Throttled:
        def __getattr__(self, name: str) -> Any:
            def fail(**_: Any) -> Any:
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                    name,
                )

            return fail

    repo = Repository(ddb_table.table_name, client=Throttled(), clock=clock)  # type: ignore[arg-type]
    for call in (
        lambda: repo.create_operation("deployment", "ep", {}),
        lambda: repo.acquire_lock("ep", "op-1", 60),
        lambda: repo.release_lock("ep", "op-1"),
        lambda: repo.take_task_token("ep", "endpoint-update"),
    ):
        with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
            call()


# --- listing --------------------------------------------------------------------------------------------


def test_list_is_newest_first_per_endpoint_with_limit(
    repo: Repository, recorder: RecordingClient, clock: FakeClock
) -> None:
    ids = []
    for n in range(5):
        clock.advance(60)
        ids.append(repo.create_operation("deployment", "ep-a", {"n": n}).id)
        repo.create_operation("deployment", "ep-b", {"n": n})

    listed = repo.page_operations("ep-a")[0]
    assert [r.id for r in listed] == ids[::-1]
    assert {r.endpoint for r in listed} == {"ep-a"}
    assert [r.id for r in repo.page_operations("ep-a", limit=2)[0]] == ids[:-3:-1]
    assert repo.page_operations("ep-none")[0] == []
    assert "scan" not in recorder.calls
    assert set(recorder.calls) == {"put_item", "query"}


def test_list_kind_filter_pages_past_other_kinds(repo: Repository, recorder: RecordingClient, clock: FakeClock) -> None:
    older = []
    for _ in range(3):
        clock.advance(1)
        older.append(repo.create_operation("deployment", "ep", {}).id)
    for _ in range(120):  # more than one filtered page of newer, non-matching operations
        clock.advance(1)
        repo.create_operation("scaling", "ep", {})
    recorder.calls.clear()

    found = repo.page_operations("ep", kind="deployment", limit=2)[0]

    assert [r.id for r in found] == older[:0:-1]
    assert recorder.calls.count("query") >= 2
    assert "scan" not in recorder.calls
    assert len(repo.page_operations("ep", kind="scaling", limit=50)[0]) == 50
    assert len(repo.page_operations("ep", limit=500)[0]) == 123


def test_list_rejects_a_non_positive_limit(repo: Repository) -> None:
    with pytest.raises(InvalidInput):
        repo.page_operations("ep", limit=0)[0]


# --- timeline -------------------------------------------------------------------------------------------


def test_timeline_keeps_write_order_for_equal_timestamps(repo: Repository, clock: FakeClock) -> None:
    op = repo.create_operation("deployment", "ep", {})
    for n in range(12):  # 12 entries in the same microsecond: order must come from the sequence number
        repo.append_timeline(op.id, "step", f"same-time {n}", {"n": n, "weight": n / 10})
    clock.advance(0.000001)
    repo.append_timeline(op.id, "step", "later")

    entries = repo.timeline(op.id)

    assert [e.message for e in entries] == [f"same-time {n}" for n in range(12)] + ["later"]
    assert [e.seq for e in entries] == list(range(1, 14))
    assert entries[3].data == {"n": 3, "weight": 0.3}
    assert type(entries[3].data["n"]) is int
    assert entries[-1].data == {}
    assert entries[-1].at > entries[0].at
    assert all(e.operation_id == op.id for e in entries)


def test_timeline_belongs_to_one_operation_and_needs_it(repo: Repository) -> None:
    a = repo.create_operation("deployment", "ep", {})
    b = repo.create_operation("deployment", "ep", {})
    repo.append_timeline(a.id, "started", "a")
    repo.append_timeline(b.id, "started", "b")

    assert [e.message for e in repo.timeline(a.id)] == ["a"]
    assert repo.timeline("op-missing") == []
    with pytest.raises(NotFound):
        repo.append_timeline("op-missing", "started", "x")
    # The entries did not disturb the operation's own record or its optimistic version.
    assert repo.get_operation(a.id).version == 1
    assert repo.transition(a.id, S.RUNNING).version == 2


def test_timeline_ttl_follows_the_operation(repo: Repository, clock: FakeClock) -> None:
    op = repo.create_operation("deployment", "ep", {})
    running = repo.append_timeline(op.id, "started", "running")
    assert running.expires_at == math.ceil(clock.now) + TIMELINE_RETENTION_DAYS * DAY

    repo.transition(op.id, S.RUNNING)
    clock.advance(3600)
    done = repo.transition(op.id, S.FAILED)
    clock.advance(5)
    late = repo.append_timeline(op.id, "diagnosis", "late")

    assert late.expires_at == done.expires_at
    items = repo.client.query(
        TableName=repo.table_name,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :tl)",
        ExpressionAttributeValues={":pk": {"S": f"OP#{op.id}"}, ":tl": {"S": "TL#"}},
    )["Items"]
    assert [set(i["expires_at"]) for i in items] == [{"N"}, {"N"}]
    assert [i["sk"]["S"][:3] for i in items] == ["TL#", "TL#"]
    assert re.fullmatch(r"TL#2025-06-15T15:06:40\.000000Z#00000001", items[0]["sk"]["S"])


# --- locks ----------------------------------------------------------------------------------------------


def test_acquire_get_and_lock_ttl(repo: Repository, clock: FakeClock) -> None:
    assert repo.get_lock("ep") is None
    lock = repo.acquire_lock("ep", "op-a", 300)

    assert (lock.owner, lock.lease_expires_at, lock.expired) == ("op-a", clock.now + 300, False)
    assert repo.get_lock("ep") == lock
    ttl = raw_item(repo, "LOCK#ep", "LOCK")["expires_at"]
    assert set(ttl) == {"N"}
    assert int(ttl["N"]) == math.ceil(clock.now + 300) + LOCK_TTL_GRACE_SECONDS


def test_acquire_is_one_conditional_write(repo: Repository, recorder: RecordingClient) -> None:
    repo.acquire_lock("ep", "op-a", 60)
    assert recorder.calls == ["put_item"]


def test_reentrant_acquire_extends_the_lease(repo: Repository, clock: FakeClock) -> None:
    repo.acquire_lock("ep", "op-a", 60)
    clock.advance(50)
    again = repo.acquire_lock("ep", "op-a", 60)

    assert again.lease_expires_at == clock.now + 60
    clock.advance(30)  # past the first lease, inside the second
    with pytest.raises(Conflict, match="locked by op-a"):
        repo.acquire_lock("ep", "op-b", 60)


def test_conflict_names_the_owner_and_lease_expiry(repo: Repository, clock: FakeClock) -> None:
    repo.acquire_lock("churn-prod", "op-a", 600)
    clock.advance(100)
    with pytest.raises(Conflict) as excinfo:
        repo.acquire_lock("churn-prod", "op-b", 600)

    assert excinfo.value.status_code == 409
    assert excinfo.value.message == (
        "endpoint churn-prod is locked by op-a until 2025-06-15T15:16:40.000000Z (lease expires in 500 s)"
    )


def test_steal_only_after_the_lease_expired(repo: Repository, clock: FakeClock) -> None:
    repo.acquire_lock("ep", "op-a", 60)
    clock.advance(59.5)
    with pytest.raises(Conflict, match="op-a"):
        repo.acquire_lock("ep", "op-b", 60)
    assert repo.get_lock("ep").owner == "op-a"  # type: ignore[union-attr]

    clock.advance(1)
    stale = repo.get_lock("ep")
    assert stale is not None
    assert (stale.owner, stale.expired) == ("op-a", True)

    stolen = repo.acquire_lock("ep", "op-b", 60)
    assert stolen.owner == "op-b"
    assert repo.get_lock("ep") == stolen
    # The old owner wakes up: it can neither release nor renew the new owner's lock.
    assert repo.release_lock("ep", "op-a") is False
    with pytest.raises(Conflict, match="locked by op-b"):
        repo.renew_lock("ep", "op-a", 60)
    assert repo.get_lock("ep") == stolen


def test_renew_extends_the_lease_and_keeps_acquired_at(repo: Repository, clock: FakeClock) -> None:
    first = repo.acquire_lock("ep", "op-a", 60)
    clock.advance(45)
    renewed = repo.renew_lock("ep", "op-a", 120)

    assert renewed.acquired_at == first.acquired_at
    assert renewed.lease_expires_at == clock.now + 120
    assert renewed.expires_at == math.ceil(clock.now + 120) + LOCK_TTL_GRACE_SECONDS
    assert repo.get_lock("ep") == renewed
    with pytest.raises(Conflict, match="nobody holds it"):
        repo.renew_lock("other-ep", "op-a", 60)


def test_release_by_a_non_owner_is_a_no_op(repo: Repository) -> None:
    held = repo.acquire_lock("ep", "op-a", 60)

    assert repo.release_lock("ep", "op-b") is False
    assert repo.get_lock("ep") == held
    assert repo.release_lock("ep", "op-a") is True
    assert repo.get_lock("ep") is None
    assert repo.release_lock("ep", "op-a") is False
    assert repo.acquire_lock("ep", "op-b", 60).owner == "op-b"


def test_lock_rejects_bad_leases(repo: Repository) -> None:
    for lease in (0, -5):
        with pytest.raises(InvalidInput):
            repo.acquire_lock("ep", "op-a", lease)


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_acquires_have_exactly_one_winner(ddb_table: Repository, clock: FakeClock, round_: int) -> None:
    # Serialized per request only (see RecordingClient); the threads race from the barrier onwards.
    serialized: Any = RecordingClient(ddb_table.client, serialize=True)
    shared = Repository(ddb_table.table_name, client=serialized, clock=clock)
    contenders = 8
    barrier = threading.Barrier(contenders)
    winners: list[str] = []
    losers: list[str] = []
    errors: list[BaseException] = []

    def contend(owner: str) -> None:
        barrier.wait()
        try:
            shared.acquire_lock(f"ep-{round_}", owner, 60)
            winners.append(owner)
        except Conflict as err:
            losers.append(err.message)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=contend, args=(f"op-{n}",)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(winners) == 1, winners
    assert len(losers) == contenders - 1
    assert all(f"locked by {winners[0]} " in message for message in losers)
    assert shared.get_lock(f"ep-{round_}").owner == winners[0]  # type: ignore[union-attr]


# --- task tokens ----------------------------------------------------------------------------------------


def test_take_task_token_only_once(repo: Repository, clock: FakeClock) -> None:
    stored = repo.put_task_token("ep", "endpoint-update", "tok-1", "op-a", ttl_seconds=3600)
    assert repo.get_task_token("ep", "endpoint-update") == stored
    assert repo.get_task_token("ep", "experiment-running") is None

    taken = repo.take_task_token("ep", "endpoint-update")
    assert taken == stored
    assert (taken.token, taken.operation_id, taken.expires_at) == (
        "tok-1",
        "op-a",
        math.ceil(clock.now + 3600),
    )
    assert repo.take_task_token("ep", "endpoint-update") is None
    assert repo.get_task_token("ep", "endpoint-update") is None


def test_put_task_token_replaces_and_has_a_numeric_ttl(repo: Repository) -> None:
    repo.put_task_token("ep", "endpoint-update", "tok-1", "op-a", ttl_seconds=60)
    repo.put_task_token("ep", "endpoint-update", "tok-2", "op-a", ttl_seconds=60)

    ttl = raw_item(repo, "TOKEN#ep", "endpoint-update")["expires_at"]
    assert set(ttl) == {"N"}
    assert repo.take_task_token("ep", "endpoint-update").token == "tok-2"  # type: ignore[union-attr]


def test_expired_task_token_is_not_handed_out(repo: Repository, clock: FakeClock) -> None:
    repo.put_task_token("ep", "endpoint-update", "tok-1", "op-a", ttl_seconds=60)
    clock.advance(61)  # TTL deletion lags: the item may still be there
    assert repo.get_task_token("ep", "endpoint-update") is None
    assert repo.take_task_token("ep", "endpoint-update") is None
    assert (
        repo.client.get_item(
            TableName=repo.table_name, Key={"pk": {"S": "TOKEN#ep"}, "sk": {"S": "endpoint-update"}}
        ).get("Item")
        is None
    )


def test_concurrent_takes_resume_once(ddb_table: Repository, clock: FakeClock) -> None:
    serialized: Any = RecordingClient(ddb_table.client, serialize=True)
    shared = Repository(ddb_table.table_name, client=serialized, clock=clock)
    shared.put_task_token("ep", "endpoint-update", "tok-1", "op-a", ttl_seconds=60)
    barrier = threading.Barrier(6)
    taken: list[str | None] = []

    def handler() -> None:
        barrier.wait()
        token = shared.take_task_token("ep", "endpoint-update")
        taken.append(token.token if token else None)

    threads = [threading.Thread(target=handler) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert taken.count("tok-1") == 1
    assert taken.count(None) == 5


def test_wait_purposes_are_the_token_sort_keys(repo: Repository) -> None:
    assert [str(p) for p in WaitPurpose] == [
        "endpoint-update",
        "bake",
        "approval",
        "shadow-watch",
        "delivery-stage",
        "delivery-hold",
    ]
    repo.put_task_token("ep", WaitPurpose.BAKE, "tok-bake", "op-a", ttl_seconds=60)
    repo.put_task_token("ep", "approval", "tok-approval", "op-a", ttl_seconds=60)

    assert raw_item(repo, "TOKEN#ep", "bake")["token"] == {"S": "tok-bake"}
    assert repo.take_task_token("ep", "bake").token == "tok-bake"  # type: ignore[union-attr]
    assert repo.take_task_token("ep", WaitPurpose.APPROVAL).token == "tok-approval"  # type: ignore[union-attr]


# --- plan, execution and stop requests ------------------------------------------------------------------


PLAN = {"path": "managed", "steps": [{"percent": 10, "seconds": 600}, {"percent": 100, "seconds": 0}], "cost": 1.25}


def test_plan_is_stored_at_creation_and_replaced_while_running(repo: Repository, clock: FakeClock) -> None:
    op = repo.create_operation("deployment", "ep", {"model": "v2"}, operation_id="op-plan", plan=PLAN)
    assert repo.get_operation(op.id).plan == PLAN
    assert repo.create_operation("deployment", "ep", {}).plan is None

    repo.transition(op.id, S.RUNNING)
    clock.advance(5)
    revised = {**PLAN, "path": "native"}
    saved = repo.save_plan(op.id, revised)

    assert saved.plan == revised
    assert (saved.status, saved.version) == (S.RUNNING, 2)  # an annotation, not a status decision
    assert saved.updated_at == datetime.fromtimestamp(clock.now, tz=UTC)
    assert repo.get_operation(op.id) == saved


def test_plan_of_an_ended_operation_is_history(repo: Repository) -> None:
    op = repo.create_operation("deployment", "ep", {}, plan=PLAN)
    repo.transition(op.id, S.REFUSED)
    with pytest.raises(Conflict, match=f"operation {op.id} already ended as REFUSED") as excinfo:
        repo.save_plan(op.id, {"path": "native"})
    assert excinfo.value.field == "status"
    assert repo.get_operation(op.id).plan == PLAN
    with pytest.raises(NotFound):
        repo.save_plan("op-missing", PLAN)
    with pytest.raises(InvalidInput):
        repo.save_plan(op.id, {"cost": float("nan")})
    with pytest.raises(InvalidInput):
        repo.create_operation("deployment", "ep", {}, plan={"cost": float("inf")})


def test_execution_is_recorded_once(repo: Repository) -> None:
    op = repo.create_operation("deployment", "ep", {})
    arn = "arn:aws:states:us-east-1:123456789012:execution:deployment:op-1"

    assert repo.set_execution(op.id, arn).execution_arn == arn
    assert repo.set_execution(op.id, arn).execution_arn == arn  # a retried start records the same one
    with pytest.raises(Conflict, match=r"already driven by execution .*:op-1") as excinfo:
        repo.set_execution(op.id, arn + "-again")
    assert excinfo.value.field == "execution_arn"
    assert repo.get_operation(op.id).execution_arn == arn
    with pytest.raises(NotFound):
        repo.set_execution("op-missing", arn)
    with pytest.raises(InvalidInput):
        repo.set_execution(op.id, "")


def test_first_stop_request_wins(repo: Repository, clock: FakeClock) -> None:
    op = repo.create_operation("deployment", "ep", {})
    repo.transition(op.id, S.RUNNING)
    clock.advance(30)

    first = repo.request_stop(op.id, kind="abort", reason="bad canary", by="alice")
    expected = {"kind": "abort", "reason": "bad canary", "by": "alice", "at": "2025-06-15T15:07:10.000000Z"}
    assert first.stop_request == expected
    assert (first.status, first.version) == (S.RUNNING, 2)

    clock.advance(5)
    second = repo.request_stop(op.id, kind="alarm", reason="alarm x went into ALARM", by="alarm:x")
    assert second == first
    assert repo.get_operation(op.id) == first


def test_stop_request_is_one_conditional_write(repo: Repository, recorder: RecordingClient) -> None:
    op = repo.create_operation("deployment", "ep", {})
    recorder.calls.clear()
    repo.request_stop(op.id, kind="abort", reason="r", by="bob")
    repo.request_stop(op.id, kind="abort", reason="r", by="bob")
    assert recorder.calls == ["update_item", "update_item"]


@pytest.mark.parametrize("status", sorted(TERMINAL_STATUSES))
def test_stopping_an_ended_operation_is_a_conflict(repo: Repository, status: OperationStatus) -> None:
    op = repo.create_operation("deployment", "ep", {})
    drive_to(repo, op.id, status)
    with pytest.raises(Conflict) as excinfo:
        repo.request_stop(op.id, kind="alarm", reason="r", by="alarm:x")
    assert (excinfo.value.message, excinfo.value.field) == (f"operation {op.id} already ended as {status}", "status")
    assert repo.get_operation(op.id).stop_request is None


def test_stop_request_refuses_unknown_operations_and_bad_input(repo: Repository, recorder: RecordingClient) -> None:
    with pytest.raises(NotFound, match="op-missing"):
        repo.request_stop("op-missing", kind="abort", reason="r", by="alice")
    recorder.calls.clear()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "pause", "reason": "r", "by": "alice"}, "kind"),
        ({"kind": "abort", "reason": "", "by": "alice"}, "reason"),
        ({"kind": "abort", "reason": "r", "by": ""}, "by"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidInput) as excinfo:
            repo.request_stop("op-1", **kwargs)
        assert excinfo.value.field == field
    assert recorder.calls == []


def test_concurrent_stop_requests_record_exactly_one(ddb_table: Repository, clock: FakeClock) -> None:
    serialized: Any = RecordingClient(ddb_table.client, serialize=True)
    shared = Repository(ddb_table.table_name, client=serialized, clock=clock)
    op = shared.create_operation("deployment", "ep", {})
    barrier = threading.Barrier(6)
    seen: list[str] = []

    def stop(by: str) -> None:
        barrier.wait()
        record = shared.request_stop(op.id, kind="abort", reason="stop", by=by)
        seen.append(record.stop_request["by"])  # type: ignore[index]

    threads = [threading.Thread(target=stop, args=(f"user-{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(seen) == 6
    assert len(set(seen)) == 1
    assert shared.get_operation(op.id).stop_request["by"] == seen[0]  # type: ignore[index]


def test_transitions_keep_plan_execution_and_stop_request(repo: Repository) -> None:
    op = repo.create_operation("deployment", "ep", {}, plan=PLAN)
    repo.set_execution(op.id, "arn:execution")
    repo.transition(op.id, S.RUNNING)
    repo.request_stop(op.id, kind="alarm", reason="alarm x went into ALARM", by="alarm:x")

    done = repo.transition(op.id, S.ROLLED_BACK, result={"rolled_back": True})

    assert (done.plan, done.execution_arn) == (PLAN, "arn:execution")
    assert done.stop_request is not None and done.stop_request["by"] == "alarm:x"
    assert done.version == 3
    assert repo.get_operation(op.id) == done


# --- alarm watches --------------------------------------------------------------------------------------


def test_alarm_watches_by_alarm(repo: Repository, clock: FakeClock) -> None:
    a = repo.put_alarm_watch("ep-errors", "ep", "op-a", ttl_seconds=3600)
    repo.put_alarm_watch("ep-latency", "ep", "op-a", ttl_seconds=3600)
    b = repo.put_alarm_watch("ep-errors", "ep2", "op-b", ttl_seconds=3600)

    assert repo.alarm_watches("ep-errors") == [a, b]
    assert (a.alarm_name, a.endpoint, a.operation_id) == ("ep-errors", "ep", "op-a")
    assert a.expires_at == math.ceil(clock.now + 3600)
    assert a.created_at == datetime.fromtimestamp(clock.now, tz=UTC)
    assert repo.alarm_watches("unwatched") == []
    item = raw_item(repo, "ALARM#ep-errors", "op-a")
    assert set(item["expires_at"]) == {"N"}


def test_alarm_watch_lookup_is_one_query(repo: Repository, recorder: RecordingClient) -> None:
    repo.put_alarm_watch("ep-errors", "ep", "op-a", ttl_seconds=60)
    recorder.calls.clear()
    repo.alarm_watches("ep-errors")
    assert recorder.calls == ["query"]


def test_expired_alarm_watches_are_left_out(repo: Repository, clock: FakeClock) -> None:
    repo.put_alarm_watch("ep-errors", "ep", "op-old", ttl_seconds=60)
    clock.advance(30)
    fresh = repo.put_alarm_watch("ep-errors", "ep", "op-new", ttl_seconds=600)
    clock.advance(31)  # op-old's watch expired; TTL has not removed the item yet
    assert repo.alarm_watches("ep-errors") == [fresh]

    refreshed = repo.put_alarm_watch("ep-errors", "ep", "op-old", ttl_seconds=600)
    assert repo.alarm_watches("ep-errors") == [fresh, refreshed]


def test_alarm_names_are_free_text_up_to_255_characters(repo: Repository) -> None:
    odd = "team#ml / churn: p99 > 2s (prod) [v2]"
    longest = "x" * ALARM_NAME_MAX_LENGTH
    for name in (odd, longest):
        watch = repo.put_alarm_watch(name, "ep", "op-a", ttl_seconds=60)
        assert repo.alarm_watches(name) == [watch]
    assert repo.alarm_watches("team") == []  # '#' inside the name does not leak into other keys
    for bad in ("", "x" * (ALARM_NAME_MAX_LENGTH + 1)):
        for call in (
            lambda name: repo.put_alarm_watch(name, "ep", "op-a", ttl_seconds=60),
            repo.alarm_watches,
            lambda name: repo.delete_alarm_watches("op-a", [name]),
        ):
            with pytest.raises(InvalidInput) as excinfo:
                call(bad)
            assert excinfo.value.field == "alarm_name"


@pytest.mark.parametrize(
    ("endpoint", "operation_id", "ttl", "field"),
    [("ep#1", "op-a", 60, "endpoint"), ("ep", "", 60, "operation_id"), ("ep", "op-a", 0, "ttl_seconds")],
)
def test_alarm_watch_rejects_bad_input(
    repo: Repository, recorder: RecordingClient, endpoint: str, operation_id: str, ttl: float, field: str
) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        repo.put_alarm_watch("alarm", endpoint, operation_id, ttl_seconds=ttl)
    assert excinfo.value.field == field
    assert recorder.calls == []


def test_delete_alarm_watches_of_one_operation(repo: Repository) -> None:
    repo.put_alarm_watch("ep-errors", "ep", "op-a", ttl_seconds=60)
    repo.put_alarm_watch("ep-latency", "ep", "op-a", ttl_seconds=60)
    other_op = repo.put_alarm_watch("ep-errors", "ep", "op-b", ttl_seconds=60)

    repo.delete_alarm_watches("op-a", ["ep-errors", "ep-latency", "ep-errors", "never-watched"])

    assert repo.alarm_watches("ep-errors") == [other_op]
    assert repo.alarm_watches("ep-latency") == []
    repo.delete_alarm_watches("op-a", [])


# --- construction ---------------------------------------------------------------------------------------


def test_client_is_created_lazily_once(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def fake_client(service: str) -> object:
        made.append(service)
        return object()

    monkeypatch.setattr("inferops.storage.boto3.client", fake_client)
    repo = Repository("t")
    assert made == []
    first = repo.client
    assert repo.client is first
    assert made == ["dynamodb"]


def test_module_reads_time_only_through_the_clock() -> None:
    tree = ast.parse(Path(storage.__file__).read_text())
    calls = {
        ast.unparse(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not {"time.time", "time.monotonic", "datetime.now", "datetime.utcnow", "datetime.today"} & calls


def test_timeline_reads_every_page(ddb_table: Repository, clock: FakeClock) -> None:
    class SmallPages(RecordingClient):
        def query(self, **kwargs: Any) -> Any:
            self.calls.append("query")
            return self._inner.query(**kwargs, Limit=2)

    pager = SmallPages(ddb_table.client)
    repo = Repository(ddb_table.table_name, client=pager, clock=clock)  # type: ignore[arg-type]
    op = repo.create_operation("deployment", "ep", {})
    for n in range(5):
        clock.advance(1)
        repo.append_timeline(op.id, "step", f"entry {n}")

    assert [e.message for e in repo.timeline(op.id)] == [f"entry {n}" for n in range(5)]
    assert pager.calls.count("query") == 3


def test_unstorable_data_is_refused_before_anything_is_written(repo: Repository) -> None:
    op = repo.create_operation("deployment", "ep", {})
    with pytest.raises(InvalidInput):
        repo.append_timeline(op.id, "step", "bad", {"latency": float("nan")})
    with pytest.raises(InvalidInput):
        repo.transition(op.id, S.RUNNING, result={"x": float("inf")})
    with pytest.raises(InvalidInput, match="unknown operation status"):
        repo.transition(op.id, "DONE")  # type: ignore[arg-type]

    assert repo.append_timeline(op.id, "step", "good").seq == 1
    assert repo.get_operation(op.id).status is S.PENDING


def test_pages_follow_each_other_without_gaps_or_repeats(
    repo: Repository, recorder: RecordingClient, clock: FakeClock
) -> None:
    ids = []
    for i in range(25):
        ids.append(repo.create_operation("deployment" if i % 3 else "scaling", "ep", {}).id)
        clock.advance(1)
    for done in ids[:5]:
        repo.transition(done, OperationStatus.REFUSED)
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = repo.page_operations("ep", kind="deployment", limit=4, cursor=cursor)
        assert len(page) <= 4
        seen += [r.id for r in page]
        if cursor is None:
            break
    wanted = [i for n, i in enumerate(ids) if n % 3]
    assert sorted(seen) == sorted(wanted) and len(seen) == len(set(seen))
    refused, _ = repo.page_operations("ep", status=OperationStatus.REFUSED, limit=50)
    assert sorted(r.id for r in refused) == sorted(ids[:5])
    with pytest.raises(InvalidInput) as bad:
        repo.page_operations("ep", cursor="not-a-cursor")
    assert bad.value.field == "nextToken"
    assert "scan" not in recorder.calls


def test_a_delivery_policy_keeps_its_creation_time_and_policies_are_listed_without_a_scan(
    repo: Repository, recorder: RecordingClient, clock: FakeClock
) -> None:
    first = repo.put_delivery_policy("scorer", {"stages": [1]}, by="alice")
    clock.advance(3600)
    replaced = repo.put_delivery_policy("scorer", {"stages": [2]}, by="bob")
    repo.put_delivery_policy("ranker", {"stages": [3]}, by="carol")
    repo.put_delivery_policy("gone", {"stages": [4]}, by="carol")
    assert repo.delete_delivery_policy("gone")

    listed = repo.delivery_policies()
    stored = repo.get_delivery_policy("scorer")

    assert first["created_at"] == first["updated_at"] == storage.format_timestamp(datetime.fromtimestamp(T0, UTC))
    assert replaced["created_at"] == first["created_at"] and replaced["updated_at"] > first["updated_at"]
    assert stored == replaced == {**replaced, "policy": {"stages": [2]}, "updated_by": "bob"}
    assert sorted((p["group"], p["policy"]["stages"][0]) for p in listed) == [("ranker", 3), ("scorer", 2)]
    assert "scan" not in recorder.calls
