"""Task creation sent to a gateway instead of the local database.

An agent run by a worker gets ``LOOP_API_BASE_URL`` (and ``QUEUE_API_TOKEN`` when the
gateway has one): its ``loop tasks:create`` and ``loop tasks:create-child`` go to that
gateway, so they work on a worker host that has no queue database of its own. The spec
is checked here first, so bad input gets the same one-line errors as a local create.
The request goes through :class:`loops.client.GatewayClient`.
"""

from __future__ import annotations

from loops import errors
from loops.queue.tasks import Task, TaskSpec


def create(
    base_url: str, spec: TaskSpec, *, token: str | None, parent_id: str | None
) -> tuple[Task, bool]:
    """``POST /tasks`` (or ``/tasks/{parent_id}/children``); the task and whether it is new.

    Raises:
        GatewayUnavailable: the gateway cannot be reached.
        LoopsError: the gateway refused (the family its error code names).
    """
    from loops.client import GatewayClient

    with GatewayClient(base_url, token=token) as client:
        try:
            return client.create(spec, parent_id=parent_id)
        except errors.GatewayUnavailable as exc:
            raise errors.GatewayUnavailable(
                f"{exc.message}; check LOOP_API_BASE_URL / --api, or pass --db to write a "
                "local database"
            ) from None  # the message names the cause; the CLI shows one line
