"""What only a shared PostgreSQL server can show: many processes and gateways at once."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from fakes.db_proxy import Proxy
from loops import config, errors
from loops.queue import lifecycle, schedules
from loops.queue.backoff import Backoff
from loops.queue.responsibilities import ResponsibilityDef, TaskTemplate
from loops.queue.tasks import (
    Completion,
    CompletionRequest,
    CompletionStatus,
    Task,
    TaskSpec,
    TaskStatus,
)
from loops.services.queue import QueueService, task_spec
from loops.store.postgres import PostgresStore
from loops.store.postgres_unit import Q
from loops.usage import Usage

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DONE = Completion(status=CompletionStatus.DONE)


def queue_settings(tmp_path: Path) -> config.QueueSettings:
    return config.load_settings(env={}, cwd=tmp_path).queue


@pytest.fixture
def url(pg_url: str, pg_schema: str) -> str:
    """The test server, with a fresh schema named as the application (to find its
    connections in pg_stat_activity)."""
    separator = "&" if "?" in pg_url else "?"
    return f"{pg_url}{separator}application_name={pg_schema}"


@pytest.fixture
def stores(url: str, pg_schema: str) -> Iterator[list[PostgresStore]]:
    """Two stores over the same schema, as two gateways on two hosts would have."""
    first = PostgresStore(url, schema=pg_schema)
    first.migrate()
    second = PostgresStore(url, schema=pg_schema)
    yield [first, second]
    first.close()
    second.close()


def terminate_connections(pg_url: str, application_name: str) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


# -- many processes -------------------------------------------------------------------

WORKER = r"""
import json, os, sys, time
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, utc_now
from loops.queue.tasks import TaskStatus
from loops.store.postgres import PostgresStore

url, schema, name, batch, go = sys.argv[1:6]
# with "wait": tasks for later are queued too; an empty lease ends only a drained queue
wait = sys.argv[6:] == ["wait"]
store = PostgresStore(url, schema=schema)
store.pending_migrations()  # connected and imported before the start
open(go + "." + name, "w").close()
while not os.path.exists(go):  # start together, so the processes really contend
    time.sleep(0.005)
leased = []
while True:
    got = store.lease_next(now=utc_now(), owner=name, ttl_ms=600_000, limit=int(batch))
    if not got:
        if wait and store.status_summary(now=utc_now()).counts.get(TaskStatus.QUEUED):
            time.sleep(0.005)
            continue
        break
    leased.extend(g.task.id for g in got)
    requests = [
        CompletionRequest(g.task.id, g.lease.token, Completion(status=CompletionStatus.DONE))
        for g in got
    ]
    outcomes = store.complete_many(requests, now=utc_now(), backoff=Backoff())
    assert all(o.ok for o in outcomes), outcomes
store.close()
print(json.dumps(leased))
"""


@pytest.mark.parametrize("deferred", [False, True], ids=["ready", "some-for-later"])
def test_processes_never_lease_the_same_task(
    stores: list[PostgresStore], url: str, pg_schema: str, tmp_path: Path, deferred: bool
) -> None:
    """With ``deferred``, a third of the tasks come due while the processes drain: each
    is promoted by whichever lease's gate sees it due first (the others skip its locked
    row) and still leased exactly once."""
    store = stores[0]
    now = datetime.now(UTC)
    ids = set()
    for i in range(1000):
        later = now + timedelta(milliseconds=800 + i % 300) if deferred and i % 3 == 0 else None
        spec = TaskSpec(prompt=f"t{i}", run_after=later)
        ids.add(store.create_task(spec, now=now, max_attempts=3)[0].id)
    go = tmp_path / "go"
    wait = ["wait"] if deferred else []
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, pg_schema, f"w{n}", str(batch), str(go), *wait],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, batch in enumerate([1, 2, 10, 25])
    ]
    # go only once every process is ready: touched at once, the first process to start
    # (~0.3 s of imports) could drain all 1,000 tasks before the last one had started
    ready = [go.with_name(f"go.w{n}") for n in range(len(workers))]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready):
        assert time.monotonic() < deadline, "the worker processes did not start"
        dead = [w for w in workers if w.poll() is not None]
        assert not dead, dead[0].communicate()[1]
        time.sleep(0.01)
    go.touch()
    leased: list[int] = []
    per_worker = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        got = json.loads(out)
        per_worker.append(len(got))
        leased.extend(got)
    assert len(leased) == len(set(leased)), "a task was leased twice"
    assert set(leased) == ids
    assert sum(1 for n in per_worker if n) >= 2, per_worker
    assert store.status_summary(now=datetime.now(UTC)).counts == {TaskStatus.DONE: len(ids)}
    events = store.list_events(limit=10_000)
    assert sum(e.type == "task.leased" for e in events) == len(ids)
    assert sum(e.type == "task.completed" for e in events) == len(ids)
    assert [e.id for e in events] == sorted(e.id for e in events)


MIGRATE = r"""
import json, os, sys, time
from loops.store.postgres import PostgresStore

