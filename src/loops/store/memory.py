"""An in-memory store for unit tests and demos: the full contract, no durability.

Thread-safe: one re-entrant lock serialises every operation, and a write that raises
is rolled back to a snapshot taken when it began, so a failed operation changes
nothing, as in a database transaction.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import ClassVar

from loops import errors
from loops.queue.artifacts import Artifact
from loops.queue.events import Event, EventDraft
from loops.queue.responsibilities import Responsibility
from loops.queue.steps import Step, StepMarker
from loops.queue.tasks import Task, TaskCounts, TaskStatus
from loops.store.shared import UnitStore, _new_nonce, created_event, stop_key


@dataclasses.dataclass
class _Data:
    tasks: dict[int, Task] = dataclasses.field(default_factory=dict)
    keys: dict[str, int] = dataclasses.field(default_factory=dict)
    children: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    events: list[Event] = dataclasses.field(default_factory=list)
    steps: dict[tuple[int, str], Step] = dataclasses.field(default_factory=dict)
    state: dict[tuple[int, str], str] = dataclasses.field(default_factory=dict)
    artifacts: dict[int, Artifact] = dataclasses.field(default_factory=dict)
    responsibilities: dict[str, Responsibility] = dataclasses.field(default_factory=dict)
    next_task_id: int = 1
    next_event_id: int = 1
    next_artifact_id: int = 1

    def snapshot(self) -> _Data:
        return _Data(
            tasks=dict(self.tasks),
            keys=dict(self.keys),
            children={k: list(v) for k, v in self.children.items()},
            events=list(self.events),
            steps=dict(self.steps),
            state=dict(self.state),
            artifacts=dict(self.artifacts),
            responsibilities=dict(self.responsibilities),
            next_task_id=self.next_task_id,
            next_event_id=self.next_event_id,
            next_artifact_id=self.next_artifact_id,
        )


class _MemoryUnit:
    """The :class:`~loops.store.shared.Unit` primitives over plain dicts."""

    def __init__(self, data: _Data) -> None:
        self.d = data

    def get_task(self, task_id: int) -> Task | None:
        return self.d.tasks.get(task_id)

    def task_by_key(self, key: str) -> Task | None:
        task_id = self.d.keys.get(key)
        return None if task_id is None else self.d.tasks[task_id]

    def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        return [self.d.tasks[i] for i in task_ids if i in self.d.tasks]

    def with_active_children(self, task_ids: Sequence[int]) -> set[int]:
        return {
            i
            for i in task_ids
            if any(self.d.tasks[c].status.is_active for c in self.d.children.get(i, []))
        }

    def insert_task(self, task: Task) -> Task:
        stored = dataclasses.replace(task, id=self.d.next_task_id)
        self.d.next_task_id += 1
        self.d.tasks[stored.id] = stored
        if stored.idempotency_key is not None:
            self.d.keys[stored.idempotency_key] = stored.id
        if stored.parent_id is not None:
            self.d.children.setdefault(stored.parent_id, []).append(stored.id)
        self.add_event(stored.created_at, created_event(stored))
        return stored

    def save_tasks(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self.d.tasks[task.id] = task

    def add_event(self, now: datetime, draft: EventDraft) -> Event:
        event = Event(
            self.d.next_event_id, now, draft.type, draft.task_id, copy.deepcopy(draft.data)
        )
        self.d.next_event_id += 1
        self.d.events.append(event)
        return event

    def add_events(self, now: datetime, drafts: Sequence[EventDraft]) -> None:
        for draft in drafts:
            self.add_event(now, draft)

    def ready_tasks(self, now: datetime, limit: int, types: Sequence[str] | None) -> list[Task]:
        ready = [
            t
            for t in self.d.tasks.values()
            if t.status is TaskStatus.QUEUED
            and t.run_after <= now
            and (types is None or t.type in types)
        ]
        ready.sort(key=lambda t: (t.priority, t.id))
        return ready[:limit]

    def expired_tasks(self, now: datetime, limit: int) -> list[Task]:
        expired = [
            t
            for t in self.d.tasks.values()
            if t.status.is_held and t.lease_expires_at is not None and t.lease_expires_at <= now
        ]
        expired.sort(key=lambda t: (t.lease_expires_at, t.id))
        return expired[:limit]

    def has_work(self, now: datetime, types: Sequence[str] | None) -> bool:
        return bool(self.ready_tasks(now, 1, types) or self.expired_tasks(now, 1))

    def children(self, parent_id: int) -> list[tuple[int, TaskStatus]]:
        return [(cid, self.d.tasks[cid].status) for cid in self.d.children.get(parent_id, [])]

    def list_tasks(
        self,
        status: TaskStatus | None,
        parent_id: int | None,
        task_type: str | None,
        limit: int,
        before_id: int | None,
    ) -> list[Task]:
        out = []
        for task_id in sorted(self.d.tasks, reverse=True):
            task = self.d.tasks[task_id]
            if before_id is not None and task_id >= before_id:
                continue
            if status is not None and task.status is not status:
                continue
            if parent_id is not None and task.parent_id != parent_id:
                continue
            if task_type is not None and task.type != task_type:
                continue
            out.append(task)
            if len(out) >= limit:
                break
        return out

    def count_related(self, task_id: int) -> TaskCounts:
        return TaskCounts(
            steps=sum(1 for tid, _ in self.d.steps if tid == task_id),
            children=len(self.d.children.get(task_id, [])),
            artifacts=sum(1 for a in self.d.artifacts.values() if a.task_id == task_id),
        )

    def delete_oldest_events(self, before: datetime, limit: int) -> int:
        oldest = self.d.events[:limit]
        kept = [e for e in oldest if e.ts >= before]
        self.d.events[:limit] = kept
        return len(oldest) - len(kept)

    def events(self, after_id: int | None, limit: int, task_id: int | None) -> list[Event]:
        events = self.d.events
        if after_id is not None:
            start = bisect.bisect_right([e.id for e in events], after_id)
            selected = [e for e in events[start:] if task_id is None or e.task_id == task_id]
            return selected[:limit]
        selected = [e for e in events if task_id is None or e.task_id == task_id]
        return selected[-limit:] if limit else []

    def upsert_step(self, task_id: int, marker: StepMarker, now: datetime) -> Step:
        existing = self.d.steps.get((task_id, marker.idempotency_key))
        step = Step(
            task_id=task_id,
            name=marker.name,
            status=marker.status,
            idempotency_key=marker.idempotency_key,
            note=marker.note,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
        self.d.steps[(task_id, marker.idempotency_key)] = step
        return step

    def steps(self, task_id: int) -> list[Step]:
        return [s for (tid, _), s in self.d.steps.items() if tid == task_id]

    def get_state(self, task_id: int, key: str) -> str | None:
        return self.d.state.get((task_id, key))

    def put_state(self, task_id: int, key: str, value_json: str, now: datetime) -> None:
        self.d.state[(task_id, key)] = value_json

    def insert_artifact(self, artifact: Artifact) -> Artifact:
        stored = dataclasses.replace(artifact, id=self.d.next_artifact_id)
        self.d.next_artifact_id += 1
        self.d.artifacts[stored.id] = stored
        return stored

    def artifacts(self, task_id: int | None, limit: int) -> list[Artifact]:
        out = [
            a
            for _, a in sorted(self.d.artifacts.items(), reverse=True)
            if task_id is None or a.task_id == task_id
        ]
        return out[:limit]

    def get_artifact(self, artifact_id: int) -> Artifact | None:
        return self.d.artifacts.get(artifact_id)

    def responsibilities(self) -> list[Responsibility]:
        return [self.d.responsibilities[n] for n in sorted(self.d.responsibilities)]

    def save_responsibility(self, resp: Responsibility) -> None:
        self.d.responsibilities[resp.name] = resp

    def counts_by_status(self) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        for task in self.d.tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    def held_by(self, owner: str) -> list[Task]:
        return [t for t in self.d.tasks.values() if t.status.is_held and t.lease_owner == owner]

    def is_stopped(self, owner: str) -> bool:
        return (0, stop_key(owner)) in self.d.state

    def mark_stopped(self, owner: str, now: datetime, forget_before: datetime) -> None:
        self.d.state[(0, stop_key(owner))] = "true"

    def clear_stopped(self, owner: str) -> None:
        self.d.state.pop((0, stop_key(owner)), None)

    def held_tasks(self, limit: int) -> list[Task]:
        held = [t for t in self.d.tasks.values() if t.status.is_held]
        held.sort(key=lambda t: (t.lease_expires_at, t.id))
        return held[:limit]

    def recent_failures(self, limit: int) -> list[Task]:
        failed = [
            t for t in self.d.tasks.values() if t.status in (TaskStatus.FAILED, TaskStatus.BLOCKED)
        ]
        failed.sort(key=lambda t: (t.finished_at or t.updated_at, t.id), reverse=True)
        return failed[:limit]


class MemoryStore(UnitStore):
    """The store contract in memory (tests, demos); nothing survives the process."""

    backend: ClassVar[str] = "memory"
    supports_notify: ClassVar[bool] = False
    supports_multiprocess: ClassVar[bool] = False
    serial_writes: ClassVar[bool] = True  # one lock over the data

    def __init__(self, *, nonce: Callable[[], str] = _new_nonce) -> None:
        super().__init__(nonce=nonce)
        self._lock = threading.RLock()
        self._data = _Data()
        self._blobs: dict[str, bytes] = {}
        self._migrated = False

    def migrate(self) -> list[str]:
        with self._lock:
            if self._migrated:
                return []
            self._migrated = True
            return ["memory"]

    def is_new(self) -> bool:
        return not self._migrated

    def pending_migrations(self) -> list[str]:
        return [] if self._migrated else ["memory"]

    @contextlib.contextmanager
    def _write(self, *, synced: bool = True) -> Iterator[_MemoryUnit]:
        with self._lock:
            before = self._data.snapshot()
            try:
                yield _MemoryUnit(self._data)
            except BaseException:
                self._data = before
                raise

    @contextlib.contextmanager
    def _read(self) -> Iterator[_MemoryUnit]:
        with self._lock:
            yield _MemoryUnit(self._data)

    def _write_blob(self, sha256: str, content: bytes) -> str:
        with self._lock:
            self._blobs[sha256] = bytes(content)
        return f"memory:{sha256}"

    def _read_blob(self, path: str) -> bytes:
        with self._lock:
            try:
                return self._blobs[path.removeprefix("memory:")]
            except KeyError as exc:
                raise errors.NotFound(f"artifact content {path} is missing") from exc
