"""Where 4 SQLite worker processes lose against 1: CPU per task inside the writer lock.

Run from the repository root:

    .venv/bin/python bench/writer_lock.py --n 20000 --rounds 3

Each round drains ``--n`` pre-filled no-op tasks (``lease(limit=64)`` +
``complete_many``, as ``bench/queue_store.py`` does) with 1 and then 4 worker
processes, at FULL and NORMAL. Every worker reports its CPU time (``getrusage``) and
the wall and CPU time spent holding the store's writer lock. With one writer at a time,
4 processes can only beat 1 by running in parallel what lies outside the lock; CPU
time is less distorted by a loaded machine than wall time, so the per-task CPU inside
the lock, 1 process against 4, shows what contention itself costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import queue_store  # noqa: E402

from loops.store import sqlite as sqlite_store  # noqa: E402


def timed_writer_lock(totals: dict[str, float]) -> None:
    """Wrap the store's writer lock to add up the wall and CPU time it is held."""
    plain = sqlite_store.SqliteStore._writer_lock

    @contextlib.contextmanager
    def timed(self: sqlite_store.SqliteStore) -> Iterator[None]:
        with plain(self):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                totals["hold_s"] += time.perf_counter() - wall
                totals["hold_cpu_s"] += time.process_time() - cpu

    sqlite_store.SqliteStore._writer_lock = timed  # type: ignore[method-assign]


def worker(path: str, sync: str, go: str) -> None:
    """``_worker`` mode: drain until the queue is empty, print what it cost."""
    totals = {"hold_s": 0.0, "hold_cpu_s": 0.0}
    timed_writer_lock(totals)
    service = queue_store.open_service(Path(path), sync)
    while not os.path.exists(go):
        time.sleep(0.001)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.time()
    done = queue_store.drain_loop(service, 64, f"w{os.getpid()}")
    end = time.time()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"start": start, "end": end, "done": done, "cpu_s": cpu, **totals}))
    service.close()


def drain(folder: Path, sync: str, n: int, workers: int) -> dict[str, float]:
    path = folder / f"lock-{sync}-{workers}.sqlite"
    queue_store.fill(path, n)
    go = folder / f"go-{sync}-{workers}"
    argv = [sys.executable, __file__, "_worker", str(path), sync, str(go)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    time.sleep(1.0)  # let every process import and open the store
    go.touch()
    reports = [json.loads(proc.communicate(timeout=600)[0]) for proc in procs]
    assert sum(r["done"] for r in reports) == n
    for file in folder.iterdir():
        file.unlink()
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return {
        "rate": n / wall,
        "cpu_us": sum(r["cpu_s"] for r in reports) / n * 1e6,
        "hold_cpu_us": sum(r["hold_cpu_s"] for r in reports) / n * 1e6,
        "hold_us": sum(r["hold_s"] for r in reports) / n * 1e6,
    }


def cell(values: list[float], digits: int = 1) -> str:
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--n", type=int, default=20_000, help="tasks per drain")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="loops-lock-"))
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    ratios: dict[str, list[float]] = {}
    for index in range(args.rounds):
        print(f"round {index + 1}/{args.rounds}, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        for sync in ("full", "normal"):
            one, four = drain(folder, sync, args.n, 1), drain(folder, sync, args.n, 4)
            for workers, found in ((1, one), (4, four)):
                for key, value in found.items():
                    rows.setdefault((sync, workers), {}).setdefault(key, []).append(value)
            ratios.setdefault(sync, []).append(four["rate"] / one["rate"])
    folder.rmdir()
    print(f"\nn = {args.n:,} queued, batches of 64, {args.rounds} rounds\n")
    print("| sync | workers | tasks/s | CPU µs/task | CPU µs/task in the lock "
          "| wall µs/task in the lock |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for (sync, workers), measured in rows.items():
        rate, cpu = cell(measured["rate"], digits=0), cell(measured["cpu_us"])
        held, held_wall = cell(measured["hold_cpu_us"]), cell(measured["hold_us"])
        print(f"| {sync.upper()} | {workers} | {rate} | {cpu} | {held} | {held_wall} |")
    for sync, values in ratios.items():
        print(f"\n{sync.upper()} 4 / 1 process: {cell(values, digits=2)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