url, schema, go = sys.argv[1:4]
store = PostgresStore(url, schema=schema)
while not os.path.exists(go):
    time.sleep(0.002)
print(json.dumps(store.migrate()))
store.close()
"""


def test_migrate_from_several_hosts_at_once(url: str, pg_schema: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, url, pg_schema, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    go.touch()
    results = []
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(results, key=len) == [
        [],
        [],
        [],
        ["0001_init", "0002_waiting_approval", "0003_wake_each", "0004_deferred_tasks"],
    ]
    store = PostgresStore(url, schema=pg_schema)
    assert store.pending_migrations() == [] and not store.is_new()
    store.close()


# -- gateways sharing one database ----------------------------------------------------


def test_two_gateways_never_dispatch_a_responsibility_twice(
    stores: list[PostgresStore], tmp_path: Path
) -> None:
    triage = ResponsibilityDef(
        name="triage",
        schedule=schedules.every("1m"),
        template=TaskTemplate(prompt="triage the inbox"),
    )
    clock = {"now": T0}
    services = [
        QueueService(
            s, queue_settings(tmp_path), responsibilities=[triage], clock=lambda: clock["now"]
        )
        for s in stores
    ]
    rounds = 6
    for round_number in range(rounds):
        clock["now"] = T0 + timedelta(minutes=round_number)
        barrier = threading.Barrier(4)
        reports: list[int] = []
        lock = threading.Lock()

        def tick(
            service: QueueService,
            barrier: threading.Barrier = barrier,
            lock: threading.Lock = lock,
            reports: list[int] = reports,
        ) -> None:
            barrier.wait()
            report = service.tick()
            with lock:
                reports.append(len(report.dispatched))

        threads = [threading.Thread(target=tick, args=(services[i % 2],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sum(reports) == 1, f"round {round_number}: {reports}"
        (leased,) = services[0].lease(worker="w")
        services[1].complete(leased.task.id, lease_token=leased.lease.token, status="done")
    dispatched = [t for t in stores[0].list_tasks(limit=100) if t.responsibility == "triage"]
    assert len(dispatched) == rounds


def test_a_task_created_on_one_gateway_wakes_a_lease_waiting_on_another(
    stores: list[PostgresStore], tmp_path: Path
) -> None:
    gateway_a = QueueService(stores[0], queue_settings(tmp_path))
    gateway_b = QueueService(stores[1], queue_settings(tmp_path))
    gateway_b.listen_to_store()
    assert stores[1].wait_listening(10)
    got: list[int] = []

    def long_poll() -> None:
        # polling only once a minute: only the notification can deliver within the join
        leased = gateway_b.lease_wait(worker="w", wait_ms=50_000, poll_ms=60_000)
        got.extend(lease.task.id for lease in leased)

    waiter = threading.Thread(target=long_poll)
    waiter.start()
    created = gateway_a.create_task(task_spec({"prompt": "wake up"}))
    waiter.join(timeout=20)
    assert not waiter.is_alive(), "the waiting lease was not woken by the notification"
    assert got == [created.task.id]


def test_notifications_stay_within_their_schema(
    stores: list[PostgresStore], pg_url: str, tmp_path: Path
) -> None:
    other = PostgresStore(pg_url, schema=f"{stores[0].schema}_other")
    try:
        other.migrate()
        woken = threading.Event()
        stores[1].listen(woken.set)
        assert stores[1].wait_listening(10)
        other.create_task(TaskSpec(prompt="elsewhere"), now=T0, max_attempts=3)
        assert not woken.wait(0.5)
        stores[0].create_task(TaskSpec(prompt="here"), now=T0, max_attempts=3)
        assert woken.wait(10)
    finally:
        other.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {stores[0].schema}_other CASCADE")


# -- connection loss --------------------------------------------------------------------


def test_terminated_connections_are_replaced_without_losing_work(
    stores: list[PostgresStore], pg_url: str, pg_schema: str
) -> None:
    store, other = stores
    woken = threading.Event()
    store.listen(woken.set)
    assert store.wait_listening(10)
    ids = [store.create_task(TaskSpec(prompt=f"t{i}"), now=T0, max_attempts=3)[0].id
           for i in range(4)]  # fmt: skip
    leases = store.lease_next(now=T0, owner="w", ttl_ms=60_000, limit=4)
    woken.clear()

    assert terminate_connections(pg_url, pg_schema) >= 2  # the pools' and the listener's
    # every operation after the loss works: the broken connections are replaced
    outcomes = store.complete_many(
        [CompletionRequest(lease.task.id, lease.lease.token, DONE) for lease in leases],
        now=T0,
        backoff=Backoff(),
    )
    assert [o.ok for o in outcomes] == [True] * 4
    assert {store.get_task(i).status for i in ids} == {TaskStatus.DONE}
    # done once: the same completion again is refused and changes nothing
    with pytest.raises(errors.LeaseConflict):
        store.complete(CompletionRequest(ids[0], leases[0].lease.token, DONE), now=T0,
                       backoff=Backoff())  # fmt: skip
    completed = [e for e in store.list_events(limit=1000) if e.type == "task.completed"]
    assert sorted(e.task_id for e in completed) == ids
    # the listener reconnected by itself and hears the other gateway again
    assert store.wait_listening(10)
    woken.clear()
    other.create_task(TaskSpec(prompt="after"), now=T0, max_attempts=3)
    assert woken.wait(10)


def test_an_unreachable_server_is_store_unavailable_naming_it() -> None:
    store = PostgresStore("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1)
    try:
        with pytest.raises(errors.StoreUnavailable, match=r"127\.0\.0\.1:1/none"):
            store.get_task(1)
    finally:
        store.close()


def test_a_wrong_url_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="QUEUE_DB_URL"):
        PostgresStore("postgresql://host:notaport/db?bogus_option=1")


def test_a_store_used_one_request_at_a_time_holds_one_server_connection(
    pg_url: str, pg_schema: str
) -> None:
    """A process that sends one request at a time (a worker) keeps one backend: its first
    request, sent while the pool is still connecting, does not grow the pool to two
    connections then used in turn (each backend's caches cold at every other batch)."""
    name = f"{pg_schema}_one"
    separator = "&" if "?" in pg_url else "?"
    store = PostgresStore(f"{pg_url}{separator}application_name={name}", schema=pg_schema)
    try:
        store.migrate()  # the first request, at once
        task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
        for _ in range(10):
            store.get_task(task.id)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert row == (1,)
    finally:
        store.close()


def test_the_store_answers_unavailable_while_the_database_is_away_and_recovers(
    pg_url: str, pg_schema: str
) -> None:
    parts = conninfo_to_dict(pg_url)
    proxy = Proxy((str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))).up()
    via_proxy = make_conninfo(pg_url, host="127.0.0.1", port=str(proxy.port))
    store = PostgresStore(via_proxy, schema=pg_schema, connect_timeout_s=1)
    try:
        store.migrate()
        ids = [store.create_task(TaskSpec(prompt=f"t{i}"), now=T0, max_attempts=3)[0].id
               for i in range(3)]  # fmt: skip
        leases = store.lease_next(now=T0, owner="w", ttl_ms=600_000, limit=3)
        proxy.down()
        with pytest.raises(errors.StoreUnavailable, match=f"127.0.0.1:{proxy.port}"):
            store.complete(CompletionRequest(ids[0], leases[0].lease.token, DONE), now=T0,
                           backoff=Backoff())  # fmt: skip
        with pytest.raises(errors.StoreUnavailable):
            store.create_task(TaskSpec(prompt="lost?"), now=T0, max_attempts=3)
        proxy.up()
        deadline = time.monotonic() + 30
        while True:  # the pool reconnects by itself
            try:
                assert store.get_task(ids[0]).status is TaskStatus.LEASED
                break
            except errors.StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not recover"
                time.sleep(0.2)
        outcomes = store.complete_many(
            [CompletionRequest(lease.task.id, lease.lease.token, DONE) for lease in leases],
            now=T0,
            backoff=Backoff(),
        )
        assert all(o.ok for o in outcomes)
        events = store.list_events(limit=1000)
        assert sorted(e.task_id for e in events if e.type == "task.completed") == ids
        assert [t.prompt for t in store.list_tasks()].count("lost?") == 0
    finally:
        store.close()
        proxy.down()


