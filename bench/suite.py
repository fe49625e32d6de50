"""The benchmark suite of issue 12: every figure, loops beside its peers, one table.

Run it through ``bench/run`` (which creates the peer environment); directly:

    bench/.venv-peers/bin/python bench/suite.py [--quick] [--loops-only] [--rounds 3]

Figures (each a median with min-max over ``--rounds`` rounds; every ratio is computed
within a round, from measures taken back to back):

1. enqueue, one producer: loops (SQLite FULL and NORMAL, PostgreSQL), a raw sqlite3
   insert loop, huey (SQLite), pgqueuer and procrastinate (PostgreSQL), celery and rq
   (Redis);
2. drain of no-op tasks: loops on SQLite in-process and with 1 and 4 worker processes,
   raw sqlite3, huey; loops, pgqueuer and procrastinate with 1 and 4 workers on
   PostgreSQL;
3. pickup latency, one idle worker: loops through the gateway (SQLite) and on
   PostgreSQL through two gateways (LISTEN/NOTIFY from A to B), celery;
4. lease latency at 1k, 100k and 1M queued tasks (SQLite);
5. end to end through the gateway over HTTP with 4 worker processes, against the
   in-process drain;
6. loop-engine overhead per iteration and per dag node (mock engine);
7. peak RSS of an idle gateway, an idle worker and a worker streaming a transcript.

The building blocks are the per-area benches beside this file (``queue_store``,
``queue_postgres``, ``worker_gateway``, ``loop_overhead``, ``peers_redis``, ``memory``);
this module runs them in rounds and prints the table. A figure whose server or module
is missing is skipped with one line saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata, util
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import pgcluster  # noqa: E402  (bench/ is on the path only from here)
from pgcluster import free_port  # noqa: E402

PG_SERVER = os.environ.setdefault("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
#: this run's own databases (a concurrent queue_postgres.py run uses bench_*)
PG_PREFIX = os.environ.setdefault("BENCH_PG_DB_PREFIX", f"suite{os.getpid()}_")
PG_DATABASES = tuple(f"{PG_PREFIX}{s}" for s in ("loops", "pgqueuer", "procrastinate"))


@dataclasses.dataclass
class Sizes:
    """How much each figure measures."""

    n: int = 5_000
    gateway_n: int = 20_000
    pickup_samples: int = 200
    depths: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    lease_samples: int = 1_000
    transcript_lines: int = 100_000

    @classmethod
    def quick(cls) -> Sizes:
        """Small enough for a smoke run well under 2 minutes."""
        return cls(
            n=500,
            gateway_n=1_000,
            pickup_samples=20,
            depths=(1_000, 10_000),
            lease_samples=200,
            transcript_lines=5_000,
        )


class Results:
    """Values by key, one per round, and the lines saying what was skipped."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.skipped: list[str] = []

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def ratio(self, key: str, top: float, bottom: float) -> None:
        if bottom > 0:
            self.add(key, top / bottom)

    def skip(self, line: str) -> None:
        if line not in self.skipped:
            self.skipped.append(line)
            print(f"skipped: {line}", file=sys.stderr)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


# -- servers ------------------------------------------------------------------------------


class Servers:
    """Redis and PostgreSQL for the peers: the local ones, or throwaway ones, or none."""

    def __init__(self, results: Results) -> None:
        self.results = results
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.redis = False
        self.postgres = False
        self.pg_cluster: pgcluster.Cluster | None = None

    def start(self) -> None:
        self.redis = self._redis()
        self.postgres = self._postgres()

    def _redis(self) -> bool:
        import redis

        url = os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
            return True
        except redis.RedisError:
            pass
        binary = shutil.which("redis-server")
        if binary is None:
            self.results.skip(f"celery and rq: no Redis at {url} and no redis-server to start")
            return False
        port = free_port()
        self.redis_proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        for _ in range(100):
            try:
                client.ping()
                log(f"started a throwaway redis-server on 127.0.0.1:{port}")
                return True
            except redis.RedisError:
                time.sleep(0.05)
        self.results.skip("celery and rq: the throwaway redis-server did not start")
        return False

    def _postgres(self) -> bool:
        """The server at BENCH_PG_URL, or else a throwaway cluster started here."""
        global PG_SERVER
        import psycopg

        try:
            with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        try:
            self.pg_cluster = pgcluster.Cluster()
            PG_SERVER = os.environ["BENCH_PG_URL"] = self.pg_cluster.start()
        except pgcluster.ClusterError as exc:
            if self.pg_cluster is not None:
                self.pg_cluster.stop()
                self.pg_cluster = None
            self.results.skip(
                f"PostgreSQL figures: no server at BENCH_PG_URL={PG_SERVER} ({first}) and "
                f"no throwaway cluster ({exc}); start one or point BENCH_PG_URL at one"
            )
            return False
        log(f"no server at BENCH_PG_URL ({first}): started a throwaway cluster at {PG_SERVER}")
        return True

    def stop(self) -> None:
        """Empty what the bench wrote and stop what it started."""
        if self.redis:
            import peers_redis

            peers_redis.flush()
        if self.postgres:
            import psycopg

            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
                for name in PG_DATABASES:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if self.redis_proc is not None:
            self.redis_proc.terminate()
            self.redis_proc.wait(10)
        if self.pg_cluster is not None:
            self.pg_cluster.stop()


