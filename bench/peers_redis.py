"""celery and rq on Redis: enqueue throughput and celery's pickup latency, as the anchors did.

Used by ``bench/suite.py`` (it runs in the suite's peer environment, where celery, kombu,
rq and redis are installed). Method (shared/BENCH-ANCHORS.md): a no-op task whose body
appends one 16-byte record (body start, enqueue time) to a file. Enqueue: one producer,
one library call per task. Pickup: one idle celery worker (prefork, concurrency 1),
tasks sent one at a time with random 50-250 ms gaps; latency = body start - enqueue.

Everything lives in one Redis database (``BENCH_REDIS_URL``, default db 13 of the local
server), which the suite empties before and after.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
RECORD = struct.Struct("<dd")
HERE = Path(__file__).resolve().parent
CELERY_QUEUE = "loops-bench-celery"
RQ_QUEUE = "loops-bench-rq"


def record(path: str, enqueued: float) -> None:
    """The task body: append (start, enqueue time) in one write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, RECORD.pack(time.time(), enqueued))
    finally:
        os.close(fd)


def read_records(path: Path) -> list[tuple[float, float]]:
    """Every (start, enqueue time) record written so far."""
    data = path.read_bytes() if path.exists() else b""
    return [RECORD.unpack_from(data, i) for i in range(0, len(data), RECORD.size)]


def wait_for(path: Path, count: int, timeout_s: float) -> None:
    """Block until ``count`` records are in ``path``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size >= count * RECORD.size:
            return
        time.sleep(0.002)
    raise TimeoutError(f"{path}: {len(read_records(path))} of {count} records")


def flush() -> None:
    """Empty the bench's Redis database (and only it)."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


# -- celery ------------------------------------------------------------------------------


def celery_app() -> Any:
    """The celery app: Redis broker, no result backend, the anchors' defaults otherwise."""
    from celery import Celery

    app = Celery("peers_redis", broker=REDIS_URL)
    app.conf.task_default_queue = CELERY_QUEUE
    app.conf.worker_hijack_root_logger = False
    app.conf.broker_connection_retry_on_startup = True
    app.task(name="noop", ignore_result=True)(record)
    return app


app = celery_app() if os.environ.get("BENCH_CELERY_WORKER") else None


def celery_enqueue(n: int, path: Path) -> float:
    """Tasks/s of ``n`` ``delay`` calls from one producer."""
    application = celery_app()
    noop = application.tasks["noop"]
    noop.delay(str(path), time.time())  # open the connection outside the timing
    start = time.perf_counter()
    for _ in range(n):
        noop.delay(str(path), time.time())
    elapsed = time.perf_counter() - start
    application.close()
    return n / elapsed


def start_celery_worker(concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    """A ``celery worker`` (prefork) on the bench queue."""
    argv = [sys.executable, "-m", "celery", "-A", "peers_redis", "worker", "-P", "prefork",
            "-c", str(concurrency), "-Q", CELERY_QUEUE, "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "WARNING"]  # fmt: skip
    env = {**os.environ, "BENCH_CELERY_WORKER": "1", "BENCH_REDIS_URL": REDIS_URL}
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a worker: TERM, then KILL after 15 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def celery_pickup(samples: int, folder: Path, rng: random.Random) -> list[float]:
    """Pickup latencies in ms of one idle prefork worker (concurrency 1)."""
    flush()
    out = folder / f"celery-pickup-{time.monotonic_ns()}.bin"
    proc = start_celery_worker(1, folder / "celery-worker.log")
    application = celery_app()
    noop = application.tasks["noop"]
    try:
        noop.delay(str(out), time.time())  # warm-up: the worker is up once this ran
        wait_for(out, 1, timeout_s=60)
        time.sleep(0.5)
        for i in range(samples):
            noop.delay(str(out), time.time())
            wait_for(out, i + 2, timeout_s=30)
            time.sleep(rng.uniform(0.05, 0.25))
    finally:
        application.close()
        stop(proc)
    return [(start - sent) * 1000 for start, sent in read_records(out)[1:]]


# -- rq ----------------------------------------------------------------------------------


def rq_enqueue(n: int, path: Path) -> float:
    """Tasks/s of ``n`` ``Queue.enqueue`` calls from one producer."""
    import redis
    from rq import Queue

    queue = Queue(RQ_QUEUE, connection=redis.Redis.from_url(REDIS_URL))
    queue.enqueue(record, str(path), time.time())
    start = time.perf_counter()
    for _ in range(n):
        queue.enqueue(record, str(path), time.time())
    return n / (time.perf_counter() - start)


def versions() -> dict[str, str]:
    """The installed versions of the Redis peers and the server."""
    from importlib import metadata

    import redis

    found = {name: metadata.version(name) for name in ("celery", "kombu", "rq", "redis")}
    found["redis-server"] = str(redis.Redis.from_url(REDIS_URL).info()["redis_version"])
    return found
