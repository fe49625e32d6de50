"""Responsibilities: recurring work that dispatches a task from a template when due."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

from loops.queue import schedules
from loops.queue.tasks import TaskSpec, TaskStatus, iso


@dataclasses.dataclass(frozen=True, slots=True)
class TaskTemplate:
    """The task a responsibility creates each time it is due."""

    prompt: str
    type: str = "maintenance"
    title: str = ""
    priority: int = 3
    success: str | None = None
    check: str | None = None
    provider: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored and shown)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskTemplate:
        """Parse the JSON form."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def spec(self, responsibility: str) -> TaskSpec:
        """The creation spec of a task dispatched by ``responsibility``."""
        return TaskSpec(
            prompt=self.prompt,
            type=self.type,
            title=self.title or responsibility,
            priority=self.priority,
            success=self.success,
            check=self.check,
            provider=self.provider,
            responsibility=responsibility,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ResponsibilityDef:
    """A responsibility as configured (``[[responsibilities]]`` in loops.toml)."""

    name: str
    schedule: schedules.Schedule
    template: TaskTemplate
    enabled: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Responsibility:
    """A responsibility as stored, with its dispatch bookkeeping.

    Attributes:
        name: unique name.
        schedule: when it is due.
        template: the task it creates.
        enabled: disabled ones (removed from the config) never dispatch.
        last_dispatched_at: when it last created a task.
        next_due_at: when it is next due (a new one is due at once).
        last_task_id: the task it created last.
    """

    name: str
    schedule: schedules.Schedule
    template: TaskTemplate
    enabled: bool
    last_dispatched_at: datetime | None
    next_due_at: datetime
    last_task_id: int | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the REST API and ``--json`` output."""
        return {
            "name": self.name,
            "schedule": str(self.schedule),
            "template": self.template.to_dict(),
            "enabled": self.enabled,
            "last_dispatched_at": iso(self.last_dispatched_at),
            "next_due_at": iso(self.next_due_at),
            "last_task_id": self.last_task_id,
        }


class DispatchDecision(enum.StrEnum):
    """What a tick does with one responsibility."""

    DISPATCH = "dispatch"
    """Create its task now."""
    NOT_DUE = "not_due"
    """Its next due time has not come."""
    PREVIOUS_ACTIVE = "previous_active"
    """Due, but its previous task is still active: wait (no pile-up)."""
    DISABLED = "disabled"
    """It is no longer configured."""


def decide(
    resp: Responsibility, *, now: datetime, previous_status: TaskStatus | None
) -> DispatchDecision:
    """Whether a tick at ``now`` dispatches ``resp``.

    Args:
        resp: the stored responsibility.
        now: the tick's time.
        previous_status: status of its last task, or ``None`` if it has none (or the
            task is gone).
    """
    if not resp.enabled:
        return DispatchDecision.DISABLED
    if resp.next_due_at > now:
        return DispatchDecision.NOT_DUE
    if previous_status is not None and previous_status.is_active:
        return DispatchDecision.PREVIOUS_ACTIVE
    return DispatchDecision.DISPATCH


def after_dispatch(resp: Responsibility, *, now: datetime, task_id: int) -> Responsibility:
    """``resp`` after dispatching task ``task_id`` at ``now``: next due from now on."""
    return dataclasses.replace(
        resp,
        last_dispatched_at=now,
        next_due_at=resp.schedule.next_after(now),
        last_task_id=task_id,
    )


def synced(
    existing: Responsibility | None, definition: ResponsibilityDef, *, now: datetime
) -> Responsibility:
    """The stored form of ``definition``, keeping the bookkeeping of ``existing``.

    A new responsibility is due at once; a changed schedule recomputes the next due
    time from the last dispatch.
    """
    if existing is None:
        return Responsibility(
            name=definition.name,
            schedule=definition.schedule,
            template=definition.template,
            enabled=definition.enabled,
            last_dispatched_at=None,
            next_due_at=now,
            last_task_id=None,
        )
    next_due = existing.next_due_at
    if existing.schedule != definition.schedule and existing.last_dispatched_at is not None:
        next_due = definition.schedule.next_after(existing.last_dispatched_at)
    return dataclasses.replace(
        existing,
        schedule=definition.schedule,
        template=definition.template,
        enabled=definition.enabled,
        next_due_at=next_due,
    )
