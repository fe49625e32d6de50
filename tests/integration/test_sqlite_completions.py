"""SQLite decides completions on a read outside its writer lock and stores them under it.

Each test changes a task (through a second store on the same file: another process's
connection) after the completion was decided on its read and before it is stored;
the completion must then be decided again on the task as it is. The last test drains
parents' children from several real processes at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loops import errors
from loops.queue.backoff import Backoff
from loops.queue.tasks import (
    Completion,
    CompletionRequest,
    CompletionStatus,
    LeasedTask,
    TaskSpec,
    TaskStatus,
)
from loops.store import shared
from loops.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TTL = 60_000


class Interleaved(SqliteStore):
    """A store whose completions meet the writer lock held by another writer.

    :meth:`busy` takes ``<db>.lock`` as a writer in another process would; once the
    batch was decided on its read (the first ``_plan_completions``: the others are
    the fallback's, under the lock), that writer makes its ``change`` and lets go.
    """

    plans: int = 0
    meanwhile: list[Callable[[], object]]

    def busy(self, change: Callable[[], object] = lambda: None) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)

        def let_go() -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            change()

        self.meanwhile = [let_go]

    def _plan_completions(
        self,
        unit: shared.Unit,
        requests: Sequence[CompletionRequest],
        now: datetime,
        backoff: Backoff,
    ) -> shared.CompletionPlan:
        plan = super()._plan_completions(unit, requests, now, backoff)
        self.plans += 1
        if self.meanwhile:
            self.meanwhile.pop()()
        return plan


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[Interleaved, SqliteStore]]:
    path = tmp_path / "q.sqlite"
    mine = Interleaved(path, synchronous="normal")
    mine.meanwhile = []
    mine.migrate()
    other = SqliteStore(path, synchronous="normal")
    yield mine, other
    mine.close()
    other.close()


def lease(store: SqliteStore, owner: str = "w1", now: datetime = T0) -> LeasedTask:
    (leased,) = store.lease_next(now=now, owner=owner, ttl_ms=TTL)
    return leased


def done(leased: LeasedTask) -> CompletionRequest:
    return CompletionRequest(leased.task.id, leased.lease.token, Completion(CompletionStatus.DONE))


def types(store: SqliteStore, task_id: int) -> list[str]:
    return [e.type for e in store.list_events(task_id=task_id, limit=100)]


def test_an_unchanged_batch_is_stored_as_decided_outside_the_lock(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, _ = stores
    for n in range(3):
        mine.create_task(TaskSpec(prompt=f"t{n}"), now=T0, max_attempts=3)
    leased = mine.lease_next(now=T0, owner="w1", ttl_ms=TTL, limit=3)
    mine.busy()
    outcomes = mine.complete_many([done(t) for t in leased], now=T0, backoff=Backoff())
    assert [o.error for o in outcomes] == [None, None, None]
    assert mine.plans == 1  # decided once: no second decision under the lock
    for t in leased:
        assert mine.get_task(t.task.id).status is TaskStatus.DONE
        assert types(mine, t.task.id) == ["task.created", "task.leased", "task.completed"]


def test_a_batch_that_finds_the_lock_free_takes_it_and_lets_it_go(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, _ = stores
    task, _ = mine.create_task(TaskSpec(prompt="t"), now=T0, max_attempts=3)
    leased = lease(mine)
    (outcome,) = mine.complete_many([done(leased)], now=T0, backoff=Backoff())
    assert outcome.error is None and mine.plans == 1
    assert mine.get_task(task.id).status is TaskStatus.DONE
    fd = os.open(f"{mine.path}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if it was left held
    finally:
        os.close(fd)


def test_a_task_cancelled_meanwhile_refuses_the_completion(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, other = stores
    task, _ = mine.create_task(TaskSpec(prompt="t"), now=T0, max_attempts=3)
    leased = lease(mine)
    mine.busy(lambda: other.cancel(task.id, now=T0, reason="stop"))
    (outcome,) = mine.complete_many([done(leased)], now=T0, backoff=Backoff())
    assert isinstance(outcome.error, errors.LeaseConflict) and "cancelled" in str(outcome.error)
    assert mine.plans == 2  # decided again under the lock
    assert mine.get_task(task.id).status is TaskStatus.CANCELLED
    assert types(mine, task.id) == ["task.created", "task.leased", "task.cancelled"]


def test_a_heartbeat_meanwhile_does_not_lose_the_completion(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, other = stores
    task, _ = mine.create_task(TaskSpec(prompt="t"), now=T0, max_attempts=3)
    leased = lease(mine)
    token = leased.lease.token
    mine.busy(lambda: other.heartbeat(task.id, token=token, now=T0, ttl_ms=2 * TTL, start=True))
    later = T0 + timedelta(seconds=1)
    (outcome,) = mine.complete_many([done(leased)], now=later, backoff=Backoff())
    assert outcome.error is None and outcome.task is not None
    stored = mine.get_task(task.id)
    assert stored == outcome.task and stored.status is TaskStatus.DONE
    assert stored.lease_expires_at is None and stored.finished_at == later
    assert types(mine, task.id) == [
        "task.created", "task.leased", "task.started", "task.completed"
    ]  # fmt: skip


def test_a_lease_reclaimed_and_granted_again_meanwhile_refuses_the_old_token(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, other = stores
    task, _ = mine.create_task(TaskSpec(prompt="t"), now=T0, max_attempts=3)
    old = lease(mine)
    expired = T0 + timedelta(milliseconds=TTL + 1)
    regranted: list[LeasedTask] = []
    mine.busy(lambda: regranted.append(lease(other, owner="w2", now=expired)))
    (outcome,) = mine.complete_many([done(old)], now=T0, backoff=Backoff())
    assert isinstance(outcome.error, errors.LeaseConflict)
    stored = mine.get_task(task.id)
    assert stored.status is TaskStatus.LEASED and stored.lease_owner == "w2"
    assert stored.lease_token == regranted[0].lease.token != old.lease.token
    assert "task.completed" not in types(mine, task.id)


def test_a_child_created_meanwhile_makes_the_parent_wait_for_it(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, other = stores
    parent, _ = mine.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    leased = lease(mine)
    created = []
    mine.busy(
        lambda: created.append(
            other.create_child(
                parent.id, TaskSpec(prompt="c"), now=T0, max_attempts=3, max_depth=3,
                max_children=10,
            )[0]
        )
    )  # fmt: skip
    (outcome,) = mine.complete_many([done(leased)], now=T0, backoff=Backoff())
    assert outcome.error is None and outcome.task is not None
    assert outcome.task.status is TaskStatus.WAITING_CHILDREN
    child = lease(mine)
    assert child.task.id == created[0].id
    (finished,) = mine.complete_many([done(child)], now=T0, backoff=Backoff())
    assert finished.error is None
    assert mine.get_task(parent.id).status is TaskStatus.QUEUED  # rolled up: all done


def test_a_sibling_finished_meanwhile_still_rolls_the_parent_up(
    stores: tuple[Interleaved, SqliteStore],
) -> None:
    mine, other = stores
    parent, _ = mine.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    for name in ("a", "b"):
        other.create_child(
            parent.id, TaskSpec(prompt=name), now=T0, max_attempts=3, max_depth=3,
            max_children=10,
        )  # fmt: skip
    assert mine.get_task(parent.id).status is TaskStatus.WAITING_CHILDREN
    first, second = lease(mine), lease(other, owner="w2")
    # decided while the sibling was active; the sibling finishes before it is stored
    mine.busy(lambda: other.complete_many([done(second)], now=T0, backoff=Backoff()))
    (outcome,) = mine.complete_many([done(first)], now=T0, backoff=Backoff())
    assert outcome.error is None
    assert mine.plans == 1  # the child's own row did not change: stored as decided
    assert mine.get_task(parent.id).status is TaskStatus.QUEUED
    assert types(mine, parent.id).count("task.requeued") == 1


WORKER = r"""
import json, os, sys, time
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, utc_now
from loops.store.sqlite import SqliteStore

path, name, go = sys.argv[1], sys.argv[2], sys.argv[3]
store = SqliteStore(path, synchronous="normal")
store.get_task(1)
open(go + "." + name, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
completed = []
while True:
    got = store.lease_next(now=utc_now(), owner=name, ttl_ms=600_000, limit=4)
    if not got:
        break
    requests = [
        CompletionRequest(g.task.id, g.lease.token, Completion(status=CompletionStatus.DONE))
        for g in got
    ]
    outcomes = store.complete_many(requests, now=utc_now(), backoff=Backoff())
    assert all(o.ok for o in outcomes), outcomes
    completed.extend(g.task.id for g in got)
store.close()
print(json.dumps(completed))
"""


def test_children_finishing_in_several_processes_roll_every_parent_up_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.sqlite"
    go = tmp_path / "go"
    store = SqliteStore(path, synchronous="normal")
    store.migrate()
    now = datetime.now(UTC)
    parents = []
    for p in range(60):
        parent, _ = store.create_task(TaskSpec(prompt=f"p{p}"), now=now, max_attempts=3)
        for c in range(4):
            store.create_child(
                parent.id, TaskSpec(prompt=f"c{c}"), now=now, max_attempts=3, max_depth=3,
                max_children=10,
            )  # fmt: skip
        parents.append(parent.id)
    names = [f"w{n}" for n in range(4)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{name}").exists() for name in names):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.01)
    go.touch()
    completed: list[int] = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        completed.extend(json.loads(out))
    # each child once; each parent once, after it was rolled up (queued) exactly once
    assert len(completed) == len(set(completed)) == 60 * 5
    assert store.status_summary(now=datetime.now(UTC)).counts == {TaskStatus.DONE: 60 * 5}
    for parent_id in parents:
        seen = types(store, parent_id)
        assert seen.count("task.requeued") == 1 and seen.count("child.created") == 4
        assert seen[-3:] == ["task.requeued", "task.leased", "task.completed"]
    store.close()
