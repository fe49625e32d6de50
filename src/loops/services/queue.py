"""The queue service: the one API both the CLI and the gateway call.

It validates input (naming what is wrong), applies the settings (attempts, TTLs,
child limits, backoff), reads the clock, and tells in-process listeners when work
became ready, so a gateway in the same process can answer long-polling leases at once.
All methods are synchronous and thread-safe; an async edge calls them in a thread pool.

Typical use::

    service = QueueService.open(config.load_settings())
    created = service.create_task(task_spec({"prompt": "fix the tests", "priority": 2}))
    (leased,) = service.lease(worker="w1")
    service.complete(leased.task.id, lease_token=leased.lease.token, status="done")
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from loops import config, errors, redact
from loops.queue import approvals as approvals_mod
from loops.queue import steps as steps_mod
from loops.queue import workers as workers_mod
from loops.queue.artifacts import Artifact, ArtifactKind
from loops.queue.backoff import Backoff
from loops.queue.events import Event, EventDraft, EventType
from loops.queue.responsibilities import Responsibility, ResponsibilityDef
from loops.queue.summary import StatusSummary
from loops.queue.tasks import (
    PRIORITY_MAX,
    PRIORITY_MIN,
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
    utc_now,
)
from loops.store.base import Dispatch, Store
from loops.usage import Usage

#: the event that records a prune of the event log
EVENTS_PRUNED = "events.pruned"


@dataclasses.dataclass(frozen=True, slots=True)
class EventsPruned:
    """What :meth:`QueueService.prune_events` deleted: the events before ``before``."""

    before: datetime
    deleted: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"before": self.before.isoformat(), "deleted": self.deleted}


#: largest integer a store keeps (a 64-bit signed column in SQLite and PostgreSQL)
MAX_INT = 2**63 - 1
#: largest page of a list
MAX_LIST_LIMIT = 10_000
#: largest batch of leases or completions in one call
MAX_BATCH = 1_000
#: largest batch of events appended in one call
MAX_EVENT_BATCH = 10_000
#: smallest lease TTL accepted
MIN_TTL_MS = 100
#: longest a lease call may wait for work
MAX_WAIT_MS = 60_000
#: fields a task spec may carry, as accepted by :func:`task_spec`
SPEC_FIELDS = (
    "prompt", "type", "title", "priority", "success", "check", "provider", "model", "cwd",
    "max_iterations", "min_tests", "max_attempts", "idempotency_key",
)  # fmt: skip


#: what :meth:`QueueService.now` subtracts to truncate a time to its millisecond
#: completion statuses by their exact value (the common spelling: no strip, no lower,
#: no enum call, which cost ~1 µs of each completion)
_COMPLETION_STATUSES: dict[object, CompletionStatus] = {s.value: s for s in CompletionStatus}
_SUB_MICROSECONDS = tuple(timedelta(microseconds=us) for us in range(1000))


@dataclasses.dataclass(frozen=True, slots=True)
class CreateResult:
    """A created task, or the existing one for a known idempotency key."""

    task: Task
    created: bool


_new_create_result = object.__new__
# the slots' descriptors: a frozen dataclass refuses setattr, its descriptors do not
_set_task = CreateResult.__dict__["task"].__set__
_set_created = CreateResult.__dict__["created"].__set__


@dataclasses.dataclass(frozen=True, slots=True)
class TaskDetail:
    """One task with how many steps, children and artifacts it has."""

    task: Task
    counts: TaskCounts

    def to_dict(self) -> dict[str, Any]:
        """The task object plus ``steps_count``, ``children_count``, ``artifacts_count``."""
        return {
            **self.task.to_dict(),
            "steps_count": self.counts.steps,
            "children_count": self.counts.children,
            "artifacts_count": self.counts.artifacts,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class TickReport:
    """What a tick did: leases reclaimed and responsibilities dispatched."""

    reclaimed: list[Task]
    dispatched: list[Dispatch]

    def to_dict(self) -> dict[str, Any]:
        """``{"reclaimed": n, "dispatched": [...]}`` as the REST API answers a tick."""
        return {
            "reclaimed": len(self.reclaimed),
            "dispatched": [d.to_dict() for d in self.dispatched],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CompletionInput:
    """One completion as a caller sends it (see :meth:`QueueService.complete`)."""

    task_id: int | str
    lease_token: str
    status: str
    result: str | None = None
    error: str | None = None
    output: str | None = None
    usage: Usage | Mapping[str, Any] | None = None
    waiting_on: Sequence[int | str] | None = None


# -- validation helpers ---------------------------------------------------------------


#: the longest lease (a week)
MAX_TTL_MS = 7 * 86_400_000


def parse_task_id(value: object) -> int:
    """A task id from an int or digit string; anything else is an unknown id.

    Raises:
        TaskNotFound: ``value`` cannot be a task id.
    """
    number = _positive_id(value)
    if number is None:
        raise errors.TaskNotFound(f"no task with id {value!r}")
    return number


def _positive_id(value: object) -> int | None:
    """``value`` as a store id (1..2**63-1, from an int or ASCII digits), else ``None``."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_INT:
        return value
    return None


