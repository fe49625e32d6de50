"""One implementation of the store's operations over small per-backend primitives.

A backend provides a :class:`Unit` (the row-level primitives inside one transaction)
through :meth:`UnitStore._write` and :meth:`UnitStore._read`; the operations here
apply :mod:`loops.queue.lifecycle` transitions through it. So the memory, SQLite and
(later) PostgreSQL stores share every rule and differ only in how rows are kept.

For PostgreSQL: ``_write`` is one transaction; ``ready_tasks`` and ``expired_tasks``
select ``FOR UPDATE SKIP LOCKED`` (so concurrent leasers skip each other's rows instead
of serialising on one lock as SQLite does); ``get_tasks`` and ``get_task`` inside a
write select ``FOR UPDATE``; ``supports_notify`` is true and a create or requeue
issues ``NOTIFY``. The contract suite (``tests/integration``) takes it with one more
fixture parameter.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from loops import errors
from loops.queue import approvals, lifecycle
from loops.queue import responsibilities as resp_mod
from loops.queue.artifacts import Artifact, ArtifactKind
from loops.queue.backoff import Backoff
from loops.queue.events import Event, EventDraft, EventType
from loops.queue.responsibilities import Responsibility, ResponsibilityDef
from loops.queue.steps import Step, StepMarker
from loops.queue.summary import StatusSummary
from loops.queue.tasks import (
    FINISHED_STATUSES,
    Completion,
    CompletionOutcome,
    CompletionRequest,
    CompletionStatus,
    Heartbeat,
    LeasedTask,
    Task,
    TaskCounts,
    TaskSpec,
    TaskStatus,
    lease_of,
    new_task,
)
from loops.store.base import Dispatch, Store

#: expired leases reclaimed per lease call (the rest on the next call or tick)
RECLAIM_BATCH = 100
#: events deleted per transaction when pruning
PRUNE_BATCH = 5_000
#: how long a worker's stop mark is kept (a worker never comes back under a name
#: that stopped this long ago, unless it announces itself with ``start_worker``)
STOP_MARK_KEEP = timedelta(days=1)


class Unit(Protocol):
    """Row-level primitives of one backend inside one transaction."""

    def get_task(self, task_id: int) -> Task | None:
        """The task, or ``None``."""

    def task_by_key(self, key: str) -> Task | None:
        """The task with this idempotency key, or ``None``."""

    def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        """The tasks among ``task_ids`` that exist, in any order."""

    def with_active_children(self, task_ids: Sequence[int]) -> set[int]:
        """Those of ``task_ids`` that have at least one active child."""

    def insert_task(self, task: Task) -> Task:
        """Insert ``task`` (id 0) and its ``task.created`` event (:func:`created_event`,
        at the task's ``created_at``); return the task with its new id."""

    def save_tasks(self, tasks: Sequence[Task]) -> None:
        """Write the mutable columns of existing tasks."""

    def add_events(self, now: datetime, drafts: Sequence[EventDraft]) -> None:
        """Append events."""

    def add_event(self, now: datetime, draft: EventDraft) -> Event:
        """Append one event and return it."""

    def ready_tasks(self, now: datetime, limit: int, types: Sequence[str] | None) -> list[Task]:
        """Queued tasks with ``run_after <= now``, by priority then age."""

    def expired_tasks(self, now: datetime, limit: int) -> list[Task]:
        """Leased or running tasks whose lease lapsed by ``now``."""

    def has_work(self, now: datetime, types: Sequence[str] | None) -> bool:
        """Whether a lease at ``now`` would find a ready task or an expired lease."""

    def children(self, parent_id: int) -> list[tuple[int, TaskStatus]]:
        """``(id, status)`` of every child."""

    def held_by(self, owner: str) -> list[Task]:
        """The leased or running tasks ``owner`` holds, locked; where leases run in
        parallel (PostgreSQL), first waits for ``owner``'s leases in flight."""

    def is_stopped(self, owner: str) -> bool:
        """Whether ``owner`` is marked stopped (PostgreSQL: holding ``owner``'s gate
        shared until commit, so that a stop waits for this transaction)."""

    def mark_stopped(self, owner: str, now: datetime, forget_before: datetime) -> None:
        """Mark ``owner`` stopped, forgetting marks last set before ``forget_before``."""

    def clear_stopped(self, owner: str) -> None:
        """Remove ``owner``'s stop mark."""

    def list_tasks(
        self,
        status: TaskStatus | None,
        parent_id: int | None,
        task_type: str | None,
        limit: int,
        before_id: int | None,
    ) -> list[Task]:
        """Tasks newest first."""

    def count_related(self, task_id: int) -> TaskCounts:
        """Counts of steps, children and artifacts."""

    def events(self, after_id: int | None, limit: int, task_id: int | None) -> list[Event]:
        """Events in id order (see :meth:`Store.list_events`)."""

    def delete_oldest_events(self, before: datetime, limit: int) -> int:
        """Delete those of the ``limit`` oldest events (by id) written before ``before``;
        how many were deleted."""

    def upsert_step(self, task_id: int, marker: StepMarker, now: datetime) -> Step:
        """Insert or update the step of (task, key)."""

    def steps(self, task_id: int) -> list[Step]:
        """Steps of a task."""

    def get_state(self, task_id: int, key: str) -> str | None:
        """JSON text under (task or 0, key)."""

    def put_state(self, task_id: int, key: str, value_json: str, now: datetime) -> None:
        """Store JSON text under (task or 0, key)."""

    def insert_artifact(self, artifact: Artifact) -> Artifact:
        """Insert an artifact record (id 0) and return it with its id."""

    def artifacts(self, task_id: int | None, limit: int) -> list[Artifact]:
        """Artifacts newest first."""

    def get_artifact(self, artifact_id: int) -> Artifact | None:
        """One artifact, or ``None``."""

    def responsibilities(self) -> list[Responsibility]:
        """All responsibilities by name."""

    def save_responsibility(self, resp: Responsibility) -> None:
        """Insert or replace one responsibility."""

    def counts_by_status(self) -> dict[TaskStatus, int]:
        """Number of tasks per status."""

    def held_tasks(self, limit: int) -> list[Task]:
        """Leased or running tasks, soonest expiry first."""

    def recent_failures(self, limit: int) -> list[Task]:
        """Failed or blocked tasks, most recently finished first."""


#: the reason recorded on leases given back by :meth:`UnitStore.stop_worker`
STOPPED_REASON = "the worker stopped without taking this lease"


def stop_key(owner: str) -> str:
    """The global state key of ``owner``'s stop mark."""
    return f"worker.stopped:{owner}"


def stopped_error(owner: str) -> errors.WorkerStopped:
    """The refusal of a lease to a worker marked stopped."""
    return errors.WorkerStopped(
        f"worker {owner!r} has stopped, so no task is leased to it; a worker starting "
        "again under that name clears this with POST /workers/{name}/start "
        "(`loop worker` does so itself)"
    )


def _new_nonce() -> str:
    return secrets.token_hex(8)


def _new_nonces(count: int) -> list[str]:
    """``count`` nonces drawn as :func:`_new_nonce` draws one (8 random bytes, in hex),
    from one read of the system's random source instead of one system call each."""
    text = os.urandom(8 * count).hex()
    return [text[i : i + 16] for i in range(0, 16 * count, 16)]


def created_event(task: Task) -> EventDraft:
    """The ``task.created`` event of a stored task."""
    data: dict[str, Any] = {"type": task.type, "priority": task.priority}
    if task.parent_id is not None:
        data["parent_id"] = task.parent_id
    if task.responsibility is not None:
        data["responsibility"] = task.responsibility
    return EventDraft(EventType.TASK_CREATED.value, task.id, data)


@dataclasses.dataclass(slots=True)
class CompletionPlan:
    """A batch of completions decided on one read of its tasks, not yet stored.

    Attributes:
        found: the ids of the batch's tasks that exist.
        busy: which of ``found`` had an active child when read.
        answers: per request, in order, its transition (``None``: no such task) and error.
        changes: each transition to store, with the task as it was read before it.
    """

    found: list[int]
    busy: set[int]
    answers: list[tuple[lifecycle.Transition | None, errors.LoopsError | None]] = dataclasses.field(
        default_factory=list
    )
    changes: list[tuple[Task, lifecycle.Transition]] = dataclasses.field(default_factory=list)


class UnitStore(Store):
    """The store operations, written once over :class:`Unit` primitives."""

    def __init__(self, *, nonce: Callable[[], str] = _new_nonce) -> None:
        self._nonce = nonce

    # -- what a backend provides --------------------------------------------------

    @abc.abstractmethod
    def _write(self, *, synced: bool = True) -> contextlib.AbstractContextManager[Unit]:
        """A write transaction (serialised against other writers).

        Args:
            synced: whether the commit waits until the disk has it, where the store is
                configured to (``False`` only where losing the transaction to a power
                cut is harmless: see :meth:`lease_next`).
        """

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Unit]:
        """A consistent read."""

    def _lease_work(self, now: datetime, types: Sequence[str] | None) -> tuple[bool, bool]:
        """Whether a lease at ``now`` may find work: ``(work, reclaiming)``.

        ``work``: a task of ``types`` may be ready, or a lease expired (a hint: the
        write decides); ``reclaiming``: some lease expired by ``now`` (the lease then
        reclaims, synced).
        A read outside the writer lock; backends may answer it in one statement.
        """
        with self._read() as unit:
            reclaiming = bool(unit.expired_tasks(now, 1))
            return reclaiming or unit.has_work(now, types), reclaiming

    @abc.abstractmethod
    def _write_blob(self, sha256: str, content: bytes) -> str:
        """Store content under its hash (idempotent); return its storage path."""

    @abc.abstractmethod
    def _read_blob(self, path: str) -> bytes:
        """Content stored by :meth:`_write_blob`."""

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _require(unit: Unit, task_id: int) -> Task:
        task = unit.get_task(task_id)
        if task is None:
            raise errors.TaskNotFound(f"no task with id {task_id}")
        return task

    def _apply(
        self, unit: Unit, now: datetime, transitions: Sequence[lifecycle.Transition]
    ) -> None:
        """Store changed tasks and their events, then roll up affected parents."""
        changed = [t for t in transitions if t.changed]
        if not changed:
            return
        unit.save_tasks([t.task for t in changed])
        unit.add_events(now, [e for t in changed for e in t.events])
        self._roll_ups(unit, now, changed)

    def _roll_ups(self, unit: Unit, now: datetime, changed: Sequence[lifecycle.Transition]) -> None:
        """Roll up the parents that stored ``changed`` transitions may have finished."""
        finished: dict[int, list[int]] = {}  # parent id -> its children that just finished
        waiting: list[int] = []
        for t in changed:
            task = t.task
            if task.parent_id is not None and task.status in FINISHED_STATUSES:
                finished.setdefault(task.parent_id, []).append(task.id)
            elif task.status is TaskStatus.WAITING_CHILDREN:
                waiting.append(task.id)
        # a task that just began waiting may have no active child left: wake it now
        for task_id in waiting:
            finished.setdefault(task_id, [])
        for parent_id in sorted(finished):  # parents locked in id order: no deadlock
            self._roll_up(unit, parent_id, now, finished[parent_id])

    def _roll_up(self, unit: Unit, parent_id: int, now: datetime, finished: list[int]) -> None:
        parent = unit.get_task(parent_id)  # FOR UPDATE on PostgreSQL, like its completion
        if parent is None or parent.status is not TaskStatus.WAITING_CHILDREN:
            return
        children = unit.children(parent_id)
        if not parent.wake_each and any(status.is_active for _, status in children):
            return
        bad = [cid for cid, status in children if status is not TaskStatus.DONE]
        notes = {
            t.id: f"{t.title or t.type}: {t.error or 'no error recorded'}"
            for t in unit.get_tasks([] if parent.wake_each else bad)
        }
        transition = lifecycle.children_finished(
            parent, children=children, now=now, notes=notes, finished=finished
        )
        self._apply(unit, now, [transition])

    @staticmethod
    def _finished_children(unit: Unit, task: Task, completion: Completion) -> frozenset[int]:
        """Which of the children ``completion`` waits on (``waiting_on``) finished."""
        if completion.status is not CompletionStatus.WAITING_CHILDREN or not completion.waiting_on:
            return frozenset()
        return frozenset(
            t.id
            for t in unit.get_tasks(list(completion.waiting_on))
            if t.parent_id == task.id and t.status in FINISHED_STATUSES
        )

    def _reclaim(self, unit: Unit, now: datetime, limit: int) -> list[Task]:
        transitions = [lifecycle.reclaim(t, now=now) for t in unit.expired_tasks(now, limit)]
        self._apply(unit, now, transitions)
        return [t.task for t in transitions if t.changed]

    # -- tasks ----------------------------------------------------------------------

    def create_task(self, spec: TaskSpec, *, now: datetime, max_attempts: int) -> tuple[Task, bool]:
        with self._write() as unit:
            if spec.idempotency_key is not None:
                existing = unit.task_by_key(spec.idempotency_key)
                if existing is not None:
                    return existing, False
            task = new_task(spec, now=now, max_attempts=max_attempts)
            return unit.insert_task(task), True

    def create_child(
        self,
        parent_id: int,
        spec: TaskSpec,
        *,
        now: datetime,
        max_attempts: int,
        max_depth: int,
        max_children: int,
    ) -> tuple[Task, bool]:
        with self._write() as unit:
            parent = self._require(unit, parent_id)
            if spec.idempotency_key is not None:
                existing = unit.task_by_key(spec.idempotency_key)
                if existing is not None:
                    return existing, False
            admit = lifecycle.add_child(
                parent,
                now=now,
                child_count=len(unit.children(parent_id)),
                max_depth=max_depth,
                max_children=max_children,
            )
            if admit.error is not None:
                raise admit.error
            child = unit.insert_task(
                new_task(
                    spec,
                    now=now,
                    max_attempts=max_attempts,
                    depth=parent.depth + 1,
                    parent_id=parent.id,
                )
            )
            unit.add_events(
                now, [EventDraft(EventType.CHILD_CREATED.value, parent.id, {"child_id": child.id})]
            )
            self._apply(unit, now, [admit])
            return child, True

    def get_task(self, task_id: int) -> Task:
        with self._read() as unit:
            return self._require(unit, task_id)

    def list_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        parent_id: int | None = None,
        task_type: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Task]:
        with self._read() as unit:
            if parent_id is not None:
                self._require(unit, parent_id)
            return unit.list_tasks(status, parent_id, task_type, limit, before_id)

    def count_related(self, task_id: int) -> TaskCounts:
        with self._read() as unit:
            self._require(unit, task_id)
            return unit.count_related(task_id)

    def lease_next(
        self,
        *,
        now: datetime,
        owner: str,
        ttl_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """Lease up to ``limit`` ready tasks; a commit that only leases is not synced.

        A lease need not survive a power cut, so its commit does not wait for the disk
        (``_write(synced=False)``: SQLite's ``synchronous=NORMAL`` for that one
        commit). What a cut can take back is then a lease, and nothing that relied on it:

        - the write-ahead log is one sequence, recovered as a prefix, and the next
          synced commit of anyone (a create, a completion, a heartbeat) syncs the
          leases written before it; so only leases younger than the last synced
          commit can be lost, and nothing durable was built on them;
        - a lost lease leaves the task as it was before it (queued, or held by an
          expired lease that the next lease reclaims): it is leased again, at least
          once, as after a lease that expired, without the lost attempt counted;
        - its token stays dead: a token is ``{id}.{attempt}.{nonce}`` with 64 random
          bits of nonce, so the lease granted again after the cut (with the same
          attempt number) has another token, and the old holder's heartbeat and
          completion are refused (409);
        - a lease that also reclaims expired leases (which may fail a task for good
          and wake its parent) is synced as usual. The read before the write decides
          that; should an expired lease appear in between, its reclaim goes unsynced,
          which is safe too (a lost reclaim is done again by the next lease or tick).

        The write reclaims only when that read saw an expired lease: one that appears
        in between is reclaimed by the next lease or tick instead, as if this lease had
        been granted a moment earlier (``now`` is the same for the read and the write,
        so only another writer can make a lease expired at ``now`` in between).
        """
        # idle pollers answer from a read, without queueing for the writer lock
        work, reclaiming = self._lease_work(now, types)
        if not work:
            return []
        # drawn before the writer lock: with several worker processes, whatever runs
        # inside it runs one process at a time, whatever runs outside runs in parallel
        nonces = (
            _new_nonces(limit)
            if self._nonce is _new_nonce
            else [self._nonce() for _ in range(limit)]
        )
        with self._write(synced=reclaiming) as unit:
            if unit.is_stopped(owner):
                raise stopped_error(owner)
            if reclaiming:
                self._reclaim(unit, now, RECLAIM_BATCH)
            transitions = [
                lifecycle.lease(t, now=now, owner=owner, ttl_ms=ttl_ms, nonce=nonce)
                for t, nonce in zip(unit.ready_tasks(now, limit, types), nonces, strict=False)
            ]
            if transitions:
                unit.save_tasks([t.task for t in transitions])
                unit.add_events(now, [e for t in transitions for e in t.events])
        return [LeasedTask(t.task, lease_of(t.task)) for t in transitions]

    def stop_worker(self, owner: str, *, now: datetime, holding: Sequence[str] = ()) -> list[Task]:
        keep = set(holding)
        with self._write() as unit:
            held = unit.held_by(owner)  # first: waits for this owner's leases in flight
            unit.mark_stopped(owner, now, now - STOP_MARK_KEEP)
            transitions = [
                lifecycle.release(t, token=t.lease_token, now=now, reason=STOPPED_REASON)
                for t in held
                if t.lease_token is not None and t.lease_token not in keep
            ]
            self._apply(unit, now, transitions)
        return [t.task for t in transitions if t.changed and t.error is None]

    def start_worker(self, owner: str, *, now: datetime) -> None:
        with self._write() as unit:
            unit.clear_stopped(owner)

    def lease_task(self, task_id: int, *, now: datetime, owner: str, ttl_ms: int) -> LeasedTask:
        with self._write() as unit:
            if unit.is_stopped(owner):
                raise stopped_error(owner)
            task = self._require(unit, task_id)
            back = lifecycle.reclaim(task, now=now)
            self._apply(unit, now, [back])
            transition = lifecycle.lease(
                back.task, now=now, owner=owner, ttl_ms=ttl_ms, nonce=self._nonce()
            )
            if transition.error is None:
                self._apply(unit, now, [transition])
        if transition.error is not None:
            raise transition.error
        return LeasedTask(transition.task, lease_of(transition.task))

    def heartbeat(
        self, task_id: int, *, token: str, now: datetime, ttl_ms: int, start: bool = False
    ) -> Heartbeat:
        with self._write() as unit:
            task = self._require(unit, task_id)
            transition = lifecycle.heartbeat(task, token=token, now=now, ttl_ms=ttl_ms, start=start)
            self._apply(unit, now, [transition])
        if transition.error is not None:
            raise transition.error
        new = transition.task
        return Heartbeat(
            task=new,
            lease=lease_of(dataclasses.replace(new, lease_expires_at=new.lease_expires_at or now)),
            cancel_requested=new.status is TaskStatus.CANCELLED,
        )

    def _plan_completions(
        self,
        unit: Unit,
        requests: Sequence[CompletionRequest],
        now: datetime,
        backoff: Backoff,
    ) -> CompletionPlan:
        """Decide every completion of a batch on one read of its tasks (stores nothing)."""
        ids = list({r.task_id for r in requests})
        current = {t.id: t for t in unit.get_tasks(ids)}
        found = list(current)
        busy = unit.with_active_children(found)
        plan = CompletionPlan(found=found, busy=busy)
        for request in requests:
            task = current.get(request.task_id)
            if task is None:
                missing = errors.TaskNotFound(f"no task with id {request.task_id}")
                plan.answers.append((None, missing))
                continue
            transition = lifecycle.complete(
                task,
                token=request.token,
                now=now,
                completion=request.completion,
                backoff=backoff,
                has_active_children=task.id in busy,
                finished_children=(
                    self._finished_children(unit, task, request.completion)
                    if request.completion.waiting_on
                    else frozenset()
                ),
            )
            if transition.changed:
                current[task.id] = transition.task
                plan.changes.append((task, transition))
            plan.answers.append((transition, transition.error))
        return plan

    def _store_completions(
        self,
        unit: Unit,
        requests: Sequence[CompletionRequest],
        plan: CompletionPlan,
        now: datetime,
        store: Callable[[], None] | None = None,
    ) -> list[tuple[lifecycle.Transition | None, errors.LoopsError | None]]:
        """Store ``plan`` (decided on ``requests``): steps, rows, events, roll-ups.

        ``store``, when given, writes the changed rows and their events in place of
        ``save_tasks`` and ``add_events`` (a backend's guarded write of a plan decided
        outside its writer lock; it raises to undo the transaction).
        """
        for request, (transition, error) in zip(requests, plan.answers, strict=True):
            if request.steps and transition is not None and error is None:
                self._record_steps(unit, transition.task.id, request.steps, now)
        transitions = [t for _, t in plan.changes]
        if store is None:
            self._apply(unit, now, transitions)
        else:
            store()
            self._roll_ups(unit, now, transitions)
        waiting = TaskStatus.WAITING_CHILDREN
        return [
            (t, e) if t is None or t.task.status is not waiting else (self._rolled_up(unit, t), e)
            for t, e in plan.answers
        ]

    def _complete_batch(
        self,
        unit: Unit,
        requests: Sequence[CompletionRequest],
        now: datetime,
        backoff: Backoff,
    ) -> list[tuple[lifecycle.Transition | None, errors.LoopsError | None]]:
        """Decide every completion of one transaction, then store them together."""
        plan = self._plan_completions(unit, requests, now, backoff)
        return self._store_completions(unit, requests, plan, now)

    def _completions(
        self, requests: Sequence[CompletionRequest], now: datetime, backoff: Backoff
    ) -> list[tuple[lifecycle.Transition | None, errors.LoopsError | None]]:
        """Apply a batch of completions in one write transaction (the answer of each)."""
        with self._write() as unit:
            return self._complete_batch(unit, requests, now, backoff)

    @staticmethod
    def _rolled_up(
        unit: Unit, transition: lifecycle.Transition | None
    ) -> lifecycle.Transition | None:
        """``transition`` with its task as stored, when storing it rolled a waiting task up."""
        if transition is None or transition.task.status is not TaskStatus.WAITING_CHILDREN:
            return transition
        stored = unit.get_task(transition.task.id)
        if stored is None or stored.status is TaskStatus.WAITING_CHILDREN:
            return transition
        return dataclasses.replace(transition, task=stored)

    def release(
        self, task_id: int, *, token: str, now: datetime, reason: str | None = None
    ) -> Task:
        with self._write() as unit:
            task = self._require(unit, task_id)
            transition = lifecycle.release(task, token=token, now=now, reason=reason)
            self._apply(unit, now, [transition])
        if transition.error is not None:
            raise transition.error
        return transition.task

    def complete(self, request: CompletionRequest, *, now: datetime, backoff: Backoff) -> Task:
        ((transition, error),) = self._completions([request], now, backoff)
        if error is not None:
            raise error
        assert transition is not None
        return transition.task

    def complete_many(
        self, requests: Sequence[CompletionRequest], *, now: datetime, backoff: Backoff
    ) -> list[CompletionOutcome]:
        if not requests:
            return []
        answers = self._completions(requests, now, backoff)
        return [
            CompletionOutcome(
                request.task_id, transition.task if transition is not None else None, error
            )
            for request, (transition, error) in zip(requests, answers, strict=True)
        ]

    def cancel(self, task_id: int, *, now: datetime, reason: str | None = None) -> list[Task]:
        with self._write() as unit:
            task = self._require(unit, task_id)
            first = lifecycle.cancel(task, now=now, reason=reason)
            if first.error is not None:
                raise first.error
            transitions = [first]
            frontier = [task_id]
            while frontier:
                parent = frontier.pop()
                for child_id, status in unit.children(parent):
                    frontier.append(child_id)
                    if status.is_active:
                        child = self._require(unit, child_id)
                        transitions.append(
                            lifecycle.cancel(child, now=now, reason=f"parent {task_id} cancelled")
                        )
            self._apply(unit, now, transitions)
            return [t.task for t in transitions]

    def requeue(self, task_id: int, *, now: datetime, reason: str | None = None) -> Task:
        with self._write() as unit:
            task = self._require(unit, task_id)
            transition = lifecycle.requeue(task, now=now, reason=reason)
            if transition.error is not None:
                raise transition.error
            self._apply(unit, now, [transition])
            return transition.task

    def answer_approval(self, task_id: int, answer: approvals.Answer, *, now: datetime) -> Task:
        import json

        with self._write() as unit:
            task = self._require(unit, task_id)
            transition = lifecycle.answer(
                task,
                now=now,
                path=answer.path,
                approved=answer.approved,
                by=answer.by,
                reason=answer.reason,
            )
            if transition.error is not None:
                raise transition.error
            saved = unit.get_state(task_id, approvals.APPROVALS_KEY)
            known = json.loads(saved) if saved is not None else {}
            document = {**(known if isinstance(known, dict) else {})}
            document[answer.path] = answer.record(at=now)
            unit.put_state(
                task_id, approvals.APPROVALS_KEY, json.dumps(document, sort_keys=True), now
            )
            self._apply(unit, now, [transition])
            return transition.task

    def reclaim_expired(self, *, now: datetime, limit: int = 1000) -> list[Task]:
        with self._write() as unit:
            return self._reclaim(unit, now, limit)

    # -- events ---------------------------------------------------------------------

    def append_event(
        self,
        type: str,
        *,
        now: datetime,
        task_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        with self._write() as unit:
            if task_id is not None:
                self._require(unit, task_id)
            return unit.add_event(now, EventDraft(type, task_id, dict(data or {})))

    def append_events(self, drafts: Sequence[EventDraft], *, now: datetime) -> int:
        if not drafts:
            return 0
        with self._write() as unit:
            for task_id in sorted({d.task_id for d in drafts if d.task_id is not None}):
                self._require(unit, task_id)
            unit.add_events(now, drafts)
        return len(drafts)

    def list_events(
        self, *, after_id: int | None = None, limit: int = 100, task_id: int | None = None
    ) -> list[Event]:
        with self._read() as unit:
            if task_id is not None:
                self._require(unit, task_id)
            return unit.events(after_id, limit, task_id)

    def prune_events(self, *, before: datetime, batch: int = PRUNE_BATCH) -> int:
        # Oldest first, one short write transaction per batch, so writers never wait
        # long; it stops at the first batch not wholly older than ``before``.
        deleted = 0
        while True:
            with self._write() as unit:
                count = unit.delete_oldest_events(before, batch)
            deleted += count
            if count < batch:
                return deleted

    # -- steps ----------------------------------------------------------------------

    @staticmethod
    def _record_steps(
        unit: Unit, task_id: int, markers: Sequence[StepMarker], now: datetime
    ) -> list[Step]:
        steps = [unit.upsert_step(task_id, marker, now) for marker in markers]
        unit.add_events(
            now,
            [
                EventDraft(
                    EventType.STEP_RECORDED.value,
                    task_id,
                    {
                        "name": s.name,
                        "status": s.status.value,
                        "idempotency_key": s.idempotency_key,
                    },
                )
                for s in steps
            ],
        )
        return steps

    def record_steps(
        self, task_id: int, markers: Sequence[StepMarker], *, now: datetime
    ) -> list[Step]:
        with self._write() as unit:
            self._require(unit, task_id)
            return self._record_steps(unit, task_id, markers, now)

    def list_steps(self, task_id: int) -> list[Step]:
        with self._read() as unit:
            self._require(unit, task_id)
            return unit.steps(task_id)

    # -- state ----------------------------------------------------------------------

    def get_state(self, key: str, *, task_id: int | None = None) -> Any:
        import json

        with self._read() as unit:
            if task_id is not None:
                self._require(unit, task_id)
            text = unit.get_state(task_id or 0, key)
        return None if text is None else json.loads(text)

    def put_state(self, key: str, value: Any, *, now: datetime, task_id: int | None = None) -> None:
        import json

        try:
            text = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise errors.InputError(f"state {key!r} is not JSON-serialisable: {exc}") from exc
        with self._write() as unit:
            if task_id is not None:
                self._require(unit, task_id)
            unit.put_state(task_id or 0, key, text, now)

    # -- artifacts ------------------------------------------------------------------

    def put_artifact(
        self, task_id: int, *, name: str, kind: ArtifactKind, content: bytes, now: datetime
    ) -> Artifact:
        with self._read() as unit:
            self._require(unit, task_id)
        sha = hashlib.sha256(content).hexdigest()
        path = self._write_blob(sha, content)
        with self._write() as unit:
            self._require(unit, task_id)
            artifact = unit.insert_artifact(
                Artifact(
                    id=0,
                    task_id=task_id,
                    name=name,
                    kind=kind,
                    size=len(content),
                    sha256=sha,
                    path=path,
                    created_at=now,
                )
            )
            unit.add_events(
                now,
                [
                    EventDraft(
                        EventType.ARTIFACT_STORED.value,
                        task_id,
                        {"artifact_id": artifact.id, "name": name, "kind": kind.value},
                    )
                ],
            )
            return artifact

    def list_artifacts(self, *, task_id: int | None = None, limit: int = 50) -> list[Artifact]:
        with self._read() as unit:
            if task_id is not None:
                self._require(unit, task_id)
            return unit.artifacts(task_id, limit)

    def get_artifact(self, artifact_id: int) -> Artifact:
        with self._read() as unit:
            artifact = unit.get_artifact(artifact_id)
        if artifact is None:
            raise errors.NotFound(f"no artifact with id {artifact_id}")
        return artifact

    def read_artifact(self, artifact_id: int) -> bytes:
        return self._read_blob(self.get_artifact(artifact_id).path)

    # -- responsibilities -----------------------------------------------------------

    def sync_responsibilities(
        self, definitions: Sequence[ResponsibilityDef], *, now: datetime
    ) -> list[Responsibility]:
        with self._write() as unit:
            stored = {r.name: r for r in unit.responsibilities()}
            wanted = {d.name: d for d in definitions}
            for name, definition in wanted.items():
                unit.save_responsibility(resp_mod.synced(stored.get(name), definition, now=now))
            for name, existing in stored.items():
                if name not in wanted and existing.enabled:
                    unit.save_responsibility(dataclasses.replace(existing, enabled=False))
            return unit.responsibilities()

    def list_responsibilities(self) -> list[Responsibility]:
        with self._read() as unit:
            return unit.responsibilities()

    def dispatch_due(self, *, now: datetime, max_attempts: int) -> list[Dispatch]:
        dispatched: list[Dispatch] = []
        with self._read() as unit:
            names = [r.name for r in unit.responsibilities() if r.enabled and r.next_due_at <= now]
        for name in names:
            with self._write() as unit:
                current = {r.name: r for r in unit.responsibilities()}.get(name)
                if current is None:
                    continue
                previous = (
                    unit.get_task(current.last_task_id)
                    if current.last_task_id is not None
                    else None
                )
                decision = resp_mod.decide(
                    current, now=now, previous_status=previous.status if previous else None
                )
                if decision is not resp_mod.DispatchDecision.DISPATCH:
                    continue
                task = unit.insert_task(
                    new_task(current.template.spec(name), now=now, max_attempts=max_attempts)
                )
                unit.save_responsibility(resp_mod.after_dispatch(current, now=now, task_id=task.id))
                unit.add_events(
                    now,
                    [
                        EventDraft(
                            EventType.RESPONSIBILITY_DISPATCHED.value,
                            task.id,
                            {"responsibility": name},
                        )
                    ],
                )
                dispatched.append(Dispatch(name, task))
        return dispatched

    # -- summary --------------------------------------------------------------------

    def status_summary(self, *, now: datetime, recent_failures: int = 10) -> StatusSummary:
        with self._read() as unit:
            return StatusSummary(
                counts=unit.counts_by_status(),
                leases=unit.held_tasks(100),
                responsibilities_due=[
                    r for r in unit.responsibilities() if r.enabled and r.next_due_at <= now
                ],
                recent_failures=unit.recent_failures(recent_failures),
            )


@contextlib.contextmanager
def nothing() -> Iterator[None]:
    """A context manager that does nothing (for backends without a read transaction)."""
    yield
