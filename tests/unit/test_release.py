"""Releasing a lease: queued again at once, the attempt given back, the token dead."""

from __future__ import annotations

from pathlib import Path

import pytest

from loops import config, errors
from loops.queue import lifecycle
from loops.queue.tasks import TaskStatus
from loops.services.queue import QueueService, task_spec
from loops.store.memory import MemoryStore


@pytest.fixture
def service(tmp_path: Path) -> QueueService:
    store = MemoryStore()
    store.migrate()
    return QueueService(store, config.load_settings(env={}, cwd=tmp_path).queue)


def test_release_requeues_without_charging_an_attempt(service: QueueService) -> None:
    task = service.create_task(task_spec({"prompt": "p"})).task
    (leased,) = service.lease(worker="w1")
    released = service.release(task.id, lease_token=leased.lease.token, reason="shutdown")
    assert released.status is TaskStatus.QUEUED
    assert released.attempts == 0
    assert released.lease_expires_at is None
    events = [e.type for e in service.list_events(task_id=task.id)]
    assert events[-1] == "task.released"
    (again,) = service.lease(worker="w2")
    assert again.task.id == task.id and again.task.attempts == 1
    assert again.lease.token != leased.lease.token


def test_release_with_a_stale_token_conflicts_and_changes_nothing(service: QueueService) -> None:
    task = service.create_task(task_spec({"prompt": "p"})).task
    (leased,) = service.lease(worker="w1")
    with pytest.raises(errors.LeaseConflict):
        service.release(task.id, lease_token="1.1.bogus")
    assert service.get_task(task.id).status is TaskStatus.LEASED
    service.release(task.id, lease_token=leased.lease.token)
    with pytest.raises(errors.LeaseConflict):
        service.release(task.id, lease_token=leased.lease.token)


def test_release_of_a_cancelled_task_is_a_no_op(service: QueueService) -> None:
    task = service.create_task(task_spec({"prompt": "p"})).task
    (leased,) = service.lease(worker="w1")
    service.cancel(task.id)
    out = service.release(task.id, lease_token=leased.lease.token)
    assert out.status is TaskStatus.CANCELLED


def test_release_transition_is_pure() -> None:
    from datetime import UTC, datetime

    from loops.queue.tasks import TaskSpec, new_task

    now = datetime(2026, 1, 1, tzinfo=UTC)
    task = new_task(TaskSpec(prompt="p"), now=now, max_attempts=3)
    held = lifecycle.lease(task, now=now, owner="w", ttl_ms=1000, nonce="n").task
    out = lifecycle.release(held, token=held.lease_token or "", now=now)
    assert out.error is None and out.task.status is TaskStatus.QUEUED
    assert [e.type for e in out.events] == ["task.released"]


def test_append_events_writes_a_batch(service: QueueService) -> None:
    task = service.create_task(task_spec({"prompt": "p"})).task
    count = service.append_events(task.id, [("agent.text", {"text": str(i)}) for i in range(50)])
    assert count == 50
    texts = [e.data["text"] for e in service.list_events(task_id=task.id) if e.type == "agent.text"]
    assert texts == [str(i) for i in range(50)]
    with pytest.raises(errors.TaskNotFound):
        service.append_events(999, [("agent.text", {})])
