"""PostgreSQL queue benchmark: loops beside pgqueuer and procrastinate, in one run.

Run (the peers go into uv's overlay environment, never into the project's)::

    .venv/bin/uv run --frozen --with procrastinate==3.10.0 --with pgqueuer==1.6.0 \\
        --with asyncpg==0.32.0 python bench/queue_postgres.py [--n 5000] [--reps 3]

Method (shared/BENCH-ANCHORS.md): a no-op task whose body appends one 16-byte record
(body start, enqueue time) to a file. Enqueue: one producer, one library call per task.
Drain: the queue pre-filled with N tasks, then W worker processes started and,
once every one is imported and connected, let go together;
rate = (N-1) / (last body start - first body start). Pickup latency: one idle worker,
tasks enqueued one at a time with random 50-250 ms gaps by one producer connected
once (as a gateway or an application is); latency = body start - enqueue time. Every
library gets its own fresh database on the same server for every run, and each round
runs the subjects back to back, so ratios are taken within a round.

loops workers lease and complete in batches of 10, completing one batch and leasing
the next in one transaction (``QueueService.complete_and_lease``), as pgqueuer dequeues
10 and flushes completions in batches. The
loops latency is measured twice: library to library (the producer creates through one
``QueueService``, the worker long-polls ``lease_wait`` on another in another process) and
through two gateways (``loop gateway`` A takes ``POST /tasks`` from loops' producer
client ``GatewayClient``, or with ``--producer httpx`` from ``httpx.Client`` as until
2026-11-28; a real ``Worker`` over ``HttpQueueClient`` long-polls gateway B, stamps in
CLOCK_MONOTONIC as bench/worker_gateway.py's pickup); both are woken by LISTEN/NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg

SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
RECORD = struct.Struct("<dd")
SUBJECTS = ("loops", "pgqueuer", "procrastinate")
#: database name prefix; bench/suite.py sets its own so that concurrent runs never collide
DB_PREFIX = os.environ.get("BENCH_PG_DB_PREFIX", "bench_")


def db_url(subject: str) -> str:
    return f"{SERVER}/{DB_PREFIX}{subject}"


def fresh_database(subject: str) -> None:
    """Drop and re-create the subject's database (no bloat carried between runs)."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_PREFIX}{subject} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_PREFIX}{subject}")


def record(path: str, enqueued: float) -> None:
    """The task body: append (start, enqueue time) in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, RECORD.pack(time.time(), enqueued))
    finally:
        os.close(fd)


def ready_then_wait_for_go() -> None:
    """A worker's start barrier: say ``ready`` once imported and connected, then wait for
    the harness's ``go`` (sent to every worker at once, see :func:`start_workers`)."""
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(0)  # the harness went away before the start


def read_records(path: Path) -> list[tuple[float, float]]:
    data = path.read_bytes() if path.exists() else b""
    return [RECORD.unpack_from(data, i) for i in range(0, len(data), RECORD.size)]