# -- figures ------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """What every figure needs."""

    sizes: Sizes
    folder: Path
    results: Results
    peers: bool
    servers: Servers
    rng: random.Random


def sqlite_round(run: Run) -> None:
    """Figures 1 and 2 on SQLite: loops, raw sqlite3, huey."""
    import queue_store

    res, n, folder = run.results, run.sizes.n, run.folder
    huey = None
    if run.peers:
        huey = queue_store.huey_round(Path(sys.executable), folder, n, 0)
        res.add("enq.huey", huey["enqueue"])
        res.add("drain.huey", huey["drain"])
    for sync in ("full", "normal"):
        raw = queue_store.raw_round(folder, sync, n)
        ours = queue_store.loops_round(folder, sync, n, 64)
        one = queue_store.processes_drain(folder, sync, n * 2, 64, 1)
        four = queue_store.processes_drain(folder, sync, n * 2, 64, 4)
        res.add(f"enq.raw.{sync}", raw["enqueue"])
        res.add(f"drain.raw.{sync}", raw["drain"])
        res.add(f"enq.loops.{sync}", ours["enqueue"])
        res.add(f"drain.loops.{sync}", ours["drain_batched"])
        res.add(f"drain.loops.{sync}.1w", one)
        res.add(f"drain.loops.{sync}.4w", four)
        res.ratio(f"r.enq.{sync}/raw", ours["enqueue"], raw["enqueue"])
        res.ratio(f"r.drain.{sync}/raw", ours["drain_batched"], raw["drain"])
        res.ratio(f"r.drain.{sync}.4w/1w", four, one)
        if huey is not None:
            res.ratio(f"r.enq.{sync}/huey", ours["enqueue"], huey["enqueue"])
            res.ratio(f"r.drain.{sync}/huey", ours["drain_batched"], huey["drain"])
        for file in folder.glob("*.sqlite*"):
            file.unlink()
    for file in folder.glob("huey-*"):
        file.unlink()


def redis_round(run: Run) -> None:
    """Figure 1 for celery and rq (Redis)."""
    import peers_redis

    peers_redis.flush()
    res = run.results
    celery = peers_redis.celery_enqueue(run.sizes.n, run.folder / "celery.bin")
    rq = peers_redis.rq_enqueue(run.sizes.n, run.folder / "rq.bin")
    peers_redis.flush()
    res.add("enq.celery", celery)
    res.add("enq.rq", rq)
    ours = res.values["enq.loops.full"][-1]
    res.ratio("r.enq.full/celery", ours, celery)
    res.ratio("r.enq.full/rq", ours, rq)


def postgres_round(run: Run) -> None:
    """Figures 1 and 2 on PostgreSQL: loops, pgqueuer, procrastinate, 1 and 4 workers."""
    import queue_postgres

    res = run.results
    subjects = ("loops", "pgqueuer", "procrastinate") if run.peers else ("loops",)
    for workers in (1, 4):
        drains = {}
        for subject in subjects:
            found = queue_postgres.run_drain(subject, run.sizes.n, workers, run.folder)
            drains[subject] = found["drain"]
            res.add(f"drain.pg.{subject}.{workers}w", found["drain"])
            if workers == 1:
                res.add(f"enq.pg.{subject}", found["enqueue"])
        for peer in subjects[1:]:
            res.ratio(f"r.drain.pg.{workers}w/{peer}", drains["loops"], drains[peer])
    for peer in subjects[1:]:
        res.ratio(f"r.enq.pg/{peer}", res.values["enq.pg.loops"][-1],
                  res.values[f"enq.pg.{peer}"][-1])  # fmt: skip
    res.ratio("r.drain.pg.4w/1w", res.values["drain.pg.loops.4w"][-1],
              res.values["drain.pg.loops.1w"][-1])  # fmt: skip


