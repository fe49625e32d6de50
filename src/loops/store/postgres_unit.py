"""Rows and the row-level primitives of the PostgreSQL store (one transaction each).

:class:`PgUnit` implements :class:`loops.store.shared.Unit` over one psycopg connection
in pipeline mode; :mod:`loops.store.postgres` opens the transactions and owns the rules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg import Connection, Cursor, sql

from loops.queue import schedules
from loops.queue.artifacts import Artifact, ArtifactKind
from loops.queue.events import Event, EventDraft
from loops.queue.responsibilities import Responsibility, TaskTemplate
from loops.queue.steps import Step, StepMarker, StepStatus
from loops.queue.tasks import Task, TaskCounts, TaskStatus, task_from_values
from loops.store import sqlfiles
from loops.store.shared import RECLAIM_BATCH, created_event, stop_key
from loops.usage import Usage

SQL_PACKAGE = "loops.store.sql.postgres"
#: the named queries of sql/postgres/queries.sql
Q = sqlfiles.queries(SQL_PACKAGE)
_STATUS = {s.value: s for s in TaskStatus}
_NO_USAGE = Usage()
_NOTHING_SPENT = (0, 0, 0, None)  # the usage columns of _NO_USAGE


# -- rows ---------------------------------------------------------------------------


def task_row(row: Sequence[Any]) -> Task:
    """A task from a ``SELECT *`` row (the columns of 0001_init.sql, then wake_each)."""
    spent = row[25:29]  # a task that has not run shares the one empty Usage
    usage = _NO_USAGE if spent == _NOTHING_SPENT else Usage(*spent)
    return task_from_values((*row[:12], _STATUS[row[12]], *row[13:25], usage, *row[29:33]))


def insert_row(t: Task) -> tuple[Any, ...]:
    u = t.usage
    return (
        t.type, t.title, t.prompt, t.success, t.check, t.provider, t.model, t.cwd,
        t.max_iterations, t.min_tests, t.priority, t.status.value, t.attempts, t.max_attempts,
        t.lease_owner, t.lease_token, t.lease_expires_at, t.run_after, t.parent_id, t.depth,
        t.idempotency_key, t.responsibility, t.result, t.error, u.input_tokens,
        u.output_tokens, u.cached_input_tokens, u.cost_usd, t.created_at, t.updated_at,
        t.finished_at,
    )  # fmt: skip


def _saved(t: Task) -> dict[str, Any]:
    """The mutable columns of ``t`` as one ``save_tasks`` JSON object."""
    u = t.usage
    return {
        "id": t.id, "status": t.status.value, "attempts": t.attempts,
        "lease_owner": t.lease_owner, "lease_token": t.lease_token,
        "lease_expires_at": t.lease_expires_at, "run_after": t.run_after,
        "result": t.result, "error": t.error, "uin": u.input_tokens, "uout": u.output_tokens,
        "ucached": u.cached_input_tokens, "ucost": u.cost_usd, "updated_at": t.updated_at,
        "finished_at": t.finished_at, "wake_each": t.wake_each,
    }  # fmt: skip


def lease_rows(rows: Sequence[Sequence[Any]]) -> tuple[list[Task], list[Task], bool]:
    """``(expired, leased, stopped)`` from the rows of ``lease_now``: the lapsed leases
    it locked instead of leasing, the tasks it leased (best first), whether the worker
    is stopped."""
    expired: list[Task] = []
    leased: list[Task] = []
    stopped = False
    for row in rows:
        kind = row[0]
        if kind == 1:
            leased.append(task_row(row[1:]))
        elif kind == 0:
            expired.append(task_row(row[1:]))
        else:
            stopped = True
    if len(leased) > 1:  # the UPDATE returns them in no particular order
        leased.sort(key=_best_first)
    return expired, leased, stopped


def _best_first(task: Task) -> tuple[int, int]:
    return task.priority, task.id


def _ids(ids: Sequence[int]) -> str:
    """``ids`` as the text of a ``bigint[]`` parameter (``%s::bigint[]``): one string
    for the server to parse, where psycopg would build the array in Python."""
    return "{" + ",".join(map(str, ids)) + "}"


def _texts(values: Sequence[str]) -> str:
    """``values`` as the text of a ``text[]`` parameter, each element quoted."""
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def _json(value: Any) -> str:
    """``value`` as JSON text for a ``::jsonb`` parameter (orjson: times as RFC 3339)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _event(row: Sequence[Any]) -> Event:
    return Event(row[0], row[1], row[2], row[3], row[4])


