"""Where a task's run events go: the queue timeline (batched), the transcript, live logs.

A run emits an event for every agent message, tool call and verdict. Writing each one
as its own store commit would cost more than the agent itself on a chatty run, so
:class:`TimelineSink` buffers them and appends a whole batch in one call (one
transaction, one HTTP request) every ``flush_interval_s`` or ``batch_size`` events.
It also keeps the transcript, stored as a JSONL artifact when the task ends.

An agent's text is bounded per task (:data:`MAX_AGENT_TEXT_BYTES`): an agent that
floods its output (a runaway loop printing 100 MB) must not fill the queue's database
or the worker's memory. Past the bound, further agent text is dropped from both the
timeline and the transcript, and one ``output.truncated`` event says so (with the
totals when the task ends); every other event is still kept.
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
#: bytes of event JSON sent per call at most (under the gateway's 1 MiB body limit)
BATCH_MAX_BYTES = 512 * 1024
#: longest string kept in one event; longer ones are cut (one agent line of 100 MB...)
MAX_EVENT_STRING_CHARS = 64 * 1024
#: agent text kept per task (timeline and transcript); the rest is counted and dropped
MAX_AGENT_TEXT_BYTES = 4 * 1024 * 1024


class TimelineSink:
    """Batches a run's events into the queue's timeline and keeps the transcript.

    Args:
        client: the queue.
        task_id: the task the events are about.
        batch_size: flush once this many events are buffered.
        flush_interval_s: flush at least this often while events arrive.
        max_agent_text_bytes: agent text kept for the task; the rest is dropped.
    """

    def __init__(
        self,
        client: QueueClient,
        task_id: int,
        *,
        batch_size: int = BATCH_SIZE,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_agent_text_bytes: int = MAX_AGENT_TEXT_BYTES,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_agent_text_bytes = max_agent_text_bytes
        #: agent text kept so far, and dropped past the bound (bytes, events)
        self.text_bytes = 0
        self.dropped_bytes = 0
        self.dropped_events = 0
        #: every event, as a JSON line, in order
        self.transcript: list[str] = []
        self._buffer: list[tuple[str, Mapping[str, Any]]] = []
        self._sizes: list[int] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._flusher: asyncio.Task[None] | None = None

    def emit(self, event: flow_events.Event) -> None:
        """Buffer ``event`` (never blocks; the flusher writes it)."""
        if event.type is flow_events.EventType.AGENT_TEXT and not self._keep_text(event):
            return
        body = bounded(event.to_dict())
        self.transcript.append(json.dumps(body, default=str))
        data = {k: v for k, v in body.items() if k != "type"}
        self.add(event.type.value, data)

    def _keep_text(self, event: flow_events.Event) -> bool:
        size = min(len(str(event.data.get("text", ""))), MAX_EVENT_STRING_CHARS)
        if self.dropped_events == 0 and self.text_bytes + size <= self.max_agent_text_bytes:
            self.text_bytes += size
            return True
        if self.dropped_events == 0:
            log.warning(
                "task %s: agent output passed %d bytes; dropping the rest",
                self.task_id,
                self.max_agent_text_bytes,
            )
            self.add("output.truncated", {"kept_bytes": self.text_bytes, "final": False})
        self.dropped_events += 1
        self.dropped_bytes += size
        return False

    def add(self, kind: str, data: Mapping[str, Any]) -> None:
        """Buffer a worker event (e.g. a rate-limit wait) that is not a run event."""
        self._buffer.append((kind, data))
        self._sizes.append(len(json.dumps(data, default=str)))
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
            count, size = 1, self._sizes[0]
            while count < min(self.batch_size, len(self._buffer)):
                size += self._sizes[count]
                if size > BATCH_MAX_BYTES:
                    break
                count += 1
            batch = self._buffer[:count]
            try:
                await self.client.append_events(self.task_id, batch)
            except errors.StoreError as exc:
                log.warning("task %s: events not stored yet (%s); will retry", self.task_id, exc)
                return
            del self._buffer[:count]
            del self._sizes[:count]

    async def aclose(self) -> None:
        """Stop the flusher and write what is left."""
        self._closed = True
        self._wake.set()
        if self.dropped_events:
            totals = {"kept_bytes": self.text_bytes, "dropped_bytes": self.dropped_bytes,
                      "dropped_events": self.dropped_events, "final": True}  # fmt: skip
            self.add("output.truncated", totals)
            self.transcript.append(json.dumps({"type": "output.truncated", **totals}))
        if self._flusher is not None:
            flusher, self._flusher = self._flusher, None
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()

    def transcript_bytes(self) -> bytes:
        """The transcript as JSONL."""
        return ("\n".join(self.transcript) + "\n").encode() if self.transcript else b""


def bounded(value: Any, limit: int = MAX_EVENT_STRING_CHARS) -> Any:
    """``value`` with every string longer than ``limit`` cut, and the cut counted."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}… [{len(value) - limit} characters cut]"
    if isinstance(value, Mapping):
        return {k: bounded(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bounded(v, limit) for v in value]
    return value


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
