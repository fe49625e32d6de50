"""``LocalQueueClient``: the queue client over an in-process :class:`QueueService`.

Used by ``loop run "<prompt>"`` and ``loop run-job`` when no gateway runs. The service
is synchronous (and SQLite calls cost microseconds), so each call runs in a worker
thread to keep the event loop free for the agent's stream. Waiting for work is done
on the event loop, woken by the service's work-ready notifications, so a waiting
lease can be cancelled at once and never leases a task after its caller gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from loops.queue.artifacts import ArtifactKind
from loops.queue.steps import Step
from loops.queue.tasks import CompletionOutcome, LeasedTask, Task
from loops.services.queue import CompletionInput, QueueService
from loops.worker.client import Completion, CompletionAnswer, HeartbeatAnswer

T = TypeVar("T")


class LocalQueueClient:
    """A :class:`~loops.worker.client.QueueClient` calling a service in-process.

    Args:
        service: the opened queue service.
        agent_env: environment given to agents so that ``loop tasks:create-child``
            reaches the same queue (e.g. ``QUEUE_DB_PATH``).
        poll_ms: how often a waiting lease looks again for work that another process
            created or whose ``run_after`` passed (in-process creations wake it at once).
    """

    def __init__(
        self,
        service: QueueService,
        *,
        agent_env: Mapping[str, str] | None = None,
        poll_ms: int = 1_000,
    ) -> None:
        self.service = service
        self._agent_env = dict(agent_env or {})
        self._poll_s = poll_ms / 1000

    def agent_env(self) -> dict[str, str]:
        """The environment that points an agent at this queue."""
        return dict(self._agent_env)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    async def lease(
        self,
        *,
        worker: str,
        ttl_ms: int,
        wait_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """Lease ready tasks, waiting on the service's work-ready signal up to ``wait_ms``."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(ready.set)

        unsubscribe = self.service.subscribe(wake)
        deadline = loop.time() + wait_ms / 1000
        try:
            while True:
                ready.clear()
                leased = await self._call(
                    self.service.lease, worker=worker, ttl_ms=ttl_ms, limit=limit, types=types
                )
                remaining = deadline - loop.time()
                if leased or remaining <= 0:
                    return leased
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), timeout=min(remaining, self._poll_s))
        finally:
            unsubscribe()

    async def lease_task(self, task_id: int, *, worker: str, ttl_ms: int) -> LeasedTask:
        """Lease one given queued task."""
        return await self._call(self.service.lease_task, task_id, worker=worker, ttl_ms=ttl_ms)

    async def heartbeat(
        self, task_id: int, *, lease_token: str, ttl_ms: int, start: bool = False
    ) -> HeartbeatAnswer:
        """Extend the lease; report whether the task was cancelled."""
        beat = await self._call(
            self.service.heartbeat,
            task_id,
            lease_token=lease_token,
            ttl_ms=ttl_ms,
            status="running" if start else None,
        )
        return HeartbeatAnswer(cancel_requested=beat.cancel_requested)

    async def complete(self, completion: Completion) -> Task:
        """End the lease."""
        return await self._call(
            self.service.complete,
            completion.task_id,
            lease_token=completion.lease_token,
            status=completion.status,
            result=completion.result,
            error=completion.error,
            output=completion.output,
            usage=completion.usage,
        )

    async def complete_many(self, completions: Sequence[Completion]) -> list[CompletionAnswer]:
        """End many leases in one transaction."""
        outcomes = await self._call(self.service.complete_many, _inputs(completions))
        return _answers(outcomes)

    async def complete_and_lease(
        self,
        completions: Sequence[Completion],
        *,
        worker: str,
        ttl_ms: int,
        limit: int,
        types: Sequence[str] | None = None,
    ) -> tuple[list[CompletionAnswer], list[LeasedTask]]:
        """End many leases and lease the next batch in one transaction."""
        outcomes, leased = await self._call(
            self.service.complete_and_lease,
            _inputs(completions),
            worker=worker,
            ttl_ms=ttl_ms,
            limit=limit,
            types=types,
        )
        return _answers(outcomes), leased

    async def release(self, task_id: int, *, lease_token: str, reason: str) -> Task:
        """Give the lease back without charging an attempt."""
        return await self._call(
            self.service.release, task_id, lease_token=lease_token, reason=reason
        )

    async def get_task(self, task_id: int) -> Task:
        """One task."""
        return await self._call(self.service.get_task, task_id)

    async def append_events(
        self, task_id: int, events: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Append the batch in one transaction."""
        if events:
            await self._call(self.service.append_events, task_id, list(events))

    async def record_output(self, task_id: int, output: str) -> None:
        """Record STEP markers in ``output``."""
        await self._call(self.service.record_output, task_id, output)

    async def list_steps(self, task_id: int) -> list[Step]:
        """The task's steps."""
        return await self._call(self.service.list_steps, task_id)

    async def get_state(self, task_id: int, key: str) -> Any:
        """A checkpoint value."""
        return await self._call(self.service.get_state, key, task_id=task_id)

    async def put_state(self, task_id: int, key: str, value: Any) -> None:
        """Store a checkpoint value."""
        await self._call(self.service.put_state, key, value, task_id=task_id)

    async def store_artifact(
        self, task_id: int, *, name: str, kind: ArtifactKind, content: bytes
    ) -> None:
        """Store an artifact."""
        await self._call(
            self.service.store_artifact, task_id, name=name, kind=kind, content=content
        )

    async def aclose(self) -> None:
        """Nothing to release: the service belongs to the caller."""


def _inputs(completions: Sequence[Completion]) -> list[CompletionInput]:
    return [
        CompletionInput(c.task_id, c.lease_token, c.status, c.result, c.error, c.output, c.usage)
        for c in completions
    ]


def _answers(outcomes: Sequence[CompletionOutcome]) -> list[CompletionAnswer]:
    return [
        CompletionAnswer(
            task_id=o.task_id,
            task=o.task,
            error=None if o.error is None else str(o.error),
            code=None if o.error is None else getattr(o.error, "code", "error"),
        )
        for o in outcomes
    ]
