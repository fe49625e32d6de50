"""A SQLite store remembers the held tasks it wrote (leases, heartbeats); their
completion reads back only the mutable columns, and uses the remembered task only while
the row still holds what was written.

The other store in each test stands for another process on the same file.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loops import errors
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, TaskSpec, TaskStatus
from loops.store import sqlite as sqlite_store
from loops.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TTL = 60_000
BACKOFF = Backoff()


def done(
    task_id: int, token: str, status: CompletionStatus = CompletionStatus.DONE
) -> CompletionRequest:
    return CompletionRequest(task_id, token, Completion(status=status, result="ok", error="e"))


@pytest.fixture
def stores(tmp_path: Path) -> tuple[SqliteStore, SqliteStore]:
    ours = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    ours.migrate()
    other = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    for i in range(4):
        ours.create_task(TaskSpec(prompt=f"p{i}"), now=T0, max_attempts=3)
    yield ours, other
    ours.close()
    other.close()


def test_a_batch_completed_as_leased_is_stored_and_answered_as_a_full_read_would(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    ours, other = stores
    leased = ours.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=4)
    assert sorted(ours._held) == sorted(item.task.id for item in leased)
    now = T0 + timedelta(seconds=1)
    outcomes = ours.complete_many(
        [done(item.task.id, item.lease.token) for item in leased], now=now, backoff=BACKOFF
    )
    assert ours._held == {}  # taken out by the completion's read
    for outcome in outcomes:
        assert outcome.error is None and outcome.task is not None
        assert outcome.task.status is TaskStatus.DONE
        assert outcome.task == other.get_task(outcome.task_id)  # what a full read gives
    assert [e.type for e in other.list_events(task_id=leased[0].task.id)] == [
        "task.created", "task.leased", "task.completed",
    ]  # fmt: skip


def test_a_task_changed_by_another_process_is_decided_on_its_row(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    ours, other = stores
    first, second, third = ours.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=3)
    other.cancel(first.task.id, now=T0)  # the row no longer holds the leased task
    started = other.heartbeat(second.task.id, token=second.lease.token, now=T0, ttl_ms=TTL * 2,
                              start=True)  # fmt: skip
    outcomes = ours.complete_many(
        [done(t.task.id, t.lease.token) for t in (first, second, third)],
        now=T0 + timedelta(seconds=1),
        backoff=BACKOFF,
    )
    assert isinstance(outcomes[0].error, errors.LeaseConflict)
    assert other.get_task(first.task.id).status is TaskStatus.CANCELLED
    assert outcomes[1].error is None and outcomes[1].task is not None
    # decided on the row as the other process left it (running, its longer lease)
    assert outcomes[1].task.status is TaskStatus.DONE
    assert outcomes[1].task == other.get_task(second.task.id)
    assert started.task.status is TaskStatus.RUNNING
    assert outcomes[2].task == other.get_task(third.task.id)


def test_a_lease_reclaimed_and_granted_again_elsewhere_refuses_the_old_token(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    ours, other = stores
    (held,) = ours.lease_next(now=T0, owner="w1", ttl_ms=1_000, limit=1)
    later = T0 + timedelta(seconds=5)
    other.reclaim_expired(now=later)
    again = other.lease_next(now=later, owner="w2", ttl_ms=TTL, limit=4)
    assert held.task.id in [item.task.id for item in again]
    with pytest.raises(errors.LeaseConflict):
        ours.complete(done(held.task.id, held.lease.token), now=later, backoff=BACKOFF)


def test_a_heartbeat_through_the_store_keeps_its_task_remembered(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    ours, other = stores
    (held,) = ours.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=1)
    beat = ours.heartbeat(held.task.id, token=held.lease.token, now=T0, ttl_ms=TTL, start=True)
    assert ours._held[held.task.id][0] == beat.task
    task = ours.complete(done(held.task.id, held.lease.token, CompletionStatus.RETRY),
                         now=T0 + timedelta(seconds=1), backoff=BACKOFF)  # fmt: skip
    assert task.status is TaskStatus.QUEUED and task == other.get_task(held.task.id)


def test_the_memory_of_leases_is_bounded(
    stores: tuple[SqliteStore, SqliteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, _ = stores
    monkeypatch.setattr(sqlite_store, "_HELD_MAX", 2)
    leased = [ours.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=1)[0] for _ in range(3)]
    assert list(ours._held) == [leased[2].task.id]  # forgotten at the limit
    outcomes = ours.complete_many(
        [done(item.task.id, item.lease.token) for item in leased], now=T0, backoff=BACKOFF
    )
    assert all(o.error is None and o.task is not None for o in outcomes)


def test_a_lease_and_a_heartbeat_change_only_columns_that_save_task_writes(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    """The memory relies on it: a remembered task differs from the row it was read as
    only in mutable columns, so equal mutable columns mean an equal task."""
    ours, other = stores
    mutable = {
        "status", "attempts", "lease_owner", "lease_token", "lease_expires_at", "run_after",
        "result", "error", "usage", "updated_at", "finished_at", "wake_each",
    }  # fmt: skip
    assert sqlite_store._MUTABLE_COLUMNS.count(",") == len(mutable) + 3  # usage: 4 columns
    queued = {t.id: t for t in other.list_tasks(status=TaskStatus.QUEUED)}
    (held,) = ours.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=1)
    before = queued[held.task.id]
    beat = ours.heartbeat(held.task.id, token=held.lease.token, now=T0, ttl_ms=TTL, start=True)
    for task in (held.task, beat.task):
        changed = {f for f in before.__dataclass_fields__ if getattr(task, f) != getattr(before, f)}
        assert changed and changed <= mutable


def test_a_lease_whose_transaction_was_undone_is_not_taken_for_the_row(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    ours, other = stores
    refuse = other._connection()
    refuse.execute(
        "CREATE TRIGGER refuse_leases BEFORE INSERT ON events WHEN NEW.type = 'task.leased' "
        "BEGIN SELECT RAISE(ABORT, 'no leases today'); END"
    )
    with pytest.raises(errors.StoreError):
        ours.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=1)  # rows saved, then undone
    assert ours._held  # what the undone transaction wrote is still remembered
    refuse.execute("DROP TRIGGER refuse_leases")
    leased = other.lease_next(now=T0, owner="w2", ttl_ms=TTL, limit=4)
    stale = {i: t for i, (t, _) in ours._held.items()}
    (task_id,) = stale
    (real,) = [item for item in leased if item.task.id == task_id]
    with pytest.raises(errors.LeaseConflict):  # the token of the undone lease
        ours.complete(done(task_id, stale[task_id].lease_token), now=T0, backoff=BACKOFF)
    task = ours.complete(done(task_id, real.lease.token), now=T0, backoff=BACKOFF)
    assert task.status is TaskStatus.DONE and task == other.get_task(task_id)
