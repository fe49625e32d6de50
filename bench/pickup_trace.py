"""Where a gateway pickup's time goes: CLOCK_MONOTONIC stamps in every process.

Runs the pickup of ``bench/worker_gateway.py`` (an idle ``Worker`` long-polling a
``loop gateway`` over SQLite; a producer ``POST /tasks``; latency = POST sent -> the
worker's handler starts) with stamps taken by monkeypatching private names of uvicorn,
asyncio, anyio and loops (so this script may need updating when they change; it is a
measuring tool, not part of the product). ``time.monotonic_ns`` reads CLOCK_MONOTONIC,
which every process on a Linux host shares, so stamps of the gateway, the worker and
the producer are comparable.

    QUEUE_SQLITE_SYNC=full .venv/bin/python bench/pickup_trace.py --samples 200
    ... --shape one-loop     # producer and worker in one event loop (the old bench shape)
    ... --shape processes    # producer and worker in separate processes (the default;
                             # --producer client|httpx: bench/worker_gateway.py's producers)
    ... --pg-url postgresql://postgres@127.0.0.1:5432/mine   # PostgreSQL, two gateways:
                             # created through A, leased by the worker long-polling B

Prints, per step, the median and p90 of the step's own duration and of the time since
the POST was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

_FD = -1


def stamp(name: str, ident: object = "-") -> None:
    """Append one ``name ident ns`` line to this process's stamp file."""
    os.write(_FD, f"{name} {ident} {time.monotonic_ns()}\n".encode())


def open_stamps(path: str) -> None:
    global _FD
    _FD = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


# -- patches -----------------------------------------------------------------------------


def patch_gateway() -> None:
    """Stamp the gateway's path: bytes in, create committed, lease done, answers out."""
    import asyncio.selector_events as se

    from uvicorn.protocols.http import httptools_impl

    from loops.gateway import leasing
    from loops.services.queue import QueueService

    received = httptools_impl.HttpToolsProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        if data.startswith(b"POST /tasks "):
            stamp("g_recv_create")
        elif data.startswith(b"POST /tasks/lease "):
            stamp("g_recv_lease")
        elif data.startswith(b"POST /tasks/complete "):
            stamp("g_recv_complete")
        received(self, data)

    httptools_impl.HttpToolsProtocol.data_received = data_received  # type: ignore[method-assign]

    from anyio import to_thread

    try:  # the outermost layer: the front door where there is one, else the metrics
        from loops.gateway.front import FrontDoor as Outer
    except ImportError:
        from loops.gateway.metrics import HttpMetricsMiddleware as Outer  # type: ignore

    outer = Outer.__call__

    async def outer_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/tasks":
            stamp("g_app")
        await outer(self, scope, receive, send)

    Outer.__call__ = outer_call  # type: ignore[method-assign]

    run_sync = to_thread.run_sync

    async def stamped_run_sync(func: Any, *args: Any, **kw: Any) -> Any:
        stamp("g_to_thread")
        return await run_sync(func, *args, **kw)

    to_thread.run_sync = stamped_run_sync  # type: ignore[assignment]
    from loops.gateway.writes import WriteLane

    run_write = WriteLane.run

    async def stamped_run_write(self: Any, write: Any) -> Any:
        stamp("g_to_thread")
        return await run_write(self, write)

    WriteLane.run = stamped_run_write  # type: ignore[method-assign]

    offer = leasing.Leaser.create_and_offer

    def create_and_offer(self: Any, spec: Any, **kw: Any) -> Any:
        stamp("g_create_thread")
        return offer(self, spec, **kw)

    leasing.Leaser.create_and_offer = create_and_offer  # type: ignore[method-assign]

    create = QueueService.create_task

    def create_task(self: Any, spec: Any) -> Any:
        result = create(self, spec)
        stamp("g_committed", result.task.id)
        return result

    QueueService.create_task = create_task  # type: ignore[method-assign]

    lease = QueueService.lease

    def lease_(self: Any, **kw: Any) -> Any:
        result = lease(self, **kw)
        if result:
            stamp("g_leased", result[0].task.id)
        return result

    QueueService.lease = lease_  # type: ignore[method-assign]

    handed = leasing.Leaser._handed

    def _handed(self: Any, waiter: Any, leased: Any, error: Any) -> None:
        stamp("g_handed")
        handed(self, waiter, leased, error)

    leasing.Leaser._handed = _handed  # type: ignore[method-assign]

    from loops.gateway import feed
    from loops.store import postgres_listener

    fire = postgres_listener.WorkListener._fire

    def _fire(self: Any) -> None:
        stamp("g_notified")
        fire(self)

    postgres_listener.WorkListener._fire = _fire  # type: ignore[method-assign]

    local_work = feed.EventFeed._local_work

    def _local_work(self: Any) -> None:
        stamp("g_loop_woken")
        local_work(self)

    feed.EventFeed._local_work = _local_work  # type: ignore[method-assign]

    write = se._SelectorSocketTransport.write

    def transport_write(self: Any, data: Any) -> None:
        head = bytes(data[:12])
        if head.startswith(b"HTTP/1.1 201"):
            stamp("g_write_201")
        elif head.startswith(b"HTTP/1.1 200"):
            stamp("g_write_200")
        write(self, data)

    se._SelectorSocketTransport.write = transport_write  # type: ignore[method-assign]


