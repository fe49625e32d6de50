"""Who is working: the workers that hold leases, from the held tasks and their events.

A worker is known to the queue only through its leases: its name is the lease owner.
For each held task we show since when it is held (the latest ``task.leased`` event)
and its last heartbeat (a heartbeat writes the task's ``updated_at``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from loops.queue.tasks import Task, iso


@dataclasses.dataclass(frozen=True, slots=True)
class HeldLease:
    """One lease held by a worker.

    Attributes:
        task_id / title / status: the held task.
        attempt: which attempt this lease is.
        since: when the lease was taken (``None`` when its event is gone).
        last_heartbeat: the last write under the lease (lease, start or heartbeat).
        expires_at: when the lease lapses unless extended.
    """

    task_id: int
    title: str
    status: str
    attempt: int
    since: datetime | None
    last_heartbeat: datetime | None
    expires_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``GET /workers``)."""
        return {
            "task_id": self.task_id,
            "title": self.title,
            "status": self.status,
            "attempt": self.attempt,
            "since": iso(self.since),
            "last_heartbeat": iso(self.last_heartbeat),
            "expires_at": iso(self.expires_at),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Worker:
    """A worker (a lease owner) and the leases it holds, oldest first."""

    name: str
    leases: tuple[HeldLease, ...]

    @property
    def last_heartbeat(self) -> datetime | None:
        """The latest heartbeat over its leases."""
        beats = [lease.last_heartbeat for lease in self.leases if lease.last_heartbeat]
        return max(beats) if beats else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``GET /workers``)."""
        return {
            "name": self.name,
            "last_heartbeat": iso(self.last_heartbeat),
            "leases": [lease.to_dict() for lease in self.leases],
        }


def workers_of(held: Sequence[Task], leased_at: Mapping[int, datetime]) -> list[Worker]:
    """Group held tasks by lease owner.

    Args:
        held: tasks under a lease (leased or running).
        leased_at: when each task's current lease was taken, by task id.

    Returns:
        The workers by name, each with its leases oldest first.
    """
    by_owner: dict[str, list[HeldLease]] = {}
    for task in held:
        owner = task.lease_owner or "?"
        by_owner.setdefault(owner, []).append(
            HeldLease(
                task_id=task.id,
                title=task.title,
                status=task.status.value,
                attempt=task.attempts,
                since=leased_at.get(task.id),
                last_heartbeat=task.updated_at,
                expires_at=task.lease_expires_at,
            )
        )
    return [
        Worker(name, tuple(sorted(leases, key=lambda h: (h.since is None, h.since, h.task_id))))
        for name, leases in sorted(by_owner.items())
    ]
