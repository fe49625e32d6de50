"""Long-polling leases and the event stream: woken by changes, not by a poll interval.

The fallback poll is set to an hour here, so a waiting request can only come back in
time if a notification woke it; the ``wait_for`` guards only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

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
    assert bad.status_code == 422  # the header's pattern is in the OpenAPI document
    assert "Last-Event-ID" in bad.json()["error"]["message"]
    assert (await client.get("/events/stream", params={"after": -1})).status_code == 422
    assert (await client.get("/events/stream", params={"task_id": 999})).status_code == 404


async def test_the_waiters_gauge_counts_long_polls_not_streams(
    make_client: Callable[..., Any], gateway_of: Callable[[httpx.AsyncClient], Gateway]
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    streaming = asyncio.create_task(client.get("/events/stream"))
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "w", "wait_ms": 60_000})
    )
    await until(lambda: gw.feed.waiting == 2)
    assert "loops_lease_waiters 1.0" in (await client.get("/metrics")).text
    gw.begin_shutdown()
    await asyncio.wait_for(asyncio.gather(streaming, waiting), GUARD_S)
    assert "loops_lease_waiters 0.0" in (await client.get("/metrics")).text


async def test_the_line_is_served_in_order_without_a_lease_storm(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
    monkeypatch: Any,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    attempts: list[str] = []
    lease = service.lease

    def counting_lease(**kw: Any) -> Any:
        attempts.append(kw["worker"])
        return lease(**kw)

    monkeypatch.setattr(service, "lease", counting_lease)
    waiting = []
    for i in range(10):
        waiting.append(
            asyncio.create_task(
                client.post("/tasks/lease", json={"worker": f"w{i}", "wait_ms": 60_000})
            )
        )
        await until(lambda i=i: gw.leaser.waiting == i + 1)
    attempts.clear()
    await client.post("/tasks", json={"prompt": "one task"})
    first = await asyncio.wait_for(waiting[0], GUARD_S)
    assert first.status_code == 200  # the longest waiting worker got it
    await until(lambda: len(attempts) >= 2)
    await asyncio.sleep(0.05)  # room for a storm to show, were there one
    # one lease by the first in line, then only the next in line looks (once for the
    # in-process signal, maybe once more when the event-log probe sees the creation)
    assert attempts[0] == "w0"
    assert set(attempts[1:]) == {"w1"}
    assert len(attempts) <= 3
    assert not any(w.done() for w in waiting[1:])
    gw.begin_shutdown()
    rest = await asyncio.wait_for(asyncio.gather(*waiting[1:]), GUARD_S)
    assert {r.status_code for r in rest} == {204}


def leaving_lease(app: Any, left: asyncio.Event, sent: list[dict[str, Any]]) -> asyncio.Task[None]:
    """A raw ASGI lease request whose client disconnects when ``left`` is set."""
    body = json.dumps({"worker": "leaves", "wait_ms": 60_000}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/tasks/lease", "raw_path": b"/tasks/lease",
        "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    return asyncio.create_task(app(scope, receive, send))


async def test_a_client_that_leaves_is_not_given_a_task(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
) -> None:
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    left = asyncio.Event()
    sent: list[dict[str, Any]] = []
    request = leaving_lease(client.app, left, sent)  # type: ignore[attr-defined]
    await until(lambda: gw.leaser.waiting == 1)
    left.set()
    await asyncio.wait_for(request, GUARD_S)
    assert gw.leaser.waiting == 0
    created = (await client.post("/tasks", json={"prompt": "for someone present"})).json()
    await asyncio.sleep(0.05)
    assert service.get_task(created["id"]).status.value == "queued"
    assert sent[0]["status"] == 204


@pytest.mark.parametrize("source", ["this gateway", "another process"])
async def test_a_lease_granted_as_its_client_leaves_is_given_back(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    service: QueueService,
    clock: Callable[[], Any],
    monkeypatch: Any,
    source: str,
) -> None:
    # through this gateway the creating thread leases for the waiter (the hand-off);
    # a task from another process is leased by the line's sweep
    client = await make_client(fallback_poll_s=HOUR_S)
    gw = gateway_of(client)
    left = asyncio.Event()
    armed = threading.Event()
    serving = threading.Event()
    proceed = threading.Event()
    returned: list[str] = []
    lease = service.lease

    def slow_lease(**kw: Any) -> Any:
        if armed.is_set():
            serving.set()
            proceed.wait(GUARD_S)  # the client leaves while this lease is under way
        try:
            return lease(**kw)
        finally:
            returned.append(kw["worker"])

    monkeypatch.setattr(service, "lease", slow_lease)
    request = leaving_lease(client.app, left, [])  # type: ignore[attr-defined]
    await until(lambda: gw.leaser.waiting == 1)
    # its own first attempt, then the sweep after the feed's first look, are over
    await until(lambda: len(returned) == 2)
    await until(lambda: not any(w.serving for w in gw.leaser._line))
    armed.set()
    if source == "this gateway":
        creating = asyncio.create_task(client.post("/tasks", json={"prompt": "p"}))
    else:
        other = QueueService(service.store, service.settings, clock=clock, rng=random.Random(2))
        task_id = other.create_task(task_spec({"prompt": "p"})).task.id
    await asyncio.to_thread(serving.wait, GUARD_S)
    left.set()
    await asyncio.wait_for(request, GUARD_S)
    proceed.set()
    if source == "this gateway":
        created = await asyncio.wait_for(creating, GUARD_S)
        assert created.status_code == 201
        task_id = created.json()["id"]

    def kinds() -> list[str]:
        return [e.type for e in service.list_events(task_id=task_id)]

    await until(lambda: "task.released" in kinds())
    assert kinds() == ["task.created", "task.leased", "task.released"]
    task = service.get_task(task_id)
    assert (task.status.value, task.attempts) == ("queued", 0)


async def test_the_fallback_sweep_finds_an_expired_lease(
    make_client: Callable[..., Any],
    gateway_of: Callable[[httpx.AsyncClient], Gateway],
    clock: Any,
) -> None:
    # no event announces a lease that lapsed: the slow sweep reclaims and leases it
    client = await make_client(fallback_poll_s=0.01)
    gw = gateway_of(client)
    created = (await client.post("/tasks", json={"prompt": "p"})).json()
    await client.post("/tasks/lease", json={"worker": "crashed", "ttl_ms": 100})
    waiting = asyncio.create_task(
        client.post("/tasks/lease", json={"worker": "w", "wait_ms": 60_000})
    )
    await until(lambda: gw.leaser.waiting == 1)
    clock.advance(1000)
    response = await asyncio.wait_for(waiting, GUARD_S)
    assert response.json()["task"]["id"] == created["id"]
    assert response.json()["task"]["attempts"] == 2
