"""The task state machine: every lifecycle decision, as pure functions over values.

Each function takes a task (and plain values: the time, a token, counts) and returns a
:class:`Transition`: the task as it must be stored, the events to append, and possibly
an error the caller raises *after* storing the change (an expired lease is reclaimed
even though the heartbeat that found it is refused). Stores apply transitions inside
one transaction; they never decide a status themselves.

::

    queued --lease--> leased --start--> running --complete--> done | failed | blocked
    leased|running --lease expires--> queued (attempts < max_attempts) | failed
    leased|running --release--> queued (the attempt is given back)
    running --complete(retry)--> queued with run_after = backoff (attempts < max)
    parent gets an active child --> waiting_children
    all children finished: all done -> parent queued; any other -> parent blocked
    running --complete(waiting_children)--> waiting_children (wake_each), or queued at
        once when no child is active or one it waits on finished meanwhile
    waiting_children (wake_each) --any child finishes, whatever its status--> queued
    running --complete(waiting_approval)--> waiting_approval (no lease held)
    waiting_approval --answer--> queued (approved or rejected: the run goes on with it)
    queued|leased|running|waiting_* --cancel--> cancelled (children too)
    failed|blocked --requeue--> queued (an operator's retry: attempts start over)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

from loops import errors
from loops.queue.backoff import Backoff
from loops.queue.events import EventDraft, EventType
from loops.queue.tasks import (
    Completion,
    CompletionStatus,
    Task,
    TaskStatus,
    evolve,
)

_replace = evolve
_MS = timedelta(milliseconds=1)


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one lifecycle decision.

    Attributes:
        task: the task as it must now be stored (the same object when unchanged).
        events: events to append, in order.
        error: raised by the caller after storing ``task`` and ``events``.
    """

    task: Task
    events: tuple[EventDraft, ...] = ()
    error: errors.LoopsError | None = None
    dirty: bool = False

    @property
    def changed(self) -> bool:
        """Whether anything must be stored (any event, or ``dirty`` for an event-less
        change such as a lease extension)."""
        return self.dirty or bool(self.events)


def _refuse(task: Task, error: errors.LoopsError) -> Transition:
    return Transition(task=task, error=error)


def _event(kind: EventType, task: Task, **data: object) -> EventDraft:
    return EventDraft(kind._value_, task.id, data)  # not .value: enum property, 3x the cost


def is_expired(task: Task, *, now: datetime) -> bool:
    """Whether ``task`` is held under a lease that lapsed before ``now``."""
    return (
        task.status.is_held and task.lease_expires_at is not None and task.lease_expires_at <= now
    )


def lease(task: Task, *, now: datetime, owner: str, ttl_ms: int, nonce: str) -> Transition:
    """Lease a queued task to ``owner`` for ``ttl_ms``; counts an attempt.

    The token is ``{task id}.{attempt}.{nonce}``: the attempt number makes it a fencing
    token that grows with every lease of the task; the nonce makes it unguessable.
    Expired leases must be reclaimed (:func:`reclaim`) before a task can be leased again.
    """
    if task.status is not TaskStatus.QUEUED:
        return _refuse(
            task,
            errors.InvalidTransition(
                f"task {task.id} is {task.status.value}; only a queued task can be leased"
            ),
        )
    attempt = task.attempts + 1
    expires = now + _MS * ttl_ms  # a product, not timedelta(milliseconds=...): 1/3 the cost
    new = _replace(
        task,
        status=TaskStatus.LEASED,
        attempts=attempt,
        lease_owner=owner,
        lease_token=f"{task.id}.{attempt}.{nonce}",
        lease_expires_at=expires,
        updated_at=now,
    )
    return Transition(new, (_event(EventType.TASK_LEASED, new, worker=owner, attempt=attempt),))


