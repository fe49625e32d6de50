"""The dashboard's task list over a 100,000-task SQLite queue (issue 9).

Fills a queue with N tasks (mixed statuses and types; setup, not measured), starts
``loop gateway`` on loopback, then measures:

- over HTTP, the two requests the task list makes (``GET /status`` for the counts and
  ``GET /tasks?limit=50...`` for one page) for the first page, a status filter, a rare
  type, both, and a deep page (``before=`` half-way);
- in Debian's chromium (Playwright), opening ``/`` until the 50 rows are drawn;
- the SQLite query plans of those queries (printed, so an unindexed scan shows).

Usage: ``.venv/bin/python bench/dashboard_list.py [--tasks 100000] [--samples 21]``
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
LOOP = str(ROOT / ".venv" / "bin" / "loop")

import httpx  # noqa: E402

from loops.queue.tasks import TaskSpec, TaskStatus, evolve, new_task  # noqa: E402
from loops.store import sqlite as sqlite_store  # noqa: E402
from loops.store.sqlite import SqliteStore  # noqa: E402

STATUSES = [TaskStatus.DONE] * 6 + [TaskStatus.QUEUED] * 2 + [TaskStatus.FAILED, TaskStatus.BLOCKED]
TYPES = ["prompt"] * 6 + ["build"]  # 1 in 7: not aligned with STATUSES (1 in 10)


def fill(path: Path, n: int) -> None:
    store = SqliteStore(path, synchronous="normal")
    store.migrate()
    start = datetime.now(UTC) - timedelta(days=30)
    rows = []
    for i in range(n):
        now = start + timedelta(seconds=i * 20)
        kind = "rare" if i % 997 == 0 else TYPES[i % len(TYPES)]
        task = new_task(
            TaskSpec(prompt=f"task {i}", title=f"Task number {i}", type=kind, priority=1 + i % 5),
            now=now,
            max_attempts=3,
        )
        status = STATUSES[i % len(STATUSES)]
        if status is not TaskStatus.QUEUED:
            task = evolve(task, status=status, attempts=1, finished_at=now + timedelta(seconds=90))
        rows.append(sqlite_store._insert_row(task))
    connection = store._connection()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(sqlite_store.Q["insert_task"], rows)
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    store.close()


def plans(path: Path, before: int) -> None:
    db = sqlite3.connect(path)
    shapes = {
        "counts": ("SELECT status, count(*) FROM tasks GROUP BY status", ()),
        "first page": ("SELECT * FROM tasks ORDER BY id DESC LIMIT 50", ()),
        "status": ("SELECT * FROM tasks WHERE status = ? ORDER BY id DESC LIMIT 50", ("failed",)),
        "type": ("SELECT * FROM tasks WHERE type = ? ORDER BY id DESC LIMIT 50", ("rare",)),
        "status+type": (
            "SELECT * FROM tasks WHERE status = ? AND type = ? ORDER BY id DESC LIMIT 50",
            ("failed", "build"),
        ),
        "deep page": ("SELECT * FROM tasks WHERE id < ? ORDER BY id DESC LIMIT 50", (before,)),
    }
    for name, (sql, args) in shapes.items():
        plan = "; ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))
        print(f"  plan {name:12} {plan}")
    db.close()


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):.1f} ms ({min(ms):.1f}-{max(ms):.1f})"


def start_gateway(folder: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
    env.update(QUEUE_DB_PATH=str(folder / "queue.sqlite"), LOOPS_HOME=str(folder / "home"))
    proc = subprocess.Popen(
        [LOOP, "gateway", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = line.split(" on ", 1)[1].split(";", 1)[0].split(" ", 1)[0].rstrip("/")
    return proc, url


def http_cases(url: str, samples: int, before: int) -> None:
    cases = {
        "first page": {},
        "status=failed": {"status": "failed"},
        "type=rare (1 in 997)": {"type": "rare"},
        "status=failed&type=build": {"status": "failed", "type": "build"},
        f"before={before}": {"before": before},
    }
    with httpx.Client(base_url=url, timeout=30) as http:
        for name, params in cases.items():
            times = []
            for _ in range(samples):
                started = time.perf_counter()
                http.get("/status").raise_for_status()
                page = http.get("/tasks", params={"limit": 50, **params})
                page.raise_for_status()
                times.append(time.perf_counter() - started)
            rows = len(page.json()["tasks"])
            print(f"| {name} | {rows} | {summary(times)} |")


def browser_load(url: str, samples: int) -> None:
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        for _ in range(samples):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(url + "/")
            page.locator("table[aria-label=Tasks] tbody tr").nth(49).wait_for()
            times.append(time.perf_counter() - started)
            context.close()
        browser.close()
    print(f"| chromium: open `/` until 50 rows are drawn | 50 | {summary(times)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=21)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        fill(folder / "queue.sqlite", args.tasks)
        print(f"filled {args.tasks} tasks in {time.perf_counter() - started:.1f} s")
        plans(folder / "queue.sqlite", args.tasks // 2)
        proc, url = start_gateway(folder)
        try:
            print("| request(s) | rows | median (min-max) |")
            print("| --- | --- | --- |")
            http_cases(url, args.samples, args.tasks // 2)
            browser_load(url, max(5, args.samples // 3))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