def wait_for(path: Path, count: int, timeout_s: float) -> list[tuple[float, float]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= count * RECORD.size:
            return read_records(path)
        time.sleep(0.01)
    raise TimeoutError(f"{path}: {len(read_records(path))} of {count} records")


# -- loops ------------------------------------------------------------------------------


def loops_service() -> object:
    from loops import config
    from loops.services.queue import QueueService
    from loops.store.postgres import PostgresStore

    settings = config.load_settings(env={"QUEUE_DB_URL": db_url("loops")})
    return QueueService(PostgresStore(db_url("loops")), settings.queue)


def loops_setup() -> None:
    from loops.store.postgres import PostgresStore

    store = PostgresStore(db_url("loops"))
    store.migrate()
    store.close()


def loops_enqueue(n: int) -> float:
    from loops.services.queue import QueueService, task_spec

    service = loops_service()
    assert isinstance(service, QueueService)
    # connect first, as the peers do (their enqueue connects before it stamps a time):
    # the pool opens in the background and the first create would wait for it
    service.list_tasks(limit=1)
    start = time.perf_counter()
    for _ in range(n):
        service.create_task(task_spec({"prompt": repr(time.time())}))
    elapsed = time.perf_counter() - start
    service.close()
    return elapsed


def loops_worker(out: str, mode: str) -> None:
    from loops.services.queue import CompletionInput, QueueService

    service = loops_service()
    assert isinstance(service, QueueService)
    name = f"bench-{os.getpid()}"
    service.list_tasks(limit=1)  # connected, as the peers are when they say ready
    ready_then_wait_for_go()
    if mode == "drain":
        # batches of 10; completing one batch and leasing the next is one transaction
        leased = service.lease(worker=name, limit=10)
        while leased:
            for lease in leased:
                record(out, float(lease.task.prompt))
            done = [CompletionInput(lease.task.id, lease.lease.token, "done") for lease in leased]
            _, leased = service.complete_and_lease(done, worker=name, limit=10)
    else:
        while True:
            for lease in service.lease_wait(worker=name, wait_ms=60_000):
                record(out, float(lease.task.prompt))
                service.complete(lease.task.id, lease_token=lease.lease.token, status="done")
    service.close()


# -- loops through two gateways (latency only) ----------------------------------------


def gateways_latency(
    samples: int, tmp: Path, rng: random.Random, *, producer: str = "client"
) -> list[float]:
    """Pickup through two gateways: `loop gateway` A takes ``POST /tasks`` from a producer
    (this process: loops' ``GatewayClient``, or ``httpx.Client`` with ``producer="httpx"``,
    as until 2026-11-28), a real ``Worker`` over ``HttpQueueClient``
    (its own process) long-polls gateway B; LISTEN/NOTIFY carries the task from A to B.
    Latency = POST sent -> the worker's handler starts, in CLOCK_MONOTONIC: the method of
    the SQLite pickup (bench/worker_gateway.py ``pickup``) and of celery's."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import worker_gateway

    fresh_database("loops")
    folder = Path(tempfile.mkdtemp(dir=tmp))
    first = worker_gateway.Gateway(folder, db_url=db_url("loops"))
    try:
        second = worker_gateway.Gateway(folder, db_url=db_url("loops"))
        try:
            return worker_gateway.pickup(
                second,
                samples,
                wait_ms=10_000,
                poll_ms=2_000,
                rng=rng,
                create_via=first,
                producer=producer,
            )
        finally:
            second.close()
    finally:
        first.close()


# -- pgqueuer ---------------------------------------------------------------------------


def pgqueuer_setup() -> None:
    async def go() -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(db_url("pgqueuer"))
        await Queries(AsyncpgDriver(conn)).install()
        await conn.close()

    asyncio.run(go())


def pgqueuer_enqueue(n: int) -> float:
    async def go() -> float:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(db_url("pgqueuer"))
        queries = Queries(AsyncpgDriver(conn))
        start = time.perf_counter()
        for _ in range(n):
            await queries.enqueue("noop", struct.pack("<d", time.time()))
        elapsed = time.perf_counter() - start
        await conn.close()
        return elapsed

    return asyncio.run(go())


def pgqueuer_worker(out: str, mode: str) -> None:
    import asyncpg
    import pgqueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    @contextlib.asynccontextmanager
    async def factory() -> AsyncIterator[pgqueuer.PgQueuer]:
        conn = await asyncpg.connect(db_url("pgqueuer"))
        pgq = pgqueuer.PgQueuer(AsyncpgDriver(conn))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            assert job.payload is not None
            record(out, struct.unpack("<d", job.payload)[0])

        await asyncio.get_running_loop().run_in_executor(None, ready_then_wait_for_go)
        yield pgq
        await conn.close()

    execution = QueueExecutionMode.drain if mode == "drain" else QueueExecutionMode.continuous
    asyncio.run(pgqueuer.run(factory, batch_size=10, mode=execution))


# -- procrastinate ----------------------------------------------------------------------


def procrastinate_app(out: str = "") -> tuple[object, object]:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=db_url(
        "procrastinate")))  # fmt: skip

    @app.task(name="noop")
    def noop(enqueued: float) -> None:
        record(out, enqueued)

    return app, noop


def procrastinate_setup() -> None:
    app, _ = procrastinate_app()
    with app.open():  # type: ignore[attr-defined]
        app.schema_manager.apply_schema()  # type: ignore[attr-defined]


def procrastinate_enqueue(n: int) -> float:
    app, noop = procrastinate_app()
    with app.open():  # type: ignore[attr-defined]
        start = time.perf_counter()
        for _ in range(n):
            noop.defer(enqueued=time.time())  # type: ignore[attr-defined]
        return time.perf_counter() - start


def procrastinate_worker(out: str, mode: str) -> None:
    app, _ = procrastinate_app(out)
    ready_then_wait_for_go()
    app.run_worker(concurrency=1, wait=mode != "drain", install_signal_handlers=True)  # type: ignore[attr-defined]


# -- producers of the latency measure: connected once, one task per call ---------------
# A producer keeps its connection across samples, as a gateway or an application
# does; connecting per sample would time a fresh server backend's cold caches (about
# 8 ms for loops here), not the queue.


@contextlib.contextmanager
def loops_producer() -> Iterator[Callable[[], object]]:
    from loops.services.queue import QueueService, task_spec

    service = loops_service()
    assert isinstance(service, QueueService)
    service.list_tasks(limit=1)  # connected before the first stamp
    try:
        yield lambda: service.create_task(task_spec({"prompt": repr(time.time())}))
    finally:
        service.close()


@contextlib.contextmanager
def pgqueuer_producer() -> Iterator[Callable[[], object]]:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    with asyncio.Runner() as runner:
        conn = runner.run(asyncpg.connect(db_url("pgqueuer")))
        queries = Queries(AsyncpgDriver(conn))
        try:
            yield lambda: runner.run(queries.enqueue("noop", struct.pack("<d", time.time())))
        finally:
            runner.run(conn.close())


@contextlib.contextmanager
def procrastinate_producer() -> Iterator[Callable[[], object]]:
    app, noop = procrastinate_app()
    with app.open():  # type: ignore[attr-defined]
        yield lambda: noop.defer(enqueued=time.time())  # type: ignore[attr-defined]


SETUP: dict[str, Callable[[], None]] = {
    "loops": loops_setup, "pgqueuer": pgqueuer_setup, "procrastinate": procrastinate_setup,
}  # fmt: skip
ENQUEUE: dict[str, Callable[[int], float]] = {
    "loops": loops_enqueue, "pgqueuer": pgqueuer_enqueue, "procrastinate": procrastinate_enqueue,
}  # fmt: skip
PRODUCER: dict[str, Callable[[], contextlib.AbstractContextManager[Callable[[], object]]]] = {
    "loops": loops_producer, "pgqueuer": pgqueuer_producer,
    "procrastinate": procrastinate_producer,
}  # fmt: skip
WORKER: dict[str, Callable[[str, str], None]] = {
    "loops": loops_worker, "pgqueuer": pgqueuer_worker, "procrastinate": procrastinate_worker,
}  # fmt: skip


# -- harness ----------------------------------------------------------------------------


def start_workers(subject: str, out: Path, mode: str, count: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", subject, "--out", str(out), "--mode", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(count)
    ]
    # every worker imported and connected before any starts: with N = 5,000 a drain
    # lasts under a second, about as long as starting a Python process that imports a
    # queue library, so workers started one after another would time the others'
    # start-up beside the first one's drain, not W workers draining together
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_drain(subject: str, n: int, workers: int, tmp: Path) -> dict[str, float]:
    fresh_database(subject)
    SETUP[subject]()
    enqueue_s = ENQUEUE[subject](n)
    out = tmp / f"{subject}-{workers}-{time.monotonic_ns()}.bin"
    procs = start_workers(subject, out, "drain", workers)
    try:
        records = wait_for(out, n, timeout_s=600)
    finally:
        stop(procs)
    starts = sorted(r[0] for r in records)
    return {"enqueue": n / enqueue_s, "drain": (n - 1) / (starts[-1] - starts[0])}


def run_latency(
    subject: str, samples: int, tmp: Path, rng: random.Random, *, producer: str = "client"
) -> list[float]:
    if subject == "loops-2-gateways":
        return gateways_latency(samples, tmp, rng, producer=producer)
    fresh_database(subject)
    SETUP[subject]()
    out = tmp / f"{subject}-latency-{time.monotonic_ns()}.bin"
    procs = start_workers(subject, out, "latency", 1)
    try:
        with PRODUCER[subject]() as send:
            time.sleep(1.0)  # let the worker reach its idle wait
            for i in range(samples):
                send()
                wait_for(out, i + 1, timeout_s=30)
                time.sleep(rng.uniform(0.05, 0.25))
    finally:
        stop(procs)
    return [(start - enqueued) * 1000 for start, enqueued in read_records(out)]


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def ratio_summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--subjects", default=",".join(SUBJECTS))
    parser.add_argument("--worker")
    parser.add_argument("--out")
    parser.add_argument("--mode", default="drain")
    parser.add_argument(
        "--producer",
        choices=("client", "httpx"),
        default="client",
        help="the two-gateway pickup's producer: loops' GatewayClient, or httpx.Client "
        "(figures until 2026-11-28)",
    )
    args = parser.parse_args()
    if args.worker:
        WORKER[args.worker](args.out, args.mode)
        return
    subjects = args.subjects.split(",")
    rng = random.Random(7)
    results: dict[tuple[str, str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for rep in range(args.reps):
            for workers in (1, 4):
                for subject in subjects:
                    got = run_drain(subject, args.n, workers, tmp)
                    for metric, value in got.items():
                        results.setdefault((subject, metric, workers), []).append(value)
                    print(f"rep {rep} {subject} w={workers}: " + json.dumps(
                        {k: round(v) for k, v in got.items()}), flush=True)  # fmt: skip
        latency_subjects = [*subjects, "loops-2-gateways"] if "loops" in subjects else subjects
        latencies = {
            s: run_latency(s, args.latency_samples, tmp, rng, producer=args.producer)
            for s in latency_subjects
        }
    if args.reps:
        print_drain(results, subjects, args.n, args.reps)
    print_latency(latencies)


def print_drain(
    results: dict[tuple[str, str, int], list[float]], subjects: list[str], n: int, reps: int
) -> None:
    print(f"\nN = {n}, {reps} rounds; tasks/s, median (min-max)\n")
    print("| subject | workers | enqueue | drain |")
    print("|---|---|---|---|")
    for workers in (1, 4):
        for s in subjects:
            print(f"| {s} | {workers} | {summary(results[(s, 'enqueue', workers)])} | "
                  f"{summary(results[(s, 'drain', workers)])} |")  # fmt: skip
    if "loops" in subjects:
        print("\nRatios loops ÷ peer, computed within each round, median (min-max)\n")
        print("| peer | enqueue w=1 | drain w=1 | drain w=4 |")
        print("|---|---|---|---|")
        for peer in (s for s in subjects if s != "loops"):
            cells = []
            for metric, workers in (("enqueue", 1), ("drain", 1), ("drain", 4)):
                mine = results[("loops", metric, workers)]
                theirs = results[(peer, metric, workers)]
                cells.append(ratio_summary([a / b for a, b in zip(mine, theirs, strict=True)]))
            print(f"| {peer} | " + " | ".join(cells) + " |")
        scaling = [
            a / b
            for a, b in zip(
                results[("loops", "drain", 4)], results[("loops", "drain", 1)], strict=True
            )
        ]
        print(f"\nloops drain 4 workers ÷ 1 worker: {ratio_summary(scaling)}")


def print_latency(latencies: dict[str, list[float]]) -> None:
    print("\nPickup latency, one idle worker, ms\n")
    print("| subject | median | p95 | max | samples |")
    print("|---|---|---|---|---|")
    for s, values in latencies.items():
        ordered = sorted(values)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        print(f"| {s} | {statistics.median(values):.2f} | {p95:.2f} | {max(values):.1f} | "
              f"{len(values)} |")  # fmt: skip


if __name__ == "__main__":
    main()
