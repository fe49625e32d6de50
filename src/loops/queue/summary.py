"""The queue's status summary (``loop status``, the dashboard)."""

from __future__ import annotations

import dataclasses
from typing import Any

from loops.queue.responsibilities import Responsibility
from loops.queue.tasks import Task, TaskStatus, iso


@dataclasses.dataclass(frozen=True, slots=True)
class StatusSummary:
    """Counts by status, active leases, due responsibilities and recent failures."""

    counts: dict[TaskStatus, int]
    leases: list[Task]
    responsibilities_due: list[Responsibility]
    recent_failures: list[Task]

    def to_dict(self) -> dict[str, Any]:
        """``{"counts", "leases", "responsibilities_due", "recent_failures"}`` (DESIGN 13)."""
        return {
            "counts": {status.value: self.counts.get(status, 0) for status in TaskStatus},
            "leases": [
                {
                    "task_id": t.id,
                    "title": t.title,
                    "status": t.status.value,
                    "owner": t.lease_owner,
                    "expires_at": iso(t.lease_expires_at),
                    "attempts": t.attempts,
                }
                for t in self.leases
            ],
            "responsibilities_due": [r.to_dict() for r in self.responsibilities_due],
            "recent_failures": [t.to_dict() for t in self.recent_failures],
        }
