"""Tasks: the unit of queued work, its status, its lease and the records around it."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loops import errors
from loops.usage import Usage

if TYPE_CHECKING:
    from loops.queue.steps import StepMarker

#: priority bounds: 1 is the most urgent
PRIORITY_MIN = 1
PRIORITY_MAX = 5
PRIORITY_DEFAULT = 3


class TaskStatus(enum.StrEnum):
    """Where a task is in its lifecycle; values are the database and API strings."""

    QUEUED = "queued"
    """Waiting to be leased (once ``run_after`` has passed)."""
    LEASED = "leased"
    """Held by a worker under a lease that has not started work yet."""
    RUNNING = "running"
    """Held by a worker that reported it is working on it."""
    WAITING_CHILDREN = "waiting_children"
    """Paused until its child tasks have finished (all of them; or, with ``wake_each``,
    the next one)."""
    WAITING_APPROVAL = "waiting_approval"
    """Paused at a human gate until someone approves or rejects; holds no lease."""
    DONE = "done"
    """Finished successfully."""
    FAILED = "failed"
    """Finished unsuccessfully (an explicit failure or attempts exhausted)."""
    BLOCKED = "blocked"
    """Cannot proceed: a child failed, or the worker reported it blocked."""
    CANCELLED = "cancelled"
    """Cancelled by a user, directly or through its parent."""

    @property
    def is_active(self) -> bool:
        """Whether the task may still change on its own (not finished)."""
        return self in ACTIVE_STATUSES

    @property
    def is_held(self) -> bool:
        """Whether a worker holds a lease on the task."""
        return self in (TaskStatus.LEASED, TaskStatus.RUNNING)


#: statuses of tasks that are not finished
ACTIVE_STATUSES: frozenset[TaskStatus] = frozenset(
    {
        TaskStatus.QUEUED,
        TaskStatus.LEASED,
        TaskStatus.RUNNING,
        TaskStatus.WAITING_CHILDREN,
        TaskStatus.WAITING_APPROVAL,
    }
)
#: statuses of finished tasks
FINISHED_STATUSES: frozenset[TaskStatus] = frozenset(TaskStatus) - ACTIVE_STATUSES


class CompletionStatus(enum.StrEnum):
    """How a worker ends its lease on a task."""

    DONE = "done"
    """The work succeeded."""
    FAILED = "failed"
    """The work failed for good."""
    BLOCKED = "blocked"
    """The work cannot proceed without outside help."""
    RETRY = "retry"
    """Try again later (with backoff) while attempts remain."""
    WAITING_APPROVAL = "waiting_approval"
    """The work paused at a human gate; it goes on once someone answers."""
    WAITING_CHILDREN = "waiting_children"
    """The work goes on in child tasks it created: run again as each of them finishes.

    Unlike ``done`` (which waits only while a child is still active, then is queued
    once all are done or blocked by one that is not), the task is queued again as soon
    as ANY child finishes, whatever its status, and at once when no child is active or
    one it waits on (``Completion.waiting_on``) finished before this completion; the
    attempt is given back, since the turn did not fail."""


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default clock)."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC text of ``moment`` with millisecond precision, or ``None``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a caller asks for when creating a task (validated by the service).

    Attributes mirror the task columns a caller may set; see :class:`Task`.
    """

    prompt: str
    type: str = "task"
    title: str = ""
    priority: int = PRIORITY_DEFAULT
    success: str | None = None
    check: str | None = None
    provider: str | None = None
    model: str | None = None
    cwd: str | None = None
    max_iterations: int | None = None
    min_tests: int | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None
    responsibility: str | None = None
    run_after: datetime | None = None


