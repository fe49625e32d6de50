"""SQLite specifics: pragmas, error translation, migrations, artifact files."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loops import errors
from loops.queue.artifacts import ArtifactKind
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, TaskSpec
from loops.store.sqlite import PAGE_SIZE, SqliteStore, to_ms

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def pragma(store: SqliteStore, name: str) -> object:
    return store._connection().execute(f"PRAGMA {name}").fetchone()[0]


def test_wal_and_full_durability_by_default(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite")
    store.migrate()
    assert pragma(store, "journal_mode") == "wal"
    assert pragma(store, "synchronous") == 2  # FULL
    assert pragma(store, "wal_autocheckpoint") == 1_000  # SQLite's default
    store.close()
    normal = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    assert pragma(normal, "synchronous") == 1  # NORMAL
    # a checkpoint every 16 MiB of WAL (see WAL_AUTOCHECKPOINT_BYTES): 1 KiB pages
    assert pragma(normal, "wal_autocheckpoint") == 16_384
    normal.close()


def test_a_new_database_has_small_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    new = SqliteStore(tmp_path / "new.sqlite", synchronous="normal")
    new.migrate()
    assert pragma(new, "page_size") == PAGE_SIZE == 1_024
    new.close()
    # a database an earlier version made, with SQLite's default pages (and WAL on)
    old_path = tmp_path / "old.sqlite"
    with sqlite3.connect(old_path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE earlier (x)")
    old = SqliteStore(old_path, synchronous="normal")
    old.migrate()
    assert pragma(old, "page_size") == 4_096
    # its checkpoints come after as many WAL bytes as a new file's, not as many pages
    assert pragma(old, "wal_autocheckpoint") == 4_096
    task, _ = old.create_task(TaskSpec(prompt="p" * 5_000), now=T0, max_attempts=3)
    assert old.get_task(task.id).prompt == "p" * 5_000
    old.close()
    reopened = SqliteStore(tmp_path / "new.sqlite", synchronous="normal")
    long, _ = reopened.create_task(TaskSpec(prompt="q" * 5_000), now=T0, max_attempts=3)
    assert reopened.get_task(long.id).prompt == "q" * 5_000  # overflow pages
    assert pragma(reopened, "integrity_check") == "ok"
    reopened.close()


def commit_modes(store: SqliteStore, operation: Callable[[], object]) -> list[str]:
    """The ``synchronous`` level each write transaction of ``operation`` committed with."""
    level = store.synchronous.upper()
    writing = False
    modes: list[str] = []
    previous = ""

    def trace(statement: str) -> None:
        nonlocal level, writing, previous
        # the callback runs again for a statement as each of its triggers starts
        repeated, previous = statement == previous, statement
        if repeated:
            return
        if statement.startswith("PRAGMA synchronous = "):
            level = statement.removeprefix("PRAGMA synchronous = ")
        elif statement == "BEGIN IMMEDIATE":
            writing = True
        elif statement == "COMMIT" and writing:
            modes.append(level)
            writing = False
        elif not writing and statement.startswith(("INSERT", "UPDATE", "DELETE")):
            modes.append(level)  # an autocommit write: its own transaction

    connection = store._connection()  # this thread's: the operation runs here
    connection.set_trace_callback(trace)
    try:
        operation()
    finally:
        connection.set_trace_callback(None)
    return modes


def test_a_lease_commits_without_a_sync_and_durable_writes_with_one(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite")
    store.migrate()
    created: list[int] = []
    leased: list[str] = []

    def create() -> None:
        created.append(store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)[0].id)

    def lease() -> None:
        (item,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
        leased.append(item.lease.token)

    def beat() -> None:
        store.heartbeat(created[0], token=leased[0], now=T0, ttl_ms=60_000, start=True)

    def complete() -> None:
        done = Completion(status=CompletionStatus.DONE)
        request = CompletionRequest(created[0], leased[0], done)
        store.complete(request, now=T0, backoff=Backoff(base_ms=1_000))

    assert commit_modes(store, create) == ["FULL"]
    assert commit_modes(store, lease) == ["NORMAL"]
    assert pragma(store, "synchronous") == 2  # FULL again for what follows
    assert commit_modes(store, beat) == ["FULL"]
    assert commit_modes(store, complete) == ["FULL"]
    assert commit_modes(store, lambda: store.lease_next(now=T0, owner="w", ttl_ms=1)) == []
    store.close()


def test_a_lease_that_reclaims_an_expired_one_is_synced(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite")
    store.migrate()
    store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    store.lease_next(now=T0, owner="crashed", ttl_ms=1_000)
    later = T0 + timedelta(seconds=2)
    modes = commit_modes(store, lambda: store.lease_next(now=later, owner="w", ttl_ms=1_000))
    assert modes == ["FULL"]
    store.close()


def test_a_store_run_with_normal_sync_stays_normal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    assert commit_modes(store, lambda: store.lease_next(now=T0, owner="w", ttl_ms=1)) == ["NORMAL"]
    assert pragma(store, "synchronous") == 1
    store.close()


def test_a_lease_lost_to_a_power_cut_is_granted_again_with_another_token(
    tmp_path: Path,
) -> None:
    # what the disk holds after a cut that took the unsynced lease: the files as they
    # were after the synced create (copied while no transaction runs)
    store = SqliteStore(tmp_path / "q.sqlite")
    store.migrate()
    task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    disk = tmp_path / "after-the-cut"
    disk.mkdir()
    for name in ("q.sqlite", "q.sqlite-wal"):
        shutil.copy(tmp_path / name, disk / name)
    (lost,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
    store.close()
    recovered = SqliteStore(disk / "q.sqlite")
    assert recovered.get_task(task.id).status.value == "queued"
    (again,) = recovered.lease_next(now=T0, owner="w", ttl_ms=60_000)
    assert again.lease.token != lost.lease.token
    assert again.task.attempts == lost.task.attempts == 1
    with pytest.raises(errors.LeaseConflict):
        recovered.heartbeat(task.id, token=lost.lease.token, now=T0, ttl_ms=60_000)
    done = Completion(status=CompletionStatus.DONE)
    with pytest.raises(errors.LeaseConflict):
        recovered.complete(
            CompletionRequest(task.id, lost.lease.token, done),
            now=T0,
            backoff=Backoff(base_ms=1_000),
        )
    recovered.close()


def test_unknown_sync_mode_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="use one of: full, normal"):
        SqliteStore(tmp_path / "q.sqlite", synchronous="off")


def test_migrate_is_idempotent_and_versioned(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite")
    assert store.is_new()
    every = [
        "0001_init",
        "0002_waiting_approval",
        "0003_wake_each",
        "0004_status_check",
        "0005_status_index_without_queued",
        "0006_created_event_trigger",
        "0007_deferred_tasks",
    ]
    assert store.pending_migrations() == every
    assert store.migrate() == every
    assert store.migrate() == []
    assert not store.is_new() and store.pending_migrations() == []
    store.close()


def test_a_file_that_is_not_a_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = SqliteStore(path)
    with pytest.raises(errors.StoreUnavailable, match=r"garbage\.sqlite") as info:
        store.migrate()
    assert info.value.__cause__ is not None  # translated once, cause kept
    store.close()


def test_data_survives_reopening(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite")
    store.migrate()
    task, _ = store.create_task(TaskSpec(prompt="keep me"), now=T0, max_attempts=3)
    store.close()
    again = SqliteStore(tmp_path / "q.sqlite")
    assert again.get_task(task.id) == task
    with pytest.raises(errors.StoreUnavailable, match="closed"):
        store.get_task(task.id)
    again.close()


def test_artifact_content_lives_under_the_data_dir_by_hash(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data" / "q.sqlite")
    store.migrate()
    task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    artifact = store.put_artifact(
        task.id, name="/etc/passwd", kind=ArtifactKind.FILE, content=b"abc", now=T0
    )
    stored = tmp_path / "data" / artifact.path
    assert stored.read_bytes() == b"abc"
    assert stored.name == artifact.sha256 and stored.parent.parent.name == "artifacts"
    store.close()


def test_one_connection_per_thread_shared_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    errors_seen: list[BaseException] = []

    def create(n: int) -> None:
        try:
            for i in range(50):
                store.create_task(TaskSpec(prompt=f"{n}-{i}"), now=T0, max_attempts=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors_seen.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors_seen == []
    assert len(store.list_tasks(limit=1000)) == 200
    ids = [t.id for t in store.list_tasks(limit=1000)]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 200
    store.close()


def test_millisecond_times_round_trip_exactly() -> None:
    import random

    from loops.store.sqlite import _task, from_ms, to_ms

    rng = random.Random(7)
    values = [0, 1, 999, 1_764_244_800_123, 4_102_444_799_999]
    values += [rng.randrange(0, 4_102_444_800_000) for _ in range(20_000)]
    for ms in values:
        assert to_ms(from_ms(ms)) == ms
        row = [1, "t", "", "p", *[None] * 7, 3, "queued", 0, 3, None, None, ms, ms, None, 0,
               *[None] * 4, 0, 0, 0, None, ms, ms, ms, 0]  # fmt: skip
        task = _task(row)
        assert to_ms(task.run_after) == ms and task.run_after == from_ms(ms)
        assert task.finished_at == from_ms(ms)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    import os

    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    parent_task, _ = store.create_task(TaskSpec(prompt="parent"), now=T0, max_attempts=3)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            child, _ = store.create_task(TaskSpec(prompt="child"), now=T0, max_attempts=3)
            code = 0 if child.id == parent_task.id + 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [t.prompt for t in store.list_tasks()] == ["child", "parent"]
    store.close()


def _batch_steps(tmp_path: Path, depth: int) -> int:
    """SQLite VM steps of leasing then completing 64 tasks from a queue ``depth`` deep."""
    from loops.queue.backoff import Backoff
    from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus

    store = SqliteStore(tmp_path / f"depth-{depth}.sqlite", synchronous="normal")
    store.migrate()
    for i in range(depth):
        store.create_task(TaskSpec(prompt="noop", priority=1 + i % 5), now=T0, max_attempts=3)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._connection().set_progress_handler(count, 1)
    leased = store.lease_next(now=T0, owner="w", ttl_ms=60_000, limit=64)
    done = store.complete_many(
        [CompletionRequest(t.task.id, t.lease.token, Completion(CompletionStatus.DONE))
         for t in leased],
        now=T0, backoff=Backoff(),
    )  # fmt: skip
    store.close()
    assert len(leased) == 64 and all(o.error is None for o in done)
    return steps[0]


def test_a_batch_lease_and_complete_cost_the_same_at_any_queue_depth(tmp_path: Path) -> None:
    # counted in SQLite VM steps, not time: completing 64 tasks once walked every active
    # task (the planner took tasks_status_id for the children check), O(depth) per batch
    shallow, deep = _batch_steps(tmp_path, 200), _batch_steps(tmp_path, 2_000)
    assert deep < shallow * 1.2, (shallow, deep)


@pytest.mark.parametrize("query", ["insert_root_task", "insert_task", "save_task"])
def test_writing_a_task_builds_no_temporary_btree(tmp_path: Path, query: str) -> None:
    # the status CHECK was `status IN (nine values)`: SQLite built a b-tree of the nine
    # constants each time a statement wrote the column (a fifth of a create's CPU)
    from loops.store.sqlite import Q

    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    sql = Q[query]
    program = store._connection().execute("EXPLAIN " + sql, (None,) * sql.count("?"))
    opcodes = [row[1] for row in program]
    store.close()
    assert "Insert" in opcodes or "Update" in opcodes or "IdxInsert" in opcodes
    assert "OpenEphemeral" not in opcodes


def test_the_status_check_still_refuses_an_unknown_status(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
    connection = store._connection()
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
        connection.execute("UPDATE tasks SET status = 'paused' WHERE id = ?", (task.id,))
    for status in ("leased", "running", "waiting_children", "waiting_approval", "done",
                   "failed", "blocked", "cancelled", "queued"):  # fmt: skip
        connection.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task.id))
    store.close()


@pytest.mark.parametrize(
    ("task_type", "responsibility"),
    [("task", None), ('say "hi" \\ to\n', "nightly"), ("überprüfen ✓", "r\u2028"),
     ("a\x01b\x1f\x7f\t/", None)],
)  # fmt: skip
def test_the_created_event_data_is_the_text_postgres_prints(
    tmp_path: Path, task_type: str, responsibility: str | None
) -> None:
    """Trigger tasks_created_event writes the event's JSON in SQL: the text of
    ``json.dumps(data, ensure_ascii=False)`` (what PostgreSQL's jsonb prints), for the
    short path, a keyed create, a child and a dispatched task alike."""
    import json

    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    spec = TaskSpec(prompt="p", type=task_type, priority=2, responsibility=responsibility)
    short, _ = store.create_task(spec, now=T0, max_attempts=3)
    keyed, _ = store.create_task(
        dataclasses.replace(spec, idempotency_key="k"), now=T0, max_attempts=3
    )
    child, _ = store.create_child(
        short.id, spec, now=T0, max_attempts=3, max_depth=1, max_children=5
    )
    data: dict[str, object] = {"type": task_type, "priority": 2}
    child_data = {**data, "parent_id": short.id}
    if responsibility is not None:
        data["responsibility"] = child_data["responsibility"] = responsibility
    rows = (
        store._connection()
        .execute("SELECT task_id, ts, data FROM events WHERE type = 'task.created' ORDER BY id")
        .fetchall()
    )
    ms = to_ms(T0)
    assert rows == [
        (short.id, ms, json.dumps(data, ensure_ascii=False)),
        (keyed.id, ms, json.dumps(data, ensure_ascii=False)),
        (child.id, ms, json.dumps(child_data, ensure_ascii=False)),
    ]
    store.close()


@pytest.mark.parametrize("key", [None, "k"])
def test_a_create_whose_event_cannot_be_written_leaves_no_task(
    tmp_path: Path, key: str | None
) -> None:
    """The task and its task.created event commit together (one statement without a
    key, one transaction with): an event insert that fails undoes the task."""
    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    connection = store._connection()
    connection.execute(
        "CREATE TEMP TRIGGER no_events BEFORE INSERT ON main.events "
        "BEGIN SELECT RAISE(ABORT, 'events refused'); END"
    )
    with pytest.raises(errors.StoreError, match="events refused"):
        store.create_task(TaskSpec(prompt="p", idempotency_key=key), now=T0, max_attempts=3)
    assert connection.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    assert not connection.in_transaction
    connection.execute("DROP TRIGGER no_events")
    task, created = store.create_task(
        TaskSpec(prompt="p", idempotency_key=key), now=T0, max_attempts=3
    )
    assert created and [e.type for e in store.list_events(task_id=task.id)] == ["task.created"]
    store.close()


def _listing_steps(tmp_path: Path, depth: int) -> dict[str, int]:
    """SQLite VM steps of listing 20 tasks of a status: ``depth`` queued, then as many done."""
    from loops.queue.tasks import TaskStatus
    from loops.store.sqlite import Q

    store = SqliteStore(tmp_path / f"list-{depth}.sqlite", synchronous="normal")
    store.migrate()
    for i in range(2 * depth):
        store.create_task(TaskSpec(prompt="p", priority=1 + i % 5), now=T0, max_attempts=3)
    connection = store._connection()
    connection.execute("UPDATE tasks SET status = 'done' WHERE id > ?", (depth,))
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    connection.set_progress_handler(count, 1)
    cost: dict[str, int] = {}
    for status in (TaskStatus.QUEUED, TaskStatus.DONE):
        steps[0] = 0
        assert len(store.list_tasks(status=status, limit=20)) == 20
        cost[status.value] = steps[0]
    steps[0] = 0
    connection.execute(Q["counts_by_status"]).fetchall()
    cost["counts per task"] = steps[0] // (2 * depth)
    store.close()
    return cost


def test_listing_by_status_costs_the_same_at_any_queue_depth(tmp_path: Path) -> None:
    # queued tasks are in tasks_ready only (tasks_status_id leaves them out): listing
    # them merges its five priority ranges instead of sorting every queued task
    shallow, deep = _listing_steps(tmp_path, 200), _listing_steps(tmp_path, 2_000)
    assert all(deep[k] < shallow[k] * 1.2 for k in shallow), (shallow, deep)


def _lease_steps(tmp_path: Path, deferred: int) -> dict[str, int]:
    """SQLite VM steps of leases over ``deferred`` tasks not due for an hour."""
    store = SqliteStore(tmp_path / f"deferred-{deferred}.sqlite", synchronous="normal")
    store.migrate()
    later = T0 + timedelta(hours=1)
    for i in range(deferred):
        store.create_task(
            TaskSpec(prompt="p", priority=1 + i % 5, run_after=later), now=T0, max_attempts=3
        )
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    store._connection().set_progress_handler(count, 1)
    cost: dict[str, int] = {}
    assert store.lease_next(now=T0, owner="w", ttl_ms=60_000) == []
    cost["nothing due"] = steps[0]
    # a ready task behind every deferred one (lowest priority, newest id)
    ready, _ = store.create_task(TaskSpec(prompt="p", priority=5), now=T0, max_attempts=3)
    steps[0] = 0
    (leased,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
    cost["one ready behind them"] = steps[0]
    assert leased.task.id == ready.id
    # once due they are promoted, then leased by priority: the first batch is priority 1
    batch = store.lease_next(now=later, owner="w", ttl_ms=60_000, limit=5)
    assert [t.task.priority for t in batch] == [1] * 5
    store.close()
    return cost


def test_a_lease_costs_the_same_however_many_tasks_are_deferred(tmp_path: Path) -> None:
    # tasks_ready holds due tasks only (migration 0007): a lease no longer walks past
    # every task whose run_after has not come (retries in backoff, tasks for later)
    shallow, deep = _lease_steps(tmp_path, 200), _lease_steps(tmp_path, 2_000)
    assert all(deep[k] < shallow[k] * 1.2 for k in shallow), (shallow, deep)


def test_listing_and_counting_by_status_match_the_rows(tmp_path: Path) -> None:
    from loops.queue.tasks import TaskStatus

    store = SqliteStore(tmp_path / "q.sqlite", synchronous="normal")
    store.migrate()
    tasks = [
        store.create_task(
            TaskSpec(prompt="p", priority=1 + i * 3 % 5, type="a" if i % 3 else "b"),
            now=T0,
            max_attempts=3,
        )[0]
        for i in range(40)
    ]
    store._connection().execute("UPDATE tasks SET status = 'done' WHERE id % 4 = 0")
    rows = {t.id: t for t in store.list_tasks(limit=1000)}
    assert len(rows) == 40
    for status in (TaskStatus.QUEUED, TaskStatus.DONE, TaskStatus.LEASED):
        for task_type in (None, "b"):
            for before_id in (None, tasks[25].id):
                expected = sorted(
                    (t.id for t in rows.values()
                     if t.status is status and task_type in (None, t.type)
                     and (before_id is None or t.id < before_id)),
                    reverse=True,
                )[:7]  # fmt: skip
                listed = store.list_tasks(
                    status=status, task_type=task_type, before_id=before_id, limit=7
                )
                assert [t.id for t in listed] == expected, (status, task_type, before_id)
    with store._read() as unit:
        counts = unit.counts_by_status()
    assert counts == {TaskStatus.QUEUED: 30, TaskStatus.DONE: 10}
    store.close()