def pickup_round(run: Run) -> None:
    """Figure 3: one idle worker; loops on SQLite (gateway) and on PostgreSQL through two
    gateways (created through A, leased by a worker long-polling B), celery."""
    import worker_gateway

    res, samples = run.results, run.sizes.pickup_samples
    latencies: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=run.folder) as tmp:
        gateway = worker_gateway.Gateway(Path(tmp))
        try:
            latencies["sqlite"] = worker_gateway.pickup(
                gateway, samples, wait_ms=10_000, poll_ms=2_000, rng=run.rng
            )
        finally:
            gateway.close()
    if run.servers.postgres and _has("queue_postgres"):
        import queue_postgres

        latencies["pg"] = queue_postgres.run_latency(
            "loops-2-gateways", samples, run.folder, run.rng
        )
    if run.peers and run.servers.redis:
        import peers_redis

        latencies["celery"] = peers_redis.celery_pickup(samples, run.folder, run.rng)
    for subject, values in latencies.items():
        res.add(f"pickup.{subject}.median", statistics.median(values))
        res.add(f"pickup.{subject}.p95", p95(values))
    if "celery" in latencies:
        celery = statistics.median(latencies["celery"])
        for subject in ("sqlite", "pg"):
            if subject in latencies:
                ours = statistics.median(latencies[subject])
                res.ratio(f"r.pickup.{subject}/celery", ours, celery)


def lease_depth(run: Run, rounds: int) -> None:
    """Figure 4: lease latency against depth; each depth filled once, measured per round."""
    import queue_store

    from loops.queue.tasks import TaskSpec

    res = run.results
    medians: dict[tuple[str, int], list[float]] = {}
    for depth in run.sizes.depths:
        path = run.folder / f"depth-{depth}.sqlite"
        log(f"lease latency: filling {depth:,} queued tasks")
        queue_store.fill(path, depth)
        for _ in range(rounds):
            for sync in ("normal", "full"):
                service = queue_store.open_service(path, sync)
                spec = TaskSpec(prompt="noop", priority=3)
                lease_us = []
                for _ in range(run.sizes.lease_samples):
                    t0 = time.perf_counter()
                    (item,) = service.lease(worker="w", ttl_ms=600_000)
                    lease_us.append((time.perf_counter() - t0) * 1e6)
                    service.complete(item.task.id, lease_token=item.lease.token, status="done")
                    service.create_task(spec)
                service.close()
                medians.setdefault((sync, depth), []).append(statistics.median(lease_us))
                res.add(f"lease.{sync}.{depth}", statistics.median(lease_us))
        for file in run.folder.glob(f"depth-{depth}.sqlite*"):
            file.unlink()
    low, high = min(run.sizes.depths), max(run.sizes.depths)
    for sync in ("normal", "full"):
        for top, bottom in zip(medians[(sync, high)], medians[(sync, low)], strict=True):
            res.ratio(f"r.lease.{sync}.{high}/{low}", top, bottom)


def gateway_worker(url: str, concurrency: int, folder: str) -> None:
    """``_gateway_worker`` mode: a worker leasing no-op tasks over HTTP until terminated."""
    import worker_gateway

    from loops.worker.http import HttpQueueClient
    from loops.worker.options import WorkerOptions
    from loops.worker.worker import Worker

    async def work() -> None:
        client = HttpQueueClient(url)
        options = WorkerOptions(
            concurrency=concurrency, wait_ms=200, provider="mock", cwd=Path(folder),
            lease_ttl_ms=60_000,
        )  # fmt: skip
        await Worker(client, options, handler=worker_gateway.noop_handler).run()

    asyncio.run(work())


