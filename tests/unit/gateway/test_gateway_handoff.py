"""A task created through the gateway is leased for a waiting request by the creating thread.

The fallback sweep and the event-log probe are set to an hour, so only the hand-off
(or the in-process wake-up) can answer a waiting lease in time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx

from loops import errors
from loops.gateway.state import Gateway
from loops.services.queue import QueueService

HOUR_S = 3600.0
GUARD_S = 30.0


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the event loop until ``predicate()`` holds."""
    async with asyncio.timeout(GUARD_S):
        while not predicate():
            await asyncio.sleep(0.001)


class Line:
    """Lease requests put in the gateway's waiting line, each left with no attempt under way.

    A waiter is quiet once its own first attempt and, for the first waiter, the sweep
    that the feed's first look at the event log starts have returned; a create racing
    with that sweep would be served by it rather than handed over.
    """

    def __init__(self, client: httpx.AsyncClient, gw: Gateway, monkeypatch: Any) -> None:
        self.client, self.gw = client, gw
        self.returned: list[str] = []
        self.granted: list[str] = []
        lease = gw.service.lease

        def counted(**kw: Any) -> Any:
            leased = lease(**kw)
            self.returned.append(kw["worker"])
            if leased:
                self.granted.append(kw["worker"])
            return leased

        monkeypatch.setattr(gw.service, "lease", counted)

    async def join(self, worker: str, **body: Any) -> asyncio.Task[Any]:
        first = self.gw.leaser.waiting == 0
        request = asyncio.create_task(
            self.client.post("/tasks/lease", json={"worker": worker, "wait_ms": 60_000, **body})
        )
        await until(lambda: self.returned.count(worker) == (2 if first else 1))
        await until(lambda: not any(w.serving for w in self.gw.leaser._line))
        return request


async def test_the_waiting_lease_is_granted_before_the_create_answers(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    line = Line(client, gateway_of(client), monkeypatch)
    waiting = await line.join("idle")
    created = await client.post("/tasks", json={"prompt": "new work"})
    assert line.granted == ["idle"]  # already, when the create answers
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.json()["task"]["id"] == created.json()["id"]
    assert response.json()["lease"]["owner"] == "idle"


async def test_a_created_child_is_handed_over_too(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    parent = (await client.post("/tasks", json={"prompt": "parent"})).json()
    await client.post("/tasks/lease", json={"worker": "parent's worker"})
    line = Line(client, gateway_of(client), monkeypatch)
    waiting = await line.join("idle")
    child = (await client.post(f"/tasks/{parent['id']}/children", json={"prompt": "c"})).json()
    assert line.granted == ["idle"]
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.json()["task"]["id"] == child["id"]


async def test_a_waiter_for_other_types_is_passed_over_and_keeps_waiting(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    line = Line(client, gateway_of(client), monkeypatch)
    reviewer = await line.join("reviewer", types=["review"])
    anyone = await line.join("anyone")
    task = (await client.post("/tasks", json={"prompt": "p", "type": "build"})).json()
    assert line.granted == ["anyone"]
    response = await asyncio.wait_for(anyone, GUARD_S)
    assert response.json()["task"]["id"] == task["id"]
    assert not reviewer.done()
    review = (await client.post("/tasks", json={"prompt": "p", "type": "review"})).json()
    response = await asyncio.wait_for(reviewer, GUARD_S)
    assert response.json()["task"]["id"] == review["id"]


async def test_a_create_that_fails_or_finds_its_key_leaves_the_waiter_in_its_place(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    line = Line(client, gateway_of(client), monkeypatch)
    first = await line.join("first")
    second = await line.join("second")
    missing = await client.post("/tasks/999/children", json={"prompt": "orphan"})
    assert missing.status_code == 404
    once = (await client.post("/tasks", json={"prompt": "once", "idempotency_key": "k"})).json()
    assert line.granted == ["first"]  # the failed create kept the first waiter's place
    response = await asyncio.wait_for(first, GUARD_S)
    assert response.json()["task"]["id"] == once["id"]
    again = await client.post("/tasks", json={"prompt": "once", "idempotency_key": "k"})
    assert again.status_code == 200  # nothing new for the second waiter
    assert line.granted == ["first"] and not second.done()
    task = (await client.post("/tasks", json={"prompt": "next"})).json()
    response = await asyncio.wait_for(second, GUARD_S)
    assert response.json()["task"]["id"] == task["id"]


async def test_a_hand_off_lease_that_fails_answers_the_waiter_not_the_creator(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    line = Line(client, gateway_of(client), monkeypatch)
    waiting = await line.join("unlucky")

    def broken_lease(**kw: Any) -> Any:
        raise errors.StoreUnavailable("the disk went away")

    monkeypatch.setattr(service, "lease", broken_lease)
    created = await client.post("/tasks", json={"prompt": "p"})
    assert created.status_code == 201
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 503
    assert "the disk went away" in response.json()["error"]["message"]
    assert service.get_task(created.json()["id"]).status.value == "queued"


async def test_a_stopping_gateway_gives_back_a_lease_handed_over_meanwhile(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    gw = gateway_of(client)
    line = Line(client, gw, monkeypatch)
    waiting = await line.join("w")
    lease = service.lease
    loop = asyncio.get_running_loop()

    def lease_as_the_gateway_stops(**kw: Any) -> Any:
        leased = lease(**kw)
        # the waiting requests are answered (204) while this lease is under way
        asyncio.run_coroutine_threadsafe(gw.leaser.stop(), loop).result(GUARD_S)
        return leased

    monkeypatch.setattr(service, "lease", lease_as_the_gateway_stops)
    created = (await client.post("/tasks", json={"prompt": "p"})).json()
    assert line.granted == ["w"]
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 204

    def kinds() -> list[str]:
        return [e.type for e in service.list_events(task_id=created["id"])]

    await until(lambda: "task.released" in kinds())
    assert kinds() == ["task.created", "task.leased", "task.released"]
    assert service.get_task(created["id"]).status.value == "queued"


async def test_the_event_log_probe_looks_at_a_create_only_for_streams(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
    monkeypatch: Any,
) -> None:
    # a lease waiter gets this gateway's task without the probe; a stream reader is
    # shown it at once by a look the create asks for (the probe's period is an hour)
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    gw = gateway_of(client)
    looks: list[int] = []
    list_events = service.list_events

    def counted(**kw: Any) -> Any:
        if threading.current_thread().name == "loops-event-feed":
            looks.append(1)
        return list_events(**kw)

    monkeypatch.setattr(service, "list_events", counted)
    line = Line(client, gw, monkeypatch)
    waiting = await line.join("idle")
    await until(lambda: len(looks) > 0)  # the probe's first looks, then an hour's sleep
    await asyncio.sleep(0.05)
    seen = len(looks)
    await client.post("/tasks", json={"prompt": "p"})
    await asyncio.wait_for(waiting, GUARD_S)
    await asyncio.sleep(0.05)  # room for a look to show, were there one
    assert len(looks) == seen
    streaming = asyncio.create_task(client.get("/events/stream"))
    await until(lambda: gw.feed.waiting == 1)
    seen = len(looks)
    await client.post("/tasks", json={"prompt": "q"})
    await until(lambda: len(looks) > seen)
    gw.begin_shutdown()
    await asyncio.wait_for(streaming, GUARD_S)
