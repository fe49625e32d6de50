"""Gateway alone: pickup latency of a long-polling lease, and batch lease/complete rate.

Starts ``loop gateway`` on a free loopback port over a fresh SQLite file
(``QUEUE_SQLITE_SYNC`` as set, default ``normal``), then measures, with raw HTTP
clients (no worker machinery):

1. pickup, in process: an idle client long-polls ``POST /tasks/lease``; another client
   ``POST /tasks``; time from sending the create to receiving the lease;
2. pickup, from another process: the same, but the task is written straight into the
   SQLite file by this process (as ``loop tasks:create`` would), so only the gateway's
   event-log probe can wake the waiting lease;
3. pickup with plain polling: ``wait_ms=0`` every ``--poll-ms`` (``WORKER_POLL_MS``);
4. batch rate: N tasks prefilled; 4 clients lease ``limit`` at a time and complete in
   one ``POST /tasks/complete``; tasks/s from the first lease to the last completion;
   then the same with the next lease carried by the completion call (``"lease"``);
5. the same pickups in process (the app driven through ``httpx.ASGITransport``, no
   sockets), and the batch drain through the service alone (no HTTP), to separate the
   gateway's own cost from the network's and the store's.

    .venv/bin/python bench/gateway_pickup.py            # full run
    .venv/bin/python bench/gateway_pickup.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
LOOP = str(ROOT / ".venv" / "bin" / "loop")

import httpx  # noqa: E402

from loops import config  # noqa: E402
from loops.gateway.app import create_app  # noqa: E402
from loops.services.queue import CompletionInput, QueueService, task_spec  # noqa: E402


class Gateway:
    """``loop gateway --port 0`` as a subprocess."""

    def __init__(self, folder: Path) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("QUEUE_")},
            "QUEUE_DB_PATH": str(folder / "queue.sqlite"),
            "QUEUE_SQLITE_SYNC": os.environ.get("QUEUE_SQLITE_SYNC", "normal"),
        }
        self.proc = subprocess.Popen(
            [LOOP, "gateway", "--port", "0"],
            env=self.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.split(" on ", 1)[1].split(";", 1)[0]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (
        f"median {statistics.median(ordered):.2f} ms, p95 {p95:.2f} ms "
        f"(min {ordered[0]:.2f}, max {ordered[-1]:.2f}, n={len(ordered)})"
    )


async def pickup(
    url: str, samples: int, create: Callable[[httpx.AsyncClient], Awaitable[None]], poll_ms: int
) -> list[float]:
    """Time from starting ``create`` to the waiting client holding the lease."""
    latencies: list[float] = []
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as waiter,
        httpx.AsyncClient(base_url=url, timeout=60) as creator,
    ):
        for _ in range(samples):
            got = asyncio.Event()

            async def wait_for_lease(got: asyncio.Event) -> None:
                while True:
                    body = {"worker": "bench", "wait_ms": 0 if poll_ms else 30_000}
                    response = await waiter.post("/tasks/lease", json=body)
                    if response.status_code == 200:
                        got.set()
                        token = response.json()["lease"]["token"]
                        task_id = response.json()["task"]["id"]
                        await waiter.post(
                            f"/tasks/{task_id}/complete",
                            json={"lease_token": token, "status": "done"},
                        )
                        return
                    if poll_ms:
                        await asyncio.sleep(poll_ms / 1000)

            leasing = asyncio.ensure_future(wait_for_lease(got))
            await asyncio.sleep(0.05 if not poll_ms else (poll_ms / 1000) * 0.37)
            t0 = time.perf_counter()
            await create(creator)
            await got.wait()
            latencies.append((time.perf_counter() - t0) * 1000)
            await leasing
    return latencies


async def batch_rate(url: str, count: int, clients: int, limit: int, *, combined: bool) -> float:
    """Tasks/s through batch leases and completions with ``clients`` concurrent clients.

    ``combined``: each completion call also leases the next batch (one request per
    batch instead of two).
    """

    async def drain(index: int) -> None:
        worker = f"b{index}"
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            response = await http.post("/tasks/lease", json={"worker": worker, "limit": limit})
            leases = response.json()["leases"] if response.status_code == 200 else []
            while leases:
                completions = [
                    {"id": item["task"]["id"], "lease_token": item["lease"]["token"],
                     "status": "done"}
                    for item in leases
                ]  # fmt: skip
                body: dict[str, object] = {"completions": completions}
                if combined:
                    body["lease"] = {"worker": worker, "limit": limit}
                done = (await http.post("/tasks/complete", json=body)).json()
                assert all(r["ok"] for r in done["results"])
                if combined:
                    leases = done["leases"]
                else:
                    response = await http.post(
                        "/tasks/lease", json={"worker": worker, "limit": limit}
                    )
                    leases = response.json()["leases"] if response.status_code == 200 else []

    t0 = time.perf_counter()
    await asyncio.gather(*(drain(i) for i in range(clients)))
    return count / (time.perf_counter() - t0)


async def in_process(folder: Path, samples: int, count: int) -> None:
    """Pickup through the app without sockets, and the store's own batch drain rate."""
    env = {"QUEUE_DB_PATH": str(folder / "inproc.sqlite"), "QUEUE_SQLITE_SYNC": "normal"}
    settings = config.load_settings(env={**os.environ, **env})
    service = QueueService.open(settings)
    app = create_app(service, settings)
    gateway = app.state.gateway
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        for mode in ("created by the service", "created by POST /tasks"):
            latencies = []
            for _ in range(samples):
                waiting = asyncio.ensure_future(
                    client.post("/tasks/lease", json={"worker": "w", "wait_ms": 30_000})
                )
                while gateway.leaser.waiting == 0:
                    await asyncio.sleep(0.001)
                t0 = time.perf_counter()
                if mode == "created by the service":
                    await asyncio.to_thread(service.create_task, task_spec({"prompt": "x"}))
                else:
                    await client.post("/tasks", json={"prompt": "x"})
                await waiting
                latencies.append((time.perf_counter() - t0) * 1000)
            print(f"pickup in process, {mode}: {summary(latencies)}")
    for i in range(count):
        service.create_task(task_spec({"prompt": f"noop {i}"}))
    t0 = time.perf_counter()
    while leased := service.lease(worker="w", limit=100):
        service.complete_many([CompletionInput(x.task.id, x.lease.token, "done") for x in leased])
    print(
        f"batch drain through the service alone: {count / (time.perf_counter() - t0):.0f} tasks/s"
    )
    service.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        gateway = Gateway(Path(folder))
        service = QueueService.open(config.load_settings(env=gateway.env))
        try:

            async def over_http(http: httpx.AsyncClient) -> None:
                await http.post("/tasks", json={"prompt": "pickup"})

            async def other_process(http: httpx.AsyncClient) -> None:
                service.create_task(task_spec({"prompt": "pickup"}))

            rows = [
                ("long poll, created over HTTP", await pickup(
                    gateway.url, args.samples, over_http, 0)),
                ("long poll, created by another process", await pickup(
                    gateway.url, args.samples, other_process, 0)),
                (f"plain polling every {args.poll_ms} ms", await pickup(
                    gateway.url, args.poll_samples, over_http, args.poll_ms)),
            ]  # fmt: skip
            for name, values in rows:
                print(f"pickup, {name}: {summary(values)}")
            for combined, name in (
                (False, "lease, then complete"),
                (True, "complete + lease in one call"),
            ):
                rates = []
                for _ in range(args.rounds):
                    for i in range(args.count):
                        service.create_task(task_spec({"prompt": f"noop {i}"}))
                    rates.append(
                        await batch_rate(gateway.url, args.count, 4, args.limit, combined=combined)
                    )
                print(
                    f"batch {name}, 4 clients, limit {args.limit}: median "
                    f"{statistics.median(rates):.0f} tasks/s (min {min(rates):.0f}, "
                    f"max {max(rates):.0f}, {args.rounds} rounds of {args.count})"
                )
        finally:
            service.close()
            gateway.close()
        await in_process(Path(folder), args.samples, args.count)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--poll-ms", type=int, default=2000)
    parser.add_argument("--limit", type=int, default=100)
    options = parser.parse_args()
    options.samples = 20 if options.quick else 200
    options.poll_samples = 3 if options.quick else 20
    options.count = 500 if options.quick else 5000
    options.rounds = 1 if options.quick else 5
    asyncio.run(main(options))
