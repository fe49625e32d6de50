"""What deferred and other-type tasks cost a SQLite lease (a measurement of a known limit).

Run from the repository root:

    .venv/bin/python bench/deferred_scan.py [--depths 1000,100000] [--samples 200]

Leasing picks the most urgent priority, then the oldest, among queued tasks whose
``run_after`` has passed (and, for a typed lease, whose type is wanted). The
``tasks_ready`` index is in (priority, id) order, so a lease walks past every queued
task that is not yet due, or not of a wanted type, before it finds one that is. Three
cases, each at every depth (medians, µs):

- an empty lease over ``depth`` tasks deferred by an hour (the probe finds nothing);
- create + lease + complete of one ready task that sorts behind ``depth`` deferred ones;
- a lease for type ``b`` over ``depth`` ready tasks of type ``a``.
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

from loops.queue.tasks import TaskSpec, new_task  # noqa: E402
from loops.store import sqlite as sqlite_store  # noqa: E402
from loops.store.sqlite import SqliteStore  # noqa: E402


def fill(path: Path, n: int, *, deferred: bool, task_type: str) -> None:
    """``n`` queued tasks in one transaction (setup, not measured)."""
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
    connection.execute("COMMIT")
    store.close()


def median_us(call: Callable[[], object], samples: int) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def measure(folder: Path, depth: int, samples: int) -> dict[str, float]:
    fill(folder / "deferred.sqlite", depth, deferred=True, task_type="task")
    service = open_service(folder / "deferred.sqlite", "normal")

    def one_ready() -> None:
        service.create_task(TaskSpec(prompt="noop", priority=5))
        (item,) = service.lease(worker="w")
        service.complete(item.task.id, lease_token=item.lease.token, status="done")

    empty = median_us(lambda: service.lease(worker="w"), samples)
    behind = median_us(one_ready, samples)
    service.close()
    fill(folder / "typed.sqlite", depth, deferred=False, task_type="a")
    service = open_service(folder / "typed.sqlite", "normal")
    typed = median_us(lambda: service.lease(worker="w", types=["b"]), samples)
    service.close()
    return {"empty": empty, "behind": behind, "typed": typed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1000,100000")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    print(
        "| queued | empty lease over deferred | ready task behind deferred "
        "| typed lease, none wanted |"
    )
    print("|---|---|---|---|")
    for depth in (int(d) for d in args.depths.split(",")):
        folder = Path(tempfile.mkdtemp(prefix="deferred-scan-"))
        try:
            got = measure(folder, depth, args.samples)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(
            f"| {depth:,} | {got['empty']:,.0f} µs | {got['behind']:,.0f} µs "
            f"| {got['typed']:,.0f} µs |"
        )


if __name__ == "__main__":
    main()