def test_a_reader_after_an_id_never_skips_an_event_committed_late(
    stores: list[PostgresStore], url: str, pg_schema: str
) -> None:
    store = stores[0]
    task_id = store.create_task(TaskSpec(prompt="t"), now=T0, max_attempts=3)[0].id
    (seen,) = store.list_events()
    # a slow writer takes the next event id, as the store's writers do, and holds it
    slow = psycopg.connect(url, options=f"-c search_path={pg_schema}")
    slow.execute("SELECT pg_advisory_xact_lock_shared(7001, hashtext(current_schema()))")
    slow.execute(
        "INSERT INTO events (ts, type, task_id, data) VALUES (now(), 'slow', %s, '{}')",
        (task_id,),
    )
    fast = store.append_event("fast", now=T0, task_id=task_id)  # a later id, committed first
    got: list[list[str]] = []
    reader = threading.Thread(
        target=lambda: got.append([e.type for e in store.list_events(after_id=seen.id)])
    )
    reader.start()
    reader.join(timeout=0.5)
    assert reader.is_alive(), f"the reader returned {got} while an earlier id was in flight"
    slow.commit()
    slow.close()
    reader.join(timeout=10)
    assert got == [["slow", "fast"]]
    assert store.list_events(after_id=fast.id) == []


@pytest.mark.parametrize("writer", ["create_task", "append_event", "complete_and_lease"])
def test_every_event_writer_takes_the_events_lock(
    stores: list[PostgresStore], url: str, pg_schema: str, writer: str
) -> None:
    """A writer that takes an event id while a reader takes the horizon would let the
    reader pass an id committed later; so each writer's statement waits for the lock."""
    store = stores[0]
    task_id = store.create_task(TaskSpec(prompt="t"), now=T0, max_attempts=3)[0].id
    (lease,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
    before = len(store.list_events(limit=1000))
    writes = {
        "create_task": lambda: store.create_task(TaskSpec(prompt="u"), now=T0, max_attempts=3),
        "append_event": lambda: store.append_event("note", now=T0, task_id=task_id),
        "complete_and_lease": lambda: store.complete_and_lease(
            [CompletionRequest(task_id, lease.lease.token, DONE)],
            now=T0,
            backoff=Backoff(),
            owner="w",
            ttl_ms=60_000,
        ),
    }
    reader = psycopg.connect(url, options=f"-c search_path={pg_schema}")
    reader.execute("SELECT pg_advisory_xact_lock(7001, hashtext(current_schema()))")
    thread = threading.Thread(target=writes[writer])
    thread.start()
    thread.join(timeout=0.5)
    try:
        assert thread.is_alive(), f"{writer} wrote an event past a reader's horizon lock"
    finally:
        reader.rollback()
        reader.close()
        thread.join(timeout=10)
    assert len(store.list_events(limit=1000)) > before


# -- the server's work ------------------------------------------------------------------


def _prepared(name: str, query: str, types: dict[str, str]) -> str:
    """``PREPARE name (types) AS query``, psycopg's ``%(key)s`` placeholders numbered
    ``$n`` in the order of ``types``."""
    keys = list(types)

    def number(match: re.Match[str]) -> str:
        return f"${keys.index(match[1]) + 1}"

    declared = ", ".join(types.values())
    return f"PREPARE {name} ({declared}) AS " + re.sub(r"%\((\w+)\)s", number, query)


def _explain_lease(
    conn: psycopg.Connection[Any], plan: str, *, now: datetime
) -> tuple[list[dict[str, Any]], Any]:
    """The nodes of ``EXPLAIN ANALYZE`` of a 10-task lease at ``now`` after its gate,
    planned as ``plan`` (``plan_cache_mode``), and ``enable_sort`` once it ran."""
    types = {"stop_key": "text", "now": "timestamptz", "reclaim": "int", "limit": "int",
             "types": "text[]", "owner": "text", "expires": "timestamptz",
             "nonces": "text[]"}  # fmt: skip
    # values bound on the client: the $n are the prepared statement's parameters
    text = psycopg.ClientCursor(conn)
    text.execute(_prepared("lease", Q["lease_now"], types))
    conn.execute(f"SET plan_cache_mode = {plan}")
    with conn.transaction():
        conn.execute(Q["lease_gate"], (now, "w", None))
        (explained,) = text.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE lease(%s, %s, 100, 10, NULL, 'w', %s, %s)",
            ("worker.stopped:w", now, now + timedelta(hours=1), [f"n{i}" for i in range(10)]),
        ).fetchone()
        after = conn.execute("SELECT current_setting('enable_sort')").fetchone()
    return _plan_nodes(explained), after