def reclaim(task: Task, *, now: datetime) -> Transition:
    """Take back a task whose lease lapsed: queued again, or failed when out of attempts.

    A task that is not held under an expired lease is returned unchanged.
    """
    if not is_expired(task, now=now):
        return Transition(task)
    expired = _event(
        EventType.TASK_LEASE_EXPIRED, task, worker=task.lease_owner, attempt=task.attempts
    )
    if task.attempts >= task.max_attempts:
        message = (
            f"lease of {task.lease_owner} expired on attempt {task.attempts} "
            f"of {task.max_attempts}; no attempts left"
        )
        new = _replace(
            task,
            status=TaskStatus.FAILED,
            lease_expires_at=None,
            error=message,
            updated_at=now,
            finished_at=now,
        )
        return Transition(new, (expired, _event(EventType.TASK_FAILED, new, error=message)))
    new = _replace(task, status=TaskStatus.QUEUED, lease_expires_at=None, updated_at=now)
    return Transition(new, (expired,))


def _check_lease(task: Task, *, token: str, now: datetime) -> Transition | None:
    """``None`` when ``token`` is the live lease of ``task``; otherwise the refusal."""
    if task.lease_token != token:
        return _refuse(
            task,
            errors.LeaseConflict(
                f"lease token for task {task.id} is not its current lease "
                "(it expired and was reclaimed, or was never valid)"
            ),
        )
    status = task.status
    if status is TaskStatus.CANCELLED:
        return None
    if status is not TaskStatus.LEASED and status is not TaskStatus.RUNNING:  # not held
        return _refuse(
            task,
            errors.LeaseConflict(f"task {task.id} is {status.value}; the lease is no longer held"),
        )
    expires = task.lease_expires_at
    if expires is not None and expires <= now:  # is_expired, the task being held
        back = reclaim(task, now=now)
        return Transition(
            back.task,
            back.events,
            errors.LeaseConflict(
                f"lease on task {task.id} expired at "
                f"{task.lease_expires_at.isoformat() if task.lease_expires_at else '?'}; "
                "the task was reclaimed"
            ),
        )
    return None


def heartbeat(
    task: Task, *, token: str, now: datetime, ttl_ms: int, start: bool = False
) -> Transition:
    """Extend the lease by ``ttl_ms`` from ``now``; with ``start``, leased -> running.

    A cancelled task answers unchanged (the caller reports ``cancel_requested``); a stale
    or expired token is refused with :class:`~loops.errors.LeaseConflict`. Heartbeats
    store no event, except the start.
    """
    refusal = _check_lease(task, token=token, now=now)
    if refusal is not None:
        return refusal
    if task.status is TaskStatus.CANCELLED:
        return Transition(task)
    new = _replace(task, lease_expires_at=now + _MS * ttl_ms, updated_at=now)
    events: tuple[EventDraft, ...] = ()
    if start and task.status is TaskStatus.LEASED:
        new = _replace(new, status=TaskStatus.RUNNING)
        events = (_event(EventType.TASK_STARTED, new, worker=task.lease_owner),)
    return Transition(new, events, dirty=True)