@dataclasses.dataclass(frozen=True)  # no slots: evolve() copies __dict__ in one call
class Task:
    """One task row (DESIGN section 2). Times are aware UTC datetimes.

    Attributes:
        id: store-assigned, increasing integer id.
        type: free-form kind (``task``, ``maintenance``, ``loop``...).
        title: short human label.
        prompt: what the agent is asked to do.
        success: success criteria for a judge, if any.
        check: deterministic check command, if any.
        provider: engine name (``claude``, ``codex``, ``mock``...), if chosen.
        model: model name for the engine, if chosen.
        cwd: working directory for the agent, if chosen.
        max_iterations: converge-loop iteration limit, if chosen.
        min_tests: vacuous-pass guard for the check, if chosen.
        priority: 1 (most urgent) to 5.
        status: lifecycle status.
        attempts: leases taken so far.
        max_attempts: leases allowed before an expiry or retry fails the task.
        lease_owner: the worker holding (or last holding) the lease.
        lease_token: the fencing token of the current (or last) lease.
        lease_expires_at: when the current lease lapses.
        run_after: the task is not leased before this time.
        parent_id: the parent task, for a child task.
        depth: 0 for a root task, parent depth + 1 for a child.
        idempotency_key: unique creation key, if given.
        responsibility: the responsibility that dispatched the task, if any.
        result: final summary of a done task.
        error: why a task failed or is blocked.
        usage: tokens and cost summed over its attempts.
        created_at: creation time.
        updated_at: time of the last change.
        finished_at: when it reached a finished status.
        wake_each: it waits for its children as a ``waiting_children`` completion
            asked: queued again as each child finishes, whatever its status (not only
            once all did; a failed child does not block it).
    """

    id: int
    type: str
    title: str
    prompt: str
    success: str | None
    check: str | None
    provider: str | None
    model: str | None
    cwd: str | None
    max_iterations: int | None
    min_tests: int | None
    priority: int
    status: TaskStatus
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_token: str | None
    lease_expires_at: datetime | None
    run_after: datetime
    parent_id: int | None
    depth: int
    idempotency_key: str | None
    responsibility: str | None
    result: str | None
    error: str | None
    usage: Usage
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    wake_each: bool = False

    def definition_dict(self) -> dict[str, Any]:
        """What the task asks (id to priority): the fields every JSON form shares."""
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "prompt": self.prompt,
            "success": self.success,
            "check": self.check,
            "provider": self.provider,
            "model": self.model,
            "cwd": self.cwd,
            "max_iterations": self.max_iterations,
            "min_tests": self.min_tests,
            "priority": self.priority,
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API and ``--json`` output."""
        return {
            **self.definition_dict(),
            "status": self.status.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "lease_owner": self.lease_owner,
            "lease_expires_at": iso(self.lease_expires_at),
            "run_after": iso(self.run_after),
            "parent_id": self.parent_id,
            "depth": self.depth,
            "idempotency_key": self.idempotency_key,
            "responsibility": self.responsibility,
            "result": self.result,
            "error": self.error,
            "usage": self.usage.to_dict(),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "finished_at": iso(self.finished_at),
            "wake_each": self.wake_each,
        }


_TASK_FIELDS: tuple[str, ...] = ()  # filled below, after the class exists
_TASK_FIELD_SET: frozenset[str] = frozenset()


_new_object = object.__new__
#: the usage of a task that has not run (frozen: every new task shares it)
_NO_USAGE = Usage()
_QUEUED = TaskStatus.QUEUED


def evolve(task: Task, **changes: Any) -> Task:
    """``task`` with ``changes`` applied: ``dataclasses.replace`` at a tenth of the cost.

    The lease and complete paths build a few tasks per task; a frozen dataclass's
    ``__init__`` sets its 29 fields one ``object.__setattr__`` at a time, while this
    copies the instance dict in one call. Unknown field names raise ``TypeError``.
    """
    if not _TASK_FIELD_SET.issuperset(changes):
        unknown = ", ".join(sorted(set(changes) - _TASK_FIELD_SET))
        raise TypeError(f"Task has no field(s) {unknown}")
    new = _new_object(Task)
    state = new.__dict__
    state.update(task.__dict__)
    state.update(changes)
    return new


def _from_fields(**fields: Any) -> Task:
    new = _new_object(Task)
    new.__dict__.update(fields)
    return new


def task_from_values(values: Sequence[Any]) -> Task:
    """A task from its field values in declaration order (the stores' fast path)."""
    new = _new_object(Task)
    new.__dict__.update(zip(_TASK_FIELDS, values, strict=True))
    return new


def new_task(
    spec: TaskSpec,
    *,
    now: datetime,
    max_attempts: int,
    depth: int = 0,
    parent_id: int | None = None,
    task_id: int = 0,
) -> Task:
    """A queued task built from ``spec``; its id is ``task_id`` (0 until the store assigns one).

    Copies the fields every new task starts with from one prepared dict, then sets the
    others (the create path runs this for every task: a 30-entry dict display cost 15,000
    instructions, twice this; a 30-keyword call half as much again).
    """
    new = _new_object(Task)
    state = new.__dict__
    state.update(_NEW_TASK_STATE)  # every field, in declaration order
    state["id"] = task_id
    state["type"] = spec.type
    state["title"] = spec.title
    state["prompt"] = spec.prompt
    state["success"] = spec.success
    state["check"] = spec.check
    state["provider"] = spec.provider
    state["model"] = spec.model
    state["cwd"] = spec.cwd
    state["max_iterations"] = spec.max_iterations
    state["min_tests"] = spec.min_tests
    state["priority"] = spec.priority
    state["max_attempts"] = spec.max_attempts or max_attempts
    state["run_after"] = spec.run_after or now
    state["parent_id"] = parent_id
    state["depth"] = depth
    state["idempotency_key"] = spec.idempotency_key
    state["responsibility"] = spec.responsibility
    state["created_at"] = now
    state["updated_at"] = now
    return new


_TASK_FIELDS = tuple(field.name for field in dataclasses.fields(Task))
#: a new task's fields: ``new_task`` sets the ``None`` ones it takes from its arguments
_NEW_TASK_STATE: dict[str, Any] = dict.fromkeys(_TASK_FIELDS)
_NEW_TASK_STATE.update(status=_QUEUED, attempts=0, usage=_NO_USAGE, wake_each=False)
_TASK_FIELD_SET = frozenset(_TASK_FIELDS)


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on a task until ``expires_at``.

    Attributes:
        token: the fencing token; heartbeat and complete must present it.
        owner: the worker that holds the lease.
        expires_at: when the lease lapses unless extended by a heartbeat.
        attempt: the task's attempt number this lease belongs to (increasing per task).
    """

    token: str
    owner: str
    expires_at: datetime
    attempt: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API."""
        return {
            "token": self.token,
            "owner": self.owner,
            "expires_at": iso(self.expires_at),
            "attempt": self.attempt,
        }


def lease_of(task: Task) -> Lease:
    """The lease currently recorded on ``task`` (which must hold one)."""
    if task.lease_token is None or task.lease_owner is None or task.lease_expires_at is None:
        raise ValueError(f"task {task.id} holds no lease")
    # positional: every leased task gets one (keywords cost a fifth more)
    return Lease(task.lease_token, task.lease_owner, task.lease_expires_at, task.attempts)


@dataclasses.dataclass(frozen=True, slots=True)
class LeasedTask:
    """A task together with the lease just granted on it."""

    task: Task
    lease: Lease

    def to_dict(self) -> dict[str, Any]:
        """``{"task": ..., "lease": ...}`` as the REST API answers a lease."""
        return {"task": self.task.to_dict(), "lease": self.lease.to_dict()}

    def to_lean_dict(self, *, time_text: Callable[[datetime], str | None] = iso) -> dict[str, Any]:
        """One flat object with what a worker needs to run the task (``"form": "lean"``).

        The task's definition, its attempt counts and the lease's token and expiry; not
        what a just-leased task has by definition (status ``leased``, the caller as
        owner, no result, error or finish time) nor its bookkeeping (usage, update
        time, idempotency key, responsibility). ``time_text`` writes its times
        (:func:`iso`; :func:`lean_dicts` passes one that remembers).
        """
        task = self.task
        return {
            **task.definition_dict(),
            "attempts": task.attempts,
            "max_attempts": task.max_attempts,
            "parent_id": task.parent_id,
            "depth": task.depth,
            "created_at": time_text(task.created_at),
            "token": self.lease.token,
            "expires_at": time_text(self.lease.expires_at),
        }


def lean_dicts(leased: Sequence[LeasedTask]) -> list[dict[str, Any]]:
    """:meth:`LeasedTask.to_lean_dict` of many leases, each distinct time written once.

    A batch's leases share their expiry and tasks created in the same millisecond their
    creation time; writing a time costs more than looking it up (about 1.3 µs), and a
    busy gateway writes two per lease granted.
    """
    texts: dict[datetime, str | None] = {}

    def time_text(moment: datetime) -> str | None:
        text = texts.get(moment)
        if text is None:
            text = texts[moment] = iso(moment)
        return text

    return [item.to_lean_dict(time_text=time_text) for item in leased]


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """The answer to a heartbeat.

    Attributes:
        task: the task after the heartbeat.
        lease: the (extended) lease.
        cancel_requested: the task was cancelled; the worker should stop its agent.
    """

    task: Task
    lease: Lease
    cancel_requested: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API."""
        return {
            "task": self.task.to_dict(),
            "lease": self.lease.to_dict(),
            "cancel_requested": self.cancel_requested,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """How a worker ends its lease (validated by the service).

    Attributes:
        status: done, failed, blocked, retry or waiting_approval.
        result: final summary (for done).
        error: why it failed, is blocked or is retried.
        usage: tokens and cost of this attempt; added to the task's total.
        jitter: a random number in [0, 1) for the retry backoff (drawn by the caller).
        waiting_on: with ``waiting_children``, the children the turn saw active: if one
            of them finished since, the task is queued again at once (no finish between
            the turn's read and this completion is missed).
    """

    status: CompletionStatus
    result: str | None = None
    error: str | None = None
    usage: Usage | None = None
    jitter: float = 0.5
    waiting_on: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionOutcome:
    """One item's answer in a batch completion: the task, or the error it met."""

    task_id: int
    task: Task | None = None
    error: errors.LoopsError | None = None

    @property
    def ok(self) -> bool:
        """Whether the completion was applied."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "ok", "task"}`` or ``{"id", "ok", "error": {"code", "message"}}``."""
        if self.error is not None:
            return {
                "id": self.task_id,
                "ok": False,
                "error": {"code": self.error.code, "message": self.error.message},
            }
        return {"id": self.task_id, "ok": True, "task": self.task.to_dict() if self.task else None}


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One item of a (batch) completion: which task, with which token, how.

    Attributes:
        task_id: the task to complete.
        token: the lease token presented.
        completion: how the lease ends.
        steps: STEP markers parsed from the output, recorded in the same transaction.
    """

    task_id: int
    token: str
    completion: Completion
    steps: tuple[StepMarker, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class TaskCounts:
    """How many steps, children and artifacts a task has (``loop tasks:get``)."""

    steps: int
    children: int
    artifacts: int
