"""CPU per drained task on PostgreSQL: the worker process and its server backends.

On a shared, loaded machine the drain rate of ``bench/queue_postgres.py`` moves 2x
between runs of the same code; CPU seconds per task move far less, and say where the
time goes (client or server). One worker, batches as in ``queue_postgres.py``::

    BENCH_PG_DB_PREFIX=mine_ .venv/bin/uv run --frozen --with pgqueuer==1.6.0 \\
        --with asyncpg==0.32.0 --with procrastinate==3.10.0 \\
        python bench/queue_postgres_cpu.py loops [--n 5000]

Worker CPU and backend CPU are read from /proc (Linux; the server on this host) from
the first drained task (the worker's connections are then open: it leased through
them) to the last, divided by the tasks drained in that span. The backends are read
every 20 ms while the drain runs, their last reading kept (the worker closes its
connections, ending them, as soon as the queue is empty); one that connects meanwhile
counts from zero (its start-up is a few ms, under 1 us a task).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
import queue_postgres as qp

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (``None`` once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) * TICK_S


def backends(conn: psycopg.Connection[tuple[int]], database: str) -> list[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return [r[0] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subject", choices=("loops", "pgqueuer"))
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    subject, n = args.subject, args.n
    out = Path(f"/tmp/queue-postgres-cpu-{os.getpid()}.bin")
    qp.fresh_database(subject)
    qp.SETUP[subject]()
    qp.ENQUEUE[subject](n)
    (proc,) = qp.start_workers(subject, out, "drain", 1)
    monitor = psycopg.connect(f"{qp.SERVER}/postgres", autocommit=True)
    try:
        qp.wait_for(out, 1, timeout_s=60)  # draining: its connections are open
        pids = backends(monitor, qp.DB_PREFIX + subject)
        worker0, server0 = cpu_s(proc.pid), {p: cpu_s(p) for p in pids}
        done0 = len(qp.read_records(out))
        server1 = dict(server0)
        deadline = time.monotonic() + 600
        while out.stat().st_size < n * qp.RECORD.size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{out}: {len(qp.read_records(out))} of {n} records")
            for pid in {*backends(monitor, qp.DB_PREFIX + subject)} - server1.keys():
                pids.append(pid)
                server0[pid], server1[pid] = 0.0, None
            # the last reading of each backend while it lives: the worker closes its
            # connections as soon as the queue is empty, before this loop sees the end
            server1.update({p: c for p in pids if (c := cpu_s(p)) is not None})
            time.sleep(0.02)
        records = qp.read_records(out)
        worker1 = cpu_s(proc.pid)
    finally:
        monitor.close()
        qp.stop([proc])
        out.unlink(missing_ok=True)
    tasks = n - done0
    starts = sorted(r[0] for r in records)
    assert worker0 is not None and worker1 is not None
    client_us = (worker1 - worker0) / tasks * 1e6
    # a backend gone meanwhile (the enqueue's, closing) did none of the drain's work
    spans = [(server0[p], server1[p]) for p in pids]
    server_us = sum(b - a for a, b in spans if a is not None and b is not None) / tasks * 1e6
    print(
        f"{subject}: drain {(n - 1) / (starts[-1] - starts[0]):,.0f}/s; "
        f"worker {client_us:.0f} us/task; server {server_us:.0f} us/task "
        f"({len(pids)} backends); total {client_us + server_us:.0f} us/task"
    )


if __name__ == "__main__":
    main()
