"""The pickup's producer A/B: loops' ``GatewayClient`` against ``httpx.Client``.

Until 2026-11-28 the pickup benches' producer was ``httpx.Client.post``; now it is
``loops.client.GatewayClient`` (celery's bench produces with celery's ``apply_async``,
pgqueuer's with its ``enqueue``). This runs both, in alternating rounds (order flipped
each round), so the two figures come from the same machine state:

1. producer cost per ``POST /tasks`` against a real ``loop gateway`` (SQLite): client
   CPU (``process_time``) and round trip, for ``GatewayClient``, ``httpx.Client`` and
   the stdlib ``http.client`` (each answer read back into a ``Task``);
2. the pickup of ``bench/worker_gateway.py`` on SQLite (one gateway) and, with
   ``--pg``, on PostgreSQL through two gateways (``bench/queue_postgres.py``
   ``gateways_latency``; ``BENCH_PG_DB_PREFIX`` names the database).

    .venv/bin/python bench/producer_ab.py --rounds 5 [--pg] [--samples 200] [--creates 300]
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import orjson
import worker_gateway

from loops.client import GatewayClient
from loops.worker import wire

BODY = {"prompt": "p", "type": "pickup"}


def producers(gateway: worker_gateway.Gateway) -> dict[str, Callable[[], object]]:
    """One create per call through each client, connected once."""
    loops_client = GatewayClient(gateway.url)
    httpx_client = httpx.Client(base_url=gateway.url, timeout=30)
    stdlib = http.client.HTTPConnection("127.0.0.1", gateway.port)
    stdlib.connect()
    assert stdlib.sock is not None
    stdlib.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def via_httpx() -> object:
        return wire.task_from_dict(httpx_client.post("/tasks", json=BODY).json())

    def via_stdlib() -> object:
        headers = {"Content-Type": "application/json"}
        stdlib.request("POST", "/tasks", body=orjson.dumps(BODY), headers=headers)
        return wire.task_from_dict(orjson.loads(stdlib.getresponse().read()))

    return {
        "GatewayClient": lambda: loops_client.create_task(BODY),
        "httpx.Client": via_httpx,
        "http.client": via_stdlib,
    }


def creates(rounds: int, count: int) -> None:
    """Part 1: client CPU and round trip per create, µs."""
    cpu: dict[str, list[float]] = {}
    wall: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        gateway = worker_gateway.Gateway(Path(tmp))
        try:
            subjects = producers(gateway)
            names = list(subjects)
            for round_no in range(rounds):
                for name in names if round_no % 2 == 0 else names[::-1]:
                    create = subjects[name]
                    for _ in range(20):
                        create()
                    times = []
                    started = time.process_time()
                    for _ in range(count):
                        t0 = time.perf_counter_ns()
                        create()
                        times.append((time.perf_counter_ns() - t0) / 1e3)
                    cpu.setdefault(name, []).append((time.process_time() - started) / count * 1e6)
                    wall.setdefault(name, []).append(statistics.median(times))
        finally:
            gateway.close()
    print(f"\nProducer per POST /tasks, {rounds} rounds x {count}; µs, median (min-max)\n")
    print("| producer | client CPU | round trip (median) |")
    print("|---|---|---|")
    for name in cpu:
        print(f"| {name} | {_cell(cpu[name], 0)} | {_cell(wall[name], 0)} |")


def pickups(rounds: int, samples: int, pg: bool) -> None:
    """Part 2: pickup medians and p95 per round, ms."""
    import queue_postgres

    kinds = ["client", "httpx"]
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    rng = random.Random(7)
    for round_no in range(rounds):
        for kind in kinds if round_no % 2 == 0 else kinds[::-1]:
            with tempfile.TemporaryDirectory() as tmp:
                gateway = worker_gateway.Gateway(Path(tmp))
                try:
                    values = worker_gateway.pickup(
                        gateway, samples, wait_ms=10_000, poll_ms=2_000, rng=rng, producer=kind
                    )
                finally:
                    gateway.close()
                _record(found, "sqlite", kind, values, round_no)
                if pg:
                    values = queue_postgres.gateways_latency(samples, Path(tmp), rng, producer=kind)
                    _record(found, "pg-2-gateways", kind, values, round_no)
    print(f"\nPickup, {rounds} rounds x {samples} samples; ms, median of rounds (min-max)\n")
    print("| backend | producer | median | p95 |")
    print("|---|---|---|---|")
    for (backend, kind), rows in found.items():
        medians, p95s = [m for m, _ in rows], [p for _, p in rows]
        print(f"| {backend} | {kind} | {_cell(medians, 2)} | {_cell(p95s, 2)} |")


def _record(
    found: dict[tuple[str, str], list[tuple[float, float]]],
    backend: str,
    kind: str,
    values: list[float],
    round_no: int,
) -> None:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    found.setdefault((backend, kind), []).append((statistics.median(ordered), p95))
    print(f"round {round_no} {backend} {kind}: {worker_gateway.summary(values)}", flush=True)


def _cell(values: list[float], digits: int) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200, help="pickups per round")
    parser.add_argument("--creates", type=int, default=300, help="creates per round, part 1")
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL, two gateways")
    parser.add_argument("--skip-creates", action="store_true")
    parser.add_argument("--skip-pickups", action="store_true")
    args = parser.parse_args()
    if not args.skip_creates:
        creates(args.rounds, args.creates)
    if not args.skip_pickups:
        pickups(args.rounds, args.samples, args.pg)


if __name__ == "__main__":
    main()
