"""The queue as a worker sees it: one async protocol, two implementations.

:class:`QueueClient` is what the worker loop and the task runner call. Two classes
implement it: :class:`~loops.worker.http.HttpQueueClient` talks to a gateway over
REST (``loop worker``), :class:`~loops.worker.local.LocalQueueClient` calls the
in-process :class:`~loops.services.queue.QueueService` through a thread
(``loop run "<prompt>"`` and ``loop run-job`` without a gateway). Both raise the same
errors: :class:`~loops.errors.LeaseConflict` when a lease token is stale (the REST 409),
:class:`~loops.errors.TaskNotFound`, :class:`~loops.errors.InputError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from loops.queue.artifacts import ArtifactKind
from loops.queue.steps import Step
from loops.queue.tasks import LeasedTask, Task
from loops.usage import Usage

#: the state key under which the worker checkpoints a task's progress
CHECKPOINT_KEY = "worker.checkpoint"


@dataclasses.dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """What a heartbeat tells the worker.

    Attributes:
        cancel_requested: the task was cancelled; stop its agent and do not complete.
    """

    cancel_requested: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """One task's end, as the worker reports it.

    Attributes:
        task_id: the task.
        lease_token: the lease it holds.
        status: ``done``, ``failed``, ``blocked`` or ``retry``.
        result: why it is done (the passing verdicts).
        error: why it failed or is blocked.
        output: agent output scanned for STEP markers.
        usage: tokens and cost of this attempt.
        waiting_on: with ``waiting_children``, the child task ids the turn saw active.
    """

    task_id: int
    lease_token: str
    status: str
    result: str | None = None
    error: str | None = None
    output: str | None = None
    usage: Usage | None = None
    waiting_on: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionAnswer:
    """One item's answer in a batch completion: the task, or why it was refused."""

    task_id: int
    task: Task | None = None
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the completion was applied."""
        return self.error is None


class QueueClient(Protocol):
    """The operations a worker needs from the queue (see the module docstring)."""

    #: how the agent reaches the queue: ``LOOP_API_BASE_URL`` and friends
    def agent_env(self) -> dict[str, str]:
        """Environment variables that let the agent reach this queue."""
        ...

    async def lease(
        self,
        *,
        worker: str,
        ttl_ms: int,
        wait_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """Lease up to ``limit`` ready tasks, waiting up to ``wait_ms`` for one."""
        ...

    async def lease_task(self, task_id: int, *, worker: str, ttl_ms: int) -> LeasedTask:
        """Lease one given queued task."""
        ...

    async def heartbeat(
        self, task_id: int, *, lease_token: str, ttl_ms: int, start: bool = False
    ) -> HeartbeatAnswer:
        """Extend a lease (``start``: mark the task running)."""
        ...

    async def complete(self, completion: Completion) -> Task:
        """End a lease; raises LeaseConflict for a stale token."""
        ...

    async def complete_many(self, completions: Sequence[Completion]) -> list[CompletionAnswer]:
        """End many leases in one call, answered item by item."""
        ...

    async def complete_and_lease(
        self,
        completions: Sequence[Completion],
        *,
        worker: str,
        ttl_ms: int,
        limit: int,
        types: Sequence[str] | None = None,
    ) -> tuple[list[CompletionAnswer], list[LeasedTask]]:
        """End many leases and lease up to ``limit`` ready tasks in the same call (no
        waiting): a busy worker's steady state, one request per batch."""
        ...

    async def release(self, task_id: int, *, lease_token: str, reason: str) -> Task:
        """Give a lease back unfinished, without charging an attempt."""
        ...

    async def stop_worker(self, worker: str, *, holding: Sequence[str]) -> list[int]:
        """Say ``worker`` stopped: it is refused new leases, and its leases other than
        ``holding`` (tokens) are given back; returns the ids of the tasks given back."""
        ...

    async def start_worker(self, worker: str) -> None:
        """Say ``worker`` starts: clears a stop mark left under its name."""
        ...

    async def get_task(self, task_id: int) -> Task:
        """One task."""
        ...

    async def cancel_task(self, task_id: int, *, reason: str) -> Task:
        """Cancel a task and its active children.

        Raises InvalidTransition when it already finished.
        """
        ...

    async def create_child(self, parent_id: int, spec: Mapping[str, Any]) -> Task:
        """Create a child of ``parent_id`` from task fields (``type``, ``prompt``, ...).

        With an ``idempotency_key`` already used, the existing task is returned.
        Raises LimitExceeded past the queue's depth or children limit.
        """
        ...

    async def append_events(
        self, task_id: int, events: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> None:
        """Append a batch of events about a task to the timeline."""
        ...

    async def record_output(self, task_id: int, output: str) -> None:
        """Record the STEP markers found in ``output``."""
        ...

    async def list_steps(self, task_id: int) -> list[Step]:
        """The steps recorded for a task."""
        ...

    async def get_state(self, task_id: int, key: str) -> Any:
        """A task's checkpoint value, or ``None``."""
        ...

    async def put_state(self, task_id: int, key: str, value: Any) -> None:
        """Store a task's checkpoint value."""
        ...

    async def store_artifact(
        self, task_id: int, *, name: str, kind: ArtifactKind, content: bytes
    ) -> None:
        """Store an artifact of a task."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
