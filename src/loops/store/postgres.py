"""The PostgreSQL store: many gateways and workers on many hosts over one database.

- psycopg 3 with a connection pool; every operation is one transaction, sent in
  pipeline mode so a batch of completions (and the next lease) costs two round trips,
  a lease alone one, and a worker's batch of plain done completions with the next
  lease one (what the server leaves undecided then gets a transaction of its own).
- Leases lock rows with ``FOR UPDATE SKIP LOCKED``: concurrent leases from any number of
  processes never pick the same task and never wait for each other. Lapsed leases are
  found by their own indexed query in the same round trip, never by an ``OR``.
- Lifecycle decisions are :mod:`loops.queue.lifecycle`'s, applied through the shared
  operations of :mod:`loops.store.shared`; rows a transaction decides on are locked.
  Two exceptions, for speed: the plain lease of ready tasks is decided by the server in
  the statement that locks them (``lease_now`` in queries.sql), written to
  :func:`lifecycle.lease`'s rule, which a property test holds it equal to; when lapsed
  leases are due, the statement leases nothing and both are decided here. And a plain
  done completion (live lease, no parent, no child, no usage or steps) is decided by
  the server where it is stored (``complete_done``), to :func:`lifecycle.complete`'s
  rule, held equal by another property test; anything else it leaves to Python.
- Writers take event ids under a shared advisory lock held until commit; a reader
  takes it exclusively for an instant to learn the horizon below which every id is
  final, so a reader of ``after=ID`` never skips an event whose id was taken early and
  committed late, while writers never queue behind each other. Responsibilities are
  synced and dispatched under another lock, so two gateways never dispatch one twice.
- ``loop db:migrate`` holds an advisory lock: safe to run from several hosts at once.
- A trigger NOTIFYs ``loops_work_ready`` when a task becomes queued; :meth:`listen`
  turns that into wake-ups (:mod:`loops.store.postgres_listener`).
- psycopg errors are translated once, here. A connection lost before the commit was
  sent is retried on a fresh connection (the server rolled the transaction back), as
  are deadlocks; a connection lost once the commit was sent (with the transaction's
  last statements, in one flight) is reported, never replayed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import re
import select
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Concatenate, ParamSpec, TypeVar

from loops import config, errors
from loops.queue import lifecycle
from loops.queue.backoff import Backoff
from loops.queue.events import Event
from loops.queue.tasks import (
    CompletionOutcome,
    CompletionRequest,
    CompletionStatus,
    LeasedTask,
    Task,
    TaskSpec,
    TaskStatus,
    evolve,
    lease_of,
    new_task,
)
from loops.store import sqlfiles
from loops.store.shared import UnitStore, _new_nonce, created_event, stopped_error

try:
    import psycopg
    import psycopg_pool
    from psycopg import errors as pg_errors
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise errors.ConfigError(
        "QUEUE_DB_URL selects PostgreSQL, which needs psycopg 3: install the postgres extra "
        "(in the loops checkout: scripts/bootstrap, or pip install '.[postgres]')"
    ) from exc

from loops.store.postgres_listener import CHANNEL, WorkListener
from loops.store.postgres_unit import SQL_PACKAGE, PgUnit, Q, insert_row, lease_rows

# The pool reports each failed reconnection as a warning; where nothing configured
# logging (the CLI), that would print above the one clear error the CLI shows.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound=UnitStore)


# -- errors -------------------------------------------------------------------------


class _Retry(errors.StoreError):
    """A failure after which the whole operation can safely run again."""

    def __init__(self, error: errors.StoreError, *, reconnect: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.reconnect = reconnect


def translate(exc: psycopg.Error, where: str) -> errors.StoreError:
    """The most specific :class:`~loops.errors.StoreError` for a psycopg error."""
    cause = exc.__context__
    if "pipeline" in str(exc) and isinstance(cause, psycopg.Error):
        exc = cause  # psycopg's complaint while unwinding hides the server's reason
    text = f"PostgreSQL at {where}: {str(exc).strip() or type(exc).__name__}"
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return errors.StoreUnavailable(
            f"{text} (no connection became free or could be made in time: is the server "
            "up and QUEUE_DB_URL right? Under load, raise QUEUE_DB_POOL_SIZE)"
        )
    if isinstance(exc, pg_errors.UndefinedTable):
        return errors.MigrationRequired(f"{text}: run `loop db:migrate`")
    if isinstance(exc, pg_errors.DiskFull | pg_errors.OutOfMemory):
        return errors.StoreFull(f"{text} (free space on the database server)")
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return errors.StoreReadOnly(f"{text} (point QUEUE_DB_URL at the primary server)")
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        return errors.StoreLocked(f"{text} (a lock or statement timeout ran out)")
    if isinstance(exc, psycopg.OperationalError):
        return errors.StoreUnavailable(f"{text} (the database connection failed)")
    return errors.StoreError(text)


def _retryable(exc: psycopg.Error, *, committing: bool) -> tuple[bool, bool]:
    """``(retry, reconnect)`` for a failed transaction."""
    if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return True, False
    if isinstance(exc, pg_errors.UniqueViolation) and "idempotency_key" in str(exc):
        return True, False  # a concurrent create with the same key: the retry finds it
    if isinstance(exc, psycopg_pool.PoolTimeout | pg_errors.QueryCanceled):
        return False, False
    if isinstance(exc, psycopg.OperationalError) and not committing:
        return True, True  # the server rolled back the transaction it lost
    return False, False


def _retried(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run a store operation again after a failure that changed nothing (see
    :func:`_retryable`): a deadlock, or a connection lost before the commit."""

    @functools.wraps(method)
    def attempt(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        tries = getattr(self, "max_tries", 1)
        for number in range(1, tries + 1):
            try:
                return method(self, *args, **kwargs)
            except _Retry as retry:
                if number == tries:
                    raise retry.error from retry.__cause__
                if retry.reconnect and isinstance(self, PostgresStore):
                    self._discard_broken()
                time.sleep(0.005 * number)
        raise AssertionError("unreachable")  # pragma: no cover

    return attempt


_NONE: frozenset[int] = frozenset()


def _plain_done(requests: Sequence[CompletionRequest]) -> list[tuple[int, str, str | None]]:
    """``(task id, token, result)`` of the requests the server may decide itself
    (``complete_done`` in queries.sql): a done completion with no usage to add and no
    steps, of a task no other request of the batch names (those are decided in order,
    here). The server still leaves any whose lease is not live, or whose task has a
    parent or a child, to :func:`lifecycle.complete`."""
    seen: set[int] = set()
    twice: set[int] = set()
    for request in requests:
        (twice if request.task_id in seen else seen).add(request.task_id)
    return [
        (r.task_id, r.token, r.completion.result)
        for r in requests
        if r.completion.status is CompletionStatus.DONE
        and r.completion.usage is None
        and not r.steps
        and r.task_id not in twice
    ]


#: the statement that opens a transaction of :meth:`PostgresStore._transaction`, by
#: whether it writes (reads see one snapshot of the whole database)
_BEGIN = {True: b"BEGIN", False: b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"}


# -- the store ------------------------------------------------------------------------


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    """Refuse a pooled connection the server already closed (restart, termination).

    An idle connection has nothing to read unless the server sent its goodbye, so a
    readable socket means a dead connection: found with one non-blocking ``select``
    instead of a round trip, before anything is sent on it.
    """
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    if readable:
        conn.close()  # so the pool replaces it instead of taking it back
        raise psycopg.OperationalError("the server closed this idle connection")


def describe_url(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string, without credentials."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "(an invalid QUEUE_DB_URL)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


class PostgresStore(UnitStore):
    """The queue in a PostgreSQL database, shared by any number of hosts."""

    backend: ClassVar[str] = "postgres"
    supports_notify: ClassVar[bool] = True
    supports_multiprocess: ClassVar[bool] = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 3.0,
        max_tries: int = 3,
        nonce: Callable[[], str] = _new_nonce,
    ) -> None:
        """Open a connection pool to ``conninfo`` (connections are made in the background).

        Args:
            conninfo: a ``postgresql://`` URL or libpq connection string.
            schema: keep the queue in this schema (created by :meth:`migrate`) instead of
                the connection's default; used by tests to isolate databases.
            min_connections: connections kept open.
            max_connections: most connections at once.
            connect_timeout_s: how long an operation waits for a connection before it
                fails with :class:`~loops.errors.StoreUnavailable`.
            max_tries: runs of one operation after failures that changed nothing.
            nonce: source of lease-token nonces (injected in tests).

        Raises:
            ConfigError: ``schema`` is not a plain lower-case identifier, or
                ``conninfo`` cannot be parsed.
        """
        super().__init__(nonce=nonce)
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise errors.ConfigError(
                f"invalid schema name {schema!r}; use lower-case letters, digits and _"
            )
        try:
            parsed = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise errors.ConfigError(f"QUEUE_DB_URL cannot be parsed: {exc}") from exc
        options = [str(parsed["options"])] if parsed.get("options") else []
        if schema is not None:
            options.append(f"-c search_path={schema}")
        options.append("-c TimeZone=UTC")
        self.conninfo = conninfo
        self.schema = schema
        self.max_tries = max_tries
        self.where = describe_url(conninfo)
        self._connect_kwargs: dict[str, Any] = {
            "options": " ".join(options),
            "connect_timeout": max(1, round(connect_timeout_s)),
        }
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = (
            psycopg_pool.ConnectionPool(
                conninfo,
                kwargs={"autocommit": True, **self._connect_kwargs},
                min_size=min_connections,
                max_size=max_connections,
                timeout=connect_timeout_s,
                check=_check_idle,
                name=f"loops-{self.where}",
                open=False,
            )
        )
        self._pool.open(wait=False)
        self._listener: WorkListener | None = None
        self._closed = False
        self._connect_timeout_s = connect_timeout_s
        self._first_request = True

    # -- connections and transactions -------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise errors.StoreUnavailable(f"the store at {self.where} is closed")
        if self._first_request:
            self._await_first_connection()
        with self._pool.connection() as conn:
            yield conn

    def _await_first_connection(self) -> None:
        """Before the first request, wait (at most the connect timeout, and not once the
        first attempt has failed) for the connection the pool has been making since
        ``__init__``. A request that finds no connection ready grows the pool by one, and
        the pool hands out its connections in turn: a process sending one request at a
        time (a worker) then kept two server backends in alternation, each with its
        caches cold, for good: about a fifth more server CPU per task in a 4-worker
        drain (bench/RESULTS.md, pgdrain5). Concurrent first requests do not wait."""
        self._first_request = False
        deadline = time.monotonic() + self._connect_timeout_s
        while time.monotonic() < deadline:
            stats = self._pool.get_stats()
            if stats.get("pool_available", 0) or stats.get("connections_errors", 0):
                return
            time.sleep(0.001)

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[PgUnit]:
        """One transaction in pipeline mode, its BEGIN and COMMIT sent as statements with
        the others: what the caller does not read before the end goes out with the
        COMMIT in one flight, answered after one Sync (a lease alone: one round trip).
        psycopg's ``conn.transaction()`` in a pipeline syncs after its BEGIN, after the
        block and after its COMMIT, so the same lease took four round trips. A
        connection lost once the COMMIT is on its way leaves the outcome open
        (``committing``), even if it went before the server had read it."""
        committing = False
        try:
            # the pool's connection block rolls back what an exception left open
            with self._connection() as conn, conn.pipeline():
                conn.execute(_BEGIN[write])
                unit = PgUnit(conn, locking=write)
                yield unit
                if write:
                    unit.flush()
                    committing = True
                conn.execute(b"COMMIT")
        except psycopg.Error as exc:
            error = self._translate(exc)
            retry, reconnect = _retryable(exc, committing=committing)
            if retry:
                raise _Retry(error, reconnect=reconnect) from exc
            if committing and isinstance(error, errors.StoreUnavailable):
                error = errors.StoreUnavailable(
                    f"{error.message}; the connection was lost while committing, so this "
                    "change may or may not have been saved: check before repeating it"
                )
            raise error from exc

    @contextlib.contextmanager
    def _translated(self, *, committing: bool) -> Iterator[None]:
        """psycopg errors as StoreErrors; retryable ones as :class:`_Retry`."""
        try:
            yield
        except psycopg.Error as exc:
            error = self._translate(exc)
            retry, reconnect = _retryable(exc, committing=committing)
            if retry:
                raise _Retry(error, reconnect=reconnect) from exc
            if committing and isinstance(error, errors.StoreUnavailable):
                error = errors.StoreUnavailable(
                    f"{error.message}; the connection was lost while committing, so this "
                    "change may or may not have been saved: check before repeating it"
                )
            raise error from exc

    def _translate(self, exc: psycopg.Error) -> errors.StoreError:
        """:func:`translate`, with the server's own answer when the pool gave up waiting."""
        if isinstance(exc, psycopg_pool.PoolTimeout):
            reason = self._connect_failure()
            if reason is not None:
                return errors.StoreUnavailable(
                    f"PostgreSQL at {self.where} is unreachable: {reason} (is the server up "
                    "and QUEUE_DB_URL right?)"
                )
        return translate(exc, self.where)

    def _connect_failure(self) -> str | None:
        """Why a fresh connection fails, or ``None`` when it works (a busy pool)."""
        try:
            psycopg.connect(self.conninfo, **{**self._connect_kwargs, "connect_timeout": 1}).close()
        except psycopg.Error as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            return lines[0].removeprefix("connection failed: ") if lines else type(exc).__name__
        return None

    def _write(self, *, synced: bool = True) -> contextlib.AbstractContextManager[PgUnit]:
        # every commit as the server's synchronous_commit says (this store leases
        # through its own lease_next)
        return self._transaction(write=True)

    def _read(self) -> contextlib.AbstractContextManager[PgUnit]:
        return self._transaction(write=False)

    def _discard_broken(self) -> None:
        """Drop pooled connections the server closed (e.g. after a restart)."""
        with contextlib.suppress(psycopg.Error):
            self._pool.check()

    def close(self) -> None:
        """Stop the listener and close every pooled connection."""
        if self._closed:
            return
        if self._listener is not None:
            self._listener.stop(wake=self._send_stop)
        self._closed = True
        self._pool.close(timeout=2.0)

    def _send_stop(self, payload: str) -> None:
        with self._pool.connection(timeout=0.5) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # -- notifications ----------------------------------------------------------------

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (on the listener thread) when any process makes work ready.

        The listening connection opens on the first call and reconnects by itself.

        Returns:
            A function that removes the subscription.
        """
        if self._listener is None:
            self._listener = WorkListener(self.conninfo, self._connect_kwargs)
        return self._listener.subscribe(callback)

    def wait_listening(self, timeout_s: float = 5.0) -> bool:
        """Whether the listener is connected within ``timeout_s`` (for tests)."""
        return self._listener is not None and self._listener.wait_listening(timeout_s)

    # -- migrations -----------------------------------------------------------------

    def _applied(self, conn: psycopg.Connection[Any]) -> set[int] | None:
        """Applied migration versions, or ``None`` without a migrations table."""
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        return {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}

    def _inspect(self) -> set[int] | None:
        try:
            with self._connection() as conn:
                return self._applied(conn)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc

    def is_new(self) -> bool:
        """Whether no migration was ever applied in this database (or schema)."""
        return not self._inspect()

    def pending_migrations(self) -> list[str]:
        applied = self._inspect() or set()
        return [m.name for m in sqlfiles.migrations(SQL_PACKAGE) if m.version not in applied]

    def migrate(self) -> list[str]:
        """Apply pending migrations in one transaction under an advisory lock, so that
        several hosts may run it at once: the first applies, the others wait and find
        nothing left to do."""
        applied_now: list[str] = []
        try:
            with self._connection() as conn, conn.transaction():
                conn.execute(Q["migrate_lock"])
                if self.schema is not None:
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                    " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = self._applied(conn) or set()
                for migration in sqlfiles.migrations(SQL_PACKAGE):
                    if migration.version in applied:
                        continue
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                    applied_now.append(migration.name)
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        return applied_now

    # -- hot paths: one statement or two round trips ---------------------------------

    @_retried
    def create_task(self, spec: TaskSpec, *, now: datetime, max_attempts: int) -> tuple[Task, bool]:
        """One statement, its own transaction: the task and its event (taking the events
        lock before the event's id), so one round trip and no BEGIN or COMMIT to send."""
        task = new_task(spec, now=now, max_attempts=max_attempts)
        data = json.dumps(created_event(task).data)
        # the commit ends the statement: a lost connection leaves the outcome open
        with self._translated(committing=True), self._connection() as conn:
            row = conn.execute(Q["create_task"], (*insert_row(task), data)).fetchone()
        if row is not None:
            return evolve(task, id=row[0]), True
        if spec.idempotency_key is None:  # pragma: no cover - the insert cannot conflict
            raise errors.StoreError("the task insert returned no row")
        with self._read() as unit:
            existing = unit.task_by_key(spec.idempotency_key)
        if existing is None:  # pragma: no cover - unique index guarantees it
            raise errors.StoreError(f"idempotency key {spec.idempotency_key!r} vanished")
        return existing, False

    @_retried
    def lease_next(
        self,
        *,
        now: datetime,
        owner: str,
        ttl_ms: int,
        limit: int = 1,
        types: Sequence[str] | None = None,
    ) -> list[LeasedTask]:
        """One round trip: the server decides and stores the lease, and the commit does
        not wait for the disk (``synchronous_commit`` off for it alone; see the README,
        "Durability": a lease lost to a crash leaves the task queued, and its token dead).
        With lapsed leases due, the statement leases nothing: they are reclaimed and the
        lease decided here, in a transaction of its own, synced."""
        nonces = [self._nonce() for _ in range(limit)]
        lease = (now, limit, types, owner, now + timedelta(milliseconds=ttl_ms), nonces)
        with self._write() as unit:
            cursor = unit.send_lease(lease, synced=False)
        # read once committed: nothing here needs the answer before the commit
        expired, leased, stopped = lease_rows(cursor.fetchall())
        if expired:  # nothing was leased (nor is the worker stopped): again, synced
            leased, stopped = self._lease_reclaiming(lease, ttl_ms)
        if stopped:
            raise stopped_error(owner)
        return [LeasedTask(t, lease_of(t)) for t in leased]

    @_retried
    def complete_many(
        self, requests: Sequence[CompletionRequest], *, now: datetime, backoff: Backoff
    ) -> list[CompletionOutcome]:
        if not requests:
            return []
        with self._write() as unit:
            ids = sorted({r.task_id for r in requests})
            locked, children, completed = unit.completion_view(ids, (now, _plain_done(requests)))
            return self._finish(unit, requests, locked, children, now, backoff, completed)

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
        """When every request is a plain done completion (:func:`_plain_done`), one
        transaction and one round trip: the server completes those it may decide and
        leases the next batch, and the commit is sent with them. A request it left (a
        stale or lapsed lease, a task with a parent or a child) is then decided as
        :meth:`complete_many` does, in a transaction of its own; lapsed leases due, as
        :meth:`lease_next` reclaims them. Those are independent of the completed tasks
        (no parent, no child), and the lease came before any of them, as it does below.
        Otherwise both in one transaction: one round trip to read and lease (the server
        decides the lease, see :meth:`PgUnit.lease_now`), one to write and commit."""
        nonces = [self._nonce() for _ in range(limit)]
        lease = (now, limit, types, owner, now + timedelta(milliseconds=ttl_ms), nonces)
        plain = _plain_done(requests)
        if not requests or len(plain) < len(requests):
            return self._complete_then_lease(requests, now, backoff, lease, ttl_ms)
        ids = sorted(r.task_id for r in requests)
        completed, expired, leased, stopped = self._done_and_lease(ids, (now, plain), lease)
        rest = [r for r in requests if r.task_id not in completed]
        answers = iter(self.complete_many(rest, now=now, backoff=backoff) if rest else ())
        outcomes = [
            CompletionOutcome(r.task_id, completed[r.task_id])
            if r.task_id in completed
            else next(answers)
            for r in requests
        ]
        if expired and not stopped:  # nothing was leased: reclaim, then lease
            leased, stopped = self._lease_reclaiming(lease, ttl_ms)
        return outcomes, [] if stopped else [LeasedTask(t, lease_of(t)) for t in leased]

    @_retried
    def _done_and_lease(
        self,
        ids: Sequence[int],
        done: tuple[datetime, Sequence[tuple[int, str, str | None]]],
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]],
    ) -> tuple[dict[int, Task], list[Task], list[Task], bool]:
        with self._write() as unit:
            cursors = unit.send_done_and_lease(ids, done, lease)
        # read once committed: nothing here needs an answer before the commit
        return PgUnit.read_done_and_lease(cursors)

    @_retried
    def _lease_reclaiming(
        self,
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]],
        ttl_ms: int,
    ) -> tuple[list[Task], bool]:
        """The lease when lapsed leases are due, in a transaction of its own, synced:
        those reclaimed, then the lease decided here. ``(leased, stopped)``."""
        now, limit, types, owner, _, nonces = lease
        with self._write() as unit:
            _, _, expired, leased, stopped, _ = unit.lease_now((), lease)
            if not stopped:
                leased = self._reclaim_and_lease(unit, expired, leased, now, owner, ttl_ms,
                                                 limit, types, nonces)  # fmt: skip
        return leased, stopped

    @_retried
    def _complete_then_lease(
        self,
        requests: Sequence[CompletionRequest],
        now: datetime,
        backoff: Backoff,
        lease: tuple[datetime, int, Sequence[str] | None, str, datetime, Sequence[str]],
        ttl_ms: int,
    ) -> tuple[list[CompletionOutcome], list[LeasedTask]]:
        _, limit, types, owner, _, nonces = lease
        ids = sorted({r.task_id for r in requests})
        with self._write() as unit:
            locked, children, expired, leased, stopped, completed = unit.lease_now(
                ids, lease, (now, _plain_done(requests))
            )
            outcomes = self._finish(unit, requests, locked, children, now, backoff, completed)
            if not stopped:
                leased = self._reclaim_and_lease(unit, expired, leased, now, owner, ttl_ms,
                                                 limit, types, nonces)  # fmt: skip
        return outcomes, [LeasedTask(t, lease_of(t)) for t in leased]

    def _reclaim_and_lease(
        self,
        unit: PgUnit,
        expired: list[Task],
        leased: list[Task],
        now: datetime,
        owner: str,
        ttl_ms: int,
        limit: int,
        types: Sequence[str] | None,
        nonces: Sequence[str],
    ) -> list[Task]:
        """The tasks leased: ``leased``, as the server's lease statement stored them; or,
        when lapsed leases were due (``expired``, locked; the statement then leased
        nothing), decided here: those reclaimed first, then the best ready tasks leased
        (requeued ones among them), as :meth:`UnitStore.lease_next` does."""
        if not expired:
            return leased
        self._apply(unit, now, [lifecycle.reclaim(t, now=now) for t in expired])
        transitions = [
            lifecycle.lease(t, now=now, owner=owner, ttl_ms=ttl_ms, nonce=nonce)
            for t, nonce in zip(unit.ready_tasks(now, limit, types), nonces, strict=False)
        ]
        unit.save_tasks([t.task for t in transitions])
        unit.add_events(now, [e for t in transitions for e in t.events])
        return [t.task for t in transitions]

    def _finish(
        self,
        unit: PgUnit,
        requests: Sequence[CompletionRequest],
        locked: list[Task],
        children: dict[int, dict[int, TaskStatus]],
        now: datetime,
        backoff: Backoff,
        completed: dict[int, Task],
    ) -> list[CompletionOutcome]:
        """Decide every completion in order (a later one sees an earlier one's effect),
        then store them together; those in ``completed`` (by task id, as stored) the
        server already decided and stored (:func:`_plain_done`)."""
        current = {t.id: t for t in locked}
        transitions: list[lifecycle.Transition] = []
        outcomes: list[CompletionOutcome] = []
        for request in requests:
            stored = completed.get(request.task_id)
            if stored is not None:  # its only request in the batch
                outcomes.append(CompletionOutcome(request.task_id, stored))
                continue
            task = current.get(request.task_id)
            if task is None:
                missing = errors.TaskNotFound(f"no task with id {request.task_id}")
                outcomes.append(CompletionOutcome(request.task_id, error=missing))
                continue
            kids = children.get(task.id)  # most tasks have none
            transition = lifecycle.complete(
                task,
                token=request.token,
                now=now,
                completion=request.completion,
                backoff=backoff,
                has_active_children=kids is not None and any(s.is_active for s in kids.values()),
                finished_children=_NONE
                if kids is None
                else frozenset(cid for cid, s in kids.items() if not s.is_active),
            )
            if transition.error is None and request.steps:
                self._record_steps(unit, task.id, request.steps, now)
            transitions.append(transition)
            new = transition.task
            current[new.id] = new
            if new.parent_id in children:
                children[new.parent_id][new.id] = new.status
            outcomes.append(CompletionOutcome(request.task_id, new, transition.error))
        self._apply(unit, now, transitions)
        return [self._stored_outcome(unit, o) for o in outcomes]

    def _stored_outcome(self, unit: PgUnit, outcome: CompletionOutcome) -> CompletionOutcome:
        """``outcome`` with its task as stored, when storing it rolled a waiting task up."""
        task = outcome.task
        if (
            task is None
            or outcome.error is not None
            or task.status is not TaskStatus.WAITING_CHILDREN
        ):
            return outcome  # only a waiting task can have been rolled up
        rolled = self._rolled_up(unit, lifecycle.Transition(task))
        return outcome if rolled is None else dataclasses.replace(outcome, task=rolled.task)

    def complete(self, request: CompletionRequest, *, now: datetime, backoff: Backoff) -> Task:
        (outcome,) = self.complete_many([request], now=now, backoff=backoff)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.task is not None
        return outcome.task

    @_retried
    def list_events(
        self, *, after_id: int | None = None, limit: int = 100, task_id: int | None = None
    ) -> list[Event]:
        """Events in id order, never past an id whose writer may still commit: event ids
        are taken concurrently, so a later id can commit first; the horizon makes a
        reader that continues ``after`` the last id it saw miss nothing."""
        if after_id is not None and task_id is None and not self._any_event_after(after_id):
            return []  # the usual probe of a waiting gateway: one statement, no lock
        horizon = self._event_horizon()
        with self._read() as unit:  # a snapshot taken after every id <= horizon is final
            if task_id is not None:
                self._require(unit, task_id)
            return unit.events(after_id, limit, task_id, horizon)

    def _any_event_after(self, after_id: int) -> bool:
        with self._translated(committing=False), self._connection() as conn:
            row = conn.execute(Q["any_event_after"], (after_id,)).fetchone()
        return bool(row and row[0])

    def _event_horizon(self) -> int:
        """The highest event id that no transaction still in flight can precede.

        One round trip; the exclusive lock is held for an instant on the server, so
        writers queue only behind the commits already under way.
        """
        with self._translated(committing=False), self._connection() as conn, conn.pipeline():
            conn.execute("BEGIN")
            conn.execute(Q["events_horizon_lock"])
            cursor = conn.execute(Q["events_horizon"])
            conn.execute("COMMIT")
            row = cursor.fetchone()
        return int(row[0]) if row else 0

    # -- artifact contents ----------------------------------------------------------

    def _write_blob(self, sha256: str, content: bytes) -> str:
        with self._write() as unit:
            unit.c.execute(Q["put_content"], (sha256, content))
        return f"postgres:{sha256}"

    def _read_blob(self, path: str) -> bytes:
        sha256 = path.removeprefix("postgres:")
        with self._read() as unit:
            row = unit._one(Q["get_content"], (sha256,))
        if row is None:
            raise errors.NotFound(f"artifact content {sha256} is missing from the database")
        return bytes(row[0])

    # -- every other operation: the shared implementation, retried --------------------

    create_child = _retried(UnitStore.create_child)
    get_task = _retried(UnitStore.get_task)
    list_tasks = _retried(UnitStore.list_tasks)
    count_related = _retried(UnitStore.count_related)
    lease_task = _retried(UnitStore.lease_task)
    heartbeat = _retried(UnitStore.heartbeat)
    release = _retried(UnitStore.release)
    stop_worker = _retried(UnitStore.stop_worker)
    start_worker = _retried(UnitStore.start_worker)
    cancel = _retried(UnitStore.cancel)
    requeue = _retried(UnitStore.requeue)
    reclaim_expired = _retried(UnitStore.reclaim_expired)
    append_event = _retried(UnitStore.append_event)
    append_events = _retried(UnitStore.append_events)
    record_steps = _retried(UnitStore.record_steps)
    list_steps = _retried(UnitStore.list_steps)
    get_state = _retried(UnitStore.get_state)
    put_state = _retried(UnitStore.put_state)
    put_artifact = _retried(UnitStore.put_artifact)
    list_artifacts = _retried(UnitStore.list_artifacts)
    get_artifact = _retried(UnitStore.get_artifact)
    read_artifact = _retried(UnitStore.read_artifact)
    sync_responsibilities = _retried(UnitStore.sync_responsibilities)
    list_responsibilities = _retried(UnitStore.list_responsibilities)
    dispatch_due = _retried(UnitStore.dispatch_due)
    status_summary = _retried(UnitStore.status_summary)


def open_postgres(settings: config.Settings) -> PostgresStore:
    """The store at ``QUEUE_DB_URL`` (which must be set)."""
    url = settings.queue.db_url
    if url is None:
        raise errors.ConfigError("QUEUE_DB_URL is not set; give a postgresql:// URL")
    return PostgresStore(url, max_connections=settings.queue.db_pool_size)
