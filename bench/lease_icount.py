"""Instructions of one SQLite lease / complete / lease+complete+create (cachegrind).

Run from the root of the tree to measure, on a database pre-filled by ``queue_store.fill``
(copied for each run, so both trees of an A/B start from the same file)::

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        .venv/bin/python bench/lease_icount.py /tmp/q50k.sqlite OPS MODE

MODE: ``lease`` (``QueueService.lease(worker=..., limit=1)``, as the gateway calls it),
``complete`` (a ``done`` completion of a held lease; OPS <= 200), ``cycle`` (lease,
complete, create) or ``idle`` (a lease that finds nothing; give it an empty database).
Instructions per operation: (count at OPS=150 - count at OPS=50) / 100.

``drain`` leases and completes every queued task of the file as the batched drain of
``queue_store`` does (``lease(limit=OPS)`` + ``complete_many``; OPS is the batch, 64 in
the suite). Instructions per drained task: (count on a file of 3,000 queued tasks - on
one of 1,000) / 2,000, e.g. with files made by ``queue_store.fill(path, n)``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import queue_store  # noqa: E402

from loops.queue.tasks import TaskSpec  # noqa: E402


def main() -> None:
    source, ops, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    folder = Path(tempfile.mkdtemp(prefix="lease-icount-"))
    shutil.copy(source, folder / "q.sqlite")
    service = queue_store.open_service(folder / "q.sqlite", "normal")
    spec = TaskSpec(prompt="noop")
    try:
        if mode == "drain":
            queue_store.drain_loop(service, ops, "w1")
            return
        if mode == "idle":
            for _ in range(ops):
                service.lease(worker="w1", limit=1)
            return
        for _ in range(20):  # warm: statements prepared, pages cached
            (held,) = service.lease(worker="w1", limit=1)
            service.complete(held.task.id, lease_token=held.lease.token, status="done")
            service.create_task(spec)
        if mode == "lease":
            for _ in range(ops):
                service.lease(worker="w1", limit=1)
        elif mode == "complete":
            leases = [service.lease(worker="w1", limit=1)[0] for _ in range(200)]
            for held in leases[:ops]:
                service.complete(held.task.id, lease_token=held.lease.token, status="done")
        else:
            for _ in range(ops):
                (held,) = service.lease(worker="w1", limit=1)
                service.complete(held.task.id, lease_token=held.lease.token, status="done")
                service.create_task(spec)
    finally:
        service.close()
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