def gateway_throughput(gateway: Any, count: int, workers: int, folder: Path) -> float:
    """Tasks/s of ``workers`` worker processes draining ``count`` pre-filled no-op tasks.

    Timed from the first completion to the last, as the event log stamps them (the
    ``task.completed`` events' times, in ms), so worker start-up is excluded: the tasks
    completed in the first completing transaction start the clock and are not counted.
    This process checks for the end every 100 ms with one count; until 2026-11-28 it
    timed by polling ``status()`` (a count over all tasks, ~2 ms) every 5 ms, which took
    ~40 µs of CPU per task from the 2 cores the gateway and workers share
    (bench/RESULTS.md, branch ``gwthru``).
    """
    import worker_gateway

    service = worker_gateway.prefill(gateway.env, count)
    (mark,) = service.list_events(limit=1)
    argv = [sys.executable, __file__, "_gateway_worker", gateway.url, "64", str(folder)]
    procs = [subprocess.Popen(argv, env=gateway.env) for _ in range(workers)]
    try:
        deadline = time.monotonic() + 900
        while (done := service.status().to_dict()["counts"].get("done", 0)) < count:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"gateway drain stalled at {done} of {count} tasks done")
            time.sleep(0.1)
        stamps = completion_times(service, after_id=mark.id)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        service.close()
    first, last = stamps[0], stamps[-1]
    return (len(stamps) - stamps.count(first)) / (last - first)


def completion_times(service: Any, *, after_id: int) -> list[float]:
    """The times (s since the epoch) of the ``task.completed`` events after ``after_id``."""
    stamps: list[float] = []
    while page := service.list_events(after_id=after_id, limit=10_000):
        stamps += [e.ts.timestamp() for e in page if e.type == "task.completed"]
        after_id = page[-1].id
    return sorted(stamps)


def gateway_round(run: Run) -> None:
    """Figure 5: no-op tasks through the gateway, 4 worker processes, vs in-process."""
    import worker_gateway

    res, count = run.results, run.sizes.gateway_n
    with tempfile.TemporaryDirectory(dir=run.folder) as tmp:
        gateway = worker_gateway.Gateway(Path(tmp))
        try:
            through = gateway_throughput(gateway, count, 4, Path(tmp))
        finally:
            gateway.close()
        inproc = worker_gateway.in_process_drain(Path(tmp), count, 256)
    res.add("gateway.4w", through)
    res.add("gateway.inproc", inproc)
    res.ratio("r.gateway/inproc", through, inproc)
    if run.peers:  # huey's drain right beside it, so the goal's ratio is one round's
        import queue_store

        huey = queue_store.huey_round(Path(sys.executable), run.folder, run.sizes.n, 1)
        for file in run.folder.glob("huey-*"):
            file.unlink()
        res.add("gateway.huey", huey["drain"])
        res.ratio("r.gateway/huey", through, huey["drain"])


def overhead_round(run: Run) -> None:
    """Figure 6: framework time per loop iteration and per dag node (mock engine)."""
    import loop_overhead

    n = loop_overhead.N
    bare = loop_overhead.timed(loop_overhead.bare_loop, 1)[0]
    framework = loop_overhead.timed(lambda: loop_overhead.framework_loop([]), 1)[0]
    run.results.add("overhead.loop", (framework - bare) / n * 1e3)
    loop_overhead._PREBUILT.append(loop_overhead.build_dag())
    bare = loop_overhead.timed(loop_overhead.bare_dag, 1)[0]
    framework = loop_overhead.timed(lambda: loop_overhead.framework_dag([]), 1)[0]
    run.results.add("overhead.dag", (framework - bare) / n * 1e3)


def memory_round(run: Run) -> None:
    """Figure 7: peak RSS of an idle gateway and worker, and of a streaming worker."""
    import memory

    with tempfile.TemporaryDirectory(dir=run.folder) as tmp:
        for key, value in memory.one_round(Path(tmp), run.sizes.transcript_lines).items():
            run.results.add(f"rss.{key}", value)


def _has(module: str) -> bool:
    return util.find_spec(module) is not None


# -- the table ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a measure, or a ratio with an optional goal."""

    figure: str
    label: str
    key: str
    unit: str = "tasks/s"
    goal: tuple[str, float] | None = None  # (">=" or "<=", bound)