def complete(
    task: Task,
    *,
    token: str,
    now: datetime,
    completion: Completion,
    backoff: Backoff,
    has_active_children: bool,
    finished_children: Collection[int] = frozenset(),
) -> Transition:
    """End the lease of ``task`` as ``completion`` says.

    - done: ``done``, or ``waiting_children`` while it has active children (then
      queued once all are done, blocked by one that is not: :func:`children_finished`);
    - waiting_children: ``waiting_children`` with ``wake_each`` (the attempt given
      back), woken as each child finishes; queued again at once when no child is
      active or a child in ``completion.waiting_on`` is among ``finished_children``
      (the ids of the task's finished children, read under the same lock as the task):
      it finished after the turn read it, and the turn must see it;
    - failed / blocked: that status, with the error;
    - retry: ``queued`` with ``run_after = now + backoff`` while attempts remain,
      else ``failed``;
    - waiting_approval: ``waiting_approval``, holding no lease, the error saying what
      it waits for, until :func:`answer`.

    A cancelled task, a stale token or an expired lease is refused with
    :class:`~loops.errors.LeaseConflict` (an expired lease is reclaimed first).
    """
    refusal = _check_lease(task, token=token, now=now)
    if refusal is not None:
        return refusal
    if task.status is TaskStatus.CANCELLED:
        return _refuse(
            task, errors.LeaseConflict(f"task {task.id} was cancelled; it cannot be completed")
        )
    usage = task.usage + completion.usage if completion.usage is not None else task.usage
    status = completion.status
    if status is CompletionStatus.DONE and not has_active_children:
        # the common case first, its fields given directly (no shared dict to merge)
        new = _replace(
            task,
            status=TaskStatus.DONE,
            result=completion.result,
            error=None,
            finished_at=now,
            lease_expires_at=None,
            usage=usage,
            updated_at=now,
            wake_each=False,
        )
        return Transition(new, (_event(EventType.TASK_COMPLETED, new, status="done"),))
    common = {
        "lease_expires_at": None,
        "usage": usage,
        "updated_at": now,
        "wake_each": status is CompletionStatus.WAITING_CHILDREN,
    }
    if status is CompletionStatus.WAITING_CHILDREN:
        new = _replace(
            task,
            status=TaskStatus.WAITING_CHILDREN,
            attempts=max(task.attempts - 1, 0),
            result=completion.result,
            **common,
        )
        waiting = _event(EventType.TASK_WAITING_CHILDREN, new)
        seen = [cid for cid in completion.waiting_on if cid in finished_children]
        if not seen and has_active_children:
            return Transition(new, (waiting,))
        reason = (
            f"child task(s) {', '.join(map(str, seen))} finished while the turn ran"
            if seen
            else "no child task is active"
        )
        woken = _replace(new, status=TaskStatus.QUEUED, run_after=now)
        return Transition(woken, (waiting, _event(EventType.TASK_REQUEUED, woken, reason=reason)))
    if status is CompletionStatus.DONE:  # with active children (without: above)
        new = _replace(task, status=TaskStatus.WAITING_CHILDREN, result=completion.result, **common)
        return Transition(new, (_event(EventType.TASK_WAITING_CHILDREN, new),))
    if status is CompletionStatus.WAITING_APPROVAL:
        new = _replace(
            task, status=TaskStatus.WAITING_APPROVAL, result=None, error=completion.error, **common
        )
        return Transition(
            new, (_event(EventType.TASK_WAITING_APPROVAL, new, reason=completion.error),)
        )
    if status is CompletionStatus.RETRY and task.attempts < task.max_attempts:
        delay_ms = backoff.delay_ms(task.attempts, jitter=completion.jitter)
        new = _replace(
            task,
            status=TaskStatus.QUEUED,
            error=completion.error,
            run_after=now + timedelta(milliseconds=delay_ms),
            **common,
        )
        event = _event(
            EventType.TASK_RETRY_SCHEDULED,
            new,
            attempt=task.attempts,
            delay_ms=delay_ms,
            error=completion.error,
        )
        return Transition(new, (event,))
    if status is CompletionStatus.BLOCKED:
        new = _replace(
            task, status=TaskStatus.BLOCKED, error=completion.error, finished_at=now, **common
        )
        return Transition(new, (_event(EventType.TASK_BLOCKED, new, error=completion.error),))
    error = completion.error
    if status is CompletionStatus.RETRY:
        error = (
            f"retry requested after attempt {task.attempts} of {task.max_attempts}; "
            f"no attempts left" + (f": {completion.error}" if completion.error else "")
        )
    new = _replace(task, status=TaskStatus.FAILED, error=error, finished_at=now, **common)
    return Transition(new, (_event(EventType.TASK_FAILED, new, error=error),))


