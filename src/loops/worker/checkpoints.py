"""A loop task's run checkpoint, kept in the task's ``state`` through the queue client.

The worker's implementation of :class:`loops.flow.checkpoint.Checkpointer`: a
retried ``type=loop`` task (another worker, after a crash) loads what the earlier
attempts finished from the queue and resumes the run from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loops.queue import approvals
from loops.worker.client import QueueClient

#: the state key of a loop task's run checkpoint
RUN_CHECKPOINT_KEY = "run.checkpoint"
#: the state key of the answers to a loop task's human gates (``loop approve``)
RUN_APPROVALS_KEY = approvals.APPROVALS_KEY
#: the state key of how the next attempt resumes (``loop resume``: a new budget, ...)
RUN_RESUME_KEY = "run.resume"


class TaskStateCheckpointer:
    """The checkpoint of a task's run, in the task's ``state`` under one key.

    Args:
        client: the queue.
        task_id: the task whose run this is.
        key: the state key.
    """

    def __init__(self, client: QueueClient, task_id: int, key: str = RUN_CHECKPOINT_KEY) -> None:
        self.client = client
        self.task_id = task_id
        self.key = key

    async def load(self) -> Mapping[str, Any] | None:
        """The saved document, ``None`` before the first save."""
        value = await self.client.get_state(self.task_id, self.key)
        return value if isinstance(value, dict) else None

    async def save(self, document: Mapping[str, Any]) -> None:
        """Replace the saved document (one state write: atomic in the store)."""
        await self.client.put_state(self.task_id, self.key, dict(document))


class TaskStateApprovals:
    """The answers to a task run's human gates, in the task's ``state`` (``{path: answer}``)."""

    def __init__(self, client: QueueClient, task_id: int) -> None:
        self.client = client
        self.task_id = task_id

    async def answer(self, path: str) -> Mapping[str, Any] | None:
        """The answer for the gate at ``path``, if given."""
        answers = await self.client.get_state(self.task_id, RUN_APPROVALS_KEY)
        found = answers.get(path) if isinstance(answers, dict) else None
        return found if isinstance(found, dict) else None
