"""The HTTP queue client against the real gateway app (in process), and a worker over it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from loops import config, errors
from loops.queue.artifacts import ArtifactKind
from loops.queue.tasks import LeasedTask, TaskStatus
from loops.services.queue import QueueService, task_spec
from loops.worker.client import Completion
from loops.worker.http import HttpQueueClient
from loops.worker.options import WorkerOptions
from loops.worker.runner import TaskReport
from loops.worker.worker import Worker
from served_gateway import served


@pytest.fixture(params=["asgi", "socket"])
async def gateway(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[QueueService, HttpQueueClient]]:
    """The client in process (httpx's ASGI transport), or over a real socket (uvicorn;
    the hot calls go over :mod:`loops.worker.connections`)."""
    from loops.gateway.app import create_app

    settings = config.load_settings(env={"QUEUE_DB_PATH": str(tmp_path / "q.sqlite")}, cwd=tmp_path)
    service = QueueService.open(settings)
    app = create_app(service, settings)
    if request.param == "asgi":
        client = HttpQueueClient("http://gateway.test", transport=httpx.ASGITransport(app=app))
        async with app.router.lifespan_context(app):
            yield service, client
    else:
        async with served(app) as url:
            client = HttpQueueClient(url)
            yield service, client
    await client.aclose()
    service.close()


def create(service: QueueService, tmp_path: Path, **fields: object) -> int:
    data = {"prompt": "p", "cwd": str(tmp_path), **fields}
    return service.create_task(task_spec(data)).task.id


async def test_long_poll_lease_gets_a_task_created_while_waiting(gateway, tmp_path) -> None:
    service, client = gateway
    waiting = asyncio.ensure_future(client.lease(worker="w", ttl_ms=5_000, wait_ms=5_000))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    task_id = create(service, tmp_path)
    (leased,) = await asyncio.wait_for(waiting, 3)
    assert leased.task.id == task_id and leased.lease.token
    assert await client.lease(worker="w", ttl_ms=5_000, wait_ms=50) == []


async def test_create_a_task_and_a_child_through_the_client(gateway, tmp_path) -> None:
    service, client = gateway
    task = await client.create_task({"prompt": "p", "type": "fix", "cwd": str(tmp_path)})
    assert task == service.get_task(task.id) and task.type == "fix"
    spec = {"prompt": "c", "idempotency_key": "c1"}
    child = await client.create_child(task.id, spec)
    assert (await client.create_child(task.id, spec)).id == child.id
    assert (child.parent_id, child.depth) == (task.id, 1)
    with pytest.raises(errors.InputError, match="priority"):
        await client.create_task({"prompt": "p", "priority": 9})
    with pytest.raises(errors.TaskNotFound):
        await client.create_child(999, {"prompt": "c"})


async def test_stale_token_complete_is_a_conflict_and_changes_nothing(gateway, tmp_path) -> None:
    service, client = gateway
    task_id = create(service, tmp_path)
    (leased,) = await client.lease(worker="w", ttl_ms=5_000, wait_ms=0)
    with pytest.raises(errors.LeaseConflict):
        await client.complete(Completion(task_id, "1.1.stale", "done", result="no"))
    assert service.get_task(task_id).status is TaskStatus.LEASED
    done = await client.complete(Completion(task_id, leased.lease.token, "done", result="yes"))
    assert done.status is TaskStatus.DONE and done.result == "yes"


async def test_batch_lease_and_complete_answer_item_by_item(gateway, tmp_path) -> None:
    service, client = gateway
    ids = [create(service, tmp_path) for _ in range(3)]
    leased = await client.lease(worker="w", ttl_ms=5_000, wait_ms=0, limit=5)
    assert sorted(item.task.id for item in leased) == ids
    completions = [Completion(item.task.id, item.lease.token, "done") for item in leased]
    completions[1] = Completion(leased[1].task.id, "stale", "done")
    answers = await client.complete_many(completions)
    assert [a.ok for a in answers] == [True, False, True]
    assert answers[1].code == "lease_conflict"


async def test_a_dag_turn_over_http_waits_on_children_and_cancels_a_stale_one(
    gateway, tmp_path
) -> None:
    service, client = gateway
    parent_id = create(service, tmp_path)
    (turn,) = await client.lease(worker="w", ttl_ms=5_000, wait_ms=0)
    kids = [(await client.create_child(parent_id, {"prompt": f"k{i}"})).id for i in range(2)]
    await client.cancel_task(kids[0], reason="a kickback re-runs this node")
    assert service.get_task(kids[0]).status is TaskStatus.CANCELLED
    with pytest.raises(errors.InvalidTransition):  # finished already: nothing to stop
        await client.cancel_task(kids[0], reason="again")
    waiting = Completion(parent_id, turn.lease.token, "waiting_children", waiting_on=tuple(kids))
    woken = await client.complete(waiting)  # kids[0] finished after the turn saw it
    assert woken.status is TaskStatus.QUEUED and woken.wake_each


async def test_heartbeat_release_state_steps_events_and_artifacts(gateway, tmp_path) -> None:
    service, client = gateway
    task_id = create(service, tmp_path)
    leased = await client.lease_task(task_id, worker="w", ttl_ms=5_000)
    beat = await client.heartbeat(task_id, lease_token=leased.lease.token, ttl_ms=5_000, start=True)
    assert not beat.cancel_requested
    assert service.get_task(task_id).status is TaskStatus.RUNNING
    await client.put_state(task_id, "worker.checkpoint", {"iterations": 2})
    assert await client.get_state(task_id, "worker.checkpoint") == {"iterations": 2}
    await client.record_output(task_id, "STEP[a]: DONE idempotency=k1 note=n")
    assert [s.idempotency_key for s in await client.list_steps(task_id)] == ["k1"]
    await client.append_events(task_id, [("agent.text", {"text": str(i)}) for i in range(20)])
    texts = [e for e in service.list_events(task_id=task_id) if e.type == "agent.text"]
    assert len(texts) == 20
    await client.store_artifact(
        task_id, name="t.jsonl", kind=ArtifactKind.TRANSCRIPT, content=b"{}\n"
    )
    (artifact,) = service.list_artifacts(task_id=task_id)
    assert service.read_artifact(artifact.id) == b"{}\n"
    released = await client.release(task_id, lease_token=leased.lease.token, reason="stopping")
    assert released.status is TaskStatus.QUEUED and released.attempts == 0
    with pytest.raises(errors.LeaseConflict):
        await client.heartbeat(task_id, lease_token=leased.lease.token, ttl_ms=5_000)
    (again,) = await client.lease(worker="w2", ttl_ms=5_000, wait_ms=0)
    service.cancel(task_id)
    beat = await client.heartbeat(task_id, lease_token=again.lease.token, ttl_ms=5_000)
    assert beat.cancel_requested


async def test_a_worker_over_http_runs_prompt_tasks_to_done(gateway, tmp_path) -> None:
    service, client = gateway
    ids = [create(service, tmp_path, prompt=f"task {i}") for i in range(4)]
    options = WorkerOptions(name="w", provider="mock", concurrency=2, cwd=tmp_path, wait_ms=100)
    stats = await Worker(client, options).run(max_tasks=4)
    assert stats.completed == 4
    for task_id in ids:
        task = service.get_task(task_id)
        assert task.status is TaskStatus.DONE, task.error
        kinds = {a.kind for a in service.list_artifacts(task_id=task_id)}
        assert ArtifactKind.TRANSCRIPT in kinds


async def test_an_unreachable_gateway_is_one_clear_error() -> None:
    client = HttpQueueClient("http://127.0.0.1:9")
    with pytest.raises(errors.GatewayUnavailable, match="cannot reach the gateway"):
        await client.get_task(1)
    await client.aclose()


class CountingTransport(httpx.AsyncBaseTransport):
    """An ASGI transport that remembers each request's path and JSON body."""

    def __init__(self, app: object) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.requests: list[tuple[str, dict[str, object]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.requests.append((request.url.path, body))
        return await self.inner.handle_async_request(request)


async def test_a_busy_worker_leases_its_next_batch_with_each_completion(tmp_path) -> None:
    from loops.gateway.app import create_app

    settings = config.load_settings(env={"QUEUE_DB_PATH": str(tmp_path / "q.sqlite")}, cwd=tmp_path)
    service = QueueService.open(settings)
    ids = [create(service, tmp_path, prompt=f"task {i}") for i in range(40)]
    app = create_app(service, settings)
    transport = CountingTransport(app)
    client = HttpQueueClient("http://gateway.test", transport=transport)
    running, most = 0, 0

    async def handler(leased: LeasedTask) -> TaskReport:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1
        return TaskReport("done", result=f"ran {leased.task.id}")

    options = WorkerOptions(name="w", concurrency=8, cwd=tmp_path, wait_ms=50)
    async with app.router.lifespan_context(app):
        stats = await Worker(client, options, handler=handler).run(max_tasks=40)
    await client.aclose()
    assert stats.leased == stats.completed == 40
    assert most <= 8
    assert all(service.get_task(i).status is TaskStatus.DONE for i in ids)
    leases = [body for path, body in transport.requests if path == "/tasks/lease"]
    completes = [body for path, body in transport.requests if path == "/tasks/complete"]
    # the first batch came from a lease; after that, completions carried the next leases
    assert len(leases) < 40 / 8
    assert sum(1 for body in completes if "lease" in body) >= 3
    assert all(body["form"] == "lean" for body in leases + completes)
    service.close()
