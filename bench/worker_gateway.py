"""Pickup latency and no-op throughput of workers through the gateway.

Starts ``loop gateway`` on a free loopback port over a fresh SQLite file, then:

1. pickup latency: one idle worker (its own process, over HTTP) long-polls; this
   process (the producer, one ``loops.client.GatewayClient``; ``--producer httpx``: one
   kept-alive ``httpx.Client``, as until 2026-11-28) POSTs a task; latency = POST
   sent -> the worker's handler starts, in CLOCK_MONOTONIC, which both processes share.
   Tasks go one at a time with random 50-250 ms gaps, as ``bench/peers_redis.py``
   measures celery (separate producer and worker processes, the same gaps). Repeated;
   median and p95. The same with plain polling (``wait_ms=0``, ``WORKER_POLL_MS``).
   Until 2026-11-28 the producer (httpx.AsyncClient) and the worker shared one event
   loop in one process, with 20 ms gaps: the worker then also waited for the
   producer's work on the same loop and the same core, which celery's figure never
   includes (see bench/RESULTS.md, branch ``pickup2``).
2. throughput: N no-op tasks pre-filled; 4 worker processes lease in batches
   (``limit``), run a mock-engine turn that returns at once, and complete in batches
   (``POST /tasks/complete``); tasks/s from the first lease to the last completion.
   Next to it, in the same round, the in-process store drain (``lease(limit)`` +
   ``complete_many`` on the same kind of file, no HTTP) and the full task runner
   (a prompt task through the loop library, events and artifacts) with 4 workers.

    .venv/bin/python bench/worker_gateway.py            # full run
    .venv/bin/python bench/worker_gateway.py --quick    # smoke test
    QUEUE_SQLITE_SYNC=full .venv/bin/python bench/worker_gateway.py --pickup-only --rounds 5

``--pickup-only`` runs part 1 with long polling alone (what the suite's figure 3 runs:
``pickup(gateway, samples, wait_ms=10_000, poll_ms=2_000, rng=...)``), each round on a fresh
gateway. ``QUEUE_SQLITE_SYNC`` defaults to ``normal`` here; the suite runs ``full``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
LOOP = str(ROOT / ".venv" / "bin" / "loop")

import httpx  # noqa: E402

from loops import config, errors  # noqa: E402
from loops.client import GatewayClient  # noqa: E402
from loops.engines import base  # noqa: E402
from loops.engines.mock import MockEngine, MockTurn  # noqa: E402
from loops.queue.tasks import LeasedTask  # noqa: E402
from loops.services.queue import CompletionInput, QueueService, task_spec  # noqa: E402
from loops.worker.http import HttpQueueClient  # noqa: E402
from loops.worker.options import WorkerOptions  # noqa: E402
from loops.worker.runner import TaskReport  # noqa: E402
from loops.worker.worker import Worker  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(folder: Path, port: int, db_url: str = "") -> dict[str, str]:
    env = {
        **os.environ,
        "QUEUE_DB_PATH": str(folder / "queue.sqlite"),
        "QUEUE_API_PORT": str(port),
        "WORKER_API_BASE_URL": f"http://127.0.0.1:{port}",
        "QUEUE_SQLITE_SYNC": os.environ.get("QUEUE_SQLITE_SYNC", "normal"),
    }
    if db_url:
        env["QUEUE_DB_URL"] = db_url
    return env


class Gateway:
    """``loop gateway`` on a free loopback port: over a SQLite file in ``folder``, or
    over the PostgreSQL database ``db_url`` (then several may share it)."""

    def __init__(self, folder: Path, db_url: str = "") -> None:
        self.port = free_port()
        self.env = env_for(folder, port=self.port, db_url=db_url)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (folder / f"gateway-{self.port}.log").open("wb")
        subprocess.run([LOOP, "db:migrate"], env=self.env, check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [LOOP, "gateway"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the gateway did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


NOOP = MockEngine(default=MockTurn(text="ok", usage=None))


async def noop_handler(leased: LeasedTask) -> TaskReport:
    """Run one mock turn that returns at once."""
    result = await base.run_turn(NOOP, base.TurnRequest(prompt=leased.task.prompt))
    return TaskReport("done", result="no-op", output=result.final_text, usage=result.usage)


# -- pickup latency ---------------------------------------------------------------------

#: one handler start: task id, CLOCK_MONOTONIC ns
PICKUP_RECORD = struct.Struct("<qq")


def pickup_worker(url: str, out: str, wait_ms: int, poll_ms: int) -> None:
    """The idle worker: a ``Worker`` over ``HttpQueueClient`` whose handler appends
    (task id, start time) to ``out``; stops on SIGTERM."""

    async def handler(leased: LeasedTask) -> TaskReport:
        started = time.monotonic_ns()
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, PICKUP_RECORD.pack(leased.task.id, started))
        finally:
            os.close(fd)
        return TaskReport("done", result="picked up")

    async def main() -> None:
        client = HttpQueueClient(url)
        options = WorkerOptions(
            name="pickup", wait_ms=wait_ms, poll_ms=poll_ms, lease_ttl_ms=30_000
        )
        worker = Worker(client, options, handler=handler)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
        print("ready", flush=True)
        await worker.run()
        await client.aclose()

    asyncio.run(main())


def pickup(
    gateway: Gateway,
    samples: int,
    *,
    wait_ms: int,
    poll_ms: int,
    rng: random.Random | None = None,
    create_via: Gateway | None = None,
    producer: str = "client",
) -> list[float]:
    """Pickup latencies in ms: ``POST /tasks`` sent -> the idle worker's handler starts.

    The worker long-polls ``gateway``; the producer POSTs to ``create_via`` (default the
    same gateway): with two gateways over one PostgreSQL database the task reaches the
    worker's gateway by LISTEN/NOTIFY.

    The producer (this process: one ``loops.client.GatewayClient``, or with
    ``producer="httpx"`` one kept-alive ``httpx.Client`` as until 2026-11-28) and the
    worker (its own process) are separate, as a user runs them and as ``peers_redis.celery_pickup``
    measures celery; the times are CLOCK_MONOTONIC, which the processes share. Tasks
    go one at a time, each after the previous one started, with random 50-250 ms gaps
    (celery's method) when long polling, or a gap of 0.37 poll intervals when polling.
    """
    rng = rng or random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "starts.bin"
        worker = subprocess.Popen(
            [sys.executable, __file__, "--role", "pickup-worker", "--url", gateway.url,
             "--folder", str(out), "--wait-ms", str(wait_ms), "--poll-ms", str(poll_ms)],
            env=gateway.env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        sent: dict[int, int] = {}
        try:
            with producer_of(producer, (create_via or gateway).url) as create:
                time.sleep(0.3)  # the worker is idle and waiting
                for i in range(samples):
                    t0 = time.monotonic_ns()
                    sent[create()] = t0
                    deadline = time.monotonic() + poll_ms / 1000 + 10
                    while _pickup_records(out) <= i:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"task {i} was not picked up")
                        time.sleep(0.002)
                    if wait_ms:
                        time.sleep(rng.uniform(0.05, 0.25))
                    else:
                        time.sleep((poll_ms / 1000) * 0.37)
        finally:
            worker.terminate()
            worker.wait(30)
        data = out.read_bytes()
    starts = dict(PICKUP_RECORD.iter_unpack(data))
    return [(starts[task_id] - t0) / 1e6 for task_id, t0 in sent.items()]


#: the pickup's producers: ``client`` (loops' own, as celery's bench uses celery's
#: ``apply_async`` and pgqueuer's its ``enqueue``) and ``httpx`` (the old figures')
PRODUCERS = ("client", "httpx")


@contextlib.contextmanager
def producer_of(kind: str, url: str) -> Iterator[Callable[[], int]]:
    """A function that creates one pickup task through the gateway at ``url`` and returns
    its id, over a connection opened before the first call."""
    if kind == "httpx":
        with httpx.Client(base_url=url, timeout=30) as http:
            http.get("/healthz").raise_for_status()
            yield lambda: int(http.post("/tasks", json=PICKUP_TASK).json()["id"])
        return
    if kind != "client":
        raise ValueError(f"unknown producer {kind!r}; use one of {', '.join(PRODUCERS)}")
    with GatewayClient(url) as client:
        with contextlib.suppress(errors.TaskNotFound):  # a 404 answer keeps the connection
            client.get_task(0)
        yield lambda: client.create_task(PICKUP_TASK).id


#: what the pickup's producer creates
PICKUP_TASK = {"prompt": "pickup", "type": "pickup"}


def _pickup_records(path: Path) -> int:
    try:
        return path.stat().st_size // PICKUP_RECORD.size
    except FileNotFoundError:
        return 0


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (
        f"median {statistics.median(ordered):.2f} ms, p95 {p95:.2f} ms "
        f"(min {ordered[0]:.2f}, max {ordered[-1]:.2f}, n={len(ordered)})"
    )


# -- throughput -------------------------------------------------------------------------


def prefill(env: dict[str, str], count: int, **fields: Any) -> QueueService:
    settings = config.load_settings(env=env)
    service = QueueService.open(settings)
    for i in range(count):
        service.create_task(task_spec({"prompt": f"noop {i}", **fields}))
    return service


def worker_process(url: str, concurrency: int, mode: str, folder: str) -> None:
    async def main() -> None:
        client = HttpQueueClient(url)
        options = WorkerOptions(
            concurrency=concurrency,
            wait_ms=200,
            provider="mock",
            cwd=Path(folder),
            lease_ttl_ms=60_000,
        )
        worker = Worker(client, options, handler=noop_handler if mode == "noop" else None)
        idle_since = time.monotonic()
        runner = asyncio.ensure_future(worker.run())
        last = 0
        # stop once nothing was leased for 2 s; the tasks are queued before the workers
        # start, so a worker that leased none by then (the others took all) stops too
        while not runner.done():
            await asyncio.sleep(0.2)
            if worker.stats.leased != last:
                last, idle_since = worker.stats.leased, time.monotonic()
            elif time.monotonic() - idle_since > 2.0:
                worker.request_stop()
        await runner
        await client.aclose()

    asyncio.run(main())


def throughput(gateway: Gateway, count: int, workers: int, concurrency: int, mode: str) -> float:
    """Tasks per second from the first lease to the last completion (from the event log,
    so the workers' start-up time is not counted)."""
    fields = {"cwd": str(Path(gateway.env["QUEUE_DB_PATH"]).parent)} if mode == "full" else {}
    service = prefill(gateway.env, count, **fields)
    before = sum(
        service.status().to_dict()["counts"].get(k, 0)
        for k in ("done", "failed", "blocked", "cancelled")
    )
    (mark,) = service.list_events(limit=1)
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--role", "worker", "--url", gateway.url,
             "--concurrency", str(concurrency), "--mode", mode,
             "--folder", fields.get("cwd", "/tmp")],
            env=gateway.env,
        )
        for _ in range(workers)
    ]  # fmt: skip
    finished = ("done", "failed", "blocked", "cancelled")
    while sum(service.status().to_dict()["counts"].get(k, 0) for k in finished) < before + count:
        time.sleep(0.05)
    counts = service.status().to_dict()["counts"]
    if counts.get("done", 0) < before + count:
        print(f"  not all done: {counts}", flush=True)
    for proc in procs:
        proc.wait(60)
    first = last = None
    after = mark.id
    while page := service.list_events(after_id=after, limit=10_000):
        for event in page:
            if event.type == "task.leased" and first is None:
                first = event.ts
            elif event.type == "task.completed":
                last = event.ts
        after = page[-1].id
    service.close()
    assert first is not None and last is not None
    return count / max((last - first).total_seconds(), 0.001)


