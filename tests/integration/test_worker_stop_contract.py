"""The store contract of a worker's stop: every backend must pass every test here.

A worker that stops says which leases it still holds; every other lease under its name
goes back to the queue (no attempt charged) and no new lease is granted to that name,
atomically with leasing, until the name starts again.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from loops import errors
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, TaskSpec, TaskStatus
from loops.store.base import Store

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
TTL = 60_000
BACKOFF = Backoff(base_ms=1_000)


def create(store: Store, n: int = 1) -> list[int]:
    return [
        store.create_task(TaskSpec(prompt=f"p{i}"), now=T0, max_attempts=3)[0].id for i in range(n)
    ]


def test_stop_gives_back_the_leases_not_held_without_an_attempt(store: Store) -> None:
    kept_id, dropped_id, other_id = create(store, 3)
    kept = store.lease_task(kept_id, now=T0, owner="w1", ttl_ms=TTL)
    store.lease_task(dropped_id, now=T0, owner="w1", ttl_ms=TTL)
    store.lease_task(other_id, now=T0, owner="w2", ttl_ms=TTL)

    released = store.stop_worker("w1", now=T0, holding=[kept.lease.token])

    assert [t.id for t in released] == [dropped_id]
    dropped = store.get_task(dropped_id)
    assert dropped.status is TaskStatus.QUEUED and dropped.attempts == 0
    assert store.get_task(kept_id).status is TaskStatus.LEASED  # the worker finishes it
    assert store.get_task(other_id).status is TaskStatus.LEASED  # another worker's
    kinds = [e.type for e in store.list_events(limit=100, task_id=dropped_id)]
    assert kinds[-1] == "task.released"
    # the held lease still completes
    done = store.complete(
        CompletionRequest(kept_id, kept.lease.token, Completion(status=CompletionStatus.DONE)),
        now=T0,
        backoff=BACKOFF,
    )
    assert done.status is TaskStatus.DONE


def test_a_stopped_worker_is_refused_leases_until_it_starts_again(store: Store) -> None:
    (first, second) = create(store, 2)
    held = store.lease_task(first, now=T0, owner="w1", ttl_ms=TTL)
    store.stop_worker("w1", now=T0, holding=[held.lease.token])

    with pytest.raises(errors.WorkerStopped, match="w1"):
        store.lease_next(now=T0, owner="w1", ttl_ms=TTL)
    with pytest.raises(errors.WorkerStopped):
        store.lease_task(second, now=T0, owner="w1", ttl_ms=TTL)
    request = CompletionRequest(first, held.lease.token, Completion(status=CompletionStatus.DONE))
    outcomes, leases = store.complete_and_lease(
        [request], now=T0, backoff=BACKOFF, owner="w1", ttl_ms=TTL
    )
    assert outcomes[0].error is None and leases == []  # the completion still applies
    assert store.get_task(first).status is TaskStatus.DONE
    assert store.get_task(second).status is TaskStatus.QUEUED

    (leased,) = store.lease_next(now=T0, owner="w2", ttl_ms=TTL)  # others lease as before
    assert leased.task.id == second
    store.release(second, token=leased.lease.token, now=T0)
    store.start_worker("w1", now=T0)
    assert [lt.task.id for lt in store.lease_next(now=T0, owner="w1", ttl_ms=TTL)] == [second]


def test_no_lease_to_a_worker_outlives_its_stop_under_concurrent_leasing(store: Store) -> None:
    """Leases for one name race its stop from several threads: whatever each lease saw,
    none is left held by that name afterwards (the stop and the lease are atomic)."""
    create(store, 200)
    refused: list[int] = []

    def lease_until_refused(number: int) -> None:
        for _ in range(10_000):  # bounded: a broken stop fails the test, never hangs it
            try:
                store.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=2)
            except errors.WorkerStopped:
                refused.append(number)
                return

    threads = [
        threading.Thread(target=lease_until_refused, args=(i,), daemon=True) for i in range(3)
    ]
    for thread in threads:
        thread.start()
    store.lease_next(now=T0, owner="w1", ttl_ms=TTL)  # at least one lease before the stop
    store.stop_worker("w1", now=T0)  # released tasks are ready again at the leases' T0
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(refused) == [0, 1, 2]
    held = [
        t
        for t in store.list_tasks(limit=1000)
        if t.status in (TaskStatus.LEASED, TaskStatus.RUNNING) and t.lease_owner == "w1"
    ]
    assert held == []
    assert all(t.attempts == 0 for t in store.list_tasks(limit=1000))