@pytest.mark.parametrize("plan", ["force_custom_plan", "force_generic_plan"])
def test_the_lease_walks_the_ready_index_on_a_queue_with_no_statistics(
    stores: list[PostgresStore], url: str, pg_schema: str, plan: str
) -> None:
    """On a table filled before it was ever analysed, the lease statement (planned for
    these values or for any) takes the first ready rows in index order and stops at the
    limit, instead of reading and sorting every queued row at every lease."""
    with psycopg.connect(url, options=f"-c search_path={pg_schema}", autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO tasks (type, title, prompt, priority, status, attempts, max_attempts,"
            " run_after, depth, created_at, updated_at) SELECT 'noop', 't', 'p', 3, 'queued',"
            " 0, 3, %s, 0, %s, %s FROM generate_series(1, 3000)",
            (T0, T0, T0),
        )
        nodes, after = _explain_lease(conn, plan, now=T0)
    kinds = {n["Node Type"] for n in nodes}
    assert "Sort" not in kinds and "Seq Scan" not in kinds, kinds
    # the leased rows are updated through their ids, never a bitmap of queued rows
    bitmaps = {n.get("Index Name") for n in nodes if n["Node Type"] == "Bitmap Index Scan"}
    assert bitmaps <= {"tasks_pkey"}, bitmaps
    (ready,) = [n for n in nodes if n.get("Index Name") == "tasks_ready"]
    assert ready["Actual Rows"] == 10
    # the lease restored the setting: the rest of the transaction is planned as before
    # (a rollup sorts children by id)
    assert after == ("on",)


@pytest.mark.parametrize("plan", ["force_custom_plan", "force_generic_plan"])
def test_a_lease_never_walks_past_deferred_tasks(
    stores: list[PostgresStore], url: str, pg_schema: str, plan: str
) -> None:
    """Tasks whose run_after has not come, however urgent, are not in tasks_ready
    (migration 0004): the lease reads the ready rows it takes and no others, planned for
    these values or for any (psycopg prepares a statement after five runs) on a table
    with statistics; once due, the lease's gate promotes them and they are taken first."""
    later = T0 + timedelta(hours=1)
    with psycopg.connect(url, options=f"-c search_path={pg_schema}", autocommit=True) as conn:
        for priority, run_after, count in ((1, later, 3000), (5, T0, 20)):
            conn.execute(
                "INSERT INTO tasks (type, title, prompt, priority, status, attempts,"
                " max_attempts, run_after, depth, created_at, updated_at) SELECT 'noop', 't',"
                " 'p', %s, 'queued', 0, 3, %s, 0, %s, %s FROM generate_series(1, %s)",
                (priority, run_after, T0, T0, count),
            )
        conn.execute("ANALYZE tasks")
        nodes, _ = _explain_lease(conn, plan, now=T0)
    (ready,) = [n for n in nodes if n.get("Index Name") == "tasks_ready"]
    assert ready["Actual Rows"] == 10 and ready.get("Rows Removed by Filter", 0) == 0, ready
    # and the leased rows are found by their ids, not by reading the table
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}
    store = stores[0]
    batch = store.lease_next(now=later, owner="w", ttl_ms=60_000, limit=5)
    assert [t.task.priority for t in batch] == [1] * 5


