"""The SQLite store: WAL, durable by default, safe across threads and processes.

- ``journal_mode=WAL``; ``synchronous=FULL`` by default (an acknowledged write survives
  power loss), ``NORMAL`` on request (survives a process crash, not power loss). Under
  FULL a lease alone commits with ``NORMAL`` (``_write(synced=False)``): the next synced
  commit syncs it, and losing it to a power cut only queues the task again, its token
  dead (the argument is in :meth:`~loops.store.shared.UnitStore.lease_next`).
- One connection per thread, so a threaded gateway can share one store.
- Every write runs in ``BEGIN IMMEDIATE``: SQLite's single writer lock serialises
  writers across processes, so two leases never pick the same row; a busy timeout
  makes writers wait instead of failing.
- Writers of this store first take an advisory ``flock`` on ``<db>.lock`` (POSIX).
  SQLite's own busy handler waits by sleeping 1, 2, 5, 10... ms, leaving the database
  idle while waiters sleep; a blocking ``flock`` hands the lock to the next writer as
  soon as it is released, so several worker processes drain as fast as one.
- Writers take turns, so work done under the lock cannot spread over several
  processes: a completion that finds the lock held by another writer is decided on
  a WAL read while it waits (readers never wait), then written under the lock only
  where its rows did not change meanwhile (:meth:`SqliteStore._completions`).
- sqlite3 errors are translated once, here, into the most specific
  :class:`~loops.errors.StoreError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

from loops import errors
from loops.queue import events, lifecycle, schedules
from loops.queue.artifacts import Artifact, ArtifactKind
from loops.queue.backoff import Backoff
from loops.queue.events import Event, EventDraft
from loops.queue.responsibilities import Responsibility, TaskTemplate
from loops.queue.steps import Step, StepMarker, StepStatus
from loops.queue.tasks import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    CompletionRequest,
    Task,
    TaskCounts,
    TaskSpec,
    TaskStatus,
    evolve,
    new_task,
    task_from_values,
)
from loops.store import sqlfiles
from loops.store.shared import UnitStore, _new_nonce, stop_key
from loops.usage import Usage

if sys.version_info < (3, 12):  # pragma: no branch - one Python per run
    # Python 3.11's sqlite3 adapts every bound None: it looks ``__adapt__`` up on its
    # PrepareProtocol type, which formats an AttributeError message before it is
    # dropped (~3,300 instructions per None; a new task binds eight). An adapter
    # registered for NoneType is found first and hands the None back (~1,100). The
    # value bound is the same NULL; like every sqlite3 adapter it is process-wide.
    # Python 3.12 made that lookup cheap, and the adapter gains nothing there.
    _null: Callable[[None], None] = cast("Callable[[None], None]", {}.get)  # None, in C
    sqlite3.register_adapter(type(None), _null)

_SQL_PACKAGE = "loops.store.sql.sqlite"
Q = sqlfiles.queries(_SQL_PACKAGE)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: a spec's engine options when it sets none (the create path's statement then binds fewer
#: parameters: on Python 3.11 each bound None costs ~1,100 instructions, see above)
_NO_ENGINE_OPTIONS = (None,) * 6
_MS = timedelta(milliseconds=1)
_STATUS = {s.value: s for s in TaskStatus}

#: ids per ``IN (...)`` list (SQLite allows 32766 parameters; smaller lists plan well)
_IN_CHUNK = 500
#: a task's mutable columns (those ``save_task`` writes; no other statement updates a
#: task row), in :func:`_save_row`'s order, then its id: a row of this equal to
#: ``_save_row(t)`` means the stored task is ``t``
_MUTABLE_COLUMNS = (
    "status, attempts, lease_owner, lease_token, lease_expires_at, run_after, result, "
    "error, usage_input_tokens, usage_output_tokens, usage_cached_input_tokens, "
    "usage_cost_usd, updated_at, finished_at, wake_each, id"
)
_MUTABLE_ONE = f"SELECT {_MUTABLE_COLUMNS} FROM tasks WHERE id = ?"
#: held tasks a store remembers having written (see :class:`_SqliteUnit`); past this
#: many (leases another process completed, say), it forgets them all
_HELD_MAX = 4_096
_LEASED, _RUNNING = TaskStatus.LEASED, TaskStatus.RUNNING
#: accepted values of ``synchronous``
SYNC_MODES = ("full", "normal")
#: WAL bytes after which a commit checkpoints at ``synchronous=NORMAL``, set as
#: ``wal_autocheckpoint`` pages of the file's own page size (16,384 at 1 KiB, 4,096 at
#: 4 KiB; SQLite's default, kept at FULL: 1,000 pages). Each checkpoint pays two fsyncs
#: (the WAL, then the database) and rewrites the pages it copies; a create writes 4 WAL
#: pages (the raw one-row insert loop 2), so at SQLite's default a create paid a
#: checkpoint every 250 commits, 30-70 µs of fsync wall time per create on a shared
#: disk. At 16 MiB the fsyncs are a quarter as many and the hot pages (each b-tree's
#: right edge) are copied once per checkpoint instead of four times. It is counted in
#: bytes, not pages: kept at 4,000 pages when new files got 1 KiB pages, it checkpointed
#: four times as often (a batched drain of 5,000 tasks: 10 fdatasyncs instead of 4, and
#: 3,388 preads instead of 2,076). The WAL file grows to ~16 MiB and is reused from its
#: start after each checkpoint. At FULL every commit fsyncs the WAL anyway, and until
#: the WAL first wraps each of those fsyncs also commits the file's new size: a WAL four
#: times larger made the first ~16 MiB of FULL commits slower (2,000 creates on a new
#: file: 890-1,125 µs each vs 750-860 µs), for no gain.
WAL_AUTOCHECKPOINT_BYTES = 16 * 1_024 * 1_024
#: page size of a new database (SQLite's default: 4,096; an existing database keeps its
#: own). A create writes four pages (the task row, its tasks_ready entry, its event and
#: that event's events_task entry), each a WAL frame that SQLite checksums and the kernel
#: copies whole: at 4 KiB the checksums alone were 20,000 of a create's 104,000
#: instructions, and 16 KiB went through pwrite. At 1 KiB a create costs ~35% less CPU;
#: a batched drain ~1.4% more instructions (64 tasks' rows and index entries span more
#: pages); rows longer than ~1,000 bytes (long prompts) spill into overflow pages, and
#: still cost less per create than at 4 KiB (2,000-character prompts: 38-53 µs CPU vs
#: 58-70 µs); b-trees are one level deeper at a million tasks.
PAGE_SIZE = 1_024


#: forks of this process so far (in a child: its parent's count + 1). A connection and
#: its lock descriptor belong to the process that opened them; comparing this count
#: finds a forked child's inherited ones without an ``os.getpid()`` system call per
#: operation.
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_count_fork)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch (exact integer arithmetic)."""
    return (moment - _EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of ``ms`` milliseconds since the epoch."""
    return _EPOCH + timedelta(milliseconds=ms)


_ZERO_USAGE = Usage()


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)


def _task(r: Sequence[Any]) -> Task:
    """A task from a ``SELECT *`` row (positional: this runs for every leased task).

    ``fromtimestamp(ms / 1000)`` is exact for millisecond values (the float's error is
    far below the half microsecond it rounds to) and twice as fast as epoch + timedelta.
    """
    stamp = datetime.fromtimestamp
    expires, finished = r[17], r[31]
    # a task that has not reported usage shares one zero Usage (frozen), as new tasks do:
    # a frozen dataclass's __init__ cost more than the rest of a column group
    no_usage = r[25] == 0 and r[26] == 0 and r[27] == 0 and r[28] is None
    return task_from_values((
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
        _STATUS[r[12]], r[13], r[14], r[15], r[16],
        None if expires is None else stamp(expires / 1000, UTC),
        stamp(r[18] / 1000, UTC),
        r[19], r[20], r[21], r[22], r[23], r[24],
        _ZERO_USAGE if no_usage else Usage(r[25], r[26], r[27], r[28]),
        stamp(r[29] / 1000, UTC),
        stamp(r[30] / 1000, UTC),
        None if finished is None else stamp(finished / 1000, UTC),
        bool(r[32]),
    ))  # fmt: skip


def _opt_ms(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _MS


def _save_row(t: Task) -> tuple[Any, ...]:
    # three per drained task (lease, completion, the completion's read-back): the
    # optional stamps are converted inline, not by two calls of _opt_ms
    u, expires, finished = t.usage, t.lease_expires_at, t.finished_at
    return (
        t.status._value_,  # not .value: the enum's property costs 3x a plain attribute
        t.attempts,
        t.lease_owner,
        t.lease_token,
        None if expires is None else (expires - _EPOCH) // _MS,
        (t.run_after - _EPOCH) // _MS,
        t.result,
        t.error,
        u.input_tokens,
        u.output_tokens,
        u.cached_input_tokens,
        u.cost_usd,
        (t.updated_at - _EPOCH) // _MS,
        None if finished is None else (finished - _EPOCH) // _MS,
        t.wake_each,
        t.id,
    )


def _insert_row(t: Task) -> tuple[Any, ...]:
    u = t.usage
    return (
        t.type, t.title, t.prompt, t.success, t.check, t.provider, t.model, t.cwd,
        t.max_iterations, t.min_tests, t.priority, t.status.value, t.attempts, t.max_attempts,
        t.lease_owner, t.lease_token, _opt_ms(t.lease_expires_at), to_ms(t.run_after),
        t.parent_id, t.depth, t.idempotency_key, t.responsibility, t.result, t.error,
        u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cost_usd,
        to_ms(t.created_at), to_ms(t.updated_at), _opt_ms(t.finished_at),
    )  # fmt: skip


def _event(row: Sequence[Any]) -> Event:
    return Event(row[0], from_ms(row[1]), row[2], row[3], json.loads(row[4]))


def _step(row: Sequence[Any]) -> Step:
    return Step(
        row[0], row[1], StepStatus(row[2]), row[3], row[4], from_ms(row[5]), from_ms(row[6])
    )


def _artifact(row: Sequence[Any]) -> Artifact:
    return Artifact(row[0], row[1], row[2], ArtifactKind(row[3]), row[4], row[5], row[6],
                    from_ms(row[7]))  # fmt: skip


def _responsibility(row: Sequence[Any]) -> Responsibility:
    return Responsibility(
        name=row[0],
        schedule=schedules.Schedule.from_text(row[1]),
        template=TaskTemplate.from_dict(json.loads(row[2])),
        enabled=bool(row[3]),
        last_dispatched_at=_opt_dt(row[4]),
        next_due_at=from_ms(row[5]),
        last_task_id=row[6],
    )


def translate(exc: sqlite3.Error, path: str) -> errors.StoreError:
    """The most specific :class:`~loops.errors.StoreError` for a sqlite3 error."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = f"{path}: {exc}"
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc):
        return errors.StoreLocked(
            f"{text} (another process held the write lock past the busy timeout)"
        )
    if primary == sqlite3.SQLITE_FULL:
        return errors.StoreFull(f"{text} (free disk space, then retry)")
    if primary == sqlite3.SQLITE_READONLY or (
        primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR) and _read_only(path)
    ):
        return errors.StoreReadOnly(
            f"{text}: the database or its folder is read-only (WAL needs to write beside "
            "the file; check the file system's mount and the permissions)"
        )
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_NOTADB,
                   sqlite3.SQLITE_CORRUPT):  # fmt: skip
        return errors.StoreUnavailable(f"{text} (check QUEUE_DB_PATH points at a queue database)")
    return errors.StoreError(text)


