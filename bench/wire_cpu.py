"""CPU per no-op task of the worker's HTTP path, measured in one process.

The gateway app is driven through ``httpx.ASGITransport`` (no sockets) by the real
``Worker`` over ``HttpQueueClient``, with a no-op handler: every task is leased in a
batch, run and completed in a batch, as ``loop worker`` does against ``loop gateway``.
CPU time (``time.process_time``: all threads of the process) does not depend on how
busy the machine is, so it is the figure to compare wire formats by (on a machine
shared with other work it still inflates: compare the minimum of several rounds). Beside it, the
same tasks drained through the service alone (``lease(limit)`` + ``complete_many``):
the difference is what the HTTP path costs.

    .venv/bin/python bench/wire_cpu.py                 # 3 rounds of 4,096 tasks
    .venv/bin/python bench/wire_cpu.py --profile 30    # and the top 30 functions
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from worker_gateway import noop_handler  # noqa: E402

from loops import config  # noqa: E402
from loops.gateway.app import create_app  # noqa: E402
from loops.services.queue import CompletionInput, QueueService, task_spec  # noqa: E402
from loops.worker.http import HttpQueueClient  # noqa: E402
from loops.worker.options import WorkerOptions  # noqa: E402
from loops.worker.worker import Worker  # noqa: E402


def open_service(path: Path, count: int) -> tuple[config.Settings, QueueService]:
    env = {**os.environ, "QUEUE_DB_PATH": str(path), "QUEUE_SQLITE_SYNC": "normal"}
    settings = config.load_settings(env=env)
    service = QueueService.open(settings)
    for i in range(count):
        service.create_task(task_spec({"prompt": f"noop {i}"}))
    return settings, service


async def through_http(settings: config.Settings, service: QueueService, count: int) -> float:
    """CPU seconds for ``count`` no-op tasks leased, run and completed over the app."""
    app = create_app(service, settings)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        client = HttpQueueClient("http://gateway", transport=transport)
        options = WorkerOptions(concurrency=256, wait_ms=0, provider="mock", lease_ttl_ms=60_000)
        worker = Worker(client, options, handler=noop_handler)
        t0 = time.process_time()
        await worker.run(max_tasks=count)
        spent = time.process_time() - t0
        await client.aclose()
    if worker.stats.completed != count:
        raise RuntimeError(f"completed {worker.stats.completed} of {count}: {worker.stats}")
    return spent


def through_service(service: QueueService, count: int) -> float:
    """CPU seconds for the same drain through the service alone, batches of 256."""
    t0 = time.process_time()
    done = 0
    while done < count:
        leased = service.lease(worker="w", limit=256)
        outcomes = service.complete_many(
            [CompletionInput(t.task.id, t.lease.token, "done", result="no-op") for t in leased]
        )
        done += sum(1 for o in outcomes if o.ok)
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4_096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    args = parser.parse_args()
    http_us: list[float] = []
    store_us: list[float] = []
    for round_no in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            settings, service = open_service(Path(tmp) / "http.sqlite", args.count)
            profiler = cProfile.Profile() if args.profile and round_no == 1 else None
            if profiler is not None:
                profiler.enable()
            spent = asyncio.run(through_http(settings, service, args.count))
            if profiler is not None:
                profiler.disable()
            service.close()
            _, service = open_service(Path(tmp) / "store.sqlite", args.count)
            alone = through_service(service, args.count)
            service.close()
        http_us.append(spent / args.count * 1e6)
        store_us.append(alone / args.count * 1e6)
        print(
            f"round {round_no}: over HTTP {http_us[-1]:.0f} µs CPU/task, "
            f"service alone {store_us[-1]:.0f} µs CPU/task",
            flush=True,
        )
        if profiler is not None:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile)
    wire = [h - s for h, s in zip(http_us, store_us, strict=True)]
    print(
        f"median (min) over {args.rounds} rounds of {args.count:,}: over HTTP "
        f"{statistics.median(http_us):.0f} ({min(http_us):.0f}) µs CPU/task, service alone "
        f"{statistics.median(store_us):.0f} ({min(store_us):.0f}), the HTTP path "
        f"{statistics.median(wire):.0f} ({min(http_us) - min(store_us):.0f})"
    )


if __name__ == "__main__":
    main()