def patch_worker() -> None:
    """Stamp the worker's side: bytes in, lease answer parsed."""
    from anyio._backends import _asyncio as anyio_asyncio

    from loops.worker.http import HttpQueueClient

    received = anyio_asyncio.StreamProtocol.data_received

    def data_received(self: Any, data: bytes) -> None:
        stamp("c_sock_recv", data[:12].decode(errors="replace").replace(" ", "_"))
        received(self, data)

    anyio_asyncio.StreamProtocol.data_received = data_received  # type: ignore[method-assign]
    try:  # the hot calls' own connections, where they exist
        from loops.worker import connections
    except ImportError:
        pass
    else:
        own_received = connections._Connection.data_received

        def own_data_received(self: Any, data: bytes) -> None:
            stamp("c_sock_recv", data[:12].decode(errors="replace").replace(" ", "_"))
            own_received(self, data)

        connections._Connection.data_received = own_data_received  # type: ignore[method-assign]
        post = connections.ConnectionPool.post

        async def own_post(self: Any, path: str, body: bytes, **kw: Any) -> Any:
            answer = await post(self, path, body, **kw)
            if path == "/tasks/lease":
                stamp("w_lease_response")
            return answer

        connections.ConnectionPool.post = own_post  # type: ignore[method-assign]

    request = HttpQueueClient._request

    async def _request(self: Any, method: str, path: str, **kw: Any) -> Any:
        response = await request(self, method, path, **kw)
        if path == "/tasks/lease":
            stamp("w_lease_response")
        return response

    HttpQueueClient._request = _request  # type: ignore[method-assign]

    lease = HttpQueueClient.lease

    async def lease_(self: Any, **kw: Any) -> Any:
        stamp("w_lease_send")
        result = await lease(self, **kw)
        if result:
            stamp("w_lease_parsed", result[0].task.id)
        return result

    HttpQueueClient.lease = lease_  # type: ignore[method-assign]


# -- roles ---------------------------------------------------------------------------------


def gateway_main(stamps: str) -> None:
    open_stamps(stamps)
    patch_gateway()
    from loops.cli.main import main

    sys.argv = ["loop", "gateway"]
    main()


async def run_worker(url: str) -> None:
    from loops.queue.tasks import LeasedTask
    from loops.worker.http import HttpQueueClient
    from loops.worker.options import WorkerOptions
    from loops.worker.runner import TaskReport
    from loops.worker.worker import Worker

    async def handler(leased: LeasedTask) -> TaskReport:
        stamp("w_handler", leased.task.id)
        return TaskReport("done", result="picked up")

    client = HttpQueueClient(url)
    options = WorkerOptions(name="pickup", wait_ms=10_000, poll_ms=2_000, lease_ttl_ms=30_000)
    worker = Worker(client, options, handler=handler)
    loop = asyncio.get_running_loop()
    import signal

    loop.add_signal_handler(signal.SIGTERM, worker.request_stop)
    print("ready", flush=True)
    await worker.run()
    await client.aclose()


def worker_main(url: str, stamps: str) -> None:
    open_stamps(stamps)
    patch_worker()
    asyncio.run(run_worker(url))