def release(task: Task, *, token: str, now: datetime, reason: str | None = None) -> Transition:
    """Give a live lease back unfinished: queued again at once, the attempt not charged.

    A worker shutting down cleanly releases its tasks so that another worker picks them
    up without waiting for the TTL and without the shutdown counting against
    ``max_attempts``. A cancelled task is answered unchanged (there is nothing to give
    back); a stale token or an expired lease is refused with
    :class:`~loops.errors.LeaseConflict`. The released token is dead afterwards.
    """
    refusal = _check_lease(task, token=token, now=now)
    if refusal is not None:
        return refusal
    if task.status is TaskStatus.CANCELLED:
        return Transition(task)
    new = _replace(
        task,
        status=TaskStatus.QUEUED,
        attempts=max(task.attempts - 1, 0),
        lease_expires_at=None,
        run_after=now,
        updated_at=now,
    )
    event = _event(
        EventType.TASK_RELEASED, new, worker=task.lease_owner, attempt=task.attempts, reason=reason
    )
    return Transition(new, (event,))


def add_child(
    parent: Task, *, now: datetime, child_count: int, max_depth: int, max_children: int
) -> Transition:
    """Admit one more child of ``parent``; a queued parent starts waiting for it.

    Refuses (:class:`~loops.errors.LimitExceeded`) when the child would be deeper than
    ``max_depth`` or the parent already has ``max_children`` children, and
    (:class:`~loops.errors.InvalidTransition`) when the parent is finished.
    """
    if not parent.status.is_active or parent.status is TaskStatus.WAITING_APPROVAL:
        return _refuse(
            parent,
            errors.InvalidTransition(
                f"task {parent.id} is {parent.status.value}; children can only be added "
                "to a queued, leased, running or waiting_children task"
            ),
        )
    if parent.depth + 1 > max_depth:
        return _refuse(
            parent,
            errors.LimitExceeded(
                f"a child of task {parent.id} would have depth {parent.depth + 1}, over the "
                f"limit of {max_depth} (QUEUE_MAX_CHILD_DEPTH)"
            ),
        )
    if child_count >= max_children:
        return _refuse(
            parent,
            errors.LimitExceeded(
                f"task {parent.id} already has {child_count} children, the limit "
                f"(QUEUE_MAX_CHILDREN_PER_TASK={max_children})"
            ),
        )
    if parent.status is TaskStatus.QUEUED and not parent.wake_each:
        # a parent woken by a finished child stays queued: its next turn sees this one
        new = _replace(parent, status=TaskStatus.WAITING_CHILDREN, updated_at=now)
        return Transition(new, (_event(EventType.TASK_WAITING_CHILDREN, new),))
    return Transition(parent)


def children_finished(
    parent: Task,
    *,
    children: Sequence[tuple[int, TaskStatus]],
    now: datetime,
    notes: Mapping[int, str] | None = None,
    finished: Collection[int] = (),
) -> Transition:
    """Roll up the children of a waiting parent; ``finished`` are the ids of those
    that finished just now (in the caller's transaction).

    A parent waiting with ``wake_each`` (it completed ``waiting_children``) is queued
    again as soon as any child finished, whatever its status: its next turn reads
    which, and decides. Any other waiting parent waits until no child is active, then:
    all done, it is queued again (it runs again and sees their results); any failed,
    blocked or cancelled, it is blocked, naming them (with ``notes``, a child id ->
    its title and error, when the caller has them). Otherwise (a child still active,
    or the parent not waiting) nothing changes.
    """
    if parent.status is not TaskStatus.WAITING_CHILDREN:
        return Transition(parent)
    active = any(status.is_active for _, status in children)
    if parent.wake_each:
        if active and not finished:
            return Transition(parent)
        reason = (
            f"child task(s) {', '.join(map(str, sorted(finished)))} finished"
            if finished
            else "no child task is active"
        )
        new = _replace(parent, status=TaskStatus.QUEUED, run_after=now, updated_at=now)
        return Transition(new, (_event(EventType.TASK_REQUEUED, new, reason=reason),))
    if active:
        return Transition(parent)
    bad = [(cid, status) for cid, status in children if status is not TaskStatus.DONE]
    if not bad:
        new = _replace(parent, status=TaskStatus.QUEUED, run_after=now, updated_at=now)
        return Transition(new, (_event(EventType.TASK_REQUEUED, new, reason="all children done"),))
    known = notes or {}
    names = "; ".join(
        f"{cid} {status.value}" + (f" ({known[cid]})" if known.get(cid) else "")
        for cid, status in bad
    )
    message = (
        f"child task(s) did not finish done: {names}; once the cause is fixed, re-queue "
        f"task {parent.id} to run it again (a loop task: loop resume RUN_ID)"
    )
    new = _replace(
        parent, status=TaskStatus.BLOCKED, error=message, updated_at=now, finished_at=now
    )
    return Transition(new, (_event(EventType.TASK_BLOCKED, new, error=message),))


