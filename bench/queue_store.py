"""Benchmark of the loops queue on SQLite, against a raw sqlite3 loop and huey.

Run from the repository root (it creates bench/.venv with huey on first use):

    .venv/bin/python bench/queue_store.py                 # the full run (a few minutes)
    .venv/bin/python bench/queue_store.py --quick         # smaller, for a smoke test

Measures, in rounds so that every ratio is taken within one round:
- enqueue: ``QueueService.create_task`` one call (one commit) per task, vs. a raw
  one-row INSERT loop and vs. huey's enqueue; measured one after the other, and again
  interleaved (the three take turns of ``--chunk`` tasks, so that each sees the same
  disk and load: at FULL the fsync time drifts 2-3x within a minute on a shared disk);
- drain, 1 worker: ``lease(limit=B)`` + ``complete_many`` (events included) on a
  pre-filled queue, vs. the raw per-row lease loop and vs. huey's dequeue+execute;
- drain, 4 worker processes on one file vs. the same harness with 1 process;
- lease latency with 1k, 100k and 1M queued tasks (each lease its own transaction; an
  insert after each lease keeps the depth constant).
Both ``synchronous=FULL`` (the default) and ``NORMAL`` are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / "bench" / ".venv"
HUEY_VERSION = "3.5.4"

sys.path.insert(0, str(ROOT / "src"))

from loops import config  # noqa: E402
from loops.queue.tasks import TaskSpec, new_task  # noqa: E402
from loops.services.queue import CompletionInput, QueueService  # noqa: E402
from loops.store import sqlite as sqlite_store  # noqa: E402
from loops.store.sqlite import SqliteStore  # noqa: E402

# -- the raw sqlite3 baseline (the table and statements of shared/BENCH-ANCHORS.md) -----

RAW_SCHEMA = """
CREATE TABLE tasks (id INTEGER PRIMARY KEY, status TEXT NOT NULL, lease_owner TEXT,
    lease_expires_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX tasks_status_prio_created ON tasks (status, priority, created_at);
"""
RAW_INSERT = "INSERT INTO tasks (status, priority, created_at) VALUES ('queued', ?, ?)"
RAW_LEASE = (
    "UPDATE tasks SET status = 'leased', lease_owner = ?, lease_expires_at = ?, "
    "attempts = attempts + 1 WHERE id = (SELECT id FROM tasks WHERE status = 'queued' "
    "ORDER BY priority, created_at LIMIT 1) RETURNING id"
)
RAW_COMPLETE = "UPDATE tasks SET status = 'done' WHERE id = ?"


def raw_connect(path: Path, sync: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {sync.upper()}")
    return connection


def raw_round(folder: Path, sync: str, n: int) -> dict[str, float]:
    path = folder / f"raw-{sync}.sqlite"
    connection = raw_connect(path, sync)
    connection.executescript(RAW_SCHEMA)
    start = time.perf_counter()
    for i in range(n):
        connection.execute(RAW_INSERT, (i % 5, i))
    enqueue = n / (time.perf_counter() - start)
    start = time.perf_counter()
    while True:
        row = connection.execute(RAW_LEASE, ("w", 0)).fetchone()
        if row is None:
            break
        connection.execute(RAW_COMPLETE, (row[0],))
    drain = n / (time.perf_counter() - start)
    connection.close()
    return {"enqueue": enqueue, "drain": drain}


# -- loops ---------------------------------------------------------------------------------


def open_service(path: Path, sync: str) -> QueueService:
    settings = config.load_settings(
        env={"QUEUE_DB_PATH": str(path), "QUEUE_SQLITE_SYNC": sync}, cwd=path.parent
    )
    return QueueService.open(settings)


def fill(path: Path, n: int) -> None:
    """Pre-fill ``n`` queued tasks quickly (setup, not measured): one transaction."""
    store = SqliteStore(path, synchronous="normal")
    store.migrate()
    now = datetime.now(UTC)
    connection = store._connection()
    rows = []
    for i in range(n):
        task = new_task(TaskSpec(prompt="noop", priority=1 + i % 5), now=now, max_attempts=3)
        rows.append(sqlite_store._insert_row(task))
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(sqlite_store.Q["insert_task"], rows)
    connection.execute("COMMIT")
    store.close()


def drain_loop(service: QueueService, batch: int, worker: str) -> int:
    done = 0
    while True:
        leased = service.lease(worker=worker, limit=batch, ttl_ms=600_000)
        if not leased:
            return done
        outcomes = service.complete_many(
            [CompletionInput(item.task.id, item.lease.token, "done") for item in leased]
        )
        done += sum(1 for o in outcomes if o.ok)


def loops_round(folder: Path, sync: str, n: int, batch: int) -> dict[str, float]:
    path = folder / f"loops-{sync}.sqlite"
    service = open_service(path, sync)
    spec = TaskSpec(prompt="noop")
    start = time.perf_counter()
    for _ in range(n):
        service.create_task(spec)
    enqueue = n / (time.perf_counter() - start)
    start = time.perf_counter()
    done = drain_loop(service, 1, "w")
    drain_1 = done / (time.perf_counter() - start)
    service.close()
    path2 = folder / f"loops-{sync}-batched.sqlite"
    fill(path2, n)
    service = open_service(path2, sync)
    start = time.perf_counter()
    done = drain_loop(service, batch, "w")
    drain_b = done / (time.perf_counter() - start)
    assert done == n, (done, n)
    service.close()
    return {"enqueue": enqueue, "drain_per_task": drain_1, "drain_batched": drain_b}


def worker_process(path: str, sync: str, batch: int, go: str) -> None:
    """Entry of one drain process (``_worker`` mode): prints its start, end and count."""
    service = open_service(Path(path), sync)
    while not os.path.exists(go):
        time.sleep(0.001)
    start = time.time()
    done = drain_loop(service, batch, f"w{os.getpid()}")
    print(json.dumps({"start": start, "end": time.time(), "done": done}))
    service.close()


def processes_drain(folder: Path, sync: str, n: int, batch: int, workers: int) -> float:
    path = folder / f"procs-{sync}-{workers}.sqlite"
    fill(path, n)
    go = folder / f"go-{sync}-{workers}"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "_worker", str(path), sync, str(batch), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    time.sleep(1.0)  # let every process import and open the store
    go.touch()
    reports = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        reports.append(json.loads(out))
    total = sum(r["done"] for r in reports)
    assert total == n, (total, n)
    return total / (max(r["end"] for r in reports) - min(r["start"] for r in reports))


# -- lease latency against depth ------------------------------------------------------------


def lease_latency(folder: Path, sync: str, depth: int, samples: int) -> dict[str, float]:
    path = folder / f"depth-{sync}-{depth}.sqlite"
    fill(path, depth)
    service = open_service(path, sync)
    spec = TaskSpec(prompt="noop", priority=3)
    lease_us, complete_us = [], []
    for _ in range(samples):
        t0 = time.perf_counter()
        (item,) = service.lease(worker="w", ttl_ms=600_000)
        t1 = time.perf_counter()
        service.complete(item.task.id, lease_token=item.lease.token, status="done")
        t2 = time.perf_counter()
        service.create_task(spec)
        lease_us.append((t1 - t0) * 1e6)
        complete_us.append((t2 - t1) * 1e6)
    service.close()
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    lease_us.sort()
    return {
        "lease_median_us": statistics.median(lease_us),
        "lease_p95_us": lease_us[int(len(lease_us) * 0.95)],
        "complete_median_us": statistics.median(complete_us),
    }


# -- huey -----------------------------------------------------------------------------------


def ensure_huey() -> Path:
    python = BENCH_VENV / "bin" / "python"
    check = [str(python), "-c", f"import huey, sys; sys.exit(huey.__version__ != '{HUEY_VERSION}')"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    uv = ROOT / ".venv" / "bin" / "uv"
    subprocess.run([str(uv), "venv", "-q", str(BENCH_VENV)], check=True)
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(python), f"huey=={HUEY_VERSION}"],
        check=True,
    )
    return python


def huey_round(python: Path, folder: Path, n: int, index: int) -> dict[str, float]:
    path = folder / f"huey-{index}.db"
    out = subprocess.run(
        [str(python), str(ROOT / "bench" / "huey_peer.py"), str(path), str(n)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout)
    return result


def enqueue_interleaved(
    python: Path, folder: Path, sync: str, n: int, chunk: int
) -> dict[str, float]:
    """Enqueue rates of the raw loop, loops and huey, measured in alternating chunks.

    At FULL every create waits for an fsync whose time on a shared disk drifts by 2-3x
    within a minute, so rates measured one after the other compare disk moods, not
    code. Here the three take turns ``chunk`` tasks at a time until each has done
    ``n``: each sees the same disk and the same load.
    """
    raw = raw_connect(folder / f"ilv-raw-{sync}.sqlite", sync)
    raw.executescript(RAW_SCHEMA)
    service = open_service(folder / f"ilv-loops-{sync}.sqlite", sync)
    spec = TaskSpec(prompt="noop")
    peer = subprocess.Popen(
        [str(python), str(ROOT / "bench" / "huey_peer.py"), str(folder / f"ilv-huey-{sync}.db"),
         "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert peer.stdin is not None and peer.stdout is not None
    assert peer.stdout.readline().strip() == "ready"
    spent = {"raw": 0.0, "loops": 0.0, "huey": 0.0}
    done = 0
    try:
        while done < n:
            k = min(chunk, n - done)
            start = time.perf_counter()
            for i in range(done, done + k):
                raw.execute(RAW_INSERT, (i % 5, i))
            spent["raw"] += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(k):
                service.create_task(spec)
            spent["loops"] += time.perf_counter() - start
            peer.stdin.write(f"{k}\n")
            peer.stdin.flush()
            spent["huey"] += float(peer.stdout.readline())
            done += k
    finally:
        peer.stdin.close()
        peer.wait(timeout=60)
        raw.close()
        service.close()
    return {name: n / seconds for name, seconds in spent.items()}


# -- report -----------------------------------------------------------------------------------


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def ratio(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def goal(name: str, values: list[float], at_least: float) -> tuple[str, str, str, bool]:
    met = statistics.median(values) >= at_least
    return name, ratio(values), f">= {at_least}", met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--n", type=int, default=5000, help="tasks per throughput measure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="leases/completions per call")
    parser.add_argument("--depths", default="1000,100000,1000000")
    parser.add_argument("--samples", type=int, default=1000, help="lease samples per depth")
    parser.add_argument("--quick", action="store_true", help="n=1000, 1 round, depths 1k,10k")
    parser.add_argument(
        "--chunk", type=int, default=100, help="tasks per turn in the interleaved enqueue measure"
    )
    parser.add_argument(
        "--only",
        choices=("all", "enqueue"),
        default="all",
        help="enqueue: only the interleaved enqueue measure",
    )
    args = parser.parse_args()
    if args.quick:
        args.n, args.rounds, args.depths, args.samples = 1000, 1, "1000,10000", 200
    python = ensure_huey()
    folder = Path(tempfile.mkdtemp(prefix="loops-bench-"))
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    try:
        for index in range(args.rounds):
            print(f"round {index + 1}/{args.rounds}", file=sys.stderr)
            for sync in ("full", "normal"):
                ilv = enqueue_interleaved(python, folder, sync, args.n, args.chunk)
                for name, value in ilv.items():
                    add(f"{sync}:ilv_{name}", value)
                add(f"{sync}:r_ilv_raw", ilv["loops"] / ilv["raw"])
                add(f"{sync}:r_ilv_huey", ilv["loops"] / ilv["huey"])
            for file in folder.glob("ilv-*"):
                file.unlink()
            if args.only == "enqueue":
                continue
            huey = huey_round(python, folder, args.n, index)
            for sync in ("full", "normal"):
                raw = raw_round(folder, sync, args.n)
                ours = loops_round(folder, sync, args.n, args.batch)
                one = processes_drain(folder, sync, args.n * 2, args.batch, 1)
                four = processes_drain(folder, sync, args.n * 2, args.batch, 4)
                for key, value in (
                    ("raw_enqueue", raw["enqueue"]), ("raw_drain", raw["drain"]),
                    ("enqueue", ours["enqueue"]), ("drain_per_task", ours["drain_per_task"]),
                    ("drain_batched", ours["drain_batched"]), ("drain_1proc", one),
                    ("drain_4proc", four),
                    ("r_enqueue_raw", ours["enqueue"] / raw["enqueue"]),
                    ("r_enqueue_huey", ours["enqueue"] / huey["enqueue"]),
                    ("r_drain_huey", ours["drain_batched"] / huey["drain"]),
                    ("r_drain_raw", ours["drain_batched"] / raw["drain"]),
                    ("r_4_over_1", four / one),
                ):  # fmt: skip
                    add(f"{sync}:{key}", value)
                for file in folder.glob("*.sqlite*"):
                    file.unlink()
            add("huey_enqueue", huey["enqueue"])
            add("huey_drain", huey["drain"])
            for file in folder.glob("huey-*"):
                file.unlink()
        depths = [int(d) for d in args.depths.split(",")] if args.only == "all" else []
        latency: dict[str, dict[int, dict[str, float]]] = {}
        for sync in ("normal", "full"):
            latency[sync] = {}
            for depth in depths:
                print(f"lease latency {sync} depth {depth:,}", file=sys.stderr)
                latency[sync][depth] = lease_latency(folder, sync, depth, args.samples)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\nn = {args.n:,} tasks per measure, {args.rounds} rounds, batch {args.batch}; "
          f"multi-process drains use 2n tasks; huey {HUEY_VERSION}; "
          f"SQLite {sqlite3.sqlite_version}; Python {sys.version.split()[0]}\n")  # fmt: skip
    print("| measure (tasks/s) | FULL | NORMAL |")
    print("|---|---|---|")
    for key, label in (
        ("ilv_raw", f"raw sqlite3 insert, 1 row per commit (interleaved, turns of {args.chunk})"),
        ("ilv_loops", "loops enqueue (interleaved)"),
        ("ilv_huey", "huey enqueue, always FULL (interleaved)"),
    ):
        print(f"| {label} | {summary(rows['full:' + key])} | {summary(rows['normal:' + key])} |")
    if args.only == "enqueue":
        print("\n| goal | ratio, median (min-max) | wanted | met |")
        print("|---|---|---|---|")
        for name, measured, wanted, met in (
            goal("enqueue NORMAL / raw insert loop (interleaved)", rows["normal:r_ilv_raw"], 0.5),
            goal("enqueue FULL / huey enqueue (interleaved)", rows["full:r_ilv_huey"], 1.0),
        ):
            print(f"| {name} | {measured} | {wanted} | {'yes' if met else 'NO'} |")
        return
    for key, label in (
        ("raw_enqueue", "raw sqlite3 insert, 1 row per commit"),
        ("enqueue", "loops enqueue (create_task, 1 commit each, event included)"),
        ("raw_drain", "raw sqlite3 per-row lease loop (lease + complete)"),
        ("drain_per_task", "loops drain, lease + complete one at a time"),
        ("drain_batched", f"loops drain, batches of {args.batch} (1 worker)"),
        ("drain_1proc", "loops drain, 1 process (process harness)"),
        ("drain_4proc", "loops drain, 4 processes on one file"),
    ):
        print(f"| {label} | {summary(rows['full:' + key])} | {summary(rows['normal:' + key])} |")
    print(f"| huey enqueue (FULL) | {summary(rows['huey_enqueue'])} | |")
    print(f"| huey drain, dequeue + execute (FULL) | {summary(rows['huey_drain'])} | |")

    print("\n| lease latency, µs | queued | lease median | lease p95 | complete median |")
    print("|---|---|---|---|---|")
    for sync, by_depth in latency.items():
        for depth, values in by_depth.items():
            cells = [
                sync.upper(),
                f"{depth:,}",
                f"{values['lease_median_us']:.1f}",
                f"{values['lease_p95_us']:.1f}",
                f"{values['complete_median_us']:.1f}",
            ]
            print("| " + " | ".join(cells) + " |")

    goals = [
        goal("drain FULL, 1 worker / huey drain", rows["full:r_drain_huey"], 1.0),
        goal("drain NORMAL, 1 worker / huey drain", rows["normal:r_drain_huey"], 2.0),
        goal("drain NORMAL, 1 worker / raw per-row loop", rows["normal:r_drain_raw"], 0.5),
        goal("enqueue NORMAL / raw insert loop", rows["normal:r_enqueue_raw"], 0.5),
        goal("enqueue FULL / huey enqueue", rows["full:r_enqueue_huey"], 1.0),
        goal("enqueue NORMAL / raw insert loop (interleaved)", rows["normal:r_ilv_raw"], 0.5),
        goal("enqueue FULL / huey enqueue (interleaved)", rows["full:r_ilv_huey"], 1.0),
        goal("drain 4 processes / 1 process, NORMAL", rows["normal:r_4_over_1"], 0.9),
        goal("drain 4 processes / 1 process, FULL", rows["full:r_4_over_1"], 0.9),
    ]
    for sync, by_depth in latency.items():
        low, high = min(by_depth), max(by_depth)
        value = by_depth[high]["lease_median_us"] / by_depth[low]["lease_median_us"]
        met = value <= 1.5
        goals.append((f"lease median {sync.upper()}: {high:,} / {low:,} queued", f"{value:.2f}",
                      "<= 1.5", met))  # fmt: skip
    print("\n| goal | ratio, median (min-max) | wanted | met |")
    print("|---|---|---|---|")
    for name, measured, wanted, met in goals:
        print(f"| {name} | {measured} | {wanted} | {'yes' if met else 'NO'} |")


ENTRY: dict[str, Callable[..., Any]] = {"_worker": worker_process}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_process(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
