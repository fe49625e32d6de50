"""The REST routes: one table, each ``/tasks...`` route also served under ``/jobs...``.

Handlers are thin: parse (pydantic), call one service method in the thread pool,
render the domain object's ``to_dict``. Responses are built directly (the declared
response models document them in ``/openapi.json``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from loops import errors
from loops.gateway import schemas, stream
from loops.gateway.state import Gateway, gateway_of
from loops.queue.artifacts import ArtifactKind
from loops.services.queue import CompletionInput, parse_task_id, task_spec

TaskId = Annotated[str, Path(description="the task id (an integer)")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="page size")]

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


def _json(content: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status_code)


# -- tasks ----------------------------------------------------------------------------


async def create_task(request: Request, body: schemas.TaskCreate) -> Response:
    """Create a task (201), or return the existing one for a known idempotency key (200)."""
    gw = gateway_of(request)
    spec = task_spec(body.model_dump(exclude_none=True))
    created = await run_in_threadpool(gw.service.create_task, spec)
    return _json(created.task.to_dict(), 201 if created.created else 200)


async def list_tasks(
    request: Request,
    status: Annotated[schemas.TaskStatusName | None, Query(description="only this status")] = None,
    limit: Limit = 50,
    before: Annotated[int | None, Query(ge=1, description="only ids below this (paging)")] = None,
) -> Response:
    """Tasks newest first, optionally of one status."""
    gw = gateway_of(request)
    tasks = await run_in_threadpool(
        gw.service.list_tasks, status=status, limit=limit, before_id=before
    )
    return _json({"tasks": [t.to_dict() for t in tasks]})


async def get_task(request: Request, task_id: TaskId) -> Response:
    """One task with its steps, children and artifacts counts."""
    gw = gateway_of(request)
    detail = await run_in_threadpool(gw.service.task_detail, task_id)
    return _json(detail.to_dict())


async def create_child(request: Request, task_id: TaskId, body: schemas.TaskCreate) -> Response:
    """Create a child task (within QUEUE_MAX_CHILD_DEPTH and QUEUE_MAX_CHILDREN_PER_TASK)."""
    gw = gateway_of(request)
    spec = task_spec(body.model_dump(exclude_none=True))
    created = await run_in_threadpool(gw.service.create_child, task_id, spec)
    return _json(created.task.to_dict(), 201 if created.created else 200)


async def list_children(request: Request, task_id: TaskId, limit: Limit = 1000) -> Response:
    """A task's children, newest first."""
    gw = gateway_of(request)
    children = await run_in_threadpool(gw.service.list_children, task_id, limit=limit)
    return _json({"children": [t.to_dict() for t in children]})


async def list_steps(request: Request, task_id: TaskId) -> Response:
    """The STEP markers recorded for a task."""
    gw = gateway_of(request)
    steps = await run_in_threadpool(gw.service.list_steps, task_id)
    return _json({"steps": [s.to_dict() for s in steps]})


