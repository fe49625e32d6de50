"""The lean lease form: what the gateway writes is what the worker reads back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loops import errors
from loops.queue.tasks import LeasedTask, TaskSpec, TaskStatus, evolve, lease_of, new_task
from loops.usage import Usage
from loops.worker import wire

NOW = datetime(2026, 11, 27, 12, 0, 0, 123_000, tzinfo=UTC)


def leased_task() -> LeasedTask:
    spec = TaskSpec(prompt="fix it", type="review", check="pytest", cwd="/w", max_iterations=4)
    task = evolve(
        new_task(spec, now=NOW, max_attempts=3, depth=1, parent_id=7),
        id=42,
        status=TaskStatus.LEASED,
        attempts=2,
        lease_owner="w1",
        lease_token="42.2.abc",
        lease_expires_at=NOW.replace(minute=5),
    )
    return LeasedTask(task=task, lease=lease_of(task))


def test_a_lean_lease_reads_back_as_the_task_a_worker_runs() -> None:
    original = leased_task()
    back = wire.leased_from_lean(original.to_lean_dict(), worker="w1")
    assert back.lease == original.lease
    for name in ("id", "type", "title", "prompt", "success", "check", "provider", "model",
                 "cwd", "max_iterations", "min_tests", "priority", "status", "attempts",
                 "max_attempts", "lease_owner", "lease_token", "lease_expires_at",
                 "parent_id", "depth", "created_at"):  # fmt: skip
        assert getattr(back.task, name) == getattr(original.task, name), name
    # what the lean form does not carry reads as documented
    assert back.task.run_after == back.task.updated_at == back.task.created_at
    assert (back.task.result, back.task.error, back.task.finished_at) == (None, None, None)
    assert (back.task.idempotency_key, back.task.responsibility) == (None, None)
    assert back.task.usage == Usage()


def test_a_lean_lease_missing_a_field_is_one_clear_error() -> None:
    body = leased_task().to_lean_dict()
    del body["token"]
    with pytest.raises(errors.InputError, match="lean lease this worker cannot read"):
        wire.leased_from_lean(body, worker="w1")


def test_lean_dicts_of_a_batch_match_each_lease_and_share_equal_times() -> None:
    from datetime import timedelta

    from loops.queue.tasks import Lease, lean_dicts

    now = datetime(2026, 11, 28, 4, 0, tzinfo=UTC)
    expires = now + timedelta(minutes=1)
    batch = [
        LeasedTask(
            task=new_task(
                TaskSpec(prompt=f"p{i}"), now=now + timedelta(milliseconds=i // 2),
                max_attempts=3, task_id=i + 1,
            ),
            lease=Lease(token=f"t{i}", owner="w", expires_at=expires, attempt=1),
        )
        for i in range(5)
    ]  # fmt: skip
    dicts = lean_dicts(batch)
    assert dicts == [item.to_lean_dict() for item in batch]
    assert [d["created_at"] for d in dicts] == [
        "2026-11-28T04:00:00.000Z", "2026-11-28T04:00:00.000Z", "2026-11-28T04:00:00.001Z",
        "2026-11-28T04:00:00.001Z", "2026-11-28T04:00:00.002Z",
    ]  # fmt: skip
    assert {d["expires_at"] for d in dicts} == {"2026-11-28T04:01:00.000Z"}
    assert lean_dicts([]) == []
