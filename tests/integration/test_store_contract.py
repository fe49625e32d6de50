"""The store contract: every backend must pass every test here."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from loops import errors
from loops.queue import schedules
from loops.queue.artifacts import ArtifactKind
from loops.queue.backoff import Backoff
from loops.queue.responsibilities import ResponsibilityDef, TaskTemplate
from loops.queue.steps import parse_markers
from loops.queue.tasks import (
    Completion,
    CompletionRequest,
    CompletionStatus,
    TaskSpec,
    TaskStatus,
)
from loops.store.base import Store
from loops.usage import Usage

T0 = datetime(2026, 11, 27, 12, 0, 0, 123000, tzinfo=UTC)
TTL = 10_000
BACKOFF = Backoff(base_ms=1_000)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def create(store: Store, prompt: str = "p", **kw: object) -> int:
    task, created = store.create_task(TaskSpec(prompt=prompt, **kw), now=T0, max_attempts=3)  # type: ignore[arg-type]
    assert created
    return task.id


def lease_one(store: Store, now: datetime = T0, owner: str = "w1", ttl_ms: int = TTL):  # type: ignore[no-untyped-def]
    (leased,) = store.lease_next(now=now, owner=owner, ttl_ms=ttl_ms)
    return leased


def finish(
    store: Store, task_id: int, token: str, status: str = "done", now: datetime = T0, **kw: object
):  # type: ignore[no-untyped-def]
    completion = Completion(status=CompletionStatus(status), **kw)  # type: ignore[arg-type]
    return store.complete(CompletionRequest(task_id, token, completion), now=now, backoff=BACKOFF)


def event_types(store: Store, task_id: int | None = None) -> list[str]:
    return [e.type for e in store.list_events(limit=1000, task_id=task_id)]


# -- create / get / list ----------------------------------------------------------------


def test_create_and_get_round_trip_every_field(store: Store) -> None:
    spec = TaskSpec(
        prompt="fix the tests", type="code", title="Fix", priority=2, success="green",
        check="pytest -q", provider="mock", model="m1", cwd="/tmp/x", max_iterations=4,
        min_tests=3, max_attempts=5, idempotency_key="k1",
    )  # fmt: skip
    task, created = store.create_task(spec, now=T0, max_attempts=3)
    assert created and task.id > 0
    got = store.get_task(task.id)
    assert got == task
    assert (got.status, got.attempts, got.max_attempts, got.depth) == (TaskStatus.QUEUED, 0, 5, 0)
    assert got.created_at == T0 and got.run_after == T0
    assert (got.check, got.cwd, got.min_tests, got.max_iterations) == ("pytest -q", "/tmp/x", 3, 4)
    assert event_types(store, task.id) == ["task.created"]


@pytest.mark.parametrize("key", [None, "k1"])
def test_create_stores_every_spec_field_and_its_created_event(
    store: Store, key: str | None
) -> None:
    """With and without an idempotency key (backends may take a shorter path without)."""
    spec = TaskSpec(
        prompt="fix the tests", type="code", title="Fix", priority=4, success="green",
        check="pytest -q", provider="mock", model="m1", cwd="/tmp/x", max_iterations=4,
        min_tests=3, max_attempts=5, idempotency_key=key, responsibility="nightly",
        run_after=at(60_000),
    )  # fmt: skip
    task, created = store.create_task(spec, now=T0, max_attempts=3)
    assert created and task.id > 0
    assert store.get_task(task.id) == task
    assert (task.type, task.title, task.prompt, task.priority, task.success, task.check) == (
        "code",
        "Fix",
        "fix the tests",
        4,
        "green",
        "pytest -q",
    )
    assert (task.provider, task.model, task.cwd, task.max_iterations, task.min_tests) == (
        "mock",
        "m1",
        "/tmp/x",
        4,
        3,
    )
    assert (task.status, task.attempts, task.max_attempts, task.depth, task.parent_id) == (
        TaskStatus.QUEUED,
        0,
        5,
        0,
        None,
    )
    assert (task.idempotency_key, task.responsibility, task.result, task.error) == (
        key,
        "nightly",
        None,
        None,
    )
    assert (task.lease_owner, task.lease_token, task.lease_expires_at) == (None, None, None)
    assert task.usage == Usage() and task.finished_at is None
    assert (task.created_at, task.updated_at, task.run_after) == (T0, T0, at(60_000))
    (event,) = store.list_events(limit=10, task_id=task.id)
    assert (event.type, event.ts, event.task_id) == ("task.created", T0, task.id)
    assert event.data == {"type": "code", "priority": 4, "responsibility": "nightly"}
    assert store.lease_next(now=at(59_999), owner="w", ttl_ms=TTL) == []
    assert lease_one(store, now=at(60_000)).task.id == task.id


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"success": "green"},
        {"responsibility": "nightly"},
        {"success": "green", "responsibility": "nightly", "title": "T"},
        {"min_tests": 0},
        {"check": "make test", "success": "green"},
        {"provider": "mock", "model": "m", "cwd": "/w", "max_iterations": 2},
    ],
    ids=["bare", "success", "responsibility", "plain", "one-option", "check", "engine"],
)
def test_a_create_stores_what_its_spec_sets_and_nulls_what_it_leaves_unset(
    store: Store, fields: dict[str, object]
) -> None:
    """Whichever spec fields are set (a backend may write unset ones as literals)."""
    spec = TaskSpec(prompt="p", priority=2, **fields)  # type: ignore[arg-type]
    task, _ = store.create_task(spec, now=T0, max_attempts=3)
    got = store.get_task(task.id)
    assert got == task
    for name in ("title", "success", "check", "provider", "model", "cwd", "max_iterations",
                 "min_tests", "responsibility"):  # fmt: skip
        assert getattr(got, name) == getattr(spec, name), name
    (event,) = store.list_events(limit=10, task_id=task.id)
    expected: dict[str, object] = {"type": "task", "priority": 2}
    if spec.responsibility is not None:
        expected["responsibility"] = spec.responsibility
    assert (event.type, event.data) == ("task.created", expected)


def test_idempotency_key_returns_the_existing_task(store: Store) -> None:
    first, created = store.create_task(TaskSpec(prompt="a", idempotency_key="k"), now=T0,
                                       max_attempts=3)  # fmt: skip
    again, created_again = store.create_task(
        TaskSpec(prompt="different", idempotency_key="k"), now=at(5), max_attempts=3
    )
    assert created and not created_again
    assert again == first
    assert len(store.list_tasks()) == 1


def test_unknown_ids_are_task_not_found(store: Store) -> None:
    for call in (
        lambda: store.get_task(999),
        lambda: store.list_steps(999),
        lambda: store.cancel(999, now=T0),
        lambda: store.lease_task(999, now=T0, owner="w", ttl_ms=TTL),
        lambda: store.heartbeat(999, token="x", now=T0, ttl_ms=TTL),
        lambda: store.list_artifacts(task_id=999),
        lambda: store.count_related(999),
        lambda: store.create_child(
            999, TaskSpec(prompt="c"), now=T0, max_attempts=3, max_depth=1, max_children=5
        ),
    ):
        with pytest.raises(errors.TaskNotFound, match="999"):
            call()


def test_list_newest_first_with_filters(store: Store) -> None:
    ids = [create(store, f"t{i}") for i in range(5)]
    assert [t.id for t in store.list_tasks()] == ids[::-1]
    assert [t.id for t in store.list_tasks(limit=2)] == ids[:2:-1][:2]
    assert [t.id for t in store.list_tasks(before_id=ids[2])] == [ids[1], ids[0]]
    lease_one(store)
    assert [t.id for t in store.list_tasks(status=TaskStatus.LEASED)] == [ids[0]]
    assert len(store.list_tasks(status=TaskStatus.QUEUED)) == 4
    typed = create(store, "typed", type="chore")
    assert [t.id for t in store.list_tasks(task_type="chore")] == [typed]
    assert store.list_tasks(task_type="chore", status=TaskStatus.DONE) == []


# -- leasing ----------------------------------------------------------------------------


def test_lease_order_is_priority_then_age(store: Store) -> None:
    low = create(store, priority=5)
    old_normal = create(store, priority=3)
    urgent = create(store, priority=1)
    new_normal = create(store, priority=3)
    order = [lease_one(store).task.id for _ in range(4)]
    assert order == [urgent, old_normal, new_normal, low]
    assert store.lease_next(now=T0, owner="w", ttl_ms=TTL) == []


def test_lease_grants_a_fencing_token_and_counts_an_attempt(store: Store) -> None:
    task_id = create(store)
    leased = lease_one(store, owner="worker-a")
    assert leased.task.id == task_id
    assert leased.task.status is TaskStatus.LEASED
    assert leased.task.attempts == 1 and leased.lease.attempt == 1
    assert leased.lease.owner == "worker-a"
    assert leased.lease.expires_at == T0 + timedelta(milliseconds=TTL)
    assert leased.lease.token.startswith(f"{task_id}.1.")
    assert store.get_task(task_id) == leased.task
    assert event_types(store, task_id) == ["task.created", "task.leased"]


def test_lease_respects_run_after_and_types(store: Store) -> None:
    later = create(store, run_after=at(5_000))
    other = create(store, type="other")
    wanted = create(store, type="wanted")
    (got,) = store.lease_next(now=T0, owner="w", ttl_ms=TTL, types=["wanted"])
    assert got.task.id == wanted
    (got,) = store.lease_next(now=T0, owner="w", ttl_ms=TTL)
    assert got.task.id == other
    assert store.lease_next(now=T0, owner="w", ttl_ms=TTL) == []
    (got,) = store.lease_next(now=at(5_000), owner="w", ttl_ms=TTL)
    assert got.task.id == later


def test_deferred_tasks_that_came_due_are_leased_by_priority_then_age(store: Store) -> None:
    # tasks created for later or retried in backoff are queued all along (counted and
    # listed), and once due they take their place among the ready ones in lease order
    low = create(store, priority=5)
    urgent_later = create(store, priority=1, run_after=at(5_000))
    mid_later = create(store, priority=3, run_after=at(2_000))
    not_yet = create(store, priority=1, run_after=at(60_000))
    retried = create(store, priority=2)
    assert lease_one(store).task.id == retried
    back = finish(store, retried, store.get_task(retried).lease_token or "", "retry", jitter=0.0)
    assert back.status is TaskStatus.QUEUED and back.run_after == at(500)
    every = [low, urgent_later, mid_later, not_yet, retried]
    assert store.status_summary(now=T0).counts[TaskStatus.QUEUED] == 5
    listed = store.list_tasks(status=TaskStatus.QUEUED, limit=10)
    assert [t.id for t in listed] == sorted(every, reverse=True)
    hour = 3_600_000
    assert [t.task.id for t in store.lease_next(now=at(499), owner="w", ttl_ms=hour)] == [low]
    batch = store.lease_next(now=at(5_000), owner="w", ttl_ms=hour, limit=10)
    assert [t.task.id for t in batch] == [urgent_later, retried, mid_later]
    assert [t.task.attempts for t in batch] == [1, 2, 1]
    assert store.lease_next(now=at(59_999), owner="w", ttl_ms=TTL) == []
    assert store.status_summary(now=T0).counts[TaskStatus.QUEUED] == 1
    assert lease_one(store, now=at(60_000)).task.id == not_yet
    assert store.status_summary(now=T0).counts.get(TaskStatus.QUEUED, 0) == 0


def test_batch_lease_takes_up_to_limit(store: Store) -> None:
    ids = [create(store) for _ in range(5)]
    batch = store.lease_next(now=T0, owner="w", ttl_ms=TTL, limit=3)
    assert [b.task.id for b in batch] == ids[:3]
    assert len({b.lease.token for b in batch}) == 3
    rest = store.lease_next(now=T0, owner="w", ttl_ms=TTL, limit=10)
    assert [b.task.id for b in rest] == ids[3:]


def test_lease_task_by_id(store: Store) -> None:
    first = create(store)
    second = create(store, run_after=at(60_000))
    leased = store.lease_task(second, now=T0, owner="w", ttl_ms=TTL)
    assert leased.task.id == second and leased.task.status is TaskStatus.LEASED
    with pytest.raises(errors.InvalidTransition, match="leased"):
        store.lease_task(second, now=T0, owner="w2", ttl_ms=TTL)
    assert lease_one(store).task.id == first


def test_expired_lease_is_reclaimed_by_the_next_lease(store: Store) -> None:
    task_id = create(store)
    first = lease_one(store, owner="w1", ttl_ms=1_000)
    assert store.lease_next(now=at(999), owner="w2", ttl_ms=TTL) == []
    second = lease_one(store, now=at(1_000), owner="w2")
    assert second.task.id == task_id
    assert second.task.attempts == 2
    assert second.lease.token != first.lease.token
    # the first worker lost its lease: it can neither heartbeat nor complete
    with pytest.raises(errors.LeaseConflict):
        store.heartbeat(task_id, token=first.lease.token, now=at(1_001), ttl_ms=TTL)
    with pytest.raises(errors.LeaseConflict):
        finish(store, task_id, first.lease.token, now=at(1_001))
    assert store.get_task(task_id).status is TaskStatus.LEASED
    assert "task.lease_expired" in event_types(store, task_id)


def test_a_typed_lease_reclaims_expired_leases_of_any_type(store: Store) -> None:
    # the lease's read sees no ready task of the type, but an expired lease: it reclaims
    other = create(store, type="other")
    lease_one(store, owner="w1", ttl_ms=1_000)
    wanted = create(store, type="wanted", run_after=at(5_000))
    assert store.lease_next(now=at(1_000), owner="w2", ttl_ms=TTL, types=["wanted"]) == []
    assert store.get_task(other).status is TaskStatus.QUEUED
    assert "task.lease_expired" in event_types(store, other)
    (got,) = store.lease_next(now=at(5_000), owner="w2", ttl_ms=TTL, types=["wanted"])
    assert got.task.id == wanted


def test_reclaim_fails_the_task_at_max_attempts(store: Store) -> None:
    task_id = create(store, max_attempts=2)
    now = T0
    for _ in range(2):
        lease_one(store, now=now, ttl_ms=100)
        now += timedelta(milliseconds=100)
    reclaimed = store.reclaim_expired(now=now)
    assert [t.id for t in reclaimed] == [task_id]
    task = store.get_task(task_id)
    assert task.status is TaskStatus.FAILED
    assert "attempt 2 of 2" in (task.error or "")
    assert store.lease_next(now=now, owner="w", ttl_ms=TTL) == []


def test_lease_task_reclaims_an_expired_lease_first(store: Store) -> None:
    task_id = create(store)
    lease_one(store, ttl_ms=100)
    again = store.lease_task(task_id, now=at(100), owner="w2", ttl_ms=TTL)
    assert again.task.attempts == 2 and again.lease.owner == "w2"


# -- heartbeat / complete ---------------------------------------------------------------


def test_heartbeat_extends_and_starts(store: Store) -> None:
    task_id = create(store)
    leased = lease_one(store, ttl_ms=1_000)
    beat = store.heartbeat(task_id, token=leased.lease.token, now=at(900), ttl_ms=1_000,
                           start=True)  # fmt: skip
    assert not beat.cancel_requested
    assert beat.task.status is TaskStatus.RUNNING
    assert beat.lease.expires_at == at(1_900)
    assert store.get_task(task_id).lease_expires_at == at(1_900)
    assert store.lease_next(now=at(1_500), owner="w2", ttl_ms=TTL) == []
    with pytest.raises(errors.LeaseConflict):
        store.heartbeat(task_id, token="bogus", now=at(1_000), ttl_ms=TTL)
    assert event_types(store, task_id).count("task.started") == 1


def test_complete_done_records_result_usage_and_steps(store: Store) -> None:
    task_id = create(store)
    leased = lease_one(store)
    output = "STEP[a]: DONE idempotency=k1 note=first\nSTEP[b]: FAILED idempotency=k2"
    task = store.complete(
        CompletionRequest(
            task_id,
            leased.lease.token,
            Completion(
                status=CompletionStatus.DONE,
                result="all green",
                usage=Usage(input_tokens=10, output_tokens=5, cost_usd=0.01),
            ),
            steps=tuple(parse_markers(output)),
        ),
        now=at(10),
        backoff=BACKOFF,
    )
    assert task.status is TaskStatus.DONE and task.result == "all green"
    assert task.finished_at == at(10)
    assert store.get_task(task_id).usage == Usage(10, 5, 0, 0.01)
    steps = store.list_steps(task_id)
    assert [(s.name, s.status.value, s.idempotency_key) for s in steps] == [
        ("a", "DONE", "k1"), ("b", "FAILED", "k2")
    ]  # fmt: skip
    with pytest.raises(errors.LeaseConflict):
        finish(store, task_id, leased.lease.token)
    types = event_types(store, task_id)
    assert types[-1] == "task.completed" and types.count("step.recorded") == 2


def test_retry_schedules_a_backoff_then_fails(store: Store) -> None:
    task_id = create(store, max_attempts=2)
    leased = lease_one(store)
    task = finish(store, task_id, leased.lease.token, "retry", error="flaky", jitter=0.0)
    assert task.status is TaskStatus.QUEUED
    assert task.run_after == T0 + timedelta(milliseconds=500)
    assert store.lease_next(now=at(499), owner="w", ttl_ms=TTL) == []
    again = lease_one(store, now=at(500))
    task = finish(store, task_id, again.lease.token, "retry", now=at(501), error="flaky")
    assert task.status is TaskStatus.FAILED
    assert "no attempts left" in (task.error or "")


def test_release_gives_the_task_back_without_an_attempt(store: Store) -> None:
    task_id = create(store, max_attempts=1)
    leased = lease_one(store)
    released = store.release(task_id, token=leased.lease.token, now=at(5), reason="shutdown")
    assert released.status is TaskStatus.QUEUED and released.attempts == 0
    again = lease_one(store, now=at(5))
    assert again.task.id == task_id and again.task.attempts == 1
    with pytest.raises(errors.LeaseConflict):
        store.release(task_id, token=leased.lease.token, now=at(6))
    assert "task.released" in event_types(store, task_id)


@pytest.mark.parametrize("status", ["failed", "blocked"])
def test_complete_failed_or_blocked(store: Store, status: str) -> None:
    task_id = create(store)
    leased = lease_one(store)
    task = finish(store, task_id, leased.lease.token, status, error="because")
    assert task.status.value == status and task.error == "because"


def test_complete_many_answers_item_by_item(store: Store) -> None:
    ids = [create(store) for _ in range(3)]
    leases = store.lease_next(now=T0, owner="w", ttl_ms=TTL, limit=3)
    done = Completion(status=CompletionStatus.DONE)
    outcomes = store.complete_many(
        [
            CompletionRequest(ids[0], leases[0].lease.token, done),
            CompletionRequest(ids[1], "stale", done),
            CompletionRequest(ids[2], leases[2].lease.token, done),
            CompletionRequest(999, "x", done),
        ],
        now=T0,
        backoff=BACKOFF,
    )
    assert [o.ok for o in outcomes] == [True, False, True, False]
    assert isinstance(outcomes[1].error, errors.LeaseConflict)
    assert isinstance(outcomes[3].error, errors.TaskNotFound)
    statuses = [store.get_task(i).status for i in ids]
    assert statuses == [TaskStatus.DONE, TaskStatus.LEASED, TaskStatus.DONE]


# -- parents and children ---------------------------------------------------------------


def child(store: Store, parent_id: int, prompt: str = "c", **kw: object) -> int:
    task, _ = store.create_child(
        parent_id,
        TaskSpec(prompt=prompt, **kw),
        now=T0,
        max_attempts=3,  # type: ignore[arg-type]
        max_depth=1,
        max_children=3,
    )
    return task.id


def test_children_roll_up_to_a_requeued_parent(store: Store) -> None:
    parent = create(store, "parent")
    leased = lease_one(store)
    kids = [child(store, parent) for _ in range(2)]
    assert store.get_task(kids[0]).depth == 1 and store.get_task(kids[0]).parent_id == parent
    assert store.get_task(parent).status is TaskStatus.LEASED  # it waits when it completes
    after = finish(store, parent, leased.lease.token, result="fanned out")
    assert after.status is TaskStatus.WAITING_CHILDREN
    for _ in kids:
        kid = lease_one(store)
        finish(store, kid.task.id, kid.lease.token)
    parent_task = store.get_task(parent)
    assert parent_task.status is TaskStatus.QUEUED
    assert lease_one(store).task.id == parent
    assert "task.requeued" in event_types(store, parent)
    assert store.count_related(parent).children == 2


def test_a_failed_child_blocks_the_parent(store: Store) -> None:
    parent = create(store, "parent")
    kids = [child(store, parent) for _ in range(2)]
    assert store.get_task(parent).status is TaskStatus.WAITING_CHILDREN
    first = lease_one(store)
    assert first.task.id == kids[0]  # the waiting parent is not leased
    finish(store, kids[0], first.lease.token, "failed", error="boom")
    assert store.get_task(parent).status is TaskStatus.WAITING_CHILDREN
    second = lease_one(store)
    finish(store, kids[1], second.lease.token)
    blocked = store.get_task(parent)
    assert blocked.status is TaskStatus.BLOCKED
    assert f"{kids[0]} failed" in (blocked.error or "")


def test_waiting_for_children_that_already_finished_queues_the_parent_again(
    store: Store,
) -> None:
    parent = create(store, "parent")
    held = lease_one(store)
    kid = child(store, parent)
    kid_lease = lease_one(store)
    finish(store, kid, kid_lease.lease.token)  # done before the parent's turn ended
    # "done" would now finish the parent: "waiting_children" waits for, or wakes on, them
    after = finish(store, parent, held.lease.token, "waiting_children")
    assert after.status is TaskStatus.QUEUED
    again = store.get_task(parent)
    assert again.attempts == 0  # the turn that waited is not a failed attempt
    assert event_types(store, parent)[-2:] == ["task.waiting_children", "task.requeued"]
    second = lease_one(store)
    kid2 = child(store, parent)
    after2 = finish(store, parent, second.lease.token, "waiting_children")
    assert after2.status is TaskStatus.WAITING_CHILDREN  # kid2 is still queued
    kid2_lease = lease_one(store)
    finish(store, kid2, kid2_lease.lease.token, "failed", error="boom")
    woken = store.get_task(parent)  # its next turn decides what the failure means
    assert woken.status is TaskStatus.QUEUED and woken.error is None
    assert event_types(store, parent)[-1] == "task.requeued"


def kids_of(store: Store, parent_id: int, count: int) -> list[int]:
    made = [
        store.create_child(
            parent_id,
            TaskSpec(prompt=f"kid {i}"),
            now=T0,
            max_attempts=3,
            max_depth=1,
            max_children=10,
        )[0].id
        for i in range(count)
    ]
    return made


def lease_id(store: Store, task_id: int, owner: str = "w1"):  # type: ignore[no-untyped-def]
    return store.lease_task(task_id, now=T0, owner=owner, ttl_ms=TTL)


def test_waiting_children_wakes_the_parent_as_each_child_finishes(store: Store) -> None:
    parent = create(store, "parent")
    turn = lease_one(store)
    kids = kids_of(store, parent, 3)
    waiting = finish(store, parent, turn.lease.token, "waiting_children", waiting_on=tuple(kids))
    assert waiting.status is TaskStatus.WAITING_CHILDREN and waiting.wake_each
    leases = {kid: lease_id(store, kid) for kid in kids}
    # a child ending failed wakes it like one ending done: the parent's turn decides
    finish(store, kids[0], leases[kids[0]].lease.token, "failed", error="no binary")
    woken = store.get_task(parent)
    assert woken.status is TaskStatus.QUEUED  # while kids 1 and 2 still run
    assert event_types(store, parent)[-1] == "task.requeued"
    requeues = event_types(store, parent).count("task.requeued")
    # another finishing while it is queued changes nothing: its turn will see both
    finish(store, kids[1], leases[kids[1]].lease.token)
    assert store.get_task(parent).status is TaskStatus.QUEUED
    assert event_types(store, parent).count("task.requeued") == requeues
    second = lease_id(store, parent)
    # the turn read kid 2 active; kid 2 finishes before the turn completes
    finish(store, kids[2], leases[kids[2]].lease.token)
    assert store.get_task(parent).status is TaskStatus.LEASED  # held: nothing to wake
    again = finish(store, parent, second.lease.token, "waiting_children", waiting_on=(kids[2],))
    assert again.status is TaskStatus.QUEUED  # not lost: re-checked as it completed
    third = lease_id(store, parent)
    done = finish(store, parent, third.lease.token, result="all nodes taken")
    assert done.status is TaskStatus.DONE and not done.wake_each


def test_a_child_that_finished_since_the_turn_read_it_queues_the_completion(store: Store) -> None:
    parent = create(store, "parent")
    turn = lease_one(store)
    kids = kids_of(store, parent, 2)
    kid = lease_id(store, kids[0])
    finish(store, kids[0], kid.lease.token)  # finished; kids[1] is still queued
    # the turn saw kids[0] finished already (it does not name it): it waits for kids[1]
    waits = finish(store, parent, turn.lease.token, "waiting_children", waiting_on=(kids[1],))
    assert waits.status is TaskStatus.WAITING_CHILDREN
    # named, the same finished child queues it at once
    parent2 = create(store, "parent 2")
    turn2 = lease_id(store, parent2)
    kids2 = kids_of(store, parent2, 2)
    kid2 = lease_id(store, kids2[0])
    finish(store, kids2[0], kid2.lease.token)
    woken = finish(store, parent2, turn2.lease.token, "waiting_children", waiting_on=tuple(kids2))
    assert woken.status is TaskStatus.QUEUED
    assert store.list_events(task_id=parent2, limit=100)[-1].data["reason"] == (
        f"child task(s) {kids2[0]} finished while the turn ran"
    )


def test_children_finishing_together_wake_the_parent_once(store: Store) -> None:
    parent = create(store, "parent")
    turn = lease_one(store)
    kids = kids_of(store, parent, 3)
    finish(store, parent, turn.lease.token, "waiting_children", waiting_on=tuple(kids))
    leases = [lease_id(store, kid) for kid in kids[:2]]
    outcomes = store.complete_many(
        [
            CompletionRequest(leased.task.id, leased.lease.token, Completion(CompletionStatus.DONE))
            for leased in leases
        ],
        now=T0,
        backoff=BACKOFF,
    )
    assert all(o.ok for o in outcomes)
    assert store.get_task(parent).status is TaskStatus.QUEUED
    requeued = [
        e for e in store.list_events(task_id=parent, limit=100) if e.type == "task.requeued"
    ]
    assert len(requeued) == 1
    assert requeued[0].data["reason"] == f"child task(s) {kids[0]}, {kids[1]} finished"


@pytest.mark.parametrize("parent_via", ["complete", "complete_and_lease"])
def test_a_child_finishing_as_its_parent_waits_never_loses_the_wake(
    store: Store, parent_via: str
) -> None:
    """The parent's waiting_children completion races its child's completion (threads):
    whichever commits first, the parent ends queued, never waiting on a finished child.
    Also when the parent's completion leases in the same transaction (PostgreSQL reads
    the children in the lease gate's statement there, still after the parent's lock)."""
    for _ in range(12):
        parent = create(store, "parent")
        turn = lease_id(store, parent)
        racer, other = kids_of(store, parent, 2)
        racer_lease = lease_id(store, racer)
        start = threading.Barrier(2)
        failures: list[BaseException] = []

        def run(task_id: int, token: str, status: str, **kw: object) -> None:
            try:
                start.wait()  # noqa: B023 (joined before the next iteration)
                if status == "done" or parent_via == "complete":
                    finish(store, task_id, token, status, **kw)
                    return
                completion = Completion(status=CompletionStatus(status), **kw)  # type: ignore[arg-type]
                (outcome,), _ = store.complete_and_lease(
                    [CompletionRequest(task_id, token, completion)],
                    now=T0, backoff=BACKOFF, owner="w2", ttl_ms=TTL, types=["none-such"],
                )  # fmt: skip
                assert outcome.error is None
            except BaseException as exc:  # reported below
                failures.append(exc)  # noqa: B023

        threads = [
            threading.Thread(target=run, args=(racer, racer_lease.lease.token, "done")),
            threading.Thread(
                target=run,
                args=(parent, turn.lease.token, "waiting_children"),
                kwargs={"waiting_on": (racer,)},
            ),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        assert store.get_task(other).status is TaskStatus.QUEUED  # still active
        assert store.get_task(parent).status is TaskStatus.QUEUED


def test_child_limits(store: Store) -> None:
    parent = create(store, "parent")
    kid = child(store, parent)
    with pytest.raises(errors.LimitExceeded, match="QUEUE_MAX_CHILD_DEPTH"):
        child(store, kid)
    child(store, parent)
    child(store, parent)
    with pytest.raises(errors.LimitExceeded, match="QUEUE_MAX_CHILDREN_PER_TASK"):
        child(store, parent)
    assert store.count_related(parent).children == 3


def test_cancel_cascades_to_children(store: Store) -> None:
    parent = create(store, "parent")
    kids = [child(store, parent) for _ in range(2)]
    leased = lease_one(store)
    finish(store, leased.task.id, leased.lease.token)
    cancelled = store.cancel(parent, now=at(5), reason="not needed")
    assert [t.id for t in cancelled] == [parent, kids[1]]
    assert store.get_task(kids[0]).status is TaskStatus.DONE
    assert store.get_task(kids[1]).status is TaskStatus.CANCELLED
    with pytest.raises(errors.InvalidTransition, match="cancelled"):
        store.cancel(parent, now=at(6))


def test_cancelled_task_is_seen_on_heartbeat_and_refused_on_complete(store: Store) -> None:
    task_id = create(store)
    leased = lease_one(store)
    store.cancel(task_id, now=T0)
    beat = store.heartbeat(task_id, token=leased.lease.token, now=at(1), ttl_ms=TTL)
    assert beat.cancel_requested and beat.task.status is TaskStatus.CANCELLED
    with pytest.raises(errors.LeaseConflict, match="cancelled"):
        finish(store, task_id, leased.lease.token, now=at(2))


# -- events, steps, state, artifacts ----------------------------------------------------


def test_events_tail_and_after(store: Store) -> None:
    ids = [create(store) for _ in range(5)]
    events = store.list_events(limit=3)
    assert [e.task_id for e in events] == ids[2:]
    assert events == sorted(events, key=lambda e: e.id)
    after = store.list_events(after_id=events[0].id, limit=10)
    assert [e.task_id for e in after] == ids[3:]
    custom = store.append_event("run.started", now=T0, task_id=ids[0], data={"run_id": "r1"})
    assert custom.id > events[-1].id
    assert store.list_events(after_id=events[-1].id)[0].data == {"run_id": "r1"}


def test_prune_deletes_only_events_older_than_the_cut_in_batches(store: Store) -> None:
    task_id = create(store)  # its task.created event is at T0
    for second in range(1, 8):
        store.append_event("run.progress", now=at(second * 1000), task_id=task_id)
    kept_from = at(5000)
    # batch 2: several transactions; the stop at the first batch holding a newer event
    assert store.prune_events(before=kept_from, batch=2) == 5
    left = store.list_events(limit=100)
    assert [e.ts for e in left] == [at(5000), at(6000), at(7000)]
    assert store.prune_events(before=kept_from) == 0
    # ids are kept: a reader paging with after_id sees nothing twice or missing
    newest = store.append_event("run.progress", now=at(8000), task_id=task_id)
    assert [e.id for e in store.list_events(after_id=left[-1].id)] == [newest.id]
    assert store.get_task(task_id).id == task_id  # tasks are not pruned


def test_steps_are_unique_per_task_and_key(store: Store) -> None:
    task_id = create(store)
    store.record_steps(task_id, parse_markers("STEP[a]: FAILED idempotency=k note=1"), now=T0)
    store.record_steps(task_id, parse_markers("STEP[a]: DONE idempotency=k note=2"), now=at(5))
    (step,) = store.list_steps(task_id)
    assert (step.status.value, step.note, step.created_at, step.updated_at) == (
        "DONE", "2", T0, at(5)
    )  # fmt: skip


def test_state_global_and_per_task(store: Store) -> None:
    task_id = create(store)
    assert store.get_state("session") is None
    store.put_state("session", {"id": "abc", "iteration": 2}, now=T0, task_id=task_id)
    store.put_state("session", "global", now=T0)
    assert store.get_state("session", task_id=task_id) == {"id": "abc", "iteration": 2}
    assert store.get_state("session") == "global"
    store.put_state("session", [1], now=T0, task_id=task_id)
    assert store.get_state("session", task_id=task_id) == [1]
    with pytest.raises(errors.InputError, match="JSON"):
        store.put_state("bad", object(), now=T0)


def test_artifacts_are_content_addressed(store: Store) -> None:
    task_id = create(store)
    first = store.put_artifact(task_id, name="../../etc/passwd", kind=ArtifactKind.LOG,
                               content=b"hello", now=T0)  # fmt: skip
    second = store.put_artifact(task_id, name="copy", kind=ArtifactKind.DIFF, content=b"hello",
                                now=at(1))  # fmt: skip
    assert (
        first.sha256
        == second.sha256
        == ("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    )
    assert first.path == second.path and "passwd" not in first.path
    assert store.read_artifact(first.id) == b"hello"
    assert [a.id for a in store.list_artifacts(task_id=task_id)] == [second.id, first.id]
    assert [a.id for a in store.list_artifacts(limit=1)] == [second.id]
    assert store.count_related(task_id).artifacts == 2
    with pytest.raises(errors.NotFound):
        store.get_artifact(999)


# -- responsibilities and summary -------------------------------------------------------


def triage(schedule: str = "15m", **kw: object) -> ResponsibilityDef:
    return ResponsibilityDef(
        name="triage", schedule=schedules.every(schedule),
        template=TaskTemplate(prompt="triage the inbox", **kw),  # type: ignore[arg-type]
    )  # fmt: skip


def test_responsibility_dispatches_once_and_not_while_active(store: Store) -> None:
    store.sync_responsibilities([triage()], now=T0)
    (dispatch,) = store.dispatch_due(now=T0, max_attempts=3)
    assert dispatch.responsibility == "triage"
    assert dispatch.task.responsibility == "triage" and dispatch.task.prompt == "triage the inbox"
    assert store.dispatch_due(now=T0, max_attempts=3) == []
    (resp,) = store.list_responsibilities()
    assert resp.last_dispatched_at == T0 and resp.next_due_at == at(15 * 60_000)
    assert resp.last_task_id == dispatch.task.id
    due = at(15 * 60_000)
    assert store.dispatch_due(now=due, max_attempts=3) == []  # previous still queued
    leased = lease_one(store, now=due)
    finish(store, leased.task.id, leased.lease.token, now=due)
    (second,) = store.dispatch_due(now=due, max_attempts=3)
    assert second.task.id != dispatch.task.id


def test_sync_keeps_bookkeeping_and_disables_removed(store: Store) -> None:
    store.sync_responsibilities([triage()], now=T0)
    store.dispatch_due(now=T0, max_attempts=3)
    (resp,) = store.sync_responsibilities([triage()], now=at(1))
    assert resp.last_dispatched_at == T0 and resp.enabled
    (gone,) = store.sync_responsibilities([], now=at(2))
    assert not gone.enabled
    assert store.dispatch_due(now=at(10**9), max_attempts=3) == []


def test_status_summary(store: Store) -> None:
    create(store)
    failing = create(store)
    leased = lease_one(store)
    store.sync_responsibilities([triage()], now=T0)
    summary = store.status_summary(now=T0)
    assert summary.counts[TaskStatus.QUEUED] == 1
    assert summary.counts[TaskStatus.LEASED] == 1
    assert [t.id for t in summary.leases] == [leased.task.id]
    assert [r.name for r in summary.responsibilities_due] == ["triage"]
    lease2 = lease_one(store)
    assert lease2.task.id == failing
    finish(store, failing, lease2.lease.token, "failed", error="x")
    assert [t.id for t in store.status_summary(now=T0).recent_failures] == [failing]
    as_json = store.status_summary(now=T0).to_dict()
    assert set(as_json) == {"counts", "leases", "responsibilities_due", "recent_failures"}
    assert as_json["counts"]["failed"] == 1 and as_json["counts"]["cancelled"] == 0


# -- concurrency ------------------------------------------------------------------------


def test_threads_never_lease_the_same_task_twice(store: Store) -> None:
    ids = {create(store) for _ in range(200)}
    seen: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            batch = store.lease_next(now=T0, owner=name, ttl_ms=TTL, limit=3)
            if not batch:
                return
            with lock:
                seen.extend(b.task.id for b in batch)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == sorted(ids)


def test_a_failed_write_changes_nothing(store: Store) -> None:
    parent = create(store, "parent")
    before = store.list_events(limit=1000)
    with pytest.raises(errors.LimitExceeded):
        store.create_child(parent, TaskSpec(prompt="c"), now=T0, max_attempts=3, max_depth=0,
                           max_children=5)  # fmt: skip
    assert store.list_events(limit=1000) == before
    assert store.get_task(parent).status is TaskStatus.QUEUED


def test_complete_and_lease_finishes_a_batch_and_leases_the_next(store: Store) -> None:
    ids = [create(store) for _ in range(5)]
    first = store.lease_next(now=T0, owner="w", ttl_ms=TTL, limit=2)
    done = Completion(status=CompletionStatus.DONE)
    requests = [CompletionRequest(b.task.id, b.lease.token, done) for b in first]
    outcomes, leases = store.complete_and_lease(
        [*requests, CompletionRequest(ids[4], "stale", done)],
        now=at(1), backoff=BACKOFF, owner="w", ttl_ms=TTL, limit=2,
    )  # fmt: skip
    assert [o.ok for o in outcomes] == [True, True, False]
    assert isinstance(outcomes[2].error, errors.LeaseConflict)
    assert [lease.task.id for lease in leases] == ids[2:4]
    assert [store.get_task(i).status for i in ids] == [
        TaskStatus.DONE, TaskStatus.DONE, TaskStatus.LEASED, TaskStatus.LEASED, TaskStatus.QUEUED
    ]  # fmt: skip
    last, more = store.complete_and_lease(
        [], now=at(2), backoff=BACKOFF, owner="w", ttl_ms=TTL, limit=5
    )
    assert last == [] and [lease.task.id for lease in more] == [ids[4]]


def test_complete_and_lease_reclaims_a_lapsed_lease_and_leases_by_priority(store: Store) -> None:
    """With a lapsed lease due, the lease of a complete_and_lease reclaims it first and
    leases the best ready tasks, the requeued one among them."""
    urgent = create(store, priority=1)
    lapsed = lease_one(store, owner="gone", ttl_ms=1_000)
    assert lapsed.task.id == urgent
    batch = create(store)
    later = create(store)
    held = store.lease_next(now=T0, owner="w", ttl_ms=TTL, limit=1)
    assert [h.task.id for h in held] == [batch]
    done = Completion(status=CompletionStatus.DONE)
    outcomes, leases = store.complete_and_lease(
        [CompletionRequest(batch, held[0].lease.token, done)],
        now=at(1_000), backoff=BACKOFF, owner="w", ttl_ms=TTL, limit=1,
    )  # fmt: skip
    assert [o.ok for o in outcomes] == [True]
    assert [(lease.task.id, lease.task.attempts) for lease in leases] == [(urgent, 2)]
    assert "task.lease_expired" in event_types(store, urgent)
    assert store.get_task(later).status is TaskStatus.QUEUED
    assert store.get_task(batch).status is TaskStatus.DONE


# -- human gates --------------------------------------------------------------------------


def test_a_task_waits_for_approval_and_an_answer_queues_it(store: Store) -> None:
    from loops.queue.approvals import APPROVALS_KEY, Answer

    tid = create(store)
    leased = lease_one(store)
    store.heartbeat(tid, token=leased.lease.token, now=T0, ttl_ms=TTL, start=True)
    waiting = finish(
        store, tid, leased.lease.token, "waiting_approval", error="waiting_approval: g: ok?"
    )
    assert waiting.status is TaskStatus.WAITING_APPROVAL and waiting.lease_expires_at is None
    assert store.get_task(tid) == waiting
    assert [t.id for t in store.list_tasks(status=TaskStatus.WAITING_APPROVAL)] == [tid]
    assert store.status_summary(now=T0).counts[TaskStatus.WAITING_APPROVAL] == 1
    assert store.lease_next(now=at(TTL * 10), owner="w2", ttl_ms=TTL) == []  # nothing to reclaim

    answered = store.answer_approval(
        tid, Answer(path="ship/g", approved=True, by="ann", reason="fine"), now=at(5)
    )
    assert answered.status is TaskStatus.QUEUED and answered.attempts == 0
    assert store.get_task(tid) == answered
    answer = {"approved": True, "by": "ann", "reason": "fine", "at": "2026-11-27T12:00:00.128Z"}
    assert store.get_state(APPROVALS_KEY, task_id=tid) == {"ship/g": answer}
    last = store.list_events(limit=1, task_id=tid)[0]
    assert (last.type, last.data["by"], last.data["approved"]) == (
        "task.approval_answered",
        "ann",
        True,
    )
    assert event_types(store, tid)[-2:] == ["task.waiting_approval", "task.approval_answered"]
    again = lease_one(store, now=at(6))
    assert again.task.id == tid and again.lease.attempt == 1


def test_answers_add_up_and_a_finished_task_refuses_one(store: Store) -> None:
    from loops.queue.approvals import APPROVALS_KEY, Answer

    tid = create(store)
    leased = lease_one(store)
    store.answer_approval(tid, Answer(path="a", approved=True, by="x"), now=T0)  # held: recorded
    assert store.get_task(tid).status is TaskStatus.LEASED
    store.answer_approval(tid, Answer(path="b", approved=False, by="y", reason="no"), now=T0)
    assert set(store.get_state(APPROVALS_KEY, task_id=tid)) == {"a", "b"}
    finish(store, tid, leased.lease.token, "done")
    with pytest.raises(errors.InvalidTransition, match="requeue"):
        store.answer_approval(tid, Answer(path="c", approved=True, by="z"), now=T0)
    assert set(store.get_state(APPROVALS_KEY, task_id=tid)) == {"a", "b"}
    with pytest.raises(errors.TaskNotFound):
        store.answer_approval(999, Answer(path="c", approved=True, by="z"), now=T0)


def test_a_waiting_task_is_cancelled_and_holds_its_parent(store: Store) -> None:
    parent = create(store)
    child, _ = store.create_child(
        parent, TaskSpec(prompt="c"), now=T0, max_attempts=3, max_depth=3, max_children=5
    )
    leased = store.lease_task(child.id, now=T0, owner="w", ttl_ms=TTL)
    finish(store, child.id, leased.lease.token, "waiting_approval", error="w")
    assert store.get_task(parent).status is TaskStatus.WAITING_CHILDREN
    (cancelled, *_) = store.cancel(child.id, now=at(1), reason="no")
    assert cancelled.status is TaskStatus.CANCELLED
    assert store.get_task(parent).status is TaskStatus.BLOCKED