async def produce(url: str, samples: int, gaps: tuple[float, float], rng: random.Random) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url) as http:
        await http.get("/healthz")
        await asyncio.sleep(0.5)
        for i in range(samples):
            stamp("p_send", i)
            response = await http.post("/tasks", json={"prompt": "pickup", "type": "pickup"})
            stamp("p_resp", response.json()["id"])
            await asyncio.sleep(rng.uniform(*gaps))


def produce_apart(
    url: str, samples: int, gaps: tuple[float, float], rng: random.Random, producer: str
) -> None:
    """The producer of ``bench/worker_gateway.py``'s pickup (``producer``: ``client``,
    loops' ``GatewayClient``, or ``httpx``), in this process, apart from the worker."""
    import worker_gateway

    with worker_gateway.producer_of(producer, url) as create:
        time.sleep(0.5)
        for i in range(samples):
            stamp("p_send", i)
            task_id = create()
            stamp("p_resp", task_id)
            time.sleep(rng.uniform(*gaps))


async def one_loop(url: str, samples: int, gaps: tuple[float, float], rng: random.Random) -> None:
    worker = asyncio.ensure_future(run_worker(url))
    await asyncio.sleep(0.3)
    await produce(url, samples, gaps, rng)
    await asyncio.sleep(0.2)
    # the worker stops on the next signal-free path: cancel it
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker


# -- analysis ------------------------------------------------------------------------------

STEPS = [
    ("p_send", "producer sends POST /tasks"),
    ("g_recv_create", "gateway: request bytes read"),
    ("g_app", "gateway: ASGI app called"),
    ("g_to_thread", "gateway: request validated, handing to a thread"),
    ("g_create_thread", "gateway: create starts on a pool thread"),
    ("g_committed", "gateway: create committed"),
    ("g_leased", "gateway: hand-off lease done"),
    ("g_handed", "gateway: loop settles the hand-off"),
    ("g_write_200", "gateway: lease answer written"),
    ("c_lease_recv", "worker: answer bytes read"),
    ("w_lease_response", "worker: the HTTP client returns the answer"),
    ("w_lease_parsed", "worker: lease parsed"),
    ("w_handler", "worker: handler starts"),
]
#: PostgreSQL, two gateways: A creates, the worker long-polls B (``--pg-url``)
PG_STEPS = [
    ("p_send", "producer sends POST /tasks to A"),
    ("g_recv_create", "A: request bytes read"),
    ("g_app", "A: ASGI app called"),
    ("g_create_thread", "A: create starts on a pool thread"),
    ("g_notified", "B: listener thread has the notification (A's commit)"),
    ("g_leased", "B: lease done (on the listener thread, or a sweep's)"),
    ("g_handed", "B: loop settles the hand-off"),
    ("g_write_200", "B: lease answer written"),
    ("c_lease_recv", "worker: answer bytes read"),
    ("w_lease_response", "worker: the HTTP client returns the answer"),
    ("w_lease_parsed", "worker: lease parsed"),
    ("w_handler", "worker: handler starts"),
]