def rows(sizes: Sizes) -> list[Row]:
    low, high = min(sizes.depths), max(sizes.depths)
    return [
        Row("1 enqueue", "loops SQLite FULL (default)", "enq.loops.full"),
        Row("1 enqueue", "loops SQLite NORMAL", "enq.loops.normal"),
        Row("1 enqueue", "raw sqlite3 insert NORMAL", "enq.raw.normal"),
        Row("1 enqueue", "huey (SQLite)", "enq.huey"),
        Row("1 enqueue", "loops PostgreSQL", "enq.pg.loops"),
        Row("1 enqueue", "pgqueuer", "enq.pg.pgqueuer"),
        Row("1 enqueue", "procrastinate", "enq.pg.procrastinate"),
        Row("1 enqueue", "celery (Redis)", "enq.celery"),
        Row("1 enqueue", "rq (Redis)", "enq.rq"),
        Row("1 enqueue", "loops FULL ÷ huey", "r.enq.full/huey", "x"),
        Row("1 enqueue", "loops NORMAL ÷ raw insert", "r.enq.normal/raw", "x", (">=", 0.5)),
        Row("1 enqueue", "loops FULL ÷ celery", "r.enq.full/celery", "x"),
        Row("1 enqueue", "loops FULL ÷ rq", "r.enq.full/rq", "x"),
        Row("1 enqueue", "loops PG ÷ pgqueuer", "r.enq.pg/pgqueuer", "x"),
        Row("1 enqueue", "loops PG ÷ procrastinate", "r.enq.pg/procrastinate", "x"),
        Row("2 drain", "loops SQLite FULL, in-process", "drain.loops.full"),
        Row("2 drain", "loops SQLite NORMAL, in-process", "drain.loops.normal"),
        Row("2 drain", "loops SQLite FULL, 1 worker process", "drain.loops.full.1w"),
        Row("2 drain", "loops SQLite FULL, 4 worker processes", "drain.loops.full.4w"),
        Row("2 drain", "loops SQLite NORMAL, 1 worker process", "drain.loops.normal.1w"),
        Row("2 drain", "loops SQLite NORMAL, 4 worker processes", "drain.loops.normal.4w"),
        Row("2 drain", "raw sqlite3 per-row lease loop NORMAL", "drain.raw.normal"),
        Row("2 drain", "huey dequeue + execute", "drain.huey"),
        Row("2 drain", "loops FULL in-process ÷ huey", "r.drain.full/huey", "x", (">=", 1.0)),
        Row("2 drain", "loops NORMAL in-process ÷ huey", "r.drain.normal/huey", "x", (">=", 2.0)),
        Row("2 drain", "loops NORMAL ÷ raw per-row loop", "r.drain.normal/raw", "x", (">=", 0.5)),
        Row("2 drain", "loops SQLite FULL 4 ÷ 1 worker", "r.drain.full.4w/1w", "x"),
        Row("2 drain", "loops SQLite NORMAL 4 ÷ 1 worker", "r.drain.normal.4w/1w", "x"),
        Row("2 drain", "loops PostgreSQL, 1 worker", "drain.pg.loops.1w"),
        Row("2 drain", "loops PostgreSQL, 4 workers", "drain.pg.loops.4w"),
        Row("2 drain", "pgqueuer, 1 worker", "drain.pg.pgqueuer.1w"),
        Row("2 drain", "pgqueuer, 4 workers", "drain.pg.pgqueuer.4w"),
        Row("2 drain", "procrastinate, 1 worker", "drain.pg.procrastinate.1w"),
        Row("2 drain", "procrastinate, 4 workers", "drain.pg.procrastinate.4w"),
        Row("2 drain", "loops PG ÷ pgqueuer, 1 worker", "r.drain.pg.1w/pgqueuer", "x", (">=", 1.0)),
        Row(
            "2 drain", "loops PG ÷ pgqueuer, 4 workers", "r.drain.pg.4w/pgqueuer", "x", (">=", 1.0)
        ),
        Row("2 drain", "loops PG ÷ procrastinate, 1 worker", "r.drain.pg.1w/procrastinate", "x"),
        Row("2 drain", "loops PG ÷ procrastinate, 4 workers", "r.drain.pg.4w/procrastinate", "x"),
        Row("2 drain", "loops PG 4 ÷ 1 worker", "r.drain.pg.4w/1w", "x"),
        Row(
            "3 pickup",
            "loops SQLite via gateway, median",
            "pickup.sqlite.median",
            "ms",
            ("<=", 5.0),
        ),
        Row("3 pickup", "loops SQLite via gateway, p95", "pickup.sqlite.p95", "ms", ("<=", 10.0)),
        Row(
            "3 pickup",
            "loops PostgreSQL via two gateways, median",
            "pickup.pg.median",
            "ms",
            ("<=", 5.0),
        ),
        Row(
            "3 pickup",
            "loops PostgreSQL via two gateways, p95",
            "pickup.pg.p95",
            "ms",
            ("<=", 10.0),
        ),
        Row("3 pickup", "celery prefork -c 1, median", "pickup.celery.median", "ms"),
        Row("3 pickup", "celery prefork -c 1, p95", "pickup.celery.p95", "ms"),
        Row(
            "3 pickup", "loops SQLite ÷ celery, median", "r.pickup.sqlite/celery", "x", ("<=", 1.5)
        ),
        Row("3 pickup", "loops PG ÷ celery, median", "r.pickup.pg/celery", "x", ("<=", 1.5)),
        *[
            Row("4 lease", f"lease median, {sync.upper()}, {d:,} queued", f"lease.{sync}.{d}", "µs")
            for sync in ("normal", "full")
            for d in sizes.depths
        ],
        Row(
            "4 lease",
            f"NORMAL {high:,} ÷ {low:,} queued",
            f"r.lease.normal.{high}/{low}",
            "x",
            ("<=", 1.5),
        ),
        Row(
            "4 lease",
            f"FULL {high:,} ÷ {low:,} queued",
            f"r.lease.full.{high}/{low}",
            "x",
            ("<=", 1.5),
        ),
        Row("5 gateway", "4 worker processes over HTTP (FULL)", "gateway.4w"),
        Row("5 gateway", "in-process lease + complete, batches of 256", "gateway.inproc"),
        Row("5 gateway", "gateway 4 workers ÷ in-process", "r.gateway/inproc", "x"),
        Row("5 gateway", "huey dequeue + execute, same round", "gateway.huey"),
        Row("5 gateway", "gateway 4 workers ÷ huey drain", "r.gateway/huey", "x", (">=", 1.0)),
        Row("6 overhead", "loop(), per iteration over bare Python", "overhead.loop", "ms"),
        Row("6 overhead", "dag(), per node over bare Python", "overhead.dag", "ms"),
        Row("7 memory", "idle gateway, peak RSS", "rss.gateway_idle", "MiB"),
        Row("7 memory", "idle worker, peak RSS", "rss.worker_idle", "MiB"),
        Row(
            "7 memory",
            f"worker streaming a {sizes.transcript_lines * 100 / 1e6:g} MB transcript, peak RSS",
            "rss.worker_streaming",
            "MiB",
        ),
    ]


def fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    if unit in ("ms", "µs", "MiB"):
        return f"{value:,.3f}" if abs(value) < 1 else f"{value:,.1f}"
    return f"{value:,.0f}"


def cell(values: list[float], unit: str) -> str:
    median = statistics.median(values)
    shown = f"{fmt(median, unit)} ({fmt(min(values), unit)}-{fmt(max(values), unit)})"
    return shown if unit == "x" else f"{shown} {unit}"


def verdict(values: list[float], goal: tuple[str, float] | None) -> tuple[str, str]:
    if goal is None:
        return "", ""
    op, bound = goal
    median = statistics.median(values)
    met = median >= bound if op == ">=" else median <= bound
    return f"{op} {bound:g}", "yes" if met else "NO"


def table(results: Results, sizes: Sizes) -> str:
    lines = [
        "| figure | measure | median (min-max) | goal | met |",
        "|---|---|---|---|---|",
    ]
    for row in rows(sizes):
        values = results.values.get(row.key)
        if not values:
            continue
        goal, met = verdict(values, row.goal)
        lines.append(f"| {row.figure} | {row.label} | {cell(values, row.unit)} | {goal} | {met} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in ("loops", "huey", "procrastinate", "pgqueuer", "asyncpg", "psycopg", "celery",
                 "kombu", "rq", "redis"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def machine() -> str:
    cpu = platform.processor() or "cpu"
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} vCPU {cpu}{memory}, {platform.system()}, load {load:.1f} at start"


