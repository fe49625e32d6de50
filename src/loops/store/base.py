"""The store interface: what the queue needs from a database, in the queue's words.

Decisions recorded here:

- **Synchronous.** Every method is a plain blocking call. sqlite3 is synchronous and a
  statement costs microseconds, far less than an event-loop thread hop; async callers
  (the gateway) run store calls in a thread pool. A backend must therefore be safe to
  call from several threads at once (the SQLite store keeps one connection per thread).
- **Semantic, not SQL.** Methods name queue operations (``lease_next``, ``complete``),
  never tables. Lifecycle decisions are made by :mod:`loops.queue.lifecycle`; a store
  applies its transitions atomically and adds nothing of its own.
- **Time is a parameter.** Every write takes ``now``; stores never read the clock, so
  tests are exact and a PostgreSQL backend can use the same rules.
- **Limits are parameters.** Attempts, TTLs and child limits come from the caller's
  settings (the service), not from the store.

A PostgreSQL backend implements this same class (``FOR UPDATE SKIP LOCKED`` for
``lease_next``, LISTEN/NOTIFY behind ``supports_notify``) without changing callers.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from loops import errors
from loops.queue.approvals import Answer
from loops.queue.artifacts import Artifact, ArtifactKind
from loops.queue.backoff import Backoff
from loops.queue.events import Event, EventDraft
from loops.queue.responsibilities import Responsibility, ResponsibilityDef
from loops.queue.steps import Step, StepMarker
from loops.queue.summary import StatusSummary
from loops.queue.tasks import (
    CompletionOutcome,
    CompletionRequest,
    Heartbeat,
    LeasedTask,
    Task,
    TaskCounts,
    TaskSpec,
    TaskStatus,
)


def _ignore() -> None:
    """Nothing to undo."""


@dataclasses.dataclass(frozen=True, slots=True)
class Dispatch:
    """A responsibility that created a task on a tick."""

    responsibility: str
    task: Task

    def to_dict(self) -> dict[str, Any]:
        """``{"responsibility", "task"}``."""
        return {"responsibility": self.responsibility, "task": self.task.to_dict()}


class Store(abc.ABC):
    """Durable storage of tasks, events, steps, state, artifacts and responsibilities.

    Unknown task ids raise :class:`~loops.errors.TaskNotFound`; database failures raise
    the most specific :class:`~loops.errors.StoreError`. "Atomic" below means all of a
    method's writes (task rows and their events) commit together or not at all.
    """

    #: short backend name (``memory``, ``sqlite``, ``postgres``)
    backend: ClassVar[str] = "abstract"
    #: whether other processes can be woken when work becomes ready (LISTEN/NOTIFY)
    supports_notify: ClassVar[bool] = False
    #: whether several processes can share the data (a file or a server)
    supports_multiprocess: ClassVar[bool] = False
    #: whether writes run one at a time whatever the callers do (one lock per database):
    #: writes issued from several threads then only wait for each other
    serial_writes: ClassVar[bool] = False

    # -- schema ---------------------------------------------------------------------

    @abc.abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending migrations, in order; idempotent.

        Returns:
            Names of the migrations applied now (empty when up to date).
        """

    @abc.abstractmethod
    def pending_migrations(self) -> list[str]:
        """Names of migrations not yet applied."""

    @abc.abstractmethod
    def is_new(self) -> bool:
        """Whether no migration was ever applied (a new, empty database)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store is unusable afterwards."""

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` whenever any process may have made work ready.

        Only stores with :attr:`supports_notify` ever call it (from a thread of their
        own; it must not block); for the others this does nothing, and the service's
        in-process wake-ups plus polling cover them.

        Returns:
            A function that ends the subscription.
        """
        del callback
        return _ignore

    # -- tasks ----------------------------------------------------------------------

    @abc.abstractmethod
    def create_task(self, spec: TaskSpec, *, now: datetime, max_attempts: int) -> tuple[Task, bool]:
        """Create a queued root task (atomic with its ``task.created`` event).

        Args:
            spec: validated task fields.
            now: creation time.
            max_attempts: used when ``spec.max_attempts`` is unset.

        Returns:
            ``(task, created)``; for a known ``idempotency_key``, the existing task and
            ``False`` (nothing is written).
        """

    @abc.abstractmethod
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
        """Create a child of ``parent_id`` (atomic: limit check, child, parent change).

        A queued parent goes to ``waiting_children``; a leased or running one waits when
        it completes. Raises :class:`~loops.errors.LimitExceeded` past ``max_depth`` or
        ``max_children`` and :class:`~loops.errors.InvalidTransition` for a finished
        parent.

        Returns:
            ``(child, created)``, as :meth:`create_task`.
        """

    @abc.abstractmethod
    def get_task(self, task_id: int) -> Task:
        """The task with ``task_id``."""

    @abc.abstractmethod
    def list_tasks(
        self,
        *,
        status: TaskStatus | None = None,
        parent_id: int | None = None,
        task_type: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Task]:
        """Tasks newest first, optionally of one status, parent or type, below ``before_id``."""

    @abc.abstractmethod
    def count_related(self, task_id: int) -> TaskCounts:
        """How many steps, children and artifacts ``task_id`` has."""

    @abc.abstractmethod
    def lease_next(
        self,
        *,
        now: datetime,
        owner: str,
        ttl_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """Lease up to ``limit`` ready tasks to ``owner`` (atomic for the whole batch).

        Expired leases are reclaimed first, by their own indexed query. Ready means
        ``queued`` with ``run_after <= now`` (and of one of ``types`` when given);
        the most urgent priority goes first, then the oldest. No two calls, from any
        thread or process, ever lease the same task while its lease is live.

        Returns:
            The leases granted, possibly none.

        Raises:
            WorkerStopped: ``owner`` was marked stopped by :meth:`stop_worker` (checked
                atomically with the lease: no lease to a stopped worker ever commits).
        """

    @abc.abstractmethod
    def stop_worker(self, owner: str, *, now: datetime, holding: Sequence[str] = ()) -> list[Task]:
        """Mark worker ``owner`` stopped and give back every lease it holds except those
        whose tokens are in ``holding`` (queued again, the attempt not charged).

        Atomic with leasing: a lease to ``owner`` that commits before this is seen and
        released, and every later lease to ``owner`` raises
        :class:`~loops.errors.WorkerStopped` until :meth:`start_worker`.

        Returns:
            The tasks released.
        """

    @abc.abstractmethod
    def start_worker(self, owner: str, *, now: datetime) -> None:
        """Clear ``owner``'s stop mark (a worker starting again under the same name)."""

    @abc.abstractmethod
    def lease_task(self, task_id: int, *, now: datetime, owner: str, ttl_ms: int) -> LeasedTask:
        """Lease one given task (reclaiming it first if its lease expired); ``run_after``
        is not checked. Raises :class:`~loops.errors.InvalidTransition` if it is not
        queued."""

    @abc.abstractmethod
    def heartbeat(
        self, task_id: int, *, token: str, now: datetime, ttl_ms: int, start: bool = False
    ) -> Heartbeat:
        """Extend a live lease to ``now + ttl_ms`` (``start``: leased -> running).

        Raises :class:`~loops.errors.LeaseConflict` for a stale token or an expired
        lease (which is reclaimed and committed before raising). A cancelled task is
        answered with ``cancel_requested`` and not changed.
        """

    @abc.abstractmethod
    def release(
        self, task_id: int, *, token: str, now: datetime, reason: str | None = None
    ) -> Task:
        """Give a live lease back unfinished (queued again, the attempt not charged).

        Raises :class:`~loops.errors.LeaseConflict` for a stale token or an expired
        lease, changing nothing (an expired lease is reclaimed). A cancelled task is
        returned unchanged.
        """

    @abc.abstractmethod
    def complete(self, request: CompletionRequest, *, now: datetime, backoff: Backoff) -> Task:
        """End a lease as ``request`` says, recording its steps (atomic).

        A finished child rolls its parent up. Raises
        :class:`~loops.errors.LeaseConflict` for a stale token, an expired lease or a
        cancelled task, changing nothing (an expired lease is reclaimed).
        """

    @abc.abstractmethod
    def complete_many(
        self, requests: Sequence[CompletionRequest], *, now: datetime, backoff: Backoff
    ) -> list[CompletionOutcome]:
        """Apply many completions in one transaction, answering item by item.

        An item refused (stale token, unknown id) gets its error and changes nothing;
        the others are applied. Returns one outcome per request, in order.
        """

    def complete_and_lease(
        self,
        requests: Sequence[CompletionRequest],
        *,
        now: datetime,
        backoff: Backoff,
        owner: str,
        ttl_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> tuple[list[CompletionOutcome], list[LeasedTask]]:
        """Complete a batch, then lease the next one: a worker's step between batches.

        The same as :meth:`complete_many` followed by :meth:`lease_next`; a backend may
        do both in one transaction (PostgreSQL does: one commit and two round trips per
        batch instead of two and four).

        Returns:
            ``(outcomes, leases)``: one outcome per request, in order, and the leases
            granted (none for a worker marked stopped: its completions still apply).
        """
        outcomes = self.complete_many(requests, now=now, backoff=backoff) if requests else []
        try:
            leases = self.lease_next(now=now, owner=owner, ttl_ms=ttl_ms, limit=limit, types=types)
        except errors.WorkerStopped:
            leases = []
        return outcomes, leases

    @abc.abstractmethod
    def cancel(self, task_id: int, *, now: datetime, reason: str | None = None) -> list[Task]:
        """Cancel an active task and its active descendants (atomic).

        Returns:
            The cancelled tasks, ``task_id`` first.
        """

    @abc.abstractmethod
    def requeue(self, task_id: int, *, now: datetime, reason: str | None = None) -> Task:
        """Put a failed or blocked task back in the queue with fresh attempts (atomic).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task is neither failed nor blocked.
        """

    @abc.abstractmethod
    def answer_approval(self, task_id: int, answer: Answer, *, now: datetime) -> Task:
        """Record ``answer`` to a gate of the task's run (atomic: state, task, event).

        The answer joins the task's answers (state ``run.approvals``, by gate path); a
        ``waiting_approval`` task goes back to ``queued``. Raises
        :class:`~loops.errors.InvalidTransition` for a finished task, writing nothing.

        Returns:
            The task as stored afterwards.
        """

    @abc.abstractmethod
    def reclaim_expired(self, *, now: datetime, limit: int = 1000) -> list[Task]:
        """Reclaim up to ``limit`` tasks whose lease lapsed (queued again, or failed).

        Returns:
            The reclaimed tasks, as stored afterwards.
        """

    # -- events ---------------------------------------------------------------------

    @abc.abstractmethod
    def append_event(
        self,
        type: str,
        *,
        now: datetime,
        task_id: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        """Append one event (e.g. a run event) and return it with its id."""

    @abc.abstractmethod
    def append_events(self, drafts: Sequence[EventDraft], *, now: datetime) -> int:
        """Append many events in one transaction (a worker's batched run events).

        Every ``task_id`` named must exist (:class:`~loops.errors.TaskNotFound`
        otherwise, and nothing is written).

        Returns:
            The number of events appended.
        """

    @abc.abstractmethod
    def list_events(
        self, *, after_id: int | None = None, limit: int = 100, task_id: int | None = None
    ) -> list[Event]:
        """Events in id order: the first ``limit`` after ``after_id``, or, without it,
        the latest ``limit``."""

    @abc.abstractmethod
    def prune_events(self, *, before: datetime, batch: int = 5_000) -> int:
        """Delete the events written before ``before``, oldest first.

        Deletes in batches of ``batch`` events by id, each its own transaction (a
        writer waits for one batch at most), and stops at the first batch that is not
        wholly older than ``before``. Events keep their ids; readers paging with
        ``after_id`` are not disturbed.

        Returns:
            The number of events deleted.
        """

    # -- steps ----------------------------------------------------------------------

    @abc.abstractmethod
    def record_steps(
        self, task_id: int, markers: Sequence[StepMarker], *, now: datetime
    ) -> list[Step]:
        """Record steps, one row per (task, idempotency key): a repeat updates it."""

    @abc.abstractmethod
    def list_steps(self, task_id: int) -> list[Step]:
        """The steps of ``task_id`` in the order first recorded."""

    # -- state ----------------------------------------------------------------------

    @abc.abstractmethod
    def get_state(self, key: str, *, task_id: int | None = None) -> Any:
        """The JSON value stored under ``key`` (per task, or global), or ``None``."""

    @abc.abstractmethod
    def put_state(self, key: str, value: Any, *, now: datetime, task_id: int | None = None) -> None:
        """Store a JSON value under ``key`` (per task, or global), replacing any."""

    # -- artifacts ------------------------------------------------------------------

    @abc.abstractmethod
    def put_artifact(
        self, task_id: int, *, name: str, kind: ArtifactKind, content: bytes, now: datetime
    ) -> Artifact:
        """Store ``content`` by its sha256 (the store chooses where) and record it."""

    @abc.abstractmethod
    def list_artifacts(self, *, task_id: int | None = None, limit: int = 50) -> list[Artifact]:
        """Artifacts newest first, optionally of one task (which must exist)."""

    @abc.abstractmethod
    def get_artifact(self, artifact_id: int) -> Artifact:
        """One artifact record; :class:`~loops.errors.NotFound` when unknown."""

    @abc.abstractmethod
    def read_artifact(self, artifact_id: int) -> bytes:
        """The content of one artifact."""

    # -- responsibilities -----------------------------------------------------------

    @abc.abstractmethod
    def sync_responsibilities(
        self, definitions: Sequence[ResponsibilityDef], *, now: datetime
    ) -> list[Responsibility]:
        """Make the stored responsibilities match ``definitions`` (atomic).

        New ones are due at once; stored ones missing from ``definitions`` are
        disabled (kept for their history). Returns all stored, by name.
        """

    @abc.abstractmethod
    def list_responsibilities(self) -> list[Responsibility]:
        """All stored responsibilities, by name."""

    @abc.abstractmethod
    def dispatch_due(self, *, now: datetime, max_attempts: int) -> list[Dispatch]:
        """Create the task of every due responsibility whose previous task is finished
        (atomic per responsibility: the task, its bookkeeping and the event)."""

    # -- summary --------------------------------------------------------------------

    @abc.abstractmethod
    def status_summary(self, *, now: datetime, recent_failures: int = 10) -> StatusSummary:
        """Counts by status, held leases, due responsibilities, recent failures."""
