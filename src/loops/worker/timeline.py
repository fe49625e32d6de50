"""Where a task's run events go: the queue timeline (batched), the transcript, live logs.

A run emits an event for every agent message, tool call and verdict. Writing each one
as its own store commit would cost more than the agent itself on a chatty run, so
:class:`TimelineSink` buffers them and appends a whole batch in one call (one
transaction, one HTTP request) every ``flush_interval_s`` or ``batch_size`` events.
It also keeps the full transcript, stored as a JSONL artifact when the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from loops import errors
from loops.flow import events as flow_events
from loops.worker.client import QueueClient

log = logging.getLogger(__name__)

#: events appended per call at most
BATCH_SIZE = 1_000
#: how long an event waits in the buffer at most
FLUSH_INTERVAL_S = 0.25


class TimelineSink:
    """Batches a run's events into the queue's timeline and keeps the transcript.

    Args:
        client: the queue.
        task_id: the task the events are about.
        batch_size: flush once this many events are buffered.
        flush_interval_s: flush at least this often while events arrive.
    """

    def __init__(
        self,
        client: QueueClient,
        task_id: int,
        *,
        batch_size: int = BATCH_SIZE,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        #: every event, as a JSON line, in order
        self.transcript: list[str] = []
        self._buffer: list[tuple[str, Mapping[str, Any]]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._flusher: asyncio.Task[None] | None = None

    def emit(self, event: flow_events.Event) -> None:
        """Buffer ``event`` (never blocks; the flusher writes it)."""
        body = event.to_dict()
        self.transcript.append(json.dumps(body, default=str))
        data = {k: v for k, v in body.items() if k != "type"}
        self.add(event.type.value, data)

    def add(self, kind: str, data: Mapping[str, Any]) -> None:
        """Buffer a worker event (e.g. a rate-limit wait) that is not a run event."""
        self._buffer.append((kind, data))
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def start(self) -> None:
        """Start the background flusher (on the running event loop)."""
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Append everything buffered, one batch per call; keep it on a store failure."""
        while self._buffer:
            batch = self._buffer[: self.batch_size]
            try:
                await self.client.append_events(self.task_id, batch)
            except errors.StoreError as exc:
                log.warning("task %s: events not stored yet (%s); will retry", self.task_id, exc)
                return
            del self._buffer[: len(batch)]

    async def aclose(self) -> None:
        """Stop the flusher and write what is left."""
        self._closed = True
        self._wake.set()
        if self._flusher is not None:
            flusher, self._flusher = self._flusher, None
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()

    def transcript_bytes(self) -> bytes:
        """The transcript as JSONL."""
        return ("\n".join(self.transcript) + "\n").encode() if self.transcript else b""


class LiveLogSink:
    """Echoes a task's agent output live (``--stream-job-logs``), one prefixed line each.

    Agent text is printed in full; other events as the library's readable log lines.
    """

    def __init__(self, prefix: str, stream: TextIO | None = None) -> None:
        self.prefix = prefix
        self.stream = stream or sys.stderr

    def emit(self, event: flow_events.Event) -> None:
        """Print ``event``."""
        if event.type is flow_events.EventType.AGENT_TEXT:
            role = event.data.get("role", "worker")
            lines = str(event.data.get("text", "")).rstrip("\n").splitlines() or [""]
            text = "".join(f"{self.prefix} {role}│ {line}\n" for line in lines)
        else:
            line = flow_events.describe_event(event)
            if line is None:
                return
            text = f"{self.prefix} {line}\n"
        self.stream.write(text)
        self.stream.flush()
