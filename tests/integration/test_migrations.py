"""Upgrading a queue: a database made by an older version keeps its rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loops.queue.backoff import Backoff
from loops.queue.steps import parse_markers
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, TaskSpec, TaskStatus
from loops.store import sqlfiles
from loops.store.base import Store
from loops.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


WAKE_EACH = 3  # the version of 0003_wake_each


def _forget_wake_each(store: Store, request: pytest.FixtureRequest) -> None:
    """Take ``store``'s database back to before 0003 (drop the column it adds), so rows
    that today's code wrote stand for rows an older version wrote."""
    statements = (
        "ALTER TABLE tasks DROP COLUMN wake_each",
        f"DELETE FROM schema_migrations WHERE version = {WAKE_EACH}",
    )
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import psycopg

    url, schema = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_schema")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def make() -> Store:
        store: Store
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / "queue.sqlite", synchronous="normal")
        else:
            from loops.store.postgres import PostgresStore

            schema = request.getfixturevalue("pg_schema")
            store = PostgresStore(request.getfixturevalue("pg_url"), schema=schema)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_the_waiting_approval_migration_keeps_every_row(
    make_store, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    every = sqlfiles.migrations
    with monkeypatch.context() as patch:
        # 0001 as an old version made it; 0003 too, since today's code writes its column
        patch.setattr(
            sqlfiles,
            "migrations",
            lambda package: [m for m in every(package) if m.version in (1, WAKE_EACH)],
        )
        old = make_store()
        assert old.migrate() == ["0001_init", "0003_wake_each"]
        parent, _ = old.create_task(TaskSpec(prompt="p", title="old"), now=T0, max_attempts=3)
        child, _ = old.create_child(
            parent.id, TaskSpec(prompt="c"), now=T0, max_attempts=3, max_depth=3, max_children=3
        )
        leased = old.lease_task(child.id, now=T0, owner="w", ttl_ms=60_000)
        old.complete(
            CompletionRequest(
                child.id,
                leased.lease.token,
                Completion(status=CompletionStatus.BLOCKED, error="stuck"),
                steps=tuple(parse_markers("STEP[build]: DONE idempotency=b1")),
            ),
            now=T0,
            backoff=Backoff(),
        )
        old.put_state("k", {"v": 1}, now=T0, task_id=parent.id)
        before = [old.get_task(parent.id), old.get_task(child.id)]
        old.close()
        _forget_wake_each(old, request)

    store = make_store()
    pending = ["0002_waiting_approval", "0003_wake_each"]
    if isinstance(store, SqliteStore):
        pending += ["0004_status_check", "0005_status_index_without_queued"]
    assert store.pending_migrations() == pending
    assert store.migrate() == pending
    assert [store.get_task(parent.id), store.get_task(child.id)] == before
    assert before[1].status is TaskStatus.BLOCKED
    assert [s.name for s in store.list_steps(child.id)] == ["build"]
    assert store.get_state("k", task_id=parent.id) == {"v": 1}
    assert [t.id for t in store.list_tasks(parent_id=parent.id)] == [child.id]
    # the new status is accepted, and new ids follow the old ones
    task, _ = store.create_task(TaskSpec(prompt="n"), now=T0, max_attempts=3)
    assert task.id > child.id
    lease = store.lease_task(task.id, now=T0, owner="w", ttl_ms=60_000)
    waiting = store.complete(
        CompletionRequest(
            task.id, lease.lease.token, Completion(status=CompletionStatus.WAITING_APPROVAL)
        ),
        now=T0,
        backoff=Backoff(),
    )
    assert store.get_task(task.id).status is TaskStatus.WAITING_APPROVAL == waiting.status
    assert store.lease_next(now=T0, owner="w", ttl_ms=1) == []


def test_the_status_check_migration_keeps_every_row_and_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every = sqlfiles.migrations
    path = tmp_path / "queue.sqlite"
    with monkeypatch.context() as patch:
        patch.setattr(sqlfiles, "migrations", lambda package: every(package)[:3])
        old = SqliteStore(path, synchronous="normal")
        assert old.migrate() == ["0001_init", "0002_waiting_approval", "0003_wake_each"]
        parent, _ = old.create_task(TaskSpec(prompt="p", priority=1), now=T0, max_attempts=3)
        child, _ = old.create_child(
            parent.id, TaskSpec(prompt="c"), now=T0, max_attempts=3, max_depth=3, max_children=3
        )
        keyed, _ = old.create_task(TaskSpec(prompt="k", idempotency_key="key"), now=T0,
                                   max_attempts=3)  # fmt: skip
        leased = old.lease_task(child.id, now=T0, owner="w", ttl_ms=60_000)
        old.complete(
            CompletionRequest(child.id, leased.lease.token,
                              Completion(status=CompletionStatus.BLOCKED, error="no")),
            now=T0, backoff=Backoff(),
        )  # fmt: skip
        before = [old.get_task(t.id) for t in (parent, child, keyed)]
        indexes = sorted(
            old._connection().execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
            )
        )
        old.close()

    store = SqliteStore(path, synchronous="normal")
    assert store.migrate() == ["0004_status_check", "0005_status_index_without_queued"]
    assert [store.get_task(t.id) for t in (parent, child, keyed)] == before
    after = dict(
        store._connection().execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
        )
    )
    # 0005 leaves queued tasks out of tasks_status_id; every other index is as it was
    assert after.pop("tasks_status_id").endswith("WHERE status <> 'queued'")
    assert sorted(after.items()) == [i for i in indexes if i[0] != "tasks_status_id"]
    again, created = store.create_task(
        TaskSpec(prompt="k", idempotency_key="key"), now=T0, max_attempts=3
    )
    assert (again.id, created) == (keyed.id, False)
    queued = [t.id for t in before if t.status is TaskStatus.QUEUED]
    assert queued and keyed.id in queued
    leased_now = store.lease_next(now=T0, owner="w", ttl_ms=60_000, limit=5)
    assert [t.task.id for t in leased_now] == queued
    blocked = sorted((t.id for t in before if t.status is TaskStatus.BLOCKED), reverse=True)
    assert child.id in blocked
    assert [t.id for t in store.list_tasks(status=TaskStatus.BLOCKED)] == blocked
    store.close()