def _read_only(path: str) -> bool:
    """Whether the database file or its folder cannot be written (a read-only mount too)."""
    file = Path(path)
    folder = file.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(folder, os.W_OK) or (file.exists() and not os.access(file, os.W_OK))


class _SqliteUnit:
    """The :class:`~loops.store.shared.Unit` primitives over one connection.

    ``held`` (shared by the store's units) remembers, by id, each task :meth:`save_tasks`
    wrote as held (leased or running) and the row it wrote: :meth:`get_tasks` takes
    them out and reads back only their mutable columns (see :meth:`_held_tasks`).
    """

    __slots__ = ("c", "held")

    def __init__(
        self, connection: sqlite3.Connection, held: dict[int, tuple[Task, tuple[Any, ...]]]
    ) -> None:
        self.c = connection
        self.held = held

    def get_task(self, task_id: int) -> Task | None:
        row = self.c.execute(Q["get_task"], (task_id,)).fetchone()
        return None if row is None else _task(row)

    def task_by_key(self, key: str) -> Task | None:
        row = self.c.execute(Q["task_by_key"], (key,)).fetchone()
        return None if row is None else _task(row)

    def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        found: list[Task] = []
        if self.held:
            task_ids = self._held_tasks(task_ids, found)
            if not task_ids:
                return found
        if len(task_ids) == 1:  # one completion: the prepared get_task, no IN list built
            row = self.c.execute(Q["get_task"], (task_ids[0],)).fetchone()
            if row is not None:
                found.append(_task(row))
            return found
        for start in range(0, len(task_ids), _IN_CHUNK):
            chunk = task_ids[start : start + _IN_CHUNK]
            sql = f"SELECT * FROM tasks WHERE id IN ({', '.join('?' * len(chunk))})"
            found.extend(_task(r) for r in self.c.execute(sql, chunk))
        return found

    def _held_tasks(self, task_ids: Sequence[int], found: list[Task]) -> list[int]:
        """Add to ``found`` the tasks of ``task_ids`` whose rows are as this store wrote them.

        A worker completes what it leased, and the completion reads the tasks back:
        when a row's mutable columns (the only ones any statement updates) still hold
        what this store's lease or heartbeat wrote, the row is the task written, and its
        other 18 columns need not be read again nor the task built again. Each
        remembered task is taken out (used once). Returns the ids left to read in full:
        not remembered, changed since (by another process, or a write undone), or gone.
        """
        pop = self.held.pop
        known = {i: h for i in task_ids if (h := pop(i, None)) is not None}
        if not known:
            return list(task_ids)
        ids = list(known)
        if len(ids) == 1:
            rows = self.c.execute(_MUTABLE_ONE, ids).fetchall()
        else:
            rows = []
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {_MUTABLE_COLUMNS} FROM tasks WHERE id IN ({marks})"
                rows.extend(self.c.execute(sql, chunk))
        same = set()
        for row in rows:
            task, written = known[row[-1]]
            if row == written:
                found.append(task)
                same.add(task.id)
        return [i for i in task_ids if i not in same]

    def with_active_children(self, task_ids: Sequence[int]) -> set[int]:
        busy: set[int] = set()
        for start in range(0, len(task_ids), _IN_CHUNK):
            chunk = task_ids[start : start + _IN_CHUNK]
            # INDEXED BY: with a long id list the planner preferred tasks_status_id and
            # walked every active task (2 ms per 64 completions at 20k queued)
            sql = (
                "SELECT DISTINCT parent_id FROM tasks INDEXED BY tasks_parent WHERE parent_id IN "
                f"({', '.join('?' * len(chunk))}) AND status IN "
                "('queued', 'leased', 'running', 'waiting_children', 'waiting_approval')"
            )
            busy.update(r[0] for r in self.c.execute(sql, chunk))
        return busy

    def insert_task(self, task: Task) -> Task:
        cursor = self.c.execute(Q["insert_task"], _insert_row(task))
        assert cursor.lastrowid is not None
        return evolve(task, id=cursor.lastrowid)

    def save_tasks(self, tasks: Sequence[Task]) -> None:
        rows = [_save_row(t) for t in tasks]
        if len(rows) == 1:
            self.c.execute(Q["save_task"], rows[0])
        else:
            self.c.executemany(Q["save_task"], rows)
        held = self.held
        if len(held) >= _HELD_MAX:
            held.clear()
        for task, row in zip(tasks, rows, strict=True):
            if task.status is _LEASED or task.status is _RUNNING:
                held[task.id] = (task, row)
            elif held:
                held.pop(task.id, None)

    def save_tasks_if_unchanged(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        """Run ``save_task_if_unchanged`` for each row; whether every row was stored."""
        return self.c.executemany(Q["save_task_if_unchanged"], rows).rowcount == len(rows)

    def add_events(self, now: datetime, drafts: Sequence[EventDraft]) -> None:
        ts = to_ms(now)
        dumps = events.data_text
        if len(drafts) == 1:  # a lease's or a completion's one event: no list, no executemany
            (d,) = drafts
            self.c.execute(Q["insert_event"], (ts, d.type, d.task_id, dumps(d.data)))
            return
        self.c.executemany(
            Q["insert_event"], [(ts, d.type, d.task_id, dumps(d.data)) for d in drafts]
        )

    def add_event(self, now: datetime, draft: EventDraft) -> Event:
        data = json.loads(json.dumps(draft.data))
        cursor = self.c.execute(
            Q["insert_event"], (to_ms(now), draft.type, draft.task_id, json.dumps(data))
        )
        assert cursor.lastrowid is not None
        return Event(cursor.lastrowid, now, draft.type, draft.task_id, data)

    def ready_tasks(self, now: datetime, limit: int, types: Sequence[str] | None) -> list[Task]:
        if types is None:
            rows = self.c.execute(Q["ready_tasks"], (to_ms(now), limit)).fetchall()
        else:
            marks = ", ".join("?" * len(types))
            sql = Q["ready_tasks"].replace(
                "AND run_after <= ?", f"AND run_after <= ? AND type IN ({marks})"
            )
            rows = self.c.execute(sql, (to_ms(now), *types, limit)).fetchall()
        return [_task(r) for r in rows]

    def promote_due(self, now: datetime) -> int:
        """Move deferred tasks whose ``run_after`` came by ``now`` into tasks_ready.

        Returns how many moved. Their ``updated_at`` becomes their ``run_after``.
        """
        return self.c.execute(Q["promote_due"], (to_ms(now),)).rowcount

    def expired_tasks(self, now: datetime, limit: int) -> list[Task]:
        return [_task(r) for r in self.c.execute(Q["expired_tasks"], (to_ms(now), limit))]

    def has_work(self, now: datetime, types: Sequence[str] | None) -> bool:
        ms = to_ms(now)
        if self.c.execute(Q["any_expired"], (ms,)).fetchone() is not None:
            return True
        ready, due = self.c.execute(Q["any_ready"], (ms, ms)).fetchone()
        if types is None or due:
            return bool(ready or due)
        return bool(self.ready_tasks(now, 1, types))

    def children(self, parent_id: int) -> list[tuple[int, TaskStatus]]:
        return [(r[0], _STATUS[r[1]]) for r in self.c.execute(Q["children"], (parent_id,))]

    def list_tasks(
        self,
        status: TaskStatus | None,
        parent_id: int | None,
        task_type: str | None,
        limit: int,
        before_id: int | None,
    ) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None and status is not TaskStatus.QUEUED:
            # `status <> 'queued'` lets the partial index tasks_status_id serve it
            where.append("status = ? AND status <> 'queued'")
            params.append(status.value)
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(parent_id)
        if task_type is not None:
            where.append("type = ?")
            params.append(task_type)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        if status is TaskStatus.QUEUED:
            # queued tasks are indexed by tasks_ready, (priority, id), when due, and by
            # tasks_deferred otherwise: one range per priority, each in id order, merged
            # by SQLite with the deferred ones (sorted alone; no sort of every queued task)
            ready = "status = 'queued' AND run_after <= updated_at"
            arms = [
                " AND ".join([f"SELECT * FROM tasks WHERE {ready}", f"priority = {p}", *where])
                for p in range(PRIORITY_MIN, PRIORITY_MAX + 1)
            ]
            arms.append(
                " AND ".join(
                    [
                        "SELECT * FROM tasks INDEXED BY tasks_deferred"
                        " WHERE status = 'queued' AND run_after > updated_at",
                        *where,
                    ]
                )
            )
            sql = " UNION ALL ".join(arms) + " ORDER BY id DESC LIMIT ?"
            params *= len(arms)
        else:
            sql = "SELECT * FROM tasks"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY id DESC LIMIT ?"
        return [_task(r) for r in self.c.execute(sql, (*params, limit))]

    def count_related(self, task_id: int) -> TaskCounts:
        steps, children, artifacts = self.c.execute(Q["count_related"], (task_id,)).fetchone()
        return TaskCounts(steps=steps, children=children, artifacts=artifacts)

    def events(self, after_id: int | None, limit: int, task_id: int | None) -> list[Event]:
        if after_id is not None:
            if task_id is None:
                rows = self.c.execute(Q["events_after"], (after_id, limit))
            else:
                rows = self.c.execute(Q["events_after_for_task"], (task_id, after_id, limit))
        elif task_id is None:
            rows = self.c.execute(Q["events_latest"], (limit,))
        else:
            rows = self.c.execute(Q["events_latest_for_task"], (task_id, limit))
        return [_event(r) for r in rows]

    def delete_oldest_events(self, before: datetime, limit: int) -> int:
        return self.c.execute(Q["delete_oldest_events"], (limit, to_ms(before))).rowcount

    def upsert_step(self, task_id: int, marker: StepMarker, now: datetime) -> Step:
        ts = to_ms(now)
        row = self.c.execute(
            Q["upsert_step"],
            (
                task_id,
                marker.name,
                marker.status.value,
                marker.idempotency_key,
                marker.note,
                ts,
                ts,
            ),
        ).fetchone()
        return _step(row)

    def steps(self, task_id: int) -> list[Step]:
        return [_step(r) for r in self.c.execute(Q["steps"], (task_id,))]

    def get_state(self, task_id: int, key: str) -> str | None:
        row = self.c.execute(Q["get_state"], (task_id, key)).fetchone()
        return None if row is None else str(row[0])

    def put_state(self, task_id: int, key: str, value_json: str, now: datetime) -> None:
        self.c.execute(Q["put_state"], (task_id, key, value_json, to_ms(now)))

    def insert_artifact(self, artifact: Artifact) -> Artifact:
        a = artifact
        cursor = self.c.execute(
            Q["insert_artifact"],
            (a.task_id, a.name, a.kind.value, a.size, a.sha256, a.path, to_ms(a.created_at)),
        )
        assert cursor.lastrowid is not None
        return dataclasses.replace(a, id=cursor.lastrowid)

    def artifacts(self, task_id: int | None, limit: int) -> list[Artifact]:
        if task_id is None:
            rows = self.c.execute(Q["artifacts"], (limit,))
        else:
            rows = self.c.execute(Q["artifacts_for_task"], (task_id, limit))
        return [_artifact(r) for r in rows]

    def get_artifact(self, artifact_id: int) -> Artifact | None:
        row = self.c.execute(Q["get_artifact"], (artifact_id,)).fetchone()
        return None if row is None else _artifact(row)

    def responsibilities(self) -> list[Responsibility]:
        return [_responsibility(r) for r in self.c.execute(Q["responsibilities"])]

    def save_responsibility(self, resp: Responsibility) -> None:
        self.c.execute(
            Q["save_responsibility"],
            (
                resp.name,
                resp.schedule.to_text(),
                json.dumps(resp.template.to_dict(), sort_keys=True),
                int(resp.enabled),
                _opt_ms(resp.last_dispatched_at),
                to_ms(resp.next_due_at),
                resp.last_task_id,
            ),
        )

    def counts_by_status(self) -> dict[TaskStatus, int]:
        return {_STATUS[s]: n for s, n in self.c.execute(Q["counts_by_status"])}

    def held_tasks(self, limit: int) -> list[Task]:
        return [_task(r) for r in self.c.execute(Q["held_tasks"], (limit,))]

    def held_by(self, owner: str) -> list[Task]:
        return [_task(r) for r in self.c.execute(Q["held_by"], (owner,))]

    def is_stopped(self, owner: str) -> bool:
        return self.c.execute(Q["is_stopped"], (stop_key(owner),)).fetchone() is not None

    def mark_stopped(self, owner: str, now: datetime, forget_before: datetime) -> None:
        self.c.execute(Q["forget_stopped"], (to_ms(forget_before),))
        self.c.execute(Q["mark_stopped"], (stop_key(owner), to_ms(now)))

    def clear_stopped(self, owner: str) -> None:
        self.c.execute(Q["clear_stopped"], (stop_key(owner),))

    def recent_failures(self, limit: int) -> list[Task]:
        return [_task(r) for r in self.c.execute(Q["recent_failures"], (limit,))]


class SqliteStore(UnitStore):
    """The queue in one SQLite file (WAL), shared by threads and processes."""

    backend: ClassVar[str] = "sqlite"
    supports_notify: ClassVar[bool] = False
    supports_multiprocess: ClassVar[bool] = True
    serial_writes: ClassVar[bool] = True  # one writer per database file (and the flock)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        busy_timeout_ms: int = 30_000,
        nonce: Callable[[], str] = _new_nonce,
    ) -> None:
        """Open (and create the folder of) the database at ``path``.

        Args:
            path: the database file; its folder also holds artifact contents.
            synchronous: ``full`` (durable across power loss) or ``normal``.
            busy_timeout_ms: how long a writer waits for another's lock.
            nonce: source of lease-token nonces (injected in tests).

        Raises:
            ConfigError: ``synchronous`` is not one of :data:`SYNC_MODES`.
        """
        super().__init__(nonce=nonce)
        if synchronous not in SYNC_MODES:
            raise errors.ConfigError(
                f"invalid SQLite synchronous mode {synchronous!r}; use one of: "
                + ", ".join(SYNC_MODES)
            )
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock_fds: list[int] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._label = str(self.path)
        #: held tasks written here and not yet read back (see _SqliteUnit._held_tasks)
        self._held: dict[int, tuple[Task, tuple[Any, ...]]] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.StoreUnavailable(
                f"cannot create the folder of {self.path}: {exc.strerror}"
            ) from exc

    # -- connections ----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.forks == _forks:
            return connection
        if connection is not None:
            # a forked child must not use its parent's connection or lock descriptor
            self._local = threading.local()
        if self._closed:
            raise errors.StoreUnavailable(f"the store at {self._label} is closed")
        with self._translated():
            connection = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_ms / 1000,
                cached_statements=256,
            )
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            # before WAL: only a database without a page yet takes it (see PAGE_SIZE)
            connection.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise errors.StoreUnavailable(
                    f"{self._label}: cannot switch to WAL mode (got {mode}); "
                    "put the database on a local file system"
                )
            connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            if self.synchronous == "normal":
                page_bytes = connection.execute("PRAGMA page_size").fetchone()[0]
                pages = WAL_AUTOCHECKPOINT_BYTES // page_bytes
                connection.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        self._local.connection = connection
        self._local.forks = _forks
        with self._all_lock:
            self._all.append(connection)
        return connection

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise translate(exc, self._label) from exc

    def _lock_fd(self) -> int | None:
        self._connection()  # resets the thread's state after a fork
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None and fcntl is not None:
            lock_path = f"{self.path}.lock"
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                    return None  # a read-only folder: SQLite's own locking still applies
                raise errors.StoreUnavailable(f"cannot open {lock_path}: {exc.strerror}") from exc
            self._local.lock_fd = fd
            with self._all_lock:
                self._lock_fds.append(fd)
        return fd

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        fd = self._lock_fd()
        if fd is None or fcntl is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _write(self, *, synced: bool = True) -> Iterator[_SqliteUnit]:
        # one generator, not three nested context managers (_writer_lock, _translated):
        # every lease and completion runs it, and each manager cost ~5,000 instructions
        fd = self._lock_fd()  # also opens (or re-opens after a fork) the connection
        connection: sqlite3.Connection = self._local.connection
        # synchronous is per connection and cannot change inside a transaction
        relaxed = not synced and self.synchronous == "full"
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if relaxed:
                connection.execute("PRAGMA synchronous = NORMAL")
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteUnit(connection, self._held)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            finally:
                if relaxed:
                    connection.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise translate(exc, self._label) from exc
        finally:
            if fd is not None and fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _read(self) -> Iterator[_SqliteUnit]:
        connection = self._connection()
        try:
            connection.execute("BEGIN")
            try:
                yield _SqliteUnit(connection, self._held)
            finally:
                connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc, self._label) from exc

    # -- hot path -------------------------------------------------------------------

    def _lease_work(self, now: datetime, types: Sequence[str] | None) -> tuple[bool, bool]:
        """One autocommit statement (``lease_work``): a statement reads one snapshot."""
        ms = (now - _EPOCH) // _MS
        params: tuple[object, ...]
        if types is None:
            sql, params = Q["lease_work"], (ms, ms, ms)
        else:
            marks = ", ".join("?" * len(types))
            sql = Q["lease_work"].replace(
                "AND run_after <= ?)", f"AND run_after <= ? AND type IN ({marks}))", 1
            )
            params = (ms, *types, ms, ms)
        connection = self._connection()
        with self._translated():
            ready, expired, due = connection.execute(sql, params).fetchone()
        if due:
            # deferred tasks came due: into tasks_ready before the lease reads it (for a
            # typed lease they may be of other types: a hint, the write decides). Losing
            # this to a power cut is harmless: the next probe promotes them again.
            with self._write(synced=False) as unit:
                ready = unit.promote_due(now) > 0 or ready
        return bool(ready or expired), bool(expired)

    def create_task(self, spec: TaskSpec, *, now: datetime, max_attempts: int) -> tuple[Task, bool]:
        """Create a root task; without an idempotency key, by the shortest path.

        With a key, the shared operation (look the key up, then insert). Without one
        there is nothing to look up: one autocommit ``INSERT`` (``insert_root_task``) is
        its own transaction, and trigger ``tasks_created_event`` writes the task's
        ``task.created`` event inside it (migration 0006), without the generic unit
        machinery. The insert binds at most the 16 columns a new root task sets (the
        statement variants write a spec's unset engine options, success criteria and
        responsibility as literal NULLs); the lease, outcome and usage columns keep
        their defaults, which are what ``new_task`` sets.
        Like every writer it first takes the writer lock; SQLite's write lock is then
        taken by the statement itself (waiting on the busy handler like ``BEGIN
        IMMEDIATE`` would: the statement holds no earlier snapshot).
        """
        if spec.idempotency_key is not None:
            return super().create_task(spec, now=now, max_attempts=max_attempts)
        # the row holds what new_task() sets; the task is built once its id is known
        ms = (now - _EPOCH) // _MS
        run_after = ms if spec.run_after is None else to_ms(spec.run_after)
        attempts = spec.max_attempts or max_attempts
        engine = (spec.check, spec.provider, spec.model, spec.cwd, spec.max_iterations,
                  spec.min_tests)  # fmt: skip
        # a None left out of the parameters is a NULL written by the statement instead
        if engine != _NO_ENGINE_OPTIONS:
            sql = Q["insert_root_task"]
            row: tuple[Any, ...] = (
                spec.type, spec.title, spec.prompt, spec.success, *engine, spec.priority,
                attempts, run_after, spec.responsibility, ms, ms,
            )  # fmt: skip
        elif spec.success is None and spec.responsibility is None:
            sql = Q["insert_root_task_bare"]
            row = (spec.type, spec.title, spec.prompt, spec.priority, attempts, run_after, ms, ms)
        else:
            sql = Q["insert_root_task_plain"]
            row = (
                spec.type, spec.title, spec.prompt, spec.success, spec.priority, attempts,
                run_after, spec.responsibility, ms, ms,
            )  # fmt: skip
        local = self._local
        try:  # this thread's connection and lock descriptor, opened by an earlier write
            connection: sqlite3.Connection = local.connection
            fd: int | None = local.lock_fd
            if local.forks != _forks:
                raise AttributeError("forked")
        except AttributeError:
            fd = self._lock_fd()  # also opens (or re-opens after a fork) the connection
            connection = self._local.connection
        lock = fd if fcntl is not None else None
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            task_id = connection.execute(sql, row).lastrowid
        except sqlite3.Error as exc:
            raise translate(exc, self._label) from exc
        finally:
            if lock is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
        assert task_id is not None  # the rowid of the row just inserted
        return new_task(spec, now=now, max_attempts=max_attempts, task_id=task_id), True

    def _completions(
        self, requests: Sequence[CompletionRequest], now: datetime, backoff: Backoff
    ) -> list[tuple[lifecycle.Transition | None, errors.LoopsError | None]]:
        """Store a batch of completions; decided while another writer holds the lock.

        Writers take turns (one process at a time), so whatever runs under the lock is
        what several worker processes cannot share out between them. When the lock is
        free, the batch is decided and stored under it at once (one process alone pays
        nothing more). When another writer holds it, the tasks are read on a WAL
        snapshot (readers never wait) and decided, and the rows and events built, while
        waiting; the locked transaction then only writes them. Each row is stored only
        if none of its mutable columns changed since it was read, and only if the same
        tasks still have (or lack) active children; if either moved meanwhile (a
        heartbeat, a cancel, a reclaim, a new child), the transaction is undone and the
        batch decided again under the lock.

        A completion that waits on named children reads those children's statuses for
        its decision; a batch holding one is always decided under the lock.
        """
        if any(r.completion.waiting_on for r in requests) or not self._writer_lock_busy():
            try:
                return super()._completions(requests, now, backoff)
            finally:
                self._writer_unlock()
        with self._read() as unit:
            plan = self._plan_completions(unit, requests, now, backoff)
        ts, dumps = (now - _EPOCH) // _MS, events.data_text
        rows = [(*_save_row(t.task), *_save_row(old)[:-1]) for old, t in plan.changes]
        drafts = [(ts, e.type, e.task_id, dumps(e.data)) for _, t in plan.changes for e in t.events]
        try:
            with self._write() as writer:

                def store() -> None:
                    if not writer.save_tasks_if_unchanged(rows):
                        raise _Changed
                    writer.c.executemany(Q["insert_event"], drafts)

                if writer.with_active_children(plan.found) != plan.busy:
                    raise _Changed
                return self._store_completions(writer, requests, plan, now, store)
        except _Changed:
            return super()._completions(requests, now, backoff)

    def _writer_lock_busy(self) -> bool:
        """Take the writer lock if no one holds it (``False``); ``True`` if another does.

        Taken here, the lock is held until :meth:`_writer_unlock`: a ``flock`` asked
        again on the same descriptor (by :meth:`_writer_lock`) is granted at once, and
        the first ``LOCK_UN`` releases it.
        """
        fd = self._lock_fd()
        if fd is None or fcntl is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False

    def _writer_unlock(self) -> None:
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close every connection this store opened (from any thread)."""
        self._closed = True
        with self._all_lock:
            connections, self._all = self._all, []
            fds, self._lock_fds = self._lock_fds, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._local = threading.local()

    # -- migrations -----------------------------------------------------------------

    def _applied(self, connection: sqlite3.Connection) -> set[int]:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if exists is None:
            return set()
        return {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}

    def is_new(self) -> bool:
        """Whether the database holds no queue schema yet (created on first use)."""
        connection = self._connection()
        with self._translated():
            tables = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()[0]
        return int(tables) == 0

    def pending_migrations(self) -> list[str]:
        connection = self._connection()
        with self._translated():
            applied = self._applied(connection)
        return [m.name for m in sqlfiles.migrations(_SQL_PACKAGE) if m.version not in applied]

    def migrate(self) -> list[str]:
        connection = self._connection()
        applied_now: list[str] = []
        with self._writer_lock(), self._translated():
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
                )
                applied = self._applied(connection)
                for migration in sqlfiles.migrations(_SQL_PACKAGE):
                    if migration.version in applied:
                        continue
                    for statement in _statements(migration.sql):
                        connection.execute(statement)
                    connection.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) "
                        "VALUES (?, ?, ?)",
                        (migration.version, migration.name, to_ms(datetime.now(UTC))),
                    )
                    applied_now.append(migration.name)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        return applied_now

    # -- artifact contents ----------------------------------------------------------

    def _write_blob(self, sha256: str, content: bytes) -> str:
        relative = Path("artifacts") / sha256[:2] / sha256
        target = self.path.parent / relative
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{sha256}.{os.getpid()}.{threading.get_ident()}.tmp")
                with open(tmp, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    if self.synchronous == "full":
                        os.fsync(handle.fileno())
                os.replace(tmp, target)
            except OSError as exc:
                raise errors.StoreError(
                    f"cannot store artifact content at {target}: {exc}"
                ) from exc
        return relative.as_posix()

    def _read_blob(self, path: str) -> bytes:
        target = self.path.parent / path
        try:
            return target.read_bytes()
        except OSError as exc:
            raise errors.NotFound(f"artifact content {target} is missing: {exc.strerror}") from exc


class _Changed(Exception):
    """A task changed between the read a completion was decided on and its write."""


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into complete statements."""
    buffer: list[str] = []
    for line in script.splitlines():
        buffer.append(line)
        text = "\n".join(buffer).strip()
        if text and sqlite3.complete_statement(text):
            yield text
            buffer = []
    rest = "\n".join(buffer).strip()
    if rest and not all(line.strip().startswith("--") or not line.strip() for line in buffer):
        raise errors.StoreError(f"incomplete statement at the end of a migration: {rest[:80]}")