def _waiting_on(values: Sequence[object] | None) -> tuple[int, ...]:
    """The child ids a ``waiting_children`` completion names.

    Raises:
        InputError: one is not a task id.
    """
    if not values:
        return ()
    ids = tuple(_positive_id(v) for v in values)
    if None in ids:
        raise errors.InputError(
            f"waiting_on must list the ids of the task's children (positive integers), "
            f"got {list(values or ())!r}"
        )
    return tuple(i for i in ids if i is not None)


def parse_status(value: object) -> TaskStatus:
    """A :class:`TaskStatus` from its string.

    Raises:
        InputError: not a known status, naming the allowed ones.
    """
    if isinstance(value, TaskStatus):
        return value
    try:
        return TaskStatus(str(value).strip().lower())
    except ValueError:
        allowed = "|".join(s.value for s in TaskStatus)
        raise errors.InputError(f"unknown status {value!r}; use one of {allowed}") from None


def _int_field(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    digits = value.strip().lstrip("-") if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit():
        value = int(str(value).strip())
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < minimum
        or value > (MAX_INT if maximum is None else maximum)
    ):
        bound = f"{minimum}..{maximum}" if maximum is not None else f"an integer >= {minimum}"
        if maximum is None and isinstance(value, int) and value > MAX_INT:
            bound = f"at most {MAX_INT}"
        raise errors.InputError(f"{name} must be {bound}, got {value!r}")
    return value


def _opt_int(name: str, value: object, *, minimum: int) -> int | None:
    return None if value is None else _int_field(name, value, minimum=minimum)


