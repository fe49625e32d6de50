"""Long-polling leases and the event stream: woken by changes, not by a poll interval.

The fallback poll is set to an hour here, so a waiting request can only come back in
time if a notification woke it; the ``wait_for`` guards only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import httpx

from loops.gateway.state import Gateway
from loops.services.queue import QueueService, task_spec

HOUR_S = 3600.0
GUARD_S = 30.0


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the event loop until ``predicate()`` holds."""
    async with asyncio.timeout(GUARD_S):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_a_waiting_lease_gets_a_task_created_after_it_started_waiting(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S, probe_interval_s=HOUR_S)
    gw = gateway_of(client)
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "idle", "wait_ms": 60_000})
    )
    await until(lambda: gw.feed.waiting == 1)
    created = await client.post("/tasks", json={"prompt": "new work"})
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 200
    assert response.json()["task"]["id"] == created.json()["id"]
    assert gw.feed.waiting == 0


async def test_a_waiting_lease_sees_work_written_by_another_process(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
    clock: Callable[[], Any],
) -> None:
    # another service over the same store: no in-process notification reaches the app
    other = QueueService(service.store, service.settings, clock=clock, rng=random.Random(2))
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "idle", "wait_ms": 60_000})
    )
    await until(lambda: gw.feed.waiting == 1)
    created = other.create_task(task_spec({"prompt": "from the CLI"}))
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 200
    assert response.json()["task"]["id"] == created.task.id


async def test_a_retried_task_wakes_a_waiting_lease_when_its_backoff_ends(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    clock: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    await client.post("/tasks", json={"prompt": "flaky"})
    first = (await client.post("/tasks/lease", json={"worker": "w"})).json()
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "w", "wait_ms": 60_000})
    )
    await until(lambda: gw.feed.waiting == 1)
    retried = await client.post(
        f"/tasks/{first['task']['id']}/complete",
        json={"lease_token": first["lease"]["token"], "status": "retry"},
    )
    assert retried.json()["status"] == "queued"
    assert retried.json()["run_after"] > retried.json()["updated_at"]
    clock.advance(3_600_000)  # the queue's clock is past run_after; the wake-up timer
    # fires after the backoff's delay_ms of real time
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 200
    assert response.json()["task"]["attempts"] == 2


async def test_a_batch_lease_waits_for_the_first_task(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "w", "wait_ms": 60_000, "limit": 8})
    )
    await until(lambda: gw.feed.waiting == 1)
    await client.post("/tasks", json={"prompt": "one"})
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert len(response.json()["leases"]) == 1


async def test_waiting_leases_hold_no_threads(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    count = 60  # more than the thread pool's 40 threads
    waiting = [
        asyncio.create_task(
            client.post("/tasks/lease", json={"worker": f"w{i}", "wait_ms": 60_000})
        )
        for i in range(count)
    ]
    await until(lambda: gw.feed.waiting == count)
    health = await asyncio.wait_for(client.get("/healthz"), GUARD_S)
    assert health.json() == {"status": "ok", "store": "memory"}
    gw.begin_shutdown()
    answers = await asyncio.wait_for(asyncio.gather(*waiting), GUARD_S)
    assert {a.status_code for a in answers} == {204}


async def test_shutdown_answers_waiting_leases_204(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "w", "wait_ms": 60_000})
    )
    await until(lambda: gw.feed.waiting == 1)
    gw.begin_shutdown()
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.status_code == 204


def sse_events(text: str) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of each SSE message in ``text``."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":")
        )
        if "data" in fields:
            found.append((int(fields["id"]), json.loads(fields["data"])))
    return found


async def test_event_stream_sends_stored_then_live_events(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client()
    gw = gateway_of(client)
    first = (await client.post("/tasks", json={"prompt": "before"})).json()
    # in process the response arrives when the stream ends: end it by shutting down
    streaming = asyncio.create_task(client.get("/events/stream", params={"after": 0}))
    await until(lambda: gw.feed.waiting == 1)
    second = (await client.post("/tasks", json={"prompt": "during"})).json()
    await until(lambda: gw.feed.head >= 2)
    gw.begin_shutdown()
    response = await asyncio.wait_for(streaming, GUARD_S)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    events = sse_events(response.text)
    assert [(i, e["type"], e["task_id"]) for i, e in events] == [
        (1, "task.created", first["id"]),
        (2, "task.created", second["id"]),
    ]
    assert all(i == e["id"] for i, e in events)


async def test_event_stream_resumes_after_last_event_id(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client()
    gw = gateway_of(client)
    for prompt in ("a", "b", "c"):
        await client.post("/tasks", json={"prompt": prompt})
    streaming = asyncio.create_task(
        client.get("/events/stream", params={"after": 0}, headers={"Last-Event-ID": "2"})
    )
    await until(lambda: gw.feed.waiting == 1)
    gw.begin_shutdown()
    response = await asyncio.wait_for(streaming, GUARD_S)
    assert [i for i, _ in sse_events(response.text)] == [3]


async def test_event_stream_of_one_task_and_bad_positions(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client()
    gw = gateway_of(client)
    one = (await client.post("/tasks", json={"prompt": "one"})).json()
    await client.post("/tasks", json={"prompt": "two"})
    streaming = asyncio.create_task(
        client.get("/events/stream", params={"after": 0, "task_id": one["id"]})
    )
    await until(lambda: gw.feed.waiting == 1)
    gw.begin_shutdown()
    response = await asyncio.wait_for(streaming, GUARD_S)
    assert [e["task_id"] for _, e in sse_events(response.text)] == [one["id"]]
    bad = await client.get("/events/stream", headers={"Last-Event-ID": "abc"})
    assert bad.status_code == 400
    assert "Last-Event-ID" in bad.json()["error"]["message"]
    assert (await client.get("/events/stream", params={"after": -1})).status_code == 422
    assert (await client.get("/events/stream", params={"task_id": 999})).status_code == 404
