"""Re-queue (an operator's retry of a failed or blocked task) on every store backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loops import errors
from loops.queue.backoff import Backoff
from loops.queue.tasks import (
    Completion,
    CompletionRequest,
    CompletionStatus,
    TaskSpec,
    TaskStatus,
)
from loops.store.base import Store

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TTL = 10_000


def ended(store: Store, status: str, *, max_attempts: int = 1) -> int:
    task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=max_attempts)
    (leased,) = store.lease_next(now=T0, owner="w1", ttl_ms=TTL)
    completion = Completion(status=CompletionStatus(status), error=f"it {status}")
    store.complete(
        CompletionRequest(task.id, leased.lease.token, completion), now=T0, backoff=Backoff()
    )
    return task.id


@pytest.mark.parametrize("status", ["failed", "blocked"])
def test_requeue_gives_a_finished_task_fresh_attempts(store: Store, status: str) -> None:
    task_id = ended(store, status)
    later = T0 + timedelta(minutes=5)
    task = store.requeue(task_id, now=later, reason="flake fixed")
    assert (task.status, task.attempts, task.error, task.finished_at) == (
        TaskStatus.QUEUED, 0, None, None,
    )  # fmt: skip
    assert store.get_task(task_id) == task
    event = store.list_events(task_id=task_id, limit=10)[-1]
    assert (event.type, event.data["previous"], event.data["reason"]) == (
        "task.requeued", status, "flake fixed",
    )  # fmt: skip
    assert event.data["previous_error"] == f"it {status}"
    # it can be leased again, as attempt 1 of a new series
    (leased,) = store.lease_next(now=later, owner="w2", ttl_ms=TTL)
    assert (leased.task.id, leased.task.attempts) == (task_id, 1)


@pytest.mark.parametrize("status", ["queued", "leased", "done", "cancelled"])
def test_requeue_refuses_other_statuses(store: Store, status: str) -> None:
    task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    if status != "queued":
        (leased,) = store.lease_next(now=T0, owner="w1", ttl_ms=TTL)
        if status == "done":
            done = Completion(status=CompletionStatus.DONE)
            store.complete(
                CompletionRequest(task.id, leased.lease.token, done), now=T0, backoff=Backoff()
            )
        elif status == "cancelled":
            store.cancel(task.id, now=T0)
    with pytest.raises(errors.InvalidTransition, match="only failed or blocked"):
        store.requeue(task.id, now=T0)
    assert store.get_task(task.id).status.value == status


def test_requeue_of_an_unknown_task_is_not_found(store: Store) -> None:
    with pytest.raises(errors.TaskNotFound):
        store.requeue(404, now=T0)
