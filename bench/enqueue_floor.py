"""Where the time of a SQLite enqueue goes: CPU per create against the raw insert loop.

Run from the repository root:

    .venv/bin/python bench/enqueue_floor.py --n 3000 --rounds 5

CPU time (``time.process_time``), not wall time, so that a loaded machine distorts it
less; at ``synchronous=NORMAL`` a commit does not wait for the disk, so CPU is the
cost. Each round measures, as a ratio to the raw one-row INSERT loop of
``bench/queue_store.py`` in the same round:

- ``service``: ``QueueService.create_task`` (what the benchmark's enqueue runs);
- ``sql``: the same SQL alone on the real schema (one autocommit ``insert_root_task``;
  trigger ``tasks_created_event`` writes its ``task.created`` event), no Python around it;
- ``sql_no_status_index``: the same without ``tasks_status_id`` (listing by status,
  counts by status);
- ``sql_no_status_no_event_index``: also without ``events_task`` (events of one task).

The last two drop indexes the queue needs; they show what each costs per create.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import queue_store  # noqa: E402

from loops.queue.tasks import TaskSpec  # noqa: E402
from loops.store import sqlite as sqlite_store  # noqa: E402


def raw_rate(folder: Path, n: int) -> float:
    connection = queue_store.raw_connect(folder / "raw.sqlite", "normal")
    connection.executescript(queue_store.RAW_SCHEMA)
    start = time.process_time()
    for i in range(n):
        connection.execute(queue_store.RAW_INSERT, (i % 5, i))
    rate = n / (time.process_time() - start)
    connection.close()
    return rate


def service_rate(folder: Path, n: int) -> float:
    service = queue_store.open_service(folder / "service.sqlite", "normal")
    spec = TaskSpec(prompt="noop")
    service.create_task(spec)
    start = time.process_time()
    for _ in range(n):
        service.create_task(spec)
    rate = n / (time.process_time() - start)
    service.close()
    return rate


def sql_rate(folder: Path, n: int, drop: tuple[str, ...]) -> float:
    store = sqlite_store.SqliteStore(folder / f"sql-{len(drop)}.sqlite", synchronous="normal")
    store.migrate()
    connection = store._connection()
    for index in drop:
        connection.execute(f"DROP INDEX {index}")
    ms = sqlite_store.to_ms(datetime.now(UTC))
    row = ("task", "", "noop", None, None, None, None, None, None, None, 3, 3, ms, None, ms, ms)
    insert = sqlite_store.Q["insert_root_task"]
    start = time.process_time()
    for _ in range(n):
        connection.execute(insert, row)
    rate = n / (time.process_time() - start)
    store.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        folder = Path(tempfile.mkdtemp(prefix="loops-floor-"))
        raw = raw_rate(folder, args.n)
        rates.setdefault("raw", []).append(raw)
        for name, rate in (
            ("service", service_rate(folder, args.n)),
            ("sql", sql_rate(folder, args.n, ())),
            ("sql_no_status_index", sql_rate(folder, args.n, ("tasks_status_id",))),
            ("sql_no_status_no_event_index",
             sql_rate(folder, args.n, ("tasks_status_id", "events_task"))),
        ):  # fmt: skip
            rates.setdefault(name, []).append(rate)
            ratios.setdefault(name, []).append(rate / raw)
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    print(f"n = {args.n:,} per measure, {args.rounds} rounds, synchronous=NORMAL, CPU time\n")
    print("| what | creates per CPU-second | µs CPU per create | / raw insert loop |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        med = statistics.median(values)
        cells = [name, f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f})", f"{1e6 / med:.1f}"]
        if name in ratios:
            r = ratios[name]
            cells.append(f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})")
        else:
            cells.append("1")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