def analyse(lines: list[str], steps: list[tuple[str, str]] | None = None) -> None:
    steps = steps or STEPS
    events = sorted(
        (int(ns), name, ident) for name, ident, ns in (line.split() for line in lines if line)
    )
    sends = [ns for ns, name, _ in events if name == "p_send"]
    rows: dict[str, list[float]] = {name: [] for name, _ in steps}
    deltas: dict[str, list[float]] = {name: [] for name, _ in steps}
    extra: dict[str, list[float]] = {
        "g_committed": [],
        "g_write_201": [],
        "p_resp": [],
        "lease_waiting": [],
    }
    for i, t0 in enumerate(sends):
        end = sends[i + 1] if i + 1 < len(sends) else 1 << 62
        window = [(ns, name, ident) for ns, name, ident in events if t0 <= ns < end]
        before = [name for ns, name, _ in events if ns < t0 and name == "g_recv_lease"]
        handler_at = next((ns for ns, name, _ in window if name == "w_handler"), None)
        if handler_at is None or not before:
            continue
        # was the worker's long poll in before the send? (the last lease request arrived
        # after the previous sample's handler)
        last_lease = max(ns for ns, name, _ in events if ns < t0 and name == "g_recv_lease")
        extra["lease_waiting"].append((t0 - last_lease) / 1e6)
        found: dict[str, int] = {"p_send": t0}
        cursor = t0
        for name, _ in steps[1:]:
            for ns, ev, ident in window:
                if ns < cursor:
                    continue
                if name == "c_lease_recv":
                    if (
                        ev == "c_sock_recv"
                        and ident.startswith("HTTP/1.1_200")
                        and (ns >= found.get("g_write_200", 0))
                    ):
                        found[name] = ns
                        break
                elif ev == name:
                    found[name] = ns
                    break
            if name in found:
                cursor = found[name]
        previous = t0
        for name, _ in steps:
            if name in found:
                rows[name].append((found[name] - t0) / 1e6)
                deltas[name].append((found[name] - previous) / 1e6)
                previous = found[name]
        for name in ("g_committed", "g_write_201", "p_resp"):
            at = next((ns for ns, ev, _ in window if ev == name), None)
            if at is not None:
                extra[name].append((at - t0) / 1e6)

    def med(values: list[float]) -> str:
        if not values:
            return "-"
        ordered = sorted(values)
        p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
        return f"{statistics.median(ordered):6.2f} ({p90:6.2f})"

    print(f"n = {len(rows['w_handler'])} samples; ms, median (p90)")
    print("| step | step ms | since POST sent |")
    print("|---|---|---|")
    for name, label in steps:
        print(f"| {label} | {med(deltas[name])} | {med(rows[name])} |")
    print(f"| gateway: create_task returned | | {med(extra['g_committed'])} |")
    print(f"| gateway: create answer (201) written | | {med(extra['g_write_201'])} |")
    print(f"| producer: create answer received | | {med(extra['p_resp'])} |")
    print(f"| worker's long poll arrived before the send by | | {med(extra['lease_waiting'])} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="bench")
    parser.add_argument("--url")
    parser.add_argument("--stamps")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--shape", choices=("one-loop", "processes"), default="processes")
    parser.add_argument("--gap-ms", default="50,250", help="random gap between samples")
    parser.add_argument(
        "--producer",
        choices=("client", "httpx"),
        default="client",
        help="with --shape processes: loops' GatewayClient (the default) or httpx.Client",
    )
    parser.add_argument(
        "--pg-url", help="PostgreSQL database: two gateways, created through A, leased on B"
    )
    args = parser.parse_args()
    if args.role == "gateway":
        gateway_main(args.stamps)
        return
    if args.role == "worker":
        worker_main(args.url, args.stamps)
        return
    import worker_gateway

    low, high = (float(x) / 1000 for x in args.gap_ms.split(","))
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stamps = str(folder / "stamps")
        port = worker_gateway.free_port()
        env = worker_gateway.env_for(folder, port, db_url=args.pg_url or "")
        subprocess.run(
            [worker_gateway.LOOP, "db:migrate"], env=env, check=True, capture_output=True
        )
        url = f"http://127.0.0.1:{port}"
        gateways = [
            subprocess.Popen(
                [sys.executable, __file__, "--role", "gateway", "--stamps", stamps], env=env
            )
        ]
        create_url = url
        if args.pg_url:  # gateway A takes the creates; the worker long-polls B (``url``)
            port_a = worker_gateway.free_port()
            env_a = worker_gateway.env_for(folder, port_a, db_url=args.pg_url)
            create_url = f"http://127.0.0.1:{port_a}"
            gateways.append(subprocess.Popen(
                [sys.executable, __file__, "--role", "gateway", "--stamps", stamps], env=env_a
            ))  # fmt: skip
        import httpx

        deadline = time.monotonic() + 20
        for ready in {url, create_url}:
            while True:
                try:
                    if httpx.get(f"{ready}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        open_stamps(stamps)
        try:
            if args.shape == "one-loop":
                patch_worker()
                asyncio.run(one_loop(url, args.samples, (low, high), rng))
            else:
                worker = subprocess.Popen(
                    [sys.executable, __file__, "--role", "worker", "--url", url,
                     "--stamps", stamps],
                    env=env, stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert worker.stdout is not None
                assert worker.stdout.readline().strip() == "ready"
                try:
                    produce_apart(create_url, args.samples, (low, high), rng, args.producer)
                finally:
                    worker.terminate()
                    worker.wait(30)
        finally:
            for gateway in gateways:
                gateway.terminate()
                gateway.wait(30)
        analyse(Path(stamps).read_text().splitlines(), PG_STEPS if args.pg_url else STEPS)


if __name__ == "__main__":
    main()