def in_process_drain(folder: Path, count: int, batch: int) -> float:
    env = {**os.environ, "QUEUE_DB_PATH": str(folder / "inproc.sqlite"), "QUEUE_SQLITE_SYNC":
           os.environ.get("QUEUE_SQLITE_SYNC", "normal")}  # fmt: skip
    service = prefill(env, count)
    start = time.perf_counter()
    done = 0
    while done < count:
        leased = service.lease(worker="w", limit=batch)
        outcomes = service.complete_many(
            [CompletionInput(t.task.id, t.lease.token, "done", result="no-op") for t in leased]
        )
        done += sum(1 for o in outcomes if o.ok)
    elapsed = time.perf_counter() - start
    service.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="bench")
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--mode", default="noop")
    parser.add_argument("--folder", default="/tmp")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pickup-only", action="store_true", help="only the long-polling pickup latency"
    )
    parser.add_argument("--samples", type=int, help="pickup samples per round (default 200)")
    parser.add_argument("--wait-ms", type=int, default=10_000)
    parser.add_argument("--poll-ms", type=int, default=2_000)
    parser.add_argument(
        "--producer",
        choices=PRODUCERS,
        default="client",
        help="the pickup's producer: loops' GatewayClient, or httpx.Client (figures until "
        "2026-11-28)",
    )
    args = parser.parse_args()
    if args.role == "worker":
        worker_process(args.url, args.concurrency, args.mode, args.folder)
        return
    if args.role == "pickup-worker":
        pickup_worker(args.url, args.folder, args.wait_ms, args.poll_ms)
        return
    samples = args.samples or (30 if args.quick else 200)
    poll_samples = 5 if args.quick else 10
    count = 2_000 if args.quick else 10_000
    rounds = 1 if args.quick else args.rounds
    print(f"sqlite sync={os.environ.get('QUEUE_SQLITE_SYNC', 'normal')}, producer {args.producer}")
    for round_no in range(1, rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            gateway = Gateway(Path(tmp))
            try:
                long_poll = pickup(
                    gateway, samples, wait_ms=10_000, poll_ms=2_000, producer=args.producer
                )
                if args.pickup_only:
                    print(f"round {round_no} pickup, long polling: {summary(long_poll)}")
                    continue
                polling = pickup(
                    gateway, poll_samples, wait_ms=0, poll_ms=2_000, producer=args.producer
                )
                print(f"round {round_no} pickup, long polling: {summary(long_poll)}")
                print(f"round {round_no} pickup, WORKER_POLL_MS=2000 polling: {summary(polling)}")
                noop = throughput(gateway, count, 4, args.concurrency, "noop")
                print(f"round {round_no} no-op throughput, 4 workers: {noop:,.0f} tasks/s")
                full_count = 40 if args.quick else 100
                full = throughput(gateway, full_count, 4, 16, "full")
                print(f"round {round_no} full prompt-task runner, 4 workers: {full:,.0f} tasks/s")
            finally:
                gateway.close()
            inproc = in_process_drain(Path(tmp), count, 256)
            print(f"round {round_no} in-process store drain, batches of 256: {inproc:,.0f} tasks/s")


if __name__ == "__main__":
    main()
