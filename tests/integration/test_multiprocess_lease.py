"""Several real processes leasing from one SQLite file never lease a task twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loops.queue.tasks import TaskSpec, TaskStatus
from loops.store.sqlite import SqliteStore

WORKER = r"""
import json, os, sys, time
from loops.queue.backoff import Backoff
from loops.queue.tasks import Completion, CompletionRequest, CompletionStatus, utc_now
from loops.queue.tasks import TaskStatus
from loops.store.sqlite import SqliteStore

QUEUED = TaskStatus.QUEUED

path, name, batch, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# with "wait": tasks for later are queued too; an empty lease ends only a drained queue
wait = sys.argv[5:] == ["wait"]
store = SqliteStore(path, synchronous="normal")
store.get_task(1)  # connected and ready
open(go + "." + name, "w").close()
while not os.path.exists(go):  # start together, so the processes really contend
    time.sleep(0.005)
leased = []
while True:
    got = store.lease_next(now=utc_now(), owner=name, ttl_ms=600_000, limit=batch)
    if not got:
        if wait and store.status_summary(now=utc_now()).counts.get(QUEUED):
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
def test_processes_never_lease_the_same_task(tmp_path: Path, deferred: bool) -> None:
    """With ``deferred``, a third of the tasks come due while the processes drain: each
    is promoted into the ready index by whichever lease sees it due first (promotions
    race as leases do) and still leased exactly once."""
    path = tmp_path / "queue.sqlite"
    go = tmp_path / "go"
    store = SqliteStore(path, synchronous="normal")
    store.migrate()
    now = datetime.now(UTC)
    ids = set()
    for i in range(3000):
        later = now + timedelta(milliseconds=300 + i % 200) if deferred and i % 3 == 0 else None
        spec = TaskSpec(prompt=f"t{i}", run_after=later)
        ids.add(store.create_task(spec, now=now, max_attempts=3)[0].id)
    wait = ["wait"] if deferred else []
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), f"w{n}", str(batch), str(go), *wait],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, batch in enumerate([1, 1, 3, 7])
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.w{n}").exists() for n in range(len(workers))):
        assert time.monotonic() < deadline, "workers did not start"
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
    leased_events = [e for e in store.list_events(limit=10_000) if e.type == "task.leased"]
    assert len(leased_events) == len(ids)
    store.close()
