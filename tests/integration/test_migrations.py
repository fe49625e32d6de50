"""Upgrading a queue: a database made by an older version keeps its rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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
CREATED_EVENT = 6  # the version of SQLite's 0006_created_event_trigger
#: what today's code writes with, beyond 0001 (applied early, then forgotten)
WRITTEN = (WAKE_EACH, CREATED_EVENT)

_FORGET_CREATED_EVENT = (
    "DROP TRIGGER tasks_created_event",
    "ALTER TABLE tasks DROP COLUMN created_event",
    f"DELETE FROM schema_migrations WHERE version = {CREATED_EVENT}",
)


def _forget_sqlite(path: Path, statements: tuple[str, ...]) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)


def _forget_wake_each(store: Store, request: pytest.FixtureRequest) -> None:
    """Take ``store``'s database back to before 0003 (drop the column it adds; on
    SQLite 0006's trigger and column too), so rows that today's code wrote stand for
    rows an older version wrote."""
    statements = (
        "ALTER TABLE tasks DROP COLUMN wake_each",
        f"DELETE FROM schema_migrations WHERE version = {WAKE_EACH}",
    )
    if isinstance(store, SqliteStore):
        _forget_sqlite(store.path, _FORGET_CREATED_EVENT + statements)
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
        # 0001 as an old version made it; 0003 (and SQLite's 0006) too, since today's
        # code writes their columns
        patch.setattr(
            sqlfiles,
            "migrations",
            lambda package: [m for m in every(package) if m.version in (1, *WRITTEN)],
        )
        old = make_store()
        assert old.migrate()[:2] == ["0001_init", "0003_wake_each"]
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
        pending += [
            "0004_status_check",
            "0005_status_index_without_queued",
            "0006_created_event_trigger",
            "0007_deferred_tasks",
        ]
    else:
        pending.append("0004_deferred_tasks")
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
        patch.setattr(
            sqlfiles,
            "migrations",
            lambda package: [m for m in every(package) if m.version <= 3 or m.version in WRITTEN],
        )
        old = SqliteStore(path, synchronous="normal")
        assert old.migrate()[:3] == ["0001_init", "0002_waiting_approval", "0003_wake_each"]
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
        _forget_sqlite(path, _FORGET_CREATED_EVENT)

    store = SqliteStore(path, synchronous="normal")
    assert store.migrate() == [
        "0004_status_check",
        "0005_status_index_without_queued",
        "0006_created_event_trigger",
        "0007_deferred_tasks",
    ]
    assert [store.get_task(t.id) for t in (parent, child, keyed)] == before
    after = dict(
        store._connection().execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
        )
    )
    # 0005 leaves queued tasks out of tasks_status_id; 0007 splits queued tasks between
    # tasks_ready (due) and tasks_deferred; every other index is as it was
    assert after.pop("tasks_status_id").endswith("WHERE status <> 'queued'")
    assert after.pop("tasks_ready").endswith("run_after <= updated_at")
    assert after.pop("tasks_deferred").endswith("run_after > updated_at")
    changed = ("tasks_status_id", "tasks_ready")
    assert sorted(after.items()) == [i for i in indexes if i[0] not in changed]
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


def test_a_process_of_the_previous_version_still_writes_one_created_event(
    tmp_path: Path,
) -> None:
    """Rolling upgrade across 0006: a process still running the previous version inserts
    tasks without ``created_event`` and writes their ``task.created`` event itself; the
    trigger leaves those rows alone, so each task has one event, old or new writer."""
    store = SqliteStore(tmp_path / "queue.sqlite", synchronous="normal")
    store.migrate()
    new, _ = store.create_task(TaskSpec(prompt="new"), now=T0, max_attempts=3)
    previous = sqlite3.connect(store.path, isolation_level=None)
    previous.execute("BEGIN IMMEDIATE")  # the previous version's create, statement for statement
    old_id = previous.execute(
        'INSERT INTO tasks (type, title, prompt, success, "check", provider, model, cwd, '
        "max_iterations, min_tests, priority, status, attempts, max_attempts, run_after, "
        "parent_id, depth, idempotency_key, responsibility, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, NULL, 0, NULL, ?, ?, ?)",
        ("task", "", "old", None, None, None, None, None, None, None, 3, 3, 0, None, 0, 0),
    ).lastrowid
    previous.execute(
        "INSERT INTO events (ts, type, task_id, data) VALUES (?, ?, ?, ?)",
        (0, "task.created", old_id, '{"type": "task", "priority": 3}'),
    )
    previous.execute("COMMIT")
    previous.close()
    again, _ = store.create_task(TaskSpec(prompt="again"), now=T0, max_attempts=3)
    assert old_id is not None and new.id < old_id < again.id
    for task_id in (new.id, old_id, again.id):
        assert [e.type for e in store.list_events(task_id=task_id)] == ["task.created"]
    assert store.get_task(old_id).prompt == "old"
    store.close()


DEFERRED = 7  # the version of SQLite's 0007_deferred_tasks

_FORGET_DEFERRED = (
    "DROP INDEX tasks_deferred",
    "DROP INDEX tasks_ready",
    "CREATE INDEX tasks_ready ON tasks (priority, id, run_after, type) WHERE status = 'queued'",
    f"DELETE FROM schema_migrations WHERE version = {DEFERRED}",
)


def test_the_deferred_tasks_migration_sorts_queued_tasks_into_ready_and_deferred(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.sqlite"
    store = SqliteStore(path, synchronous="normal")
    store.migrate()
    hour = timedelta(hours=1)
    ready, _ = store.create_task(TaskSpec(prompt="r", priority=3), now=T0, max_attempts=3)
    later, _ = store.create_task(
        TaskSpec(prompt="l", priority=1, run_after=T0 + hour), now=T0, max_attempts=3
    )
    store.close()
    _forget_sqlite(path, _FORGET_DEFERRED)

    store = SqliteStore(path, synchronous="normal")
    assert store.migrate() == ["0007_deferred_tasks"]
    assert store.status_summary(now=T0).counts[TaskStatus.QUEUED] == 2
    assert [t.id for t in store.list_tasks(status=TaskStatus.QUEUED)] == [later.id, ready.id]
    connection = store._connection()
    for index, task in (("tasks_ready", ready), ("tasks_deferred", later)):
        (held,) = connection.execute(
            f"SELECT id FROM tasks INDEXED BY {index} WHERE status = 'queued' AND run_after "
            + ("<=" if index == "tasks_ready" else ">")
            + " updated_at"
        ).fetchall()
        assert held == (task.id,)
    day = 86_400_000
    assert [t.task.id for t in store.lease_next(now=T0, owner="w", ttl_ms=day)] == [ready.id]
    assert store.lease_next(now=T0 + hour - timedelta(milliseconds=1), owner="w", ttl_ms=day) == []
    assert [t.task.id for t in store.lease_next(now=T0 + hour, owner="w", ttl_ms=day)] == [later.id]
    store.close()
