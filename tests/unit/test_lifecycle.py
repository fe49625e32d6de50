"""The task state machine, over plain values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from loops import errors
from loops.queue import lifecycle
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionStatus, Task, TaskSpec, TaskStatus, new_task
from loops.usage import Usage

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TTL = 1_000


def make(status: TaskStatus = TaskStatus.QUEUED, **changes: object) -> Task:
    task = dataclasses.replace(new_task(TaskSpec(prompt="p"), now=T0, max_attempts=3), id=1)
    return dataclasses.replace(task, status=status, **changes)  # type: ignore[arg-type]


def leased(attempts: int = 1, status: TaskStatus = TaskStatus.LEASED) -> Task:
    out = lifecycle.lease(make(attempts=attempts - 1), now=T0, owner="w1", ttl_ms=TTL, nonce="n")
    return dataclasses.replace(out.task, status=status)


def done(**kw: object) -> Completion:
    return Completion(status=CompletionStatus.DONE, **kw)  # type: ignore[arg-type]


def complete(
    task: Task,
    completion: Completion,
    *,
    token: str = "1.1.n",
    now: datetime = T0,
    children: bool = False,
    finished: frozenset[int] = frozenset(),
) -> lifecycle.Transition:
    return lifecycle.complete(
        task,
        token=token,
        now=now,
        completion=completion,
        backoff=Backoff(),
        has_active_children=children,
        finished_children=finished,
    )


def types(transition: lifecycle.Transition) -> list[str]:
    return [e.type for e in transition.events]


def test_lease_counts_an_attempt_and_issues_a_fencing_token() -> None:
    out = lifecycle.lease(make(), now=T0, owner="w1", ttl_ms=TTL, nonce="abc")
    assert out.error is None
    assert out.task.status is TaskStatus.LEASED
    assert out.task.attempts == 1
    assert out.task.lease_token == "1.1.abc"
    assert out.task.lease_expires_at == T0 + timedelta(milliseconds=TTL)
    assert types(out) == ["task.leased"]


@pytest.mark.parametrize("status", [s for s in TaskStatus if s is not TaskStatus.QUEUED])
def test_only_queued_tasks_can_be_leased(status: TaskStatus) -> None:
    out = lifecycle.lease(make(status), now=T0, owner="w", ttl_ms=TTL, nonce="n")
    assert isinstance(out.error, errors.InvalidTransition)
    assert not out.changed


def test_heartbeat_extends_and_starts() -> None:
    task = leased()
    later = T0 + timedelta(milliseconds=500)
    out = lifecycle.heartbeat(task, token="1.1.n", now=later, ttl_ms=TTL, start=True)
    assert out.error is None and out.changed
    assert out.task.status is TaskStatus.RUNNING
    assert out.task.lease_expires_at == later + timedelta(milliseconds=TTL)
    assert types(out) == ["task.started"]
    again = lifecycle.heartbeat(out.task, token="1.1.n", now=later, ttl_ms=TTL, start=True)
    assert again.changed and types(again) == []  # extension only, no event per beat


def test_heartbeat_with_a_wrong_token_changes_nothing() -> None:
    out = lifecycle.heartbeat(leased(), token="1.1.other", now=T0, ttl_ms=TTL)
    assert isinstance(out.error, errors.LeaseConflict)
    assert not out.changed


def test_heartbeat_after_expiry_reclaims_and_refuses() -> None:
    late = T0 + timedelta(milliseconds=TTL)
    out = lifecycle.heartbeat(leased(), token="1.1.n", now=late, ttl_ms=TTL)
    assert isinstance(out.error, errors.LeaseConflict)
    assert out.task.status is TaskStatus.QUEUED
    assert types(out) == ["task.lease_expired"]


def test_heartbeat_on_cancelled_task_is_answered_unchanged() -> None:
    task = lifecycle.cancel(leased(), now=T0).task
    out = lifecycle.heartbeat(task, token="1.1.n", now=T0, ttl_ms=TTL)
    assert out.error is None and not out.changed
    assert out.task.status is TaskStatus.CANCELLED


def test_reclaim_requeues_then_fails_at_max_attempts() -> None:
    late = T0 + timedelta(seconds=5)
    first = lifecycle.reclaim(leased(attempts=1, status=TaskStatus.RUNNING), now=late)
    assert first.task.status is TaskStatus.QUEUED
    assert types(first) == ["task.lease_expired"]
    last = lifecycle.reclaim(leased(attempts=3), now=late)
    assert last.task.status is TaskStatus.FAILED
    assert last.task.finished_at == late
    assert "attempt 3 of 3" in (last.task.error or "")
    assert types(last) == ["task.lease_expired", "task.failed"]


def test_reclaim_leaves_live_leases_alone() -> None:
    out = lifecycle.reclaim(leased(), now=T0 + timedelta(milliseconds=TTL - 1))
    assert not out.changed and out.task.status is TaskStatus.LEASED


def test_complete_done_records_result_and_usage() -> None:
    task = dataclasses.replace(leased(), usage=Usage(input_tokens=5, cost_usd=0.5))
    out = complete(task, done(result="ok", usage=Usage(input_tokens=2, cost_usd=0.25)))
    assert out.task.status is TaskStatus.DONE
    assert out.task.result == "ok"
    assert out.task.finished_at == T0
    assert out.task.usage == Usage(input_tokens=7, cost_usd=0.75)
    assert types(out) == ["task.completed"]


def test_complete_done_with_active_children_waits() -> None:
    out = complete(leased(), done(result="fanned out"), children=True)
    assert out.task.status is TaskStatus.WAITING_CHILDREN
    assert types(out) == ["task.waiting_children"]


@pytest.mark.parametrize(
    ("status", "expected", "event"),
    [
        (CompletionStatus.FAILED, TaskStatus.FAILED, "task.failed"),
        (CompletionStatus.BLOCKED, TaskStatus.BLOCKED, "task.blocked"),
    ],
)
def test_complete_failed_or_blocked(
    status: CompletionStatus, expected: TaskStatus, event: str
) -> None:
    out = complete(leased(), Completion(status=status, error="why"))
    assert out.task.status is expected
    assert out.task.error == "why"
    assert types(out) == [event]


def test_retry_backs_off_then_fails_when_attempts_run_out() -> None:
    retry = Completion(status=CompletionStatus.RETRY, error="flaky", jitter=0.0)
    first = complete(leased(attempts=1), retry)
    assert first.task.status is TaskStatus.QUEUED
    assert first.task.run_after == T0 + timedelta(milliseconds=500)
    assert types(first) == ["task.retry_scheduled"]
    second = complete(leased(attempts=2), retry, token="1.2.n")
    assert second.task.run_after == T0 + timedelta(milliseconds=1000)
    last = complete(leased(attempts=3), retry, token="1.3.n")
    assert last.task.status is TaskStatus.FAILED
    assert "no attempts left: flaky" in (last.task.error or "")


def test_complete_refuses_stale_token_expired_lease_and_cancelled_task() -> None:
    stale = complete(leased(), done(), token="1.0.old")
    assert isinstance(stale.error, errors.LeaseConflict) and not stale.changed
    expired = complete(leased(), done(), now=T0 + timedelta(seconds=2))
    assert isinstance(expired.error, errors.LeaseConflict)
    assert expired.task.status is TaskStatus.QUEUED  # reclaimed, not completed
    cancelled = lifecycle.cancel(leased(), now=T0).task
    refused = complete(cancelled, done())
    assert isinstance(refused.error, errors.LeaseConflict) and not refused.changed
    finished = complete(leased(), done()).task
    twice = complete(finished, done())
    assert isinstance(twice.error, errors.LeaseConflict) and not twice.changed


def test_release_requeues_without_charging_the_attempt() -> None:
    task = leased(attempts=2, status=TaskStatus.RUNNING)
    out = lifecycle.release(task, token="1.2.n", now=T0, reason="shutdown")
    assert out.error is None
    assert (out.task.status, out.task.attempts, out.task.run_after) == (TaskStatus.QUEUED, 1, T0)
    assert types(out) == ["task.released"]
    stale = lifecycle.release(task, token="1.1.n", now=T0)
    assert isinstance(stale.error, errors.LeaseConflict) and not stale.changed


def test_add_child_limits_and_waiting() -> None:
    parent = make()
    ok = lifecycle.add_child(parent, now=T0, child_count=0, max_depth=1, max_children=5)
    assert ok.error is None
    assert ok.task.status is TaskStatus.WAITING_CHILDREN
    running = leased(status=TaskStatus.RUNNING)
    stays = lifecycle.add_child(running, now=T0, child_count=4, max_depth=1, max_children=5)
    assert stays.error is None and stays.task.status is TaskStatus.RUNNING
    full = lifecycle.add_child(parent, now=T0, child_count=5, max_depth=1, max_children=5)
    assert isinstance(full.error, errors.LimitExceeded)
    assert "QUEUE_MAX_CHILDREN_PER_TASK" in full.error.message
    deep = lifecycle.add_child(
        dataclasses.replace(parent, depth=1), now=T0, child_count=0, max_depth=1, max_children=5
    )
    assert isinstance(deep.error, errors.LimitExceeded)
    assert "QUEUE_MAX_CHILD_DEPTH" in deep.error.message
    finished = lifecycle.add_child(
        make(TaskStatus.DONE), now=T0, child_count=0, max_depth=1, max_children=5
    )
    assert isinstance(finished.error, errors.InvalidTransition)


def test_waiting_for_children_gives_the_attempt_back_whatever_the_children() -> None:
    for children in (True, False):
        task = leased(attempts=2, status=TaskStatus.RUNNING)
        out = complete(
            task,
            Completion(status=CompletionStatus.WAITING_CHILDREN, result="3 nodes dispatched"),
            token=task.lease_token or "",
            children=children,
        )
        assert out.error is None
        assert out.task.attempts == 1
        assert out.task.result == "3 nodes dispatched"
        assert out.task.wake_each
        if children:
            assert out.task.status is TaskStatus.WAITING_CHILDREN
            assert types(out) == ["task.waiting_children"]
        else:  # nothing left to wait for: its next turn at once
            assert out.task.status is TaskStatus.QUEUED
            assert types(out) == ["task.waiting_children", "task.requeued"]


def test_waiting_on_a_child_that_finished_since_the_turn_read_it_queues_at_once() -> None:
    task = leased(status=TaskStatus.RUNNING)
    ask = Completion(status=CompletionStatus.WAITING_CHILDREN, waiting_on=(2, 3))
    waits = complete(
        task, ask, token=task.lease_token or "", children=True, finished=frozenset({4})
    )
    assert waits.task.status is TaskStatus.WAITING_CHILDREN  # 4 finished before the turn read
    woken = complete(
        task, ask, token=task.lease_token or "", children=True, finished=frozenset({3})
    )
    assert woken.task.status is TaskStatus.QUEUED
    assert woken.events[-1].data["reason"] == "child task(s) 3 finished while the turn ran"


def test_a_parent_waking_on_each_child_is_queued_by_any_finish_whatever_its_status() -> None:
    parent = make(TaskStatus.WAITING_CHILDREN, wake_each=True)
    D, R, F = TaskStatus.DONE, TaskStatus.RUNNING, TaskStatus.FAILED
    assert not lifecycle.children_finished(parent, children=[(2, D), (3, R)], now=T0).changed
    for status in (D, F, TaskStatus.BLOCKED, TaskStatus.CANCELLED):
        out = lifecycle.children_finished(
            parent, children=[(2, status), (3, R)], now=T0, finished=[2]
        )
        assert out.task.status is TaskStatus.QUEUED, status
        assert out.events[0].data["reason"] == "child task(s) 2 finished"
    # a child added while it is queued again does not put it back to waiting
    woken = lifecycle.children_finished(parent, children=[(2, F)], now=T0, finished=[2]).task
    added = lifecycle.add_child(woken, now=T0, child_count=1, max_depth=5, max_children=5)
    assert added.task.status is TaskStatus.QUEUED and not added.changed


def test_any_other_completion_waits_for_children_by_the_all_done_rule() -> None:
    task = dataclasses.replace(leased(status=TaskStatus.RUNNING), wake_each=True)
    out = complete(task, done(result="fanned out"), token=task.lease_token or "", children=True)
    assert out.task.status is TaskStatus.WAITING_CHILDREN and not out.task.wake_each
    blocked = lifecycle.children_finished(
        out.task, children=[(2, TaskStatus.FAILED), (3, TaskStatus.RUNNING)], now=T0, finished=[2]
    )
    assert not blocked.changed  # waits for 3; then blocked, not queued


def test_a_blocked_parent_names_its_children_and_how_to_go_on() -> None:
    parent = make(TaskStatus.WAITING_CHILDREN)
    out = lifecycle.children_finished(
        parent,
        children=[(2, TaskStatus.DONE), (3, TaskStatus.FAILED)],
        now=T0,
        notes={3: "dag node ship/b (attempt 1): lease expired"},
    )
    assert out.task.status is TaskStatus.BLOCKED
    assert "3 failed (dag node ship/b (attempt 1): lease expired)" in (out.task.error or "")
    assert "re-queue task 1" in (out.task.error or "")


def test_children_roll_up() -> None:
    parent = make(TaskStatus.WAITING_CHILDREN)
    D, R, F = TaskStatus.DONE, TaskStatus.RUNNING, TaskStatus.FAILED
    pending = lifecycle.children_finished(parent, children=[(2, D), (3, R)], now=T0)
    assert not pending.changed
    ok = lifecycle.children_finished(parent, children=[(2, D), (3, D)], now=T0)
    assert ok.task.status is TaskStatus.QUEUED
    assert types(ok) == ["task.requeued"]
    bad = lifecycle.children_finished(parent, children=[(2, D), (3, F)], now=T0)
    assert bad.task.status is TaskStatus.BLOCKED
    assert "3 failed" in (bad.task.error or "")
    not_waiting = lifecycle.children_finished(make(), children=[(2, D)], now=T0)
    assert not not_waiting.changed


@pytest.mark.parametrize("status", sorted(TaskStatus, key=str))
def test_cancel(status: TaskStatus) -> None:
    out = lifecycle.cancel(make(status), now=T0, reason="no longer needed")
    if status.is_active:
        assert out.task.status is TaskStatus.CANCELLED
        assert types(out) == ["task.cancelled"]
    else:
        assert isinstance(out.error, errors.InvalidTransition)
        assert not out.changed


def test_evolve_matches_dataclasses_replace() -> None:
    from loops.queue.tasks import evolve

    task = make()
    changed = evolve(task, status=TaskStatus.DONE, attempts=2)
    assert changed == dataclasses.replace(task, status=TaskStatus.DONE, attempts=2)
    assert task.status is TaskStatus.QUEUED  # the original is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.attempts = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field"):
        evolve(task, colour="red")


# -- waiting for a person's answer --------------------------------------------------------


def waiting(**changes: object) -> Task:
    out = complete(
        leased(status=TaskStatus.RUNNING),
        Completion(status=CompletionStatus.WAITING_APPROVAL, error="waiting_approval: g: ok?"),
    )
    return dataclasses.replace(out.task, **changes)  # type: ignore[arg-type]


def test_a_running_task_completes_as_waiting_approval_holding_no_lease() -> None:
    out = complete(
        leased(status=TaskStatus.RUNNING),
        Completion(
            status=CompletionStatus.WAITING_APPROVAL,
            error="waiting_approval: g: ok?",
            usage=Usage(input_tokens=5),
        ),
    )
    assert out.error is None
    assert out.task.status is TaskStatus.WAITING_APPROVAL
    assert out.task.lease_expires_at is None and not out.task.status.is_held
    assert out.task.status.is_active and out.task.finished_at is None
    assert out.task.error == "waiting_approval: g: ok?"
    assert out.task.usage.input_tokens == 5
    assert types(out) == ["task.waiting_approval"]
    assert out.events[0].data["reason"] == "waiting_approval: g: ok?"
    # its lease is over: the old token no longer heartbeats, and nothing reclaims it
    assert isinstance(
        lifecycle.heartbeat(out.task, token="1.1.n", now=T0, ttl_ms=TTL).error,
        errors.LeaseConflict,
    )
    assert not lifecycle.reclaim(out.task, now=T0 + timedelta(days=1)).changed


def test_an_answer_queues_a_waiting_task_with_fresh_attempts_and_records_who() -> None:
    later = T0 + timedelta(hours=2)
    out = lifecycle.answer(
        waiting(attempts=3), now=later, path="ship/g", approved=False, by="bob", reason="no"
    )
    assert out.error is None
    assert out.task.status is TaskStatus.QUEUED
    assert out.task.attempts == 0 and out.task.run_after == later and out.task.error is None
    assert types(out) == ["task.approval_answered"]
    assert out.events[0].data == {
        "path": "ship/g",
        "approved": False,
        "by": "bob",
        "reason": "no",
        "previous": "waiting_approval",
    }
    assert lifecycle.lease(out.task, now=later, owner="w2", ttl_ms=TTL, nonce="x").error is None


def test_an_answer_to_a_running_task_is_only_recorded() -> None:
    task = leased(status=TaskStatus.RUNNING)
    out = lifecycle.answer(task, now=T0, path="g", approved=True, by="ann")
    assert out.error is None and out.task is task and types(out) == ["task.approval_answered"]


@pytest.mark.parametrize("status", [TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED])
def test_a_finished_task_cannot_be_answered(status: TaskStatus) -> None:
    out = lifecycle.answer(make(status), now=T0, path="g", approved=True, by="ann")
    assert isinstance(out.error, errors.InvalidTransition)
    assert "requeue" in out.error.message and not out.changed


def test_a_waiting_task_can_be_cancelled_but_not_leased_requeued_or_given_children() -> None:
    task = waiting()
    out = lifecycle.cancel(task, now=T0, reason="never mind")
    assert out.task.status is TaskStatus.CANCELLED and out.task.finished_at == T0
    assert isinstance(
        lifecycle.lease(task, now=T0, owner="w", ttl_ms=TTL, nonce="n").error,
        errors.InvalidTransition,
    )
    assert isinstance(lifecycle.requeue(task, now=T0).error, errors.InvalidTransition)
    added = lifecycle.add_child(task, now=T0, child_count=0, max_depth=5, max_children=5)
    assert isinstance(added.error, errors.InvalidTransition)


def test_a_waiting_child_keeps_its_parent_waiting() -> None:
    parent = make(TaskStatus.WAITING_CHILDREN)
    out = lifecycle.children_finished(
        parent, children=[(2, TaskStatus.DONE), (3, TaskStatus.WAITING_APPROVAL)], now=T0
    )
    assert not out.changed