async def record_steps(request: Request, task_id: TaskId, body: schemas.OutputIn) -> Response:
    """Record the STEP markers found in agent output (idempotent per key)."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.get_task, task_id)
    steps = await run_in_threadpool(gw.service.record_output, task_id, body.output)
    return _json({"steps": [s.to_dict() for s in steps]})


async def cancel_task(
    request: Request, task_id: TaskId, body: schemas.CancelRequest | None = None
) -> Response:
    """Cancel a task and its active children; answers the cancelled task."""
    gw = gateway_of(request)
    reason = body.reason if body is not None else None
    task = await run_in_threadpool(gw.service.cancel, task_id, reason=reason)
    return _json(task.to_dict())


# -- leases ---------------------------------------------------------------------------


async def lease_next(request: Request, body: schemas.LeaseRequest) -> Response:
    """Lease the next ready task(s), long polling up to ``wait_ms``; 204 when none."""
    gw = gateway_of(request)
    await gw.feed.ensure_started()
    leased = await gw.leaser.lease(
        worker=body.worker,
        ttl_ms=body.ttl_ms,
        wait_ms=body.wait_ms,
        limit=body.limit,
        types=body.types,
        gone=request.is_disconnected,
    )
    if leased and await request.is_disconnected():  # the worker hung up while we waited
        for item in leased:
            await run_in_threadpool(
                gw.service.release, item.task.id, lease_token=item.lease.token,
                reason="the leasing worker hung up before the answer",
            )  # fmt: skip
        leased = []
    if not leased:
        return Response(status_code=204)
    gw.metrics.observe_leases(leased, now=gw.service.now())
    if body.limit > 1:
        return _json({"leases": [item.to_dict() for item in leased]})
    return _json(leased[0].to_dict())


async def lease_task(request: Request, task_id: TaskId, body: schemas.LeaseTaskRequest) -> Response:
    """Lease one given task (409 when it is not queued)."""
    gw = gateway_of(request)
    leased = await run_in_threadpool(
        gw.service.lease_task, task_id, worker=body.worker, ttl_ms=body.ttl_ms
    )
    gw.metrics.observe_leases([leased], now=gw.service.now())
    return _json(leased.to_dict())


async def heartbeat(request: Request, task_id: TaskId, body: schemas.HeartbeatRequest) -> Response:
    """Extend a lease; answers ``cancel_requested: true`` for a cancelled task."""
    gw = gateway_of(request)
    beat = await run_in_threadpool(
        gw.service.heartbeat,
        task_id,
        lease_token=body.lease_token,
        ttl_ms=body.ttl_ms,
        status=body.status,
    )
    return _json(beat.to_dict())


async def release_task(request: Request, task_id: TaskId, body: schemas.ReleaseRequest) -> Response:
    """Give a lease back unfinished: queued again at once, the attempt not charged
    (a worker shutting down cleanly); 409 for a stale token."""
    gw = gateway_of(request)
    task = await run_in_threadpool(
        gw.service.release, task_id, lease_token=body.lease_token, reason=body.reason
    )
    return _json(task.to_dict())


async def complete_task(
    request: Request, task_id: TaskId, body: schemas.CompleteRequest
) -> Response:
    """End a lease: done, failed, blocked or retry (409 for a stale token)."""
    gw = gateway_of(request)
    task = await run_in_threadpool(
        gw.service.complete,
        task_id,
        lease_token=body.lease_token,
        status=body.status,
        result=body.result,
        error=body.error,
        output=body.output,
        usage=body.usage.model_dump() if body.usage is not None else None,
    )
    return _json(task.to_dict())


async def complete_many(request: Request, body: schemas.CompleteBatchRequest) -> Response:
    """Apply many completions; answers item by item (one stale token fails only itself)."""
    gw = gateway_of(request)
    items = [
        CompletionInput(
            task_id=item.id,
            lease_token=item.lease_token,
            status=item.status,
            result=item.result,
            error=item.error,
            output=item.output,
            usage=item.usage.model_dump() if item.usage is not None else None,
        )
        for item in body.completions
    ]
    outcomes = await run_in_threadpool(gw.service.complete_many, items)
    results: list[dict[str, Any]] = []
    for item, outcome in zip(body.completions, outcomes, strict=True):
        result: dict[str, Any] = {"id": item.id, "ok": outcome.ok}
        if outcome.task is not None:
            result["task"] = outcome.task.to_dict()
        if outcome.error is not None:
            code = getattr(outcome.error, "code", "error")
            result["error"] = {"code": code, "message": str(outcome.error)}
        results.append(result)
    return _json({"results": results})


# -- events ---------------------------------------------------------------------------


async def list_events(
    request: Request,
    limit: Limit = 100,
    after: Annotated[int | None, Query(ge=0, description="only events after this id")] = None,
    task_id: Annotated[str | None, Query(description="only events of this task")] = None,
) -> Response:
    """Events in id order: the first ``limit`` after ``after``, or the latest ``limit``."""
    gw = gateway_of(request)
    found = await run_in_threadpool(
        gw.service.list_events, after_id=after, limit=limit, task_id=task_id
    )
    return _json({"events": [e.to_dict() for e in found]})


async def list_task_events(
    request: Request,
    task_id: TaskId,
    limit: Limit = 100,
    after: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """The events of one task, in id order."""
    return await list_events(request, limit=limit, after=after, task_id=task_id)


async def append_events(request: Request, task_id: TaskId, body: schemas.EventBatchIn) -> Response:
    """Append events about a task (a worker's run events), in order."""
    gw = gateway_of(request)

    events = [(event.type, event.data) for event in body.events]
    append = functools.partial(gw.service.append_events, task_id, events)  # one transaction
    appended = await run_in_threadpool(append)
    return _json({"appended": appended}, 201)


async def stream_events(
    request: Request,
    after: Annotated[int | None, Query(ge=0, description="start after this event id")] = None,
    task_id: Annotated[str | None, Query(description="only events of this task")] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="resume after this id")
    ] = None,
) -> Response:
    """Server-sent events: stored events after ``after``, then new ones live."""
    gw = gateway_of(request)
    if last_event_id is not None and last_event_id.strip():
        if not last_event_id.strip().isdigit():
            raise errors.InputError(
                f"Last-Event-ID must be an event id (an integer), got {last_event_id!r}"
            )
        after = int(last_event_id.strip())
    tid = None
    if task_id is not None:
        tid = parse_task_id(task_id)
        await run_in_threadpool(gw.service.get_task, tid)
    await gw.feed.ensure_started()
    body = stream.events(gw.service, gw.feed, after=after, task_id=tid)
    return StreamingResponse(
        body,
        media_type=stream.MEDIA_TYPE,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- artifacts and state --------------------------------------------------------------

_MEDIA_TYPES = {
    ArtifactKind.TRANSCRIPT: "application/x-ndjson",
    ArtifactKind.FINAL_MESSAGE: "text/plain; charset=utf-8",
    ArtifactKind.DIFF: "text/x-diff; charset=utf-8",
    ArtifactKind.LOG: "text/plain; charset=utf-8",
    ArtifactKind.FILE: "application/octet-stream",
}


async def list_artifacts(
    request: Request,
    task_id: Annotated[str | None, Query(description="only this task's artifacts")] = None,
    limit: Limit = 50,
) -> Response:
    """Artifacts newest first (unknown ``task_id``: 404)."""
    gw = gateway_of(request)
    found = await run_in_threadpool(gw.service.list_artifacts, task_id=task_id, limit=limit)
    return _json({"artifacts": [a.to_dict() for a in found]})


async def get_artifact(request: Request, artifact_id: Annotated[str, Path()]) -> Response:
    """One artifact's record."""
    gw = gateway_of(request)
    artifact = await run_in_threadpool(gw.service.get_artifact, artifact_id)
    return _json(artifact.to_dict())


async def artifact_content(request: Request, artifact_id: Annotated[str, Path()]) -> Response:
    """One artifact's content, with a media type by its kind."""
    gw = gateway_of(request)

    def read() -> tuple[str, str, bytes]:
        artifact = gw.service.get_artifact(artifact_id)
        return _MEDIA_TYPES[artifact.kind], artifact.sha256, gw.service.read_artifact(artifact.id)

    media_type, sha256, content = await run_in_threadpool(read)
    return Response(content, media_type=media_type, headers={"ETag": f'"{sha256}"'})


async def store_artifact(
    request: Request,
    task_id: TaskId,
    name: Annotated[str, Query(min_length=1, max_length=500, description="a label")],
    kind: Annotated[
        schemas.ArtifactKindName, Query(description="transcript, final_message, diff, log, file")
    ],
) -> Response:
    """Store the raw request body as an artifact of the task (content-addressed)."""
    gw = gateway_of(request)
    content = await request.body()
    artifact = await run_in_threadpool(
        gw.service.store_artifact, task_id, name=name, kind=kind, content=content
    )
    return _json(artifact.to_dict(), 201)


async def get_state(request: Request, task_id: TaskId, key: Annotated[str, Path()]) -> Response:
    """A task's checkpoint value (``null`` when none)."""
    gw = gateway_of(request)
    value = await run_in_threadpool(_task_state, gw, task_id, key)
    return _json({"key": key, "value": value})


def _task_state(gw: Gateway, task_id: str, key: str) -> Any:
    gw.service.get_task(task_id)
    return gw.service.get_state(key, task_id=task_id)


async def put_state(
    request: Request, task_id: TaskId, key: Annotated[str, Path()], body: schemas.StateIn
) -> Response:
    """Store a task's checkpoint value (replacing any)."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.put_state, key, body.value, task_id=task_id)
    return _json({"key": key, "value": body.value})


# -- the rest -------------------------------------------------------------------------


async def list_responsibilities(request: Request) -> Response:
    """Recurring responsibilities and their dispatch bookkeeping."""
    gw = gateway_of(request)
    found = await run_in_threadpool(gw.service.list_responsibilities)
    return _json({"responsibilities": [r.to_dict() for r in found]})


async def tick(request: Request) -> Response:
    """Reclaim expired leases and dispatch due responsibilities."""
    gw = gateway_of(request)
    report = await run_in_threadpool(gw.service.tick)
    return _json(report.to_dict())


async def status(request: Request) -> Response:
    """Counts by status, leases, due responsibilities, recent failures (``loop status``)."""
    gw = gateway_of(request)
    summary = await run_in_threadpool(gw.service.status)
    return _json(summary.to_dict())


async def healthz(request: Request) -> Response:
    """Liveness: the gateway answers and its store can be read (503 otherwise)."""
    gw = gateway_of(request)
    await run_in_threadpool(gw.service.list_events, limit=1)
    return _json({"status": "ok", "store": gw.service.store.backend})


async def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    gw = gateway_of(request)
    text = await run_in_threadpool(generate_latest, gw.metrics.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def root() -> Response:
    """The dashboard will live here; until then, the API docs."""
    return RedirectResponse("/docs", status_code=307)


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
    RouteSpec("POST", "/tasks", create_task, S.TaskOut, 201, responses=_IDEMPOTENT),
    RouteSpec("GET", "/tasks", list_tasks, S.TaskList),
    RouteSpec(
        "POST", "/tasks/lease", lease_next, S.LeasedTaskOut | S.LeaseBatchOut,
        responses=_NO_CONTENT,
    ),
    RouteSpec("POST", "/tasks/complete", complete_many, S.CompleteBatchOut),
    RouteSpec("GET", "/tasks/{task_id}", get_task, S.TaskDetailOut),
    RouteSpec("POST", "/tasks/{task_id}/children", create_child, S.TaskOut, 201,
              responses=_IDEMPOTENT),
    RouteSpec("GET", "/tasks/{task_id}/children", list_children, S.ChildrenList),
    RouteSpec("GET", "/tasks/{task_id}/steps", list_steps, S.StepList),
    RouteSpec("POST", "/tasks/{task_id}/steps", record_steps, S.StepList),
    RouteSpec("POST", "/tasks/{task_id}/lease", lease_task, S.LeasedTaskOut),
    RouteSpec("POST", "/tasks/{task_id}/heartbeat", heartbeat, S.HeartbeatOut),
    RouteSpec("POST", "/tasks/{task_id}/complete", complete_task, S.TaskOut),
    RouteSpec("POST", "/tasks/{task_id}/release", release_task, S.TaskOut),
    RouteSpec("POST", "/tasks/{task_id}/cancel", cancel_task, S.TaskOut),
    RouteSpec("GET", "/tasks/{task_id}/events", list_task_events, S.EventList),
    RouteSpec("POST", "/tasks/{task_id}/events", append_events, S.AppendedOut, 201),
    RouteSpec("POST", "/tasks/{task_id}/artifacts", store_artifact, S.ArtifactOut, 201),
    RouteSpec("GET", "/tasks/{task_id}/state/{key}", get_state, S.StateOut),
    RouteSpec("PUT", "/tasks/{task_id}/state/{key}", put_state, S.StateOut),
    RouteSpec("GET", "/events", list_events, S.EventList, tag="events"),
    RouteSpec("GET", "/events/stream", stream_events, None, tag="events", responses=_SSE),
    RouteSpec("GET", "/artifacts", list_artifacts, S.ArtifactList, tag="artifacts"),
    RouteSpec("GET", "/artifacts/{artifact_id}", get_artifact, S.ArtifactOut, tag="artifacts"),
    RouteSpec("GET", "/artifacts/{artifact_id}/content", artifact_content, None,
              tag="artifacts", responses=_BYTES),
    RouteSpec("GET", "/responsibilities", list_responsibilities, S.ResponsibilityList,
              tag="responsibilities"),
    RouteSpec("POST", "/tick", tick, S.TickOut, tag="responsibilities"),
    RouteSpec("GET", "/status", status, None, tag="operations"),
    RouteSpec("GET", "/healthz", healthz, S.HealthOut, tag="operations",
              responses={503: {"model": S.ErrorOut, "description": "database unavailable"}}),
    RouteSpec("GET", "/metrics", metrics, None, tag="operations", responses=_TEXT),
    RouteSpec("GET", "/", root, None, tag="operations", in_schema=False),
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