def _plan_nodes(explained: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(explained[0]["Plan"])
    return nodes


@pytest.mark.parametrize("plan", ["force_custom_plan", "force_generic_plan"])
@pytest.mark.parametrize("rows", [600, 3000])
def test_completions_find_their_tasks_by_id_on_a_drained_table_with_no_statistics(
    stores: list[PostgresStore], url: str, pg_schema: str, plan: str, rows: int
) -> None:
    """The statements of a plain done batch (lock_tasks, complete_done) reach each task
    through its id, however the table looks to a planner without statistics: never a
    scan of the whole table (a small one), nor of tasks_lease_expiry, which still holds
    an entry for every task leased and completed since the last vacuum (a drained
    queue's thousands; a bitmap of them all was rechecked at every batch)."""
    now = T0 + timedelta(days=1)
    with psycopg.connect(url, options=f"-c search_path={pg_schema}", autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO tasks (type, title, prompt, priority, status, attempts, max_attempts,"
            " lease_owner, lease_token, lease_expires_at, run_after, depth, created_at,"
            " updated_at) SELECT 'noop', 't', 'p', 3, 'leased', 1, 3, 'w', 'tok' || i, %s,"
            " %s, 0, %s, %s FROM generate_series(1, %s) AS i",
            (now + timedelta(hours=1), T0, T0, T0, rows),
        )
        last = conn.execute("SELECT max(id) FROM tasks").fetchone()
        assert last is not None
        held = list(range(last[0] - 9, last[0] + 1))
        conn.execute("UPDATE tasks SET status = 'done', lease_expires_at = NULL WHERE id < %s",
                     (held[0],))  # fmt: skip
        text = psycopg.ClientCursor(conn)
        text.execute(_prepared("done", Q["complete_done"], {"done": "text", "now": "timestamptz"}))
        text.execute("PREPARE locks (text) AS " + Q["lock_tasks"].replace("%s", "$1"))
        conn.execute(f"SET plan_cache_mode = {plan}")
        tokens = conn.execute("SELECT id, lease_token FROM tasks WHERE id = ANY(%s)", (held,))
        done = json.dumps([{"id": i, "token": t, "result": "ok"} for i, t in tokens.fetchall()])
        ids = "{" + ",".join(map(str, held)) + "}"
        (locks,) = text.execute("EXPLAIN (FORMAT JSON) EXECUTE locks(%s)", (ids,)).fetchone()
        (completes,) = text.execute(
            "EXPLAIN (FORMAT JSON) EXECUTE done(%s, %s)", (done, now)
        ).fetchone()
    for explained in (locks, completes):
        nodes = _plan_nodes(explained)
        kinds = {n["Node Type"] for n in nodes}
        assert not kinds & {"Seq Scan", "Bitmap Heap Scan", "Hash"}, kinds
        indexes = {n["Index Name"] for n in nodes if "Index Name" in n}
        assert indexes <= {"tasks_pkey", "tasks_parent"}, indexes


# -- the lease decided by the server ----------------------------------------------------

_TASK_STATE = st.tuples(
    st.integers(1, 5),  # priority
    st.sampled_from(["queued", "queued", "queued", "done", "leased"]),
    st.integers(0, 3),  # attempts already made
    st.sampled_from(["a", "b"]),  # type
    st.sampled_from([-60_000, 0, 60_000]),  # run_after - now, ms
    st.booleans(),  # last written a day ago (else now): deferred when run_after came since
)


@given(
    tasks=st.lists(_TASK_STATE, min_size=0, max_size=8),
    limit=st.integers(1, 5),
    types=st.sampled_from([None, ["a"], ["a", "b"]]),
    ttl_ms=st.integers(1, 10**9),
)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_server_leases_as_lifecycle_lease_says(
    stores: list[PostgresStore],
    url: str,
    pg_schema: str,
    tasks: list[tuple[int, str, int, str, int, bool]],
    limit: int,
    types: list[str] | None,
    ttl_ms: int,
) -> None:
    """The one-statement lease (``lease_now``) takes the best ``limit`` leasable tasks in
    (priority, id) order and stores for each exactly the task :func:`lifecycle.lease`
    makes of it (the token's nonce read back from the token), with the same
    ``task.leased`` event; nothing else changes, but for the deferred tasks that came
    due (written before their run_after, which has passed): each is promoted into
    tasks_ready, its updated_at set to its run_after."""
    store = stores[0]
    now = T0 + timedelta(days=1)
    with psycopg.connect(url, options=f"-c search_path={pg_schema}", autocommit=True) as conn:
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM tasks")
        for priority, status, attempts, task_type, run_after_ms, long_ago in tasks:
            conn.execute(
                "INSERT INTO tasks (type, title, prompt, priority, status, attempts,"
                " max_attempts, lease_owner, lease_token, lease_expires_at, run_after, depth,"
                " created_at, updated_at) VALUES (%s, 't', 'p', %s, %s, %s, 5, %s, %s, %s, %s,"
                " 0, %s, %s)",
                (
                    task_type, priority, status, attempts,
                    "other" if status == "leased" else None,
                    "x.1.y" if status == "leased" else None,
                    now + timedelta(hours=1) if status == "leased" else None,
                    now + timedelta(milliseconds=run_after_ms), T0, T0 if long_ago else now,
                ),
            )  # fmt: skip
    before = {t.id: t for t in store.list_tasks(limit=100)}
    leased = store.lease_next(now=now, owner="w1", ttl_ms=ttl_ms, limit=limit, types=types)

    leasable = sorted(
        (
            t
            for t in before.values()
            if t.status is TaskStatus.QUEUED
            and t.run_after <= now
            and (types is None or t.type in types)
        ),
        key=lambda t: (t.priority, t.id),
    )
    assert [lt.task.id for lt in leased] == [t.id for t in leasable[:limit]]
    after = {t.id: t for t in store.list_tasks(limit=100)}
    events = {e.task_id: e for e in store.list_events(limit=100) if e.type == "task.leased"}
    for lt in leased:
        assert lt.lease.token is not None
        nonce = lt.lease.token.split(".", 2)[2]
        expected = lifecycle.lease(
            before[lt.task.id], now=now, owner="w1", ttl_ms=ttl_ms, nonce=nonce
        )
        assert expected.error is None
        assert lt.task == expected.task == after[lt.task.id]
        (draft,) = expected.events
        event = events.pop(lt.task.id)
        assert (event.ts, event.type, event.data) == (now, draft.type, draft.data)
    assert not events
    assert len({lt.lease.token for lt in leased}) == len(leased)
    unleased = {i: t for i, t in after.items() if i not in {lt.task.id for lt in leased}}

    def promoted(task: Task) -> Task:
        due = task.status is TaskStatus.QUEUED and task.updated_at < task.run_after <= now
        return dataclasses.replace(task, updated_at=task.run_after) if due else task

    assert unleased == {i: promoted(before[i]) for i in unleased}


# -- plain done completions decided by the server --------------------------------------

_HELD_STATE = st.tuples(
    # no waiting_children: a rollup would change a parent outside the requests
    st.sampled_from(["leased", "running", "leased", "queued", "done", "cancelled", "failed"]),
    st.sampled_from([-60_000, 0, 60_000, None]),  # lease_expires_at - now, ms
    st.none() | st.integers(0, 10),  # parent: the task of that index before this one
    st.sampled_from([None, "an old error"]),  # error
    st.sampled_from([0, 7]),  # input tokens spent before
)
_REQUEST = st.tuples(
    st.integers(0, 9),  # task index
    st.booleans(),  # the task's token (else a stale one)
    st.sampled_from(["done", "done", "done", "failed"]),
    st.sampled_from([None, "ok", 'quote " and \\ back', "ünï"]),  # result
    st.sampled_from([False, False, False, True]),  # with usage
)


@given(
    tasks=st.lists(_HELD_STATE, min_size=1, max_size=8),
    requests=st.lists(_REQUEST, max_size=8),
    via=st.sampled_from(["complete_many", "complete_and_lease"]),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_server_completes_as_lifecycle_complete_says(
    stores: list[PostgresStore],
    url: str,
    pg_schema: str,
    tasks: list[tuple[str, int | None, int | None, str | None, int]],
    requests: list[tuple[int, bool, str, str | None, bool]],
    via: str,
) -> None:
    """A batch of completions, the plain done ones decided by the server
    (``complete_done``), ends exactly as :func:`lifecycle.complete` applied to the tasks
    in request order says: every outcome (task and error), every stored row, every
    event. Tasks vary in status, lease expiry (lapsed, lapsing now, live), parent,
    children, error and usage; requests in token, status, result, usage and repeats.
    Through ``complete_and_lease`` too (one round trip when every request is a plain
    done one, the rest then decided apart), leasing nothing (no lapsed lease is due
    there: the lease would reclaim it)."""
    store = stores[0]
    now = T0 + timedelta(days=1)
    backoff = Backoff(base_ms=1_000)
    with psycopg.connect(url, options=f"-c search_path={pg_schema}", autocommit=True) as conn:
        conn.execute("DELETE FROM events")
        conn.execute("DELETE FROM tasks")
        ids: list[int] = []
        for status, expiry_ms, parent, error, spent in tasks:
            held = status in ("leased", "running", "cancelled")
            if via == "complete_and_lease" and expiry_ms is not None and expiry_ms <= 0:
                expiry_ms = 60_000
            parent_id = ids[parent] if parent is not None and parent < len(ids) else None
            (task_id,) = conn.execute(
                "INSERT INTO tasks (type, title, prompt, priority, status, attempts,"
                " max_attempts, lease_owner, lease_token, lease_expires_at, run_after,"
                " parent_id, depth, error, usage_input_tokens, created_at, updated_at)"
                " VALUES ('a', 't', 'p', 3, %s, 1, 5, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id",
                (
                    status, "w" if held else None, f"tok{len(ids)}" if held else None,
                    None if expiry_ms is None or not held
                    else now + timedelta(milliseconds=expiry_ms),
                    T0, parent_id, 0 if parent_id is None else 1, error, spent, T0, T0,
                ),
            ).fetchone()  # fmt: skip
            ids.append(task_id)
    before = {t.id: t for t in store.list_tasks(limit=100)}
    batch = [
        CompletionRequest(
            ids[index % len(ids)],
            f"tok{index % len(ids)}" if own else "stale",
            Completion(
                status=CompletionStatus(status),
                result=result,
                error=None if status == "done" else "broke",
                usage=Usage(input_tokens=5, cost_usd=0.5) if usage else None,
                jitter=0.5,
            ),
        )
        for index, own, status, result, usage in requests
    ]
    if via == "complete_many":
        outcomes = store.complete_many(batch, now=now, backoff=backoff)
    else:
        outcomes, leased = store.complete_and_lease(
            batch, now=now, backoff=backoff, owner="w2", ttl_ms=1_000, types=["none-such"]
        )
        assert leased == []

    current = dict(before)
    rolled: set[int] = set()
    expected_events: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for request, outcome in zip(batch, outcomes, strict=True):
        task = current[request.task_id]
        kids = [t for t in current.values() if t.parent_id == task.id]
        expected = lifecycle.complete(
            task,
            token=request.token,
            now=now,
            completion=request.completion,
            backoff=backoff,
            has_active_children=any(k.status.is_active for k in kids),
            finished_children=frozenset(k.id for k in kids if not k.status.is_active),
        )
        if expected.task.status is TaskStatus.WAITING_CHILDREN:
            rolled.add(task.id)  # may be rolled up at the end: not modelled here
        assert rolled or outcome.task == expected.task
        assert type(outcome.error) is type(expected.error)
        if expected.changed:
            current[task.id] = expected.task
            expected_events.setdefault(task.id, []).extend(
                (e.type, e.data) for e in expected.events
            )
    after = {t.id: t for t in store.list_tasks(limit=100)}
    assert {i: t for i, t in after.items() if i not in rolled} == {
        i: t for i, t in current.items() if i not in rolled
    }
    stored_events: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for event in store.list_events(limit=1000):
        assert event.task_id is not None and event.ts == now
        if event.task_id not in rolled:
            stored_events.setdefault(event.task_id, []).append((event.type, event.data))
    assert stored_events == {i: e for i, e in expected_events.items() if i not in rolled}


def test_a_lease_alone_commits_without_a_sync_and_everything_else_with_one(
    stores: list[PostgresStore], url: str, pg_schema: str
) -> None:
    """A transaction that only leases runs with ``synchronous_commit`` off (a lease lost
    to a crash is granted again under another token); creates, completions, and a
    completion batch that also leases stay synced. Seen by a trigger recording the
    setting of every transaction that changes a task."""
    store = stores[0]
    with psycopg.connect(url, options=f"-c search_path={pg_schema}", autocommit=True) as conn:
        conn.execute("CREATE TABLE commit_modes (id serial, status text, mode text)")
        conn.execute(
            "CREATE FUNCTION record_mode() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO commit_modes (status, mode) "
            "VALUES (NEW.status, current_setting('synchronous_commit')); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER record_mode AFTER INSERT OR UPDATE ON tasks "
            "FOR EACH ROW EXECUTE FUNCTION record_mode()"
        )
        ids = [store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)[0].id for _ in "ab"]
        (first,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
        request = CompletionRequest(ids[0], first.lease.token, DONE)
        _, second = store.complete_and_lease(
            [request], now=T0, backoff=Backoff(base_ms=1_000), owner="w", ttl_ms=60_000
        )
        assert [lt.task.id for lt in second] == [ids[1]]
        modes = conn.execute("SELECT status, mode FROM commit_modes ORDER BY id").fetchall()
    assert modes == [
        ("queued", "on"), ("queued", "on"),  # the creates
        ("leased", "off"),  # the lease alone
        ("done", "on"), ("leased", "on"),  # the completion (decided by the server), the lease
    ]  # fmt: skip


# -- round trips ------------------------------------------------------------------------


def _round_trips(store: PostgresStore, operation: Callable[[], object], tmp_path: Path) -> int:
    """How often the store's one pooled connection waits for the server while
    ``operation`` runs: the turns from messages sent (F) to messages received (B) in
    libpq's protocol trace."""
    trace = tmp_path / f"trace-{time.monotonic_ns()}.txt"
    with trace.open("w") as out:
        with store._pool.connection() as conn:  # the pool holds one connection
            conn.pgconn.trace(out.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            operation()
        finally:
            with store._pool.connection() as conn:
                conn.pgconn.untrace()
    sides = [line[0] for line in trace.read_text().splitlines() if line[:2] in ("F\t", "B\t")]
    return sum(1 for sent, got in itertools.pairwise(sides) if (sent, got) == ("F", "B"))


def test_a_lease_is_one_round_trip_and_a_completion_batch_two_or_one_with_the_next_lease(
    url: str, pg_schema: str, tmp_path: Path
) -> None:
    """BEGIN and COMMIT go with the statements (psycopg's ``transaction()`` in a pipeline
    syncs after BEGIN, after the block and after COMMIT: a lease took four)."""
    store = PostgresStore(url, schema=pg_schema, min_connections=1, max_connections=1)
    try:
        store.migrate()
        for _ in range(3):
            store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
        leased: list[Any] = []
        lease = functools.partial(store.lease_next, now=T0, owner="w", ttl_ms=60_000, limit=2)
        assert _round_trips(store, lambda: leased.extend(lease()), tmp_path) == 1
        requests = [CompletionRequest(lt.task.id, lt.lease.token, DONE) for lt in leased]
        complete = functools.partial(store.complete_many, requests, now=T0, backoff=Backoff())
        assert _round_trips(store, complete, tmp_path) == 2
        (last,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
        for prompt in ("next", "after"):
            store.create_task(TaskSpec(prompt=prompt), now=T0, max_attempts=3)
        # a plain done completion is decided by the server with the next lease: one flight
        request = CompletionRequest(last.task.id, last.lease.token, DONE)
        complete_and_lease = functools.partial(
            store.complete_and_lease, [request], now=T0, backoff=Backoff(), owner="w",
            ttl_ms=60_000,
        )  # fmt: skip
        answers: list[Any] = []
        assert _round_trips(store, lambda: answers.append(complete_and_lease()), tmp_path) == 1
        ((_, (nxt,)),) = answers
        # one with usage to add is decided here: read and lease, then write and commit
        used = Completion(status=CompletionStatus.DONE, usage=Usage(input_tokens=3))
        request = CompletionRequest(nxt.task.id, nxt.lease.token, used)
        complete_and_lease = functools.partial(
            store.complete_and_lease, [request], now=T0, backoff=Backoff(), owner="w",
            ttl_ms=60_000,
        )  # fmt: skip
        assert _round_trips(store, complete_and_lease, tmp_path) == 2
        # a read answered inside its transaction: the answer, then the COMMIT
        assert _round_trips(store, lambda: store.get_task(leased[0].task.id), tmp_path) == 2
        assert {store.get_task(lt.task.id).status for lt in leased} == {TaskStatus.DONE}
    finally:
        store.close()


def test_a_failed_transaction_is_rolled_back_and_its_connection_reused(
    url: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction whose decision fails (here: cancelling a finished task) is rolled
    back as its connection goes back to the pool (not found open there, which would log
    a warning); the next operation commits on the same connection."""
    store = PostgresStore(url, schema=pg_schema, min_connections=1, max_connections=1)
    try:
        store.migrate()
        task, _ = store.create_task(TaskSpec(prompt="p"), now=T0, max_attempts=3)
        (leased,) = store.lease_next(now=T0, owner="w", ttl_ms=60_000)
        store.complete(CompletionRequest(task.id, leased.lease.token, DONE), now=T0,
                       backoff=Backoff())  # fmt: skip
        with (
            caplog.at_level(logging.WARNING, logger="psycopg.pool"),
            pytest.raises(errors.InvalidTransition),
        ):
            store.cancel(task.id, now=T0, reason="too late")
        assert not [r for r in caplog.records if r.name.startswith("psycopg")]
        with store._pool.connection() as conn:
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        other, _ = store.create_task(TaskSpec(prompt="q"), now=T0, max_attempts=3)
        assert [lt.task.id for lt in store.lease_next(now=T0, owner="w", ttl_ms=60_000)] == [
            other.id
        ]
    finally:
        store.close()