def _opt_text(name: str, value: object, *, max_chars: int = 1_000_000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.InputError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise errors.PayloadTooLarge(f"{name} is {len(value)} characters; the limit is {max_chars}")
    return value


def task_spec(data: Mapping[str, object]) -> TaskSpec:
    """A validated :class:`TaskSpec` from loose data (CLI options, a JSON body).

    ``None`` values mean "not given". Raises :class:`~loops.errors.InputError` naming
    the bad field: a missing prompt, a priority outside 1..5, an unknown field.
    """
    unknown = sorted(set(data) - set(SPEC_FIELDS))
    if unknown:
        raise errors.InputError(
            f"unknown task field(s) {', '.join(unknown)}; known: {', '.join(SPEC_FIELDS)}"
        )
    prompt = _opt_text("prompt", data.get("prompt"))
    if prompt is None or not prompt.strip():
        raise errors.InputError("prompt is required: say what the agent should do (--prompt)")
    priority = data.get("priority")
    task_type = _opt_text("type", data.get("type"), max_chars=100)
    return TaskSpec(
        prompt=prompt,
        type=task_type.strip() if task_type and task_type.strip() else "task",
        title=_opt_text("title", data.get("title"), max_chars=500) or "",
        priority=3
        if priority is None
        else _int_field("priority", priority, minimum=PRIORITY_MIN, maximum=PRIORITY_MAX),
        success=_opt_text("success", data.get("success")),
        check=_opt_text("check", data.get("check"), max_chars=10_000),
        provider=_opt_text("provider", data.get("provider"), max_chars=100),
        model=_opt_text("model", data.get("model"), max_chars=200),
        cwd=_opt_text("cwd", data.get("cwd"), max_chars=4_096),
        max_iterations=_opt_int("max_iterations", data.get("max_iterations"), minimum=1),
        min_tests=_opt_int("min_tests", data.get("min_tests"), minimum=0),
        max_attempts=_opt_int("max_attempts", data.get("max_attempts"), minimum=1),
        idempotency_key=_opt_text("idempotency_key", data.get("idempotency_key"), max_chars=500),
    )


def _usage(value: Usage | Mapping[str, Any] | None) -> Usage | None:
    if value is None or isinstance(value, Usage):
        return value
    if not isinstance(value, Mapping):
        raise errors.InputError("usage must be an object with input_tokens, output_tokens, ...")
    for key in ("input_tokens", "output_tokens", "cached_input_tokens"):
        if key in value and value[key] is not None:
            _int_field(f"usage.{key}", value[key], minimum=0)
    cost = value.get("cost_usd")
    if cost is not None and (
        not isinstance(cost, int | float) or isinstance(cost, bool) or cost < 0
    ):
        raise errors.InputError(f"usage.cost_usd must be a number >= 0, got {cost!r}")
    return Usage.from_dict(dict(value))


#: artifact kinds holding agent or worker text, redacted before they are stored
REDACTED_ARTIFACT_KINDS = frozenset(
    {ArtifactKind.TRANSCRIPT, ArtifactKind.LOG, ArtifactKind.FINAL_MESSAGE}
)


def _redacted(value: str | None) -> str | None:
    return None if value is None else redact.text(value)


def _limit(value: object, *, maximum: int = MAX_LIST_LIMIT) -> int:
    return _int_field("limit", value, minimum=1, maximum=maximum)


class QueueService:
    """Queue operations with validation, settings, a clock and work notifications."""

    def __init__(
        self,
        store: Store,
        settings: config.QueueSettings,
        *,
        responsibilities: Sequence[ResponsibilityDef] | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ) -> None:
        """Wrap ``store`` with ``settings``.

        Args:
            store: an opened, migrated store.
            settings: limits and defaults (``Settings.queue``).
            responsibilities: the configured responsibilities (synced by
                :meth:`sync_responsibilities`); ``None`` when no config file was
                found, which leaves the stored ones as they are (running a command
                from another folder must not disable them).
            clock: returns the current aware UTC time (injected in tests).
            rng: randomness for retry jitter (injected in tests).
        """
        self.store = store
        self.settings = settings
        self.responsibilities = None if responsibilities is None else tuple(responsibilities)
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff = Backoff(base_ms=settings.retry_base_ms, cap_ms=settings.retry_cap_ms)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._generation = 0
        self._waiting = 0  # threads in wait_for_work (notify_all only when there are)
        # replaced, never mutated: a notification iterates it outside the lock
        self._listeners: tuple[Callable[[], None], ...] = ()
        #: called first on a store notification (see :meth:`subscribe_store`)
        self._store_listeners: tuple[Callable[[], None], ...] = ()
        self._unlisten: Callable[[], None] | None = None

    @classmethod
    def open(cls, settings: config.Settings, *, migrating: bool = False) -> QueueService:
        """Open the configured store and sync the configured responsibilities.

        A new database is created and migrated; an existing one with pending
        migrations raises :class:`~loops.errors.MigrationRequired` unless
        ``migrating``.
        """
        from loops.store import open_store

        store = open_store(settings, migrating=migrating)
        configured = settings.responsibilities if settings.config_path is not None else None
        service = cls(store, settings.queue, responsibilities=configured)
        if not migrating:
            service.sync_responsibilities()
        return service

    def close(self) -> None:
        """Stop listening to the store and close it."""
        with self._ready:
            unlisten, self._unlisten = self._unlisten, None
        if unlisten is not None:
            unlisten()
        self.store.close()

    def now(self) -> datetime:
        """The clock's time, truncated to milliseconds (the stores' precision)."""
        moment = self._clock()
        # a subtraction from a table: ``replace(microsecond=...)`` parses its keyword
        # arguments, and cost two thirds of this method on the create path
        return moment - _SUB_MICROSECONDS[moment.microsecond % 1000]

    # -- work-ready notifications ---------------------------------------------------

    def listen_to_store(self) -> None:
        """Also wake on work made ready by other processes, when the store can tell
        (``supports_notify``: PostgreSQL's LISTEN/NOTIFY); idempotent.

        Called by the first :meth:`wait_for_work` or :meth:`subscribe`; a server may call
        it at start-up so its first long poll is already covered.
        """
        if not self.store.supports_notify:
            return
        with self._ready:
            if self._unlisten is None:
                self._unlisten = self.store.listen(self._store_work_ready)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` whenever work may have become ready; returns an unsubscribe.

        Listeners run on the thread that made the change (or the store's listener
        thread, for work from other processes) and must not block.
        """
        return self._add_listener("_listeners", listener)

    def subscribe_store(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` when the store tells of work made ready by another
        process (``supports_notify``), on the store's listener thread, before the
        :meth:`subscribe` listeners and waiters are woken; returns an unsubscribe.

        Such a listener may make one store call (the gateway leases there for the
        request that waited longest, sparing two thread hops); the other wake-ups wait
        for it, so it must do no more.
        """
        return self._add_listener("_store_listeners", listener)

    def _add_listener(self, kind: str, listener: Callable[[], None]) -> Callable[[], None]:
        """Add ``listener`` to the tuple attribute ``kind`` (replaced, never mutated, so
        the notifying thread reads it without the lock); returns its unsubscribe."""
        self.listen_to_store()
        with self._lock:
            setattr(self, kind, (*getattr(self, kind), listener))

        def unsubscribe() -> None:
            with self._lock:
                remaining = list(getattr(self, kind))
                if listener in remaining:
                    remaining.remove(listener)
                    setattr(self, kind, tuple(remaining))

        return unsubscribe

    def _store_work_ready(self) -> None:
        """The store's notification: the store listeners first, then everyone else."""
        for listener in self._store_listeners:
            try:
                listener()
            except Exception:  # the other wake-ups must still happen
                logging.getLogger(__name__).exception("store work-ready listener failed")
        self.notify_work_ready()

    def notify_work_ready(self) -> None:
        """Wake waiters and listeners: tasks may be ready to lease."""
        with self._lock:  # the condition's lock, without its Python-level __enter__
            self._generation += 1
            if self._waiting:
                self._ready.notify_all()
            listeners = self._listeners
        for listener in listeners:
            listener()

    def wait_for_work(self, timeout_s: float, *, since: int | None = None) -> int:
        """Block until work may be ready or ``timeout_s`` passed.

        Args:
            timeout_s: the longest wait.
            since: a generation returned earlier; returns at once if it changed since.

        Returns:
            The current generation (pass it as ``since`` to the next call).
        """
        self.listen_to_store()
        with self._ready:
            start = self._generation if since is None else since
            self._waiting += 1
            try:
                self._ready.wait_for(lambda: self._generation != start, timeout=timeout_s)
            finally:
                self._waiting -= 1
            return self._generation

    # -- schema ---------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations and sync responsibilities; returns the names applied."""
        applied = self.store.migrate()
        self.sync_responsibilities()
        return applied

    # -- tasks ----------------------------------------------------------------------

    def create_task(self, spec: TaskSpec) -> CreateResult:
        """Create a root task (or return the one with the same idempotency key)."""
        task, created = self.store.create_task(
            spec, now=self.now(), max_attempts=self.settings.max_attempts
        )
        if created:
            self.notify_work_ready()
        # CreateResult(task, created) without the frozen __init__'s Python frame
        result = _new_create_result(CreateResult)
        _set_task(result, task)
        _set_created(result, created)
        return result

    def create_child(self, parent_id: int | str, spec: TaskSpec) -> CreateResult:
        """Create a child of ``parent_id`` within the depth and children limits.

        Raises:
            TaskNotFound: no such parent.
            LimitExceeded: ``QUEUE_MAX_CHILD_DEPTH`` or ``QUEUE_MAX_CHILDREN_PER_TASK``.
            InvalidTransition: the parent is finished.
        """
        task, created = self.store.create_child(
            parse_task_id(parent_id),
            spec,
            now=self.now(),
            max_attempts=self.settings.max_attempts,
            max_depth=self.settings.max_child_depth,
            max_children=self.settings.max_children_per_task,
        )
        if created:
            self.notify_work_ready()
        return CreateResult(task, created)

    def get_task(self, task_id: int | str) -> Task:
        """One task."""
        return self.store.get_task(parse_task_id(task_id))

    def task_detail(self, task_id: int | str) -> TaskDetail:
        """One task with its steps, children and artifacts counts."""
        tid = parse_task_id(task_id)
        return TaskDetail(self.store.get_task(tid), self.store.count_related(tid))

    def list_tasks(
        self,
        *,
        status: str | TaskStatus | None = None,
        task_type: str | None = None,
        limit: int | str = 50,
        before_id: int | str | None = None,
    ) -> list[Task]:
        """Tasks newest first, optionally of one status and/or type, below ``before_id``."""
        return self.store.list_tasks(
            status=None if status is None else parse_status(status),
            task_type=_opt_text("type", task_type, max_chars=100),
            limit=_limit(limit),
            before_id=None if before_id is None else parse_task_id(before_id),
        )

    def list_children(self, task_id: int | str, *, limit: int | str = 1000) -> list[Task]:
        """The children of a task, newest first."""
        return self.store.list_tasks(parent_id=parse_task_id(task_id), limit=_limit(limit))

    def _ttl(self, ttl_ms: int | str | None) -> int:
        if ttl_ms is None:
            return self.settings.lease_ttl_ms
        return _int_field("ttl_ms", ttl_ms, minimum=MIN_TTL_MS, maximum=MAX_TTL_MS)

    @staticmethod
    def _worker(worker: str) -> str:
        if not isinstance(worker, str) or not worker.strip() or len(worker) > 200:
            raise errors.InputError("worker must be a non-empty name of at most 200 characters")
        return worker.strip()

    def lease(
        self,
        *,
        worker: str,
        ttl_ms: int | str | None = None,
        limit: int | str = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """Lease up to ``limit`` ready tasks now (none when nothing is ready)."""
        return self.store.lease_next(
            now=self.now(),
            owner=self._worker(worker),
            ttl_ms=self._ttl(ttl_ms),
            limit=_limit(limit, maximum=MAX_BATCH),
            types=self._types(types),
        )

    @staticmethod
    def _types(types: Sequence[str] | None) -> list[str] | None:
        if types is None:
            return None
        if isinstance(types, str) or not types or not all(isinstance(t, str) and t for t in types):
            raise errors.InputError(
                "types must be a non-empty list of task type names (omit it for any type)"
            )
        return list(types)

    def lease_wait(
        self,
        *,
        worker: str,
        wait_ms: int | str = 0,
        ttl_ms: int | str | None = None,
        limit: int | str = 1,
        types: Sequence[str] | None = None,
        poll_ms: int = 1_000,
    ) -> list[LeasedTask]:
        """Like :meth:`lease`, but wait up to ``wait_ms`` for work (long polling).

        Wakes at once when this process creates or requeues work
        (:meth:`notify_work_ready`), or, with a store that ``supports_notify``, when any
        process does; re-polls every ``poll_ms`` for work from other processes (SQLite)
        or whose ``run_after`` passed. Blocks the calling thread.
        """
        wait = _int_field("wait_ms", wait_ms, minimum=0, maximum=MAX_WAIT_MS)
        deadline = time.monotonic() + wait / 1000
        while True:
            generation = self.wait_for_work(0)
            leased = self.lease(worker=worker, ttl_ms=ttl_ms, limit=limit, types=types)
            remaining = deadline - time.monotonic()
            if leased or remaining <= 0:
                return leased
            self.wait_for_work(min(remaining, poll_ms / 1000), since=generation)

    def lease_task(
        self, task_id: int | str, *, worker: str, ttl_ms: int | str | None = None
    ) -> LeasedTask:
        """Lease one given queued task.

        Raises:
            InvalidTransition: the task is not queued.
        """
        return self.store.lease_task(
            parse_task_id(task_id), now=self.now(), owner=self._worker(worker),
            ttl_ms=self._ttl(ttl_ms),
        )  # fmt: skip

    def heartbeat(
        self,
        task_id: int | str,
        *,
        lease_token: str,
        ttl_ms: int | str | None = None,
        status: str | None = None,
    ) -> Heartbeat:
        """Extend a lease; ``status="running"`` also marks the task started.

        Raises:
            LeaseConflict: the token is not the task's current lease.
        """
        if status not in (None, "running"):
            raise errors.InputError(f'heartbeat status must be "running" or absent, got {status!r}')
        return self.store.heartbeat(
            parse_task_id(task_id),
            token=self._token(lease_token),
            now=self.now(),
            ttl_ms=self._ttl(ttl_ms),
            start=status == "running",
        )

    @staticmethod
    def _token(token: object) -> str:
        if not isinstance(token, str) or not token:
            raise errors.InputError("lease_token is required: the token the lease returned")
        return token

    def _completion_request(self, item: CompletionInput) -> CompletionRequest:
        status = _COMPLETION_STATUSES.get(item.status) if type(item.status) is str else None
        if status is None:
            try:
                status = CompletionStatus(str(item.status).strip().lower())
            except ValueError:
                allowed = "|".join(s.value for s in CompletionStatus)
                raise errors.InputError(
                    f"unknown completion status {item.status!r}; use one of {allowed}"
                ) from None
        # a batch's items mostly carry no text, usage or children: those are not
        # passed through their checks (each a call) when absent
        result, error = item.result, item.error
        output = None if item.output is None else _opt_text("output", item.output)
        return CompletionRequest(
            parse_task_id(item.task_id),
            self._token(item.lease_token),
            Completion(
                status,
                None if result is None else _redacted(_opt_text("result", result)),
                None if error is None else _redacted(_opt_text("error", error)),
                None if item.usage is None else _usage(item.usage),
                self._rng.random(),
                _waiting_on(item.waiting_on) if item.waiting_on else (),
            ),
            tuple(steps_mod.parse_markers(output)) if output else (),
        )

    def complete(
        self,
        task_id: int | str,
        *,
        lease_token: str,
        status: str,
        result: str | None = None,
        error: str | None = None,
        output: str | None = None,
        usage: Usage | Mapping[str, Any] | None = None,
        waiting_on: Sequence[int | str] | None = None,
    ) -> Task:
        """End a lease: ``done``, ``failed``, ``blocked`` or ``retry`` (with backoff).

        ``output`` is scanned for STEP markers, recorded with the completion;
        ``usage`` is added to the task's total; ``waiting_on`` (with
        ``waiting_children``) names the children the turn saw active.

        Raises:
            LeaseConflict: stale token, expired lease, or the task was cancelled.
        """
        request = self._completion_request(
            CompletionInput(task_id, lease_token, status, result, error, output, usage, waiting_on)
        )
        task = self.store.complete(request, now=self.now(), backoff=self._backoff)
        if task.status is TaskStatus.QUEUED or task.parent_id is not None:
            self.notify_work_ready()
        return task

    def _completion_requests(
        self, items: Sequence[CompletionInput]
    ) -> tuple[list[CompletionRequest], list[CompletionOutcome | None]]:
        """Valid requests, and per item ``None`` (applied by the store) or its error."""
        if len(items) > MAX_BATCH:
            raise errors.LimitExceeded(
                f"{len(items)} completions in one batch; the limit is {MAX_BATCH}"
            )
        outcomes: list[CompletionOutcome | None] = []
        requests: list[CompletionRequest] = []
        for item in items:
            try:
                requests.append(self._completion_request(item))
                outcomes.append(None)
            except errors.InputError as exc:
                outcomes.append(CompletionOutcome(task_id=_loose_id(item.task_id), error=exc))
        return requests, outcomes

    def _answers(
        self, outcomes: list[CompletionOutcome | None], applied: list[CompletionOutcome]
    ) -> list[CompletionOutcome]:
        stored = iter(applied)
        answers = [o if o is not None else next(stored) for o in outcomes]
        if any(a.ok for a in answers):
            self.notify_work_ready()
        return answers

    def complete_many(self, items: Sequence[CompletionInput]) -> list[CompletionOutcome]:
        """Apply many completions in one transaction; answers item by item.

        An invalid item gets its own error; the others are still applied.
        """
        requests, outcomes = self._completion_requests(items)
        applied = self.store.complete_many(requests, now=self.now(), backoff=self._backoff)
        return self._answers(outcomes, applied)

    def complete_and_lease(
        self,
        items: Sequence[CompletionInput],
        *,
        worker: str,
        ttl_ms: int | str | None = None,
        limit: int | str = 1,
        types: Sequence[str] | None = None,
    ) -> tuple[list[CompletionOutcome], list[LeasedTask]]:
        """Complete a batch and lease the next in one call (one transaction where the
        store can): :meth:`complete_many` then :meth:`lease`, answered together."""
        requests, outcomes = self._completion_requests(items)
        applied, leases = self.store.complete_and_lease(
            requests,
            now=self.now(),
            backoff=self._backoff,
            owner=self._worker(worker),
            ttl_ms=self._ttl(ttl_ms),
            limit=_limit(limit, maximum=MAX_BATCH),
            types=self._types(types),
        )
        return self._answers(outcomes, applied), leases

    def release(self, task_id: int | str, *, lease_token: str, reason: str | None = None) -> Task:
        """Give a lease back unfinished: queued again at once, the attempt not charged.

        A worker that shuts down cleanly (SIGTERM) releases its tasks this way.

        Raises:
            LeaseConflict: stale token or expired lease.
        """
        task = self.store.release(
            parse_task_id(task_id),
            token=self._token(lease_token),
            now=self.now(),
            reason=_opt_text("reason", reason, max_chars=2_000),
        )
        if task.status is TaskStatus.QUEUED:
            self.notify_work_ready()
        return task

    def stop_worker(self, worker: str, *, holding: Sequence[str] = ()) -> list[Task]:
        """A worker stopped: refuse it new leases and give back every lease it holds
        but does not know of (e.g. one granted to a long poll it had just cancelled),
        queued again without charging an attempt. ``holding`` are the tokens of the
        leases it still holds (its running tasks, which it finishes or releases itself).

        Returns:
            The tasks given back.
        """
        released = self.store.stop_worker(
            self._worker(worker), now=self.now(), holding=[self._token(t) for t in holding]
        )
        if released:
            self.notify_work_ready()
        return released

    def start_worker(self, worker: str) -> None:
        """A worker starts under ``worker``: clear a stop mark left under that name."""
        self.store.start_worker(self._worker(worker), now=self.now())

    def cancel(self, task_id: int | str, *, reason: str | None = None) -> Task:
        """Cancel a task and its active descendants; returns the cancelled task."""
        cancelled = self.store.cancel(
            parse_task_id(task_id), now=self.now(), reason=_opt_text("reason", reason)
        )
        return cancelled[0]

    def requeue(self, task_id: int | str, *, reason: str | None = None) -> Task:
        """Send a failed or blocked task back to the queue with fresh attempts."""
        task = self.store.requeue(
            parse_task_id(task_id),
            now=self.now(),
            reason=_opt_text("reason", reason, max_chars=2_000),
        )
        self.notify_work_ready()
        return task

    def approvals(self, task_id: int | str) -> list[approvals_mod.Gate]:
        """The human gates the task's run asked, first ask first, each with its answer."""
        tid = parse_task_id(task_id)
        asked: list[tuple[str, dict[str, Any]]] = []
        after = 0
        while True:
            page = self.store.list_events(after_id=after, limit=MAX_LIST_LIMIT, task_id=tid)
            asked.extend((e.type, e.data) for e in page if e.type == approvals_mod.REQUESTED_EVENT)
            if len(page) < MAX_LIST_LIMIT:
                break
            after = page[-1].id
        answers = self.store.get_state(approvals_mod.APPROVALS_KEY, task_id=tid)
        return approvals_mod.gates(asked, answers)

    def answer_approval(
        self,
        task_id: int | str,
        *,
        path: str,
        approved: bool,
        by: str,
        reason: str | None = None,
    ) -> Task:
        """Approve or reject the human gate at ``path`` of the task's run, recording who.

        A ``waiting_approval`` task is queued again, so a worker resumes its run; a
        running one (a gate with a timeout) finds the answer on its next look.

        Raises:
            InputError: the run never asked a gate at ``path``, or ``by`` is empty.
            InvalidTransition: the task is finished.
        """
        tid = parse_task_id(task_id)
        who = _opt_text("by", by, max_chars=200)
        if not who or not who.strip():
            raise errors.InputError("say who answers: `by` must be a non-empty name")
        asked = [gate.path for gate in self.approvals(tid)]
        if path not in asked:
            raise errors.InputError(
                f"task {tid}'s run has no human gate at {path!r}; "
                f"gates asked: {', '.join(asked) or 'none'}"
            )
        answer = approvals_mod.Answer(
            path=path,
            approved=bool(approved),
            by=who.strip(),
            reason=_redacted(_opt_text("reason", reason, max_chars=2_000)),
        )
        task = self.store.answer_approval(tid, answer, now=self.now())
        if task.status is TaskStatus.QUEUED:
            self.notify_work_ready()
        return task

    def workers(self) -> list[workers_mod.Worker]:
        """The workers holding leases: each lease with since when and last heartbeat.

        Reads the 100 leases that expire first (as ``status`` does) and, for each, its
        latest events to find when the lease was taken.
        """
        held = self.store.status_summary(now=self.now()).leases
        leased_at: dict[int, datetime] = {}
        for task in held:
            recent = self.store.list_events(after_id=None, limit=50, task_id=task.id)
            taken = [e.ts for e in recent if e.type == EventType.TASK_LEASED.value]
            if taken:
                leased_at[task.id] = taken[-1]
        return workers_mod.workers_of(held, leased_at)

    # -- tick -----------------------------------------------------------------------

    def tick(self, *, record_idle: bool = True) -> TickReport:
        """Reclaim expired leases and dispatch due responsibilities.

        Args:
            record_idle: write the ``tick`` event also when nothing was reclaimed or
                dispatched (an operator's tick is always recorded; the gateway's own
                ticker records only the ticks that did something).
        """
        now = self.now()
        self.sync_responsibilities()
        reclaimed = self.store.reclaim_expired(now=now)
        dispatched = self.store.dispatch_due(now=now, max_attempts=self.settings.max_attempts)
        if record_idle or reclaimed or dispatched:
            self.store.append_event(
                "tick",
                now=now,
                data={
                    "reclaimed": len(reclaimed),
                    "dispatched": [d.responsibility for d in dispatched],
                },
            )
        if reclaimed or dispatched:
            self.notify_work_ready()
        return TickReport(reclaimed, dispatched)

    # -- events, steps, state, artifacts --------------------------------------------

    def prune_events(self, older_than: str) -> EventsPruned:
        """Delete the events older than ``older_than`` (``30d``, ``12h``, ``90m``).

        What was pruned is itself recorded, as an ``events.pruned`` event.

        Raises:
            InputError: ``older_than`` is not a positive duration.
        """
        from datetime import timedelta

        from loops.queue import schedules

        try:
            seconds = schedules.every(older_than).every_s or 0
        except errors.ConfigError as exc:
            raise errors.InputError(f"--older-than: {exc}") from None
        now = self.now()
        before = now - timedelta(seconds=seconds)
        deleted = self.store.prune_events(before=before)
        self.store.append_event(
            EVENTS_PRUNED, now=now, data={"before": before.isoformat(), "deleted": deleted}
        )
        return EventsPruned(before=before, deleted=deleted)

    def list_events(
        self,
        *,
        after_id: int | str | None = None,
        limit: int | str = 100,
        task_id: int | str | None = None,
    ) -> list[Event]:
        """Events in id order: after ``after_id``, or the latest ``limit``."""
        after = None if after_id is None else _int_field("after", after_id, minimum=0)
        return self.store.list_events(
            after_id=after,
            limit=_limit(limit),
            task_id=None if task_id is None else parse_task_id(task_id),
        )

    def append_event(
        self, type: str, *, task_id: int | str | None = None, data: Mapping[str, Any] | None = None
    ) -> Event:
        """Append an event (e.g. a run event of a loop)."""
        if not isinstance(type, str) or not type.strip() or len(type) > 100:
            raise errors.InputError("event type must be a non-empty name (e.g. run.started)")
        return self.store.append_event(
            type,
            now=self.now(),
            task_id=None if task_id is None else parse_task_id(task_id),
            data=redact.value(dict(data or {})),
        )

    def append_events(
        self, task_id: int | str, events: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> int:
        """Append many events about one task in one transaction (batched run events).

        Args:
            task_id: the task they are about.
            events: ``(type, data)`` pairs, in order.

        Returns:
            The number appended.
        """
        if len(events) > MAX_EVENT_BATCH:
            raise errors.LimitExceeded(
                f"{len(events)} events in one batch; the limit is {MAX_EVENT_BATCH}"
            )
        tid = parse_task_id(task_id)
        if not events:
            self.store.get_task(tid)  # an unknown task is an error even with nothing to add
            return 0
        drafts = []
        for kind, data in events:
            if not isinstance(kind, str) or not kind.strip() or len(kind) > 100:
                raise errors.InputError("event type must be a non-empty name (e.g. agent.text)")
            if not isinstance(data, Mapping):
                raise errors.InputError(f"event {kind!r} data must be an object")
            drafts.append(EventDraft(kind, tid, redact.value(dict(data))))
        return self.store.append_events(drafts, now=self.now())

    def list_steps(self, task_id: int | str) -> list[steps_mod.Step]:
        """The steps recorded for a task."""
        return self.store.list_steps(parse_task_id(task_id))

    def record_output(self, task_id: int | str, output: str) -> list[steps_mod.Step]:
        """Record the STEP markers found in ``output`` (idempotent per key)."""
        markers = steps_mod.parse_markers(output)
        if not markers:
            return []
        return self.store.record_steps(parse_task_id(task_id), markers, now=self.now())

    def get_state(self, key: str, *, task_id: int | str | None = None) -> Any:
        """A stored checkpoint value, or ``None``."""
        return self.store.get_state(
            key, task_id=None if task_id is None else parse_task_id(task_id)
        )

    def put_state(self, key: str, value: Any, *, task_id: int | str | None = None) -> None:
        """Store a JSON checkpoint value (global, or per task)."""
        if not isinstance(key, str) or not key:
            raise errors.InputError("state key must be a non-empty string")
        self.store.put_state(
            key, value, now=self.now(), task_id=None if task_id is None else parse_task_id(task_id)
        )

    def store_artifact(
        self, task_id: int | str, *, name: str, kind: str | ArtifactKind, content: bytes
    ) -> Artifact:
        """Store an artifact's content (content-addressed) and record it."""
        try:
            artifact_kind = ArtifactKind(kind)
        except ValueError:
            allowed = "|".join(k.value for k in ArtifactKind)
            raise errors.InputError(
                f"unknown artifact kind {kind!r}; use one of {allowed}"
            ) from None
        if not isinstance(name, str) or not name.strip() or len(name) > 500:
            raise errors.InputError("artifact name must be a non-empty label")
        if artifact_kind in REDACTED_ARTIFACT_KINDS:
            content = redact.content(content)
        return self.store.put_artifact(
            parse_task_id(task_id), name=name, kind=artifact_kind, content=content, now=self.now()
        )

    def list_artifacts(
        self, *, task_id: int | str | None = None, limit: int | str = 50
    ) -> list[Artifact]:
        """Artifacts newest first, optionally of one task (which must exist)."""
        return self.store.list_artifacts(
            task_id=None if task_id is None else parse_task_id(task_id), limit=_limit(limit)
        )

    def get_artifact(self, artifact_id: int | str) -> Artifact:
        """One artifact record."""
        return self.store.get_artifact(_artifact_id(artifact_id))

    def read_artifact(self, artifact_id: int | str) -> bytes:
        """One artifact's content."""
        return self.store.read_artifact(_artifact_id(artifact_id))

    # -- responsibilities and status ------------------------------------------------

    def sync_responsibilities(self) -> list[Responsibility]:
        """Store the configured responsibilities (new ones due at once; removed ones
        disabled). Without a config file, the stored ones are left as they are."""
        if self.responsibilities is None:
            return self.store.list_responsibilities()
        if not self.responsibilities and not self.store.list_responsibilities():
            return []
        return self.store.sync_responsibilities(self.responsibilities, now=self.now())

    def list_responsibilities(self) -> list[Responsibility]:
        """Stored responsibilities by name."""
        return self.store.list_responsibilities()

    def status(self) -> StatusSummary:
        """Counts by status, active leases, due responsibilities, recent failures."""
        return self.store.status_summary(now=self.now())


def _artifact_id(value: object) -> int:
    number = _positive_id(value)
    if number is None:
        raise errors.NotFound(f"no artifact with id {value!r}")
    return number


def _loose_id(value: object) -> int:
    try:
        return parse_task_id(value)
    except errors.TaskNotFound:
        return 0
