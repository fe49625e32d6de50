"""The gateway over real stores (SQLite file, PostgreSQL): a second process's writes
wake waiting leases and reach the event stream, with no help from in-process signals."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loops import config
from loops.gateway.app import create_app
from loops.gateway.state import Gateway
from loops.services.queue import QueueService, task_spec
from loops.store.base import Store
from loops.store.sqlite import SqliteStore

HOUR_S = 3600.0
GUARD_S = 30.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens independent stores on one database, as separate processes would."""
    opened: list[Store] = []

    def open_one() -> Store:
        store: Store
        if request.param == "sqlite":
            store = SqliteStore(tmp_path / "queue.sqlite", synchronous="normal")
        else:
            from loops.store.postgres import PostgresStore

            store = PostgresStore(
                request.getfixturevalue("pg_url"), schema=request.getfixturevalue("pg_schema")
            )
        store.migrate()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        store.close()


@pytest.fixture
async def served(
    open_store: Callable[[], Store], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, QueueService]]:
    """A client of a gateway on one store, and another process's service on another."""
    settings = config.load_settings(env={}, cwd=tmp_path)
    service = QueueService(open_store(), settings.queue, rng=random.Random(1))
    elsewhere = QueueService(open_store(), settings.queue, rng=random.Random(2))
    app = create_app(service, settings, fallback_poll_s=HOUR_S)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        yield client, app.state.gateway, elsewhere


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(GUARD_S):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_another_process_create_wakes_a_waiting_lease(served: Any) -> None:
    client, gateway, elsewhere = served
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "idle", "wait_ms": 60_000})
    )
    await until(lambda: gateway.feed.waiting == 1)
    created = await asyncio.to_thread(elsewhere.create_task, task_spec({"prompt": "from a CLI"}))
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 200
    assert response.json()["task"]["id"] == created.task.id
    assert response.json()["task"]["status"] == "leased"


async def test_another_process_events_reach_the_stream(served: Any) -> None:
    client, gateway, elsewhere = served
    streaming = asyncio.create_task(client.get("/events/stream", params={"after": 0}))
    await until(lambda: gateway.feed.waiting == 1)
    created = await asyncio.to_thread(elsewhere.create_task, task_spec({"prompt": "seen"}))
    await until(lambda: gateway.feed.head >= 1)
    gateway.begin_shutdown()
    response = await asyncio.wait_for(streaming, GUARD_S)
    assert f'"task_id":{created.task.id}' in response.text
    assert '"type":"task.created"' in response.text


async def test_lease_complete_and_stale_token_on_the_store(served: Any) -> None:
    client, _, elsewhere = served
    task = (await client.post("/tasks", json={"prompt": "p"})).json()
    leased = (await client.post("/tasks/lease", json={"worker": "w", "ttl_ms": 100})).json()
    # the lease lapses; the other process reclaims and leases the task
    await asyncio.sleep(0.15)
    relet = await asyncio.to_thread(elsewhere.lease, worker="w2")
    assert [r.task.id for r in relet] == [task["id"]]
    stale = await client.post(
        f"/tasks/{task['id']}/complete",
        json={"lease_token": leased["lease"]["token"], "status": "done"},
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "lease_conflict"
    now = (await client.get(f"/tasks/{task['id']}")).json()
    assert (now["status"], now["lease_owner"], now["attempts"]) == ("leased", "w2", 2)


async def test_another_process_task_passes_a_first_waiter_that_does_not_take_its_type(
    served: Any,
) -> None:
    # PostgreSQL hands work notified by another process to the first waiter on the
    # listener's thread; a first waiter that does not take the task's type finds nothing
    # there, and the line is then served as for any other signal
    client, gateway, elsewhere = served
    picky = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "p", "wait_ms": 60_000, "types": ["other"]})
    )
    await until(lambda: gateway.feed.waiting == 1)
    anyone = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "a", "wait_ms": 60_000})
    )
    await until(lambda: gateway.feed.waiting == 2)
    created = await asyncio.to_thread(elsewhere.create_task, task_spec({"prompt": "one"}))
    response = await asyncio.wait_for(anyone, GUARD_S)
    assert response.json()["task"]["id"] == created.task.id
    assert response.json()["task"]["lease_owner"] == "a"
    other = await asyncio.to_thread(
        elsewhere.create_task, task_spec({"prompt": "two", "type": "other"})
    )
    response = await asyncio.wait_for(picky, GUARD_S)
    assert response.json()["task"]["id"] == other.task.id