def _step(row: Sequence[Any]) -> Step:
    return Step(row[0], row[1], StepStatus(row[2]), row[3], row[4], row[5], row[6])


def _artifact(row: Sequence[Any]) -> Artifact:
    return Artifact(row[0], row[1], row[2], ArtifactKind(row[3]), row[4], row[5], row[6], row[7])


def _responsibility(row: Sequence[Any]) -> Responsibility:
    return Responsibility(
        name=row[0],
        schedule=schedules.Schedule.from_text(row[1]),
        template=TaskTemplate.from_dict(json.loads(row[2])),
        enabled=row[3],
        last_dispatched_at=row[4],
        next_due_at=row[5],
        last_task_id=row[6],
    )


class PgUnit:
    """The :class:`~loops.store.shared.Unit` primitives inside one transaction.

    In a write unit every task row read to decide on is locked (``FOR UPDATE``). Saved
    tasks are buffered until the next read (which must see them) or the end, and events
    until the end, so that a transaction usually writes both in one statement, under
    the events lock (:meth:`flush`).
    """

    __slots__ = ("c", "locking", "pending", "saves")

    def __init__(self, connection: Connection[Any], *, locking: bool) -> None:
        self.c = connection
        self.locking = locking
        self.pending: list[tuple[datetime, EventDraft]] = []
        self.saves: dict[int, Task] = {}  # task id -> its latest version, unsaved

    def _one(self, query: str, params: Sequence[Any] | dict[str, Any]) -> Any:
        self._write_saves()
        return self.c.execute(query, params).fetchone()

    def _all(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        self._write_saves()
        return self.c.execute(query, params).fetchall()

    # tasks
    def get_task(self, task_id: int) -> Task | None:
        row = self._one(Q["get_task_for_update" if self.locking else "get_task"], (task_id,))
        return None if row is None else task_row(row)

    def completion_view(
        self,
        task_ids: Sequence[int],
        done: tuple[datetime, Sequence[tuple[int, str, str | None]]] | None = None,
    ) -> tuple[list[Task], dict[int, dict[int, TaskStatus]], dict[int, Task]]:
        """In one round trip: the tasks to complete (locked) and their children's
        statuses (child id -> status, by parent id); with ``done``, the plain done
        completions the server decided (see :meth:`lease_now`)."""
        tasks, children, _, _, _, completed = self.lease_now(task_ids, None, done)
        return tasks, children, completed

    def lease_now(
        self,
        task_ids: Sequence[int],
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]] | None,
        done: tuple[datetime, Sequence[tuple[int, str, str | None]]] | None = None,
    ) -> tuple[
        list[Task], dict[int, dict[int, TaskStatus]], list[Task], list[Task], bool, dict[int, Task]
    ]:
        """In one round trip: the tasks to complete (locked) and their children's statuses
        (child id -> status, by parent id); then, unless ``lease`` is ``None``, the lease
        of ``lease = (now, limit, types, owner, expires, nonces)``, decided and stored
        by the server (``lease_now`` in queries.sql): the leased tasks as stored, or,
        when lapsed leases are due, those (locked; nothing leased); and whether
        ``owner`` is stopped. With ``done = (now, [(task id, token, result), ...])``
        (plain done completions, each id once, all among ``task_ids``), the server first
        completes those it may decide itself (``complete_done``): they come back last,
        as stored, by id, and are left out of the locked tasks."""
        self._write_saves()
        tasks_cursor = children_cursor = lease_cursor = done_cursor = None
        if task_ids:
            ids = _ids(task_ids)
            tasks_cursor = self.c.execute(Q["tasks_for_update"], (ids,))
            # statements of their own, after the locks: they see what the holders committed
            if done is not None and done[1]:
                done_cursor = self._send_done(done)
            if lease is None:
                children_cursor = self.c.execute(Q["children_of"], (ids,))
            else:  # and the lease's gate, in the same statement
                children_cursor = self._send_gate(lease, synced=True, children_of=ids)
                lease_cursor = self._send_lease_now(lease)
        elif lease is not None:
            lease_cursor = self.send_lease(lease)
        # the last result first: one wait for them all, the earlier ones are then read
        rows = lease_cursor.fetchall() if lease_cursor else []
        completed = {r[1]: task_row(r[1:]) for r in done_cursor.fetchall()} if done_cursor else {}
        locked = tasks_cursor.fetchall() if tasks_cursor else []
        tasks = [task_row(r) for r in locked if r[0] not in completed]
        children: dict[int, dict[int, TaskStatus]] = {}
        for parent_id, child_id, status in children_cursor.fetchall() if children_cursor else ():
            if parent_id is not None:  # the gate's row of NULLs when there are none
                children.setdefault(parent_id, {})[child_id] = _STATUS[status]
        return (tasks, children, *lease_rows(rows), completed)

    def send_done_and_lease(
        self,
        task_ids: Sequence[int],
        done: tuple[datetime, Sequence[tuple[int, str, str | None]]],
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]],
    ) -> tuple[Cursor[Any], Cursor[Any]]:
        """Send, for a transaction that commits without reading anything first: the locks
        of ``task_ids``, the server's plain done completions (``complete_done``, after
        the locks), then the server's lease (as :meth:`lease_now`). Returns the cursors
        of the completions and of the lease, to read with :meth:`read_done_and_lease`
        once the pipeline syncs."""
        self._write_saves()
        ids = _ids(task_ids)
        self.c.execute(Q["lock_tasks"], (ids,))
        return self._send_done(done), self.send_lease(lease)

    @staticmethod
    def read_done_and_lease(
        cursors: tuple[Cursor[Any], Cursor[Any]],
    ) -> tuple[dict[int, Task], list[Task], list[Task], bool]:
        """``(completed, expired, leased, stopped)`` from :meth:`send_done_and_lease`'s
        cursors: the tasks the server completed (by id, as stored), then as
        :func:`lease_rows`."""
        done_cursor, lease_cursor = cursors
        completed = {r[1]: task_row(r[1:]) for r in done_cursor.fetchall()}
        return (completed, *lease_rows(lease_cursor.fetchall()))

    def _send_done(
        self, done: tuple[datetime, Sequence[tuple[int, str, str | None]]]
    ) -> Cursor[Any]:
        now, items = done
        listed = [{"id": i, "token": token, "result": result} for i, token, result in items]
        return self.c.execute(Q["complete_done"], {"done": _json(listed), "now": now})

    def send_lease(
        self,
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]],
        *,
        synced: bool = True,
    ) -> Cursor[Any]:
        """Send the statements of the server's lease (see :meth:`lease_now`); its rows, for
        :func:`lease_rows`, are the returned cursor's once the pipeline syncs. Unless
        ``synced``, the transaction's commit does not wait for the disk (one that only
        leases; see ``lease_gate``)."""
        self._write_saves()
        self._send_gate(lease, synced=synced)
        return self._send_lease_now(lease)

    def _send_gate(
        self,
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]],
        *,
        synced: bool,
        children_of: str | None = None,
    ) -> Cursor[Any]:
        """The deferred tasks due by the lease's now promoted, the worker's shared gate,
        and no sort for the next statement (which restores the setting itself); with
        ``children_of`` (ids, as :func:`_ids` writes them), in the same statement, the
        children of those tasks (``lease_gate_children``)."""
        now, owner, sync = lease[0], lease[3], None if synced else "off"
        if children_of is None:
            return self.c.execute(Q["lease_gate"], (now, owner, sync))
        return self.c.execute(Q["lease_gate_children"], (now, owner, sync, children_of))

    def _send_lease_now(
        self, lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]]
    ) -> Cursor[Any]:
        now, limit, types, owner, expires, nonces = lease
        return self.c.execute(
            Q["lease_now"],
            {"now": now, "reclaim": RECLAIM_BATCH, "limit": limit,
             "types": list(types) if types is not None else None,
             "stop_key": stop_key(owner), "owner": owner, "expires": expires,
             "nonces": _texts(nonces)},
        )  # fmt: skip

    def get_tasks(self, task_ids: Sequence[int]) -> list[Task]:
        query = Q["tasks_for_update" if self.locking else "get_tasks"]
        return [task_row(r) for r in self._all(query, (_ids(task_ids),))]

    def with_active_children(self, task_ids: Sequence[int]) -> set[int]:
        return {r[0] for r in self._all(Q["with_active_children"], (_ids(task_ids),))}

    def task_by_key(self, key: str) -> Task | None:
        row = self._one(Q["task_by_key"], (key,))
        return None if row is None else task_row(row)

    def insert_task(self, task: Task) -> Task:
        row = self._one(Q["insert_task"], insert_row(task))
        stored = _replace_id(task, row[0])
        self.add_events(stored.created_at, [created_event(stored)])
        return stored

    def save_tasks(self, tasks: Sequence[Task]) -> None:
        for task in tasks:  # one row per task: its last version
            self.saves[task.id] = task

    def _write_saves(self) -> None:
        """Write the buffered tasks now (before a read, which must see them)."""
        if self.saves:
            self._save_and_log([])

    def _save_and_log(self, events: list[dict[str, Any]]) -> None:
        """One statement: the buffered tasks, and ``events`` (taking the events lock)."""
        tasks = list(self.saves.values())
        self.saves = {}
        self.c.execute(
            Q["save_tasks"],
            {"tasks": _json([_saved(t) for t in tasks]), "ids": _ids([t.id for t in tasks]),
             "events": _json(events)},
        )  # fmt: skip

    def has_work(self, now: datetime, types: Sequence[str] | None) -> bool:
        wanted = list(types) if types is not None else None
        return bool(self._one(Q["has_work"], {"now": now, "types": wanted})[0])

    def ready_tasks(self, now: datetime, limit: int, types: Sequence[str] | None) -> list[Task]:
        wanted = list(types) if types is not None else None
        return [task_row(r) for r in self._all(Q["ready_tasks"], (now, wanted, wanted, limit))]

    def expired_tasks(self, now: datetime, limit: int) -> list[Task]:
        return [task_row(r) for r in self._all(Q["expired_tasks"], (now, limit))]

    def children(self, parent_id: int) -> list[tuple[int, TaskStatus]]:
        return [(r[0], _STATUS[r[1]]) for r in self._all(Q["children"], (parent_id,))]

    def list_tasks(
        self,
        status: TaskStatus | None,
        parent_id: int | None,
        task_type: str | None,
        limit: int,
        before_id: int | None,
    ) -> list[Task]:
        where: list[sql.Composable] = []
        params: list[Any] = []
        for column, value in (("status", status), ("parent_id", parent_id), ("type", task_type)):
            if value is not None:
                where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value.value if isinstance(value, TaskStatus) else value)
        if before_id is not None:
            where.append(sql.SQL("id < %s"))
            params.append(before_id)
        query: sql.Composable = sql.SQL("SELECT * FROM tasks")
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(" ORDER BY id DESC LIMIT %s")
        self._write_saves()
        return [task_row(r) for r in self.c.execute(query, (*params, limit)).fetchall()]

    def count_related(self, task_id: int) -> TaskCounts:
        steps, children, artifacts = self._one(Q["count_related"], {"id": task_id})
        return TaskCounts(steps=steps, children=children, artifacts=artifacts)

    # events
    def add_events(self, now: datetime, drafts: Sequence[EventDraft]) -> None:
        self.pending.extend((now, d) for d in drafts)

    def add_event(self, now: datetime, draft: EventDraft) -> Event:
        self.flush()
        data = json.loads(json.dumps(draft.data))
        row = self._one(Q["insert_event"], (now, draft.type, draft.task_id, json.dumps(data)))
        return Event(row[0], now, draft.type, draft.task_id, data)

    def flush(self) -> None:
        """Write the buffered tasks and events (in order), in one statement."""
        if not self.pending:
            self._write_saves()
            return
        events = [
            {"ts": now, "type": d.type, "task_id": d.task_id, "data": d.data}
            for now, d in self.pending
        ]
        self.pending = []
        self._save_and_log(events)

    def delete_oldest_events(self, before: datetime, limit: int) -> int:
        self.flush()
        return int(self._one(Q["delete_oldest_events"], (limit, before))[0])

    def events(
        self, after_id: int | None, limit: int, task_id: int | None, horizon: int = 2**62
    ) -> list[Event]:
        if after_id is not None:
            if task_id is None:
                rows = self._all(Q["events_after"], (after_id, horizon, limit))
            else:
                rows = self._all(Q["events_after_for_task"], (task_id, after_id, horizon, limit))
        elif task_id is None:
            rows = self._all(Q["events_latest"], (horizon, limit))
        else:
            rows = self._all(Q["events_latest_for_task"], (task_id, horizon, limit))
        return [_event(r) for r in rows]

    # steps, state, artifacts
    def upsert_step(self, task_id: int, marker: StepMarker, now: datetime) -> Step:
        m = marker
        row = self._one(Q["upsert_step"], (task_id, m.name, m.status.value, m.idempotency_key,
                                           m.note, now, now))  # fmt: skip
        return _step(row)

    def steps(self, task_id: int) -> list[Step]:
        return [_step(r) for r in self._all(Q["steps"], (task_id,))]

    def get_state(self, task_id: int, key: str) -> str | None:
        row = self._one(Q["get_state"], (task_id, key))
        return None if row is None else str(row[0])

    def put_state(self, task_id: int, key: str, value_json: str, now: datetime) -> None:
        self.c.execute(Q["put_state"], (task_id, key, value_json, now))

    def insert_artifact(self, artifact: Artifact) -> Artifact:
        a = artifact
        row = self._one(Q["insert_artifact"], (a.task_id, a.name, a.kind.value, a.size, a.sha256,
                                               a.path, a.created_at))  # fmt: skip
        return Artifact(row[0], a.task_id, a.name, a.kind, a.size, a.sha256, a.path, a.created_at)

    def artifacts(self, task_id: int | None, limit: int) -> list[Artifact]:
        if task_id is None:
            return [_artifact(r) for r in self._all(Q["artifacts"], (limit,))]
        return [_artifact(r) for r in self._all(Q["artifacts_for_task"], (task_id, limit))]

    def get_artifact(self, artifact_id: int) -> Artifact | None:
        row = self._one(Q["get_artifact"], (artifact_id,))
        return None if row is None else _artifact(row)

    # responsibilities and summary
    def responsibilities(self) -> list[Responsibility]:
        if self.locking:  # sync and dispatch are serialised across gateways
            self.c.execute(Q["responsibilities_lock"])
        return [_responsibility(r) for r in self._all(Q["responsibilities"])]

    def save_responsibility(self, resp: Responsibility) -> None:
        self.c.execute(
            Q["save_responsibility"],
            (
                resp.name,
                resp.schedule.to_text(),
                json.dumps(resp.template.to_dict(), sort_keys=True),
                resp.enabled,
                resp.last_dispatched_at,
                resp.next_due_at,
                resp.last_task_id,
            ),
        )

    def counts_by_status(self) -> dict[TaskStatus, int]:
        return {_STATUS[s]: n for s, n in self._all(Q["counts_by_status"])}

    def held_by(self, owner: str) -> list[Task]:
        self.c.execute(Q["worker_gate"], (owner,))
        return [task_row(r) for r in self._all(Q["held_by"], (owner,))]

    def is_stopped(self, owner: str) -> bool:
        self.c.execute(Q["worker_gate_shared"], (owner,))
        return bool(self._one(Q["is_stopped"], (stop_key(owner),))[0])

    def mark_stopped(self, owner: str, now: datetime, forget_before: datetime) -> None:
        self.c.execute(Q["forget_stopped"], (forget_before,))
        self.c.execute(Q["mark_stopped"], (stop_key(owner), now))

    def clear_stopped(self, owner: str) -> None:
        self.c.execute(Q["clear_stopped"], (stop_key(owner),))

    def held_tasks(self, limit: int) -> list[Task]:
        return [task_row(r) for r in self._all(Q["held_tasks"], (limit,))]

    def recent_failures(self, limit: int) -> list[Task]:
        return [task_row(r) for r in self._all(Q["recent_failures"], (limit,))]


def _replace_id(task: Task, task_id: int) -> Task:
    return dataclasses.replace(task, id=task_id)
