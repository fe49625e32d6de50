"""The REST routes: one table, each ``/tasks...`` route also served under ``/jobs...``.

Handlers are thin: parse (pydantic), call one service method in the thread pool,
render the domain object's ``to_dict``. Responses are built directly (the declared
response models document them in ``/openapi.json``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from loops.gateway import schemas, stream
from loops.gateway.routes import dashboard, resources, tasks, workers

#: prefix of task routes and of their aliases
TASKS_PREFIX = "/tasks"
ALIAS_PREFIX = "/jobs"

_ERROR_SCHEMA = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
# described by reference (not ``model=``), so each route does not build its own copy;
# ``/healthz`` declares the model once so that it is in the spec's components
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"content": _ERROR_SCHEMA, "description": text}
    for code, text in (
        (400, "invalid input"),
        (401, "missing or wrong token"),
        (404, "unknown id"),
        (409, "lease conflict or invalid transition"),
        (413, "body too large"),
        (422, "invalid request body or parameter"),
        (503, "database unavailable"),
    )
}


# -- the table ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RouteSpec:
    """One route: method, path, handler, and what the OpenAPI spec says it answers."""

    method: str
    path: str
    endpoint: Callable[..., Any]
    response_model: Any = None
    status_code: int = 200
    tag: str = "tasks"
    responses: dict[int | str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    in_schema: bool = True


Responses = dict[int | str, dict[str, Any]]
_NO_CONTENT: Responses = {204: {"description": "nothing was ready by wait_ms"}}
_IDEMPOTENT: Responses = {200: {"description": "the existing task of a known idempotency key"}}
_SSE: Responses = {200: {"content": {stream.MEDIA_TYPE: {}}, "description": "server-sent events"}}
_BYTES: Responses = {200: {"content": {"application/octet-stream": {}}, "description": "content"}}
_TEXT: Responses = {200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}}

S = schemas
#: every route, in matching order (fixed paths before ``{task_id}``)
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("POST", "/tasks", tasks.create_task, S.TaskOut, 201, responses=_IDEMPOTENT),
    RouteSpec("GET", "/tasks", tasks.list_tasks, S.TaskList),
    RouteSpec(
        "POST", "/tasks/lease", tasks.lease_next,
        S.LeasedTaskOut | S.LeaseBatchOut | S.LeanLeaseBatchOut, responses=_NO_CONTENT,
    ),
    RouteSpec("POST", "/tasks/complete", tasks.complete_many, S.CompleteBatchOut),
    RouteSpec("GET", "/tasks/{task_id}", tasks.get_task, S.TaskDetailOut),
    RouteSpec("POST", "/tasks/{task_id}/children", tasks.create_child, S.TaskOut, 201,
              responses=_IDEMPOTENT),
    RouteSpec("GET", "/tasks/{task_id}/children", tasks.list_children, S.ChildrenList),
    RouteSpec("GET", "/tasks/{task_id}/steps", tasks.list_steps, S.StepList),
    RouteSpec("POST", "/tasks/{task_id}/steps", tasks.record_steps, S.StepList),
    RouteSpec("POST", "/tasks/{task_id}/lease", tasks.lease_task, S.LeasedTaskOut),
    RouteSpec("POST", "/tasks/{task_id}/heartbeat", tasks.heartbeat, S.HeartbeatOut),
    RouteSpec("POST", "/tasks/{task_id}/complete", tasks.complete_task, S.TaskOut),
    RouteSpec("POST", "/tasks/{task_id}/release", tasks.release_task, S.TaskOut),
    RouteSpec("POST", "/tasks/{task_id}/cancel", tasks.cancel_task, S.TaskOut),
    RouteSpec("POST", "/tasks/{task_id}/requeue", dashboard.requeue_task, S.TaskOut),
    RouteSpec("GET", "/tasks/{task_id}/approvals", tasks.list_approvals, S.GateList),
    RouteSpec("POST", "/tasks/{task_id}/approvals", tasks.answer_approval, S.TaskOut),
    RouteSpec("GET", "/tasks/{task_id}/events", resources.list_task_events, S.EventList),
    RouteSpec("POST", "/tasks/{task_id}/events", resources.append_events, S.AppendedOut, 201),
    RouteSpec("POST", "/tasks/{task_id}/artifacts", resources.store_artifact, S.ArtifactOut, 201),
    RouteSpec("GET", "/tasks/{task_id}/state/{key}", resources.get_state, S.StateOut),
    RouteSpec("PUT", "/tasks/{task_id}/state/{key}", resources.put_state, S.StateOut),
    RouteSpec("GET", "/events", resources.list_events, S.EventList, tag="events"),
    RouteSpec("GET", "/events/stream", resources.stream_events, None, tag="events", responses=_SSE),
    RouteSpec("GET", "/artifacts", resources.list_artifacts, S.ArtifactList, tag="artifacts"),
    RouteSpec("GET", "/artifacts/{artifact_id}", resources.get_artifact, S.ArtifactOut,
              tag="artifacts"),
    RouteSpec("GET", "/artifacts/{artifact_id}/content", resources.artifact_content, None,
              tag="artifacts", responses=_BYTES),
    RouteSpec("GET", "/responsibilities", resources.list_responsibilities, S.ResponsibilityList,
              tag="responsibilities"),
    RouteSpec("POST", "/tick", resources.tick, S.TickOut, tag="responsibilities"),
    RouteSpec("GET", "/status", resources.status, None, tag="operations"),
    RouteSpec("GET", "/workers", dashboard.list_workers, S.WorkerList, tag="operations"),
    RouteSpec("POST", "/workers/{name}/stop", workers.stop_worker, S.WorkerStopOut,
              tag="workers"),
    RouteSpec("POST", "/workers/{name}/start", workers.start_worker, None, 204, tag="workers"),
    RouteSpec("GET", "/runs", dashboard.list_runs, S.RunList, tag="runs"),
    RouteSpec("GET", "/runs/{run_id}", dashboard.get_run, None, tag="runs"),
    RouteSpec("GET", "/healthz", resources.healthz, S.HealthOut, tag="operations",
              responses={503: {"model": S.ErrorOut, "description": "database unavailable"}}),
    RouteSpec("GET", "/metrics", resources.metrics, None, tag="operations", responses=_TEXT),
    RouteSpec("GET", "/", dashboard.root, None, tag="operations", in_schema=False),
)  # fmt: skip


def alias_path(path: str) -> str | None:
    """The ``/jobs...`` alias of a ``/tasks...`` path, or ``None`` for other routes."""
    if path == TASKS_PREFIX or path.startswith(TASKS_PREFIX + "/"):
        return ALIAS_PREFIX + path[len(TASKS_PREFIX) :]
    return None


def add_routes(app: FastAPI) -> None:
    """Register every route of :data:`ROUTES`, and the ``/jobs`` alias of each task route."""
    for spec in ROUTES:
        paths = [(spec.path, spec.tag)]
        alias = alias_path(spec.path)
        if alias is not None:
            paths.append((alias, "jobs (aliases of tasks)"))
        for path, tag in paths:
            app.add_api_route(
                path,
                spec.endpoint,
                methods=[spec.method],
                response_model=spec.response_model,
                status_code=spec.status_code,
                tags=[tag],
                responses={**_ERROR_RESPONSES, **spec.responses},
                include_in_schema=spec.in_schema,
                operation_id=_operation_id(spec.method, path),
            )


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}") for p in path.strip("/").split("/") if p] or ["root"]
    return "_".join([method.lower(), *words])
