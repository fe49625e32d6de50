"""The create's and the batch completion's store calls: one thread when the store writes
serially, a pool of the gateway's own otherwise."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from loops.gateway.state import Gateway
from loops.gateway.writes import WriteLane
from loops.services.queue import QueueService


async def test_concurrent_batch_completions_run_on_one_thread(
    client: httpx.AsyncClient, service: QueueService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four workers' completions arriving together are written one after the other on
    one thread (not the event loop's): the memory store writes serially anyway."""
    assert service.store.serial_writes
    threads: list[int] = []
    original = service.complete_and_lease

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.01)  # long enough for the requests to overlap
        return original(*args, **kwargs)

    monkeypatch.setattr(service, "complete_and_lease", recorded)
    for _ in range(8):
        await client.post("/tasks", json={"prompt": "work"})
    leases = (
        await client.post("/tasks/lease", json={"worker": "w", "limit": 8, "form": "lean"})
    ).json()["leases"]

    async def complete(pair: list[dict[str, Any]]) -> httpx.Response:
        body = {
            "completions": [
                {"id": item["id"], "lease_token": item["token"], "status": "done"} for item in pair
            ],
            "lease": {"worker": "w", "limit": 2},
            "form": "lean",
        }
        return await client.post("/tasks/complete", json=body)

    answers = await asyncio.gather(*(complete(leases[i : i + 2]) for i in range(0, 8, 2)))
    assert all(a.status_code == 200 and all(r["ok"] for r in a.json()["results"]) for a in answers)
    assert len(threads) == 4
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()
    assert service.status().to_dict()["counts"]["done"] == 8


async def test_a_serial_lane_runs_one_write_at_a_time_and_restarts_after_close() -> None:
    lane = WriteLane(serial=True)
    running, most = 0, 0
    lock = threading.Lock()

    def write(value: int) -> Callable[[], int]:
        def run() -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.005)
            with lock:
                running -= 1
            return value

        return run

    assert await asyncio.gather(*(lane.run(write(i)) for i in range(5))) == [0, 1, 2, 3, 4]
    assert most == 1
    lane.close()
    assert await lane.run(write(7)) == 7  # a write after close starts a new thread
    lane.close()


async def test_a_pooled_lane_runs_as_many_writes_at_once_as_it_has_threads() -> None:
    """PostgreSQL's lane: writes side by side, at most one per store connection."""
    lane = WriteLane(serial=False, threads=3)
    running, most = 0, 0
    lock = threading.Lock()
    loop_thread = threading.get_ident()
    threads: set[int] = set()

    def write() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.get_ident())
        time.sleep(0.05)
        with lock:
            running -= 1

    await asyncio.gather(*(lane.run(write) for _ in range(6)))
    assert most == 3
    assert len(threads) == 3
    assert loop_thread not in threads
    lane.close()


async def test_a_write_error_reaches_the_caller() -> None:
    def broken() -> None:
        raise ValueError("bad")

    for serial in (True, False):
        with pytest.raises(ValueError, match="bad"):
            await WriteLane(serial=serial).run(broken)


async def test_the_lane_follows_the_store(
    client: httpx.AsyncClient, gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    assert gateway_of(client).writes.serial is True


def test_sqlite_writes_serially_and_the_default_store_does_not() -> None:
    from loops.store.base import Store
    from loops.store.sqlite import SqliteStore

    assert SqliteStore.serial_writes
    assert not Store.serial_writes
