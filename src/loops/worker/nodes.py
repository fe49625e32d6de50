"""A loop task's durable dag nodes as child tasks, through the worker's queue client.

The worker's implementation of :class:`loops.flow.durable.NodeDispatcher`: each node
becomes a ``loop-node`` child of the ``type=loop`` task whose run holds the dag, keyed
by an idempotency key (run, node, attempt) so a crashed turn that dispatches again
finds the child it already made.
"""

from __future__ import annotations

import contextlib

from loops import errors
from loops.flow import durable
from loops.flow.outcome import Outcome, OutcomeStatus
from loops.queue.tasks import Task, TaskStatus
from loops.worker.client import QueueClient


class TaskNodeDispatcher:
    """Dispatches a loop task's durable dag nodes as its child tasks.

    Args:
        client: the queue.
        parent: the loop task whose run holds the dag.
        loop_file: the loop file (an absolute path), for the children to load.
    """

    def __init__(self, client: QueueClient, parent: Task, loop_file: str) -> None:
        self.client = client
        self.parent = parent
        self.loop_file = loop_file
        #: children this turn last read active: the task's ``waiting_children``
        #: completion names them, so one that finished since wakes it at once
        self.seen_active: set[int] = set()

    async def dispatch(self, order: durable.NodeOrder) -> int:
        """The child task running ``order`` (created once per run, node and attempt).

        Raises:
            ConfigError: the queue's depth or children limit refused the child.
        """
        parent = self.parent
        spec = {
            "type": durable.NODE_TASK_TYPE,
            "prompt": order.to_json(self.loop_file),
            "title": f"dag node {order.path_text} (attempt {order.attempt}) of task {parent.id}",
            "cwd": parent.cwd,
            "provider": parent.provider,
            "model": parent.model,
            "priority": parent.priority,
            "idempotency_key": f"loop-node:{parent.id}:{order.run_id}:{order.key}#{order.attempt}",
        }
        try:
            child = await self.client.create_child(
                parent.id, {k: v for k, v in spec.items() if v is not None}
            )
        except errors.LimitExceeded as exc:
            raise errors.ConfigError(
                f"durable dag node {order.path_text} cannot run as a child task of task "
                f"{parent.id}: {exc.message}. Raise that setting where the queue runs "
                "(loops.toml [queue] or the environment of `loop gateway` / `loop worker "
                "--local`) to cover every node of the dag plus one per node a kickback "
                "re-runs, then `loop resume` the run; or build the dag with durable=False"
            ) from exc
        return child.id

    async def cancel(self, task_id: int, *, reason: str) -> None:
        """Cancel a child whose node a kickback re-runs (a finished one is left alone)."""
        self.seen_active.discard(task_id)
        child = await self.client.get_task(task_id)
        if child.status.is_active:
            # one that finished a moment ago has nothing to stop
            with contextlib.suppress(errors.InvalidTransition):
                await self.client.cancel_task(task_id, reason=reason)

    async def outcome(self, task_id: int) -> Outcome | None:
        """The node's outcome once its child finished (``None`` while it is active)."""
        child = await self.client.get_task(task_id)
        if child.status.is_active:
            self.seen_active.add(task_id)
            return None
        self.seen_active.discard(task_id)
        if child.status is TaskStatus.DONE:
            try:
                return durable.outcome_from_result(child.result)
            except errors.InputError as exc:
                return Outcome(OutcomeStatus.ERROR, f"child task {task_id}: {exc.message}")
        return Outcome(
            OutcomeStatus.ERROR,
            f"child task {task_id} ({child.title}) ended {child.status.value}: "
            f"{child.error or 'no error recorded'}",
        )
