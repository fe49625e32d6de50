"""Task creation sent to a gateway instead of the local database.

An agent run by a worker gets ``LOOP_API_BASE_URL`` (and ``QUEUE_API_TOKEN`` when the
gateway has one): its ``loop tasks:create`` and ``loop tasks:create-child`` go to that
gateway, so they work on a worker host that has no queue database of its own. The spec
is checked here first, so bad input gets the same one-line errors as a local create.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from loops import errors
from loops.queue.tasks import Task, TaskSpec

#: seconds a create may take
TIMEOUT_S = 30.0


def create(
    base_url: str, spec: TaskSpec, *, token: str | None, parent_id: str | None
) -> tuple[Task, bool]:
    """``POST /tasks`` (or ``/tasks/{parent_id}/children``); the task and whether it is new.

    Raises:
        GatewayUnavailable: the gateway cannot be reached.
        LoopsError: the gateway refused (the family its error code names).
    """
    import httpx

    from loops.worker.http import gateway_error
    from loops.worker.wire import task_from_dict

    url = base_url.rstrip("/")
    path = "/tasks" if parent_id is None else f"/tasks/{parent_id}/children"
    body = {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}
    body.pop("run_after", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(url + path, json=body, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise errors.GatewayUnavailable(
            f"cannot reach the gateway at {url} ({type(exc).__name__}: {exc}); "
            "check LOOP_API_BASE_URL / --api, or pass --db to write a local database"
        ) from None  # the message names the cause; the CLI shows one line
    if response.status_code >= 400:
        raise gateway_error(response)
    answer: dict[str, Any] = response.json()
    return task_from_dict(answer), response.status_code == 201