# -- main ---------------------------------------------------------------------------------


#: step name -> (what it measures, the function of one round, what it needs)
STEPS: dict[str, tuple[str, Callable[[Run], None], str]] = {
    "sqlite": ("SQLite enqueue and drain", sqlite_round, "always"),
    "redis": ("celery and rq enqueue", redis_round, "redis"),
    "postgres": ("PostgreSQL enqueue and drain", postgres_round, "postgres"),
    "pickup": ("pickup latency", pickup_round, "always"),
    "gateway": ("gateway end to end", gateway_round, "always"),
    "overhead": ("loop-engine overhead", overhead_round, "always"),
    "memory": ("memory", memory_round, "always"),
}


def runnable(run: Run, needs: str) -> bool:
    if needs == "redis":
        return run.peers and run.servers.redis
    if needs == "postgres":
        if not run.servers.postgres:
            return False
        if not _has("queue_postgres"):
            run.results.skip("PostgreSQL enqueue and drain: bench/queue_postgres.py is missing")
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round (smoke)")
    parser.add_argument("--loops-only", action="store_true", help="no peers, no Redis")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 3, quick 1)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated steps: {', '.join([*STEPS, 'lease'])}"
    )
    parser.add_argument("--json-out", type=Path, help="also write the values as JSON here")
    parser.add_argument("--table-from", type=Path, help="print the table of a --json-out file")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.table_from is not None:
        saved = json.loads(args.table_from.read_text())
        results = Results()
        results.values, results.skipped = saved["values"], saved["skipped"]
        print(saved["header"])
        print("".join(f"skipped: {line}\n" for line in results.skipped))
        print(table(results, sizes))
        return 0
    rounds = args.rounds or (1 if args.quick else 3)
    chosen = {s for s in args.only.split(",") if s} or {*STEPS, "lease"}
    unknown = chosen - {*STEPS, "lease"}
    if unknown:
        parser.error(
            f"unknown step(s) {', '.join(sorted(unknown))}; use: {', '.join(STEPS)}, lease"
        )
    os.environ["QUEUE_SQLITE_SYNC"] = "full"  # the gateway and pickup run the durable default
    results = Results()
    servers = Servers(results)
    peers = not args.loops_only
    if peers:
        missing = [m for m in ("huey", "celery", "rq", "pgqueuer", "procrastinate") if not _has(m)]
        if missing:
            print(f"error: peers not installed ({', '.join(missing)}): run bench/run, "
                  "or pass --loops-only", file=sys.stderr)  # fmt: skip
            return 2
        servers.start()
    else:
        results.skip("peers (huey, pgqueuer, procrastinate, celery, rq): --loops-only")
        servers.postgres = servers._postgres() if _has("psycopg") else False
    started = time.perf_counter()
    header = (
        f"loops benchmark suite, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"{'quick' if args.quick else 'full'}, {rounds} round(s), n = {sizes.n:,}\n"
        f"machine: {machine()}\n"
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items())
    )
    folder = Path(tempfile.mkdtemp(prefix="loops-suite-"))
    run = Run(sizes, folder, results, peers, servers, random.Random(12))
    try:
        if "lease" in chosen:  # first: its fill is long, and a cut-short run keeps it
            lease_depth(run, rounds)
            save(args.json_out, header, results)
        for index in range(rounds):
            for key, (name, step, needs) in STEPS.items():
                if key in chosen and runnable(run, needs):
                    log(f"round {index + 1}/{rounds}: {name}")
                    try:
                        step(run)
                    except Exception as exc:  # one failed measure must not lose the others
                        results.skip(f"{name}, round {index + 1}: failed: {exc!r}"[:300])
                    save(args.json_out, header, results)
    finally:
        servers.stop()
        shutil.rmtree(folder, ignore_errors=True)
    took = time.perf_counter() - started
    print(header)
    for line in results.skipped:
        print(f"skipped: {line}")
    print(f"took {took:.0f} s\n")
    print(table(results, sizes))
    save(args.json_out, header, results)
    return 0


def save(path: Path | None, header: str, results: Results) -> None:
    """Write the values so far as JSON (after every step, so a long run leaves a trace)."""
    if path is not None:
        document = {"header": header, "skipped": results.skipped, "values": results.values}
        path.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_gateway_worker"]:
        gateway_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
