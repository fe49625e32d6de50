"""Worker instructions per drained task on PostgreSQL (callgrind or cachegrind).

The bench's drain loop in one process (``queue_postgres.loops_worker``'s: a lease of 10,
then ``complete_and_lease`` batches of 10, no task body) over N tasks filled before,
outside the measured process. Per task = (count of ``drain N`` - count of ``drain 0``)
/ N: start-up, imports and connecting cancel out. For an A/B, run the same script with
``PYTHONPATH`` at each tree's ``src``::

    BENCH_PG_DB_PREFIX=mine_ .venv/bin/python bench/queue_postgres_icount.py fill 2000
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python bench/queue_postgres_icount.py drain 2000
    BENCH_PG_DB_PREFIX=mine_ .venv/bin/python bench/queue_postgres_icount.py fill 0
    valgrind ... bench/queue_postgres_icount.py drain 0

(``drain`` checks that it drained exactly N tasks.)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import queue_postgres as qp


def fill(n: int) -> None:
    qp.fresh_database("loops")
    qp.loops_setup()
    if n:
        qp.loops_enqueue(n)


def drain(n: int) -> None:
    from loops.services.queue import CompletionInput, QueueService

    service = qp.loops_service()
    assert isinstance(service, QueueService)
    drained = 0
    leased = service.lease(worker="icount", limit=10)
    while leased:
        drained += len(leased)
        done = [CompletionInput(lease.task.id, lease.lease.token, "done") for lease in leased]
        _, leased = service.complete_and_lease(done, worker="icount", limit=10)
    service.close()
    if drained != n:
        raise SystemExit(f"drained {drained} tasks, expected {n}")


if __name__ == "__main__":
    {"fill": fill, "drain": drain}[sys.argv[1]](int(sys.argv[2]))
