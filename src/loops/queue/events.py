"""Events: the queue's timeline, one record per change."""

from __future__ import annotations

import dataclasses
import enum
import json
import json.encoder
from collections.abc import Callable
from datetime import datetime
from typing import Any

from loops.queue.tasks import iso


class EventType(enum.StrEnum):
    """Types of queue events; values are the stored and API strings."""

    TASK_CREATED = "task.created"
    """A task was created."""
    TASK_LEASED = "task.leased"
    """A worker leased a task."""
    TASK_STARTED = "task.started"
    """A worker reported it started work (leased -> running)."""
    TASK_COMPLETED = "task.completed"
    """A task finished done."""
    TASK_FAILED = "task.failed"
    """A task finished failed."""
    TASK_RETRY_SCHEDULED = "task.retry_scheduled"
    """A task went back to queued with a backoff."""
    TASK_RELEASED = "task.released"
    """A worker gave a task back unfinished (clean shutdown); no attempt charged."""
    TASK_LEASE_EXPIRED = "task.lease_expired"
    """A lease lapsed and the task was reclaimed."""
    TASK_WAITING_CHILDREN = "task.waiting_children"
    """A task waits for its children."""
    TASK_WAITING_APPROVAL = "task.waiting_approval"
    """A task paused at a human gate, waiting for someone's answer."""
    TASK_APPROVAL_ANSWERED = "task.approval_answered"
    """Someone approved or rejected a task's human gate (who, the answer, why)."""
    TASK_REQUEUED = "task.requeued"
    """A parent went back to queued because all its children are done."""
    TASK_BLOCKED = "task.blocked"
    """A task finished blocked."""
    TASK_CANCELLED = "task.cancelled"
    """A task was cancelled."""
    CHILD_CREATED = "child.created"
    """A child task was created (recorded on the parent)."""
    STEP_RECORDED = "step.recorded"
    """A STEP marker was recorded."""
    ARTIFACT_STORED = "artifact.stored"
    """An artifact was stored."""
    RESPONSIBILITY_DISPATCHED = "responsibility.dispatched"
    """A responsibility created its task."""
    TICK = "tick"
    """A tick ran (reclaim and dispatch)."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventDraft:
    """An event to append; the store gives it an id and a timestamp."""

    type: str
    task_id: int | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One stored event.

    Attributes:
        id: increasing integer id.
        ts: when it was recorded.
        type: an :class:`EventType` value, or a run event type.
        task_id: the task it is about, if any.
        data: JSON details.
    """

    id: int
    ts: datetime
    type: str
    task_id: int | None
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API and NDJSON streams."""
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "type": self.type,
            "task_id": self.task_id,
            "data": self.data,
        }


def _data_encoder() -> Callable[[dict[str, Any]], str]:
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: json.dumps itself
        return json.dumps
    # json.dumps's own arguments (ensure_ascii, ", " and ": ", allow_nan), built once:
    # json.dumps builds this encoder again on every call, 1.1 of its 1.6 µs for a
    # lease's or completion's event. No circular-reference markers: event data are
    # small trees built by the queue (a cycle would raise RecursionError, not ValueError).
    encode = make(
        None,
        json.JSONEncoder().default,  # unsupported types: json.dumps's TypeError
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )

    def data_text(data: dict[str, Any]) -> str:
        return "".join(encode(data, 0))

    return data_text


#: the stored JSON text of an event's ``data``: exactly what ``json.dumps(data)`` writes
#: (a lease and a completion store one event per task, so this runs twice per task)
data_text: Callable[[dict[str, Any]], str] = _data_encoder()