def cancel(task: Task, *, now: datetime, reason: str | None = None) -> Transition:
    """Cancel an active task (the caller cascades to its active children).

    A finished task is refused with :class:`~loops.errors.InvalidTransition`.
    """
    if not task.status.is_active:
        return _refuse(
            task,
            errors.InvalidTransition(
                f"task {task.id} is {task.status.value}; only queued, leased, running, "
                "waiting_children or waiting_approval tasks can be cancelled"
            ),
        )
    new = _replace(
        task,
        status=TaskStatus.CANCELLED,
        lease_expires_at=None,
        error=reason or task.error,
        updated_at=now,
        finished_at=now,
    )
    return Transition(new, (_event(EventType.TASK_CANCELLED, new, reason=reason),))


#: statuses an operator may send back to the queue
REQUEUEABLE = frozenset({TaskStatus.FAILED, TaskStatus.BLOCKED})


def requeue(task: Task, *, now: datetime, reason: str | None = None) -> Transition:
    """Send a failed or blocked task back to the queue (an operator's decision).

    The task gets a fresh set of attempts; its error, result and finish time are
    cleared (the history stays in its events). Any other status is refused with
    :class:`~loops.errors.InvalidTransition`.
    """
    if task.status not in REQUEUEABLE:
        return _refuse(
            task,
            errors.InvalidTransition(
                f"task {task.id} is {task.status.value}; only failed or blocked tasks "
                "can be re-queued"
            ),
        )
    new = _replace(
        task,
        status=TaskStatus.QUEUED,
        attempts=0,
        lease_owner=None,
        lease_token=None,
        lease_expires_at=None,
        run_after=now,
        result=None,
        error=None,
        updated_at=now,
        finished_at=None,
        wake_each=False,
    )
    event = _event(
        EventType.TASK_REQUEUED,
        new,
        previous=task.status.value,
        previous_error=task.error,
        reason=reason or "re-queued by an operator",
    )
    return Transition(new, (event,))


def answer(
    task: Task,
    *,
    now: datetime,
    path: str,
    approved: bool,
    by: str,
    reason: str | None = None,
) -> Transition:
    """Record someone's answer to the human gate at ``path`` of ``task``'s run.

    A ``waiting_approval`` task goes back to ``queued`` (at once, with a fresh set of
    attempts: the paused attempt ended cleanly), so a worker resumes its run and the
    gate passes or fails with the answer. A task still active otherwise (a gate with a
    timeout polls for its answer while the task runs) only gets the event. A finished
    task is refused with :class:`~loops.errors.InvalidTransition`: nothing waits.
    """
    if not task.status.is_active:
        return _refuse(
            task,
            errors.InvalidTransition(
                f"task {task.id} is {task.status.value}; only a task whose run is waiting "
                "at a human gate can be answered (re-queue a failed one first: "
                "loop tasks:requeue)"
            ),
        )
    data = {"path": path, "approved": approved, "by": by, "reason": reason}
    if task.status is not TaskStatus.WAITING_APPROVAL:
        return Transition(task, (_event(EventType.TASK_APPROVAL_ANSWERED, task, **data),))
    new = _replace(
        task,
        status=TaskStatus.QUEUED,
        attempts=0,
        run_after=now,
        error=None,
        updated_at=now,
    )
    return Transition(
        new,
        (
            _event(
                EventType.TASK_APPROVAL_ANSWERED,
                new,
                previous=TaskStatus.WAITING_APPROVAL.value,
                **data,
            ),
        ),
    )
