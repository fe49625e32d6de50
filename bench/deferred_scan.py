"""What deferred and other-type tasks cost a SQLite lease (a measurement of a known limit).

Run from the repository root:

    .venv/bin/python bench/deferred_scan.py [--depths 1000,100000] [--samples 200]
        [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]

With ``--pg-url`` (a server's maintenance database) the same cases run on PostgreSQL
too, each depth in a database of its own (``deferred_scan_N``, dropped after).

Leasing picks the most urgent priority, then the oldest, among queued tasks whose
``run_after`` has passed (and, for a typed lease, whose type is wanted). The
``tasks_ready`` index is in (priority, id) order, so a lease walks past every queued
task that is not yet due, or not of a wanted type, before it finds one that is. Three
cases, each at every depth (medians, µs):

- an empty lease over ``depth`` tasks deferred by an hour (the probe finds nothing);
- create + lease + complete of one ready task that sorts behind ``depth`` deferred ones;
- a lease for type ``b`` over ``depth`` ready tasks of type ``a``;
- create + lease + complete of one task in a table of ``depth`` done tasks (history).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from queue_store import open_service  # noqa: E402

from loops import config  # noqa: E402
from loops.queue.tasks import TaskSpec, new_task  # noqa: E402
from loops.services.queue import QueueService  # noqa: E402
from loops.store import sqlite as sqlite_store  # noqa: E402
from loops.store.sqlite import SqliteStore  # noqa: E402


def fill(path: Path, n: int, *, deferred: bool, task_type: str, status: str) -> None:
    """``n`` tasks in one transaction (setup, not measured)."""
    store = SqliteStore(path, synchronous="normal")
    store.migrate()
    now = datetime.now(UTC)
    later = now + timedelta(hours=1) if deferred else None
    rows = [
        sqlite_store._insert_row(
            new_task(
                TaskSpec(prompt="noop", type=task_type, priority=1 + i % 5, run_after=later),
                now=now,
                max_attempts=3,
            )
        )
        for i in range(n)
    ]
    connection = store._connection()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(sqlite_store.Q["insert_task"], rows)
    connection.execute("UPDATE tasks SET status = ?", (status,))
    connection.execute("COMMIT")
    store.close()


def median_us(call: Callable[[], object], samples: int) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def cases(opened: Callable[[bool, str, str], QueueService], samples: int) -> dict[str, float]:
    """The four medians; ``opened(deferred, type, status)`` fills a queue and serves it."""

    def one_ready() -> None:
        service.create_task(TaskSpec(prompt="noop", priority=5))
        (item,) = service.lease(worker="w")
        service.complete(item.task.id, lease_token=item.lease.token, status="done")

    service = opened(True, "task", "queued")
    empty = median_us(lambda: service.lease(worker="w"), samples)
    behind = median_us(one_ready, samples)
    service.close()
    service = opened(False, "a", "queued")
    typed = median_us(lambda: service.lease(worker="w", types=["b"]), samples)
    service.close()
    service = opened(False, "task", "done")
    history = median_us(one_ready, samples)
    service.close()
    return {"empty": empty, "behind": behind, "typed": typed, "history": history}


def sqlite_case(depth: int, samples: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="deferred-scan-"))
    try:

        def opened(deferred: bool, task_type: str, status: str) -> QueueService:
            path = folder / f"{task_type}-{status}-{deferred}.sqlite"
            fill(path, depth, deferred=deferred, task_type=task_type, status=status)
            return open_service(path, "normal")

        return cases(opened, samples)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def postgres_case(server: str, depth: int, samples: int) -> dict[str, float]:
    import psycopg

    from loops.store.postgres import PostgresStore

    base = server.rsplit("/", 1)[0]
    made: list[str] = []

    def opened(deferred: bool, task_type: str, status: str) -> QueueService:
        name = f"deferred_scan_{len(made)}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        store = PostgresStore(f"{base}/{name}")
        store.migrate()
        now = datetime.now(UTC)
        run_after = now + timedelta(hours=1) if deferred else now
        with psycopg.connect(f"{base}/{name}", autocommit=True) as conn:
            conn.execute(
                "INSERT INTO tasks (type, title, prompt, priority, status, attempts,"
                " max_attempts, run_after, depth, created_at, updated_at) SELECT %s, '',"
                " 'noop', 1 + i %% 5, %s, 0, 3, %s, 0, %s, %s"
                " FROM generate_series(0, %s - 1) AS i",
                (task_type, status, run_after, now, now, depth),
            )
            conn.execute("ANALYZE tasks")
        return QueueService(store, config.load_settings(env={}).queue)

    try:
        return cases(opened, samples)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            for name in made:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1000,100000")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pg-url", help="a PostgreSQL server's maintenance database URL")
    args = parser.parse_args()
    print(
        "| store | tasks | empty lease over deferred | ready task behind deferred "
        "| typed lease, none wanted | one task over done history |"
    )
    print("|---|---|---|---|---|---|")
    for depth in (int(d) for d in args.depths.split(",")):
        runs = [("SQLite", sqlite_case)]
        if args.pg_url:
            runs.append(("PostgreSQL", lambda d, n: postgres_case(args.pg_url, d, n)))
        for store, case in runs:
            got = case(depth, args.samples)
            print(
                f"| {store} | {depth:,} | {got['empty']:,.0f} µs | {got['behind']:,.0f} µs "
                f"| {got['typed']:,.0f} µs | {got['history']:,.0f} µs |"
            )


if __name__ == "__main__":
    main()
