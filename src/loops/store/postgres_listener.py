"""LISTEN/NOTIFY wake-ups for the PostgreSQL store: one listening connection per store.

The ``tasks`` table notifies channel ``loops_work_ready`` (payload: the schema) whenever
a task becomes ``queued``; a :class:`WorkListener` thread holds one connection that
listens and calls its subscribers, so a lease long-polling in this process wakes within
milliseconds of a task created by any other process or host. A lost connection is
re-opened with a growing pause; after it comes back every subscriber is called once,
since notifications sent meanwhile were lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

#: the channel the ``tasks`` trigger notifies (see sql/postgres/0001_init.sql)
CHANNEL = "loops_work_ready"
#: payload prefix of the notification that stops a listener (sent by :meth:`stop`)
_STOP = "loops-stop:"

log = logging.getLogger(__name__)


class WorkListener:
    """A daemon thread that LISTENs on :data:`CHANNEL` and calls subscribers.

    Args:
        conninfo: the libpq connection string.
        connect_kwargs: extra connection parameters (``options`` with the search path).
        poll_s: longest wait between checks of the stop flag (the stop notification
            usually ends the wait at once).
        max_pause_s: the longest pause between reconnection attempts.
    """

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: Mapping[str, Any],
        *,
        poll_s: float = 1.0,
        max_pause_s: float = 2.0,
    ) -> None:
        self._conninfo = conninfo
        self._kwargs = dict(connect_kwargs)
        self._poll_s = poll_s
        self._max_pause_s = max_pause_s
        self._subscribers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._token = f"{_STOP}{id(self)}"
        self._thread = threading.Thread(target=self._run, name="loops-pg-listener", daemon=True)
        self._started = False

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` on every wake-up (starting the thread on first use).

        Returns:
            A function that removes the subscription.
        """
        with self._lock:
            self._subscribers.append(callback)
            if not self._started:
                self._started = True
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def wait_listening(self, timeout_s: float) -> bool:
        """Block until the listener is connected and listening (for tests and start-up)."""
        return self._listening.wait(timeout_s)

    def stop(self, wake: Callable[[str], None] | None = None) -> None:
        """Stop the thread; ``wake(payload)`` may send the stop notification to end its wait."""
        self._stopping.set()
        if not self._started:
            return
        if wake is not None:
            try:
                wake(self._token)
            except Exception:  # the database may be gone; the poll timeout ends the wait
                log.debug("could not send the stop notification", exc_info=True)
        self._thread.join(timeout=self._poll_s + 1.0)

    def _fire(self) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback()
            except Exception:  # a subscriber's failure must not end the listener
                log.exception("work-ready subscriber failed")

    def _run(self) -> None:
        pause_s = 0.05
        first = True
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, **self._kwargs) as conn:
                    schema = conn.execute("SELECT current_schema()").fetchone()
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._listening.set()
                    pause_s = 0.05
                    if not first:
                        self._fire()  # notifications sent while disconnected were lost
                    first = False
                    self._listen(conn, schema[0] if schema else None)
            except psycopg.Error as exc:
                self._listening.clear()
                if self._stopping.is_set():
                    return
                log.warning("work-ready listener lost its connection (%s); reconnecting", exc)
                self._stopping.wait(pause_s)
                pause_s = min(pause_s * 2, self._max_pause_s)

    def _listen(self, conn: psycopg.Connection[Any], schema: str | None) -> None:
        while not self._stopping.is_set():
            for notify in conn.notifies(timeout=self._poll_s):
                if notify.payload == self._token:
                    return
                if notify.payload == schema:
                    self._fire()
