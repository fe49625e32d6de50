"""CPU per ``POST /tasks`` in the gateway app, measured in one process without sockets.

Each create is one raw ASGI call of the app (the scope, the body and the answer as
uvicorn would pass them; no HTTP client, no server), awaited one at a time, as a
producer creating tasks one by one does. ``time.process_time`` counts every thread
(the event loop and the pool thread the create runs on), so the figure does not
depend on how busy the machine is (it still inflates somewhat under load: compare the
minimum of several rounds). Beside it the same creates through the service alone
(``QueueService.create_task`` on the calling thread): the difference is what the
gateway's HTTP path costs per create.

    .venv/bin/python bench/gateway_create.py                      # SQLite (NORMAL), memory
    .venv/bin/python bench/gateway_create.py --pg-url postgresql://postgres@127.0.0.1:5432/x
    .venv/bin/python bench/gateway_create.py --profile 30         # and the top 30 functions
    .venv/bin/python bench/gateway_create.py --served --stores sqlite,postgres --pg-url ...

``--served`` measures a real ``loop gateway`` process instead (uvicorn, sockets): one
client (``http.client``, one keep-alive connection) sends the creates one at a time,
and the gateway process's CPU time (``/proc/<pid>/stat``, all its threads) is divided
by their number.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from loops import config  # noqa: E402
from loops.gateway.app import create_app  # noqa: E402
from loops.services.queue import QueueService, task_spec  # noqa: E402
from loops.store.memory import MemoryStore  # noqa: E402

BODY = b'{"prompt": "pickup", "type": "pickup"}'


def open_service(kind: str, folder: Path, pg_url: str) -> tuple[config.Settings, QueueService]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_")}
    env["QUEUE_DB_PATH"] = str(folder / f"{kind}.sqlite")
    env["QUEUE_SQLITE_SYNC"] = "normal"
    if kind == "postgres":
        env["QUEUE_DB_URL"] = pg_url
    settings = config.load_settings(env=env)
    if kind == "memory":
        store = MemoryStore()
        store.migrate()
        return settings, QueueService(store, settings.queue)
    return settings, QueueService.open(settings)


def scope_for(path: str = "/tasks", body: bytes = BODY) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8765"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"accept", b"*/*"),
            (b"user-agent", b"bench"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
        "state": {},
    }


async def post(app: Any, body: bytes = BODY, path: str = "/tasks") -> tuple[int, bytes]:
    """One raw ASGI ``POST``; returns the status and the answer's body."""
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays; nothing reads past the body
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope_for(path, body), receive, send)
    return status, b"".join(chunks)


async def through_app(app: Any, count: int) -> float:
    """CPU seconds for ``count`` creates through the app, one at a time."""
    for _ in range(50):  # warm: imports, the thread pool, the connection
        await post(app)
    t0 = time.process_time()
    for _ in range(count):
        status, _ = await post(app)
        if status != 201:
            raise RuntimeError(f"create answered {status}")
    return time.process_time() - t0


def through_service(service: QueueService, count: int) -> float:
    """CPU seconds for ``count`` creates through the service alone."""
    spec = task_spec({"prompt": "pickup", "type": "pickup"})
    t0 = time.process_time()
    for _ in range(count):
        service.create_task(spec)
    return time.process_time() - t0


async def run_round(
    settings: config.Settings, service: QueueService, count: int, profile: bool
) -> tuple[float, float, cProfile.Profile | None]:
    app = create_app(service, settings)
    async with app.router.lifespan_context(app):
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        app_s = await through_app(app, count)
        if profiler is not None:
            profiler.disable()
    alone_s = through_service(service, count)
    return app_s, alone_s, profiler


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(kind: str, count: int, pg_url: str) -> float:
    """µs of the gateway process's CPU per ``POST /tasks`` sent to a real ``loop gateway``."""
    import http.client

    sys.path.insert(0, str(ROOT / "bench"))
    from worker_gateway import Gateway

    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(Path(tmp), db_url=pg_url if kind == "postgres" else "")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", gateway.port)
            headers = {"content-type": "application/json"}

            def create() -> None:
                conn.request("POST", "/tasks", BODY, headers)
                answer = conn.getresponse()
                answer.read()
                if answer.status != 201:
                    raise RuntimeError(f"create answered {answer.status}")

            for _ in range(200):
                create()
            before = cpu_s(gateway.proc.pid)
            for _ in range(count):
                create()
            spent = cpu_s(gateway.proc.pid) - before
            conn.close()
        finally:
            gateway.close()
    return spent / count * 1e6


def only(what: str, kind: str, count: int, pg_url: str) -> None:
    async def run(settings: config.Settings, service: QueueService) -> None:
        app = create_app(service, settings)
        async with app.router.lifespan_context(app):
            await through_app(app, count)

    with tempfile.TemporaryDirectory() as tmp:
        settings, service = open_service(kind, Path(tmp), pg_url)
        try:
            if what == "app":
                asyncio.run(run(settings, service))
            else:
                through_service(service, 50)
                through_service(service, count)
        finally:
            service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="creates per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,memory", help="sqlite,memory,postgres")
    parser.add_argument("--pg-url", default="", help="PostgreSQL database (store postgres)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    parser.add_argument(
        "--only",
        choices=("app", "service"),
        help="only the creates through the app (or the service), nothing printed (for "
        "callgrind: run with two counts, divide the difference of the totals by the "
        "difference of the counts)",
    )
    parser.add_argument("--served", action="store_true", help="a real `loop gateway` process")
    args = parser.parse_args()
    if args.served:
        print(f"{args.count} creates a round; gateway process CPU, µs per create")
        for kind in args.stores.split(","):
            values = [served(kind, args.count, args.pg_url) for _ in range(args.rounds)]
            low, high = min(values), max(values)
            print(f"| {kind} | {statistics.median(values):.0f} ({low:.0f}-{high:.0f}) |")
        return
    if args.only:
        only(args.only, args.stores.split(",")[0], args.count, args.pg_url)
        return
    stores = args.stores.split(",")
    if args.pg_url and "postgres" not in stores:
        stores.append("postgres")
    print(f"{args.count} creates a round, {args.rounds} rounds; µs per create, median (min-max)")
    print("| store | through the app | service alone | gateway's part |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in stores:
            settings, service = open_service(kind, Path(tmp), args.pg_url)
            apps: list[float] = []
            alones: list[float] = []
            profile: cProfile.Profile | None = None
            try:
                for i in range(args.rounds):
                    want = bool(args.profile) and i == args.rounds - 1
                    app_s, alone_s, prof = asyncio.run(
                        run_round(settings, service, args.count, want)
                    )
                    apps.append(app_s / args.count * 1e6)
                    alones.append(alone_s / args.count * 1e6)
                    profile = prof or profile
            finally:
                service.close()
            parts = [a - b for a, b in zip(apps, alones, strict=True)]

            def cell(values: list[float]) -> str:
                return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"

            print(f"| {kind} | {cell(apps)} | {cell(alones)} | {cell(parts)} |")
            if profile is not None:
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
